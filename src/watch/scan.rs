//! Walking a directory tree: the disk side of the start-up scan, rescans and directory events.
//!
//! Invariants:
//! - Symlinks are never followed (lstat only; a symlink is neither a file nor a directory here).
//! - Ignored directories are not entered; `.gitignore` files are loaded before their directory's
//!   entries are judged.
//! - An unreadable directory is reported in `unreadable` (its recorded files are then not taken
//!   for deleted).

use std::io;
use std::path::{Path, PathBuf};

use crate::watch::ignore::Ignorer;
use crate::watch::record::Meta;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Regular, not ignored files with their stat.
    pub files: Vec<(PathBuf, Meta)>,
    /// Directories that could not be read, with the error.
    pub unreadable: Vec<(PathBuf, io::Error)>,
}

/// Walks `dir` (which must be a directory), loading `.gitignore` files into `ign` on the way.
pub fn walk(dir: &Path, ign: &mut Ignorer) -> Walk {
    let mut out = Walk::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        ign.reload(&d);
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) => {
                out.unreadable.push((d, e));
                continue;
            }
        };
        for ent in rd {
            let ent = match ent {
                Ok(e) => e,
                Err(e) => {
                    out.unreadable.push((d.clone(), e));
                    continue;
                }
            };
            let p = ent.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue; // gone meanwhile
            };
            if m.is_dir() {
                if !ign.is_ignored(&p, true) {
                    stack.push(p);
                }
            } else if m.is_file() && !ign.is_ignored(&p, false) {
                out.files.push((p, Meta::of(&m)));
            }
        }
    }
    out
}

/// Counts the directories under `dir` (itself included), as an inotify watch each, not following
/// symlinks and not skipping ignored ones (the OS watcher watches them all).
pub fn count_dirs(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        n += 1;
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for ent in rd.flatten() {
            if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(ent.path());
            }
        }
    }
    n
}

/// The kernel's `fs.inotify.max_user_watches`, if readable.
pub fn max_user_watches() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The error for a tree needing `needed` watches when the limit is `limit`.
pub fn watch_limit_error(roots: &str, needed: u64, limit: Option<u64>) -> crate::Error {
    let limit = limit.map_or_else(|| "lower".to_string(), |l| l.to_string());
    crate::Error::io(
        format!(
            "watching {roots} needs about {needed} inotify watches (one per directory) but \
             fs.inotify.max_user_watches is {limit}; raise it, e.g. `sysctl fs.inotify.max_user_watches={}`, \
             or watch a smaller tree",
            (needed * 2).max(8192)
        ),
        io::Error::from_raw_os_error(libc::ENOSPC),
    )
}
