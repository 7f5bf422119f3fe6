//! device-sim: simulated devices for odf-gateway.
//!
//! - [`gps`]: GPS trackers moving around a city, reporting position, speed, heading and
//!   battery with a per-device sequence number, in the payload format of each vendor the
//!   `gps` dataset has a push source for (`vendorA` NdJson, `vendorB` CSV, `vendorC` CBOR).
//!
//! Traffic is deterministic for a seed, so a test or a benchmark can replay it exactly. The
//! network drivers (MQTT, CoAP, HTTP publishers and load profiles) come with the gateway's
//! transports.

pub mod gps;
