//! Handler adapters for the watcher's job kinds, `file_event` and `batch_process`: decode the
//! watcher's JSON payload and hand it to a user callback (or use [`super::ShellHandler`], which
//! passes the same JSON on stdin).
//!
//! The payload types here are the receiving side of `crate::watch::job` (which only
//! serialises): fields the watcher adds later are ignored, so old workers keep decoding new
//! payloads. A payload that does not decode gives up with the decode error (see [`typed`]).

use std::future::Future;

use serde::Deserialize;

use super::handler::{typed, Outcome, Typed};
use crate::job::Job;

/// Kind of a single settled file change.
pub const FILE_EVENT: &str = "file_event";
/// Kind of a batch of settled changes.
pub const BATCH_PROCESS: &str = "batch_process";

/// A settled file change, as the watcher enqueues it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct FileChange {
    /// Path relative to the root.
    pub path: String,
    /// The watched root (absolute).
    pub root: String,
    /// `created`, `modified`, `deleted` or `renamed`.
    pub kind: String,
    /// The old relative path (renames).
    #[serde(default)]
    pub from: Option<String>,
    /// Size in bytes (`None` for deletions).
    #[serde(default)]
    pub size: Option<u64>,
    /// New content hash, hex SHA-256 (`None` for deletions).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Previous content hash (`None` for creations).
    #[serde(default)]
    pub prev_sha256: Option<String>,
    /// Modification time, RFC 3339.
    #[serde(default)]
    pub mtime: Option<String>,
    /// False when reported at the max wait rather than after a quiet window.
    #[serde(default)]
    pub stable: bool,
}

impl FileChange {
    /// `root/path`.
    pub fn full_path(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.root).join(&self.path)
    }
}

/// A `batch_process` payload: the changes of one closed batch, in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ChangeBatch {
    /// The changes.
    pub changes: Vec<FileChange>,
}

/// A handler for `file_event` jobs calling `f(change, job)`.
pub fn file_event<F, Fut>(f: F) -> Typed<FileChange, F>
where
    F: Fn(FileChange, Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    typed(f)
}

/// A handler for `batch_process` jobs calling `f(batch, job)`.
pub fn batch_process<F, Fut>(f: F) -> Typed<ChangeBatch, F>
where
    F: Fn(ChangeBatch, Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    typed(f)
}
