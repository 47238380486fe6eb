//! A handler that runs a shell command per job: `sh -c CMD` with the payload on stdin and the
//! environment variables `DURQ_JOB_ID`, `DURQ_QUEUE`, `DURQ_KIND`, `DURQ_ATTEMPT` and `DURQ_KEY`
//! (empty when the job has no partition key).
//!
//! Exit status 0 is done. Any other status is a failed attempt (retried per the job's policy)
//! whose error is the status and the last 2 KiB of stderr; exit status 100 gives up at once
//! (straight to the dead letters).
//!
//! Each command runs in a process group of its own. When the pool drops the handler before the
//! command ended (an execution timeout, or shutdown after its grace period), the whole group
//! gets SIGTERM, then SIGKILL after the kill grace (default 5 s) — so a command's children
//! (`sh -c 'a | b'`, `sleep` under `sh`) go too. The shell is reaped only after the SIGKILL,
//! so its pid (the group's id) cannot be reused by another process meanwhile.
//!
//! Memory per job is O(KiB) whatever the command prints: stdout goes to `/dev/null`, and stderr
//! is read in 8 KiB chunks into a [`Tail`] that keeps only its last 2 KiB.

use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::handler::{Handler, Outcome};
use crate::job::Job;

/// Exit status that means "give up now".
pub const EXIT_GIVE_UP: i32 = 100;
/// How much of stderr is kept in the error.
const STDERR_TAIL: usize = 2048;

/// Default time between SIGTERM and SIGKILL for a command that is cancelled.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Runs `sh -c CMD` per job.
#[derive(Clone, Debug)]
pub struct ShellHandler {
    cmd: String,
    kill_grace: Duration,
}

impl ShellHandler {
    /// A handler running `cmd` through `sh -c`.
    pub fn new(cmd: impl Into<String>) -> Self {
        ShellHandler {
            cmd: cmd.into(),
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }

    /// Time a cancelled command's process group gets between SIGTERM and SIGKILL (default 5 s).
    pub fn kill_grace(mut self, d: Duration) -> Self {
        self.kill_grace = d;
        self
    }
}

/// Owns a running command; if dropped before [`Running::finished`], signals its process group
/// (SIGTERM, then SIGKILL after `grace`) and reaps it in the background.
struct Running {
    child: Option<Child>,
    grace: Duration,
}

impl Running {
    fn child(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| unreachable!("taken only by finished() or drop"))
    }

    /// The command ended and was reaped: nothing to kill.
    fn finished(mut self) {
        self.child = None;
    }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    // ESRCH (the group is gone) is fine.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The shell is not reaped yet, so this pid still names its group.
        let Some(pgid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            return; // already reaped
        };
        signal_group(pgid, libc::SIGTERM);
        let grace = self.grace;
        let reap = async move {
            let _ = tokio::time::timeout(grace, child.wait()).await;
            // Whatever of the group outlived the grace (the shell's children too).
            signal_group(pgid, libc::SIGKILL);
            let _ = child.wait().await;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(reap);
            }
            Err(_) => {
                // No runtime to wait in: no grace.
                signal_group(pgid, libc::SIGKILL);
            }
        }
    }
}

/// The last [`STDERR_TAIL`] bytes of a stream, in bounded memory.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
}

impl Tail {
    /// Appends `bytes`, forgetting all but the last [`STDERR_TAIL`] bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= STDERR_TAIL {
            self.buf.clear();
            self.buf
                .extend_from_slice(&bytes[bytes.len() - STDERR_TAIL..]);
            return;
        }
        let over = (self.buf.len() + bytes.len()).saturating_sub(STDERR_TAIL);
        self.buf.drain(..over);
        self.buf.extend_from_slice(bytes);
    }

    /// The tail as text: invalid UTF-8 replaced, a character cut at the start dropped, trimmed.
    pub fn text(&self) -> String {
        let start = self
            .buf
            .iter()
            .take(3)
            .take_while(|b| (**b & 0xC0) == 0x80)
            .count();
        String::from_utf8_lossy(&self.buf[start..])
            .trim()
            .to_string()
    }
}

#[async_trait]
impl Handler for ShellHandler {
    async fn handle(&self, job: Job) -> Outcome {
        let mut child = match Command::new("sh")
            .arg("-c")
            .arg(&self.cmd)
            .env("DURQ_JOB_ID", job.id.to_string())
            .env("DURQ_QUEUE", &job.queue)
            .env("DURQ_KIND", &job.kind)
            .env("DURQ_ATTEMPT", job.attempts.to_string())
            .env("DURQ_KEY", job.key.as_deref().unwrap_or(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(c) => Running {
                child: Some(c),
                grace: self.kill_grace,
            },
            Err(e) => return Outcome::Retry(format!("cannot start `sh -c {}`: {e}", self.cmd)),
        };
        let stdin = child.child().stdin.take();
        let payload = job.payload;
        let feed = async move {
            if let Some(mut w) = stdin {
                // A command that does not read its stdin closes the pipe: not an error.
                let _ = w.write_all(&payload).await;
                let _ = w.shutdown().await;
            }
        };
        let mut stderr = child.child().stderr.take();
        let read = async move {
            let mut tail = Tail::default();
            if let Some(r) = stderr.as_mut() {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = r.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    tail.push(&chunk[..n]);
                }
            }
            tail
        };
        let (_, err, status) = tokio::join!(feed, read, child.child().wait());
        if status.is_ok() {
            child.finished();
        }
        match status {
            Ok(s) if s.success() => Outcome::Done,
            Ok(s) => {
                let what = match s.code() {
                    Some(c) => format!("command exited with status {c}"),
                    None => "command was killed by a signal".to_string(),
                };
                let t = err.text();
                let msg = if t.is_empty() {
                    what
                } else {
                    format!("{what}: {t}")
                };
                if s.code() == Some(EXIT_GIVE_UP) {
                    Outcome::GiveUp(msg)
                } else {
                    Outcome::Retry(msg)
                }
            }
            Err(e) => Outcome::Retry(format!("cannot wait for the command: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_in_bounded_memory() {
        let mut t = Tail::default();
        for i in 0..10_000u32 {
            t.push(format!("line {i}\n").as_bytes());
            assert!(t.buf.len() <= STDERR_TAIL);
        }
        t.push(&vec![b'x'; 3 * STDERR_TAIL]);
        t.push(b"THE-END");
        let s = t.text();
        assert!(s.ends_with("xxxTHE-END"), "{s}");
        assert_eq!(s.len(), STDERR_TAIL);
        // A multi-byte character cut at the start is dropped, not shown as garbage.
        let mut t = Tail::default();
        t.push("é".repeat(STDERR_TAIL).as_bytes());
        assert!(!t.text().contains('\u{fffd}'));
    }
}
