//! One process per data directory: an exclusive `flock` on `DIR/lock`, holding the owner's pid.
//!
//! The lock is released by the kernel when the process dies, so a stale lock file left by a
//! killed process never blocks the next start.
//!
//! Invariants (the data directory may be writable by another user, who may plant things):
//! - `DIR/lock` is opened with `O_NOFOLLOW` (a symbolic link is refused with an error naming
//!   the path) and `O_NONBLOCK` (a FIFO cannot hang us), created with mode 0600, and never
//!   truncated on open.
//! - Before anything is written, `fstat` on the descriptor must show a regular file with one
//!   link (a hard link to another file is refused). The pid is written only into a lock file
//!   this process's uid owns; a lock file of another user is locked but left unchanged. So the
//!   content of a file that `lock` points to is never overwritten.
//! - Readers of the pid ([`holder_pid`]) open the file the same way and read at most 64 bytes.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::perms;

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock of `dir` or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join("lock");
        let file = perms::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => perms::refused(
                    "the lock file",
                    &path,
                    "it is a symbolic link, and durq never follows links inside its data \
                     directory (another user who can write the directory may have planted it to \
                     make durq overwrite the file it points to); remove the link, or use a data \
                     directory only you can write",
                ),
                _ => Error::io(format!("cannot open lock file {}", path.display()), e),
            })?;
        let md = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat lock file {}", path.display()), e))?;
        if !md.is_file() {
            return Err(perms::refused(
                "the lock file",
                &path,
                "it is not a regular file; remove it",
            ));
        }
        if md.nlink() != 1 {
            return Err(perms::refused(
                "the lock file",
                &path,
                &format!(
                    "it has {} hard links, so writing it could change another file; remove it",
                    md.nlink()
                ),
            ));
        }
        let ours = md.uid() == perms::euid();
        if ours {
            perms::fix_mode(&file, &path, perms::FILE_MODE)?;
        }
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                    pid: holder_pid(&path).unwrap_or(0),
                });
            }
            return Err(Error::io(format!("cannot lock {}", path.display()), err));
        }
        if ours {
            // Holding the lock: the file is ours to rewrite (pid first, then cut what is left).
            let line = format!("{}\n", std::process::id());
            let _ = file.write_all_at(line.as_bytes(), 0);
            let _ = file.set_len(line.len() as u64);
        } else {
            tracing::warn!(
                path = %path.display(),
                owner = md.uid(),
                "the lock file belongs to another user; it is locked but not rewritten"
            );
        }
        Ok(DirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written in a lock file (never following a link, reading at most 64 bytes).
pub fn holder_pid(lock_file: &Path) -> Option<u32> {
    let mut s = String::new();
    perms::open_regular_nofollow(lock_file)?
        .take(64)
        .read_to_string(&mut s)
        .ok()?;
    s.trim().parse().ok()
}
