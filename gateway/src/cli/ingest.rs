//! `odf-gateway ingest`: push files or stdin into a dataset's push source (like `kamu ingest`).

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};

use super::{Context, output, parse_time};
use crate::ingest::{
    Committed, DatasetWriter, IngestError, IngestOptions, IngestRequest, InputFormat, MessageStream,
    WriterOptions,
};
use crate::store::IoError;

/// Push data from files or stdin into a dataset, through one of its push sources.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset.
    dataset: String,

    /// Files to ingest (folders too, with --recursive). One commit for all of them.
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    files: Vec<PathBuf>,

    /// Read the data from standard input.
    #[arg(long)]
    stdin: bool,

    /// The push source; needed when the dataset has several.
    #[arg(long)]
    source_name: Option<String>,

    /// Format of the input (ndjson, json, csv, cbor), when it is not the source's own and the
    /// file extension does not say.
    #[arg(long, value_parser = |s: &str| s.parse::<InputFormat>())]
    input_format: Option<InputFormat>,

    /// Event time (RFC 3339) for records whose data has none; else the system time.
    #[arg(long, value_parser = parse_time)]
    event_time: Option<DateTime<Utc>>,

    /// Ingest the files of the folders given, and of their sub-folders.
    #[arg(short, long)]
    recursive: bool,

    /// Commit the records that fit, and list the ones that did not (else commit nothing).
    #[arg(long)]
    skip_bad_records: bool,
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let dataset = ctx.data_dir()?.open_dataset(&args.dataset)?;
    let files = if args.stdin { Vec::new() } else { files(&args.files, args.recursive)? };
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = output::progress(total, "ingest", output::Counting::Bytes);
    // Inputs are read as streams, a chunk of records at a time, and files opened one at a
    // time: memory and open files stay bounded whatever the input.
    let stream = |input: Box<dyn Read + Send>, origin: String, format: Option<InputFormat>| {
        MessageStream::new(BufReader::with_capacity(1 << 20, bar.wrap_read(input)), origin)
            .with_format(format)
    };
    let stdin =
        args.stdin.then(|| Ok(stream(Box::new(std::io::stdin()), "<stdin>".into(), args.input_format)));
    let opened = files.into_iter().map(|file| {
        let opened = std::fs::File::open(&file)
            .map_err(|error| IngestError::Io(IoError { action: "open", path: file.clone(), error }))?;
        let format = args.input_format.or_else(|| InputFormat::from_extension(&file));
        Ok(stream(Box::new(opened), file.display().to_string(), format))
    });
    let streams = stdin.into_iter().chain(opened);

    let request =
        IngestRequest { source: args.source_name.clone(), event_time: args.event_time, ..Default::default() };
    let options = IngestOptions { system_time: ctx.system_time(), skip_bad_records: args.skip_bad_records };
    let started = std::time::Instant::now();
    let mut writer = DatasetWriter::open(dataset, WriterOptions::default())?;
    let result = writer.prepare_streams(request, streams, &options).and_then(|prepared| prepared.commit());
    let bytes = bar.position();
    bar.finish_and_clear();
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(IngestError::BadRecords(rejected)) => {
            for e in &rejected {
                eprintln!("error: {e}");
            }
            let hint = match args.skip_bad_records {
                // Only a Snapshot source refuses to skip: its skipped rows would read as deletions.
                true => "a Snapshot source takes a whole snapshot or nothing",
                false => "--skip-bad-records commits the rest",
            };
            bail!("{} record(s) rejected; nothing was committed ({hint})", rejected.len());
        }
        Err(e) => return Err(e).with_context(|| format!("ingest into '{}'", args.dataset)),
    };
    for e in &outcome.rejected {
        eprintln!("skipped: {e}");
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-6);
    let rate = format!(
        "{} records read in {seconds:.2} s: {:.0} rows/s, {:.1} MB/s",
        outcome.records_read,
        outcome.records_read as f64 / seconds,
        bytes as f64 / 1e6 / seconds
    );
    match outcome.committed {
        Some(Committed { offsets: Some(offsets), records, head, .. }) => eprintln!(
            "Dataset updated: {records} record(s) via source '{}' at offsets {}..={}, head {head} ({rate})",
            outcome.source, offsets.start, offsets.end
        ),
        _ => {
            eprintln!("Dataset up-to-date: {} record(s) read, nothing new to commit", outcome.records_read)
        }
    }
    Ok(())
}

fn files(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, recursive, true, &mut files)?;
    }
    Ok(files)
}

fn collect(path: &Path, recursive: bool, given: bool, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    if !path.is_dir() {
        // The system's own reason: no such file, a symbolic link loop, no permission.
        std::fs::metadata(path).with_context(|| path.display().to_string())?;
        files.push(path.to_owned());
        return Ok(());
    }
    if !given && !recursive {
        return Ok(());
    }
    if given && !recursive {
        bail!("{} is a folder; pass --recursive to ingest the files in it", path.display());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("list {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        collect(&entry, recursive, false, files)?;
    }
    Ok(())
}
