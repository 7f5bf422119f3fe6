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
//! - `cli`: the `odf-gateway` subcommands; thin, each calls the library.
//!
//! Still to come, in the places DESIGN.md gives them: `ingest` (readers, preprocess, merge,
//! slice writer), `pipeline` (write-ahead log, batching), `transport` (MQTT, CoAP, HTTP),
//! `routes`, `query` and `config`.

pub mod cli;
pub mod odf;
pub mod store;
