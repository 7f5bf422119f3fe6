//! Content hashes as ODF writes them: a multihash (varint code, varint length, digest),
//! shown as multibase base16 (`f1620…` for SHA3-256).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Sha3_256};

/// Multicodec of SHA3-256, the hash of blocks, data files and checkpoints.
pub const SHA3_256: u64 = 0x16;
/// Multicodec of arrow-digest over SHA3-256, the logical hash of a data slice.
pub const ARROW_SHA3_256: u64 = 0x0030_0016;

type Inner = multihash::Multihash<64>;

/// A multihash: which function made the digest, and the digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Multihash(Inner);

#[derive(Debug, thiserror::Error)]
pub enum HashParseError {
    #[error("'{0}' is not a multibase string: {1}")]
    Multibase(String, multibase::Error),
    #[error("'{0}' is not a multihash: {1}")]
    Multihash(String, multihash::Error),
}

impl Multihash {
    /// SHA3-256 of `bytes`.
    pub fn sha3_256(bytes: &[u8]) -> Self {
        Self::from_digest(SHA3_256, &Sha3_256::digest(bytes).into())
    }

    /// Wraps a 256-bit digest made elsewhere (a streaming hasher, arrow-digest).
    pub fn from_digest(code: u64, digest: &[u8; 32]) -> Self {
        Self(Inner::wrap(code, digest).expect("a 32-byte digest always fits in 64"))
    }

    /// Reads the binary form (as stored in FlatBuffers `[ubyte]` fields).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, multihash::Error> {
        Inner::from_bytes(bytes).map(Self)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    pub fn code(&self) -> u64 {
        self.0.code()
    }

    pub fn digest(&self) -> &[u8] {
        self.0.digest()
    }

    /// The multibase base16 form used for file names and in `refs/head`.
    pub fn to_multibase(&self) -> String {
        multibase::encode(multibase::Base::Base16Lower, self.to_bytes())
    }
}

impl FromStr for Multihash {
    type Err = HashParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (_, bytes) = multibase::decode(s).map_err(|e| HashParseError::Multibase(s.to_owned(), e))?;
        Self::from_bytes(&bytes).map_err(|e| HashParseError::Multihash(s.to_owned(), e))
    }
}

impl fmt::Display for Multihash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_multibase())
    }
}

impl fmt::Debug for Multihash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Multihash({self})")
    }
}

impl Serialize for Multihash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Multihash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha3_256_of_prev_matches_the_conformance_figure() {
        let h = Multihash::sha3_256(b"prev");
        assert_eq!(h.to_string(), "f16209eb949bd8ff0bb1d827f11809aebc6bd0d5955c7f368469a913c70d196620272");
        assert_eq!(h.to_string().parse::<Multihash>().unwrap(), h);
    }

    #[test]
    fn logical_hash_code_is_a_multibyte_varint() {
        let h = Multihash::from_digest(ARROW_SHA3_256, &[7; 32]);
        assert_eq!(&h.to_bytes()[..4], &[0x96, 0x80, 0xc0, 0x01]);
        assert_eq!(h.to_string().parse::<Multihash>().unwrap(), h);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for s in ["", "f", "fzz", "f16", "xabc", "f1620abcd"] {
            assert!(s.parse::<Multihash>().is_err(), "{s}");
        }
    }
}
