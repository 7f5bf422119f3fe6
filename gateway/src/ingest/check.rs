//! Checking a payload against a push source before it is accepted, so that a sender learns
//! at once which records do not fit: the same readers and coercion rules as the commit, with
//! nothing kept. A payload that passes is read again, the same way, when it is committed,
//! many payloads at a time.
//!
//! Checking one small payload per message is the gateway's hottest path, so the records are
//! only counted (no column buffers are built; the commit builds them a chunk of payloads at
//! a time) and readers are kept between checks rather than made for each.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::binding::ColumnBinding;
use super::error::IngestError;
use super::format::InputFormat;
use super::read::{ReadOptions, Reader, RecordError};
use super::read_schema::ReadSchema;
use crate::odf::AddPushSource;

/// Records are read and dropped this many at a time.
const CHUNK: usize = 4096;
/// Rejections described at most; the rest are counted. A payload of a million bad lines
/// must not become a million error values.
pub const MAX_DESCRIBED: usize = 100;
/// Readers kept for the next checks; more checks at once make readers of their own.
const KEPT_READERS: usize = 64;

/// A push source's read step, ready to check payloads; clones share their readers.
#[derive(Clone)]
pub struct SourceCheck {
    schema: ReadSchema,
    options: ReadOptions,
    readers: Arc<Mutex<Vec<Reader>>>,
}

/// What a check found.
#[derive(Debug, Default)]
pub struct CheckOutcome {
    /// Records that fit the source's schema.
    pub records: usize,
    /// Records that do not, with the reason each (the first `MAX_DESCRIBED`).
    pub rejected: Vec<RecordError>,
    /// How many did not, described or not.
    pub rejected_count: usize,
}

impl SourceCheck {
    pub fn new(source: &AddPushSource) -> Result<SourceCheck, IngestError> {
        let schema = ReadSchema::of(&source.read).map_err(IngestError::Source)?;
        let options = ReadOptions::of(&source.read).map_err(IngestError::Source)?;
        Ok(SourceCheck { schema, options, readers: Arc::default() })
    }

    /// The source's own format, used when a payload declares none.
    pub fn declared(&self) -> InputFormat {
        self.options.declared
    }

    /// Reads `payload` as `format` (else the source's own), with `columns` filling the
    /// columns the payload leaves out and `bindings` checked on every record, as the commit
    /// will.
    pub fn check(
        &self,
        payload: &Bytes,
        format: Option<InputFormat>,
        columns: &[(String, String)],
        bindings: &[ColumnBinding],
        origin: &str,
    ) -> CheckOutcome {
        let mut reader = self.take_reader();
        let mut outcome = CheckOutcome::default();
        let format = format.unwrap_or(self.options.declared);
        let input = Box::new(Cursor::new(payload.clone()));
        let mut rejected = Vec::new();
        // Reading from memory cannot fail; a message that cannot be opened is a rejection.
        let _ = reader.begin(input, format, origin, columns, bindings, &mut rejected);
        loop {
            let ended = reader.read_some(CHUNK, &mut rejected).unwrap_or(true);
            outcome.records += reader.rows();
            reader.discard();
            outcome.rejected_count += rejected.len();
            let room = MAX_DESCRIBED.saturating_sub(outcome.rejected.len());
            outcome.rejected.extend(rejected.drain(..).take(room));
            if ended {
                self.give_back(reader);
                return outcome;
            }
        }
    }

    fn take_reader(&self) -> Reader {
        let kept = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        kept.unwrap_or_else(|| Reader::validating(self.schema.clone(), self.options.clone()))
    }

    fn give_back(&self, mut reader: Reader) {
        reader.reset();
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < KEPT_READERS {
            readers.push(reader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::odf::parse_snapshots;

    fn source() -> AddPushSource {
        let manifest = r#"
kind: DatasetSnapshot
version: 1
content:
  name: t
  kind: Root
  metadata:
    - kind: AddPushSource
      sourceName: a
      read:
        kind: NdJson
        schema: ["device_id STRING", "t TIMESTAMP", "lat DOUBLE"]
      merge:
        kind: Append
"#;
        let snapshot = parse_snapshots(manifest, "t.yaml").unwrap().remove(0);
        match &snapshot.metadata[0] {
            crate::odf::MetadataEvent::AddPushSource(s) => s.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn good_and_bad_records_are_told_apart_in_any_format() {
        let check = SourceCheck::new(&source()).unwrap();
        let payload =
            b"{\"t\":\"2026-01-01T00:00:00Z\",\"lat\":1}\n{\"t\":\"noon\",\"lat\":2}\n{\"t\":3,\"lat\":3}\n";
        let columns = [("device_id".to_string(), "A-1".to_string())];
        let outcome = check.check(&Bytes::from_static(payload), None, &columns, &[], "test");
        assert_eq!(outcome.records, 2);
        assert_eq!(outcome.rejected.len(), 1);
        assert_eq!(outcome.rejected[0].record, 2);
        let csv = b"t,lat\n2026-01-01T00:00:00Z,1\n";
        assert_eq!(
            check.check(&Bytes::from_static(csv), Some(InputFormat::Csv), &columns, &[], "test").records,
            1
        );
        let garbage =
            check.check(&Bytes::from_static(&[0xff, 0x00, 0x13]), Some(InputFormat::Cbor), &[], &[], "test");
        assert_eq!((garbage.records, garbage.rejected.len()), (0, 1));
    }

    fn bound(value: &str) -> ColumnBinding {
        ColumnBinding {
            column: "device_id".into(),
            rule: crate::ingest::BindingRule::Pattern(crate::ingest::Pattern::parse(value)),
            by: "identity 'a'".into(),
        }
    }

    #[test]
    fn bound_columns_reject_records_that_disagree_in_any_format() {
        let check = SourceCheck::new(&source()).unwrap();
        let ndjson = b"{\"device_id\":\"A-1\",\"lat\":1}\n{\"device_id\":\"B-1\",\"lat\":2}\n{\"lat\":3}\n";
        let outcome = check.check(&Bytes::from_static(ndjson), None, &[], &[bound("A-*")], "test");
        assert_eq!(outcome.records, 1);
        let reasons: Vec<String> = outcome.rejected.iter().map(ToString::to_string).collect();
        assert_eq!(outcome.rejected.iter().map(|r| r.record).collect::<Vec<_>>(), [2, 3], "{reasons:?}");
        assert!(reasons[0].contains("\"B-1\"") && reasons[0].contains("matching 'A-*'"), "{reasons:?}");
        assert!(reasons[1].contains("field 'device_id'"), "a bound column left out: {reasons:?}");

        // A binding to one value fills the column where a record leaves it out.
        let outcome = check.check(&Bytes::from_static(ndjson), None, &[], &[bound("A-1")], "test");
        assert_eq!(outcome.records, 2);
        // ... also when a pattern on the same column comes first.
        let outcome =
            check.check(&Bytes::from_static(ndjson), None, &[], &[bound("A-*"), bound("A-1")], "test");
        assert_eq!(outcome.records, 2);
        let csv = b"device_id,lat\nA-1,1\nA-2,2\n";
        let outcome = check.check(
            &Bytes::from_static(csv),
            Some(InputFormat::Csv),
            &[],
            &[bound("A-1"), bound("A-*")],
            "test",
        );
        assert_eq!((outcome.records, outcome.rejected_count), (1, 1));
        // A column the source lacks cannot be checked: the message is refused whole.
        let missing = ColumnBinding { column: "imei".into(), ..bound("A-*") };
        let outcome = check.check(&Bytes::from_static(ndjson), None, &[], &[missing], "test");
        assert_eq!((outcome.records, outcome.rejected.len(), outcome.rejected[0].record), (0, 1, 0));
    }

    #[test]
    fn a_kept_reader_carries_nothing_into_the_next_check() {
        let check = SourceCheck::new(&source()).unwrap();
        let good = Bytes::from_static(b"{\"device_id\":\"A-1\",\"t\":\"2026-01-01T00:00:00Z\",\"lat\":1}\n");
        let fresh = check.check(&good, None, &[], &[], "test");
        assert_eq!((fresh.records, fresh.rejected_count), (1, 0));
        // A payload cut inside a record, one whose binding refuses the good record, a CSV
        // with its header and two records: the reader goes back to the pool after each.
        let _ = check.check(&Bytes::from_static(b"{\"t\":"), None, &[], &[], "test");
        let refused = check.check(&good, None, &[], &[bound("B-*")], "test");
        assert_eq!((refused.records, refused.rejected_count), (0, 1));
        let csv = Bytes::from_static(b"t,lat\n2026-01-01T00:00:00Z,1\nnoon,2\n");
        let csv = check.check(&csv, Some(InputFormat::Csv), &[("device_id".into(), "A-2".into())], &[], "t");
        assert_eq!((csv.records, csv.rejected[0].record), (1, 2));
        // The binding, the format and the numbering of the checks before are gone.
        let again = check.check(&good, None, &[], &[], "test");
        assert_eq!((again.records, again.rejected_count), (1, 0));
        let bad_first = check.check(&Bytes::from_static(b"{\"lat\":\"x\"}\n"), None, &[], &[], "test");
        assert_eq!((bad_first.rejected[0].message, bad_first.rejected[0].record), (0, 1));
    }
}
