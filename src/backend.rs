//! The storage-independent queue contract.
//!
//! [`Backend`] is what [`crate::Queue`] calls. The local store (journal + sled, [`crate::local`])
//! implements it; the Redis backend (feature `redis`) implements the same trait, and the
//! conformance tests in `tests/conformance.rs` run against every implementation.
//!
//! Contract (README "Guarantees"): an `Ok` from `enqueue`, `ack`, `fail`, `requeue_dead`,
//! `purge_dead` and `set_paused` means the change is durable under the backend's durability
//! setting; `reserve` hands out at most one lease per job at a time, picking the highest
//! priority, then the earliest ready time, then the lowest id, among the requested queues;
//! jobs sharing a partition key run one at a time in enqueue order.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::error::Result;
use crate::job::{
    CancelOutcome, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease, LeaseToken,
    NewJob, Selection, Timestamp,
};
use crate::stats::{Event, Stats};

/// What `reserve` should take.
#[derive(Clone, Debug, PartialEq)]
pub struct ReserveRequest {
    /// Queues to take from (the best job across all of them wins).
    pub queues: Vec<String>,
    /// Kinds not to take now (e.g. while their circuit breaker is open).
    pub exclude_kinds: Vec<String>,
    /// Lease length; `None` takes the store's default (30 s).
    pub lease: Option<Duration>,
    /// How long to wait for a job when none is ready (`None` or zero: answer at once).
    pub wait: Option<Duration>,
}

impl ReserveRequest {
    /// A request for one or more queues with defaults (no wait, default lease).
    pub fn new<I, S>(queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ReserveRequest {
            queues: queues.into_iter().map(Into::into).collect(),
            exclude_kinds: Vec::new(),
            lease: None,
            wait: None,
        }
    }
    /// Waits up to `d` for a job.
    pub fn wait(mut self, d: Duration) -> Self {
        self.wait = Some(d);
        self
    }
    /// Sets the lease length.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = Some(d);
        self
    }
    /// Skips jobs of these kinds.
    pub fn exclude_kinds<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exclude_kinds = kinds.into_iter().map(Into::into).collect();
        self
    }
}

/// A queue store. All methods are cancel-safe in the sense that dropping a future never loses an
/// acknowledged write; a `reserve` dropped before it returns gives its job back.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Enqueues jobs atomically: all or none, even across a crash. Duplicates (live dedup key)
    /// enqueue nothing and return the first job's id with `duplicate = true`.
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;

    /// Leases the best ready job of the requested queues, waiting up to `req.wait`.
    async fn reserve(&self, req: ReserveRequest) -> Result<Option<Lease>>;

    /// Marks a leased job completed.
    async fn ack(&self, id: JobId, token: LeaseToken) -> Result<()>;

    /// Records a failed attempt and schedules a retry or dead-letters the job.
    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: String,
        action: FailAction,
    ) -> Result<FailOutcome>;

    /// Extends a lease to `lease` from now; returns the new expiry.
    async fn heartbeat(&self, id: JobId, token: LeaseToken, lease: Duration) -> Result<Timestamp>;

    /// Gives a leased job back to waiting without counting the attempt (shutdown).
    async fn release(&self, id: JobId, token: LeaseToken) -> Result<()>;

    /// Looks a job up.
    async fn get(&self, id: JobId) -> Result<Option<Job>>;

    /// Lists up to `limit` jobs of a queue in one state (all states if `None`), in the order they
    /// would run (completed and dead: most recent first).
    async fn list(&self, queue: &str, state: Option<JobState>, limit: usize) -> Result<Vec<Job>>;

    /// Counts per state per queue.
    async fn stats(&self) -> Result<Stats>;

    /// Puts dead letters back to waiting (attempts reset, history kept); returns how many.
    async fn requeue_dead(&self, queue: &str, which: Selection) -> Result<u64>;

    /// Deletes dead letters; returns how many.
    async fn purge_dead(&self, queue: &str, which: Selection) -> Result<u64>;

    /// Pauses (no reserves) or resumes a queue. Durable.
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()>;

    /// Holds back the jobs of one partition key until `for_` from now (rate limits, 429s).
    /// Not durable: a restart lifts it.
    async fn pause_key(&self, queue: &str, key: &str, for_: Duration) -> Result<()>;

    /// Cancels jobs by id, each on its own (SPEC §6 `durq cancel`): a waiting, delayed or dead
    /// job is deleted (with its dedup key); an active one is dropped when its attempt ends
    /// (ack, fail, release or lease expiry) instead of completing or retrying. Unknown and
    /// completed ids are reported, not errors. Durable; idempotent.
    async fn cancel(&self, ids: Vec<JobId>) -> Result<Vec<CancelOutcome>> {
        let _ = ids;
        Err(crate::Error::Unsupported { what: "cancel" })
    }

    /// Cancels every job of `queue` in `state` (waiting, delayed, active or dead), optionally
    /// only of one kind; returns how many were (or will be) cancelled.
    async fn cancel_where(&self, queue: &str, state: JobState, kind: Option<&str>) -> Result<u64> {
        let _ = (queue, state, kind);
        Err(crate::Error::Unsupported {
            what: "cancel by filter",
        })
    }

    /// Ends a leased attempt without counting it: the job runs again after `delay` (a
    /// server's retry-after) and its partition key waits with it. Past the queue's total
    /// postponement budget per job it counts as a failed attempt (`FailAction::RetryAfter`).
    async fn postpone(
        &self,
        id: JobId,
        token: LeaseToken,
        delay: Duration,
        reason: String,
    ) -> Result<FailOutcome> {
        let _ = (id, token, delay, reason);
        Err(crate::Error::Unsupported { what: "postpone" })
    }

    /// Subscribes to the event stream.
    fn subscribe(&self) -> broadcast::Receiver<Event>;

    /// Flushes and stops; later calls fail with [`crate::Error::Closed`].
    async fn shutdown(&self) -> Result<()>;
}
