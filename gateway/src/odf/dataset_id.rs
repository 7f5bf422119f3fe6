//! Dataset identity: `did:odf:` followed by the multibase base16 of the multicodec
//! `ed25519-pub` (varint `ed 01`) and the 32-byte Ed25519 public key made at creation.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PREFIX: &str = "did:odf:";
const ED25519_PUB: [u8; 2] = [0xed, 0x01];

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DatasetId([u8; 32]);

#[derive(Debug, thiserror::Error)]
#[error("'{input}' is not a did:odf dataset id: {reason}")]
pub struct DatasetIdError {
    input: String,
    reason: &'static str,
}

impl DatasetId {
    /// Makes a fresh key pair; the id is its public half.
    pub fn generate() -> Result<(DatasetId, SigningKey), getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        let key = SigningKey::from_bytes(&secret);
        Ok((DatasetId::from_key(&key), key))
    }

    pub fn from_key(key: &SigningKey) -> Self {
        DatasetId(key.verifying_key().to_bytes())
    }

    /// The binary form stored in `Seed.datasetId`: multicodec varint then the key.
    pub fn to_bytes(&self) -> Vec<u8> {
        [&ED25519_PUB[..], &self.0].concat()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DatasetIdError> {
        let error = |reason| DatasetIdError { input: hex::encode(bytes), reason };
        let key =
            bytes.strip_prefix(&ED25519_PUB[..]).ok_or_else(|| error("not an ed25519-pub multicodec"))?;
        let key: [u8; 32] = key.try_into().map_err(|_| error("an Ed25519 public key is 32 bytes"))?;
        Ok(DatasetId(key))
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", multibase::encode(multibase::Base::Base16Lower, self.to_bytes()))
    }
}

impl fmt::Debug for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatasetId({self})")
    }
}

impl FromStr for DatasetId {
    type Err = DatasetIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| DatasetIdError { input: s.to_owned(), reason };
        let encoded = s.strip_prefix(PREFIX).ok_or_else(|| error("missing 'did:odf:' prefix"))?;
        let (_, bytes) = multibase::decode(encoded).map_err(|_| error("not multibase"))?;
        DatasetId::from_bytes(&bytes).map_err(|e| error(e.reason))
    }
}

impl Serialize for DatasetId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_matches_the_spec_example() {
        // The spec's example id, and its 34-byte binary form.
        let s = "did:odf:fed012126262ba49e1ba8392c26f7a39e1ba8d756c7469786d3365200c68402ff65dc";
        let id: DatasetId = s.parse().unwrap();
        assert_eq!(id.to_string(), s);
        assert_eq!(id.to_bytes().len(), 34);
        assert_eq!(DatasetId::from_bytes(&id.to_bytes()).unwrap(), id);
    }

    #[test]
    fn generated_ids_are_distinct_and_round_trip() {
        let (a, key) = DatasetId::generate().unwrap();
        let (b, _) = DatasetId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(DatasetId::from_key(&key), a);
        assert_eq!(a.to_string().parse::<DatasetId>().unwrap(), a);
    }

    #[test]
    fn malformed_ids_are_errors() {
        for s in ["", "did:odf:", "did:key:fed01", "did:odf:fed0100", "did:odf:f1620aa"] {
            assert!(s.parse::<DatasetId>().is_err(), "{s}");
        }
    }
}
