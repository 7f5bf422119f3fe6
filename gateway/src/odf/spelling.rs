//! How ODF enum values and union tags are spelled in YAML (RFC-013): the canonical form is
//! PascalCase (`AddPushSource`); camelCase (`addPushSource`) and all-lowercase
//! (`addpushsource`) are accepted on input; anything else is rejected.
//!
//! Unions are read through a `serde_yaml_ng::Value` so that the tag may stand anywhere in its
//! mapping and every error still names the path of the field that is wrong.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// The canonical name that `input` spells, if it spells one of `names` (all PascalCase).
pub fn canonical<'a>(input: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .copied()
        .find(|name| input == *name || input == lower_first(name) || input == name.to_ascii_lowercase())
}

fn lower_first(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

pub fn unknown_name(what: &str, input: &str, names: &[&str]) -> String {
    format!("unknown {what} '{input}', expected one of: {}", names.join(", "))
}

/// Splits a union value into its canonical tag and the remaining fields.
/// `shorthand` also allows a bare string to stand for `{kind: <string>}`.
pub fn split_kind<E: serde::de::Error>(
    union: &str,
    value: Value,
    names: &[&'static str],
    shorthand: bool,
) -> Result<(&'static str, Value), E> {
    let mut map = match value {
        Value::Mapping(map) => map,
        Value::String(s) if shorthand => {
            let kind = canonical(&s, names).ok_or_else(|| E::custom(unknown_name(union, &s, names)))?;
            return Ok((kind, Value::Mapping(Default::default())));
        }
        other => {
            return Err(E::custom(format!(
                "expected a {union} mapping with a 'kind' field, found {}",
                describe(&other)
            )));
        }
    };
    let kind = match map.remove("kind") {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(E::custom(format!("'kind' must be a string, found {}", describe(&other))));
        }
        None => {
            return Err(E::custom(format!("missing field 'kind' of {union} (one of: {})", names.join(", "))));
        }
    };
    let kind = canonical(&kind, names).ok_or_else(|| E::custom(unknown_name(union, &kind, names)))?;
    Ok((kind, Value::Mapping(map)))
}

/// Deserializes one union member, keeping the path inside it in the error message.
pub fn member<T: DeserializeOwned, E: serde::de::Error>(kind: &str, value: Value) -> Result<T, E> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            E::custom(format!("{kind}: {}", e.inner()))
        } else {
            E::custom(format!("{kind}.{path}: {}", e.inner()))
        }
    })
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A plain ODF enum: serialized as its PascalCase name, read in any RFC-013 spelling.
macro_rules! odf_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const NAMES: &'static [&'static str] = &[$(stringify!($variant)),+];
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let canonical = $crate::odf::spelling::canonical(s, Self::NAMES)
                    .ok_or_else(|| $crate::odf::spelling::unknown_name(stringify!($name), s, Self::NAMES))?;
                Ok(Self::ALL[Self::NAMES.iter().position(|n| *n == canonical).unwrap_or_default()])
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A tagged ODF union whose variants each wrap the struct of the same name. Serialization
/// comes from `#[derive(Serialize)] #[serde(tag = "kind")]` on the enum; this macro adds the
/// RFC-013-aware deserialization. `prepare` may rewrite a member's fields before they are
/// read (legacy spellings); `shorthand` accepts a bare string for a member with no fields.
macro_rules! odf_union {
    ($name:ident { $($variant:ident),+ $(,)? } $(prepare = $prepare:path,)? $(shorthand = $short:literal)?) => {
        impl $name {
            pub const KINDS: &'static [&'static str] = &[$(stringify!($variant)),+];

            pub fn kind(&self) -> &'static str {
                match self { $($name::$variant(_) => stringify!($variant)),+ }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use $crate::odf::spelling::{member, split_kind};
                let value = serde_yaml_ng::Value::deserialize(d)?;
                #[allow(unused_mut)]
                let mut shorthand = false;
                $(shorthand = $short;)?
                #[allow(unused_mut)]
                let (kind, mut fields) = split_kind::<D::Error>(stringify!($name), value, Self::KINDS, shorthand)?;
                $($prepare(kind, &mut fields).map_err(<D::Error as serde::de::Error>::custom)?;)?
                match kind {
                    $(stringify!($variant) => member(kind, fields).map($name::$variant),)+
                    other => Err(<D::Error as serde::de::Error>::custom(format!("unhandled {other}"))),
                }
            }
        }
    };
}

pub(crate) use odf_enum;
pub(crate) use odf_union;

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn rfc013_spellings() {
        let names = ["AddPushSource", "UInt8", "Int8"];
        assert_eq!(canonical("AddPushSource", &names), Some("AddPushSource"));
        assert_eq!(canonical("addPushSource", &names), Some("AddPushSource"));
        assert_eq!(canonical("addpushsource", &names), Some("AddPushSource"));
        assert_eq!(canonical("uint8", &names), Some("UInt8"));
        assert_eq!(canonical("ADDPUSHSOURCE", &names), None);
        assert_eq!(canonical("add_push_source", &names), None);
        assert_eq!(canonical("AddpushSource", &names), None);
    }
}
