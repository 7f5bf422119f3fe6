//! odf-gateway: a field gateway that commits device telemetry into Open Data Fabric datasets.
//!
//! # Layout
//!
//! Data flows one way, and no module imports one above it:
//! transport -> intake -> pipeline -> ingest -> store, all over the ODF model.
//!
//! - [`odf`]: the ODF model. Metadata events and blocks, DatasetSnapshot manifests, the
//!   FlatBuffers block codec with its hashes, `did:odf` identities, the chain rules.
//! - [`store`]: one dataset on disk in the layout ODF tools read (`refs/head`, `blocks/`,
//!   `data/`, `checkpoints/`); atomic commits; reading the chain back; `verify`.
//! - [`ingest`]: the push ingest engine. Readers (NdJson, Json, CSV, CBOR) coercing to the
//!   source's schema, DataFusion preprocessing, merge strategies with their state, the
//!   Parquet slice writer and the commit.
//! - [`query`]: reading committed data back: `tail`, and SQL over every dataset.
//! - [`pipeline`]: per-dataset write-ahead log (group commit), batching, commits with the
//!   log position recorded, replay after a crash, backpressure, the quarantine.
//! - [`intake`]: the one way in for every transport: route, grants, dataset and push source,
//!   then the payload to the pipeline; or why not, for the transport to word.
//! - [`routes`]: a topic or path to a (dataset, source) and captured columns, for every
//!   transport.
//! - [`access`]: identities, their secrets and what they may write, query or subscribe to.
//! - [`transport`]: the listeners (HTTP, MQTT, CoAP); each turns a request into a call to the
//!   intake and its outcome into a reply in its protocol's terms.
//! - [`config`]: the `serve` configuration (TOML), with defaults that need no file.
//! - [`sync`]: pushing datasets to ODF repositories (S3, folders) and pulling them back.
//! - [`serve`]: wiring it all together for `odf-gateway serve`.
//! - `cli`: the `odf-gateway` subcommands; thin, each calls the library.

pub mod access;
pub mod cli;
pub mod config;
pub mod ingest;
pub mod intake;
pub mod memory;
pub mod odf;
pub mod pipeline;
pub mod query;
pub mod routes;
pub mod serve;
pub mod store;
pub mod sync;
pub mod transport;
