//! Ingest coalescing: many small concurrent writes become few backend batches.
//!
//! Every metric write of the server (JSON, OTLP, remote write) goes through one queue, bounded
//! in samples. A few writer tasks ([`Limits::ingest_writers`]) each take what is queued, up to
//! [`Limits::batch_samples`], store it with one `save_metrics` call and answer each request
//! when the batch holding it is stored: an OK means stored. Several writers keep a store that
//! gains from concurrent calls (Redis, PostgreSQL) busy; requests in flight at the same time
//! have no order between them, and a request sent after another's OK is queued after it was
//! stored, so concurrent batches change no outcome a client can rely on. A request that would overfill the queue is answered 503 with `Retry-After` at
//! once; the queue never grows past its bound. Requests are validated before they are queued,
//! so one bad request never fails the batch it would have shared; a batch the backend rejects
//! fails every request in it with the backend's error, and none of them is acknowledged.
//!
//! The contract merges a series that appears twice in one batch, the later item winning
//! (conformance check `one_batch_with_a_series_twice_merges`), so concatenating requests in
//! arrival order stores what storing them one after the other would.
//!
//! [`Limits::batch_samples`]: crate::config::Limits::batch_samples
//! [`Limits::ingest_writers`]: crate::config::Limits::ingest_writers

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aimon::{Metric, StorageManager};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::telemetry::Telemetry;

/// One queued request.
struct Job {
    metrics: Vec<Metric>,
    samples: usize,
    reply: oneshot::Sender<aimon::Result<()>>,
}

/// The sending side of the queue; cloned into every handler.
#[derive(Clone)]
pub struct Ingest {
    sender: mpsc::UnboundedSender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    telemetry: Arc<Telemetry>,
}

/// The tasks that store batches; [`Flusher::finish`] waits until everything queued is stored.
pub struct Flusher(Vec<JoinHandle<()>>);

impl Flusher {
    /// Waits for the tasks, which end once every [`Ingest`] is dropped and the queue is empty.
    pub async fn finish(self) {
        for task in self.0 {
            let _ = task.await;
        }
    }
}

impl Ingest {
    /// The queue and its task, storing through `manager` (its metrics route).
    pub fn start(
        manager: Arc<StorageManager>,
        capacity: usize,
        batch_samples: usize,
        writers: usize,
        telemetry: Arc<Telemetry>,
    ) -> (Ingest, Flusher) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let queued = Arc::new(AtomicUsize::new(0));
        let tasks = (0..writers.max(1))
            .map(|_| {
                tokio::spawn(run(
                    Arc::clone(&manager),
                    Arc::clone(&receiver),
                    Arc::clone(&queued),
                    batch_samples.max(1),
                    Arc::clone(&telemetry),
                ))
            })
            .collect();
        (
            Ingest {
                sender,
                queued,
                capacity,
                telemetry,
            },
            Flusher(tasks),
        )
    }

    /// Stores `metrics` with whatever else is queued and answers, once they are stored, the
    /// number of samples accepted: stored, or dropped as already past the store's TTL (DESIGN.md
    /// rule 6; a coalesced batch does not say whose samples expired). 503 when the queue cannot
    /// take them now; 400 when they are invalid (nothing queued).
    pub async fn submit(&self, metrics: Vec<Metric>) -> Result<usize, ApiError> {
        aimon::validate::metrics(&metrics)?;
        let samples = metrics.iter().map(|m| m.values.len()).sum::<usize>();
        // Reserve room first: concurrent requests never overfill the queue together.
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                let after = queued.checked_add(samples)?;
                // An empty queue takes any request (the request limit bounds it), so a request
                // larger than the queue is not refused forever.
                (queued == 0 || after <= self.capacity).then_some(after)
            });
        if reserved.is_err() {
            self.telemetry.rejected_busy.increment(1);
            return Err(ApiError::busy(
                "the ingest queue is full; retry after the time in Retry-After",
            ));
        }
        self.telemetry.queue_depth.increment(samples as f64);
        let (reply, answer) = oneshot::channel();
        let job = Job {
            metrics,
            samples,
            reply,
        };
        if self.sender.send(job).is_err() {
            self.release(samples);
            return Err(ApiError::busy("the server is shutting down"));
        }
        match answer.await {
            Ok(result) => result.map(|()| samples).map_err(ApiError::from),
            Err(_) => Err(ApiError::busy("the server is shutting down")),
        }
    }

    fn release(&self, samples: usize) {
        self.queued.fetch_sub(samples, Ordering::AcqRel);
        self.telemetry.queue_depth.decrement(samples as f64);
    }
}

/// One writer: takes a batch (holding the queue only while it takes), stores it, answers.
async fn run(
    manager: Arc<StorageManager>,
    receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    queued: Arc<AtomicUsize>,
    batch_samples: usize,
    telemetry: Arc<Telemetry>,
) {
    loop {
        let (jobs, samples) = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut samples = first.samples;
            let mut jobs = vec![first];
            while samples < batch_samples {
                match receiver.try_recv() {
                    Ok(job) => {
                        samples += job.samples;
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            (jobs, samples)
        };
        let mut batch = Vec::with_capacity(jobs.iter().map(|j| j.metrics.len()).sum());
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs {
            batch.extend(job.metrics);
            replies.push(job.reply);
        }
        let result = manager.save_metrics(&batch, None).await;
        queued.fetch_sub(samples, Ordering::AcqRel);
        telemetry.queue_depth.decrement(samples as f64);
        telemetry.batches.increment(1);
        match &result {
            Ok(_) => telemetry.samples_ingested.increment(samples as u64),
            Err(_) => telemetry.backend_errors.increment(1),
        }
        for reply in replies {
            // The error is the backend's, for every request of the batch.
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(aimon::Error::new(e.kind(), e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }
}
