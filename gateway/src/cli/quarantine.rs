//! `odf-gateway quarantine list|show|purge <dataset>`: what the gateway could not commit.

use chrono::{DateTime, Utc};

use super::{Context, output};
use crate::pipeline::{Quarantine, payload_for_people};

/// Payloads the gateway accepted no record of, or records a later step refused, kept with
/// the route, the sender and the reasons.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// One line per entry: id, time, source, sender, how many records were rejected, why.
    List {
        dataset: String,
        #[arg(short, long, value_enum, default_value_t = output::Format::Table)]
        output_format: output::Format,
    },
    /// One entry whole: its reasons and its payload (as text, or base64 if binary).
    Show { dataset: String, id: String },
    /// Remove every entry, or those received before a time.
    Purge {
        dataset: String,
        #[arg(long, value_parser = super::parse_time)]
        before: Option<DateTime<Utc>>,
    },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let data_dir = ctx.data_dir()?;
    let open = |dataset: &str| -> anyhow::Result<Quarantine> {
        // The dataset must exist: a typo should not read as an empty quarantine.
        data_dir.open_dataset(dataset)?;
        Ok(Quarantine::new(data_dir.root(), dataset, usize::MAX, u64::MAX))
    };
    match args.command {
        Command::List { dataset, output_format } => {
            let quarantine = open(&dataset)?;
            let entries = quarantine.list()?;
            match output_format {
                output::Format::Json => {
                    for entry in &entries {
                        match entry {
                            Ok(summary) => output::line(serde_json::to_string(summary)?)?,
                            Err(e) => eprintln!("warning: {e}"),
                        }
                    }
                }
                output::Format::Table => {
                    let mut table = output::table(&[
                        "Id",
                        "Time",
                        "Source",
                        "Sender",
                        "Rejected",
                        "Accepted",
                        "First reason",
                    ]);
                    for entry in &entries {
                        match entry {
                            Ok(s) => {
                                table.add_row(vec![
                                    s.id.clone(),
                                    s.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                                    s.source.clone().unwrap_or_default(),
                                    s.sender.clone(),
                                    s.rejected.to_string(),
                                    s.accepted.to_string(),
                                    output::cut(&s.first_reason, 120),
                                ]);
                            }
                            Err(e) => eprintln!("warning: {e}"),
                        }
                    }
                    output::line(table)?;
                    if entries.is_empty() {
                        eprintln!("The quarantine of '{dataset}' is empty");
                    }
                }
            }
        }
        Command::Show { dataset, id } => {
            let entry = open(&dataset)?.get(&id)?;
            output::line(format!("id:       {}", entry.id))?;
            output::line(format!(
                "time:     {}",
                entry.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ))?;
            output::line(format!("source:   {}", entry.source.unwrap_or_default()))?;
            output::line(format!("route:    {}", entry.route))?;
            output::line(format!("sender:   {}", entry.sender))?;
            output::line(format!(
                "format:   {}",
                entry.format.unwrap_or_else(|| "(the source's own)".into())
            ))?;
            output::line(format!("accepted: {} record(s)", entry.accepted))?;
            output::line("reasons:")?;
            for reason in &entry.reasons {
                output::line(format!("  - {reason}"))?;
            }
            output::line(format!("payload ({} bytes):", entry.payload.len()))?;
            output::line(payload_for_people(&entry.payload))?;
        }
        Command::Purge { dataset, before } => {
            let removed = open(&dataset)?.purge(before)?;
            eprintln!(
                "Removed {removed} entr{} from the quarantine of '{dataset}'",
                if removed == 1 { "y" } else { "ies" }
            );
        }
    }
    Ok(())
}
