//! Options for opening a local (embedded) store, with documented defaults and validation.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::{validate_queue_name, RetryPolicy, DEFAULT_MAX_PAYLOAD};
use crate::journal::faults::Faults;

/// When the journal is flushed to stable storage (Redis' `appendfsync`).
///
/// Every policy calls `write()` before an operation is answered, so an acknowledged write
/// always survives the process being killed (SIGKILL): the bytes are in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fdatasync before answering (group commit shares one sync among concurrent callers).
    /// Survives: process crash, OS crash, power loss.
    Always,
    /// fdatasync once a second in the background; appends wait if a sync has been pending for
    /// more than 2 s. Survives a process crash; an OS crash or power loss may lose the last
    /// ~1 s of acknowledged writes (up to ~2 s when the disk stalls).
    #[default]
    EverySec,
    /// Never sync explicitly; the OS writes back when it likes (typically within 30 s).
    /// Survives a process crash; an OS crash or power loss may lose what the OS had not written.
    No,
}

impl FromStr for FsyncPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            _ => Err(Error::invalid(format!(
                "fsync policy `{s}` is not valid; use always, everysec or no"
            ))),
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        })
    }
}

/// Per-queue settings.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    /// Retry policy for jobs that do not bring their own.
    pub retry: RetryPolicy,
    /// Completed jobs kept for inspection (default 1,000).
    pub keep_completed: usize,
    /// Completed jobs older than this (since they completed) are dropped (default: none, the
    /// count alone bounds them).
    pub keep_completed_for: Option<Duration>,
    /// Dead letters kept, the oldest dropped first (default: no bound).
    pub keep_dead: Option<usize>,
    /// Dead letters older than this (since they died) are dropped (default: kept until purged).
    pub keep_dead_for: Option<Duration>,
    /// Total time one job may be postponed by retry-after answers without counting attempts
    /// (default 1 h); a postponement past it counts as a failed attempt.
    pub max_postpone: Duration,
}

impl QueueConfig {
    /// Checks the durations of the retention and postponement settings.
    fn validate_extra(&self) -> Result<()> {
        crate::duration::check("max postpone", self.max_postpone)?;
        for (what, d) in [
            ("completed retention age", self.keep_completed_for),
            ("dead-letter retention age", self.keep_dead_for),
        ] {
            if let Some(d) = d {
                crate::duration::check(what, d)?;
            }
        }
        Ok(())
    }
}

/// Default [`QueueConfig::max_postpone`].
pub const DEFAULT_MAX_POSTPONE: Duration = Duration::from_secs(3600);

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            retry: RetryPolicy::default(),
            keep_completed: 1000,
            keep_completed_for: None,
            keep_dead: None,
            keep_dead_for: None,
            max_postpone: DEFAULT_MAX_POSTPONE,
        }
    }
}

/// Everything that can be set when opening a local store. See [`crate::Queue::builder`].
#[derive(Clone)]
pub struct Options {
    pub(crate) fsync: FsyncPolicy,
    pub(crate) lease: Duration,
    pub(crate) defaults: QueueConfig,
    pub(crate) queues: HashMap<String, QueueConfig>,
    pub(crate) cache_bytes: u64,
    pub(crate) max_payload: usize,
    pub(crate) segment_bytes: u64,
    pub(crate) rewrite_min_bytes: u64,
    pub(crate) faults: Option<Arc<dyn Faults>>,
    pub(crate) clock: Option<Arc<dyn crate::clock::Clock>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::EverySec,
            lease: Duration::from_secs(30),
            defaults: QueueConfig::default(),
            queues: HashMap::new(),
            cache_bytes: 64 << 20,
            max_payload: DEFAULT_MAX_PAYLOAD,
            segment_bytes: 64 << 20,
            rewrite_min_bytes: 64 << 20,
            faults: None,
            clock: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("fsync", &self.fsync)
            .field("lease", &self.lease)
            .field("defaults", &self.defaults)
            .field("queues", &self.queues)
            .field("cache_bytes", &self.cache_bytes)
            .field("max_payload", &self.max_payload)
            .field("segment_bytes", &self.segment_bytes)
            .field("rewrite_min_bytes", &self.rewrite_min_bytes)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Checks every value; says what is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.lease < Duration::from_millis(100) || self.lease > Duration::from_secs(86_400) {
            return Err(Error::invalid(format!(
                "lease {:?} is out of range; use 100ms to 24h",
                self.lease
            )));
        }
        self.defaults.retry.validate()?;
        self.defaults.validate_extra()?;
        for (name, q) in &self.queues {
            validate_queue_name(name)?;
            q.retry.validate()?;
            q.validate_extra()?;
        }
        if self.cache_bytes < (1 << 20) {
            return Err(Error::invalid("cache size must be at least 1 MiB"));
        }
        if self.max_payload == 0 || self.max_payload > (128 << 20) {
            return Err(Error::invalid("max payload must be from 1 byte to 128 MiB"));
        }
        if self.segment_bytes < (64 << 10) {
            return Err(Error::invalid("segment size must be at least 64 KiB"));
        }
        Ok(())
    }

    pub(crate) fn queue_config(&self, queue: &str) -> &QueueConfig {
        self.queues.get(queue).unwrap_or(&self.defaults)
    }
}
