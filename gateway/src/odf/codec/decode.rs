//! FlatBuffers -> MetadataBlock; the mirror of `encode.rs`, field slot for field slot.

use chrono::{DateTime, Utc};

use super::reader::Table;
use super::{DecodeError, Timestamp};
use crate::odf::dataset_id::DatasetId;
use crate::odf::events::*;
use crate::odf::hash::Multihash;
use crate::odf::polling::*;
use crate::odf::schema::{DataField, DataSchema, DataType, ExtraAttributes, TimeUnit};
use crate::odf::source::*;

type Result<T> = std::result::Result<T, DecodeError>;

/// Nested data types deeper than this are refused rather than risking the stack.
const MAX_TYPE_DEPTH: usize = 64;

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
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
fn union<'a>(
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

fn enum_value<E: Copy>(all: &[E], raw: i64, name: &str) -> Result<E> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| all.get(i).copied())
        .ok_or_else(|| DecodeError::new(format!("{raw} is not a {name}")))
}

pub fn block(t: &Table) -> Result<MetadataBlock> {
    let system_time = required(timestamp(t, 0)?, "MetadataBlock.systemTime")?;
    let prev_block_hash = hash(t, 1, "MetadataBlock.prevBlockHash")?;
    let sequence_number = t.scalar(2, 0u64)?;
    let (kind, member) =
        required(union(t, 3, super::encode::event_kinds(), "MetadataEvent")?, "MetadataBlock.event")?;
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
        "SetPollingSource" => MetadataEvent::SetPollingSource(set_polling_source(t)?),
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
            schema: t.table(1)?.map(|s| data_schema(&s, 0)).transpose()?,
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

fn data_schema(t: &Table, depth: usize) -> Result<DataSchema> {
    Ok(DataSchema { fields: data_fields(t, 0, depth)?, extra: extra(t, 1)? })
}

fn data_fields(t: &Table, index: u16, depth: usize) -> Result<Vec<DataField>> {
    required(t.tables(index)?, "fields")?
        .iter()
        .map(|f| {
            Ok(DataField {
                name: required(f.string(0)?, "DataField.name")?,
                data_type: required(data_type(f, 1, depth)?, "DataField.type")?,
                extra: extra(f, 3)?,
            })
        })
        .collect()
}

fn time_unit(t: &Table, index: u16) -> Result<Option<TimeUnit>> {
    t.optional::<i16>(index)?.map(|u| enum_value(TimeUnit::ALL, u.into(), "TimeUnit")).transpose()
}

fn data_type(t: &Table, index: u16, depth: usize) -> Result<Option<DataType>> {
    if depth > MAX_TYPE_DEPTH {
        return Err(DecodeError::new(format!("data types nested deeper than {MAX_TYPE_DEPTH}")));
    }
    let Some((kind, m)) = union(t, index, DataType::KINDS, "DataType")? else {
        return Ok(None);
    };
    let nested = |index: u16, field: &str| -> Result<Box<DataType>> {
        Ok(Box::new(required(data_type(&m, index, depth + 1)?, field)?))
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
        "Struct" => DataType::Struct { fields: data_fields(&m, 0, depth + 1)? },
        "Time" => DataType::Time { unit: time_unit(&m, 0)? },
        "Timestamp" => DataType::Timestamp { unit: time_unit(&m, 0)?, timezone: m.string(1)? },
        _ => DataType::String,
    }))
}

fn schema(t: &Table, index: u16) -> Result<Option<DataSchema>> {
    t.table(index)?.map(|s| data_schema(&s, 0)).transpose()
}

fn read_step(t: &Table, index: u16) -> Result<Option<ReadStep>> {
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
        _ => ReadStep::NdGeoJson(schema_only(&r)?),
    }))
}

fn transform(t: &Table, index: u16) -> Result<Option<Transform>> {
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

fn merge_strategy(t: &Table, index: u16) -> Result<Option<MergeStrategy>> {
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
        _ => MergeStrategy::UpsertStream(key(&m)?),
    }))
}

fn set_polling_source(t: &Table) -> Result<SetPollingSource> {
    let prepare = t
        .tables(2)?
        .map(|steps| {
            steps.iter().map(|w| required(prep_step(w)?, "PrepStepWrapper.value")).collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    Ok(SetPollingSource {
        fetch: required(fetch_step(t, 0)?, "SetPollingSource.fetch")?,
        prepare,
        read: required(read_step(t, 3)?, "SetPollingSource.read")?,
        preprocess: transform(t, 5)?,
        merge: required(merge_strategy(t, 7)?, "SetPollingSource.merge")?,
    })
}

fn name_values(t: &Table, index: u16) -> Result<Option<Vec<NameValue>>> {
    t.tables(index)?
        .map(|list| {
            list.iter()
                .map(|nv| {
                    Ok(NameValue {
                        name: required(nv.string(0)?, "name")?,
                        value: required(nv.string(1)?, "value")?,
                    })
                })
                .collect()
        })
        .transpose()
}

fn event_time_source(t: &Table, index: u16) -> Result<Option<EventTimeSource>> {
    let Some((kind, s)) = union(t, index, EventTimeSource::KINDS, "EventTimeSource")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "FromMetadata" => EventTimeSource::FromMetadata(Empty {}),
        "FromPath" => EventTimeSource::FromPath(EventTimeSourceFromPath {
            pattern: required(s.string(0)?, "FromPath.pattern")?,
            timestamp_format: s.string(1)?,
        }),
        _ => EventTimeSource::FromSystemTime(Empty {}),
    }))
}

fn caching(t: &Table, index: u16) -> Result<Option<SourceCaching>> {
    Ok(union(t, index, SourceCaching::KINDS, "SourceCaching")?.map(|_| SourceCaching::Forever(Empty {})))
}

fn fetch_step(t: &Table, index: u16) -> Result<Option<FetchStep>> {
    let Some((kind, f)) = union(t, index, FetchStep::KINDS, "FetchStep")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "Url" => FetchStep::Url(FetchStepUrl {
            url: required(f.string(0)?, "Url.url")?,
            event_time: event_time_source(&f, 1)?,
            cache: caching(&f, 3)?,
            headers: name_values(&f, 5)?,
        }),
        "FilesGlob" => FetchStep::FilesGlob(FetchStepFilesGlob {
            path: required(f.string(0)?, "FilesGlob.path")?,
            event_time: event_time_source(&f, 1)?,
            cache: caching(&f, 3)?,
            order: f
                .optional::<i32>(5)?
                .map(|o| enum_value(SourceOrdering::ALL, o.into(), "SourceOrdering"))
                .transpose()?,
        }),
        "Container" => FetchStep::Container(FetchStepContainer {
            image: required(f.string(0)?, "Container.image")?,
            command: f.strings(1)?,
            args: f.strings(2)?,
            env: name_values(&f, 3)?,
        }),
        "Mqtt" => FetchStep::Mqtt(FetchStepMqtt {
            host: required(f.string(0)?, "Mqtt.host")?,
            port: f.scalar(1, 0i32)?,
            username: f.string(2)?,
            password: f.string(3)?,
            topics: required(f.tables(4)?, "Mqtt.topics")?
                .iter()
                .map(|topic| {
                    Ok(MqttTopicSubscription {
                        path: required(topic.string(0)?, "MqttTopicSubscription.path")?,
                        qos: topic
                            .optional::<i32>(1)?
                            .map(|q| enum_value(MqttQos::ALL, q.into(), "MqttQos"))
                            .transpose()?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
        _ => FetchStep::EthereumLogs(FetchStepEthereumLogs {
            chain_id: f.optional(0)?,
            node_url: f.string(1)?,
            filter: f.string(2)?,
            signature: f.string(3)?,
        }),
    }))
}

fn prep_step(wrapper: &Table) -> Result<Option<PrepStep>> {
    let Some((kind, p)) = union(wrapper, 0, PrepStep::KINDS, "PrepStep")? else {
        return Ok(None);
    };
    Ok(Some(match kind {
        "Decompress" => PrepStep::Decompress(PrepStepDecompress {
            format: enum_value(CompressionFormat::ALL, p.scalar(0, 0i32)?.into(), "CompressionFormat")?,
            sub_path: p.string(1)?,
        }),
        _ => PrepStep::Pipe(PrepStepPipe { command: required(p.strings(0)?, "Pipe.command")? }),
    }))
}
