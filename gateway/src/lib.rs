//! odf-gateway: a field gateway that commits device telemetry into Open Data Fabric datasets.
//!
//! # Layout
//!
//! Data flows one way, and no module imports one above it:
//! transport -> routes -> pipeline -> ingest -> store, all over the ODF model.
//!
//! - [`odf`]: the ODF model. Metadata events and blocks, DatasetSnapshot manifests, the
//!   FlatBuffers block codec with its hashes, `did:odf` identities, the chain rules.
//! - [`store`]: one dataset on disk in the layout ODF tools read (`refs/head`, `blocks/`,
//!   `data/`, `checkpoints/`); atomic commits; reading the chain back; `verify`.
//! - [`ingest`]: the push ingest engine. Readers (NdJson, Json, CSV, CBOR) coercing to the
//!   source's schema, DataFusion preprocessing, merge strategies with their state, the
//!   Parquet slice writer and the commit.
//! - [`query`]: reading committed data back: `tail`, and SQL over every dataset.
//! - `cli`: the `odf-gateway` subcommands; thin, each calls the library.
//!
//! Still to come, in the places DESIGN.md gives them: `pipeline` (write-ahead log,
//! batching), `transport` (MQTT, CoAP, HTTP), `routes` and `config`.

pub mod cli;
pub mod ingest;
pub mod odf;
pub mod query;
pub mod store;
