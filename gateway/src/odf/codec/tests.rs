use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::odf::events::*;
use crate::odf::schema::{DataField, DataSchema, DataType, TimeUnit};
use crate::odf::source::*;

/// The spec's golden vectors (copied from the shared conformance suite).
const VECTORS: &str = include_str!("../../../tests/fixtures/odf-block-vectors.yaml");

/// Replaces `H("text")` with the SHA3-256 multihash of `text`, as the vector file writes it.
fn expand_hashes(yaml: &str) -> String {
    let mut out = String::new();
    let mut rest = yaml;
    while let Some(start) = rest.find("H(\"") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 3..];
        let end = after.find("\")").expect("closed H(...)");
        out.push_str(&Multihash::sha3_256(after[..end].as_bytes()).to_string());
        rest = &after[end + 2..];
    }
    out + rest
}

fn envelope(event: MetadataEvent) -> MetadataBlock {
    MetadataBlock {
        system_time: Utc.with_ymd_and_hms(2020, 1, 1, 12, 0, 0).unwrap(),
        prev_block_hash: Some(Multihash::sha3_256(b"prev")),
        sequence_number: 117,
        event,
    }
}

#[test]
fn every_conformance_vector_hashes_as_published() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&expand_hashes(VECTORS)).unwrap();
    let cases = doc["cases"].as_sequence().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let event: MetadataEvent =
            serde_yaml_ng::from_value(case["event"].clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let block = envelope(event);
        let encoded = encode_block(&block);
        let hash = block_hash(&encoded);
        assert_eq!(hex::encode(hash.digest()), case["sha3_256_hex"].as_str().unwrap(), "{name}");
        assert_eq!(decode_block(&encoded).unwrap(), block, "{name} decodes to what was encoded");
    }
}

#[test]
fn older_manifest_versions_are_refused_with_the_reason() {
    let block = envelope(MetadataEvent::AddData(AddData::default()));
    let mut b = FlatBufferBuilder::new();
    let mut inner = FlatBufferBuilder::new();
    let root = encode::block(&mut inner, &block);
    inner.finish_minimal(root);
    let root = encode::manifest(&mut b, METADATA_BLOCK_KIND, 2, inner.finished_data());
    b.finish_minimal(root);
    let e = decode_block(b.finished_data()).unwrap_err().to_string();
    assert!(e.contains("block version 2 is not supported"), "{e}");
}

/// A SetAttachments block whose `items` are `copies` references to one item holding a
/// string of `size` bytes: the buffer stays about `size + 4 * copies` bytes.
fn shared_attachments_block(size: usize, copies: usize) -> Vec<u8> {
    let mut inner = FlatBufferBuilder::new();
    let path = encode::text(&mut inner, "p");
    let content = encode::text(&mut inner, &"x".repeat(size));
    let item = encode::table(&mut inner, |t| {
        t.child(0, path);
        t.child(1, content);
    });
    let items = Some(flatbuffers::WIPOffset::new(inner.create_vector(&vec![item; copies]).value()));
    let embedded = encode::table(&mut inner, |t| t.child(0, items));
    let event = encode::table(&mut inner, |t| t.union(0, Some((1, embedded))));
    let kind = encode::position(EVENT_KINDS, "SetAttachments");
    let root = encode::table(&mut inner, |t| {
        t.timestamp(0, Some(Timestamp::from(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())));
        t.union(3, Some((kind, event)));
    });
    inner.finish_minimal(root);
    let mut b = FlatBufferBuilder::new();
    let root = encode::manifest(&mut b, METADATA_BLOCK_KIND, METADATA_BLOCK_VERSION, inner.finished_data());
    b.finish_minimal(root);
    b.finished_data().to_vec()
}

#[test]
fn a_block_that_references_one_string_many_times_is_refused() {
    // ~1 MB that would expand to 512 KB x 100,000 = 51 GB of strings.
    let bytes = shared_attachments_block(512 * 1024, 100_000);
    assert!(bytes.len() < 1024 * 1024, "{}", bytes.len());
    let e = decode_block(&bytes).unwrap_err().to_string();
    assert!(e.contains("expands to more than"), "{e}");

    // The same shape with each item referenced once decodes.
    let once = decode_block(&shared_attachments_block(512 * 1024, 1)).unwrap();
    let MetadataEvent::SetAttachments(SetAttachments { attachments: Attachments::Embedded(e) }) = once.event
    else {
        panic!("{once:?}")
    };
    assert_eq!(e.items[0].content.len(), 512 * 1024);
}

fn name() -> impl Strategy<Value = String> + Clone {
    "[a-z_][a-z0-9_]{0,8}"
}

fn hash() -> impl Strategy<Value = Multihash> {
    any::<[u8; 32]>().prop_map(|d| Multihash::from_digest(crate::odf::hash::SHA3_256, &d))
}

fn time() -> impl Strategy<Value = chrono::DateTime<Utc>> {
    (0i64..4_102_444_800_000).prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

fn time_unit() -> impl Strategy<Value = Option<TimeUnit>> {
    proptest::option::of(proptest::sample::select(TimeUnit::ALL.to_vec()))
}

fn data_type() -> impl Strategy<Value = DataType> {
    let simple = proptest::sample::select(vec![
        DataType::Bool,
        DataType::Date,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
        DataType::Null,
        DataType::String,
    ]);
    let leaf = prop_oneof![
        simple,
        time_unit().prop_map(|unit| DataType::Time { unit }),
        proptest::option::of(any::<u64>()).prop_map(|fixed_length| DataType::Binary { fixed_length }),
        (any::<u32>(), any::<i32>()).prop_map(|(precision, scale)| DataType::Decimal { precision, scale }),
        time_unit().prop_map(|unit| DataType::Duration { unit }),
        (time_unit(), proptest::option::of("UTC|\\+07:30"))
            .prop_map(|(unit, timezone)| DataType::Timestamp { unit, timezone }),
    ];
    leaf.prop_recursive(4, 16, 3, |inner| {
        prop_oneof![
            (inner.clone(), proptest::option::of(any::<u64>()))
                .prop_map(|(t, fixed_length)| { DataType::List { item_type: Box::new(t), fixed_length } }),
            (inner.clone(), inner.clone(), proptest::option::of(any::<bool>())).prop_map(
                |(k, v, keys_sorted)| {
                    DataType::Map { key_type: Box::new(k), value_type: Box::new(v), keys_sorted }
                }
            ),
            inner.clone().prop_map(DataType::optional),
            proptest::collection::vec((name(), inner), 0..3).prop_map(|fields| DataType::Struct {
                fields: fields
                    .into_iter()
                    .map(|(name, data_type)| DataField { name, data_type, extra: None })
                    .collect()
            }),
        ]
    })
}

fn extra() -> impl Strategy<Value = Option<crate::odf::schema::ExtraAttributes>> {
    let entries = proptest::collection::btree_map("[a-z]{1,5}\\.dev/[a-z]{1,5}", any::<i32>(), 1..3);
    proptest::option::of(entries)
        .prop_map(|map| map.map(|m| m.into_iter().map(|(k, v)| (k, serde_json::Value::from(v))).collect()))
}

fn schema() -> impl Strategy<Value = DataSchema> {
    (proptest::collection::vec((name(), data_type(), extra()), 1..5), extra()).prop_map(|(fields, extra)| {
        DataSchema {
            fields: fields
                .into_iter()
                .map(|(name, data_type, extra)| DataField { name, data_type, extra })
                .collect(),
            extra,
        }
    })
}

fn read_step() -> impl Strategy<Value = ReadStep> {
    let ddl = proptest::option::of(proptest::collection::vec("[a-z]{1,5} (INT|STRING)", 1..3));
    prop_oneof![
        (
            ddl.clone(),
            proptest::option::of(schema()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(";|,")
        )
            .prop_map(|(ddl_schema, schema, header, separator)| ReadStep::Csv(ReadStepCsv {
                ddl_schema,
                schema,
                header,
                separator,
                ..Default::default()
            })),
        (any::<bool>(), proptest::option::of("\\\\|'"), proptest::option::of("NULL|")).prop_map(
            |(infer_schema, escape, null_value)| ReadStep::Csv(ReadStepCsv {
                infer_schema: Some(infer_schema),
                escape,
                null_value,
                quote: Some("'".into()),
                encoding: Some("utf8".into()),
                date_format: Some("rfc3339".into()),
                timestamp_format: Some("%s".into()),
                ..Default::default()
            })
        ),
        (ddl.clone(), proptest::option::of(schema())).prop_map(|(ddl_schema, schema)| {
            ReadStep::NdJson(ReadStepNdJson { ddl_schema, schema, ..Default::default() })
        }),
        (
            proptest::option::of("[a-z.]{1,8}"),
            proptest::option::of(schema()),
            proptest::option::of("rfc3339|%Y")
        )
            .prop_map(|(sub_path, schema, date_format)| ReadStep::Json(ReadStepJson {
                sub_path,
                schema,
                date_format,
                encoding: Some("utf8".into()),
                ..Default::default()
            })),
        ddl.clone().prop_map(|ddl_schema| ReadStep::Parquet(ReadSchemaOnly { ddl_schema, schema: None })),
        ddl.clone().prop_map(|ddl_schema| ReadStep::GeoJson(ReadSchemaOnly { ddl_schema, schema: None })),
        proptest::option::of(schema())
            .prop_map(|schema| ReadStep::NdGeoJson(ReadSchemaOnly { ddl_schema: None, schema })),
        (ddl, proptest::option::of("[a-z/]{1,8}")).prop_map(|(ddl_schema, sub_path)| {
            ReadStep::EsriShapefile(ReadStepEsriShapefile { ddl_schema, sub_path, schema: None })
        }),
    ]
}

fn merge() -> impl Strategy<Value = MergeStrategy> {
    let key = proptest::collection::vec(name(), 1..3);
    prop_oneof![
        Just(MergeStrategy::Append(MergeStrategyAppend {})),
        key.clone().prop_map(|primary_key| MergeStrategy::Ledger(PrimaryKey { primary_key })),
        (key.clone(), proptest::option::of(proptest::collection::vec(name(), 1..3))).prop_map(
            |(primary_key, compare_columns)| MergeStrategy::Snapshot(MergeStrategySnapshot {
                primary_key,
                compare_columns
            })
        ),
        key.clone().prop_map(|primary_key| MergeStrategy::ChangelogStream(PrimaryKey { primary_key })),
        key.prop_map(|primary_key| MergeStrategy::UpsertStream(PrimaryKey { primary_key })),
    ]
}

fn transform() -> impl Strategy<Value = Transform> {
    (
        proptest::collection::vec((proptest::option::of(name()), "SELECT [a-z]+ FROM input"), 1..3),
        proptest::option::of("[0-9]\\.[0-9]"),
        proptest::option::of(proptest::collection::vec(
            (name(), proptest::collection::vec(name(), 1..2)),
            1..2,
        )),
    )
        .prop_map(|(steps, version, temporal)| {
            Transform::Sql(TransformSql {
                engine: "datafusion".into(),
                version,
                query: None,
                queries: Some(
                    steps.into_iter().map(|(alias, query)| SqlQueryStep { alias, query }).collect(),
                ),
                temporal_tables: temporal.map(|t| {
                    t.into_iter().map(|(name, primary_key)| TemporalTable { name, primary_key }).collect()
                }),
            })
        })
}

fn polling_source() -> impl Strategy<Value = MetadataEvent> {
    use crate::odf::polling::*;
    let event_time = proptest::option::of(prop_oneof![
        Just(EventTimeSource::FromMetadata(Empty {})),
        Just(EventTimeSource::FromSystemTime(Empty {})),
        (name(), proptest::option::of("%Y-%m-%d")).prop_map(|(pattern, timestamp_format)| {
            EventTimeSource::FromPath(EventTimeSourceFromPath { pattern, timestamp_format })
        }),
    ]);
    let header = (name(), name()).prop_map(|(name, value)| NameValue { name, value });
    let fetch = prop_oneof![
        (
            name(),
            event_time.clone(),
            any::<bool>(),
            proptest::option::of(proptest::collection::vec(header.clone(), 1..3))
        )
            .prop_map(|(url, event_time, cache, headers)| FetchStep::Url(FetchStepUrl {
                url,
                event_time,
                cache: cache.then_some(SourceCaching::Forever(Empty {})),
                headers,
            })),
        (name(), event_time, proptest::option::of(proptest::sample::select(SourceOrdering::ALL.to_vec())))
            .prop_map(|(path, event_time, order)| FetchStep::FilesGlob(FetchStepFilesGlob {
                path,
                event_time,
                cache: None,
                order
            })),
        (
            name(),
            proptest::option::of(proptest::collection::vec(name(), 1..3)),
            proptest::option::of(proptest::collection::vec(header, 1..2))
        )
            .prop_map(|(image, args, env)| FetchStep::Container(FetchStepContainer {
                image,
                command: None,
                args,
                env
            })),
        (
            name(),
            any::<i32>(),
            proptest::option::of(name()),
            proptest::option::of(proptest::sample::select(MqttQos::ALL.to_vec()))
        )
            .prop_map(|(host, port, username, qos)| FetchStep::Mqtt(FetchStepMqtt {
                host,
                port,
                username,
                password: None,
                topics: vec![MqttTopicSubscription { path: "a/+/b".into(), qos }],
            })),
        (proptest::option::of(any::<u64>()), proptest::option::of(name())).prop_map(
            |(chain_id, node_url)| FetchStep::EthereumLogs(FetchStepEthereumLogs {
                chain_id,
                node_url,
                filter: None,
                signature: None
            })
        ),
    ];
    let prepare = proptest::option::of(proptest::collection::vec(
        prop_oneof![
            (proptest::sample::select(CompressionFormat::ALL.to_vec()), proptest::option::of(name()))
                .prop_map(|(format, sub_path)| PrepStep::Decompress(PrepStepDecompress { format, sub_path })),
            proptest::collection::vec(name(), 1..3)
                .prop_map(|command| PrepStep::Pipe(PrepStepPipe { command })),
        ],
        1..3,
    ));
    (fetch, prepare, read_step(), proptest::option::of(transform()), merge()).prop_map(
        |(fetch, prepare, read, preprocess, merge)| {
            MetadataEvent::SetPollingSource(SetPollingSource { fetch, prepare, read, preprocess, merge })
        },
    )
}

fn event() -> impl Strategy<Value = MetadataEvent> {
    let add_data = (
        proptest::option::of(hash()),
        proptest::option::of(any::<u64>()),
        proptest::option::of((hash(), hash(), any::<u64>(), any::<u64>(), any::<u64>())),
        proptest::option::of((hash(), any::<u64>())),
        proptest::option::of(time()),
        proptest::option::of((name(), "[a-z/]{1,10}", "[ -~]{0,10}")),
        extra(),
    )
        .prop_map(|(prev_checkpoint, prev_offset, data, checkpoint, new_watermark, state, extra)| {
            MetadataEvent::AddData(AddData {
                prev_checkpoint,
                prev_offset,
                new_data: data.map(|(logical_hash, physical_hash, start, end, size)| DataSlice {
                    logical_hash,
                    physical_hash,
                    offset_interval: OffsetInterval { start, end },
                    size,
                }),
                new_checkpoint: checkpoint.map(|(physical_hash, size)| Checkpoint { physical_hash, size }),
                new_watermark,
                new_source_state: state.map(|(source_name, kind, value)| SourceState {
                    source_name,
                    kind,
                    value,
                }),
                extra,
            })
        });
    prop_oneof![
        add_data,
        any::<[u8; 32]>().prop_map(|secret| {
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            MetadataEvent::Seed(Seed {
                dataset_id: crate::odf::dataset_id::DatasetId::from_key(&key),
                dataset_kind: DatasetKind::Root,
            })
        }),
        (proptest::option::of(name()), proptest::option::of(name())).prop_map(
            |(event_time_column, offset_column)| MetadataEvent::SetVocab(SetVocab {
                event_time_column,
                offset_column,
                ..Default::default()
            })
        ),
        (proptest::option::of("[ -~]{0,30}"), proptest::option::of(proptest::collection::vec(name(), 0..3)))
            .prop_map(|(description, keywords)| MetadataEvent::SetInfo(SetInfo { description, keywords })),
        schema().prop_map(|s| MetadataEvent::SetDataSchema(SetDataSchema {
            raw_arrow_schema: None,
            schema: Some(s)
        })),
        (name(), read_step(), proptest::option::of(transform()), merge()).prop_map(
            |(source_name, read, preprocess, merge)| MetadataEvent::AddPushSource(AddPushSource {
                source_name,
                read,
                preprocess,
                merge,
            })
        ),
        polling_source(),
        Just(MetadataEvent::DisablePollingSource(DisablePollingSource {})),
        ("[A-Z-]{1,8}", "[ -~]{1,20}", proptest::option::of("[A-Z0-9.-]{1,8}"), "https://[a-z]{1,8}\\.org/")
            .prop_map(|(short_name, name, spdx_id, website_url)| MetadataEvent::SetLicense(SetLicense {
                short_name,
                name,
                spdx_id,
                website_url
            })),
        proptest::collection::vec((name(), "[ -~]{0,40}"), 0..3).prop_map(|items| {
            MetadataEvent::SetAttachments(SetAttachments {
                attachments: Attachments::Embedded(AttachmentsEmbedded {
                    items: items
                        .into_iter()
                        .map(|(path, content)| AttachmentEmbedded { path, content })
                        .collect(),
                }),
            })
        }),
        name().prop_map(|source_name| MetadataEvent::DisablePushSource(DisablePushSource { source_name })),
    ]
}

fn block() -> impl Strategy<Value = MetadataBlock> {
    (time(), proptest::option::of(hash()), any::<u64>(), event()).prop_map(
        |(system_time, prev_block_hash, sequence_number, event)| MetadataBlock {
            system_time,
            prev_block_hash,
            sequence_number,
            event,
        },
    )
}

proptest! {
    #[test]
    fn encode_decode_encode_is_byte_identical(block in block()) {
        let encoded = encode_block(&block);
        let decoded = decode_block(&encoded).unwrap();
        prop_assert_eq!(&decoded, &block);
        prop_assert_eq!(encode_block(&decoded), encoded);
    }

    #[test]
    fn yaml_round_trip_is_lossless(block in block()) {
        let yaml = serde_yaml_ng::to_string(&block).unwrap();
        let back: MetadataBlock = serde_yaml_ng::from_str(&yaml).unwrap();
        prop_assert_eq!(back, block);
    }

    /// Fuzzing the decoder: a corrupted block is an error, never a panic.
    #[test]
    fn corrupted_blocks_never_panic(block in block(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut encoded = encode_block(&block);
        for (index, byte) in flips {
            let i = index.index(encoded.len());
            encoded[i] ^= byte;
        }
        let _ = decode_block(&encoded);
        let _ = decode_block(&encoded[..encoded.len() / 2]);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_block(&bytes);
    }
}
