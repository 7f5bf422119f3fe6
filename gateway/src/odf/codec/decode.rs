//! FlatBuffers -> MetadataBlock; the mirror of `encode.rs`, field slot for field slot.

use std::cell::Cell;

use chrono::{DateTime, Utc};

use super::reader::Table;
use super::{DecodeError, Timestamp};
use crate::odf::dataset_id::DatasetId;
use crate::odf::events::*;
use crate::odf::hash::Multihash;
use crate::odf::schema::{DataField, DataSchema, DataType, ExtraAttributes, TimeUnit};
use crate::odf::source::*;

pub(super) type Result<T> = std::result::Result<T, DecodeError>;

/// Nested data types deeper than this are refused rather than risking the stack.
const MAX_TYPE_DEPTH: usize = 64;

pub(super) fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| DecodeError::new(format!("required field {field} is missing")))
}

fn hash(t: &Table, index: u16, field: &str) -> Result<Option<Multihash>> {
    t.bytes(index)?
        .map(|b| Multihash::from_bytes(b).map_err(|e| DecodeError::new(format!("{field}: {e}"))))
        .transpose()
}

fn timestamp(t: &Table, index: u16) -> Result<Option<DateTime<Utc>>> {
    t.inline::<16>(index)?.map(|raw| Timestamp::from_bytes(raw).to_time()).transpose()
}

/// The member table and kind name of a union at `index`, if set.
pub(super) fn union<'a>(
    t: &Table<'a>,
    index: u16,
    kinds: &[&'static str],
    union: &str,
) -> Result<Option<(&'static str, Table<'a>)>> {
    let tag: u8 = t.scalar(index, 0)?;
    if tag == 0 {
        return Ok(None);
    }
    let kind = kinds
        .get(tag as usize - 1)
        .ok_or_else(|| DecodeError::new(format!("{union} has no member number {tag}")))?;
    let member = required(t.table(index + 1)?, union)?;
    Ok(Some((kind, member)))
}

/// A kind name taken from a union's own list that this decoder has no arm for: a bug here,
/// reported as an error rather than decoded as something else.
pub(super) fn unknown_member(union: &str, kind: &str) -> DecodeError {
    DecodeError::new(format!("{union} member {kind} is not handled"))
}

pub(super) fn enum_value<E: Copy>(all: &[E], raw: i64, name: &str) -> Result<E> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| all.get(i).copied())
        .ok_or_else(|| DecodeError::new(format!("{raw} is not a {name}")))
}

pub fn block(t: &Table) -> Result<MetadataBlock> {
    let system_time = required(timestamp(t, 0)?, "MetadataBlock.systemTime")?;
    let prev_block_hash = hash(t, 1, "MetadataBlock.prevBlockHash")?;
    let sequence_number = t.scalar(2, 0u64)?;
    let (kind, member) = required(union(t, 3, super::EVENT_KINDS, "MetadataEvent")?, "MetadataBlock.event")?;
    Ok(MetadataBlock { system_time, prev_block_hash, sequence_number, event: event(kind, &member)? })
}

/// The content of a Manifest: (kind, version, content bytes).
pub fn manifest<'a>(t: &Table<'a>) -> Result<(i64, i32, &'a [u8])> {
    Ok((t.scalar(0, 0i64)?, t.scalar(1, 0i32)?, required(t.bytes(2)?, "Manifest.content")?))
}

fn event(kind: &str, t: &Table) -> Result<MetadataEvent> {
    Ok(match kind {
        "AddData" => MetadataEvent::AddData(add_data(t)?),
        "Seed" => {
            let id = required(t.bytes(0)?, "Seed.datasetId")?;
            MetadataEvent::Seed(Seed {
                dataset_id: DatasetId::from_bytes(id).map_err(|e| DecodeError::new(e.to_string()))?,
                dataset_kind: enum_value(DatasetKind::ALL, t.scalar(1, 0i32)?.into(), "DatasetKind")?,
            })
        }
        "SetPollingSource" => MetadataEvent::SetPollingSource(super::polling::decode(t)?),
        "SetVocab" => MetadataEvent::SetVocab(SetVocab {
            offset_column: t.string(0)?,
            operation_type_column: t.string(1)?,
            system_time_column: t.string(2)?,
            event_time_column: t.string(3)?,
        }),
        "SetAttachments" => {
            let (_, embedded) =
                required(union(t, 0, &["Embedded"], "Attachments")?, "SetAttachments.attachments")?;
            let items = required(embedded.tables(0)?, "AttachmentsEmbedded.items")?
                .iter()
                .map(|item| {
                    Ok(AttachmentEmbedded {
                        path: required(item.string(0)?, "AttachmentEmbedded.path")?,
                        content: required(item.string(1)?, "AttachmentEmbedded.content")?,
                    })
                })
                .collect::<Result<_>>()?;
            MetadataEvent::SetAttachments(SetAttachments {
                attachments: Attachments::Embedded(AttachmentsEmbedded { items }),
            })
        }
        "SetInfo" => MetadataEvent::SetInfo(SetInfo { description: t.string(0)?, keywords: t.strings(1)? }),
        "SetLicense" => MetadataEvent::SetLicense(SetLicense {
            short_name: required(t.string(0)?, "SetLicense.shortName")?,
            name: required(t.string(1)?, "SetLicense.name")?,
            spdx_id: t.string(2)?,
            website_url: required(t.string(3)?, "SetLicense.websiteUrl")?,
        }),
        "SetDataSchema" => MetadataEvent::SetDataSchema(SetDataSchema {
            raw_arrow_schema: t.bytes(0)?.map(<[u8]>::to_vec),
            schema: schema(t, 1)?,
        }),
        "AddPushSource" => MetadataEvent::AddPushSource(AddPushSource {
            source_name: required(t.string(0)?, "AddPushSource.sourceName")?,
            read: required(read_step(t, 1)?, "AddPushSource.read")?,
            preprocess: transform(t, 3)?,
            merge: required(merge_strategy(t, 5)?, "AddPushSource.merge")?,
        }),
        "DisablePushSource" => MetadataEvent::DisablePushSource(DisablePushSource {
            source_name: required(t.string(0)?, "DisablePushSource.sourceName")?,
        }),
        "DisablePollingSource" => MetadataEvent::DisablePollingSource(DisablePollingSource {}),
        other => {
            return Err(DecodeError::new(format!(
                "event {other} belongs to derivative datasets, which this gateway does not read"
            )));
        }
    })
}

fn add_data(t: &Table) -> Result<AddData> {
    let new_data = t
        .table(2)?
        .map(|d| -> Result<DataSlice> {
            let interval = required(d.table(2)?, "DataSlice.offsetInterval")?;
            Ok(DataSlice {
                logical_hash: required(hash(&d, 0, "DataSlice.logicalHash")?, "DataSlice.logicalHash")?,
                physical_hash: required(hash(&d, 1, "DataSlice.physicalHash")?, "DataSlice.physicalHash")?,
                offset_interval: OffsetInterval {
                    start: interval.scalar(0, 0u64)?,
                    end: interval.scalar(1, 0u64)?,
                },
                size: d.scalar(3, 0u64)?,
            })
        })
        .transpose()?;
    let new_checkpoint = t
        .table(3)?
        .map(|c| -> Result<Checkpoint> {
            Ok(Checkpoint {
                physical_hash: required(hash(&c, 0, "Checkpoint.physicalHash")?, "Checkpoint.physicalHash")?,
                size: c.scalar(1, 0u64)?,
            })
        })
        .transpose()?;
    let new_source_state = t
        .table(5)?
        .map(|s| -> Result<SourceState> {
            Ok(SourceState {
                source_name: required(s.string(0)?, "SourceState.sourceName")?,
                kind: required(s.string(1)?, "SourceState.kind")?,
                value: required(s.string(2)?, "SourceState.value")?,
            })
        })
        .transpose()?;
    Ok(AddData {
        prev_checkpoint: hash(t, 0, "AddData.prevCheckpoint")?,
        prev_offset: t.optional(1)?,
        new_data,
        new_checkpoint,
        new_watermark: timestamp(t, 4)?,
        new_source_state,
        extra: extra(t, 6)?,
    })
}

fn extra(t: &Table, index: u16) -> Result<Option<ExtraAttributes>> {
    let Some(table) = t.table(index)? else {
        return Ok(None);
    };
    let Some(json) = table.string(0)? else {
        return Ok(Some(ExtraAttributes::new()));
    };
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| DecodeError::new(format!("ExtraAttributes is not a JSON object: {e}")))
}

/// Bounds on decoding one schema. Tables may share children, so a small buffer could
/// describe an exponentially large tree: every decoded type node is counted against the
/// buffer's size, which an honest schema never exceeds.
struct Budget {
    nodes_left: Cell<usize>,
}

impl Budget {
    fn take(&self, depth: usize) -> Result<()> {
        if depth > MAX_TYPE_DEPTH {
            return Err(DecodeError::new(format!("data types nested deeper than {MAX_TYPE_DEPTH}")));
        }
        let left =
            self.nodes_left.get().checked_sub(1).ok_or_else(|| {
                DecodeError::new("the schema has more type nodes than its buffer has room for")
            })?;
        self.nodes_left.set(left);
        Ok(())
    }
}

fn data_schema(t: &Table) -> Result<DataSchema> {
    let budget = Budget { nodes_left: Cell::new(t.buffer_len()) };
    Ok(DataSchema { fields: data_fields(t, 0, 0, &budget)?, extra: extra(t, 1)? })
}

fn data_fields(t: &Table, index: u16, depth: usize, budget: &Budget) -> Result<Vec<DataField>> {
    required(t.tables(index)?, "fields")?
        .iter()
        .map(|f| {
            Ok(DataField {
                name: required(f.string(0)?, "DataField.name")?,
                data_type: required(data_type(f, 1, depth, budget)?, "DataField.type")?,
                extra: extra(f, 3)?,
            })
        })
        .collect()
}

fn time_unit(t: &Table, index: u16) -> Result<Option<TimeUnit>> {
    t.optional::<i16>(index)?.map(|u| enum_value(TimeUnit::ALL, u.into(), "TimeUnit")).transpose()
}

fn data_type(t: &Table, index: u16, depth: usize, budget: &Budget) -> Result<Option<DataType>> {
    budget.take(depth)?;
    let Some((kind, m)) = union(t, index, DataType::KINDS, "DataType")? else {
        return Ok(None);
    };
    let nested = |index: u16, field: &str| -> Result<Box<DataType>> {
        Ok(Box::new(required(data_type(&m, index, depth + 1, budget)?, field)?))
    };
    Ok(Some(match kind {
        "Binary" => DataType::Binary { fixed_length: m.optional(0)? },
        "Bool" => DataType::Bool,
        "Date" => DataType::Date,
        "Decimal" => DataType::Decimal { precision: m.scalar(0, 0u32)?, scale: m.scalar(1, 0i32)? },
        "Duration" => DataType::Duration { unit: time_unit(&m, 0)? },
        "Float16" => DataType::Float16,
        "Float32" => DataType::Float32,
        "Float64" => DataType::Float64,
        "Int8" => DataType::Int8,
        "Int16" => DataType::Int16,
        "Int32" => DataType::Int32,
        "Int64" => DataType::Int64,
        "UInt8" => DataType::UInt8,
        "UInt16" => DataType::UInt16,
        "UInt32" => DataType::UInt32,
        "UInt64" => DataType::UInt64,
        "List" => DataType::List { item_type: nested(0, "List.itemType")?, fixed_length: m.optional(2)? },
        "Map" => DataType::Map {
            key_type: nested(0, "Map.keyType")?,
            value_type: nested(2, "Map.valueType")?,
            keys_sorted: m.optional(4)?,
        },
        "Null" => DataType::Null,
        "Option" => DataType::Option { inner: nested(0, "Option.inner")? },
        "Struct" => DataType::Struct { fields: data_fields(&m, 0, depth + 1, budget)? },
        "Time" => DataType::Time { unit: time_unit(&m, 0)? },
        "Timestamp" => DataType::Timestamp { unit: time_unit(&m, 0)?, timezone: m.string(1)? },
        "String" => DataType::String,
        other => return Err(unknown_member("DataType", other)),
    }))
}

fn schema(t: &Table, index: u16) -> Result<Option<DataSchema>> {
    t.table(index)?.map(|s| data_schema(&s)).transpose()
}

pub(super) fn read_step(t: &Table, index: u16) -> Result<Option<ReadStep>> {
    let Some((kind, r)) = union(t, index, ReadStep::KINDS, "ReadStep")? else {
        return Ok(None);
    };
    let schema_only = |r: &Table| -> Result<ReadSchemaOnly> {
        Ok(ReadSchemaOnly { ddl_schema: r.strings(0)?, schema: schema(r, 1)? })
    };
    Ok(Some(match kind {
        "Csv" => ReadStep::Csv(ReadStepCsv {
            ddl_schema: r.strings(0)?,
            separator: r.string(1)?,
            encoding: r.string(2)?,
            quote: r.string(3)?,
            escape: r.string(4)?,
            header: r.optional(5)?,
            infer_schema: r.optional(6)?,
            null_value: r.string(7)?,
            date_format: r.string(8)?,
            timestamp_format: r.string(9)?,
            schema: schema(&r, 10)?,
        }),
        "GeoJson" => ReadStep::GeoJson(schema_only(&r)?),
        "EsriShapefile" => ReadStep::EsriShapefile(ReadStepEsriShapefile {
            ddl_schema: r.strings(0)?,
            sub_path: r.string(1)?,
            schema: schema(&r, 2)?,
        }),
        "Parquet" => ReadStep::Parquet(schema_only(&r)?),
        "Json" => ReadStep::Json(ReadStepJson {
            sub_path: r.string(0)?,
            ddl_schema: r.strings(1)?,
            date_format: r.string(2)?,
            encoding: r.string(3)?,
            timestamp_format: r.string(4)?,
            schema: schema(&r, 5)?,
        }),
        "NdJson" => ReadStep::NdJson(ReadStepNdJson {
            ddl_schema: r.strings(0)?,
            date_format: r.string(1)?,
            encoding: r.string(2)?,
            timestamp_format: r.string(3)?,
            schema: schema(&r, 4)?,
        }),
        "NdGeoJson" => ReadStep::NdGeoJson(schema_only(&r)?),
        other => return Err(unknown_member("ReadStep", other)),
    }))
}

pub(super) fn transform(t: &Table, index: u16) -> Result<Option<Transform>> {
    let Some((_, s)) = union(t, index, Transform::KINDS, "Transform")? else {
        return Ok(None);
    };
    let queries = s
        .tables(3)?
        .map(|steps| {
            steps
                .iter()
                .map(|q| {
                    Ok(SqlQueryStep {
                        alias: q.string(0)?,
                        query: required(q.string(1)?, "SqlQueryStep.query")?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let temporal_tables = s
        .tables(4)?
        .map(|tables| {
            tables
                .iter()
                .map(|tt| {
                    Ok(TemporalTable {
                        name: required(tt.string(0)?, "TemporalTable.name")?,
                        primary_key: required(tt.strings(1)?, "TemporalTable.primaryKey")?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(Some(Transform::Sql(TransformSql {
        engine: required(s.string(0)?, "TransformSql.engine")?,
        version: s.string(1)?,
        query: s.string(2)?,
        queries,
        temporal_tables,
    })))
}

pub(super) fn merge_strategy(t: &Table, index: u16) -> Result<Option<MergeStrategy>> {
    let Some((kind, m)) = union(t, index, MergeStrategy::KINDS, "MergeStrategy")? else {
        return Ok(None);
    };
    let key = |m: &Table| -> Result<PrimaryKey> {
        Ok(PrimaryKey { primary_key: required(m.strings(0)?, "primaryKey")? })
    };
    Ok(Some(match kind {
        "Append" => MergeStrategy::Append(MergeStrategyAppend {}),
        "Ledger" => MergeStrategy::Ledger(key(&m)?),
        "Snapshot" => MergeStrategy::Snapshot(MergeStrategySnapshot {
            primary_key: required(m.strings(0)?, "Snapshot.primaryKey")?,
            compare_columns: m.strings(1)?,
        }),
        "ChangelogStream" => MergeStrategy::ChangelogStream(key(&m)?),
        "UpsertStream" => MergeStrategy::UpsertStream(key(&m)?),
        other => return Err(unknown_member("MergeStrategy", other)),
    }))
}
