//! Test hooks of the journal: fault injection and I/O observation.
//!
//! - **Faults.** The journal asks the hook before each write and fsync, and at each named step
//!   of a checkpoint, so tests can fail the Nth write (ENOSPC, short write), fail an fsync
//!   (EIO), or kill the process at a precise point.
//! - **Observation.** After each journal I/O that changes what a power cut could leave on disk
//!   (a write, the start and the end of an fsync, a create, rename or remove of a directory
//!   entry, a directory fsync, a truncation) the journal reports an [`IoEvent`]. A test-side
//!   model (see `tests/support/power.rs`) shadows each file's durable and pending contents and
//!   builds the image a power cut would leave (SQLite's crash-test VFS, in process).
//!
//! Invariants: every journal I/O site in `writer.rs`, `manifest.rs` (through
//! [`crate::journal::manifest::Manifest::store_with`]) and `fsutil.rs` (through
//! [`crate::journal::fsutil::fsync_dir_observed`]) reports its event *after* the I/O succeeded,
//! except [`IoEvent::SyncStart`], reported just before the fsync starts (what was written before
//! it is what the fsync makes durable). Recovery's own I/O is not reported: it syncs everything
//! it changes, and the model reads the directory back at the `recovery:replayed` step.
//!
//! Production code runs with no hook: every call site is one `if let Some(..)`.

use std::io;
use std::path::Path;
use std::sync::Arc;

/// What a write should do.
#[derive(Debug)]
pub enum WriteFault {
    /// Write normally.
    None,
    /// Write only this many bytes, then fail with the error.
    Short(usize, io::Error),
    /// Fail before writing anything.
    Fail(io::Error),
}

/// One journal I/O, as seen by [`Faults::on_io`].
#[derive(Debug, Clone, Copy)]
pub enum IoEvent<'a> {
    /// `bytes` were written to `file` at `offset` (in the page cache, not yet durable).
    Wrote {
        /// The file.
        file: &'a Path,
        /// Byte offset.
        offset: u64,
        /// What was written.
        bytes: &'a [u8],
    },
    /// `file` was truncated (or extended with zeros) to `len`.
    Truncated {
        /// The file.
        file: &'a Path,
        /// New length.
        len: u64,
    },
    /// An fsync/fdatasync of `path` (a file, or a directory) is about to start.
    SyncStart {
        /// File or directory.
        path: &'a Path,
    },
    /// The fsync/fdatasync of `path` that started last returned Ok.
    SyncDone {
        /// File or directory.
        path: &'a Path,
    },
    /// `file` was created (a new, empty directory entry).
    Created {
        /// The file.
        file: &'a Path,
    },
    /// `from` was renamed over `to`.
    Renamed {
        /// Old name.
        from: &'a Path,
        /// New name.
        to: &'a Path,
    },
    /// `file` was removed.
    Removed {
        /// The file.
        file: &'a Path,
    },
}

/// Hooks called by the journal. All default to "no fault" and "ignore".
pub trait Faults: Send + Sync + 'static {
    /// Before `len` bytes are written to `file`.
    fn on_write(&self, _file: &Path, _len: usize) -> WriteFault {
        WriteFault::None
    }
    /// Before an fsync of `file`.
    fn on_sync(&self, _file: &Path) -> io::Result<()> {
        Ok(())
    }
    /// At a named step (`rewrite:scan-start`, `rewrite:base-written`,
    /// `rewrite:manifest-written`, `rewrite:deleting-old` (after each old file is removed),
    /// `rewrite:old-deleted`, `rotate:segment-created`, `manifest:tmp-written`,
    /// `manifest:renamed`, `recovery:replayed`, and the first-open steps `open:*`).
    fn on_step(&self, _step: &str) {}
    /// After (for [`IoEvent::SyncStart`]: before) each journal I/O.
    fn on_io(&self, _event: &IoEvent<'_>) {}
}

/// Reports `event` to the hook, if there is one.
#[inline]
pub fn observe(faults: Option<&dyn Faults>, event: IoEvent<'_>) {
    if let Some(f) = faults {
        f.on_io(&event);
    }
}

/// [`observe`] for the `Option<Arc<dyn Faults>>` the journal holds.
#[inline]
pub fn observe_arc(faults: &Option<Arc<dyn Faults>>, event: IoEvent<'_>) {
    observe(faults.as_deref(), event)
}
