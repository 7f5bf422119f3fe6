//! Byte sizes in the configuration: a number of bytes, or text with a unit ("8 MiB", "512kB").

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    pub fn parse(text: &str) -> Result<Size, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 =
            number.parse().map_err(|_| format!("'{text}' is not a size such as 8388608 or \"8 MiB\""))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => {
                return Err(format!("'{other}' in '{text}' is not a unit (B, kB, KiB, MB, MiB, GB, GiB)"));
            }
        };
        number.checked_mul(factor).map(Size).ok_or_else(|| format!("'{text}' is too big"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, factor) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= factor && self.0 % factor == 0 {
                return write!(f, "{} {unit}", self.0 / factor);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(text) => Size::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_units_and_print_back() {
        assert_eq!(Size::parse("8 MiB"), Ok(Size(8 << 20)));
        assert_eq!(Size::parse("512kB"), Ok(Size(512_000)));
        assert_eq!(Size::parse("100"), Ok(Size(100)));
        assert!(Size::parse("8 miles").unwrap_err().contains("not a unit"));
        assert!(Size::parse("lots").is_err());
        assert_eq!(Size(8 << 20).to_string(), "8 MiB");
        assert_eq!(Size(1000).to_string(), "1000 B");
    }
}
