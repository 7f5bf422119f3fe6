//! One accepted payload as the write-ahead log keeps it: everything the commit needs to
//! ingest it later exactly as it would have at once (source, format, receive time, captured
//! columns, column bindings), and where it came from, for the quarantine.
//!
//! ```text
//! version u8 (1 or 2) | received ms i64 LE | source str | format str | route str | sender str
//! | columns u16 LE, then (name str, value long-str) each
//! | version 2 only: bindings u16 LE, then (column str, by str, rule) each
//! | payload (the rest)
//! rule = 0u8, parts u16 LE, then (0u8 long-str: text | 1u8: any) each; or 1u8 long-str: unavailable
//! str = u16 LE length + UTF-8; long-str = u32 LE length + UTF-8; an empty format = none
//! ```
//!
//! An entry without bindings is written as version 1, so a gateway from before bindings can
//! still replay such a log.

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::ingest::{BindingRule, ColumnBinding, InputFormat, Part, Pattern};

const VERSION: u8 = 1;
const VERSION_BINDINGS: u8 = 2;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub source: String,
    /// The format the sender declared; `None` reads it in the source's own.
    pub format: Option<InputFormat>,
    /// The path or topic it arrived on.
    pub route: String,
    /// Who sent it: a peer address, a client id, an identity.
    pub sender: String,
    pub received: DateTime<Utc>,
    /// Values captured from the route (a device id in the topic) for columns.
    pub columns: Vec<(String, String)>,
    /// Rules its records must keep, checked again when it is committed.
    pub bindings: Vec<ColumnBinding>,
    pub payload: Bytes,
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 64);
        out.push(if self.bindings.is_empty() { VERSION } else { VERSION_BINDINGS });
        out.extend_from_slice(&self.received.timestamp_millis().to_le_bytes());
        put_str(&mut out, &self.source);
        put_str(&mut out, &self.format.map(|f| f.to_string()).unwrap_or_default());
        put_str(&mut out, &self.route);
        put_str(&mut out, &self.sender);
        out.extend_from_slice(&(self.columns.len().min(u16::MAX as usize) as u16).to_le_bytes());
        for (name, value) in self.columns.iter().take(u16::MAX as usize) {
            put_str(&mut out, name);
            put_long(&mut out, value);
        }
        if !self.bindings.is_empty() {
            out.extend_from_slice(&(self.bindings.len().min(u16::MAX as usize) as u16).to_le_bytes());
            for binding in self.bindings.iter().take(u16::MAX as usize) {
                put_str(&mut out, &binding.column);
                put_str(&mut out, &binding.by);
                match &binding.rule {
                    BindingRule::Pattern(pattern) => {
                        out.push(0);
                        let parts = &pattern.parts()[..pattern.parts().len().min(u16::MAX as usize)];
                        out.extend_from_slice(&(parts.len() as u16).to_le_bytes());
                        for part in parts {
                            match part {
                                Part::Text(text) => {
                                    out.push(0);
                                    put_long(&mut out, text);
                                }
                                Part::Any => out.push(1),
                            }
                        }
                    }
                    BindingRule::Unavailable(why) => {
                        out.push(1);
                        put_long(&mut out, why);
                    }
                }
            }
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a record body; an error names what was wrong (the record is then damage).
    pub fn decode(bytes: &[u8]) -> Result<Entry, String> {
        let mut input = Input(bytes);
        let version = input.take(1)?[0];
        if version != VERSION && version != VERSION_BINDINGS {
            return Err(format!("entry version {version} is not one this gateway reads"));
        }
        let millis = i64::from_le_bytes(input.array()?);
        let received = DateTime::from_timestamp_millis(millis).ok_or("receive time out of range")?;
        let source = input.str16()?;
        let format = match input.str16()? {
            f if f.is_empty() => None,
            f => Some(f.parse()?),
        };
        let route = input.str16()?;
        let sender = input.str16()?;
        let count = u16::from_le_bytes(input.array()?);
        let mut columns = Vec::with_capacity(count.into());
        for _ in 0..count {
            let name = input.str16()?;
            columns.push((name, input.str32()?));
        }
        let mut bindings = Vec::new();
        if version == VERSION_BINDINGS {
            let count = u16::from_le_bytes(input.array()?);
            for _ in 0..count {
                let column = input.str16()?;
                let by = input.str16()?;
                let rule = match input.take(1)?[0] {
                    0 => {
                        let count = u16::from_le_bytes(input.array()?);
                        let mut parts = Vec::with_capacity(count.into());
                        for _ in 0..count {
                            parts.push(match input.take(1)?[0] {
                                0 => Part::Text(input.str32()?),
                                1 => Part::Any,
                                other => return Err(format!("pattern part kind {other} is not known")),
                            });
                        }
                        BindingRule::Pattern(Pattern::new(parts))
                    }
                    1 => BindingRule::Unavailable(input.str32()?),
                    other => return Err(format!("binding rule kind {other} is not known")),
                };
                bindings.push(ColumnBinding { column, rule, by });
            }
        }
        Ok(Entry {
            source,
            format,
            route,
            sender,
            received,
            columns,
            bindings,
            payload: Bytes::copy_from_slice(input.0),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer names and origins than 64 KiB are cut at a char boundary: they are labels.
    let s = cut(s, u16::MAX as usize);
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_long(out: &mut Vec<u8>, s: &str) {
    let s = cut(s, u32::MAX as usize);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `s`, or its longest start of at most `max` bytes that ends at a char boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("entry ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn utf8(&mut self, len: usize) -> Result<String, String> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "entry text is not UTF-8".into())
    }

    fn str16(&mut self) -> Result<String, String> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        self.utf8(len)
    }

    fn str32(&mut self) -> Result<String, String> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.utf8(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn entries_round_trip() {
        let entry = Entry {
            source: "vendorA".into(),
            format: Some(InputFormat::Cbor),
            route: "trackers/A-1/gps".into(),
            sender: "mqtt client A-1 (127.0.0.1:5000)".into(),
            received: DateTime::from_timestamp_millis(1_767_225_600_123).unwrap(),
            columns: vec![("device_id".into(), "A-1".into())],
            bindings: vec![
                ColumnBinding {
                    column: "device_id".into(),
                    rule: BindingRule::Pattern(Pattern::new(vec![Part::Text("A-*".into()), Part::Any])),
                    by: "identity 'vendorA'".into(),
                },
                ColumnBinding {
                    column: "station".into(),
                    rule: BindingRule::Unavailable("coap requests have no client id".into()),
                    by: "identity 'vendorA'".into(),
                },
            ],
            payload: Bytes::from_static(&[0xa1, 0x61, 0x74, 0x01]),
        };
        assert_eq!(entry.encode()[0], VERSION_BINDINGS);
        assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        let plain = Entry { format: None, columns: vec![], bindings: vec![], payload: Bytes::new(), ..entry };
        assert_eq!(plain.encode()[0], VERSION, "readable by a gateway from before bindings");
        assert_eq!(Entry::decode(&plain.encode()).unwrap(), plain);
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Entry::decode(&bytes);
        }
    }
}
