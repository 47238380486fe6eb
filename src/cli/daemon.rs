//! One owner, many clients: the Unix socket `DIR/sock` through which a running `work`, `watch`
//! or `serve` answers the short commands of other processes.
//!
//! Protocol: the client sends one JSON line `{"json": bool, "cmd": ClientCmd}`, then streams
//! its stdin (if the command reads it) and half-closes. The daemon answers with JSON lines
//! ([`Frame`]): stdout lines, stderr lines, and a final exit frame. Both sides run the same
//! command code ([`super::client::execute`]), so the output is identical.
//!
//! Invariants:
//! - The socket is created by the lock holder only, with mode 0600, and is never reachable by
//!   another user, even for an instant: it is bound in a private 0700 directory and renamed over
//!   whatever socket file a killed holder left behind (holding the lock proves it is stale);
//!   see [`crate::perms::socket`] for why and how.
//! - A client sends nothing before it has checked that the socket file is owned by its own uid
//!   (or root) and that the process answering on it runs as its own uid (or root), read with
//!   `SO_PEERCRED`; otherwise it exits 1 with an error naming the socket and the foreign uid.
//!   The daemon drops connections from peers of another uid (root aside) the same way.
//! - A client that finds no live socket but a locked directory (a holder starting up, or
//!   another short command) waits a few seconds for either to change before giving up.

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::perms::socket;
use crate::queue::Queue;

use super::args::ClientCmd;
use super::client::{execute, Ctx};
use super::sink::{send, Frame, Io};
use super::{print_error, CliError, Globals};

/// How long a client or an owner waits for a busy data directory.
const WAIT_FOR_HOLDER: Duration = Duration::from_secs(5);

/// The socket of a data directory.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("sock")
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    json: bool,
    cmd: ClientCmd,
}

/// True if a process holds the directory's lock right now.
pub fn lock_held(data: &Path) -> bool {
    let Some(f) = crate::perms::open_regular_nofollow(&data.join("lock")) else {
        return false;
    };
    // SAFETY: flock on a valid, owned file descriptor; closing `f` drops our shared lock.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

fn holder(data: &Path) -> u32 {
    crate::lock::holder_pid(&data.join("lock")).unwrap_or(0)
}

/// Connects to the daemon of `data`, or says there is none (the caller opens the directory).
pub async fn connect(data: &Path) -> Result<Option<UnixStream>, CliError> {
    if !data.exists() {
        return Ok(None);
    }
    let path = socket_path(data);
    let start = Instant::now();
    loop {
        if socket::check_socket_file(&path).map_err(CliError::other)? {
            if let Ok(s) = UnixStream::connect(&path).await {
                socket::check_peer(s.as_raw_fd(), &path).map_err(CliError::other)?;
                return Ok(Some(s));
            }
        }
        if !lock_held(data) {
            return Ok(None);
        }
        if start.elapsed() > WAIT_FOR_HOLDER {
            return Err(CliError::other(format!(
                "data directory {} is in use by process {} which does not answer on {}; wait for it to finish or stop it",
                data.display(),
                holder(data),
                path.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Sends `cmd` to the daemon and relays its answer; returns the exit code.
pub async fn run_remote(stream: UnixStream, json: bool, cmd: &ClientCmd) -> Result<u8, CliError> {
    let (r, mut w) = stream.into_split();
    let mut req = serde_json::to_vec(&Request {
        json,
        cmd: cmd.clone(),
    })
    .map_err(|e| CliError::other(format!("cannot encode the request: {e}")))?;
    req.push(b'\n');
    w.write_all(&req)
        .await
        .map_err(|e| CliError::other(format!("cannot talk to the running durq: {e}")))?;
    if cmd.reads_stdin() {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let _ = tokio::io::copy(&mut stdin, &mut w).await;
            let _ = w.shutdown().await;
        });
    } else {
        let _ = w.shutdown().await;
    }
    let mut lines = BufReader::new(r).lines();
    loop {
        let line = lines.next_line().await.map_err(|e| {
            CliError::other(format!("lost the connection to the running durq: {e}"))
        })?;
        let Some(line) = line else {
            return Err(CliError::other(
                "the running durq closed the connection before answering; it may have stopped",
            ));
        };
        let frame: Frame = serde_json::from_str(&line).map_err(|e| {
            CliError::other(format!("the running durq sent an unreadable answer: {e}"))
        })?;
        match frame {
            Frame::Out(s) => {
                use std::io::Write;
                let mut o = std::io::stdout().lock();
                writeln!(o, "{s}")
                    .and_then(|()| o.flush())
                    .map_err(|e| CliError::other(format!("cannot write to stdout: {e}")))?;
            }
            Frame::Err(s) => eprintln!("{s}"),
            Frame::Exit { code, error } => {
                if let Some(e) = error {
                    print_error(&e);
                }
                return Ok(code);
            }
        }
    }
}

/// Opens the data directory for a long-running command, waiting briefly if a short command
/// holds it; a long-running holder makes this fail at once, naming its pid.
pub async fn open_owner(g: &Globals, lease: Option<Duration>) -> Result<Queue, CliError> {
    open_owner_with(g, lease, &[]).await
}

/// As [`open_owner`], with settings for some queues (from `serve --config`).
pub async fn open_owner_with(
    g: &Globals,
    lease: Option<Duration>,
    queues: &[(String, crate::QueueConfig)],
) -> Result<Queue, CliError> {
    let start = Instant::now();
    loop {
        let mut b = g.builder();
        if let Some(l) = lease {
            b = b.lease(l);
        }
        for (name, cfg) in queues {
            b = b.queue(name.clone(), cfg.clone());
        }
        match b.open().await {
            Ok(q) => return Ok(q),
            Err(crate::Error::Locked { pid, .. }) => {
                let served = UnixStream::connect(socket_path(&g.data)).await.is_ok();
                if served || start.elapsed() > WAIT_FOR_HOLDER {
                    return Err(CliError::other(format!(
                        "data directory {} is already held by durq process {pid}; stop it or use another --data directory",
                        g.data.display()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs a long-running command as the data directory's owner: opens it ([`open_owner`]),
/// answers the other commands over the socket while `body` runs, then removes the socket and
/// shuts the queue down, whatever `body` returned (its error wins over the shutdown's).
pub async fn as_owner<F, Fut>(g: &Globals, lease: Option<Duration>, body: F) -> Result<(), CliError>
where
    F: FnOnce(Queue) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    as_owner_with(g, lease, &[], body).await
}

/// As [`as_owner`], with settings for some queues (see [`open_owner_with`]).
pub async fn as_owner_with<F, Fut>(
    g: &Globals,
    lease: Option<Duration>,
    queues: &[(String, crate::QueueConfig)],
    body: F,
) -> Result<(), CliError>
where
    F: FnOnce(Queue) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let queue = open_owner_with(g, lease, queues).await?;
    if g.redis.is_some() {
        // On Redis there is no directory to own and no socket: every process talks to Redis.
        let result = body(queue.clone()).await;
        let closed = queue.shutdown().await;
        result?;
        closed?;
        return Ok(());
    }
    let daemon = match Daemon::start(&g.data, queue.clone()) {
        Ok(d) => d,
        Err(e) => {
            let _ = queue.shutdown().await;
            return Err(e);
        }
    };
    let result = body(queue.clone()).await;
    daemon.stop();
    let closed = queue.shutdown().await;
    result?;
    closed?;
    Ok(())
}

/// A running daemon; [`Daemon::stop`] (or drop) removes the socket.
#[derive(Debug)]
pub struct Daemon {
    dir: PathBuf,
    id: (u64, u64),
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// Binds `DIR/sock` (mode 0600) and answers clients with `queue`. The caller must hold the
    /// directory's lock (it opened `queue`).
    pub fn start(data: &Path, queue: Queue) -> Result<Daemon, CliError> {
        let path = socket_path(data);
        let bound = socket::bind_private(data).map_err(|e| {
            CliError::other(format!("cannot create the socket {}: {e}", path.display()))
        })?;
        let id = bound.id;
        let listener = bound
            .listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(bound.listener))
            .map_err(|e| {
                socket::remove_if_ours(data, id);
                CliError::other(format!(
                    "cannot listen on the socket {}: {e}",
                    path.display()
                ))
            })?;
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => match socket::peer_uid(stream.as_raw_fd()) {
                        Ok(uid) if socket::trusted_uid(uid) => {
                            tokio::spawn(answer(stream, queue.clone()));
                        }
                        other => {
                            tracing::warn!(peer = ?other, "refused a daemon client of another user")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "daemon socket accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Daemon {
            dir: data.to_path_buf(),
            id,
            task,
        })
    }

    /// Stops answering and removes the socket.
    pub fn stop(self) {}
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.task.abort();
        socket::remove_if_ours(&self.dir, self.id);
    }
}

async fn answer(stream: UnixStream, queue: Queue) {
    let (r, w) = stream.into_split();
    let tx = Arc::new(Mutex::new(w));
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    let result = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let mut io = Io::remote(Box::new(reader), tx.clone());
                let mut ctx = Ctx::open(queue);
                execute(&req.cmd, req.json, &mut ctx, &mut io).await
            }
            Err(e) => Err(CliError::usage(format!(
                "the request is not understood by this durq ({e}); use the same durq version"
            ))),
        },
        Err(e) => Err(CliError::other(format!("cannot read the request: {e}"))),
    };
    let frame = match result {
        Ok(()) => Frame::Exit {
            code: 0,
            error: None,
        },
        Err(e) => Frame::Exit {
            code: e.code,
            error: Some(e.msg),
        },
    };
    let _ = send(&tx, &frame).await;
    let _ = tx.lock().await.shutdown().await;
}
