//! Private files and directories: everything durq creates in a data directory is readable and
//! writable by its owner only, whatever the process umask.
//!
//! Invariants:
//! - Directories durq creates (the data directory, `journal/`, `state/`, `watch/`) are created
//!   with mode 0700; files durq creates (journal segments, base, manifest, lock) with 0600, set at
//!   creation (`DirBuilderExt::mode` / `OpenOptionsExt::mode`), then fixed with `fchmod` on the
//!   open descriptor (never by path) in case the umask removed bits we need.
//! - Inside the data directory durq never follows a symbolic link: sub-directories and files are
//!   opened with `O_NOFOLLOW` and checked with `fstat` on the descriptor, so a link planted by
//!   another user who can write the directory is refused, and its target is never touched.
//! - An existing data directory is never re-moded (its mode may be the owner's choice), but a
//!   group/world-accessible or foreign-owned one gets one `tracing::warn` per directory and
//!   process. Sub-directories durq owns are tightened to 0700 on open, so files an older durq
//!   created with looser modes become unreachable to other users.
//! - sled creates its own files inside `state/` and `watch/records/`: those present after open
//!   are chmod'ed to 0600 ([`restrict_tree`]); files sled creates later (snapshots) may carry
//!   umask bits, and rely on their directory being 0700 (no other user can even look them up).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};

pub mod socket;

/// Mode of every directory durq creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file durq creates.
pub const FILE_MODE: u32 = 0o600;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An error about a path that durq refuses to use, with the reason and what to do.
pub fn refused(what: &str, path: &Path, why: &str) -> Error {
    Error::io(
        format!("refusing {what} {}", path.display()),
        io::Error::new(io::ErrorKind::PermissionDenied, why.to_string()),
    )
}

fn symlink_refusal(what: &str, path: &Path) -> Error {
    refused(
        what,
        path,
        "it is a symbolic link, and durq never follows links inside its data directory (another \
         user who can write the directory may have planted it); remove the link, or use a data \
         directory only you can write",
    )
}

fn warn_once(path: &Path, msg: &str) {
    static WARNED: OnceLock<Mutex<std::collections::HashSet<PathBuf>>> = OnceLock::new();
    let set = WARNED.get_or_init(Default::default);
    let first = set
        .lock()
        .map(|mut s| s.insert(path.to_path_buf()))
        .unwrap_or(false);
    if first {
        tracing::warn!(dir = %path.display(), "{msg}");
    }
}

/// Creates the data directory `dir` (missing parents with the default mode, `dir` itself 0700),
/// or, if it exists, warns once when other users can read, write or enter it, or when it
/// belongs to another user.
pub fn data_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("cannot create data directory {}", dir.display()), e))?;
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {
            // The umask may have removed bits we need (umask 0o7xx): set 0700 on the descriptor.
            let f = open_dir(dir, "data directory", true)?;
            fix_mode(&f, dir, DIR_MODE)?;
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(
                format!("cannot create data directory {}", dir.display()),
                e,
            ))
        }
    }
    // The data directory itself may be a link the user chose (e.g. onto another disk).
    let md = std::fs::metadata(dir)
        .map_err(|e| Error::io(format!("cannot stat data directory {}", dir.display()), e))?;
    if !md.is_dir() {
        return Err(refused(
            "data directory",
            dir,
            "it exists and is not a directory; choose another --data directory",
        ));
    }
    let mode = md.mode() & 0o777;
    if md.uid() != euid() && md.uid() != 0 {
        warn_once(
            dir,
            &format!(
                "data directory is owned by uid {}, not by this process (uid {}); that user can \
                 replace its files: use a data directory you own",
                md.uid(),
                euid()
            ),
        );
    } else if mode & 0o077 != 0 {
        warn_once(
            dir,
            &format!(
                "data directory has mode {mode:04o}: other local users can reach it; run `chmod \
                 700 {}` (durq creates its files 0600 and its sub-directories 0700 anyway)",
                dir.display()
            ),
        );
    }
    Ok(())
}

/// Creates `dir` (a sub-directory durq owns, such as `journal/` or `state/`) with mode 0700, or
/// tightens an existing one of ours to 0700; refuses a symbolic link or a non-directory.
/// Missing parents are created with the default mode.
pub fn private_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
    }
    match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
    }
    let f = open_dir(dir, "directory", false)?;
    let md = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", dir.display()), e))?;
    if md.uid() == euid() {
        fix_mode(&f, dir, DIR_MODE)?;
    } else {
        warn_once(
            dir,
            &format!(
                "directory is owned by uid {}, not by this process (uid {}); its mode is left \
                 alone",
                md.uid(),
                euid()
            ),
        );
    }
    Ok(())
}

/// Opens a directory (`O_NOFOLLOW` unless `follow`), refusing links and non-directories.
fn open_dir(dir: &Path, what: &str, follow: bool) -> Result<File> {
    let mut flags = libc::O_DIRECTORY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            // With O_DIRECTORY, Linux reports a link as ENOTDIR: ask lstat which it is.
            Some(libc::ELOOP | libc::ENOTDIR)
                if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                symlink_refusal(what, dir)
            }
            Some(libc::ENOTDIR) => refused(what, dir, "it is not a directory; remove it"),
            _ => Error::io(format!("cannot open {}", dir.display()), e),
        })
}

/// Sets the permission bits of an open file to `mode` if they differ (`fchmod`).
pub fn fix_mode(f: &File, path: &Path, mode: u32) -> Result<()> {
    let md = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    if md.mode() & 0o7777 != mode {
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("cannot restrict the mode of {}", path.display()), e))?;
    }
    Ok(())
}

/// `OpenOptions` for a file durq creates: mode 0600 at creation, `O_NOFOLLOW`. Chain the usual
/// `.read(..).write(..).create_new(..)` after it.
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE).custom_flags(libc::O_NOFOLLOW);
    o
}

/// Like `File::create` (write, create, truncate) but mode 0600, refusing a symbolic link, and
/// fixing the mode of a file left over with another mode (e.g. a temp file from a crash).
pub fn create_file(path: &Path) -> io::Result<File> {
    let f = file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "it is a symbolic link, and durq never follows links inside its data directory",
                )
            } else {
                e
            }
        })?;
    let md = f.metadata()?;
    if md.mode() & 0o7777 != FILE_MODE {
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(f)
}

/// Opens an existing file for reading without following a link and without blocking on a FIFO;
/// `None` if it is missing, a link, or not a regular file. For peeking at files another user
/// may have planted (the lock file's pid).
pub fn open_regular_nofollow(path: &Path) -> Option<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    f.metadata().ok().filter(|m| m.is_file())?;
    Some(f)
}

/// Chmods every directory below `dir` (and `dir`) to 0700 and every regular file to 0600, for
/// the entries this process owns; links are not followed. Used after sled opened a directory,
/// since sled creates its files with the process umask. Failures are warned, not fatal.
pub fn restrict_tree(dir: &Path) {
    fn walk(dir: &Path, me: u32) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let p = entry.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.uid() != me {
                continue;
            }
            let want = if md.is_dir() {
                walk(&p, me);
                DIR_MODE
            } else if md.is_file() {
                FILE_MODE
            } else {
                continue;
            };
            if md.mode() & 0o7777 != want {
                // `p` is not a link (lstat) and lives in a directory only we can write.
                if let Err(e) = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(want))
                {
                    tracing::warn!(path = %p.display(), error = %e, "cannot restrict the mode");
                }
            }
        }
    }
    walk(dir, euid());
}

/// [`restrict_tree`] of `dir`, then `value` (for a one-line call after sled opened `dir`).
pub fn restricted<T>(dir: &Path, value: T) -> T {
    restrict_tree(dir);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_refuses_links_and_tightens_modes() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        private_dir(&d).unwrap();
        let mode = std::fs::metadata(&d).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let l = t.path().join("l");
        std::os::unix::fs::symlink(&d, &l).unwrap();
        let e = private_dir(&l).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn create_file_is_0600_and_refuses_links() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        drop(create_file(&p).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        let target = t.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let l = t.path().join("link");
        std::os::unix::fs::symlink(&target, &l).unwrap();
        assert!(create_file(&l).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }
}
