//! Metadata events of a root dataset and the block that carries one.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::dataset_id::DatasetId;
use super::hash::Multihash;
use super::polling::SetPollingSource;
use super::schema::{DataSchema, ExtraAttributes};
use super::source::AddPushSource;
use super::spelling::{odf_enum, odf_union};

odf_enum! {
    pub enum DatasetKind { Root, Derivative }
}

/// A closed interval `[start; end]` of record offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsetInterval {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataSlice {
    pub logical_hash: Multihash,
    pub physical_hash: Multihash,
    pub offset_interval: OffsetInterval,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    pub physical_hash: Multihash,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceState {
    pub source_name: String,
    pub kind: String,
    pub value: String,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddData {
    pub prev_checkpoint: Option<Multihash>,
    pub prev_offset: Option<u64>,
    pub new_data: Option<DataSlice>,
    pub new_checkpoint: Option<Checkpoint>,
    #[serde(default, with = "optional_time")]
    pub new_watermark: Option<DateTime<Utc>>,
    pub new_source_state: Option<SourceState>,
    pub extra: Option<ExtraAttributes>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Seed {
    pub dataset_id: DatasetId,
    pub dataset_kind: DatasetKind,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetVocab {
    pub offset_column: Option<String>,
    pub operation_type_column: Option<String>,
    pub system_time_column: Option<String>,
    pub event_time_column: Option<String>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentEmbedded {
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentsEmbedded {
    pub items: Vec<AttachmentEmbedded>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum Attachments {
    Embedded(AttachmentsEmbedded),
}

odf_union!(Attachments { Embedded });

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAttachments {
    pub attachments: Attachments,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetInfo {
    pub description: Option<String>,
    pub keywords: Option<Vec<String>>,
}

#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetLicense {
    pub short_name: String,
    pub name: String,
    pub spdx_id: Option<String>,
    pub website_url: String,
}

/// The schema of the data slices that follow. Only the RFC-016 `schema` is written; the
/// deprecated Arrow FlatBuffers form is kept as bytes when read from older chains.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetDataSchema {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_hex")]
    pub raw_arrow_schema: Option<Vec<u8>>,
    pub schema: Option<DataSchema>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisablePushSource {
    pub source_name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisablePollingSource {}

/// One transaction on a dataset. Derivative-dataset events (SetTransform, ExecuteTransform)
/// are outside what a gateway writes and are rejected when met.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind")]
pub enum MetadataEvent {
    AddData(AddData),
    Seed(Seed),
    SetPollingSource(SetPollingSource),
    SetVocab(SetVocab),
    SetAttachments(SetAttachments),
    SetInfo(SetInfo),
    SetLicense(SetLicense),
    SetDataSchema(SetDataSchema),
    AddPushSource(AddPushSource),
    DisablePushSource(DisablePushSource),
    DisablePollingSource(DisablePollingSource),
}

odf_union!(MetadataEvent {
    AddData,
    Seed,
    SetPollingSource,
    SetVocab,
    SetAttachments,
    SetInfo,
    SetLicense,
    SetDataSchema,
    AddPushSource,
    DisablePushSource,
    DisablePollingSource,
});

impl MetadataEvent {
    /// Whether kamu's current release fails on a dataset holding this event: it stops with
    /// "Disabling sources is not yet fully supported" on either Disable event. The gateway
    /// still writes them (the spec defines them), but says so whenever it does.
    pub fn unreadable_by_kamu(&self) -> bool {
        matches!(self, MetadataEvent::DisablePushSource(_) | MetadataEvent::DisablePollingSource(_))
    }
}

/// What to tell the user when such an event is written.
pub const KAMU_DISABLE_WARNING: &str = "kamu's current release cannot read this dataset: it stops on \
    DisablePushSource and DisablePollingSource (\"Disabling sources is not yet fully supported\"); \
    define a new dataset instead if kamu must read it";

/// A link of the metadata chain.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetadataBlock {
    #[serde(with = "time")]
    pub system_time: DateTime<Utc>,
    pub prev_block_hash: Option<Multihash>,
    pub sequence_number: u64,
    pub event: MetadataEvent,
}

/// RFC 3339 with `Z` and only as many fraction digits as needed, as ODF tools print times.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

mod time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_time(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| serde::de::Error::custom(format!("'{s}' is not an RFC 3339 time: {e}")))
    }
}

mod optional_time {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => time::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "time")] DateTime<Utc>);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

mod optional_hex {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&hex::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| hex::decode(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}
