//! Reading and writing the parts of CoAP messages (RFC 7252) the gateway uses, over coap-lite's
//! codec: options as numbers and text, Block1/Block2 values (RFC 7959), and replies built
//! for a request. Nothing here panics on what a datagram holds.

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, ResponseType};

/// Content-Format numbers (IANA CoAP registry).
pub const TEXT_PLAIN: u16 = 0;
pub const LINK_FORMAT: u16 = 40;
pub const JSON: u16 = 50;
pub const CBOR: u16 = 60;
pub const CBOR_SEQ: u16 = 63;
pub const SENML_JSON: u16 = 110;
pub const SENML_CBOR: u16 = 112;

/// A Block1/Block2 option value: block number, more-flag, size exponent (size 2^(szx+4)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

impl Block {
    pub fn size(self) -> usize {
        1 << (self.szx + 4)
    }

    /// Decodes an option value (0 to 3 bytes); `None` for a malformed one (SZX 7 is reserved).
    pub fn decode(bytes: &[u8]) -> Option<Block> {
        if bytes.len() > 3 {
            return None;
        }
        let value = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (value & 0x7) as u8;
        (szx < 7).then_some(Block { num: value >> 4, more: value & 0x8 != 0, szx })
    }

    pub fn encode(self) -> Vec<u8> {
        uint((self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx))
    }
}

/// An unsigned option value in the fewest bytes (zero is no bytes).
pub fn uint(value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    bytes[skip..].to_vec()
}

pub fn read_uint(bytes: &[u8]) -> Option<u32> {
    (bytes.len() <= 4).then(|| bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
}

/// The first value of an unsigned option, if present and well formed.
pub fn uint_option(packet: &Packet, option: CoapOption) -> Option<Result<u32, ()>> {
    packet.get_first_option(option).map(|v| read_uint(v).ok_or(()))
}

/// The path of a request, `/`-joined, each segment as text.
pub fn path(packet: &Packet) -> Result<String, String> {
    let mut path = String::new();
    for segment in packet.get_option(CoapOption::UriPath).into_iter().flatten() {
        let text = std::str::from_utf8(segment).map_err(|_| "a Uri-Path segment is not UTF-8".to_string())?;
        path.push('/');
        path.push_str(text);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(path)
}

/// The Uri-Query arguments as (name, value) pairs.
pub fn queries(packet: &Packet) -> Vec<(String, String)> {
    packet
        .get_option(CoapOption::UriQuery)
        .into_iter()
        .flatten()
        .filter_map(|q| std::str::from_utf8(q).ok())
        .map(|q| match q.split_once('=') {
            Some((name, value)) => (name.to_owned(), value.to_owned()),
            None => (q.to_owned(), String::new()),
        })
        .collect()
}

/// How the gateway reads a critical option (RFC 7252 §5.4.1: odd numbers) it understands:
/// whether it may repeat and the lengths its value may have (§5.10).
struct Critical {
    number: u16,
    name: &'static str,
    repeatable: bool,
    min_len: usize,
    max_len: usize,
}

const CRITICAL: [Critical; 9] = [
    Critical { number: 1, name: "If-Match", repeatable: true, min_len: 0, max_len: 8 },
    Critical { number: 3, name: "Uri-Host", repeatable: false, min_len: 1, max_len: 255 },
    Critical { number: 5, name: "If-None-Match", repeatable: false, min_len: 0, max_len: 0 },
    Critical { number: 7, name: "Uri-Port", repeatable: false, min_len: 0, max_len: 2 },
    Critical { number: 11, name: "Uri-Path", repeatable: true, min_len: 0, max_len: 255 },
    Critical { number: 15, name: "Uri-Query", repeatable: true, min_len: 0, max_len: 255 },
    Critical { number: 17, name: "Accept", repeatable: false, min_len: 0, max_len: 2 },
    Critical { number: 23, name: "Block2", repeatable: false, min_len: 0, max_len: 3 },
    Critical { number: 27, name: "Block1", repeatable: false, min_len: 0, max_len: 3 },
];

/// Proxy-Uri and Proxy-Scheme: a request for a proxy, which the gateway is not (§5.7.2).
const PROXY_OPTIONS: [u16; 2] = [35, 39];

/// Why a request's options refuse it before anything else is looked at: a critical option
/// the gateway does not understand, one given twice that may appear once, or one whose value
/// has a length out of its range (§5.4.1, §5.4.3, §5.4.5) is 4.02 Bad Option; a proxy
/// option is 5.05. Elective options (even numbers) are never a reason: unknown ones are
/// ignored, and of a repeated one only the first value counts.
pub fn option_problem(packet: &Packet) -> Option<(ResponseType, String)> {
    for (&number, values) in packet.options() {
        if number % 2 == 0 {
            continue;
        }
        if PROXY_OPTIONS.contains(&number) {
            return Some((
                ResponseType::ProxyingNotSupported,
                "this gateway is not a proxy: send the request to the resource itself".into(),
            ));
        }
        let Some(rule) = CRITICAL.iter().find(|c| c.number == number) else {
            return Some((
                ResponseType::BadOption,
                format!("critical option {} is not understood", named(number)),
            ));
        };
        if !rule.repeatable && values.len() > 1 {
            return Some((ResponseType::BadOption, format!("critical option {} may appear once", rule.name)));
        }
        if values.iter().any(|v| v.len() < rule.min_len || v.len() > rule.max_len) {
            return Some((
                ResponseType::BadOption,
                format!(
                    "critical option {} must be {} to {} bytes long",
                    rule.name, rule.min_len, rule.max_len
                ),
            ));
        }
    }
    None
}

/// An option number with its registered name, for diagnostics.
fn named(number: u16) -> String {
    let name = match number {
        9 => "OSCORE",
        19 => "Q-Block1",
        21 => "EDHOC",
        31 => "Q-Block2",
        _ => return number.to_string(),
    };
    format!("{number} ({name})")
}

/// A reply to `request`: a piggybacked ACK for a CON request, a NON for a NON one, with the
/// request's token.
pub fn reply_to(request: &Packet, code: ResponseType) -> Packet {
    let mut packet = Packet::new();
    let kind = match request.header.get_type() {
        MessageType::Confirmable => MessageType::Acknowledgement,
        _ => MessageType::NonConfirmable,
    };
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Response(code);
    packet.header.message_id = request.header.message_id;
    packet.set_token(request.get_token().to_vec());
    packet
}

/// An empty ACK or RST for `message_id`.
pub fn empty(kind: MessageType, message_id: u16) -> Packet {
    let mut packet = Packet::new();
    packet.header.set_type(kind);
    packet.header.code = MessageClass::Empty;
    packet.header.message_id = message_id;
    packet
}

/// The message id and type of a datagram whose header alone is readable, so that a
/// malformed CON message can still be answered with a RST.
pub fn header_of(datagram: &[u8]) -> Option<(MessageType, u16)> {
    let first = *datagram.first()?;
    if datagram.len() < 4 || first >> 6 != 1 {
        return None;
    }
    let kind = match (first >> 4) & 0x3 {
        0 => MessageType::Confirmable,
        1 => MessageType::NonConfirmable,
        2 => MessageType::Acknowledgement,
        _ => MessageType::Reset,
    };
    Some((kind, u16::from_be_bytes([datagram[2], datagram[3]])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_values_round_trip_and_refuse_the_reserved_size() {
        for block in [Block { num: 0, more: true, szx: 6 }, Block { num: 1000, more: false, szx: 2 }] {
            assert_eq!(Block::decode(&block.encode()), Some(block));
        }
        assert_eq!(Block::decode(&[0x07]), None);
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
        assert_eq!(Block { num: 0, more: false, szx: 6 }.size(), 1024);
        assert_eq!(uint(0), Vec::<u8>::new());
        assert_eq!(uint(300), vec![1, 44]);
    }

    #[test]
    fn critical_options_are_understood_once_and_in_range_or_refused() {
        let with = |options: &[(u16, &[u8])]| {
            let mut packet = Packet::new();
            for (number, value) in options {
                packet.add_option(CoapOption::from(*number), value.to_vec());
            }
            option_problem(&packet)
        };
        assert_eq!(with(&[(11, b"datasets"), (15, b"key=k"), (12, &[50]), (60, &[1])]), None);
        assert_eq!(with(&[(1, &[1, 2]), (1, b""), (5, b"")]), None, "If-Match repeats");
        // Elective ones, known or not, repeated or not, never refuse.
        assert_eq!(with(&[(12, &[50]), (12, &[60]), (258, &[2]), (2048, b"x")]), None);
        let refused = |options: &[(u16, &[u8])], code: ResponseType, text: &str| {
            let (got, why) = with(options).expect("refused");
            assert_eq!(got, code, "{why}");
            assert!(why.contains(text), "{why}");
        };
        refused(&[(9, b"")], ResponseType::BadOption, "9 (OSCORE) is not understood");
        refused(&[(2049, b"")], ResponseType::BadOption, "2049 is not understood");
        refused(&[(27, &[0x0e]), (27, &[0x1e])], ResponseType::BadOption, "Block1 may appear once");
        refused(&[(5, b"x")], ResponseType::BadOption, "If-None-Match must be 0 to 0 bytes");
        refused(&[(1, &[0; 9])], ResponseType::BadOption, "If-Match must be 0 to 8 bytes");
        refused(&[(15, &[b'q'; 256])], ResponseType::BadOption, "Uri-Query must be 0 to 255");
        refused(&[(35, b"coap://elsewhere/")], ResponseType::ProxyingNotSupported, "not a proxy");
    }
}
