//! `WriterThread`: a `DatasetWriter` on a thread of its own, so that async code (a server's
//! tasks) can ingest without blocking its runtime's workers on locks, Parquet and fsync.
//! Requests queue in a bounded channel; one commit runs at a time, as the dataset's lock
//! allows anyway.

use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::error::IngestError;
use super::request::{IngestOptions, IngestOutcome, IngestRequest};
use super::writer::DatasetWriter;

/// Requests that may wait for the writer before senders are made to wait.
const QUEUE: usize = 16;

struct Job {
    request: IngestRequest,
    options: IngestOptions,
    reply: oneshot::Sender<Result<IngestOutcome, IngestError>>,
}

pub struct WriterThread {
    dataset: String,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl WriterThread {
    pub fn spawn(writer: DatasetWriter) -> Result<WriterThread, IngestError> {
        let dataset = writer.dataset().name().to_string();
        let (jobs, mut queue) = mpsc::channel::<Job>(QUEUE);
        let mut writer = writer;
        let thread = std::thread::Builder::new()
            .name(format!("writer:{dataset}"))
            .spawn(move || {
                while let Some(job) = queue.blocking_recv() {
                    let result = writer.ingest(job.request, &job.options);
                    // The sender may have gone (a client hung up): the commit stands.
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| IngestError::Internal(format!("cannot start the writer of '{dataset}': {e}")))?;
        Ok(WriterThread { dataset, jobs: Some(jobs), thread: Some(thread) })
    }

    /// Prepares and commits `request` on the writer's thread.
    pub async fn ingest(
        &self,
        request: IngestRequest,
        options: IngestOptions,
    ) -> Result<IngestOutcome, IngestError> {
        let stopped =
            || IngestError::Internal(format!("the writer of dataset '{}' has stopped", self.dataset));
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        let (reply, outcome) = oneshot::channel();
        jobs.send(Job { request, options, reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Lets the queued requests finish, then stops the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(dataset = %self.dataset, "the writer thread panicked");
            }
        }
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.stop();
    }
}
