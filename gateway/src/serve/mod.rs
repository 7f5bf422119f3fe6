//! `odf-gateway serve`, wired by hand: the manifests applied, the pipeline started (each
//! dataset replays its log), the listeners bound and served until the shutdown signal;
//! then the listeners stop accepting, requests in flight finish, the pipeline commits what
//! was accepted, and `run` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;

use crate::config::ServeConfig;
use crate::ingest::{Applied, ManifestErrors, apply_manifests, check_manifests, read_manifests};
use crate::intake::Intake;
use crate::odf::DatasetName;
use crate::pipeline::{Pipeline, PipelineError};
use crate::query::Readers;
use crate::store::{DataDir, StoreError};
use crate::sync::{SyncBoard, SyncOptions};
use crate::transport::coap::CoapServer;
use crate::transport::http::{self, HttpState};
use crate::transport::kafka::{self, ConsumerBoard};
use crate::transport::mqtt::{AckPolicy, Broker};
use crate::transport::tls;

mod systemd;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifests in {path}: {errors}")]
    Manifests { path: String, errors: ManifestErrors },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("cannot listen on {addr} ({what}): {error}")]
    Bind { what: &'static str, addr: SocketAddr, error: std::io::Error },
    #[error("{0}")]
    Tls(String),
    #[error(transparent)]
    Mqtt(#[from] crate::transport::mqtt::BrokerError),
    #[error(transparent)]
    Coap(#[from] crate::transport::coap::CoapError),
    #[error("sync[{entry}]: {message}")]
    Sync { entry: usize, message: String },
    #[error("cannot write {path}: {error}")]
    AddressesFile { path: String, error: std::io::Error },
}

/// Where the listeners ended up (with port 0, the port picked), for scripts and tests.
#[derive(Debug, Default, Serialize)]
pub struct Addresses {
    pub http: Vec<String>,
    pub mqtt: crate::transport::mqtt::BrokerAddresses,
    pub coap: crate::transport::coap::CoapAddresses,
}

/// How long a Kafka consumer may take at shutdown to commit what it holds.
const CONSUMER_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// How a run is set up beyond the configuration.
pub struct ServeOptions {
    pub data_dir: PathBuf,
    /// Pinned system time for blocks (reproducible runs).
    pub system_time: Option<DateTime<Utc>>,
    /// Written as JSON once every listener is bound.
    pub addresses_file: Option<PathBuf>,
}

pub async fn run(
    config: ServeConfig,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let exposed = config.exposed();
    let ServeConfig {
        raw,
        from_file,
        http_listen,
        mqtt,
        bridges,
        coap,
        pipeline: mut pipeline_options,
        routes,
        access,
        sync,
        kafka,
    } = config;
    let (doing, start_status) = watch::channel("opening the datasets".to_owned());
    let starting = tokio::spawn(systemd::extend_start_timeout(start_status));
    let access = Arc::new(access);
    let routes = Arc::new(routes);
    let data_dir = DataDir::create(&options.data_dir)?;
    apply_schemas(&data_dir, &raw.schemas, options.system_time).await?;

    pipeline_options.flush.system_time = options.system_time;
    let pipeline = Arc::new(Pipeline::start(&data_dir, &pipeline_options)?);
    let intake = Arc::new(Intake::new(pipeline.clone(), routes, access.clone()));
    for dataset in pipeline.datasets() {
        let sources: Vec<String> = dataset
            .sources()
            .iter()
            .map(|s| format!("{}{}", s.name, if s.active { "" } else { " (disabled)" }))
            .collect();
        tracing::info!(dataset = %dataset.name(), sources = %sources.join(", "), "dataset open");
    }

    let upkeep = tokio::spawn(periodic_upkeep(http::metrics_handle()));
    let (stop, stopped) = watch::channel(false);
    let sync_board = Arc::new(SyncBoard::default());
    let kafka_board = Arc::new(ConsumerBoard::default());
    let sync_threads = start_sync(sync, &pipeline, &data_dir, &sync_board, &stopped)?;
    let mut servers = Vec::new();
    let mut addresses = Addresses::default();
    if raw.http.enabled {
        let tls = match &raw.http.tls {
            Some(t) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(&t.cert, &t.key, t.client_ca.as_deref(), t.require_client_cert)
                    .map_err(ServeError::Tls)?,
            )),
            None => None,
        };
        // One cap for every HTTP listener.
        let timeouts = http::Timeouts { handshake: raw.http.handshake_timeout, idle: raw.http.idle_timeout };
        let connections = http::Connections::new(raw.http.max_connections, timeouts);
        let state = Arc::new(HttpState {
            pipeline: pipeline.clone(),
            intake: intake.clone(),
            access: access.clone(),
            readers: Readers::new(data_dir.clone()),
            metrics: http::metrics_handle(),
            connections: connections.clone(),
            max_body: raw.http.max_body.as_usize(),
            body_budget: http::BodyBudget::new(raw.http.max_body_buffer.as_usize()),
            commit_wait: raw.http.commit_wait,
            query: http::QueryLimits {
                memory: raw.http.query_memory.as_usize(),
                timeout: raw.http.query_timeout,
                max_answer: raw.http.query_max_answer.as_usize(),
            },
            query_slots: Arc::new(tokio::sync::Semaphore::new(raw.http.max_queries)),
            sync: sync_board.clone(),
            kafka: kafka_board.clone(),
        });
        let app = http::router(state);
        let limits = http::ServerLimits {
            connections,
            body: http::BodyPace {
                grace: raw.http.body_grace,
                min_rate: raw.http.body_min_rate.0,
                timeout: raw.http.body_timeout,
            },
            connection_buffer: raw.http.connection_buffer.0 as u32,
        };
        for addr in &http_listen {
            let listener = std::net::TcpListener::bind(addr).map_err(|error| ServeError::Bind {
                what: "http",
                addr: *addr,
                error,
            })?;
            let bound = listener.local_addr().map_err(|error| ServeError::Bind {
                what: "http",
                addr: *addr,
                error,
            })?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            tracing::info!(
                "{scheme} listening on {bound}{}",
                if access.allows_anonymous() {
                    ", anonymous clients allowed"
                } else {
                    ", credentials required"
                }
            );
            addresses.http.push(bound.to_string());
            servers.push(tokio::spawn(http::run(
                listener,
                tls.clone(),
                app.clone(),
                limits.clone(),
                stopped.clone(),
            )));
        }
    }
    let anonymous =
        if access.allows_anonymous() { "anonymous clients allowed" } else { "credentials required" };
    let broker = match &mqtt {
        None => None,
        Some(options) => {
            let broker = Broker::start(options, intake.clone(), access.clone()).await?;
            for (kind, addrs) in [
                ("mqtt", &broker.addresses.tcp),
                ("mqtts", &broker.addresses.tls),
                ("mqtt over websocket", &broker.addresses.ws),
            ] {
                for addr in addrs {
                    tracing::info!(
                        "{kind} listening on {addr}, {anonymous}, acknowledged {}",
                        match options.ack {
                            AckPolicy::Durable => "once on disk",
                            AckPolicy::Received => "once written (before the fsync)",
                        }
                    );
                }
            }
            addresses.mqtt = broker.addresses.clone();
            Some(broker)
        }
    };
    let coap = match &coap {
        None => None,
        Some(options) => {
            let server =
                CoapServer::start(options, intake.clone(), pipeline.clone(), access.clone(), stopped.clone())
                    .await?;
            for addr in &server.addresses.udp {
                tracing::info!("coap listening on udp {addr}, {anonymous}");
            }
            addresses.coap = server.addresses.clone();
            Some(server)
        }
    };
    let mut bridge_tasks = Vec::new();
    for options in bridges {
        let name = options.name.clone();
        let task = crate::transport::mqtt::bridge::spawn(options, intake.clone(), stopped.clone())
            .map_err(|e| ServeError::Tls(format!("bridge {name}: {e}")))?;
        tracing::info!(bridge = %name, "bridge started");
        bridge_tasks.push(task);
    }
    let mut consumers = Vec::new();
    for options in kafka {
        tracing::info!(consumer = %options.name, brokers = %options.brokers.join(","), "kafka consumer started");
        let flush = pipeline_options.flush.clone();
        consumers.push(kafka::spawn(options, flush, intake.clone(), kafka_board.clone(), stopped.clone()));
    }
    if !from_file {
        tracing::info!(
            "no configuration file: listening on loopback only, anonymous clients may write and read everything"
        );
    } else if access.allows_anonymous() && !exposed.is_empty() {
        tracing::warn!("anonymous clients are allowed on listeners beyond loopback ({exposed:?})");
    }
    if let Some(path) = &options.addresses_file {
        write_addresses(path, &addresses)?;
    }
    let ready = tokio::spawn(systemd::announce_ready(pipeline.clone(), doing, starting));
    let watchdog = tokio::spawn(systemd::keep_watchdog(pipeline.clone()));

    shutdown.await;
    tracing::info!("stopping: no new requests; committing what was accepted");
    systemd::stopping();
    ready.abort();
    watchdog.abort();
    let _ = stop.send(true);
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    for task in bridge_tasks {
        let _ = task.await;
    }
    // Consumers commit what they hold while the pipeline still takes it (once: a commit that
    // fails is not retried now), and are cut off if a broker keeps them waiting.
    pipeline.begin_stopping();
    for mut task in consumers {
        if tokio::time::timeout(CONSUMER_GRACE, &mut task).await.is_err() {
            tracing::warn!(
                "a kafka consumer did not stop in {CONSUMER_GRACE:?}: cut off (its records are read again at the next start)"
            );
            task.abort();
        }
    }
    let _ = tokio::task::spawn_blocking(move || sync_threads.into_iter().for_each(|t| drop(t.join()))).await;
    if let Some(coap) = coap {
        coap.join().await;
    }
    for server in servers {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("a listener failed: {e}"),
            Err(e) => tracing::error!("a listener task failed: {e}"),
        }
    }
    let closing = pipeline.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || closing.shutdown()).await {
        tracing::error!("the pipeline did not stop cleanly: {e}");
    }
    upkeep.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Starts each `[[sync]]` entry over the datasets it names (every one for `*`) on a thread
/// of its own, with a runtime of its own: a push reads files and syncs folders as it goes,
/// which must not hold up the workers that serve devices.
fn start_sync(
    entries: Vec<SyncOptions>,
    pipeline: &Pipeline,
    data_dir: &DataDir,
    board: &Arc<SyncBoard>,
    stopped: &watch::Receiver<bool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, ServeError> {
    let mut threads = Vec::new();
    for (entry, options) in entries.into_iter().enumerate() {
        let served: Vec<DatasetName> = pipeline.datasets().map(|d| d.name().clone()).collect();
        let names = match &options.datasets {
            None => served,
            Some(names) => {
                if let Some(unknown) = names.iter().find(|n| !served.contains(n)) {
                    let message = format!("no dataset '{unknown}' is served (datasets: {})", join(&served));
                    return Err(ServeError::Sync { entry, message });
                }
                names.clone()
            }
        };
        let datasets: Vec<_> =
            names.into_iter().map(|n| (n.clone(), data_dir.root().join(n.as_str()))).collect();
        for (name, _) in &datasets {
            let every = humantime::format_duration(options.interval);
            tracing::info!(dataset = %name, remote = %options.url_for(name), "sync every {every}");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServeError::Sync { entry, message: format!("cannot start its runtime: {e}") })?;
        let (board, stopped) = (board.clone(), stopped.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sync-{entry}"))
            .spawn(move || keep_syncing(runtime, options, datasets, board, stopped))
            .map_err(|e| ServeError::Sync { entry, message: format!("cannot start its thread: {e}") })?;
        threads.push(thread);
    }
    Ok(threads)
}

/// Runs a sync entry until the gateway stops; a fault in it (a panic in a library on the
/// way) is logged and the entry started again a minute later, rather than left stopped.
fn keep_syncing(
    runtime: tokio::runtime::Runtime,
    options: SyncOptions,
    datasets: Vec<(DatasetName, PathBuf)>,
    board: Arc<SyncBoard>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let run = crate::sync::run_sync(options.clone(), datasets.clone(), board.clone(), stopped.clone());
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(run))).is_ok() {
            return;
        }
        tracing::error!(remote = %options.url, "sync stopped by a fault; starting it again in 60 s");
        let stop = async {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(60)) => false,
                _ = stopped.changed() => true,
            }
        };
        if runtime.block_on(stop) || *stopped.borrow() {
            return;
        }
    }
}

fn join(names: &[DatasetName]) -> String {
    names.iter().map(DatasetName::as_str).collect::<Vec<_>>().join(", ")
}

/// Every few seconds: histogram samples, which wait in the metrics recorder until an upkeep
/// folds them into their buckets (a scrape of `/metrics` also does; without scrapes they
/// would pile up for good, a sample or two for every message), are folded, and the pages
/// malloc holds free are given back (`crate::memory`).
async fn periodic_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        every.tick().await;
        handle.run_upkeep();
        let _ = tokio::task::spawn_blocking(crate::memory::release_free_memory).await;
    }
}

/// Applies every manifest at `path` (a missing folder is skipped), reporting what changed.
async fn apply_schemas(
    data_dir: &DataDir,
    path: &Path,
    system_time: Option<DateTime<Utc>>,
) -> Result<(), ServeError> {
    if !path.exists() {
        tracing::info!(
            "no manifests at {}: serving the datasets already in the data directory",
            path.display()
        );
        return Ok(());
    }
    let fail = |errors: Vec<String>| ServeError::Manifests {
        path: path.display().to_string(),
        errors: ManifestErrors(errors),
    };
    let inputs = read_manifests(path, false).map_err(|e| fail(vec![e]))?;
    let snapshots = check_manifests(&inputs).await.map_err(|e| fail(e.0))?;
    let now = system_time.unwrap_or_else(Utc::now);
    let applied = apply_manifests(data_dir, &snapshots, now).map_err(|e| fail(e.0))?;
    for change in applied {
        match change {
            Applied::Created { name, id } => {
                tracing::info!(dataset = %name, %id, "created from its manifest")
            }
            Applied::Updated { name, events, notes } => {
                tracing::info!(dataset = %name, "manifest changed: appended {}", events.join(", "));
                for note in notes {
                    tracing::warn!(dataset = %name, "{note}");
                }
            }
            Applied::Unchanged { name, notes } => {
                for note in notes {
                    tracing::warn!(dataset = %name, "{note}");
                }
            }
        }
    }
    Ok(())
}

fn write_addresses(path: &Path, addresses: &Addresses) -> Result<(), ServeError> {
    let text = serde_json::to_string(addresses).unwrap_or_default();
    crate::store::write_atomic(path, text.as_bytes())
        .map_err(|e| ServeError::AddressesFile { path: path.display().to_string(), error: e.error })
}
