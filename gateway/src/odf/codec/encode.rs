//! MetadataBlock -> FlatBuffers, in the deterministic layout the spec's "Metadata Block
//! Hashing" asks for: every table's children (strings, vectors, tables, union members) are
//! made first, in schema field order and depth first; then the table is started and its fields
//! are added in schema field order. Field slots below are schema field indices, where a union
//! takes two (its type, then its value).

use flatbuffers::{FlatBufferBuilder, Push, UnionWIPOffset, WIPOffset};

use super::Timestamp;
use crate::odf::events::*;
use crate::odf::schema::{DataField, DataSchema, DataType, ExtraAttributes};
use crate::odf::source::*;

pub(super) type Builder<'f> = FlatBufferBuilder<'f>;
pub(super) type Off = WIPOffset<UnionWIPOffset>;

/// A union member: its 1-based position in the union, and its table.
pub(super) type Member = (u8, Off);

/// Adds fields to a started table.
pub(super) struct Fields<'b, 'f> {
    b: &'b mut Builder<'f>,
}

impl Fields<'_, '_> {
    pub(super) fn child(&mut self, field: u16, off: Option<Off>) {
        if let Some(off) = off {
            self.b.push_slot_always(slot(field), off);
        }
    }

    /// A scalar with a schema default: not written when equal to it.
    pub(super) fn scalar<X: Push + PartialEq>(&mut self, field: u16, x: X, default: X) {
        self.b.push_slot(slot(field), x, default);
    }

    /// An optional scalar (`= null` in the schema): written whenever present.
    pub(super) fn optional<X: Push>(&mut self, field: u16, x: Option<X>) {
        if let Some(x) = x {
            self.b.push_slot_always(slot(field), x);
        }
    }

    pub(super) fn union(&mut self, field: u16, member: Option<Member>) {
        if let Some((kind, off)) = member {
            self.scalar(field, kind, 0u8);
            self.child(field + 1, Some(off));
        }
    }

    pub(super) fn timestamp(&mut self, field: u16, t: Option<Timestamp>) {
        if let Some(t) = t {
            self.b.push_slot_always(slot(field), &t);
        }
    }
}

fn slot(field: u16) -> flatbuffers::VOffsetT {
    4 + 2 * field
}

pub(super) fn table(b: &mut Builder, fill: impl FnOnce(&mut Fields)) -> Off {
    let start = b.start_table();
    fill(&mut Fields { b: &mut *b });
    let end = b.end_table(start);
    WIPOffset::new(end.value())
}

pub(super) fn string(b: &mut Builder, s: &Option<String>) -> Option<Off> {
    s.as_deref().map(|s| WIPOffset::new(b.create_string(s).value()))
}

pub(super) fn text(b: &mut Builder, s: &str) -> Option<Off> {
    Some(WIPOffset::new(b.create_string(s).value()))
}

fn bytes(b: &mut Builder, bytes: Option<&[u8]>) -> Option<Off> {
    bytes.map(|v| WIPOffset::new(b.create_vector(v).value()))
}

pub(super) fn strings(b: &mut Builder, list: &Option<Vec<String>>) -> Option<Off> {
    string_list(b, list.as_ref()?)
}

pub(super) fn string_list(b: &mut Builder, list: &[String]) -> Option<Off> {
    let offs: Vec<_> = list.iter().map(|s| b.create_string(s)).collect();
    Some(WIPOffset::new(b.create_vector(&offs).value()))
}

pub(super) fn tables<T>(
    b: &mut Builder,
    list: Option<&[T]>,
    each: impl Fn(&mut Builder, &T) -> Off,
) -> Option<Off> {
    let offs: Vec<Off> = list?.iter().map(|item| each(b, item)).collect();
    Some(WIPOffset::new(b.create_vector(&offs).value()))
}

/// Member position (1-based) of `kind` in a union's member list.
pub(super) fn position(kinds: &[&str], kind: &str) -> u8 {
    let index = kinds.iter().position(|k| *k == kind).expect("kind() names a member of its union's KINDS");
    index as u8 + 1
}

impl Push for Timestamp {
    type Output = Timestamp;

    unsafe fn push(&self, dst: &mut [u8], _written_len: usize) {
        dst[..16].copy_from_slice(&self.to_bytes());
    }

    fn size() -> usize {
        16
    }

    fn alignment() -> flatbuffers::PushAlignment {
        flatbuffers::PushAlignment::new(4)
    }
}

pub fn block(b: &mut Builder, block: &MetadataBlock) -> Off {
    let prev = bytes(b, block.prev_block_hash.as_ref().map(|h| h.to_bytes()).as_deref());
    let event = event(b, &block.event);
    table(b, |t| {
        t.timestamp(0, Some(Timestamp::from(block.system_time)));
        t.child(1, prev);
        t.scalar(2, block.sequence_number, 0u64);
        t.union(3, Some(event));
    })
}

pub fn manifest(b: &mut Builder, kind: i64, version: i32, content: &[u8]) -> Off {
    let content = bytes(b, Some(content));
    table(b, |t| {
        t.scalar(0, kind, 0i64);
        t.scalar(1, version, 0i32);
        t.child(2, content);
    })
}

fn event(b: &mut Builder, e: &MetadataEvent) -> Member {
    let off = match e {
        MetadataEvent::AddData(e) => add_data(b, e),
        MetadataEvent::Seed(e) => {
            let id = bytes(b, Some(&e.dataset_id.to_bytes()));
            table(b, |t| {
                t.child(0, id);
                t.scalar(1, e.dataset_kind as i32, 0i32);
            })
        }
        MetadataEvent::SetPollingSource(e) => super::polling::encode(b, e),
        MetadataEvent::SetVocab(e) => {
            let cols = [
                string(b, &e.offset_column),
                string(b, &e.operation_type_column),
                string(b, &e.system_time_column),
                string(b, &e.event_time_column),
            ];
            table(b, |t| cols.into_iter().zip(0..).for_each(|(c, i)| t.child(i, c)))
        }
        MetadataEvent::SetAttachments(e) => {
            let Attachments::Embedded(embedded) = &e.attachments;
            let items = tables(b, Some(&embedded.items), |b, item| {
                let path = text(b, &item.path);
                let content = text(b, &item.content);
                table(b, |t| {
                    t.child(0, path);
                    t.child(1, content);
                })
            });
            let member = table(b, |t| t.child(0, items));
            table(b, |t| t.union(0, Some((1, member))))
        }
        MetadataEvent::SetInfo(e) => {
            let description = string(b, &e.description);
            let keywords = strings(b, &e.keywords);
            table(b, |t| {
                t.child(0, description);
                t.child(1, keywords);
            })
        }
        MetadataEvent::SetLicense(e) => {
            let fields =
                [text(b, &e.short_name), text(b, &e.name), string(b, &e.spdx_id), text(b, &e.website_url)];
            table(b, |t| fields.into_iter().zip(0..).for_each(|(f, i)| t.child(i, f)))
        }
        MetadataEvent::SetDataSchema(e) => {
            let raw = bytes(b, e.raw_arrow_schema.as_deref());
            let schema = e.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                t.child(0, raw);
                t.child(1, schema);
            })
        }
        MetadataEvent::AddPushSource(e) => {
            let name = text(b, &e.source_name);
            let read = read_step(b, &e.read);
            let preprocess = e.preprocess.as_ref().map(|p| transform(b, p));
            let merge = merge_strategy(b, &e.merge);
            table(b, |t| {
                t.child(0, name);
                t.union(1, Some(read));
                t.union(3, preprocess);
                t.union(5, Some(merge));
            })
        }
        MetadataEvent::DisablePushSource(e) => {
            let name = text(b, &e.source_name);
            table(b, |t| t.child(0, name))
        }
        MetadataEvent::DisablePollingSource(_) => table(b, |_| {}),
    };
    (position(super::EVENT_KINDS, e.kind()), off)
}

fn add_data(b: &mut Builder, e: &AddData) -> Off {
    let prev_checkpoint = bytes(b, e.prev_checkpoint.as_ref().map(|h| h.to_bytes()).as_deref());
    let new_data = e.new_data.as_ref().map(|d| {
        let logical = bytes(b, Some(&d.logical_hash.to_bytes()));
        let physical = bytes(b, Some(&d.physical_hash.to_bytes()));
        let interval = table(b, |t| {
            t.scalar(0, d.offset_interval.start, 0u64);
            t.scalar(1, d.offset_interval.end, 0u64);
        });
        table(b, |t| {
            t.child(0, logical);
            t.child(1, physical);
            t.child(2, Some(interval));
            t.scalar(3, d.size, 0u64);
        })
    });
    let new_checkpoint = e.new_checkpoint.as_ref().map(|c| {
        let physical = bytes(b, Some(&c.physical_hash.to_bytes()));
        table(b, |t| {
            t.child(0, physical);
            t.scalar(1, c.size, 0u64);
        })
    });
    let source_state = e.new_source_state.as_ref().map(|s| {
        let fields = [text(b, &s.source_name), text(b, &s.kind), text(b, &s.value)];
        table(b, |t| fields.into_iter().zip(0..).for_each(|(f, i)| t.child(i, f)))
    });
    let extra = extra(b, &e.extra);
    table(b, |t| {
        t.child(0, prev_checkpoint);
        t.optional(1, e.prev_offset);
        t.child(2, new_data);
        t.child(3, new_checkpoint);
        t.timestamp(4, e.new_watermark.map(Timestamp::from));
        t.child(5, source_state);
        t.child(6, extra);
    })
}

fn extra(b: &mut Builder, extra: &Option<ExtraAttributes>) -> Option<Off> {
    let json = extra.as_ref().map(|e| serde_json::Value::Object(e.clone()).to_string());
    let entries = string(b, &json);
    entries.map(|entries| table(b, |t| t.child(0, Some(entries))))
}

fn data_schema(b: &mut Builder, s: &DataSchema) -> Off {
    let fields = tables(b, Some(&s.fields), data_field);
    let extra = extra(b, &s.extra);
    table(b, |t| {
        t.child(0, fields);
        t.child(1, extra);
    })
}

fn data_field(b: &mut Builder, f: &DataField) -> Off {
    let name = text(b, &f.name);
    let data_type = data_type(b, &f.data_type);
    let extra = extra(b, &f.extra);
    table(b, |t| {
        t.child(0, name);
        t.union(1, Some(data_type));
        t.child(3, extra);
    })
}

fn data_type(b: &mut Builder, dt: &DataType) -> Member {
    let unit = |u: &Option<crate::odf::schema::TimeUnit>| u.map(|u| u as i16);
    let off = match dt {
        DataType::Binary { fixed_length } => table(b, |t| t.optional(0, *fixed_length)),
        DataType::Decimal { precision, scale } => table(b, |t| {
            t.scalar(0, *precision, 0u32);
            t.scalar(1, *scale, 0i32);
        }),
        DataType::Duration { unit: u } | DataType::Time { unit: u } => table(b, |t| t.optional(0, unit(u))),
        DataType::List { item_type, fixed_length } => {
            let item = data_type(b, item_type);
            table(b, |t| {
                t.union(0, Some(item));
                t.optional(2, *fixed_length);
            })
        }
        DataType::Map { key_type, value_type, keys_sorted } => {
            let key = data_type(b, key_type);
            let value = data_type(b, value_type);
            table(b, |t| {
                t.union(0, Some(key));
                t.union(2, Some(value));
                t.optional(4, *keys_sorted);
            })
        }
        DataType::Option { inner } => {
            let inner = data_type(b, inner);
            table(b, |t| t.union(0, Some(inner)))
        }
        DataType::Struct { fields } => {
            let fields = tables(b, Some(fields), data_field);
            table(b, |t| t.child(0, fields))
        }
        DataType::Timestamp { unit: u, timezone } => {
            let timezone = string(b, timezone);
            table(b, |t| {
                t.optional(0, unit(u));
                t.child(1, timezone);
            })
        }
        DataType::Bool
        | DataType::Date
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Null
        | DataType::String => table(b, |_| {}),
    };
    (position(DataType::KINDS, dt.kind()), off)
}

pub(super) fn read_step(b: &mut Builder, r: &ReadStep) -> Member {
    let off = match r {
        ReadStep::Csv(r) => {
            let fields = [
                strings(b, &r.ddl_schema),
                string(b, &r.separator),
                string(b, &r.encoding),
                string(b, &r.quote),
                string(b, &r.escape),
            ];
            let tail = [string(b, &r.null_value), string(b, &r.date_format), string(b, &r.timestamp_format)];
            let schema = r.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                fields.into_iter().zip(0..).for_each(|(f, i)| t.child(i, f));
                t.optional(5, r.header);
                t.optional(6, r.infer_schema);
                tail.into_iter().zip(7..).for_each(|(f, i)| t.child(i, f));
                t.child(10, schema);
            })
        }
        ReadStep::GeoJson(r) | ReadStep::Parquet(r) | ReadStep::NdGeoJson(r) => {
            let ddl = strings(b, &r.ddl_schema);
            let schema = r.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                t.child(0, ddl);
                t.child(1, schema);
            })
        }
        ReadStep::EsriShapefile(r) => {
            let ddl = strings(b, &r.ddl_schema);
            let sub_path = string(b, &r.sub_path);
            let schema = r.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                t.child(0, ddl);
                t.child(1, sub_path);
                t.child(2, schema);
            })
        }
        ReadStep::Json(r) => {
            let fields = [
                string(b, &r.sub_path),
                strings(b, &r.ddl_schema),
                string(b, &r.date_format),
                string(b, &r.encoding),
                string(b, &r.timestamp_format),
            ];
            let schema = r.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                fields.into_iter().zip(0..).for_each(|(f, i)| t.child(i, f));
                t.child(5, schema);
            })
        }
        ReadStep::NdJson(r) => {
            let fields = [
                strings(b, &r.ddl_schema),
                string(b, &r.date_format),
                string(b, &r.encoding),
                string(b, &r.timestamp_format),
            ];
            let schema = r.schema.as_ref().map(|s| data_schema(b, s));
            table(b, |t| {
                fields.into_iter().zip(0..).for_each(|(f, i)| t.child(i, f));
                t.child(4, schema);
            })
        }
    };
    (position(ReadStep::KINDS, r.kind()), off)
}

pub(super) fn transform(b: &mut Builder, tr: &Transform) -> Member {
    let Transform::Sql(sql) = tr;
    let engine = text(b, &sql.engine);
    let version = string(b, &sql.version);
    let query = string(b, &sql.query);
    let queries = tables(b, sql.queries.as_deref(), |b, step| {
        let alias = string(b, &step.alias);
        let query = text(b, &step.query);
        table(b, |t| {
            t.child(0, alias);
            t.child(1, query);
        })
    });
    let temporal = tables(b, sql.temporal_tables.as_deref(), |b, tt| {
        let name = text(b, &tt.name);
        let key = string_list(b, &tt.primary_key);
        table(b, |t| {
            t.child(0, name);
            t.child(1, key);
        })
    });
    let off = table(b, |t| {
        [engine, version, query, queries, temporal].into_iter().zip(0..).for_each(|(f, i)| t.child(i, f));
    });
    (1, off)
}

pub(super) fn merge_strategy(b: &mut Builder, m: &MergeStrategy) -> Member {
    let off = match m {
        MergeStrategy::Append(_) => table(b, |_| {}),
        MergeStrategy::Ledger(k) | MergeStrategy::ChangelogStream(k) | MergeStrategy::UpsertStream(k) => {
            let key = string_list(b, &k.primary_key);
            table(b, |t| t.child(0, key))
        }
        MergeStrategy::Snapshot(s) => {
            let key = string_list(b, &s.primary_key);
            let compare = strings(b, &s.compare_columns);
            table(b, |t| {
                t.child(0, key);
                t.child(1, compare);
            })
        }
    };
    (position(MergeStrategy::KINDS, m.kind()), off)
}
