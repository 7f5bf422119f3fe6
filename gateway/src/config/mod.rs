//! The `serve` configuration: a TOML file parsed as it is written (`RawConfig`, every field
//! with its default), then checked into the settings the server runs with (`ServeConfig`).
//! With no file, the defaults make `serve` work on one machine: the data directory and
//! manifests of the current folder, HTTP on loopback, anonymous clients allowed there only.
//! A problem is one line naming the field.

mod kafka;
mod size;
mod sync;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use kafka::KafkaConfig;
pub use size::Size;
pub use sync::SyncConfig;

use crate::access::{AccessTable, GrantBinding, Grants, Identity, Template};
use crate::ingest::{IndexConfig, WriterOptions};
use crate::pipeline::{FlushPolicy, PipelineOptions, SyncPacing};
use crate::routes::{Route, RouteTable, Transport};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Where datasets live (the `--data-dir` flag or its variable, when given, wins).
    pub data_dir: PathBuf,
    /// Manifests applied at start (a file or a folder of `*.yaml`); a missing folder is skipped.
    pub schemas: PathBuf,
    pub http: HttpConfig,
    pub mqtt: MqttConfig,
    pub coap: CoapConfig,
    pub pipeline: PipelineConfig,
    /// What clients without credentials may do. Without a configuration file: everything
    /// (listeners are on loopback); with one: nothing unless this section says so.
    pub anonymous: Option<GrantsConfig>,
    #[serde(rename = "identity")]
    pub identities: Vec<IdentityConfig>,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Remotes to push datasets to.
    pub sync: Vec<SyncConfig>,
    /// Kafka topics to consume into push sources.
    pub kafka: Vec<KafkaConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Addresses to listen on (`127.0.0.1:8080`, `[::]:8080`; port 0 picks a free one).
    pub listen: Vec<String>,
    /// Request bodies above this are refused with 413.
    pub max_body: Size,
    /// Connections open at once; at the cap, the one idle the longest is closed to admit a
    /// new one (or, when all are busy, the newcomer waits).
    pub max_connections: usize,
    /// From accept to the first request's head (TLS handshake, HTTP/2 preface, request line
    /// and headers); a connection that has not got that far is closed.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection with no request in progress is closed after this (HTTP/1 keep-alive,
    /// HTTP/2); on HTTP/1 the next request's head must be complete by then.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A request body may take at most this long in all, ...
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// ... and has `body_grace` plus one second for every `body_min_rate` bytes it delivered
    /// (408 when it falls behind); 0 turns the rate off.
    #[serde(with = "humantime_serde")]
    pub body_grace: Duration,
    pub body_min_rate: Size,
    /// Bytes of request bodies being received, all connections together (503 with
    /// Retry-After beyond).
    pub max_body_buffer: Size,
    /// What one connection buffers of its client's bytes before they are read: HTTP/1's
    /// read buffer (the largest request head too), HTTP/2's flow-control windows.
    pub connection_buffer: Size,
    /// `POST /query`: the longest a query may run (504 beyond) ...
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// ... the largest answer it may give (413 beyond) ...
    pub query_max_answer: Size,
    /// ... and the memory its sorts, joins and aggregations may take.
    pub query_memory: Size,
    /// Queries running at once; more get 503 with Retry-After (together they may take this
    /// many times `query_memory` and `query_max_answer`).
    pub max_queries: usize,
    /// How long `?wait=commit` (and kamu's ingest endpoint) waits for the commit.
    #[serde(with = "humantime_serde")]
    pub commit_wait: Duration,
    /// HTTPS instead of HTTP on every HTTP listener.
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM CA certificates that sign client certificates; with it, clients may (or, with
    /// `require_client_cert`, must) present one, which maps to an identity by subject.
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub require_client_cert: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    /// Plain MQTT listeners (v3.1.1 and v5).
    pub listen: Vec<String>,
    /// MQTT over TLS listeners (need `[mqtt.tls]`), e.g. `["[::]:8883"]`.
    pub tls_listen: Vec<String>,
    /// MQTT over WebSocket listeners (path `/mqtt`).
    pub ws_listen: Vec<String>,
    /// When a publish is acknowledged: `durable` (after the write-ahead log's fsync) or
    /// `received` (after the write; the fsync follows within the group).
    pub ack: crate::transport::mqtt::AckPolicy,
    pub max_packet_size: Size,
    /// QoS 1/2 publishes a client may have unacknowledged at once.
    pub max_inflight: u16,
    pub max_connections: usize,
    /// From accept to a complete CONNECT (with the TLS or WebSocket handshake before it);
    /// a connection that has not got that far is closed.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a persistent session (clean start off) is kept for a device that went away.
    #[serde(with = "humantime_serde")]
    pub session_expiry: Duration,
    /// Topic aliases an MQTT 5 client may set up per connection (0: none); a PUBLISH with
    /// an alias above it is a protocol error that closes the connection.
    pub max_topic_aliases: u16,
    /// Messages kept per session for a subscriber that is away or not reading; newer ones
    /// are dropped (and counted) once it is full.
    pub max_queued: usize,
    pub tls: Option<MqttTlsConfig>,
    /// Upstream brokers to take messages from.
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    pub name: String,
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Default `odf-gateway-{name}`; give each gateway of a shared subscription its own.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// The upstream password, in clear (it is sent to the upstream broker): keep the file
    /// readable by the gateway only.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CA of the upstream broker: TLS to it; with `tls_cert`/`tls_key`, a client certificate.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Topic filters; `$share/{group}/{filter}` to split the load with other gateways.
    pub subscribe: Vec<String>,
    #[serde(default = "default_bridge_qos")]
    pub qos: u8,
    /// Off (the default): a persistent session upstream keeps messages while the gateway is down.
    #[serde(default)]
    pub clean_session: bool,
    /// An identity whose write grants bound where the bridge's messages may go.
    #[serde(default)]
    pub identity: Option<String>,
}

fn default_mqtt_port() -> u16 {
    1883
}

fn default_bridge_qos() -> u8 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    pub enabled: bool,
    /// UDP addresses (IPv4 and IPv6).
    pub listen: Vec<String>,
    /// A body sent block-wise (Block1) may be at most this big (4.13 beyond).
    pub max_body: Size,
    /// Bodies being assembled, all together, at most, with what each transfer holds besides
    /// its body (5.03 beyond).
    pub max_assembling: Size,
    /// Block-wise transfers under way at once from one endpoint (address and port; 5.03 beyond).
    pub max_transfers_per_endpoint: usize,
    /// If the answer to a CON request is not ready by then, an empty ACK goes first and the
    /// answer follows as a separate response (clients retransmit after about 2 s); 0: always.
    #[serde(with = "humantime_serde")]
    pub separate_after: Duration,
    /// Requests remembered for duplicate detection (for 247 s each).
    pub max_exchanges: usize,
    /// Bytes those remembered answers hold, all together (the oldest are forgotten first).
    pub max_exchange_bytes: Size,
    /// Requests remembered for duplicate detection per endpoint (its oldest forgotten first).
    pub max_exchanges_per_endpoint: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, TLS clients must present a certificate it signed (its subject maps to an
    /// identity); rmqtt has no "optional" client certificates.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// The oldest accepted payload waits at most this long for its commit.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// ... or a commit is made once this many records wait,
    pub max_batch_records: usize,
    /// ... or this many bytes.
    pub max_batch_bytes: Size,
    /// Bytes accepted and not committed, per dataset, before senders are pushed back.
    pub max_pending_bytes: Size,
    pub wal_segment_bytes: Size,
    /// The log is synced at most once per interval (an append after a quiet spell at once)
    /// unless this many bytes wait: fewer syncs, less wear of an SD card, later acks.
    #[serde(with = "humantime_serde")]
    pub wal_sync_interval: Duration,
    pub wal_sync_bytes: Size,
    pub quarantine_max_entries: usize,
    /// ... and bytes, per dataset; past either the oldest entries are removed.
    pub quarantine_max_bytes: Size,
    /// Snapshot/UpsertStream checkpoints no more often than every this many rows and this
    /// long (each is kept for good and pulled by every other node).
    pub checkpoint_min_rows: u64,
    #[serde(with = "humantime_serde")]
    pub checkpoint_min_interval: Duration,
    /// How long a commit waits for another writer's lock (a CLI ingest) before retrying.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// The memory of each Ledger's key index (one per dataset and primary key): the block
    /// cache of keys read back from disk, the write buffer (flushed to disk when full), and
    /// the recent keys kept in front of it (a redelivery repeats a recent key). Each fills
    /// over the first minutes or hours of traffic and stays there.
    pub ledger_cache: Size,
    pub ledger_write_buffer: Size,
    pub ledger_recent_keys: Size,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrantsConfig {
    /// `dataset/source` patterns: `gps/vendorA`, `gps/*`, `*`.
    pub write: Vec<String>,
    /// Datasets: `gps`, `*`.
    pub query: Vec<String>,
    /// MQTT topic filters.
    pub subscribe: Vec<String>,
    /// Every dataset's series on `/metrics` (for a scraper); without it, only those of the
    /// datasets in `query`.
    pub metrics: bool,
    /// Column bindings: what it may write into a column (its own device ids).
    pub bind: Vec<BindConfig>,
}

/// `{ column = "device_id", value = "A-*" }`: every record this identity writes must hold
/// a matching value in that column (else it is rejected and quarantined).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindConfig {
    /// A read-schema column of the sources it holds on.
    pub column: String,
    /// Text, `*` (any run of characters) and placeholders: `{identity}`, `{client_id}`,
    /// `{cert_subject}`, `{cert_cn}`.
    pub value: String,
    /// `dataset/source` patterns where it holds (as in `write`); every source by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub name: String,
    /// argon2 hash (`odf-gateway hash-secret`), for MQTT and HTTP Basic.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// SHA-256 hex digests of bearer tokens (`odf-gateway hash-secret`), for HTTP and CoAP.
    #[serde(default)]
    pub token_sha256: Vec<String>,
    /// Client certificate subject (`CN=tracker-17,O=Acme`) or common name.
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// MQTT client ids bound to the identity (`vendorA-*`, `*` any run of characters).
    #[serde(default)]
    pub client_ids: Vec<String>,
    #[serde(flatten)]
    pub grants: GrantsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `trackers/{device_id}/gps`: literals, `{capture}`, `+`, and `#` last.
    pub pattern: String,
    /// The target; either may come from a `{dataset}` / `{source}` capture instead.
    #[serde(default)]
    pub dataset: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    /// Limit the route to some transports (`http`, `mqtt`, `coap`); all by default.
    #[serde(default)]
    pub transports: Option<Vec<Transport>>,
    /// The captures bind: a record whose column holds another value than the one captured
    /// is rejected (by default they only fill what a record leaves out).
    #[serde(default)]
    pub bind_captures: bool,
}

impl Default for RawConfig {
    fn default() -> RawConfig {
        RawConfig {
            data_dir: PathBuf::from("odf-data"),
            schemas: PathBuf::from("schemas"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            coap: CoapConfig::default(),
            pipeline: PipelineConfig::default(),
            anonymous: None,
            identities: Vec::new(),
            routes: Vec::new(),
            sync: Vec::new(),
            kafka: Vec::new(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            enabled: true,
            listen: vec!["127.0.0.1:8080".into()],
            max_body: Size(8 * 1024 * 1024),
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            body_grace: Duration::from_secs(10),
            body_min_rate: Size(500),
            max_body_buffer: Size(64 * 1024 * 1024),
            connection_buffer: Size(128 * 1024),
            query_timeout: Duration::from_secs(30),
            query_max_answer: Size(32 * 1024 * 1024),
            query_memory: Size(256 * 1024 * 1024),
            max_queries: 2,
            commit_wait: Duration::from_secs(30),
            tls: None,
        }
    }
}

impl Default for CoapConfig {
    fn default() -> CoapConfig {
        CoapConfig {
            enabled: true,
            listen: vec!["127.0.0.1:5683".into(), "[::1]:5683".into()],
            max_body: Size(1024 * 1024),
            max_assembling: Size(16 * 1024 * 1024),
            max_transfers_per_endpoint: 8,
            separate_after: Duration::from_secs(1),
            max_exchanges: 100_000,
            max_exchange_bytes: Size(16 * 1024 * 1024),
            max_exchanges_per_endpoint: 1024,
        }
    }
}

impl Default for MqttConfig {
    fn default() -> MqttConfig {
        MqttConfig {
            enabled: true,
            listen: vec!["127.0.0.1:1883".into()],
            tls_listen: Vec::new(),
            ws_listen: Vec::new(),
            ack: crate::transport::mqtt::AckPolicy::Durable,
            max_packet_size: Size(1024 * 1024),
            max_inflight: 16,
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            session_expiry: Duration::from_secs(2 * 3600),
            max_topic_aliases: 16,
            max_queued: 100,
            tls: None,
            bridges: Vec::new(),
        }
    }
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        let defaults = PipelineOptions::default();
        PipelineConfig {
            flush_interval: defaults.flush.interval,
            max_batch_records: defaults.flush.max_records,
            max_batch_bytes: Size(defaults.flush.max_bytes as u64),
            max_pending_bytes: Size(defaults.max_pending_bytes as u64),
            wal_segment_bytes: Size(defaults.wal_segment_bytes),
            wal_sync_interval: defaults.wal_sync.interval,
            wal_sync_bytes: Size(defaults.wal_sync.bytes as u64),
            quarantine_max_entries: defaults.quarantine_max_entries,
            quarantine_max_bytes: Size(defaults.quarantine_max_bytes),
            checkpoint_min_rows: 10_000,
            checkpoint_min_interval: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(30),
            ledger_cache: Size(defaults.writer.ledger_index.store_cache_bytes),
            ledger_write_buffer: Size(defaults.writer.ledger_index.memtable_bytes),
            ledger_recent_keys: Size(defaults.writer.ledger_index.recent_keys_bytes as u64),
        }
    }
}

/// A problem with the configuration: the field and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), message: message.into() }
}

/// TLS to a server the gateway connects to (an MQTT bridge's upstream, Kafka), from the
/// `tls_ca`, `tls_cert` and `tls_key` of an entry whose fields `field` names; `None` without
/// a CA.
fn client_tls(
    field: &dyn Fn(&str) -> String,
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<Option<crate::transport::tls::ClientTls>, ConfigError> {
    if cert.is_some() != key.is_some() {
        return Err(invalid(field("tls_key"), "give both tls_cert and tls_key, or neither"));
    }
    for (name, path) in [("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)] {
        if let Some(path) = path.as_ref().filter(|p| !p.is_file()) {
            return Err(invalid(field(name), format!("{} is not a file", path.display())));
        }
    }
    if cert.is_some() && ca.is_none() {
        return Err(invalid(field("tls_ca"), "a client certificate needs TLS: give tls_ca"));
    }
    let tls = |ca: &PathBuf| crate::transport::tls::ClientTls {
        ca: ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
    };
    Ok(ca.as_ref().map(tls))
}

/// The checked settings `serve` runs with.
pub struct ServeConfig {
    pub raw: RawConfig,
    /// Whether a file was given (without one, everything is open on loopback).
    pub from_file: bool,
    pub http_listen: Vec<SocketAddr>,
    /// `None` when MQTT is off.
    pub mqtt: Option<crate::transport::mqtt::BrokerOptions>,
    pub bridges: Vec<crate::transport::mqtt::bridge::BridgeOptions>,
    /// `None` when CoAP is off.
    pub coap: Option<crate::transport::coap::CoapOptions>,
    pub pipeline: PipelineOptions,
    pub routes: RouteTable,
    pub access: AccessTable,
    pub sync: Vec<crate::sync::SyncOptions>,
    pub kafka: Vec<crate::transport::kafka::KafkaOptions>,
}

impl RawConfig {
    /// Reads a TOML file; an error names the file, the line and the field.
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), format!("cannot read: {e}")))?;
        RawConfig::from_toml(&text)
            .map_err(|e| invalid(format!("{}: {}", path.display(), e.field), e.message))
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let field = line.map(|l| format!("line {l}")).unwrap_or_else(|| "config".into());
            invalid(field, e.message().to_owned())
        })
    }

    /// The configuration as TOML, every default written out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Checks every field into the settings `serve` runs with.
    pub fn check(self, from_file: bool) -> Result<ServeConfig, ConfigError> {
        let http_listen = self
            .http
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        format!("http.listen[{i}]"),
                        format!("'{a}' is not an address such as 127.0.0.1:8080: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.http.enabled && http_listen.is_empty() {
            return Err(invalid("http.listen", "give at least one address, or set http.enabled = false"));
        }
        // A payload is one write-ahead log record.
        let max_record = crate::pipeline::MAX_PAYLOAD as u64;
        if self.http.max_body.0 == 0 || self.http.max_body.0 > max_record {
            return Err(invalid(
                "http.max_body",
                format!("must be above 0 and at most {}", Size(max_record)),
            ));
        }
        let h = &self.http;
        for (field, value) in [
            ("http.handshake_timeout", h.handshake_timeout),
            ("http.idle_timeout", h.idle_timeout),
            ("http.body_timeout", h.body_timeout),
            ("http.body_grace", h.body_grace),
            ("http.query_timeout", h.query_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(field, "must be above 0 (e.g. \"10s\")"));
            }
        }
        if h.max_body_buffer.0 < h.max_body.0 {
            return Err(invalid(
                "http.max_body_buffer",
                format!(
                    "must be at least http.max_body ({}), or no body of that size could be taken",
                    h.max_body
                ),
            ));
        }
        if !(16 * 1024..=16 * 1024 * 1024).contains(&h.connection_buffer.0) {
            return Err(invalid("http.connection_buffer", "must be from 16 KiB to 16 MiB"));
        }
        if h.query_max_answer.0 == 0 || h.query_memory.0 == 0 || h.max_queries == 0 {
            return Err(invalid("http", "query_max_answer, query_memory and max_queries must be above 0"));
        }
        if let Some(tls) = &self.http.tls {
            for (field, path) in [
                ("http.tls.cert", Some(&tls.cert)),
                ("http.tls.key", Some(&tls.key)),
                ("http.tls.client_ca", tls.client_ca.as_ref()),
            ] {
                if let Some(path) = path.filter(|p| !p.is_file()) {
                    return Err(invalid(field, format!("{} is not a file", path.display())));
                }
            }
            if tls.require_client_cert && tls.client_ca.is_none() {
                return Err(invalid("http.tls.require_client_cert", "needs http.tls.client_ca"));
            }
        }
        let mqtt = self.check_mqtt()?;
        let bridges = self.check_bridges()?;
        let coap = self.check_coap()?;
        let p = &self.pipeline;
        if p.flush_interval.is_zero() {
            return Err(invalid("pipeline.flush_interval", "must be above 0 (e.g. \"1s\")"));
        }
        if p.max_batch_records == 0 || p.max_batch_bytes.0 == 0 || p.max_pending_bytes.0 == 0 {
            return Err(invalid(
                "pipeline",
                "max_batch_records, max_batch_bytes and max_pending_bytes must be above 0",
            ));
        }
        if p.quarantine_max_entries == 0 {
            return Err(invalid("pipeline.quarantine_max_entries", "must be above 0"));
        }
        let pipeline = PipelineOptions {
            flush: FlushPolicy {
                interval: p.flush_interval,
                max_records: p.max_batch_records,
                max_bytes: p.max_batch_bytes.as_usize(),
                retry_min: Duration::from_millis(500),
                retry_max: Duration::from_secs(30),
                system_time: None,
            },
            max_pending_bytes: p.max_pending_bytes.as_usize(),
            wal_segment_bytes: p.wal_segment_bytes.0.max(64 * 1024),
            wal_sync: SyncPacing { interval: p.wal_sync_interval, bytes: p.wal_sync_bytes.as_usize() },
            quarantine_max_entries: p.quarantine_max_entries,
            quarantine_max_bytes: p.quarantine_max_bytes.0,
            writer: WriterOptions {
                lock_timeout: p.lock_timeout,
                checkpoint_min_rows: p.checkpoint_min_rows,
                checkpoint_min_interval: p.checkpoint_min_interval,
                ledger_index: IndexConfig {
                    store_cache_bytes: p.ledger_cache.0,
                    memtable_bytes: p.ledger_write_buffer.0.max(1024 * 1024),
                    recent_keys_bytes: p.ledger_recent_keys.as_usize(),
                    ..IndexConfig::default()
                },
                ..WriterOptions::default()
            },
        };
        let mut routes = Vec::new();
        for (i, route) in self.routes.iter().enumerate() {
            let checked = Route::new(
                &route.pattern,
                route.dataset.clone(),
                route.source.clone(),
                route.transports.clone(),
            )
            .map_err(|e| invalid(format!("route[{i}]"), e))?;
            routes.push(checked.binding_captures(route.bind_captures));
        }
        let mut identities: Vec<Identity> = Vec::new();
        for (i, id) in self.identities.iter().enumerate() {
            let field = |f: &str| format!("identity[{i}] ({}).{f}", id.name);
            if id.name.is_empty() {
                return Err(invalid(format!("identity[{i}].name"), "must not be empty"));
            }
            if identities.iter().any(|other| other.name == id.name) {
                return Err(invalid(
                    format!("identity[{i}].name"),
                    format!("'{}' is defined twice", id.name),
                ));
            }
            if let Some(hash) = &id.password_hash {
                argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| {
                    invalid(
                        field("password_hash"),
                        format!("not an argon2 hash (make one with `odf-gateway hash-secret`): {e}"),
                    )
                })?;
            }
            for token in &id.token_sha256 {
                if token.len() != 64 || !token.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(invalid(
                        field("token_sha256"),
                        "each must be 64 hex digits (`odf-gateway hash-secret`)",
                    ));
                }
            }
            if id.password_hash.is_none() && id.token_sha256.is_empty() && id.cert_subject.is_none() {
                return Err(invalid(
                    field("password_hash"),
                    "the identity has no password, token or certificate subject",
                ));
            }
            if id.client_ids.iter().any(String::is_empty) {
                return Err(invalid(field("client_ids"), "a pattern must not be empty (`vendorA-*`)"));
            }
            identities.push(Identity {
                name: id.name.clone(),
                password_hash: id.password_hash.clone(),
                token_sha256: id.token_sha256.clone(),
                cert_subject: id.cert_subject.clone(),
                client_ids: id.client_ids.clone(),
                grants: grants(&id.grants, &field(""))?,
            });
        }
        let anonymous = match (&self.anonymous, from_file) {
            (Some(g), _) => Some(grants(g, "anonymous.")?),
            (None, false) => Some(Grants::all()),
            (None, true) => None,
        };
        let access = AccessTable::new(identities, anonymous);
        let sync = sync::check(&self.sync)?;
        let kafka = kafka::check(&self.kafka)?;
        Ok(ServeConfig {
            raw: self,
            from_file,
            http_listen,
            mqtt,
            bridges,
            coap,
            pipeline,
            routes: RouteTable::new(routes),
            access,
            sync,
            kafka,
        })
    }

    fn check_coap(&self) -> Result<Option<crate::transport::coap::CoapOptions>, ConfigError> {
        let c = &self.coap;
        if !c.enabled {
            return Ok(None);
        }
        let listen = c
            .listen
            .iter()
            .enumerate()
            .map(|(i, a)| {
                a.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        format!("coap.listen[{i}]"),
                        format!("'{a}' is not an address such as 127.0.0.1:5683: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(invalid("coap.listen", "give at least one address, or set coap.enabled = false"));
        }
        if c.max_body.0 == 0 || c.max_body.as_usize() > crate::pipeline::MAX_PAYLOAD {
            return Err(invalid("coap.max_body", "must be above 0 and at most 255 MiB"));
        }
        if c.max_transfers_per_endpoint == 0 {
            return Err(invalid("coap.max_transfers_per_endpoint", "must be at least 1"));
        }
        if c.max_exchanges_per_endpoint < 16 {
            // Fewer would forget requests a client may still be retransmitting.
            return Err(invalid("coap.max_exchanges_per_endpoint", "must be at least 16"));
        }
        if c.max_exchange_bytes.as_usize() < 64 * 1024 {
            return Err(invalid("coap.max_exchange_bytes", "must be at least 64 KiB"));
        }
        Ok(Some(crate::transport::coap::CoapOptions {
            listen,
            max_body: c.max_body.as_usize(),
            max_assembling: c.max_assembling.as_usize().max(c.max_body.as_usize()),
            max_transfers_per_endpoint: c.max_transfers_per_endpoint,
            separate_after: c.separate_after,
            max_exchanges: c.max_exchanges.max(16),
            max_exchange_bytes: c.max_exchange_bytes.as_usize(),
            max_exchanges_per_endpoint: c.max_exchanges_per_endpoint,
        }))
    }

    fn check_bridges(&self) -> Result<Vec<crate::transport::mqtt::bridge::BridgeOptions>, ConfigError> {
        use crate::transport::mqtt::bridge::BridgeOptions;
        let mut bridges = Vec::new();
        for (i, b) in self.mqtt.bridges.iter().enumerate() {
            let field = |f: &str| format!("mqtt.bridge[{i}] ({}).{f}", b.name);
            if b.subscribe.is_empty() {
                return Err(invalid(field("subscribe"), "give at least one topic filter"));
            }
            if b.qos > 2 {
                return Err(invalid(field("qos"), "must be 0, 1 or 2"));
            }
            if b.username.is_some() != b.password.is_some() {
                return Err(invalid(field("password"), "give both username and password, or neither"));
            }
            let tls = client_tls(&field, &b.tls_ca, &b.tls_cert, &b.tls_key)?;
            bridges.push(BridgeOptions {
                name: b.name.clone(),
                host: b.host.clone(),
                port: b.port,
                client_id: b.client_id.clone().unwrap_or_else(|| format!("odf-gateway-{}", b.name)),
                username: b.username.clone(),
                password: b.password.clone(),
                tls,
                subscribe: b.subscribe.clone(),
                qos: b.qos,
                clean_session: b.clean_session,
                identity: b.identity.clone(),
            });
        }
        Ok(bridges)
    }

    fn check_mqtt(&self) -> Result<Option<crate::transport::mqtt::BrokerOptions>, ConfigError> {
        let m = &self.mqtt;
        if !m.enabled {
            return Ok(None);
        }
        let addresses = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    a.parse::<SocketAddr>().map_err(|e| {
                        invalid(
                            format!("mqtt.{field}[{i}]"),
                            format!("'{a}' is not an address such as 127.0.0.1:1883: {e}"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let (listen, tls_listen, ws_listen) = (
            addresses("listen", &m.listen)?,
            addresses("tls_listen", &m.tls_listen)?,
            addresses("ws_listen", &m.ws_listen)?,
        );
        if listen.is_empty() && tls_listen.is_empty() && ws_listen.is_empty() {
            return Err(invalid("mqtt.listen", "give at least one address, or set mqtt.enabled = false"));
        }
        let tls = match (&m.tls, tls_listen.is_empty()) {
            (None, false) => return Err(invalid("mqtt.tls_listen", "needs [mqtt.tls] with cert and key")),
            (None, true) => None,
            (Some(t), _) => {
                for (field, path) in [
                    ("mqtt.tls.cert", Some(&t.cert)),
                    ("mqtt.tls.key", Some(&t.key)),
                    ("mqtt.tls.client_ca", t.client_ca.as_ref()),
                ] {
                    if let Some(path) = path.filter(|p| !p.is_file()) {
                        return Err(invalid(field, format!("{} is not a file", path.display())));
                    }
                }
                Some(crate::transport::mqtt::TlsFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_ca: t.client_ca.clone(),
                })
            }
        };
        let max_packet_size = u32::try_from(m.max_packet_size.0)
            .ok()
            .filter(|&n| n >= 1024 && n as usize <= crate::pipeline::MAX_PAYLOAD)
            .ok_or_else(|| invalid("mqtt.max_packet_size", "must be from 1 KiB to 255 MiB"))?;
        let max_inflight = std::num::NonZeroU16::new(m.max_inflight)
            .ok_or_else(|| invalid("mqtt.max_inflight", "must be above 0"))?;
        let max_queued = Some(m.max_queued)
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid("mqtt.max_queued", "must be above 0"))?;
        Ok(Some(crate::transport::mqtt::BrokerOptions {
            listen,
            tls_listen,
            ws_listen,
            tls,
            ack: m.ack,
            max_packet_size,
            max_inflight,
            max_connections: m.max_connections.max(1),
            connect_timeout: m.connect_timeout,
            session_expiry: m.session_expiry,
            max_topic_aliases: m.max_topic_aliases,
            max_queued,
        }))
    }
}

/// Checks grants as configured; `prefix` names where they are (`identity[0] (a).`).
fn grants(g: &GrantsConfig, prefix: &str) -> Result<Grants, ConfigError> {
    let source_pattern = |field: String, w: &str| {
        let ok = w == "*" || w.split('/').count() <= 2 && !w.split('/').any(str::is_empty);
        match ok {
            true => Ok(()),
            false => {
                Err(invalid(field, format!("'{w}' is not `dataset/source`, `dataset/*`, `dataset` or `*`")))
            }
        }
    };
    for w in &g.write {
        source_pattern(format!("{prefix}write"), w)?;
    }
    let mut bind = Vec::with_capacity(g.bind.len());
    for (i, b) in g.bind.iter().enumerate() {
        let field = |f: &str| format!("{prefix}bind[{i}].{f}");
        if b.column.is_empty() || !b.column.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(invalid(field("column"), format!("'{}' is not a column name", b.column)));
        }
        let value = Template::parse(&b.value).map_err(|e| invalid(field("value"), e))?;
        for s in &b.sources {
            source_pattern(field("sources"), s)?;
        }
        bind.push(GrantBinding { column: b.column.clone(), value, sources: b.sources.clone() });
    }
    Ok(Grants {
        write: g.write.clone(),
        query: g.query.clone(),
        subscribe: g.subscribe.clone(),
        metrics: g.metrics,
        bind,
    })
}

impl ServeConfig {
    /// Listeners on addresses other than loopback, for the warning that anonymous clients
    /// reach them.
    pub fn exposed(&self) -> Vec<SocketAddr> {
        let mqtt = self.mqtt.iter().flat_map(|m| m.listen.iter().chain(&m.tls_listen).chain(&m.ws_listen));
        let coap = self.coap.iter().flat_map(|c| c.listen.iter());
        self.http_listen.iter().chain(mqtt).chain(coap).copied().filter(|a| !a.ip().is_loopback()).collect()
    }
}

/// `humantime` durations ("1s", "500ms", "2m") in serde.
mod humantime_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("'{text}' is not a duration such as \"1s\" or \"500ms\": {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_is_open_on_loopback_and_a_file_is_closed_unless_it_says_so() {
        let open = RawConfig::default().check(false).unwrap();
        assert!(open.access.allows_anonymous());
        assert!(open.exposed().is_empty());
        let closed =
            RawConfig::from_toml("[http]\nlisten = [\"0.0.0.0:8080\"]\n").unwrap().check(true).unwrap();
        assert!(!closed.access.allows_anonymous());
        assert_eq!(closed.exposed().len(), 1);
    }

    #[test]
    fn printed_defaults_read_back() {
        let printed = RawConfig::default().to_toml();
        assert!(printed.contains("flush_interval = \"1s\""), "{printed}");
        let back = RawConfig::from_toml(&printed).unwrap();
        assert_eq!(back.to_toml(), printed);
    }

    #[test]
    fn the_ledger_index_memory_is_configured() {
        let toml = "[pipeline]\nledger_cache = \"1 MiB\"\nledger_write_buffer = \"2 MiB\"\nledger_recent_keys = \"3 MiB\"\n";
        let config = RawConfig::from_toml(toml).unwrap().check(false).unwrap();
        let index = &config.pipeline.writer.ledger_index;
        let mib = 1024 * 1024;
        assert_eq!(
            (index.store_cache_bytes, index.memtable_bytes, index.recent_keys_bytes),
            (mib, 2 * mib, 3 * mib as usize)
        );
        let printed = RawConfig::default().to_toml();
        assert!(printed.contains("ledger_recent_keys = \"8 MiB\""), "{printed}");
    }

    #[test]
    fn the_example_configuration_loads_with_its_bindings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.example.toml");
        let config = RawConfig::from_file(&path).unwrap().check(true).unwrap();
        let grants = |name: &str| {
            let identity = config.access.identities().iter().find(|i| i.name == name).unwrap();
            identity.grants.bind.iter().map(|b| (b.column.clone(), b.value.to_string())).collect::<Vec<_>>()
        };
        assert_eq!(grants("vendorA"), [("device_id".to_string(), "A-*".to_string())]);
        assert_eq!(grants("trackersA")[1], ("device_id".to_string(), "{client_id}".to_string()));
        assert_eq!(grants("vendorB"), [("imei".to_string(), "35693803*".to_string())]);
        assert!(!config.access.allows_anonymous());
        let printed = config.raw.to_toml();
        assert!(printed.contains("bind_captures = true") && printed.contains("{client_id}"), "{printed}");
        let again = RawConfig::from_toml(&printed).unwrap().check(true).unwrap();
        assert_eq!(again.raw.to_toml(), printed, "the printed configuration reads back the same");
    }

    #[test]
    fn a_binding_that_cannot_work_names_its_field() {
        let check = |bind: &str| {
            let toml = format!(
                "[[identity]]\nname = \"a\"\ntoken_sha256 = [\"{}\"]\nbind = [{bind}]\n",
                "0".repeat(64)
            );
            RawConfig::from_toml(&toml).unwrap().check(true).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let e = check(r#"{ column = "device_id", value = "{device}" }"#);
        assert!(e.starts_with("identity[0] (a).bind[0].value") && e.contains("not a placeholder"), "{e}");
        let e = check(r#"{ column = "device id", value = "A-*" }"#);
        assert!(e.contains("bind[0].column"), "{e}");
        let e = check(r#"{ column = "device_id", value = "A-*", sources = ["gps/a/b"] }"#);
        assert!(e.contains("bind[0].sources"), "{e}");
        assert_eq!(check(r#"{ column = "device_id", value = "{identity}" }"#), "");
    }

    #[test]
    fn errors_name_the_field() {
        let e = RawConfig::from_toml("[pipeline]\nflush_interval = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("soon"), "{e}");
        let e = RawConfig::from_toml("[http]\nport = 1\n").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let e = RawConfig::from_toml("[[route]]\npattern = \"a/#/b\"\ndataset = \"x\"\n")
            .unwrap()
            .check(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("route[0]") && e.contains("last segment"), "{e}");
        let e = RawConfig::from_toml("[[identity]]\nname = \"a\"\npassword_hash = \"plain\"\n")
            .unwrap()
            .check(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("identity[0] (a).password_hash"), "{e}");
        let e = RawConfig::from_toml("[http]\nlisten = [\"localhost\"]\n")
            .unwrap()
            .check(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("http.listen[0]"), "{e}");
    }

    #[test]
    fn coap_limits_that_would_not_work_name_their_field() {
        for (toml, field) in [
            ("[coap]\nmax_transfers_per_endpoint = 0\n", "coap.max_transfers_per_endpoint"),
            ("[coap]\nmax_exchanges_per_endpoint = 2\n", "coap.max_exchanges_per_endpoint"),
            ("[coap]\nmax_exchange_bytes = \"1 kB\"\n", "coap.max_exchange_bytes"),
        ] {
            let e = RawConfig::from_toml(toml).unwrap().check(true).err().map(|e| e.to_string());
            assert!(e.as_deref().unwrap_or_default().starts_with(field), "{toml}: {e:?}");
        }
    }
}
