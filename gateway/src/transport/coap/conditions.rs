//! Conditional requests (RFC 7252 §5.10.6, §5.10.8) and content negotiation (§5.10.4) on the
//! gateway's resources. A source's representation is its description (what GET on it
//! returns: read format, schema, merge) and discovery's is its link list; each carries an
//! ETag, a digest of the representation. So a device can make a write conditional on the
//! schema it read: with If-Match and that ETag the payload is ingested only while the source
//! is still described so. An empty If-Match matches any existing resource; If-None-Match
//! never holds, since every resource the gateway answers for exists. A condition that does
//! not hold is 4.12 Precondition Failed, and nothing is done.

use coap_lite::{CoapOption, Packet, ResponseType};
use sha2::{Digest, Sha256};

use super::resource::Reply;

/// An entity tag: the first bytes of the representation's SHA-256.
pub type ETag = [u8; 8];

pub fn etag_of(representation: &[u8]) -> ETag {
    let digest = Sha256::digest(representation);
    let mut etag = [0u8; 8];
    etag.copy_from_slice(&digest[..8]);
    etag
}

/// Refuses with 4.12 a request whose If-Match or If-None-Match does not hold for a resource
/// that exists and whose representation has the ETag `current` (asked only if needed).
pub fn preconditions(request: &Packet, current: impl FnOnce() -> ETag) -> Result<(), Reply> {
    if request.get_first_option(CoapOption::IfNoneMatch).is_some() {
        return Err(Reply::diagnostic(
            ResponseType::PreconditionFailed,
            "If-None-Match: the resource exists (every resource of this gateway does)",
        ));
    }
    let Some(tags) = request.get_option(CoapOption::IfMatch) else { return Ok(()) };
    // An empty value matches any representation.
    if tags.iter().any(Vec::is_empty) {
        return Ok(());
    }
    let current = current();
    if tags.iter().any(|tag| tag.as_slice() == current) {
        return Ok(());
    }
    Err(Reply::diagnostic(
        ResponseType::PreconditionFailed,
        "If-Match: no ETag given is the resource's current one (GET it for the ETag)",
    ))
}

/// Refuses with 4.06 a request whose Accept names another Content-Format than `format`,
/// the only one the resource is given in.
pub fn acceptable(request: &Packet, format: u16) -> Result<(), Reply> {
    match request.get_first_option(CoapOption::Accept).map(|v| super::message::read_uint(v)) {
        None => Ok(()),
        Some(Some(asked)) if asked == u32::from(format) => Ok(()),
        Some(_) => Err(Reply::diagnostic(
            ResponseType::NotAcceptable,
            &format!("this resource is given in Content-Format {format} only"),
        )),
    }
}

/// Whether a GET's ETag options (RFC 7252 §5.10.6.2) name the current representation: then
/// 2.03 Valid answers it without a payload.
pub fn still_valid(request: &Packet, current: ETag) -> bool {
    request.get_option(CoapOption::ETag).into_iter().flatten().any(|tag| tag.as_slice() == current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(options: &[(CoapOption, &[u8])]) -> Packet {
        let mut packet = Packet::new();
        for (option, value) in options {
            packet.add_option(*option, value.to_vec());
        }
        packet
    }

    #[test]
    fn if_match_holds_for_the_current_etag_or_an_empty_value_only() {
        let current = etag_of(b"{\"source\":\"vendorC\"}");
        let code = |p: &Packet| preconditions(p, || current).err().map(|r| r.code);
        assert_eq!(code(&with(&[])), None);
        assert_eq!(code(&with(&[(CoapOption::IfMatch, &current)])), None);
        assert_eq!(code(&with(&[(CoapOption::IfMatch, b"")])), None);
        assert_eq!(
            code(&with(&[(CoapOption::IfMatch, &[1]), (CoapOption::IfMatch, &current)])),
            None,
            "any of several"
        );
        assert_eq!(code(&with(&[(CoapOption::IfMatch, &[1])])), Some(ResponseType::PreconditionFailed));
        assert_eq!(code(&with(&[(CoapOption::IfNoneMatch, b"")])), Some(ResponseType::PreconditionFailed));
    }

    #[test]
    fn accept_and_validation() {
        assert!(acceptable(&with(&[]), 50).is_ok());
        assert!(acceptable(&with(&[(CoapOption::Accept, &[50])]), 50).is_ok());
        let refused = acceptable(&with(&[(CoapOption::Accept, &[60])]), 50).err().map(|r| r.code);
        assert_eq!(refused, Some(ResponseType::NotAcceptable));
        let current = etag_of(b"x");
        assert!(still_valid(&with(&[(CoapOption::ETag, &current)]), current));
        assert!(!still_valid(&with(&[(CoapOption::ETag, &[0; 8])]), current));
    }
}
