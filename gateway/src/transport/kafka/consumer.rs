//! One `[[kafka]]` entry: connect, choose its topics, route each to a push source, run a
//! stream per source, and look the topics up again every `refresh`. Any error (a broker
//! down, a commit failing) ends every stream of the entry; after a backoff it starts over
//! from the offsets the chain holds, which is also what happens when topics or partitions
//! are added.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rskafka::BackoffConfig;
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::stream::{self, Plan};
use super::{KafkaOptions, SaslMechanism, Topics};
use crate::intake::{Intake, IntakeError};
use crate::pipeline::{FlushPolicy, SubmitError};
use crate::routes::Transport;
use crate::transport::stopping;
use crate::transport::tls::client_config;

const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// A run that lasted this long was healthy: the next failure starts the backoff again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// The longest a metadata request or a stream's end may take (rskafka has no timeout of its
/// own for a broker that stops answering).
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Each consumer's state, for `/readyz`.
#[derive(Default)]
pub struct ConsumerBoard {
    consumers: Mutex<BTreeMap<String, ConsumerStatus>>,
    /// Which consumer feeds each (dataset, source): one only, or their offsets, recorded
    /// under the same kind, would overwrite each other's.
    feeds: Mutex<BTreeMap<(String, String), String>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ConsumerStatus {
    /// `connecting`, `consuming`, `retrying` or `stopped`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub partitions: Vec<PartitionStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub topic: String,
    pub partition: i32,
    pub dataset: String,
    pub source: String,
    /// The next offset to commit: what the chain records.
    pub committed: Option<i64>,
    /// The partition's end, as the last fetch saw it.
    pub high_watermark: Option<i64>,
    pub lag: Option<i64>,
}

impl ConsumerBoard {
    pub fn snapshot(&self) -> BTreeMap<String, ConsumerStatus> {
        self.consumers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, consumer: &str, state: &'static str, error: Option<String>) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        let status = consumers.entry(consumer.to_owned()).or_default();
        status.state = state;
        status.error = error;
        if state != "consuming" {
            status.partitions.clear();
        }
    }

    /// Takes (dataset, source) for `consumer`; the consumer that has it already if another.
    fn claim(&self, consumer: &str, dataset: &str, source: &str) -> Result<(), String> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let holder =
            feeds.entry((dataset.to_owned(), source.to_owned())).or_insert_with(|| consumer.to_owned());
        match holder == consumer {
            true => Ok(()),
            false => Err(holder.clone()),
        }
    }

    /// A partition's progress, from its stream.
    pub(super) fn set_partition(&self, consumer: &str, update: PartitionStatus) {
        let mut consumers = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        let status = consumers.entry(consumer.to_owned()).or_default();
        let same = |p: &&mut PartitionStatus| p.topic == update.topic && p.partition == update.partition;
        match status.partitions.iter_mut().find(same) {
            Some(known) => *known = update,
            None => status.partitions.push(update),
        }
    }
}

pub(super) async fn run(
    options: Arc<KafkaOptions>,
    flush: FlushPolicy,
    intake: Arc<Intake>,
    board: Arc<ConsumerBoard>,
    shutdown: watch::Receiver<bool>,
) {
    let name = options.name.as_str();
    let mut pause = RETRY_MIN;
    loop {
        if *shutdown.borrow() {
            break;
        }
        board.set_state(name, "connecting", None);
        let started = Instant::now();
        match consume(&options, &flush, &intake, &board, shutdown.clone()).await {
            Ok(Ended::Stopped) => break,
            Ok(Ended::Changed) => {
                tracing::info!(consumer = name, "topics or partitions changed: consuming them anew");
                pause = RETRY_MIN;
                continue;
            }
            Err(e) => {
                if started.elapsed() >= HEALTHY_RUN {
                    pause = RETRY_MIN;
                }
                tracing::warn!(consumer = name, retry_in = ?pause, "kafka: {e}");
                metrics::counter!("odf_kafka_failures_total", "consumer" => name.to_owned()).increment(1);
                board.set_state(name, "retrying", Some(e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stopping(shutdown.clone()) => break,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
    board.set_state(name, "stopped", None);
}

enum Ended {
    Stopped,
    /// The topics or their partitions are not those the streams consume.
    Changed,
}

async fn consume(
    options: &Arc<KafkaOptions>,
    flush: &FlushPolicy,
    intake: &Intake,
    board: &Arc<ConsumerBoard>,
    shutdown: watch::Receiver<bool>,
) -> Result<Ended, String> {
    let client = Arc::new(connect(options).await?);
    let chosen = choose(options, &client).await?;
    let plans = plan(options, intake, board, &chosen)?;
    if plans.is_empty() {
        return Err(match &options.topics {
            Topics::Names(names) => format!("none of the topics {names:?} exists on the brokers"),
            Topics::Pattern(pattern) => format!("no topic on the brokers matches '{pattern}'"),
        });
    }
    board.set_state(&options.name, "consuming", None);
    let (stop, stop_streams) = watch::channel(false);
    let mut streams = JoinSet::new();
    for plan in plans {
        let context = stream::Context {
            client: client.clone(),
            options: options.clone(),
            flush: flush.clone(),
            board: board.clone(),
            stop: stop_streams.clone(),
        };
        streams.spawn(stream::run(plan, context));
    }
    let mut refresh = tokio::time::interval(options.refresh);
    refresh.tick().await;
    let ended = loop {
        tokio::select! {
            _ = stopping(shutdown.clone()) => break Ok(Ended::Stopped),
            _ = refresh.tick() => match choose(options, &client).await {
                Ok(now) if now != chosen => break Ok(Ended::Changed),
                Ok(_) => {}
                Err(e) => tracing::warn!(consumer = %options.name, "cannot look the topics up: {e}"),
            },
            Some(ended) = streams.join_next() => break Err(match ended {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "a stream ended".to_owned(),
                Err(e) => format!("a stream failed: {e}"),
            }),
        }
    };
    // Each stream commits what it holds, then ends; one that a broker keeps waiting is cut
    // off (what it held is read again from the chain's offsets).
    let _ = stop.send(true);
    let drained = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while let Some(result) = streams.join_next().await {
            if let Ok(Err(e)) = result {
                tracing::warn!(consumer = %options.name, "{e}");
            }
        }
    });
    if drained.await.is_err() {
        streams.abort_all();
    }
    ended
}

async fn connect(options: &KafkaOptions) -> Result<Client, String> {
    // rskafka retries a broker that does not answer; bounded, so that the error reaches
    // the logs and `/readyz` instead of waiting in silence.
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(5),
        base: 2.0,
        deadline: Some(Duration::from_secs(30)),
    };
    let mut builder = ClientBuilder::new(options.brokers.clone())
        .client_id(options.client_id.as_str())
        .backoff_config(backoff);
    if let Some(tls) = &options.tls {
        builder = builder.tls_config(client_config(tls)?);
    }
    if let Some(sasl) = &options.sasl {
        let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
        builder = builder.sasl_config(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    let brokers = options.brokers.join(",");
    builder.build().await.map_err(|e| format!("cannot connect to {brokers}: {e}"))
}

/// The topics to consume, with their partitions.
async fn choose(options: &KafkaOptions, client: &Client) -> Result<BTreeMap<String, BTreeSet<i32>>, String> {
    let listed = tokio::time::timeout(REQUEST_TIMEOUT, client.list_topics()).await;
    let topics = listed
        .map_err(|_| format!("the brokers did not list the topics in {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot list the topics: {e}"))?;
    let wanted = |name: &str| match &options.topics {
        Topics::Names(names) => names.iter().any(|n| n == name),
        Topics::Pattern(pattern) => pattern.is_match(name),
    };
    // A topic being made or deleted may be listed without partitions: not yet, or no more.
    let ready = |t: &rskafka::topic::Topic| wanted(&t.name) && !t.partitions.is_empty();
    Ok(topics.into_iter().filter(ready).map(|t| (t.name, t.partitions)).collect())
}

/// The streams: each topic's partitions under the push source its route leads to. A topic
/// without a way in, or to a source another entry feeds, is left out with an error in the
/// log; a dataset not ready yet is an error (tried again later).
fn plan(
    options: &KafkaOptions,
    intake: &Intake,
    board: &ConsumerBoard,
    chosen: &BTreeMap<String, BTreeSet<i32>>,
) -> Result<Vec<Plan>, String> {
    let mut plans: BTreeMap<(String, String), Plan> = BTreeMap::new();
    for (topic, partitions) in chosen {
        let admitted = match &options.target {
            Some(target) => intake.admit_configured_to(target.clone(), Transport::Kafka),
            None => intake.admit_configured(topic, Transport::Kafka),
        };
        let target = match admitted {
            Ok(target) => target,
            Err(IntakeError::Submit(SubmitError::Busy { reason, .. } | SubmitError::Unavailable(reason))) => {
                return Err(format!("topic '{topic}': {reason}"));
            }
            Err(e) => {
                tracing::error!(consumer = %options.name, topic, "topic not consumed: {e}");
                continue;
            }
        };
        let key = (target.dataset().name().to_string(), target.source().name.to_string());
        if let Err(holder) = board.claim(&options.name, &key.0, &key.1) {
            tracing::error!(
                consumer = %options.name, topic,
                "topic not consumed: {holder} feeds {}/{} already (one [[kafka]] entry per push source)", key.0, key.1
            );
            continue;
        }
        let plan = plans.entry(key).or_insert_with(|| Plan::new(target));
        plan.partitions.extend(partitions.iter().map(|&p| (topic.clone(), p)));
    }
    Ok(plans.into_values().collect())
}
