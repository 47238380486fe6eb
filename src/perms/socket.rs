//! The daemon socket `DIR/sock`: bound so that no other user can connect even for an instant,
//! and checked by clients before they send a byte.
//!
//! Binding. `bind()` creates the socket inode with mode `0777 & !umask`, and changing the umask
//! around it is process-global (racy in a multi-threaded process), and `fchmod` does not apply
//! to a socket before it is bound. So the socket is bound inside a fresh private directory
//! `DIR/.sock-PID-RANDOM` (created 0700 by `mkdirat`, opened `O_NOFOLLOW`, checked by `fstat` to
//! be ours and 0700), through `/proc/self/fd/N/sock` so the path cannot be redirected by
//! renaming that directory; while it sits there no other user can reach it (connecting needs
//! search permission on every directory of the path). It is then chmod'ed to 0600 relative to the
//! directory's descriptor (`fchmodat`), and moved into place with `renameat` — atomically, also
//! replacing a stale socket a killed owner left behind — and the private directory is removed.
//! A bound socket keeps working after a rename: clients reach it through the inode. A private
//! directory left by an owner killed between `mkdirat` and its removal is removed by the next
//! owner (its pid is in the name).
//!
//! Checking (client side). Before connecting, `DIR/sock` must be a socket (not a link) owned by
//! the client's own uid or by root; after connecting, the peer's uid read with `SO_PEERCRED`
//! must be the client's own or root. Anything else is an impostor (another user who could write
//! DIR): the client refuses with a clear error and sends nothing. The daemon applies the same
//! rule to the peers it accepts.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use super::euid;

/// Name of the socket inside the data directory.
pub const SOCKET_NAME: &str = "sock";

/// True if a peer or file owner `uid` may talk to this process: itself or root.
pub fn trusted_uid(uid: u32) -> bool {
    uid == euid() || uid == 0
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))
}

fn open_dir_fd(path: &Path, nofollow: bool) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let mut flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat_dir(dirfd: RawFd, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: valid dirfd and NUL-terminated name; the returned fd is owned below.
    let fd = unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter; fd is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A socket bound at `DIR/sock` by [`bind_private`], with its inode (to remove only our own).
#[derive(Debug)]
pub struct Bound {
    /// The listening socket (blocking mode).
    pub listener: UnixListener,
    /// Device and inode of the socket file.
    pub id: (u64, u64),
}

/// Binds `dir/sock` with mode 0600, never reachable by another user (see the module docs).
pub fn bind_private(dir: &Path) -> io::Result<Bound> {
    // Clients connect by path: it must fit a `sockaddr_un` (108 bytes with the final NUL).
    let final_path = dir.join(SOCKET_NAME);
    if final_path.as_os_str().len() >= 108 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the path is {} bytes, over the 107 a Unix socket address holds; use a shorter --data path",
                final_path.as_os_str().len()
            ),
        ));
    }
    let dirfd = open_dir_fd(dir, false)?;
    remove_leftovers(dir, dirfd.as_raw_fd());
    let sock = cstr(SOCKET_NAME.as_bytes())?;
    let (name, sub) = {
        let mut tries = 0;
        loop {
            let name = cstr(
                format!(".sock-{}-{:016x}", std::process::id(), fastrand::u64(..)).as_bytes(),
            )?;
            // SAFETY: valid dirfd and NUL-terminated name.
            let rc = unsafe { libc::mkdirat(dirfd.as_raw_fd(), name.as_ptr(), 0o700) };
            if rc == 0 {
                let sub = openat_dir(dirfd.as_raw_fd(), &name);
                break (name, sub);
            }
            let e = io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EEXIST) || tries > 16 {
                return Err(e);
            }
        }
    };
    let sub = match sub {
        Ok(fd) => fd,
        Err(e) => {
            // SAFETY: valid dirfd and name.
            unsafe { libc::unlinkat(dirfd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
            return Err(e);
        }
    };
    let result = (|| {
        let st = fstat(sub.as_raw_fd())?;
        if st.st_uid != euid() || st.st_mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the private directory for binding the socket was replaced by someone else",
            ));
        }
        let via_proc = format!("/proc/self/fd/{}/{SOCKET_NAME}", sub.as_raw_fd());
        let listener = if Path::new("/proc/self/fd").is_dir() {
            UnixListener::bind(&via_proc)?
        } else {
            // Without /proc: an attacker renaming our directory can only make bind fail or
            // land elsewhere, and then fchmodat below finds no socket and we stop.
            UnixListener::bind(
                dir.join(Path::new(std::ffi::OsStr::from_bytes(name.as_bytes())))
                    .join(SOCKET_NAME),
            )?
        };
        // SAFETY: valid fds and NUL-terminated names.
        check(unsafe { libc::fchmodat(sub.as_raw_fd(), sock.as_ptr(), 0o600, 0) })?;
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        check(unsafe {
            libc::fstatat(
                sub.as_raw_fd(),
                sock.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        check(unsafe {
            libc::renameat(
                sub.as_raw_fd(),
                sock.as_ptr(),
                dirfd.as_raw_fd(),
                sock.as_ptr(),
            )
        })?;
        Ok(Bound {
            listener,
            id: (st.st_dev, st.st_ino),
        })
    })();
    if result.is_err() {
        // SAFETY: valid fd and name; a leftover socket inside is removed first.
        unsafe { libc::unlinkat(sub.as_raw_fd(), sock.as_ptr(), 0) };
    }
    drop(sub);
    // SAFETY: valid dirfd and name.
    unsafe { libc::unlinkat(dirfd.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) };
    result
}

/// Removes the private binding directories a killed owner left behind (`.sock-PID-*` of a
/// process that no longer exists, owned by this uid), never following a link.
fn remove_leftovers(dir: &Path, dirfd: RawFd) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(".sock-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        let Ok(cname) = cstr(name.as_bytes()) else {
            continue;
        };
        let Ok(sub) = openat_dir(dirfd, &cname) else {
            continue;
        };
        if fstat(sub.as_raw_fd()).is_ok_and(|st| st.st_uid == euid()) {
            let sock = CString::new(SOCKET_NAME).expect("no NUL");
            // SAFETY: valid fds and NUL-terminated names.
            unsafe {
                libc::unlinkat(sub.as_raw_fd(), sock.as_ptr(), 0);
                libc::unlinkat(dirfd, cname.as_ptr(), libc::AT_REMOVEDIR);
            }
        }
    }
}

/// Removes `dir/sock` if it is still the socket `id` (not one a later owner bound).
pub fn remove_if_ours(dir: &Path, id: (u64, u64)) {
    let path = dir.join(SOCKET_NAME);
    if let Ok(md) = std::fs::symlink_metadata(&path) {
        if (md.dev(), md.ino()) == id {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Checks the socket file before connecting: `Ok(false)` if there is none, `Ok(true)` if it
/// is a socket owned by this process's uid or root, else an error sentence (nothing was sent).
pub fn check_socket_file(path: &Path) -> Result<bool, String> {
    let md = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot check the socket {}: {e}", path.display())),
    };
    if md.file_type().is_symlink() {
        return Err(format!(
            "refusing the socket {}: it is a symbolic link, so it may lead to another user's program; nothing was sent; remove it",
            path.display()
        ));
    }
    if !md.file_type().is_socket() {
        return Err(format!(
            "refusing {}: it is not a socket; nothing was sent; remove it",
            path.display()
        ));
    }
    if !trusted_uid(md.uid()) {
        return Err(format!(
            "refusing the socket {}: it is owned by uid {}, not by you (uid {}) or root, so another user may be impersonating durq; nothing was sent; remove it if it is stale, or use a data directory only you can write",
            path.display(),
            md.uid(),
            euid()
        ));
    }
    Ok(true)
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    // SAFETY: zeroed ucred is a valid out-parameter; `len` holds its size.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Checks a freshly connected client socket: the peer must run as this uid or root.
pub fn check_peer(fd: RawFd, path: &Path) -> Result<(), String> {
    let uid = peer_uid(fd).map_err(|e| {
        format!(
            "cannot read the credentials of the process behind {}: {e}; nothing was sent",
            path.display()
        )
    })?;
    if !trusted_uid(uid) {
        return Err(format!(
            "refusing the socket {}: the process answering on it runs as uid {uid}, not as you (uid {}) or root, so it may be impersonating durq; nothing was sent",
            path.display(),
            euid()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn bound_socket_is_0600_in_place_and_reachable() {
        let t = tempfile::tempdir().unwrap();
        let b = bind_private(t.path()).unwrap();
        let path = t.path().join(SOCKET_NAME);
        let md = std::fs::symlink_metadata(&path).unwrap();
        assert!(md.file_type().is_socket());
        assert_eq!(md.permissions().mode() & 0o7777, 0o600);
        assert_eq!((md.dev(), md.ino()), b.id);
        let names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SOCKET_NAME)]);
        let c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        check_peer(c.as_raw_fd(), &path).unwrap();
        assert_eq!(check_socket_file(&path), Ok(true));
        remove_if_ours(t.path(), b.id);
        assert!(!path.exists());
    }

    #[test]
    fn a_path_too_long_for_clients_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d".repeat(120));
        std::fs::create_dir(&d).unwrap();
        let e = bind_private(&d).unwrap_err().to_string();
        assert!(e.contains("shorter --data path"), "{e}");
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn leftovers_of_a_dead_owner_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let dead = t.path().join(".sock-2147483647-00");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join(SOCKET_NAME), b"").unwrap();
        let live = t.path().join(format!(".sock-{}-00", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        let b = bind_private(t.path()).unwrap();
        assert!(!dead.exists(), "a dead owner's leftover is removed");
        assert!(live.exists(), "a live process's directory is left alone");
        drop(b);
    }

    #[test]
    fn a_link_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let b = bind_private(t.path()).unwrap();
        let l = t.path().join("l");
        std::os::unix::fs::symlink(t.path().join(SOCKET_NAME), &l).unwrap();
        let e = check_socket_file(&l).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        drop(b);
    }
}
