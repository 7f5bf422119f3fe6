//! One push source's partitions: a fetcher per partition, and a batcher that checks each
//! record against the source, keeps the good ones with the offsets they move, and commits
//! them (records, bytes or age, as the pipeline's flush policy says) with every partition's
//! next offset as the source's state.
//!
//! A record's offset moves on whether it is committed, quarantined (it does not fit the
//! source) or empty: a bad record never stalls its partition. Fetching pauses while the
//! dataset's budget of bytes waiting for a commit is full (the fetchers' queue fills).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rskafka::client::Client;
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::record::RecordAndOffset;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::consumer::{ConsumerBoard, PartitionStatus, REQUEST_TIMEOUT};
use super::offsets::{Offsets, STATE_KIND};
use super::{KafkaOptions, RecordField, StartAt};
use crate::intake::{Parcel, Target, declared_format};
use crate::pipeline::{
    Consumed, ConsumedRecord, Durability, FlushPolicy, RequestCounters, Screened, SubmitError,
};
use crate::routes::Transport;
use crate::transport::stopping;

/// What a record costs in the budget besides its payload (its origin, columns, entry).
const RECORD_OVERHEAD: usize = 256;

/// A push source and the partitions that feed it.
pub struct Plan {
    target: Target,
    pub partitions: Vec<(String, i32)>,
}

impl Plan {
    pub fn new(target: Target) -> Plan {
        Plan { target, partitions: Vec::new() }
    }
}

/// What every stream of a consumer shares.
pub struct Context {
    pub client: Arc<Client>,
    pub options: Arc<KafkaOptions>,
    pub flush: FlushPolicy,
    pub board: Arc<ConsumerBoard>,
    /// Turns true when the stream should commit what it holds and end.
    pub stop: watch::Receiver<bool>,
}

/// Records of one partition, as one fetch returned them.
struct Chunk {
    slot: usize,
    records: Vec<RecordAndOffset>,
    high_watermark: i64,
}

pub async fn run(plan: Plan, context: Context) -> Result<(), String> {
    let Plan { target, partitions } = plan;
    let dataset = target.dataset().clone();
    let source = target.source().name.clone();
    let recorded = dataset.source_state(&source, STATE_KIND).await.map_err(|e| e.to_string())?;
    let committed = match recorded {
        Some(value) => Offsets::parse(&value)?,
        None => Offsets::default(),
    };
    let partitions = Arc::new(partitions);
    let (to_batcher, mut chunks) = mpsc::channel((partitions.len() * 2).max(1));
    let mut fetchers = JoinSet::new();
    let mut starts = committed.clone();
    for (slot, (topic, partition)) in partitions.iter().enumerate() {
        let at = |e: String| format!("{topic}[{partition}]: {e}");
        let setup = async {
            let client = context
                .client
                .partition_client(topic.as_str(), *partition, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| e.to_string())?;
            let next = match committed.get(topic, *partition) {
                Some(next) => next,
                None => start_offset(&client, context.options.start).await?,
            };
            Ok::<_, String>((client, next))
        };
        let (client, next) = tokio::time::timeout(REQUEST_TIMEOUT, setup)
            .await
            .map_err(|_| at(format!("the broker did not answer in {REQUEST_TIMEOUT:?}")))?
            .map_err(at)?;
        starts.set(topic, *partition, next);
        let fetch = Fetch {
            client,
            slot,
            next,
            bytes: context.options.fetch_bytes,
            max_wait_ms: context.options.max_wait.as_millis().min(i32::MAX as u128) as i32,
        };
        fetchers.spawn(fetch.run(to_batcher.clone(), context.stop.clone()));
    }
    drop(to_batcher);
    let counters = dataset.request_counters(&source, Transport::Kafka, target.route());
    let metrics = partitions
        .iter()
        .map(|(topic, partition)| PartitionMetrics::new(&context, &target, topic, *partition));
    let mut batcher = Batcher {
        metrics: metrics.collect(),
        counters,
        target,
        context,
        partitions: partitions.clone(),
        committed,
        high_watermarks: vec![None; partitions.len()],
        batch: Batch::default(),
        in_flight: None,
    };
    // Where a partition new to the source starts is recorded before anything is consumed:
    // `latest` or a time asked again after a restart would skip what came in between.
    if starts != batcher.committed {
        batcher.commit_offsets(starts).await?;
    }
    batcher.show_progress();
    let result = batcher.run(&mut chunks).await;
    fetchers.abort_all();
    result
}

/// Fetches one partition from `next` on, until the batcher is gone or the stream stops.
struct Fetch {
    client: PartitionClient,
    slot: usize,
    next: i64,
    bytes: i32,
    max_wait_ms: i32,
}

impl Fetch {
    async fn run(mut self, to_batcher: mpsc::Sender<Result<Chunk, String>>, stop: watch::Receiver<bool>) {
        loop {
            let asked = Instant::now();
            let fetched = tokio::select! {
                _ = stopping(stop.clone()) => return,
                fetched = self.client.fetch_records(self.next, 1..self.bytes.max(2), self.max_wait_ms) => fetched,
            };
            let chunk = match fetched {
                Ok((records, high_watermark)) => {
                    // Each offset once, rising: a broker may answer with a batch from before
                    // `next` (Kafka does not split batches), or, as tansu does, with the
                    // same batch twice.
                    let mut fresh = Vec::with_capacity(records.len());
                    for record in records {
                        if record.offset >= self.next {
                            self.next = record.offset.saturating_add(1);
                            fresh.push(record);
                        }
                    }
                    Ok(Chunk { slot: self.slot, records: fresh, high_watermark })
                }
                Err(KafkaError::ServerError { protocol_error: ProtocolError::OffsetOutOfRange, .. }) => {
                    match self.skip_out_of_range().await {
                        Ok(()) => continue,
                        Err(e) => Err(e),
                    }
                }
                Err(e) => {
                    Err(format!("{}[{}]: cannot fetch: {e}", self.client.topic(), self.client.partition()))
                }
            };
            let (failed, empty) = (chunk.is_err(), chunk.as_ref().is_ok_and(|c| c.records.is_empty()));
            if to_batcher.send(chunk).await.is_err() || failed {
                return;
            }
            // Nothing, at once: the broker would have waited at the partition's end, so
            // something at `next` is not a record (a transaction marker). Waiting as a long
            // poll would keeps that from becoming a busy loop.
            let max_wait = Duration::from_millis(self.max_wait_ms as u64);
            if empty && asked.elapsed() < max_wait / 2 {
                tokio::select! {
                    _ = stopping(stop.clone()) => return,
                    _ = tokio::time::sleep(max_wait) => {}
                }
            }
        }
    }

    /// The next offset is not in the partition. Below its earliest: the topic's retention
    /// deleted records before they were consumed; they are counted as lost and it goes on
    /// from the earliest. Beyond its end: the log was cut back (an unclean leader election)
    /// or the topic made anew; it goes on from the end, which commits nothing twice.
    async fn skip_out_of_range(&mut self) -> Result<(), String> {
        let (topic, partition) = (self.client.topic().to_owned(), self.client.partition());
        let at = |e: rskafka::client::error::Error| format!("{topic}[{partition}]: {e}");
        let earliest = self.client.get_offset(OffsetAt::Earliest).await.map_err(at)?;
        let latest = self.client.get_offset(OffsetAt::Latest).await.map_err(at)?;
        if self.next < earliest {
            let lost = earliest.saturating_sub(self.next);
            tracing::error!(
                topic,
                partition,
                from = self.next,
                to = earliest,
                "{lost} record(s) were deleted by the topic's retention before they were consumed"
            );
            metrics::counter!("odf_kafka_records_lost_total", "topic" => topic, "partition" => partition.to_string())
                .increment(lost.max(0) as u64);
            self.next = earliest;
        } else {
            tracing::error!(
                topic,
                partition,
                next = self.next,
                latest,
                "the recorded offset is beyond the partition's end (its log was cut back, or the topic made anew): consuming from its end"
            );
            self.next = latest;
            // Asked again at once, the same answer would make a busy loop.
            tokio::time::sleep(Duration::from_millis(self.max_wait_ms.max(0) as u64)).await;
        }
        Ok(())
    }
}

async fn start_offset(client: &PartitionClient, start: StartAt) -> Result<i64, String> {
    let at = match start {
        StartAt::Earliest => OffsetAt::Earliest,
        StartAt::Latest => OffsetAt::Latest,
        StartAt::Time(time) => OffsetAt::Timestamp(time),
    };
    match client.get_offset(at).await {
        Ok(offset) if offset >= 0 => Ok(offset),
        // No record at or after that time: from the end.
        Ok(_) => client.get_offset(OffsetAt::Latest).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot find where to start: {e}")),
    }
}

/// Records checked and waiting for their commit, with the offsets they move.
#[derive(Default)]
struct Batch {
    records: Vec<ConsumedRecord>,
    /// Every record taken, in order (committed or passed): its partition's slot and the
    /// offset after it.
    marks: Vec<(usize, i64)>,
    /// For each record in `records`, its index in `marks`.
    kept_at: Vec<usize>,
    bytes: usize,
    reserved: usize,
    since: Option<Instant>,
}

struct Batcher {
    target: Target,
    context: Context,
    partitions: Arc<Vec<(String, i32)>>,
    /// What the chain records, once the commit in flight is settled.
    committed: Offsets,
    high_watermarks: Vec<Option<i64>>,
    /// Each partition's metrics, by slot, resolved once.
    metrics: Vec<PartitionMetrics>,
    /// The dataset's request counters for this source, transport and route.
    counters: RequestCounters,
    batch: Batch,
    in_flight: Option<InFlight>,
}

struct PartitionMetrics {
    records: metrics::Counter,
    bytes: metrics::Counter,
    quarantined: metrics::Counter,
    lag: metrics::Gauge,
}

impl PartitionMetrics {
    /// Labelled with the dataset's name, so that `/metrics` shows them to those who may read it.
    fn new(context: &Context, target: &Target, topic: &str, partition: i32) -> PartitionMetrics {
        let labels = [
            ("consumer", context.options.name.clone()),
            ("dataset", target.dataset().name().to_string()),
            ("topic", topic.to_owned()),
        ];
        let mut by_partition = labels.to_vec();
        by_partition.push(("partition", partition.to_string()));
        PartitionMetrics {
            records: metrics::counter!("odf_kafka_records_total", &labels),
            bytes: metrics::counter!("odf_kafka_bytes_total", &labels),
            quarantined: metrics::counter!("odf_kafka_quarantined_total", &labels),
            lag: metrics::gauge!("odf_kafka_lag", &by_partition),
        }
    }
}

/// A batch handed to the committer: the offsets it records, the budget it holds.
struct InFlight {
    task: JoinHandle<Result<(), SubmitError>>,
    offsets: Offsets,
    reserved: usize,
}

impl Batcher {
    async fn run(&mut self, chunks: &mut mpsc::Receiver<Result<Chunk, String>>) -> Result<(), String> {
        let stop = self.context.stop.clone();
        loop {
            let deadline = self.batch.since.map(|since| since + self.context.flush.interval);
            tokio::select! {
                biased;
                _ = stopping(stop.clone()) => {
                    // What it holds is committed now rather than fetched again at the next start.
                    self.commit().await?;
                    return self.settle().await;
                }
                result = in_flight(&mut self.in_flight) => self.settled(result)?,
                _ = sleep_until(deadline) => self.commit().await?,
                chunk = chunks.recv() => match chunk {
                    Some(Ok(chunk)) => self.take(chunk).await?,
                    Some(Err(e)) => return Err(e),
                    None => return Err("every partition's fetcher ended".to_owned()),
                },
            }
        }
    }

    async fn take(&mut self, chunk: Chunk) -> Result<(), String> {
        self.high_watermarks[chunk.slot] = Some(chunk.high_watermark);
        let (topic, partition) = self.partitions[chunk.slot].clone();
        let bytes: usize = chunk.records.iter().map(|r| r.record.value.as_ref().map_or(0, Vec::len)).sum();
        let (records, bytes) = (chunk.records.len() as u64, bytes as u64);
        let metrics = &self.metrics[chunk.slot];
        metrics.records.increment(records);
        metrics.bytes.increment(bytes);
        self.counters.requests.increment(records);
        self.counters.bytes.increment(bytes);
        let slot = chunk.slot;
        for mut record in chunk.records {
            let offset = record.offset;
            let value = record.record.value.take();
            let size = value.as_ref().map_or(0, Vec::len) + RECORD_OVERHEAD;
            self.reserve(size).await?;
            // Held by the batch from here, so that an error on the way gives it back (Drop).
            self.batch.reserved += size;
            let sender = format!("kafka {topic}[{partition}]@{offset}");
            let kept = match value {
                Some(value) => self.screen(&record, slot, Bytes::from(value), sender).await?,
                None => {
                    tracing::warn!(
                        topic,
                        partition,
                        offset,
                        "a record without a value (a tombstone) is passed"
                    );
                    None
                }
            };
            self.batch.since.get_or_insert_with(Instant::now);
            self.batch.marks.push((chunk.slot, offset.saturating_add(1)));
            match kept {
                Some(consumed) => {
                    self.batch.kept_at.push(self.batch.marks.len() - 1);
                    self.batch.bytes += consumed.payload.len();
                    self.batch.records.push(consumed);
                }
                None => {
                    self.batch.reserved -= size;
                    self.target.dataset().release(size);
                }
            }
            let policy = &self.context.flush;
            if self.batch.records.len() >= policy.max_records || self.batch.bytes >= policy.max_bytes {
                self.commit().await?;
            }
        }
        self.show_partition(slot);
        Ok(())
    }

    /// Checks a record against the source; `None` when it holds no record that fits (its
    /// bad records are in the quarantine by then).
    async fn screen(
        &self,
        record: &RecordAndOffset,
        slot: usize,
        payload: Bytes,
        sender: String,
    ) -> Result<Option<ConsumedRecord>, String> {
        let (topic, partition) = (&self.partitions[slot].0, self.partitions[slot].1);
        let headers = &record.record.headers;
        let media_type = headers.get("content-type").map(|v| String::from_utf8_lossy(v).into_owned());
        let time = record.record.timestamp;
        let format = match declared_format(media_type.as_deref()) {
            Ok(format) => format,
            Err(e) => {
                self.quarantine_whole(payload, slot, &sender, &e.to_string()).await?;
                return Ok(None);
            }
        };
        let columns = self.record_columns(record, topic, partition);
        let parcel = Parcel {
            payload,
            format,
            event_time: Some(time),
            address: topic.to_owned(),
            sender,
            durability: Durability::Synced,
        };
        let submission = self.target.submission(parcel, columns);
        let dataset = self.target.dataset();
        match dataset.screen(self.target.source(), &submission, time, &self.counters).await {
            Ok(Screened { records: 0, .. }) => Ok(None),
            Ok(_) => Ok(Some(ConsumedRecord {
                payload: submission.payload,
                format: submission.format,
                columns: submission.columns,
                bindings: submission.bindings,
                address: submission.address,
                sender: submission.sender,
                time,
            })),
            Err(SubmitError::Rejected { .. }) => {
                self.metrics[slot].quarantined.increment(1);
                Ok(None)
            }
            Err(e) => Err(format!("{}: {e}", submission.sender)),
        }
    }

    /// A record whose declared format the gateway does not read.
    async fn quarantine_whole(
        &self,
        payload: Bytes,
        slot: usize,
        sender: &str,
        reason: &str,
    ) -> Result<(), String> {
        let topic = &self.partitions[slot].0;
        let dataset = self.target.dataset();
        dataset
            .quarantine_record(self.target.source().name.as_str(), topic, sender, payload, reason)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics[slot].quarantined.increment(1);
        Ok(())
    }

    fn record_columns(&self, record: &RecordAndOffset, topic: &str, partition: i32) -> Vec<(String, String)> {
        let field = |from: &RecordField| -> Option<String> {
            match from {
                RecordField::Key => {
                    record.record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned())
                }
                RecordField::Timestamp => Some(record.record.timestamp.to_rfc3339()),
                RecordField::Topic => Some(topic.to_owned()),
                RecordField::Partition => Some(partition.to_string()),
                RecordField::Offset => Some(record.offset.to_string()),
                RecordField::Header(name) => {
                    record.record.headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
                }
            }
        };
        let columns = &self.context.options.columns;
        columns.iter().filter_map(|(column, from)| field(from).map(|value| (column.clone(), value))).collect()
    }

    /// Waits for room in the dataset's budget, committing what it holds first in case that
    /// is what fills it.
    async fn reserve(&mut self, bytes: usize) -> Result<(), String> {
        let dataset = self.target.dataset().clone();
        if dataset.reserve(bytes) {
            return Ok(());
        }
        self.commit().await?;
        self.settle().await?;
        while !dataset.reserve(bytes) {
            if *self.context.stop.borrow() {
                return Err("stopping".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Hands the batch to the dataset's committer with the offsets it moves, once the one
    /// before it is committed: one commit in flight while the next batch is checked. An
    /// error leaves the chain as it was, and the stream starts over from it.
    async fn commit(&mut self) -> Result<(), String> {
        self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        if batch.marks.is_empty() {
            return Ok(());
        }
        let offsets = self.committed.advanced(&self.partitions, &batch.marks);
        let (base, partitions, marks, kept_at) =
            (self.committed.clone(), self.partitions.clone(), batch.marks, batch.kept_at);
        let state_after = move |kept: usize| {
            let upto = kept_at.get(kept).copied().unwrap_or(marks.len());
            base.advanced(&partitions, &marks[..upto]).encode()
        };
        let source = self.target.source().name.clone();
        let consumed = Consumed::new(source, STATE_KIND, batch.records, state_after);
        let dataset = self.target.dataset().clone();
        let task = tokio::spawn(async move { dataset.commit_consumed(consumed).await });
        self.in_flight = Some(InFlight { task, offsets, reserved: batch.reserved });
        Ok(())
    }

    /// Waits for the commit in flight, if any.
    async fn settle(&mut self) -> Result<(), String> {
        let Some(flight) = self.in_flight.as_mut() else { return Ok(()) };
        let result = (&mut flight.task).await;
        self.settled(result)
    }

    fn settled(
        &mut self,
        result: Result<Result<(), SubmitError>, tokio::task::JoinError>,
    ) -> Result<(), String> {
        let Some(flight) = self.in_flight.take() else { return Ok(()) };
        self.target.dataset().release(flight.reserved);
        match result {
            Ok(Ok(())) => {
                self.committed = flight.offsets;
                self.show_progress();
                Ok(())
            }
            Ok(Err(e)) => Err(format!("cannot commit: {e}")),
            Err(e) => Err(format!("the commit failed: {e}")),
        }
    }

    /// Records `offsets` alone (an AddData without data).
    async fn commit_offsets(&mut self, offsets: Offsets) -> Result<(), String> {
        self.settle().await?;
        let state = offsets.encode();
        let source = self.target.source().name.clone();
        let consumed = Consumed::new(source, STATE_KIND, Vec::new(), move |_| state.clone());
        self.target.dataset().commit_consumed(consumed).await.map_err(|e| format!("cannot commit: {e}"))?;
        self.committed = offsets;
        Ok(())
    }

    /// Each partition's committed offset and lag, for `/readyz` and the metrics.
    fn show_progress(&self) {
        (0..self.partitions.len()).for_each(|slot| self.show_partition(slot));
    }

    fn show_partition(&self, slot: usize) {
        let (topic, partition) = &self.partitions[slot];
        let committed = self.committed.get(topic, *partition);
        let high_watermark = self.high_watermarks[slot];
        let lag = high_watermark.map(|end| end.saturating_sub(committed.unwrap_or(0)).max(0));
        if let Some(lag) = lag {
            self.metrics[slot].lag.set(lag as f64);
        }
        let status = PartitionStatus {
            topic: topic.clone(),
            partition: *partition,
            dataset: self.target.dataset().name().to_string(),
            source: self.target.source().name.to_string(),
            committed,
            high_watermark,
            lag,
        };
        self.context.board.set_partition(&self.context.options.name, status);
    }
}

impl Drop for Batcher {
    /// What the batches held of the budget goes back (those not committed are read again).
    fn drop(&mut self) {
        let in_flight = self.in_flight.take().map_or(0, |f| f.reserved);
        self.target.dataset().release(self.batch.reserved + in_flight);
    }
}

/// The end of the commit in flight; never, when there is none.
async fn in_flight(flight: &mut Option<InFlight>) -> Result<Result<(), SubmitError>, tokio::task::JoinError> {
    match flight {
        Some(flight) => (&mut flight.task).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
