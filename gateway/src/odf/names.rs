//! Names of datasets and push sources. Both appear in file paths, MQTT topics and URL paths,
//! so they are restricted to letters, digits, `-`, `_` and inner dots.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
#[error("'{value}' is not a valid {what}: {reason}")]
pub struct NameError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

fn check(what: &'static str, value: &str) -> Result<(), NameError> {
    let error = |reason| NameError { what, value: value.to_owned(), reason };
    if value.is_empty() || value.len() > 100 {
        return Err(error("must be 1 to 100 characters long"));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(error("must start with a letter or digit"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(error("may only contain letters, digits, '-', '_' and '.'"));
    }
    if value.ends_with('.') || value.contains("..") {
        return Err(error("dots may only separate parts of the name"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $name:ident, $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                check($what, s).map(|()| $name(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Ordered and hashed as the `String` it holds, so maps keyed by it are looked up by `&str`.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

name_type!(
    /// The local name of a dataset: its folder under the data directory.
    DatasetName,
    "dataset name"
);
name_type!(
    /// The name of a push source within its dataset.
    SourceName,
    "source name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_names() {
        for ok in ["gps", "air-quality", "org.example.gps", "v2_raw", "0x"] {
            assert!(ok.parse::<DatasetName>().is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "-gps", "gps.", "a..b", "a b", "ünï", "a+b", "a#"] {
            let e = bad.parse::<DatasetName>().unwrap_err().to_string();
            assert!(e.contains("is not a valid dataset name"), "{bad}: {e}");
        }
    }
}
