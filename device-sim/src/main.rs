//! `device-sim`: simulated devices for odf-gateway. The traffic generators arrive with the
//! transports; until then this binary only reports that.

use clap::Parser;

/// Simulated GPS trackers and sensors that publish to odf-gateway.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    Args::parse();
    anyhow::bail!("device-sim has no traffic generators yet; they come with the MQTT/CoAP/HTTP transports")
}
