//! The file watcher: debounced, content-hashed changes turned into
//! `file_event` jobs.
//!
//! Pipeline: [`events`] (notify's thread: drop open/access events, bounded channel, overflow
//! flag) → [`run`] (the loop: [`debounce`] per path, rescans) → [`settle`] (stat, [`hash`] on a
//! bounded pool, compare with the persisted [`record`]s, pair renames) → [`job`] (enqueue, then
//! update the records; optional batches). The start-up scan and overflow rescans are settles of
//! the roots, walked by [`scan`] under the rules of [`ignore`].
//!
//! Invariants: OS events are hints and the records are the truth; each real content change is
//! enqueued once (dedup keys cover a crash between enqueue and record update); nothing is lost on
//! overflow (a reconcile scan follows) or across a restart (the start-up scan).

pub mod big;
pub mod debounce;
pub mod events;
pub mod hash;
pub mod ignore;
pub mod job;
pub mod record;
pub mod run;
pub mod scan;
pub mod settle;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::queue::Queue;

pub use events::EventGate;

/// How to watch.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Directories to watch (recursively).
    pub roots: Vec<PathBuf>,
    /// Queue that receives the jobs.
    pub queue: String,
    /// Quiet time after a path's last event before it is reported (default 500 ms).
    pub debounce: Duration,
    /// Longest a busy path waits before it is reported with `stable: false` (default 5 s).
    pub max_wait: Duration,
    /// Extra ignore globs (`--ignore`).
    pub ignore: Vec<String>,
    /// Also group changes into `batch_process` jobs.
    pub batch: bool,
    /// Size cap of a batch (default 1,000).
    pub batch_max: usize,
    /// Where the watcher keeps its records (e.g. `DATA_DIR/watch`).
    pub state_dir: PathBuf,
    /// Hashing threads (default: the number of cores).
    pub hash_workers: usize,
    /// Capacity of the channel from the OS watcher (default 65,536 events); when full, a
    /// reconcile scan replaces the lost events.
    #[doc(hidden)]
    pub channel_capacity: usize,
    /// Test hook: stalls the OS watcher's thread while paused.
    #[doc(hidden)]
    pub gate: Option<Arc<EventGate>>,
}

impl WatchConfig {
    /// A configuration with the defaults.
    pub fn new(roots: Vec<PathBuf>, queue: impl Into<String>, state_dir: PathBuf) -> Self {
        WatchConfig {
            roots,
            queue: queue.into(),
            debounce: Duration::from_millis(500),
            max_wait: Duration::from_secs(5),
            ignore: Vec::new(),
            batch: false,
            batch_max: 1000,
            state_dir,
            hash_workers: hash::HashPool::default_size(),
            channel_capacity: 65_536,
            gate: None,
        }
    }

    /// Checks the values and canonicalises the roots.
    fn validated(mut self) -> Result<Self> {
        crate::job::validate_queue_name(&self.queue)?;
        if self.roots.is_empty() {
            return Err(Error::invalid("watch needs at least one directory"));
        }
        if self.debounce.is_zero() {
            return Err(Error::invalid(
                "the debounce window must be longer than zero",
            ));
        }
        let mut roots = Vec::new();
        for r in &self.roots {
            let c = std::fs::canonicalize(r)
                .map_err(|e| Error::invalid(format!("cannot watch {}: {e}", r.display())))?;
            if !c.is_dir() {
                return Err(Error::invalid(format!(
                    "cannot watch {}: it is not a directory",
                    r.display()
                )));
            }
            std::fs::read_dir(&c)
                .map_err(|e| Error::invalid(format!("cannot watch {}: {e}", r.display())))?;
            if !roots.contains(&c) {
                roots.push(c);
            }
        }
        self.roots = roots;
        self.max_wait = self.max_wait.max(self.debounce);
        self.channel_capacity = self.channel_capacity.max(1);
        Ok(self)
    }
}

/// Counters of a watcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchMetrics {
    /// Changes reported (one per `file_event` job, duplicates included).
    pub events_settled: u64,
    /// Jobs actually enqueued (`file_event` and `batch_process`, duplicates excluded).
    pub jobs_enqueued: u64,
    /// Reconcile scans run because events were lost (kernel overflow or a full channel).
    pub rescans: u64,
    /// Errors: unreadable files, failed enqueues, watch-limit and OS watcher errors.
    pub errors: u64,
    /// Bytes hashed.
    pub hashed_bytes: u64,
    /// Events dropped because the internal channel was full (each one leads to a rescan).
    pub events_dropped: u64,
}

/// Shared atomic counters behind [`WatchMetrics`].
#[derive(Debug, Default)]
pub struct Counters {
    settled: AtomicU64,
    enqueued: AtomicU64,
    rescans: AtomicU64,
    errors: AtomicU64,
    hashed: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn add_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_settled(&self, n: u64) {
        self.settled.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_enqueued(&self, n: u64) {
        self.enqueued.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn add_rescan(&self) {
        self.rescans.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn add_hashed(&self, n: u64) {
        self.hashed.fetch_add(n, Ordering::Relaxed);
    }
    /// The counters now.
    pub fn snapshot(&self) -> WatchMetrics {
        WatchMetrics {
            events_settled: self.settled.load(Ordering::Relaxed),
            jobs_enqueued: self.enqueued.load(Ordering::Relaxed),
            rescans: self.rescans.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            hashed_bytes: self.hashed.load(Ordering::Relaxed),
            events_dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A running watcher.
pub struct Watcher {
    counters: Arc<Counters>,
    running: run::Running,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Validates the roots (a missing or unreadable directory is [`Error::InvalidInput`] naming
    /// it), starts watching, runs the start-up scan (its jobs are enqueued when this returns) and
    /// keeps enqueueing into `cfg.queue` until [`Watcher::stop`].
    pub async fn start(queue: Queue, cfg: WatchConfig) -> Result<Watcher> {
        let cfg = cfg.validated()?;
        let counters = Arc::new(Counters::default());
        let running = run::start(queue, cfg, counters.clone()).await?;
        Ok(Watcher { counters, running })
    }

    /// The counters so far.
    pub fn metrics(&self) -> WatchMetrics {
        self.counters.snapshot()
    }

    /// The live counters (for exporting them while the watcher runs).
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Stops watching, settles every pending change and returns once all jobs are enqueued.
    pub async fn stop(self) -> Result<()> {
        self.running.stop().await
    }
}
