//! Fault injection for tests: a hook the journal calls before each write and fsync, and at each
//! named step of a checkpoint, so tests can fail the Nth write (ENOSPC, short write), fail an
//! fsync (EIO), or kill the process at a precise point.
//!
//! Production code runs with no hook.

use std::io;
use std::path::Path;

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

/// Hooks called by the journal. All default to "no fault".
pub trait Faults: Send + Sync + 'static {
    /// Before `len` bytes are written to `file`.
    fn on_write(&self, _file: &Path, _len: usize) -> WriteFault {
        WriteFault::None
    }
    /// Before an fsync of `file`.
    fn on_sync(&self, _file: &Path) -> io::Result<()> {
        Ok(())
    }
    /// At a named step (`rewrite:base-written`, `rewrite:manifest-written`,
    /// `rewrite:deleting-old` (after each old segment is removed), `rewrite:old-deleted`,
    /// `rotate:segment-created`, `manifest:tmp-written`, `manifest:renamed`, `recovery:replayed`).
    fn on_step(&self, _step: &str) {}
}
