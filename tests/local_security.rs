//! Issue 9, "Nobody gets in", the local side: each attack reproduced against the real `durq`
//! binary and refused.
//!
//! The shared-directory cases run as root (as CI does) against a data directory owned by uid
//! 65534 (`nobody`); the attacker's steps run with nobody's credentials (a child process, or a
//! thread that dropped to nobody with the raw `setresuid` syscall, which changes that thread
//! only). Memory is measured as the peak RSS of the durq child, read with `wait4`.
//!
//! Knobs: `DURQ_TEST_HUGE_LINE_MB` (default 300) and `DURQ_TEST_STDERR_MB` (default 400).

mod support;

use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn env_mb(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A temp base directory other users can traverse, with `data` owned by nobody (mode 0755).
fn nobody_dir() -> (tempfile::TempDir, PathBuf) {
    assert!(
        is_root(),
        "the shared-directory tests run as root (as CI does)"
    );
    let base = tempfile::Builder::new()
        .prefix("durq-sec")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = base.path().join("data");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(std::fs::metadata(&d).unwrap().uid(), NOBODY);
    (base, d)
}

/// Runs `sh -c script` as nobody and asserts it succeeded.
fn as_nobody(script: &str, args: &[&Path]) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Drops the calling thread (only) to nobody's credentials.
fn thread_becomes_nobody() {
    // SAFETY: raw syscalls change the credentials of this thread only (glibc's wrappers would
    // change every thread of the test process).
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<u32>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(libc::syscall(libc::SYS_geteuid) as u32, NOBODY);
    }
}

/// What a child printed, its exit code and its peak RSS in KiB.
struct Measured {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
}

/// Spawns `cmd` with `feed` writing its stdin, collects its output and reaps it with `wait4`
/// for its own peak RSS.
fn run_measured(
    mut cmd: Command,
    feed: impl FnOnce(std::process::ChildStdin) + Send + 'static,
) -> Measured {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || feed(stdin));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = se.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; the pid is our child, not yet reaped.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(rc, child.id() as i32, "wait4 failed");
    std::mem::forget(child);
    let _ = feeder.join();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Measured {
        code,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        max_rss_kib: ru.ru_maxrss,
    }
}

fn cmd_with_umask(data: &Path, mask: libc::mode_t) -> Command {
    let mut c = durq(data);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        c.pre_exec(move || {
            libc::umask(mask);
            Ok(())
        });
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Shared-directory tricks

#[test]
fn a_symlinked_lock_is_refused_and_its_target_never_written() {
    let (base, d) = nobody_dir();
    let target = base.path().join("root-owned-secret");
    std::fs::write(&target, b"precious root data\n").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    as_nobody("ln -s \"$1\" \"$2/lock\"", &[&target, &d]);
    for args in [
        &["stats"][..],
        &["enqueue", "q", "{}"],
        &["work", "q", "--until-empty"],
    ] {
        let o = run(&d, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("symbolic link") && err.contains(&d.join("lock").display().to_string()),
            "{args:?}: the error names the lock and says it is a link: {err}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"precious root data\n");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o644
        );
    }
    assert!(
        !d.join("journal").exists(),
        "a refused open creates nothing"
    );
}

#[test]
fn a_hard_linked_or_fifo_lock_is_refused_without_blocking() {
    let (base, d) = nobody_dir();
    // A FIFO would block a plain open() for reading forever.
    as_nobody("mkfifo \"$1/lock\"", &[&d]);
    let o = run_with_timeout(&d, &["stats"], Duration::from_secs(20));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    std::fs::remove_file(d.join("lock")).unwrap();
    // A hard link to a file of nobody's (protected_hardlinks stops links to root's files).
    let other = d.join("their-file");
    as_nobody(
        "printf keep > \"$1\" && ln \"$1\" \"$2/lock\"",
        &[&other, &d],
    );
    let o = run(&d, &["stats"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("hard links"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep");
    drop(base);
}

/// `run`, but a durq still running after `timeout` is killed and the test fails.
fn run_with_timeout(data: &Path, args: &[&str], timeout: Duration) -> std::process::Output {
    let child = durq(data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(o) => o.unwrap(),
        Err(_) => {
            // SAFETY: `pid` is our child; it is not reaped while the waiting thread blocks.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("durq {args:?} hung for {timeout:?}");
        }
    }
}

/// An impostor listening on `DIR/sock` as nobody: counts the connections and bytes it gets
/// and answers every connection with a fake job id and exit 0.
struct Impostor {
    bytes: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Impostor {
    /// `bind_as_root`: the socket file is bound (and so owned) by root, but `listen()` runs as
    /// nobody, so only `SO_PEERCRED` tells them apart.
    fn start(path: PathBuf, bind_as_root: bool) -> Impostor {
        let bytes = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, c, s) = (bytes.clone(), conns.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let root_fd = bind_as_root.then(|| bind_only(&path));
        let thread = std::thread::spawn(move || {
            use std::os::unix::io::FromRawFd;
            thread_becomes_nobody();
            let listener = match root_fd {
                Some(fd) => {
                    // SAFETY: `fd` is a bound, not yet listening socket we own.
                    assert_eq!(unsafe { libc::listen(fd, 16) }, 0);
                    unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) }
                }
                None => std::os::unix::net::UnixListener::bind(&path).unwrap(),
            };
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((mut st, _)) => {
                        c.fetch_add(1, Ordering::AcqRel);
                        st.set_nonblocking(false).unwrap();
                        st.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        let _ = st.write_all(
                            b"{\"out\":\"0000000000000000000000000000FAKE\"}\n{\"exit\":{\"code\":0,\"error\":null}}\n",
                        );
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = st.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            b.fetch_add(n, Ordering::AcqRel);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Impostor {
            bytes,
            conns,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        // Give a client that did connect the time to send what it would send.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap();
        (
            self.conns.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

fn bind_only(path: &Path) -> i32 {
    // SAFETY: plain socket calls on a fresh fd with a correctly sized sockaddr_un.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let p = path.as_os_str().as_bytes();
        for (i, b) in p.iter().enumerate() {
            addr.sun_path[i] = *b as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + p.len() + 1;
        assert_eq!(
            libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len as u32),
            0
        );
        fd
    }
}

#[test]
fn an_impostor_socket_of_another_user_receives_nothing() {
    let (_base, d) = nobody_dir();
    let imp = Impostor::start(d.join("sock"), false);
    assert_eq!(std::fs::metadata(d.join("sock")).unwrap().uid(), NOBODY);
    let o = run_stdin(&d, &["enqueue", "q"], br#"{"secret":"payload"}"#);
    let (_, bytes) = imp.finish();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("FAKE"));
    assert!(
        err.contains("owned by uid 65534") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(bytes, 0, "the impostor saw bytes");
    assert!(!d.join("journal").exists(), "nothing stored");
}

#[test]
fn an_impostor_listening_as_another_user_on_a_root_owned_socket_is_caught_by_peercred() {
    let (_base, d) = nobody_dir();
    let imp = Impostor::start(d.join("sock"), true);
    assert_eq!(std::fs::metadata(d.join("sock")).unwrap().uid(), 0);
    let o = run_stdin(&d, &["enqueue", "q"], br#"{"secret":"payload"}"#);
    let (conns, bytes) = imp.finish();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("runs as uid 65534") && err.contains("nothing was sent"),
        "{err}"
    );
    assert_eq!(conns, 1, "the client connected (the file looked fine) ...");
    assert_eq!(
        bytes, 0,
        "... but sent nothing once SO_PEERCRED named nobody"
    );
}

#[test]
fn the_daemon_socket_is_0600_and_never_left_in_a_temp_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let mut p = start_owner(&d, &["work", "q", "--exec", "cat >/dev/null"]);
    let md = std::fs::symlink_metadata(d.join("sock")).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".sock")), "{names:?}");
    // Served through the socket (the lock is held by the worker).
    let id = ok(&run(&d, &["enqueue", "idle", "{}"]));
    assert!(!id.trim().is_empty());
    assert_eq!(stats(&d)["queues"]["idle"]["waiting"], 1);
    assert_eq!(p.term().code(), Some(0));
    assert!(!d.join("sock").exists(), "the owner removes its socket");
}

// ---------------------------------------------------------------------------------------------
// Permissions

/// Every directory under (and including) `d` must be 0700, every file 0600, every socket 0600.
fn mode_violations(d: &Path) -> Vec<String> {
    fn walk(p: &Path, out: &mut Vec<String>, seen: &mut usize) {
        let md = std::fs::symlink_metadata(p).unwrap();
        let mode = md.permissions().mode() & 0o7777;
        *seen += 1;
        let want = if md.is_dir() {
            0o700
        } else if md.is_file() || md.file_type().is_socket() {
            0o600
        } else {
            out.push(format!("{}: unexpected file type", p.display()));
            return;
        };
        if mode != want {
            out.push(format!("{}: {mode:04o}, want {want:04o}", p.display()));
        }
        if md.is_dir() {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), out, seen);
            }
        }
    }
    let mut out = Vec::new();
    let mut seen = 0;
    walk(d, &mut out, &mut seen);
    assert!(
        seen > 10,
        "only {seen} entries: the test did not exercise durq"
    );
    out
}

fn check_modes_under_umask(mask: libc::mode_t) {
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("nested").join("data");
    let inbox = base.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    let run_u = |args: &[&str]| {
        cmd_with_umask(&d, mask)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    ok(&run_u(&["enqueue", "q", r#"{"n":1}"#]));
    // An owner with a watcher (watch records, socket), answering clients.
    let child = cmd_with_umask(&d, mask)
        .args([
            "watch",
            inbox.to_str().unwrap(),
            "--queue",
            "files",
            "--debounce",
            "50ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    wait_for("the daemon socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(d.join("sock"))
            .ok()
            .map(|_| ())
    });
    std::fs::write(inbox.join("a.txt"), b"hello").unwrap();
    ok(&run_u(&["enqueue", "q", r#"{"n":2}"#]));
    wait_for("the file job", Duration::from_secs(20), || {
        (stats(&d)["queues"]["files"]["waiting"] == 1).then_some(())
    });
    let live = mode_violations(&d);
    assert!(
        live.is_empty(),
        "umask {mask:03o}, while serving: {live:#?}"
    );
    assert_eq!(p.term().code(), Some(0));
    ok(&run_u(&[
        "work",
        "q",
        "files",
        "--until-empty",
        "--exec",
        "cat >/dev/null",
    ]));
    ok(&run_u(&["check"]));
    let after = mode_violations(&d);
    assert!(after.is_empty(), "umask {mask:03o}, at rest: {after:#?}");
    // The parent durq created for --data has the ordinary mode (it is not durq's).
    let parent = std::fs::metadata(base.path().join("nested")).unwrap();
    assert_eq!(parent.permissions().mode() & 0o777, 0o777 & !mask);
}

#[test]
fn files_are_private_under_umask_000() {
    check_modes_under_umask(0o000);
}

#[test]
fn files_are_private_under_umask_022() {
    check_modes_under_umask(0o022);
}

#[test]
fn an_existing_open_data_dir_gets_a_warning_and_loose_subdirs_are_tightened() {
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("data");
    ok(&run(&d, &["enqueue", "q", "{}"]));
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.join("journal"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = run(&d, &["stats"]);
    ok(&o);
    let err = stderr(&o);
    assert!(
        err.contains("mode 0755") && err.contains("other local users"),
        "a warning names the mode: {err}"
    );
    assert_eq!(
        err.matches("other local users").count(),
        1,
        "warned once: {err}"
    );
    assert_eq!(
        std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o755,
        "the data directory's own mode is the owner's choice"
    );
    assert_eq!(
        std::fs::metadata(d.join("journal"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
}

// ---------------------------------------------------------------------------------------------
// Bounded inputs

#[test]
fn invalid_utf8_payloads_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    ok(&run(&d, &["enqueue", "q", "1"]));
    let before = tree(&d);
    let o = run_stdin(&d, &["enqueue", "q"], b"\"\xff\"");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));
    assert_eq!(tree(&d), before, "a refused enqueue changes nothing");
    let o = durq(&d)
        .args(["enqueue", "q"])
        .arg(std::ffi::OsStr::from_bytes(b"\"\xfe\""))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(tree(&d), before);
    let o = run_stdin(
        &d,
        &["enqueue", "q", "--batch"],
        b"{\"ok\":1}\n\"\xc3\x28\"\n{\"never\":1}\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("UTF-8"),
        "{}",
        stderr(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert_eq!(stats(&d)["queues"]["q"]["waiting"], 2);
    // Through a running owner's socket too.
    let mut p = start_owner(&d, &["work", "other", "--exec", "true"]);
    let o = run_stdin(&d, &["enqueue", "q"], b"[\"\xff\"]");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("UTF-8"), "{}", stderr(&o));
    assert_eq!(stats(&d)["queues"]["q"]["waiting"], 2);
    assert_eq!(p.term().code(), Some(0));
}

/// Feeds `{"ok":1}\n` then a line of `mb` MiB that never ends.
fn endless_line(mb: usize) -> impl FnOnce(std::process::ChildStdin) + Send + 'static {
    move |mut stdin| {
        let _ = stdin.write_all(b"{\"ok\":1}\n\"");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..mb {
            if stdin.write_all(&chunk).is_err() {
                return; // the reader gave up: what we want
            }
        }
    }
}

#[test]
fn a_huge_batch_line_is_refused_in_bounded_memory() {
    let mb = env_mb("DURQ_TEST_HUGE_LINE_MB", 300);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let mut c = durq(&dir.path().join("baseline"));
    c.args(["enqueue", "q", "--batch"]);
    let base = run_measured(c, |mut stdin| {
        let _ = stdin.write_all(b"{\"ok\":1}\n{\"ok\":2}\n");
    });
    assert_eq!(base.code, Some(0), "{}", base.stderr);
    let mut c = durq(&d);
    c.args(["enqueue", "q", "--batch"]);
    let m = run_measured(c, endless_line(mb));
    eprintln!(
        "huge batch line of {mb} MiB: exit {:?}, durq peak RSS {} KiB (baseline batch of two \
         small lines: {} KiB)",
        m.code, m.max_rss_kib, base.max_rss_kib
    );
    assert_eq!(m.code, Some(2), "{}", m.stderr);
    assert!(
        m.stderr.contains("line 2") && m.stderr.contains("longer than"),
        "{}",
        m.stderr
    );
    assert_eq!(
        m.stdout.lines().count(),
        1,
        "line 1 was enqueued and printed"
    );
    assert_eq!(stats(&d)["queues"]["q"]["waiting"], 1);
    // The payload limit is 16 MiB: the line buffer holds at most that plus 64 KiB + 1 byte.
    assert!(
        m.max_rss_kib - base.max_rss_kib < 40 * 1024,
        "peak RSS {} KiB for a {mb} MiB line vs {} KiB for two small lines",
        m.max_rss_kib,
        base.max_rss_kib
    );
}

#[test]
fn a_huge_batch_line_sent_to_a_running_owner_is_refused_in_bounded_memory() {
    let mb = env_mb("DURQ_TEST_HUGE_LINE_MB", 300);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let child = durq(&d)
        .args(["work", "other", "--exec", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut p = Proc(child);
    wait_for("the daemon socket", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(d.join("sock"))
            .ok()
            .map(|_| ())
    });
    let hwm = || -> i64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // Warm the owner up with a small batch through the socket, then take its peak as baseline.
    ok(&run_stdin(
        &d,
        &["enqueue", "q0", "--batch"],
        b"{\"ok\":1}\n",
    ));
    let before = hwm();
    let mut c = durq(&d);
    c.args(["enqueue", "q", "--batch"]);
    let m = run_measured(c, endless_line(mb));
    assert_eq!(m.code, Some(2), "{}", m.stderr);
    assert!(m.stderr.contains("line 2"), "{}", m.stderr);
    let after = hwm();
    eprintln!(
        "huge batch line of {mb} MiB via the socket: client peak {} KiB, owner VmHWM {before} KiB \
         before, {after} KiB after",
        m.max_rss_kib
    );
    assert!(
        after - before < 40 * 1024,
        "owner VmHWM grew from {before} to {after} KiB"
    );
    assert!(m.max_rss_kib < 96 * 1024, "client {} KiB", m.max_rss_kib);
    assert_eq!(stats(&d)["queues"]["q"]["waiting"], 1);
    assert_eq!(p.term().code(), Some(0));
}

/// Runs one job that writes `mb` MiB to stderr (and 16 MiB to stdout), fails with status 3;
/// returns the worker's peak RSS (KiB) and the dead letter's error.
fn flood_job(mb: usize) -> (i64, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    ok(&run(&d, &["enqueue", "q", "{}", "--max-retries", "0"]));
    let script = format!(
        "cat >/dev/null; head -c {} /dev/zero | tr '\\0' x >&2; printf 'THE-END' >&2; \
         head -c {} /dev/zero; exit 3",
        mb << 20,
        16 << 20
    );
    let mut c = durq(&d);
    c.args(["work", "q", "--until-empty", "--exec", &script]);
    let m = run_measured(c, |_| {});
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let dead = json_lines(&ok(&run(&d, &["--json", "dlq", "list", "q"])));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let err = dead[0]["errors"][0]["error"].as_str().unwrap().to_string();
    (m.max_rss_kib, err)
}

#[test]
fn a_job_flooding_stderr_costs_the_worker_kib_and_its_error_keeps_the_end() {
    let mb = env_mb("DURQ_TEST_STDERR_MB", 400);
    let (base_rss, base_err) = flood_job(0);
    assert_eq!(base_err, "command exited with status 3: THE-END");
    let started = Instant::now();
    let (rss, err) = flood_job(mb);
    eprintln!(
        "job writing {mb} MiB to stderr: worker peak RSS {rss} KiB (baseline job writing 7 bytes: \
         {base_rss} KiB), {:?}",
        started.elapsed()
    );
    assert!(
        err.starts_with("command exited with status 3: "),
        "{}",
        &err[..80.min(err.len())]
    );
    assert!(
        err.ends_with("xxxxTHE-END"),
        "the error keeps the last bytes"
    );
    assert!(
        err.len() <= 2048 + 64,
        "the error is a bounded tail: {} bytes",
        err.len()
    );
    assert!(
        rss - base_rss < 8 * 1024,
        "worker peak RSS {rss} KiB for {mb} MiB of stderr vs {base_rss} KiB for 7 bytes"
    );
}

#[test]
fn the_line_cap_still_takes_a_payload_of_exactly_the_limit() {
    const LIMIT: usize = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let line = |n: usize| {
        let mut v = Vec::with_capacity(n + 1);
        v.push(b'"');
        v.resize(n - 1, b'a');
        v.extend_from_slice(b"\"\n");
        v
    };
    let mut input = line(LIMIT);
    input.extend_from_slice(&line(LIMIT + 1));
    let o = run_stdin(&d, &["enqueue", "q", "--batch"], &input);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("over the limit"),
        "a payload one byte over is refused by the payload check, not the line cap: {}",
        stderr(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert_eq!(stats(&d)["queues"]["q"]["waiting"], 1);
}
