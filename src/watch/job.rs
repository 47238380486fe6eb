//! Settled changes as jobs: the `file_event` payload, its dedup key, and `batch_process` batches.
//!
//! Invariants:
//! - The dedup key holds root, path, previous hash, new hash and the path's change counter, so a
//!   change re-reported after a crash is dropped while A→B→A (and A→B→A→B) all report.
//! - A batch closes when the watcher has been quiet for the debounce window, at the max wait
//!   counted from its first change, or at the size cap; each change goes into exactly one batch.
//! - The open batch survives a crash: its changes are stored with the records that report them
//!   (one atomic write) and dropped from there once their `batch_process` job is enqueued; that
//!   job's dedup key is made of its changes' keys, so a batch re-sent after a crash is dropped.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::job::NewJob;

/// Time to live of a `file_event` dedup key.
pub const DEDUP_TTL: Duration = Duration::from_secs(3600);

/// What happened to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A new file.
    Created,
    /// New content.
    Modified,
    /// Gone.
    Deleted,
    /// Moved (same inode and content), from `from`.
    Renamed,
}

/// The payload of a `file_event` job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEvent {
    /// Path relative to the root.
    pub path: String,
    /// The watched root (absolute).
    pub root: String,
    /// What happened.
    pub kind: Kind,
    /// The old relative path (renames).
    pub from: Option<String>,
    /// Size in bytes (`null` for deletions).
    pub size: Option<u64>,
    /// New content hash (`null` for deletions).
    pub sha256: Option<String>,
    /// Previous content hash (`null` for creations).
    pub prev_sha256: Option<String>,
    /// Modification time, RFC 3339 (`null` for deletions).
    pub mtime: Option<String>,
    /// False when reported at the max wait rather than after a quiet window.
    pub stable: bool,
    /// The path's change counter (part of the dedup key).
    #[serde(skip)]
    pub gen: u64,
}

impl FileEvent {
    /// The dedup key: `watch:` and the SHA-256 of root, path, from, previous hash, new hash and
    /// change counter (fixed length and printable, whatever the file name holds).
    pub fn dedup_key(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            self.root.as_str(),
            self.path.as_str(),
            self.from.as_deref().unwrap_or(""),
            self.prev_sha256.as_deref().unwrap_or("-"),
            self.sha256.as_deref().unwrap_or("-"),
            &self.gen.to_string(),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        format!("watch:{}", crate::watch::hash::hex(&h.finalize().into()))
    }

    /// The job for `queue`.
    pub fn job(&self, queue: &str) -> crate::Result<NewJob> {
        Ok(NewJob::json(queue, self)?
            .kind("file_event")
            .dedup(self.dedup_key(), DEDUP_TTL))
    }
}

/// RFC 3339 of an mtime in ns since the epoch.
pub fn rfc3339(ns: i128) -> String {
    let t = if ns >= 0 {
        std::time::UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        std::time::UNIX_EPOCH
    };
    humantime::format_rfc3339_nanos(t).to_string()
}

/// Payload of a `batch_process` job.
#[derive(Debug, Serialize)]
struct Batch<'a> {
    changes: &'a [FileEvent],
}

/// Groups changes into batches.
#[derive(Debug)]
pub struct Batcher {
    debounce: Duration,
    max_wait: Duration,
    cap: usize,
    open: Vec<FileEvent>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Batcher {
    /// A batcher closing after `debounce` of quiet, at `max_wait`, or at `cap` changes.
    pub fn new(debounce: Duration, max_wait: Duration, cap: usize) -> Self {
        Batcher {
            debounce,
            max_wait,
            cap: cap.max(1),
            open: Vec::new(),
            first: None,
            last: None,
        }
    }

    /// Adds changes; returns the batches closed by the size cap.
    pub fn add(&mut self, changes: &[FileEvent], now: Instant) -> Vec<Vec<FileEvent>> {
        let mut closed = Vec::new();
        for c in changes {
            if self.first.is_none() {
                self.first = Some(now);
            }
            self.open.push(c.clone());
            self.last = Some(now);
            if self.open.len() >= self.cap {
                closed.push(self.take());
            }
        }
        closed
    }

    fn take(&mut self) -> Vec<FileEvent> {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.open)
    }

    /// When the open batch should be looked at next.
    pub fn deadline(&self) -> Option<Instant> {
        let (f, l) = (self.first?, self.last?);
        Some((l + self.debounce).min(f + self.max_wait))
    }

    /// Closes the open batch if the watcher is quiet (`busy` false) past the debounce window, or
    /// the max wait passed.
    pub fn poll(&mut self, now: Instant, busy: bool) -> Option<Vec<FileEvent>> {
        let (f, l) = (self.first?, self.last?);
        let quiet = !busy && now >= l + self.debounce;
        if quiet || now >= f + self.max_wait {
            Some(self.take())
        } else {
            None
        }
    }

    /// Closes the open batch whatever the time (shutdown).
    pub fn flush(&mut self) -> Option<Vec<FileEvent>> {
        (!self.open.is_empty()).then(|| self.take())
    }
}

/// The `batch_process` job of a closed batch, deduplicated by the keys of its changes.
pub fn batch_job(queue: &str, changes: &[FileEvent]) -> crate::Result<NewJob> {
    use sha2::Digest;
    let mut keys: Vec<String> = changes.iter().map(FileEvent::dedup_key).collect();
    keys.sort();
    let mut h = sha2::Sha256::new();
    for k in &keys {
        h.update(k.as_bytes());
        h.update([0u8]);
    }
    let key = format!(
        "watch-batch:{}",
        crate::watch::hash::hex(&h.finalize().into())
    );
    Ok(NewJob::json(queue, &Batch { changes })?
        .kind("batch_process")
        .dedup(key, DEDUP_TTL))
}
