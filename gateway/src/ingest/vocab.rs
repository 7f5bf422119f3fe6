//! The names of a dataset's system columns: ODF's defaults unless SetVocab renames them.

/// Names of the system columns (ODF's defaults; SetVocab may rename them).
#[derive(Debug, Clone)]
pub struct Vocab {
    pub offset: String,
    pub op: String,
    pub system_time: String,
    pub event_time: String,
}

impl Vocab {
    pub fn of(vocab: Option<&crate::odf::SetVocab>) -> Vocab {
        let pick = |name: Option<&Option<String>>, default: &str| {
            name.and_then(Option::as_deref).unwrap_or(default).to_owned()
        };
        Vocab {
            offset: pick(vocab.map(|v| &v.offset_column), "offset"),
            op: pick(vocab.map(|v| &v.operation_type_column), "op"),
            system_time: pick(vocab.map(|v| &v.system_time_column), "system_time"),
            event_time: pick(vocab.map(|v| &v.event_time_column), "event_time"),
        }
    }
}
