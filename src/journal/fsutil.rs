//! Small file-system helpers: directory fsync, fsync of every file under a directory.

use std::fs;
use std::path::Path;

use crate::error::{Error, Result};

/// fsyncs a directory, so entries created, renamed or deleted in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir)
        .map_err(|e| Error::io(format!("cannot open directory {}", dir.display()), e))?;
    f.sync_all()
        .map_err(|e| Error::io(format!("cannot fsync directory {}", dir.display()), e))
}

/// fsyncs every regular file below `dir` and every directory, `dir` included. A file removed
/// while this runs is skipped.
/// Used before a checkpoint lets journal segments go: sled's own `flush()` is
/// `sync_file_range` on Linux, which is not durable.
pub fn fsync_tree(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        let path = entry.path();
        let ft = entry
            .file_type()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        if ft.is_dir() {
            fsync_tree(&path)?;
        } else if ft.is_file() {
            let f = match fs::File::open(&path) {
                Ok(f) => f,
                // Removed since the listing (sled deletes a blob file once its value is gone):
                // nothing of it is left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
            };
            f.sync_all()
                .map_err(|e| Error::io(format!("cannot fsync {}", path.display()), e))?;
        }
    }
    fsync_dir(dir)
}

/// Creates `dir` and any missing parents, fsyncing the parent of each directory it creates so
/// the new entries survive a power loss. Returns whether `dir` was created.
pub fn create_dir_durable(dir: &Path) -> Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || p.is_dir() {
            break;
        }
        missing.push(p);
        at = p.parent();
    }
    for p in missing.into_iter().rev() {
        // The directory asked for is private (0700); missing parents get the default mode.
        let mut b = fs::DirBuilder::new();
        if p == dir {
            std::os::unix::fs::DirBuilderExt::mode(&mut b, crate::perms::DIR_MODE);
        }
        match b.create(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && p.is_dir() => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}", p.display()), e)),
        }
        let parent = match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        fsync_dir(parent)?;
    }
    Ok(true)
}

/// [`fsync_dir`], reported to the journal's test hook (see [`crate::journal::faults`]).
pub fn fsync_dir_observed(
    dir: &Path,
    faults: Option<&dyn crate::journal::faults::Faults>,
) -> Result<()> {
    use crate::journal::faults::{observe, IoEvent};
    observe(faults, IoEvent::SyncStart { path: dir });
    fsync_dir(dir)?;
    observe(faults, IoEvent::SyncDone { path: dir });
    Ok(())
}
