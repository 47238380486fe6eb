//! Batch handlers: jobs of one kind collected into batches closed by size or by time (the
//! timer starts with the batch's first job, like `StreamExt::chunks_timeout`); every job of a
//! batch is acked or failed on its own.
//!
//! Invariants: a lease handed to the batcher is settled exactly once (by its own outcome), or
//! released on shutdown. Leases are heartbeated while the batch handler runs. A panic fails
//! every job of the batch with the panic message.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::handler::{panic_message, Outcome};
use super::shared::{reached, Shared, ABORTING, DRAINING};
use crate::job::{Job, Lease};

/// When a batch is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most jobs per batch.
    pub size: usize,
    /// Longest wait after the batch's first job.
    pub timeout: Duration,
}

/// Runs a batch of jobs of one kind; returns one outcome per job, in the same order (a missing
/// outcome is a failed attempt).
#[async_trait]
pub trait BatchHandler: Send + Sync + 'static {
    /// Runs a batch.
    async fn handle_batch(&self, jobs: Vec<Job>) -> Vec<Outcome>;
}

pub(crate) struct Batcher {
    pub kind: String,
    pub handler: Arc<dyn BatchHandler>,
    pub cfg: BatchConfig,
    pub rx: mpsc::Receiver<Lease>,
}

impl Batcher {
    pub(crate) async fn run(mut self, shared: Arc<Shared>) {
        let mut stop = shared.stop.subscribe();
        'outer: loop {
            let first = tokio::select! {
                l = self.rx.recv() => l,
                _ = reached(&mut stop, DRAINING) => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            while batch.len() < self.cfg.size {
                tokio::select! {
                    l = self.rx.recv() => match l {
                        Some(l) => batch.push(l),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = reached(&mut stop, DRAINING) => {
                        for l in &batch {
                            shared.give_back(l, "shutdown before the batch ran").await;
                        }
                        break 'outer;
                    }
                }
            }
            self.run_batch(&shared, batch, &mut stop).await;
        }
        self.rx.close();
        while let Ok(l) = self.rx.try_recv() {
            shared.give_back(&l, "shutdown before the batch ran").await;
        }
    }

    async fn run_batch(
        &self,
        shared: &Arc<Shared>,
        batch: Vec<Lease>,
        stop: &mut tokio::sync::watch::Receiver<u8>,
    ) {
        let jobs: Vec<Job> = batch.iter().map(|l| l.job.clone()).collect();
        let h = self.handler.clone();
        let mut task = tokio::spawn(async move { h.handle_batch(jobs).await });
        let beat = (shared.lease / 3).max(Duration::from_millis(10));
        let outcomes = loop {
            tokio::select! {
                r = &mut task => break match r {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = if e.is_panic() {
                            format!("batch handler panicked: {}", panic_message(&*e.into_panic()))
                        } else {
                            format!("batch handler task ended: {e}")
                        };
                        tracing::error!(kind = %self.kind, error = %msg, "batch failed");
                        vec![Outcome::Retry(msg); batch.len()]
                    }
                },
                _ = tokio::time::sleep(beat) => {
                    for l in &batch {
                        let _ = shared.queue.heartbeat(l, shared.lease).await;
                    }
                }
                _ = reached(stop, ABORTING) => {
                    task.abort();
                    for l in &batch {
                        shared.give_back(l, "shutdown after the grace period").await;
                        shared.returned.lock().push(l.job.id);
                    }
                    return;
                }
            }
        };
        let n = outcomes.len();
        let mut outcomes = outcomes.into_iter();
        for l in &batch {
            let o = outcomes.next().unwrap_or_else(|| {
                Outcome::Retry(format!(
                    "batch handler returned {n} outcomes for {} jobs",
                    batch.len()
                ))
            });
            shared.settle(l, o).await;
        }
    }
}
