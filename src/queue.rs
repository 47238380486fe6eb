//! [`Queue`]: the typed, async handle users hold, and its [`QueueBuilder`].
//!
//! A `Queue` is cheap to clone (an `Arc` around a [`Backend`]). Opening a local store:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), durq::Error> {
//! use durq::{NewJob, Queue, FsyncPolicy};
//! let dir = tempfile::tempdir().unwrap();
//! let q = Queue::builder(dir.path()).fsync(FsyncPolicy::Always).open().await?;
//! let e = q.enqueue(NewJob::new("emails", b"{}".to_vec())).await?;
//! let lease = q.reserve(&["emails"]).await?.expect("a job is ready");
//! assert_eq!(lease.job.id, e.id);
//! q.ack(&lease).await?;
//! q.shutdown().await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::backend::{Backend, ReserveRequest};
use crate::error::Result;
use crate::job::{
    CancelOutcome, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease, NewJob,
    RetryPolicy, Selection, Timestamp,
};
use crate::options::{FsyncPolicy, Options, QueueConfig};
use crate::stats::{Event, Stats};

/// A handle to a queue store (local by default, Redis with the `redis` feature).
#[derive(Clone)]
pub struct Queue {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Opens (creating if needed) a local store in `dir` with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Queue> {
        Queue::builder(dir).open().await
    }

    /// A builder for a local store in `dir`.
    pub fn builder(dir: impl AsRef<Path>) -> QueueBuilder {
        QueueBuilder {
            dir: dir.as_ref().to_path_buf(),
            options: Options::default(),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// Wraps any backend.
    pub fn from_backend(backend: Arc<dyn Backend>) -> Queue {
        Queue { backend }
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Enqueues one job.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let mut v = self.backend.enqueue(vec![job]).await?;
        v.pop()
            .ok_or_else(|| crate::Error::Backend("enqueue returned no result".into()))
    }

    /// Enqueues jobs atomically (all or nothing, even across a crash).
    pub async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.backend.enqueue(jobs).await
    }

    /// Leases the best ready job of `queues`, or `None` at once if none is ready.
    pub async fn reserve(&self, queues: &[&str]) -> Result<Option<Lease>> {
        self.backend
            .reserve(ReserveRequest::new(queues.iter().copied()))
            .await
    }

    /// Leases a job as described by `req` (wait, lease length, excluded kinds).
    pub async fn reserve_with(&self, req: ReserveRequest) -> Result<Option<Lease>> {
        self.backend.reserve(req).await
    }

    /// Marks a leased job completed.
    pub async fn ack(&self, lease: &Lease) -> Result<()> {
        self.backend.ack(lease.job.id, lease.token).await
    }

    /// Records a failed attempt; the job is retried per its policy or dead-lettered.
    pub async fn fail(&self, lease: &Lease, error: impl Into<String>) -> Result<FailOutcome> {
        self.backend
            .fail(lease.job.id, lease.token, error.into(), FailAction::Retry)
            .await
    }

    /// Records a failed attempt with an explicit action (retry after D, give up now).
    pub async fn fail_with(
        &self,
        lease: &Lease,
        error: impl Into<String>,
        action: FailAction,
    ) -> Result<FailOutcome> {
        self.backend
            .fail(lease.job.id, lease.token, error.into(), action)
            .await
    }

    /// Extends a lease by `extend` from now.
    pub async fn heartbeat(&self, lease: &Lease, extend: Duration) -> Result<Timestamp> {
        self.backend
            .heartbeat(lease.job.id, lease.token, extend)
            .await
    }

    /// Ends a leased attempt without counting it (a server's retry-after): the job runs again
    /// after `delay`, its partition key waiting with it. Past the queue's total postponement
    /// budget per job ([`QueueConfig::max_postpone`], default 1 h) it counts as a failed
    /// attempt instead.
    pub async fn postpone(
        &self,
        lease: &Lease,
        delay: Duration,
        reason: impl Into<String>,
    ) -> Result<FailOutcome> {
        self.backend
            .postpone(lease.job.id, lease.token, delay, reason.into())
            .await
    }

    /// Cancels one job: a waiting, delayed or dead job is deleted; a running one is dropped
    /// when its attempt ends. Unknown or completed ids say so in the outcome.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome> {
        let mut v = self.backend.cancel(vec![id]).await?;
        Ok(v.pop().unwrap_or(CancelOutcome::NotFound))
    }

    /// Cancels several jobs; one outcome per id, in order.
    pub async fn cancel_many(&self, ids: Vec<JobId>) -> Result<Vec<CancelOutcome>> {
        self.backend.cancel(ids).await
    }

    /// Cancels every job of `queue` in `state` (optionally of one kind); returns how many.
    pub async fn cancel_where(
        &self,
        queue: &str,
        state: JobState,
        kind: Option<&str>,
    ) -> Result<u64> {
        self.backend.cancel_where(queue, state, kind).await
    }

    /// Returns a leased job to waiting without counting the attempt.
    pub async fn release(&self, lease: &Lease) -> Result<()> {
        self.backend.release(lease.job.id, lease.token).await
    }

    /// Looks a job up by id.
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.backend.get(id).await
    }

    /// Lists jobs of a queue in the order they would run.
    pub async fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.backend.list(queue, state, limit).await
    }

    /// Counts per state per queue.
    pub async fn stats(&self) -> Result<Stats> {
        self.backend.stats().await
    }

    /// Dead letters of a queue, most recent first.
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<Job>> {
        self.backend.list(queue, Some(JobState::Dead), limit).await
    }

    /// Puts dead letters back to waiting.
    pub async fn requeue_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        self.backend.requeue_dead(queue, which).await
    }

    /// Deletes dead letters.
    pub async fn purge_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        self.backend.purge_dead(queue, which).await
    }

    /// Stops reserving from a queue (durable).
    pub async fn pause(&self, queue: &str) -> Result<()> {
        self.backend.set_paused(queue, true).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, queue: &str) -> Result<()> {
        self.backend.set_paused(queue, false).await
    }

    /// Holds back one partition key for a while (rate limit, `retry_after`).
    pub async fn pause_key(&self, queue: &str, key: &str, for_: Duration) -> Result<()> {
        self.backend.pause_key(queue, key, for_).await
    }

    /// The event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.backend.subscribe()
    }

    /// Flushes and stops the store.
    pub async fn shutdown(&self) -> Result<()> {
        self.backend.shutdown().await
    }
}

/// Builder for a local store. Defaults: fsync `everysec`, lease 30 s, retries 1, 2, 4, 8, 16 s,
/// 1,000 completed jobs kept per queue, 64 MiB cache, 16 MiB payload limit.
#[derive(Debug, Clone)]
pub struct QueueBuilder {
    dir: PathBuf,
    options: Options,
    #[cfg(feature = "redis")]
    redis: Option<crate::redis::RedisConfig>,
}

impl QueueBuilder {
    /// Sets the fsync policy.
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.options.fsync = policy;
        self
    }
    /// Sets the default lease length.
    pub fn lease(mut self, d: Duration) -> Self {
        self.options.lease = d;
        self
    }
    /// Sets the default retry policy of every queue.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.options.defaults.retry = policy;
        self
    }
    /// Sets how many completed jobs each queue keeps (default 1,000).
    pub fn keep_completed(mut self, n: usize) -> Self {
        self.options.defaults.keep_completed = n;
        self
    }
    /// Sets the configuration of one queue.
    pub fn queue(mut self, name: impl Into<String>, config: QueueConfig) -> Self {
        self.options.queues.insert(name.into(), config);
        self
    }
    /// Sets the state store's cache size in bytes (default 64 MiB).
    pub fn cache_bytes(mut self, n: u64) -> Self {
        self.options.cache_bytes = n;
        self
    }
    /// Sets the payload size limit (default 16 MiB).
    pub fn max_payload(mut self, n: usize) -> Self {
        self.options.max_payload = n;
        self
    }
    /// Sets the journal segment size (default 64 MiB).
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.options.segment_bytes = n;
        self
    }
    /// Sets the journal size below which no rewrite happens (default 64 MiB, as Redis).
    pub fn rewrite_min_bytes(mut self, n: u64) -> Self {
        self.options.rewrite_min_bytes = n;
        self
    }
    /// Injects I/O faults (tests; feature `testing`).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn faults(mut self, f: Arc<dyn crate::journal::faults::Faults>) -> Self {
        self.options.faults = Some(f);
        self
    }
    /// Injects a clock (tests; feature `testing`).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn clock(mut self, c: Arc<dyn crate::clock::Clock>) -> Self {
        self.options.clock = Some(c);
        self
    }

    /// Opens the queue on the Redis server at `url` (`redis://host:port/db`) instead of the
    /// local directory (which is then not touched). The other settings apply as for a local
    /// store (`fsync` and the journal sizes excepted: durability is Redis's own).
    #[cfg(feature = "redis")]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(crate::redis::RedisConfig::new(url));
        self
    }
    /// Sets the connect and response timeout of Redis calls (default 2 s); calls fail with
    /// [`crate::Error::Unavailable`] after it. Only with [`QueueBuilder::redis`].
    #[cfg(feature = "redis")]
    pub fn redis_timeout(mut self, d: Duration) -> Self {
        if let Some(r) = &mut self.redis {
            r.timeout = d;
        }
        self
    }

    /// Validates the options and opens the store (recovering from the journal if needed).
    pub async fn open(self) -> Result<Queue> {
        self.options.validate()?;
        #[cfg(feature = "redis")]
        if let Some(cfg) = self.redis {
            let b = crate::redis::RedisBackend::open(cfg, self.options).await?;
            return Ok(Queue {
                backend: Arc::new(b),
            });
        }
        let dir = self.dir;
        let options = self.options;
        let local = tokio::task::spawn_blocking(move || crate::local::Local::open(&dir, options))
            .await
            .map_err(|e| crate::Error::Backend(format!("open task failed: {e}")))??;
        Ok(Queue {
            backend: Arc::new(local),
        })
    }
}
