//! Metadata chain rules for a root dataset. `ChainState` is folded over the blocks from the
//! seed forward; each block must be a valid successor of the ones before it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::dataset_id::DatasetId;
use super::events::{AddData, Checkpoint, MetadataBlock, MetadataEvent, SetVocab, SourceState};
use super::hash::Multihash;
use super::polling::FetchStep;
use super::schema::DataSchema;
use super::source::{AddPushSource, Transform};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("block #{sequence_number} ({kind}): {reason}")]
pub struct ChainError {
    pub sequence_number: u64,
    pub kind: &'static str,
    pub reason: String,
}

/// What the chain up to its head says. Cheap to keep beside an open dataset so that an
/// append is checked without reading the chain again.
#[derive(Debug, Clone, Default)]
pub struct ChainState {
    pub head: Option<Multihash>,
    pub dataset_id: Option<DatasetId>,
    pub blocks: u64,
    pub last_system_time: Option<DateTime<Utc>>,
    /// Push sources by name (the latest definition of each), with whether they are still
    /// enabled. A source once added stays here even when disabled.
    pub push_sources: BTreeMap<String, (AddPushSource, bool)>,
    /// Whether a polling source was ever set, and whether it is still enabled.
    pub polling_source: Option<bool>,
    pub schema: Option<DataSchema>,
    pub vocab: Option<SetVocab>,
    /// Offset of the last record, if any data was added.
    pub last_offset: Option<u64>,
    pub watermark: Option<DateTime<Utc>>,
    pub last_checkpoint: Option<Checkpoint>,
    /// When the block that set `last_checkpoint` was written.
    pub last_checkpoint_time: Option<DateTime<Utc>>,
    /// The last `newSourceState` each push source recorded, by (source, kind): a source fed
    /// both through the write-ahead log and from Kafka keeps a log position and offsets.
    pub source_states: BTreeMap<(String, String), SourceState>,
    /// The previous AddData's `newSourceState`, which a block without data must change (as
    /// kamu checks it) unless it changes the checkpoint or the watermark.
    pub last_add_data_state: Option<SourceState>,
    /// Bytes of data slices, for listings.
    pub data_size: u64,
    /// The latest SetInfo, SetLicense and SetAttachments, to tell whether a manifest changed
    /// them.
    pub info: Option<super::events::SetInfo>,
    pub license: Option<super::events::SetLicense>,
    pub attachments: Option<super::events::SetAttachments>,
}

impl ChainState {
    /// The last state of `kind` that `source` recorded.
    pub fn source_state(&self, source: &str, kind: &str) -> Option<&SourceState> {
        self.source_states.get(&(source.to_owned(), kind.to_owned()))
    }

    /// Checks `block` (named `hash`) as the next block and takes it in.
    pub fn apply(&mut self, hash: &Multihash, block: &MetadataBlock) -> Result<(), ChainError> {
        let fail = |reason: String| ChainError {
            sequence_number: block.sequence_number,
            kind: block.event.kind(),
            reason,
        };
        if block.sequence_number != self.blocks {
            return Err(fail(format!("sequence number should be {}", self.blocks)));
        }
        if block.prev_block_hash != self.head {
            return Err(fail(match &self.head {
                Some(head) => format!("prevBlockHash should be {head}"),
                None => "the first block has no prevBlockHash".into(),
            }));
        }
        if self.last_system_time.is_some_and(|t| block.system_time < t) {
            return Err(fail("systemTime goes back in time".into()));
        }
        let is_seed = matches!(block.event, MetadataEvent::Seed(_));
        if is_seed != (self.blocks == 0) {
            return Err(fail("Seed must be the first block, and only the first".into()));
        }
        let checkpoint_before = self.last_checkpoint.clone();
        self.apply_event(&block.event).map_err(fail)?;
        if self.last_checkpoint.is_some() && self.last_checkpoint != checkpoint_before {
            self.last_checkpoint_time = Some(block.system_time);
        }
        self.head = Some(hash.clone());
        self.blocks += 1;
        self.last_system_time = Some(block.system_time);
        Ok(())
    }

    fn apply_event(&mut self, event: &MetadataEvent) -> Result<(), String> {
        match event {
            MetadataEvent::Seed(seed) => {
                if seed.dataset_kind != super::events::DatasetKind::Root {
                    return Err("only root datasets are supported".into());
                }
                self.dataset_id = Some(seed.dataset_id.clone());
            }
            // kamu's ordering rules (metadata_chain_validators.rs): a push source cannot
            // follow any SetPollingSource, nor a polling source any AddPushSource, whether or
            // not it was disabled since. A push source may be redefined under its name: the
            // new definition replaces the old one (identical or not, as kamu accepts both)
            // and enables it again.
            MetadataEvent::AddPushSource(source) => {
                if self.polling_source.is_some() {
                    return Err("a push source cannot be added to a dataset that has had a polling source \
                                (kamu refuses this order; define a new dataset)"
                        .into());
                }
                check_normalized(source.preprocess.as_ref())?;
                self.push_sources.insert(source.source_name.clone(), (source.clone(), true));
            }
            MetadataEvent::DisablePushSource(disable) => {
                match self.push_sources.get_mut(&disable.source_name) {
                    Some((_, enabled @ true)) => *enabled = false,
                    Some((_, false)) => {
                        return Err(format!("push source '{}' is already disabled", disable.source_name));
                    }
                    None => {
                        return Err(format!(
                            "there is no push source '{}' to disable (defined: {})",
                            disable.source_name,
                            self.source_names().join(", ")
                        ));
                    }
                }
            }
            MetadataEvent::SetPollingSource(polling) => {
                if !self.push_sources.is_empty() {
                    return Err(format!(
                        "a polling source cannot be set on a dataset that has had push sources ({}); \
                         kamu refuses this order",
                        self.source_names().join(", ")
                    ));
                }
                check_normalized(polling.preprocess.as_ref())?;
                if let FetchStep::EthereumLogs(logs) = &polling.fetch
                    && logs.chain_id.is_none()
                    && logs.node_url.is_none()
                {
                    return Err("fetch EthereumLogs must give chainId or nodeUrl".into());
                }
                self.polling_source = Some(true);
            }
            MetadataEvent::DisablePollingSource(_) => {
                if self.polling_source != Some(true) {
                    return Err("there is no enabled polling source to disable".into());
                }
                self.polling_source = Some(false);
            }
            MetadataEvent::SetVocab(vocab) => self.vocab = Some(vocab.clone()),
            MetadataEvent::SetDataSchema(set) => match (&self.schema, &set.schema) {
                (_, None) => return Err("SetDataSchema without a schema".into()),
                (Some(old), Some(new)) if old == new => {
                    return Err("the schema is unchanged".into());
                }
                (_, Some(new)) => self.schema = Some(new.clone()),
            },
            MetadataEvent::AddData(add) => self.apply_add_data(add)?,
            MetadataEvent::SetInfo(info) => self.info = Some(info.clone()),
            MetadataEvent::SetLicense(license) => self.license = Some(license.clone()),
            MetadataEvent::SetAttachments(attachments) => self.attachments = Some(attachments.clone()),
        }
        Ok(())
    }

    fn apply_add_data(&mut self, add: &AddData) -> Result<(), String> {
        if add.prev_offset != self.last_offset {
            return Err(format!("prevOffset should be {}", describe(self.last_offset)));
        }
        let last_checkpoint = self.last_checkpoint.as_ref().map(|c| &c.physical_hash);
        if add.prev_checkpoint.as_ref() != last_checkpoint {
            return Err(format!("prevCheckpoint should be {}", describe(last_checkpoint)));
        }
        match (self.watermark, add.new_watermark) {
            (Some(_), None) => return Err("a watermark, once set, must be carried".into()),
            (Some(old), Some(new)) if new < old => {
                return Err(format!("watermark goes back from {old} to {new}"));
            }
            _ => {}
        }
        if let Some(slice) = &add.new_data {
            if self.schema.is_none() {
                return Err("data is added before SetDataSchema".into());
            }
            let expected = next_offset(self.last_offset)?;
            let interval = slice.offset_interval;
            if interval.start != expected || interval.end < interval.start {
                return Err(format!(
                    "offsets [{}; {}] should start at {expected} and not be empty",
                    interval.start, interval.end
                ));
            }
            self.last_offset = Some(interval.end);
            self.data_size = self.data_size.saturating_add(slice.size);
        }
        let changes_something = add.new_data.is_some()
            || add.new_watermark != self.watermark
            || add.new_checkpoint != self.last_checkpoint
            || add.new_source_state != self.last_add_data_state;
        if !changes_something {
            return Err(
                "AddData changes nothing (no data, and the same checkpoint, watermark and source state)"
                    .into(),
            );
        }
        self.watermark = add.new_watermark;
        self.last_checkpoint = add.new_checkpoint.clone();
        if let Some(state) = &add.new_source_state {
            let key = (state.source_name.clone(), state.kind.clone());
            self.source_states.insert(key, state.clone());
        }
        self.last_add_data_state = add.new_source_state.clone();
        Ok(())
    }

    /// Checks the events a snapshot declares, as they would follow a seed. Returns the
    /// index of the first bad event and why.
    pub fn check_declared(events: &[MetadataEvent]) -> Result<(), (usize, String)> {
        Self::declared(events).map(|_| ())
    }

    /// The state the events a snapshot declares add up to, as they would follow a seed.
    pub fn declared(events: &[MetadataEvent]) -> Result<ChainState, (usize, String)> {
        let mut state = ChainState::default();
        for (i, event) in events.iter().enumerate() {
            state.apply_event(event).map_err(|reason| (i, format!("{}: {reason}", event.kind())))?;
        }
        Ok(state)
    }

    pub fn source_names(&self) -> Vec<String> {
        self.push_sources.keys().cloned().collect()
    }

    /// Enabled push sources, in name order.
    pub fn active_sources(&self) -> impl Iterator<Item = &AddPushSource> {
        self.push_sources.values().filter(|(_, enabled)| *enabled).map(|(source, _)| source)
    }

    /// Records in the dataset: offsets are contiguous from 0.
    pub fn records(&self) -> u64 {
        self.last_offset.map_or(0, |o| o.saturating_add(1))
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> Result<u64, String> {
        next_offset(self.last_offset)
    }
}

/// A stored transform is in normal form, as kamu requires of every block: `queries` only,
/// at least one, every step but the last (the output) named by an alias.
fn check_normalized(transform: Option<&Transform>) -> Result<(), String> {
    let Some(Transform::Sql(sql)) = transform else {
        return Ok(());
    };
    if sql.query.is_some() {
        return Err("preprocess: 'query' must be stored as 'queries'".into());
    }
    match sql.queries.as_deref().unwrap_or_default().split_last() {
        None => Err("preprocess: no query given".into()),
        Some((last, _)) if last.alias.is_some() => {
            Err("preprocess: the last query is the output and takes no alias".into())
        }
        Some((_, earlier)) if earlier.iter().any(|q| q.alias.is_none()) => {
            Err("preprocess: every query but the last needs an alias".into())
        }
        Some(_) => Ok(()),
    }
}

fn next_offset(last: Option<u64>) -> Result<u64, String> {
    match last {
        None => Ok(0),
        Some(last) => last.checked_add(1).ok_or_else(|| "offsets are exhausted".to_string()),
    }
}

fn describe<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "absent".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::odf::events::*;
    use crate::odf::source::*;
    use crate::odf::{DatasetId, codec};

    fn chain(events: Vec<MetadataEvent>) -> Result<ChainState, ChainError> {
        let mut state = ChainState::default();
        for (i, event) in events.into_iter().enumerate() {
            let block = MetadataBlock {
                system_time: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                prev_block_hash: state.head.clone(),
                sequence_number: i as u64,
                event,
            };
            let hash = codec::block_hash(&codec::encode_block(&block));
            state.apply(&hash, &block)?;
        }
        Ok(state)
    }

    fn seed() -> MetadataEvent {
        MetadataEvent::Seed(Seed {
            dataset_id: DatasetId::generate().unwrap().0,
            dataset_kind: DatasetKind::Root,
        })
    }

    fn push(name: &str) -> MetadataEvent {
        MetadataEvent::AddPushSource(AddPushSource {
            source_name: name.into(),
            read: ReadStep::NdJson(Default::default()),
            preprocess: None,
            merge: MergeStrategy::Append(MergeStrategyAppend {}),
        })
    }

    fn disable(name: &str) -> MetadataEvent {
        MetadataEvent::DisablePushSource(DisablePushSource { source_name: name.into() })
    }

    fn polling() -> MetadataEvent {
        MetadataEvent::SetPollingSource(crate::odf::polling::SetPollingSource {
            fetch: FetchStep::Url(crate::odf::polling::FetchStepUrl {
                url: "https://example.org/a.csv".into(),
                event_time: None,
                cache: None,
                headers: None,
            }),
            prepare: None,
            read: ReadStep::NdJson(Default::default()),
            preprocess: None,
            merge: MergeStrategy::Append(MergeStrategyAppend {}),
        })
    }

    fn add(prev: Option<u64>, start: u64, end: u64) -> MetadataEvent {
        MetadataEvent::AddData(AddData {
            prev_offset: prev,
            new_data: Some(DataSlice {
                logical_hash: Multihash::sha3_256(b"l"),
                physical_hash: Multihash::sha3_256(b"p"),
                offset_interval: OffsetInterval { start, end },
                size: 10,
            }),
            ..Default::default()
        })
    }

    fn schema() -> MetadataEvent {
        MetadataEvent::SetDataSchema(SetDataSchema {
            raw_arrow_schema: None,
            schema: Some(DataSchema { fields: vec![], extra: None }),
        })
    }

    #[test]
    fn a_valid_chain_is_accepted() {
        let state = chain(vec![seed(), push("a"), schema(), add(None, 0, 9), add(Some(9), 10, 10)]).unwrap();
        assert_eq!(state.records(), 11);
        assert_eq!(state.blocks, 5);
    }

    #[test]
    fn broken_rules_are_named() {
        let cases: Vec<(Vec<MetadataEvent>, &str)> = vec![
            (vec![push("a")], "Seed must be the first block"),
            (vec![seed(), seed()], "Seed must be the first block"),
            (
                vec![seed(), polling(), push("a")],
                "cannot be added to a dataset that has had a polling source",
            ),
            (
                vec![
                    seed(),
                    polling(),
                    MetadataEvent::DisablePollingSource(DisablePollingSource {}),
                    push("a"),
                ],
                "cannot be added to a dataset that has had a polling source",
            ),
            (vec![seed(), push("a"), polling()], "has had push sources (a)"),
            (vec![seed(), push("a"), disable("a"), polling()], "has had push sources (a)"),
            (vec![seed(), push("a"), disable("a"), disable("a")], "push source 'a' is already disabled"),
            (
                vec![seed(), MetadataEvent::DisablePollingSource(DisablePollingSource {})],
                "no enabled polling source to disable",
            ),
            (
                vec![seed(), MetadataEvent::DisablePushSource(DisablePushSource { source_name: "b".into() })],
                "there is no push source 'b' to disable",
            ),
            (vec![seed(), add(None, 0, 1)], "data is added before SetDataSchema"),
            (vec![seed(), schema(), add(None, 1, 2)], "should start at 0"),
            (vec![seed(), schema(), add(None, 0, 2), add(Some(2), 4, 5)], "should start at 3"),
            (vec![seed(), schema(), add(None, 0, 2), add(Some(1), 3, 5)], "prevOffset should be 2"),
            (vec![seed(), schema(), schema()], "the schema is unchanged"),
        ];
        for (events, expected) in cases {
            let e = chain(events).unwrap_err().to_string();
            assert!(e.contains(expected), "expected '{expected}' in: {e}");
        }
    }

    #[test]
    fn a_push_source_redefined_under_its_name_replaces_the_old_definition() {
        let MetadataEvent::AddPushSource(mut ledger) = push("a") else { unreachable!() };
        ledger.merge = MergeStrategy::Ledger(PrimaryKey { primary_key: vec!["id".into()] });
        let state = chain(vec![seed(), push("a"), MetadataEvent::AddPushSource(ledger.clone())]).unwrap();
        assert_eq!(state.push_sources["a"], (ledger, true));
        // An identical redefinition is accepted too, as kamu accepts it.
        assert!(chain(vec![seed(), push("a"), push("a")]).is_ok());
        // Redefining a disabled source enables it again.
        let state = chain(vec![seed(), push("a"), disable("a"), push("a")]).unwrap();
        assert_eq!(state.active_sources().count(), 1);
    }

    #[test]
    fn stored_transforms_are_normalized() {
        let with = |sql: TransformSql| {
            let MetadataEvent::AddPushSource(mut source) = push("a") else { unreachable!() };
            source.preprocess = Some(Transform::Sql(sql));
            chain(vec![seed(), MetadataEvent::AddPushSource(source)]).map(|_| ()).unwrap_err().to_string()
        };
        let step =
            |alias: Option<&str>| SqlQueryStep { alias: alias.map(Into::into), query: "SELECT 1".into() };
        let sql = |query: Option<&str>, queries: Option<Vec<SqlQueryStep>>| TransformSql {
            engine: "datafusion".into(),
            version: None,
            query: query.map(Into::into),
            queries,
            temporal_tables: None,
        };
        assert!(with(sql(Some("SELECT 1"), None)).contains("must be stored as 'queries'"));
        assert!(with(sql(None, Some(vec![]))).contains("no query given"));
        assert!(with(sql(None, Some(vec![step(Some("x"))]))).contains("takes no alias"));
        assert!(with(sql(None, Some(vec![step(None), step(None)]))).contains("needs an alias"));
    }

    #[test]
    fn an_ethereum_source_names_its_chain() {
        let MetadataEvent::SetPollingSource(mut source) = polling() else { unreachable!() };
        source.fetch = FetchStep::EthereumLogs(crate::odf::polling::FetchStepEthereumLogs {
            chain_id: None,
            node_url: None,
            filter: None,
            signature: None,
        });
        let e = chain(vec![seed(), MetadataEvent::SetPollingSource(source)]).unwrap_err().to_string();
        assert!(e.contains("chainId or nodeUrl"), "{e}");
    }

    #[test]
    fn watermark_never_goes_back() {
        let at = |h| Some(Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0).unwrap());
        let mark = |w| MetadataEvent::AddData(AddData { new_watermark: w, ..Default::default() });
        assert!(chain(vec![seed(), mark(at(1)), mark(at(2))]).is_ok());
        let e = chain(vec![seed(), mark(at(2)), mark(at(1))]).unwrap_err().to_string();
        assert!(e.contains("watermark goes back"), "{e}");
    }
}
