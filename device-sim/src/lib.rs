//! device-sim: simulated GPS trackers for odf-gateway, for demos, load tests and
//! exactly-once checks.
//!
//! - [`movement`]: vehicles, bicycles and pedestrians moving on smooth paths around a centre,
//!   with GPS noise, lost fixes and a draining battery, reproducible from a seed.
//! - [`gps`]: the three vendors of the `gps` dataset (`schemas/gps.yaml`): their trackers,
//!   reporting periods and payload formats (vendorA NdJson over MQTT, vendorB CSV over HTTP,
//!   vendorC CBOR over CoAP).
//! - [`send`]: one connection per device to a gateway (or any MQTT broker, HTTP or CoAP
//!   server), one message in flight, and what came of it.
//! - [`runner`]: the fleet in real time (offline spells and backlog bursts, duplicates,
//!   malformed payloads) or under load; [`stats`] counts it, [`record`] keeps what was
//!   acknowledged, and [`verify`] checks that against the dataset.
//! - [`bench`]: the same load against the gateway and against a plain peer of each protocol,
//!   one table of figures and ratios.

pub mod bench;
pub mod gps;
pub mod movement;
pub mod record;
pub mod runner;
pub mod send;
pub mod stats;
pub mod verify;
