//! A handler that runs a shell command per job: `sh -c CMD` with the payload on stdin and the
//! environment variables `DURQ_JOB_ID`, `DURQ_QUEUE`, `DURQ_KIND`, `DURQ_ATTEMPT` and `DURQ_KEY`
//! (empty when the job has no partition key).
//!
//! Exit status 0 is done. Any other status is a failed attempt (retried per the job's policy)
//! whose error is the status and the last 2 KiB of stderr; exit status 100 gives up at once
//! (straight to the dead letters). A child still running when the pool aborts the handler
//! (shutdown after the grace period) is killed.
//!
//! Memory per job is O(KiB) whatever the command prints: stdout goes to `/dev/null`, and stderr
//! is read in 8 KiB chunks into a [`Tail`] that keeps only its last 2 KiB.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::handler::{Handler, Outcome};
use crate::job::Job;

/// Exit status that means "give up now".
pub const EXIT_GIVE_UP: i32 = 100;
/// How much of stderr is kept in the error.
const STDERR_TAIL: usize = 2048;

/// Runs `sh -c CMD` per job.
#[derive(Clone, Debug)]
pub struct ShellHandler {
    cmd: String,
}

impl ShellHandler {
    /// A handler running `cmd` through `sh -c`.
    pub fn new(cmd: impl Into<String>) -> Self {
        ShellHandler { cmd: cmd.into() }
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
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return Outcome::Retry(format!("cannot start `sh -c {}`: {e}", self.cmd)),
        };
        let stdin = child.stdin.take();
        let payload = job.payload;
        let feed = async move {
            if let Some(mut w) = stdin {
                // A command that does not read its stdin closes the pipe: not an error.
                let _ = w.write_all(&payload).await;
                let _ = w.shutdown().await;
            }
        };
        let mut stderr = child.stderr.take();
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
        let (_, err, status) = tokio::join!(feed, read, child.wait());
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
