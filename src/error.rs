//! Typed errors of durq.
//!
//! Every message is one sentence that says what was wrong and, where there is something to do,
//! what to do about it. Callers match on the variant to tell bad input from a full disk from a
//! corrupt file from a lost lease.

use std::path::PathBuf;

/// Result alias used across durq.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in durq.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed a bad value (queue name, payload size, option, duration…). Nothing was
    /// changed.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Another process holds the data directory.
    #[error("data directory {path} is in use by process {pid}; stop that process or use another --data directory")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The holder's process id, as written in the lock file (0 if unknown).
        pid: u32,
    },

    /// A journal or state file is damaged before its tail.
    #[error("{file}: corrupt at byte offset {offset}: {reason}; run `durq check` to see the damage and `durq check --repair` to salvage every intact record")]
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad byte or record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// A file was written by a format version this build does not read.
    #[error("{file}: format version {found} is not supported by this durq (it reads version {supported}); use a durq release that matches the data directory")]
    UnsupportedVersion {
        /// The file.
        file: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What durq was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An fsync failed earlier; the store refuses writes until it is reopened.
    #[error("the journal refuses writes since an fsync failed ({0}); writes acknowledged since the last successful sync may not survive a power loss; reopen the queue to recover")]
    Poisoned(String),

    /// The lease token does not match: the lease expired, or the job was acked or failed already.
    #[error("job {id} is not leased with this token (its lease expired or it was already finished); the job will run again or has finished")]
    LeaseLost {
        /// The job.
        id: String,
    },

    /// No job with this id.
    #[error("no job with id {id}")]
    NotFound {
        /// The id that was asked for.
        id: String,
    },

    /// The queue was shut down (or its engine stopped).
    #[error("the queue is shut down; open it again to continue")]
    Closed,

    /// The disk holding the data directory is full (ENOSPC, EFBIG or EDQUOT). Nothing of this
    /// call was acknowledged; reads keep working, and writes work again once space returns.
    #[error("the disk holding data directory {dir} is full ({detail}); nothing of this call was stored; free some space and retry (writes resume by themselves)")]
    DiskFull {
        /// The data directory.
        dir: PathBuf,
        /// What durq was doing and the OS error.
        detail: String,
    },

    /// A backend (such as Redis) failed.
    #[error("backend error: {0}")]
    Backend(String),

    /// The job was cancelled while it ran (answered to heartbeats): stop working on it; its
    /// ack or fail drops it.
    #[error("job {id} was cancelled; stop working on it (its ack or fail drops it)")]
    Cancelled {
        /// The job.
        id: String,
    },

    /// This backend does not implement the operation (yet).
    #[error("this backend does not support {what} yet; use the local store for it")]
    Unsupported {
        /// The operation.
        what: &'static str,
    },

    /// The Redis server cannot be reached (or did not answer within the timeout). A write that
    /// got this error may or may not have been applied; durq's own retries of an enqueue use
    /// an idempotency key, so they never add a second job.
    #[error("Redis at {url} is unavailable ({detail}); check that the server runs and is reachable (durq reconnects by itself when it is back)")]
    Unavailable {
        /// The server's URL (without its password).
        url: String,
        /// What failed.
        detail: String,
    },
}

impl Error {
    /// Builds an [`Error::Io`] with a context sentence.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    /// True when an I/O error means the disk is out of space (or over a quota or file-size
    /// limit): the condition [`Error::DiskFull`] reports.
    pub fn is_disk_full_io(e: &std::io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT)
        ) || e.kind() == std::io::ErrorKind::StorageFull
    }

    /// True for errors caused by the caller's input (exit code 2 in the CLI, HTTP 400).
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, Error::InvalidInput(_))
    }

    /// A copy of this error for answering several callers with the same failure.
    /// (`std::io::Error` is not `Clone`; its kind and message are kept.)
    pub fn duplicate(&self) -> Error {
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(m.clone()),
            Error::Locked { path, pid } => Error::Locked {
                path: path.clone(),
                pid: *pid,
            },
            Error::Corrupt {
                file,
                offset,
                reason,
            } => Error::Corrupt {
                file: file.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            Error::UnsupportedVersion {
                file,
                found,
                supported,
            } => Error::UnsupportedVersion {
                file: file.clone(),
                found: *found,
                supported: *supported,
            },
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            Error::Poisoned(m) => Error::Poisoned(m.clone()),
            Error::LeaseLost { id } => Error::LeaseLost { id: id.clone() },
            Error::NotFound { id } => Error::NotFound { id: id.clone() },
            Error::Closed => Error::Closed,
            Error::DiskFull { dir, detail } => Error::DiskFull {
                dir: dir.clone(),
                detail: detail.clone(),
            },
            Error::Backend(m) => Error::Backend(m.clone()),
            Error::Unsupported { what } => Error::Unsupported { what },
            Error::Cancelled { id } => Error::Cancelled { id: id.clone() },
            Error::Unavailable { url, detail } => Error::Unavailable {
                url: url.clone(),
                detail: detail.clone(),
            },
        }
    }
}
