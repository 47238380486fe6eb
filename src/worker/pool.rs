//! [`Pool`] and its [`PoolBuilder`]: the public face of the worker pool.
//!
//! Invariants:
//! - At most `concurrency` (or the autoscaled count, never above `max`) handlers run at once.
//! - Every reserved job ends in exactly one of: ack, fail (retry / retry after / give up),
//!   release (shutdown, rate limit, open breaker; the attempt is not counted), or a lost lease
//!   (the store runs it again).
//! - `shutdown` stops reserving, waits up to `grace` for running handlers, then aborts the rest
//!   and releases their jobs back to waiting; it returns what happened in a [`ShutdownReport`].
//! - The pool never shuts the [`Queue`] down: the caller owns it (and flushes it with
//!   `queue.shutdown()`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use super::autoscale::{AutoscaleConfig, Decision};
use super::batch::{BatchConfig, BatchHandler};
use super::breaker::{BreakerConfig, BreakerState};
use super::handler::{Handler, SharedHandler};
use super::shell::ShellHandler;
use super::supervise;
use super::Shared;
use crate::error::{Error, Result};
use crate::job::JobId;
use crate::metrics::Metrics;
pub use crate::pool_event::PoolEvent;
use crate::queue::Queue;

/// What the pool is doing now.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PoolStats {
    /// Live workers.
    pub workers: usize,
    /// Workers running a handler.
    pub busy: usize,
    /// The worker count the pool aims for (autoscaling).
    pub target: usize,
    /// Attempts acked.
    pub completed: u64,
    /// Attempts failed (retried or dead).
    pub failed: u64,
    /// Jobs that became dead letters through this pool.
    pub dead: u64,
    /// Handler panics.
    pub panics: u64,
    /// Workers replaced.
    pub restarts: u64,
    /// Acks or fails refused because the lease had been lost.
    pub leases_lost: u64,
    /// Jobs given back without counting the attempt (rate limit, breaker, shutdown).
    pub released: u64,
    /// Breaker state per kind.
    pub breakers: BTreeMap<String, BreakerState>,
    /// The most recent scale decisions (at most 32).
    pub scale_decisions: Vec<Decision>,
}

/// What `shutdown` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShutdownReport {
    /// Handlers that finished within the grace period after shutdown began.
    pub finished_in_grace: usize,
    /// Jobs whose handler was aborted after the grace period, released back to waiting.
    pub returned: Vec<JobId>,
    /// The pool's counters at the end.
    pub stats: PoolStats,
}

/// Builder of a [`Pool`]. Defaults: concurrency 5, lease 30 s, grace 30 s, no handlers, no limits,
/// no breaker, no autoscaling.
pub struct PoolBuilder {
    pub(super) queue: Queue,
    pub(super) queues: Vec<String>,
    pub(super) concurrency: usize,
    pub(super) autoscale: Option<AutoscaleConfig>,
    pub(super) lease: Duration,
    pub(super) grace: Duration,
    pub(super) handlers: HashMap<String, SharedHandler>,
    pub(super) batch: HashMap<String, (Arc<dyn BatchHandler>, BatchConfig)>,
    pub(super) default: Option<SharedHandler>,
    pub(super) rate_queue: Option<f64>,
    pub(super) rate_key: Option<f64>,
    pub(super) breaker: Option<BreakerConfig>,
    pub(super) metrics: Option<Arc<Metrics>>,
    pub(super) tick: Duration,
    pub(super) timeout: Option<Duration>,
    pub(super) key_rules: Vec<KeyRule>,
}

/// A rate limit for the partition keys a predicate picks (e.g. Telegram groups: negative chat
/// ids), besides the pool's per-key limit.
pub(crate) struct KeyRule {
    pub(crate) applies: Box<dyn Fn(&str) -> bool + Send + Sync>,
    pub(crate) per_sec: f64,
}

impl PoolBuilder {
    /// Runs `n` handlers at once (default 5); turns autoscaling off.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self.autoscale = None;
        self
    }
    /// Autoscales between `min` and `max` workers (starting at `min`) with default timings.
    pub fn min_max(mut self, min: usize, max: usize) -> Self {
        self.autoscale = Some(AutoscaleConfig::new(min, max));
        self.concurrency = min;
        self
    }
    /// Autoscales with explicit timings.
    pub fn autoscale(mut self, cfg: AutoscaleConfig) -> Self {
        self.concurrency = cfg.min;
        self.autoscale = Some(cfg);
        self
    }
    /// Lease length per reserve (default 30 s); heartbeats extend it every third of it.
    pub fn lease(mut self, d: Duration) -> Self {
        self.lease = d;
        self
    }
    /// Per-attempt execution timeout (default none) for jobs that do not carry their own
    /// ([`crate::NewJob::timeout`]): a handler still running after it is cancelled (dropped;
    /// a shell command's process group gets SIGTERM, then SIGKILL after a grace), and the
    /// attempt fails with "timed out after D" and is retried per the job's policy.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
    /// Starts at most `per_sec` jobs per second for each partition key that `applies` picks,
    /// on top of [`PoolBuilder::rate_limit_key`] (keys are limited one by one, like that one).
    pub fn rate_limit_keys_where(
        mut self,
        applies: impl Fn(&str) -> bool + Send + Sync + 'static,
        per_sec: f64,
    ) -> Self {
        self.key_rules.push(KeyRule {
            applies: Box::new(applies),
            per_sec,
        });
        self
    }
    /// How long shutdown waits for running handlers (default 30 s).
    pub fn grace(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }
    /// Registers the handler of one job kind.
    pub fn handler(mut self, kind: impl Into<String>, h: impl Handler) -> Self {
        self.handlers.insert(kind.into(), Arc::new(h));
        self
    }
    /// Registers a batch handler of one job kind, fed batches closed by size or time.
    pub fn batch_handler(
        mut self,
        kind: impl Into<String>,
        h: impl BatchHandler,
        cfg: BatchConfig,
    ) -> Self {
        self.batch.insert(kind.into(), (Arc::new(h), cfg));
        self
    }
    /// The handler of kinds without their own (without one, such jobs give up with an error
    /// naming the kind).
    pub fn default_handler(mut self, h: impl Handler) -> Self {
        self.default = Some(Arc::new(h));
        self
    }
    /// Makes `sh -c CMD` the default handler (see [`ShellHandler`]).
    pub fn shell(self, cmd: String) -> Self {
        self.default_handler(ShellHandler::new(cmd))
    }
    /// Starts at most `per_sec` jobs per second per queue.
    pub fn rate_limit_queue(mut self, per_sec: f64) -> Self {
        self.rate_queue = Some(per_sec);
        self
    }
    /// Starts at most `per_sec` jobs per second per partition key.
    pub fn rate_limit_key(mut self, per_sec: f64) -> Self {
        self.rate_key = Some(per_sec);
        self
    }
    /// Turns on a circuit breaker per kind.
    pub fn breaker(mut self, cfg: BreakerConfig) -> Self {
        self.breaker = Some(cfg);
        self
    }
    /// Feeds these metrics (job events, workers busy/idle, breakers, scaling, alerts).
    pub fn metrics(mut self, m: Arc<Metrics>) -> Self {
        self.metrics = Some(m);
        self
    }
    /// How often the supervisor looks at autoscaling and alerts (default 500 ms).
    pub fn tick(mut self, d: Duration) -> Self {
        self.tick = d;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.queues.is_empty() {
            return Err(Error::invalid("a worker pool needs at least one queue"));
        }
        for q in &self.queues {
            crate::job::validate_queue_name(q)?;
        }
        if self.concurrency == 0 {
            return Err(Error::invalid("concurrency must be at least 1"));
        }
        if let Some(a) = &self.autoscale {
            if a.min == 0 || a.max < a.min {
                return Err(Error::invalid(format!(
                    "autoscaling bounds {}..{} are not valid; use 1 <= min <= max",
                    a.min, a.max
                )));
            }
        }
        if self.lease < Duration::from_millis(30) {
            return Err(Error::invalid("lease must be at least 30ms"));
        }
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(Error::invalid(
                    "timeout must be longer than zero; leave it out for no timeout",
                ));
            }
            crate::duration::check("timeout", t)?;
        }
        let rules = self.key_rules.iter().map(|r| r.per_sec);
        for r in [self.rate_queue, self.rate_key]
            .into_iter()
            .flatten()
            .chain(rules)
        {
            if !(r.is_finite() && r > 0.0) {
                return Err(Error::invalid(format!(
                    "rate limit {r} is not valid; use a positive number of jobs per second"
                )));
            }
        }
        if let Some(b) = &self.breaker {
            b.validate()?;
        }
        for (kind, (_, cfg)) in &self.batch {
            if cfg.size == 0 || cfg.timeout * 2 >= self.lease {
                return Err(Error::invalid(format!(
                    "batch of kind {kind}: size must be at least 1 and the timeout under half the lease"
                )));
            }
        }
        if self.handlers.is_empty() && self.batch.is_empty() && self.default.is_none() {
            return Err(Error::invalid(
                "a worker pool needs a handler: register one per kind, a default one, or a shell command",
            ));
        }
        Ok(())
    }

    /// Validates the settings and starts the workers.
    pub async fn start(self) -> Result<Pool> {
        self.validate()?;
        let (shared, batchers) = Shared::new(self);
        let supervisor = tokio::spawn(supervise::supervise(shared.clone(), batchers));
        Ok(Pool { shared, supervisor })
    }
}

/// A running worker pool. Stop it with [`Pool::shutdown`].
pub struct Pool {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<usize>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

impl Pool {
    /// A builder for a pool consuming `queues` of `queue`.
    pub fn builder(queue: Queue, queues: Vec<String>) -> PoolBuilder {
        PoolBuilder {
            queue,
            queues,
            concurrency: 5,
            autoscale: None,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            handlers: HashMap::new(),
            batch: HashMap::new(),
            default: None,
            rate_queue: None,
            rate_key: None,
            breaker: None,
            metrics: None,
            tick: Duration::from_millis(500),
            timeout: None,
            key_rules: Vec::new(),
        }
    }

    /// What the pool is doing now.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// The pool's own events (breaker changes, scaling, restarts).
    pub fn subscribe(&self) -> broadcast::Receiver<PoolEvent> {
        self.shared.events.subscribe()
    }

    /// Resolves once no job of the pool's queues is waiting, delayed or active.
    pub async fn wait_until_empty(&self) -> Result<()> {
        let mut events = self.shared.queue.subscribe();
        loop {
            let stats = self.shared.queue.stats().await?;
            let left: u64 = self
                .shared
                .queues
                .iter()
                .filter_map(|q| stats.queues.get(q))
                .map(|s| s.waiting + s.delayed + s.active)
                .sum();
            if left == 0 {
                return Ok(());
            }
            // Re-check on the next event, or after a while (events can be missed on lag).
            let _ = tokio::time::timeout(Duration::from_millis(250), events.recv()).await;
        }
    }

    /// Runs until no job of the pool's queues is waiting, delayed or active, then shuts down.
    pub async fn run_until_empty(self) -> Result<ShutdownReport> {
        let waited = self.wait_until_empty().await;
        let report = self.shutdown().await;
        waited?;
        report
    }

    /// Stops reserving, waits up to the grace period for running handlers, aborts the rest and
    /// returns their jobs to waiting (their attempt is not counted).
    pub async fn shutdown(self) -> Result<ShutdownReport> {
        self.shared.begin_stop();
        let finished_in_grace = self
            .supervisor
            .await
            .map_err(|e| Error::Backend(format!("the pool's supervisor failed: {e}")))?;
        let returned = std::mem::take(&mut *self.shared.returned.lock());
        Ok(ShutdownReport {
            finished_in_grace,
            returned,
            stats: self.shared.stats(),
        })
    }
}
