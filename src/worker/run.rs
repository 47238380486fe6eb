//! Running one reserved job: breaker and rate-limit checks, the handler under `catch_unwind` (so
//! a panic is caught), heartbeats while it runs, and settling the lease with the outcome.
//!
//! Every path ends the lease exactly once: ack, fail, release, or (lost lease) nothing.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::FutureExt;

use tokio::sync::watch;

use super::handler::{panic_message, Outcome};
use super::shared::{reached, Shared, ABORTING};
use crate::error::Error;
use crate::job::{FailAction, FailOutcome, Lease};

/// How a run ended, as far as the worker is concerned.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// Go on reserving.
    Next,
    /// The handler panicked: replace this worker.
    Panicked,
    /// The handler was aborted by shutdown.
    Aborted,
}

enum Result_ {
    Outcome(Outcome),
    Panic(String),
}

impl Shared {
    /// Gives a job back without counting the attempt.
    pub(crate) async fn give_back(&self, lease: &Lease, why: &str) {
        match self.queue.release(lease).await {
            Ok(()) => {
                self.c.released.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(id = %lease.job.id, why, "job given back");
            }
            Err(e) => {
                tracing::warn!(id = %lease.job.id, error = %e, "cannot give a job back; its lease will run out")
            }
        }
    }

    /// Runs one reserved job to its end.
    pub(crate) async fn run_one(
        self: &Arc<Self>,
        lease: Lease,
        stop: &mut watch::Receiver<u8>,
    ) -> RunEnd {
        let kind = lease.job.kind.clone();
        if !self.breaker_start(&kind) {
            self.give_back(&lease, "circuit breaker open").await;
            return RunEnd::Next;
        }
        if let Some(key) = &lease.job.key {
            if let Some(wait) = self.key_wait(&lease.job.queue, key) {
                // Hold the key back in the store, then give the job back: it stays the key's
                // head, so the key's order is kept while other keys run.
                if let Err(e) = self.queue.pause_key(&lease.job.queue, key, wait).await {
                    tracing::warn!(error = %e, "cannot pause a partition key");
                }
                self.give_back(&lease, "partition key rate limit").await;
                self.breaker_abandon(&kind);
                return RunEnd::Next;
            }
        }
        if let Some(lim) = &self.queue_limit {
            loop {
                let r = lim.lock().take(&lease.job.queue, self.now());
                let Err(wait) = r else { break };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = reached(stop, ABORTING) => {
                        self.give_back(&lease, "shutdown").await;
                        self.breaker_abandon(&kind);
                        return RunEnd::Aborted;
                    }
                }
            }
        }
        if let Some(tx) = self.batch_tx.get(&kind) {
            if let Err(e) = tx.send(lease).await {
                self.give_back(&e.0, "batcher stopped").await;
            }
            return RunEnd::Next;
        }
        let Some(handler) = self.handlers.get(&kind).or(self.default.as_ref()).cloned() else {
            let msg = format!("no handler is registered for kind `{kind}`; register one (or a default handler) and requeue the dead letter");
            self.settle(&lease, Outcome::GiveUp(msg)).await;
            return RunEnd::Next;
        };
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.update_gauges();
        let job = lease.job.clone();
        // Polled in place (no task per job); a panic is caught here and dropping the future
        // (abort) cancels the handler.
        // A handler may panic while building its future, too (a hand-written `handle`).
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(job))) {
            Ok(f) => f,
            Err(p) => {
                let p: Box<dyn std::any::Any + Send> = p;
                Box::pin(async move { std::panic::resume_unwind(p) })
            }
        };
        let mut task = Box::pin(AssertUnwindSafe(fut).catch_unwind());
        let beat = (self.lease / 3).max(std::time::Duration::from_millis(10));
        let mut next_beat = tokio::time::Instant::now() + beat;
        // The job's own timeout, else the pool's; none: never fires.
        let limit = lease.job.timeout.or(self.timeout);
        let timer = async move {
            match limit {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        let end = loop {
            tokio::select! {
                r = &mut task => break match r {
                    Ok(o) => Result_::Outcome(o),
                    Err(p) => Result_::Panic(panic_message(&*p)),
                },
                _ = &mut timer => {
                    // Dropping the handler's future cancels it (a shell command's process
                    // group is signalled as its guard drops).
                    drop(task);
                    let d = limit.unwrap_or_default();
                    tracing::warn!(id = %lease.job.id, kind = %kind, "handler timed out after {}", humantime::format_duration(d));
                    break Result_::Outcome(Outcome::Retry(format!(
                        "timed out after {}",
                        humantime::format_duration(d)
                    )));
                }
                _ = tokio::time::sleep_until(next_beat) => {
                    next_beat = tokio::time::Instant::now() + beat;
                    match self.queue.heartbeat(&lease, self.lease).await {
                        Ok(_) => {}
                        Err(Error::LeaseLost { .. }) => {
                            self.c.leases_lost.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(id = %lease.job.id, "lease lost while the handler ran; the job will run again");
                            self.breaker_abandon(&kind);
                            self.busy.fetch_sub(1, Ordering::Relaxed);
                            return RunEnd::Next;
                        }
                        Err(Error::Cancelled { .. }) => {
                            // Cancelled while it ran: stop the handler; the fail drops the job.
                            drop(task);
                            tracing::info!(id = %lease.job.id, "job cancelled while it ran; handler stopped");
                            if let Err(e) = self
                                .queue
                                .fail_with(&lease, "cancelled while running", FailAction::GiveUp)
                                .await
                            {
                                self.settle_error(&lease, e);
                            }
                            self.breaker_abandon(&kind);
                            self.busy.fetch_sub(1, Ordering::Relaxed);
                            self.update_gauges();
                            return RunEnd::Next;
                        }
                        Err(e) => tracing::warn!(id = %lease.job.id, error = %e, "heartbeat failed"),
                    }
                }
                _ = reached(stop, ABORTING) => {
                    drop(task);
                    self.give_back(&lease, "shutdown after the grace period").await;
                    self.returned.lock().push(lease.job.id);
                    self.breaker_abandon(&kind);
                    self.busy.fetch_sub(1, Ordering::Relaxed);
                    return RunEnd::Aborted;
                }
            }
        };
        self.busy.fetch_sub(1, Ordering::Relaxed);
        self.update_gauges();
        match end {
            Result_::Outcome(o) => {
                self.settle(&lease, o).await;
                RunEnd::Next
            }
            Result_::Panic(msg) => {
                self.c.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id = %lease.job.id, kind = %kind, panic = %msg, "handler panicked; the worker is replaced");
                self.settle(&lease, Outcome::Retry(format!("handler panicked: {msg}")))
                    .await;
                RunEnd::Panicked
            }
        }
    }

    /// Acks or fails a lease according to `o`, and tells the breaker.
    pub(crate) async fn settle(&self, lease: &Lease, o: Outcome) {
        let kind = &lease.job.kind;
        let (error, action, verdict) = match o {
            Outcome::Done => {
                match self.queue.ack(lease).await {
                    Ok(()) => {
                        self.c.completed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.settle_error(lease, e),
                }
                self.breaker_record(kind, Some(true));
                return;
            }
            Outcome::Retry(e) => (e, FailAction::Retry, Some(false)),
            Outcome::RetryAfter(d, e) => {
                // A server's retry-after is outside input: held to the longest accepted delay.
                let d = d.min(crate::duration::MAX_DURATION);
                match &lease.job.key {
                    Some(key) => {
                        if let Err(err) = self.queue.pause_key(&lease.job.queue, key, d).await {
                            tracing::warn!(error = %err, "cannot pause a partition key");
                        }
                    }
                    None => self.pause_kind(kind, d),
                }
                (e, FailAction::RetryAfter(d), None)
            }
            // The service answered: a permanent error says nothing about an outage.
            Outcome::GiveUp(e) => (e, FailAction::GiveUp, Some(true)),
            Outcome::Postpone(d, e) => {
                let d = d.min(crate::duration::MAX_DURATION);
                match self.queue.postpone(lease, d, e.clone()).await {
                    Ok(out) => {
                        self.c.released.fetch_add(1, Ordering::Relaxed);
                        if lease.job.key.is_none() {
                            self.pause_kind(kind, d);
                        }
                        if out == FailOutcome::Dead {
                            self.c.dead.fetch_add(1, Ordering::Relaxed);
                        }
                        self.breaker_record(kind, None);
                        return;
                    }
                    // A backend without postpone: a retry-after that counts the attempt.
                    Err(Error::Unsupported { .. }) => {
                        return Box::pin(self.settle(lease, Outcome::RetryAfter(d, e))).await;
                    }
                    Err(err) => {
                        self.settle_error(lease, err);
                        self.breaker_record(kind, None);
                        return;
                    }
                }
            }
        };
        match self.queue.fail_with(lease, error, action).await {
            Ok(out) => {
                self.c.failed.fetch_add(1, Ordering::Relaxed);
                if out == FailOutcome::Dead {
                    self.c.dead.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => self.settle_error(lease, e),
        }
        self.breaker_record(kind, verdict);
    }

    /// How long a partition key must wait before its next start (the per-key limit, then the
    /// limits of the key rules that pick it), or `None` to start now.
    fn key_wait(&self, queue: &str, key: &str) -> Option<std::time::Duration> {
        let scoped = format!("{queue}\u{0}{key}");
        let now = self.now();
        if let Some(lim) = &self.key_limit {
            if let Err(wait) = lim.lock().take(&scoped, now) {
                return Some(wait);
            }
        }
        for (rule, lim) in &self.key_rules {
            if (rule.applies)(key) {
                if let Err(wait) = lim.lock().take(&scoped, now) {
                    return Some(wait);
                }
            }
        }
        None
    }

    fn settle_error(&self, lease: &Lease, e: Error) {
        if matches!(e, Error::LeaseLost { .. }) {
            self.c.leases_lost.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(id = %lease.job.id, error = %e, "cannot record a job's result; it will run again when its lease runs out");
    }
}
