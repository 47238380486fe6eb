//! Where a command's output goes: this process's stdout/stderr, or the frames of a daemon
//! socket connection (so a command answered by a running `work`/`serve` prints exactly what it
//! would print when run alone).
//!
//! Every line is written and flushed at once: `enqueue --batch` relies on it to show each id as
//! soon as that job is durable.

use std::io::Write;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::Mutex;

use super::CliError;

/// One frame sent by the daemon to a client, one JSON object per line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// A line for stdout.
    Out(String),
    /// A line for stderr.
    Err(String),
    /// The command ended with this exit code (and, if it failed, this message).
    Exit {
        /// Exit code.
        code: u8,
        /// Error message, if any.
        error: Option<String>,
    },
}

/// The writing half of a daemon connection, shared by the stdout and stderr sinks.
pub type RemoteTx = Arc<Mutex<OwnedWriteHalf>>;

/// Input and output of a command.
pub struct Io {
    /// The command's stdin.
    pub input: Box<dyn AsyncBufRead + Send + Unpin>,
    remote: Option<RemoteTx>,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("remote", &self.remote.is_some())
            .finish_non_exhaustive()
    }
}

impl Io {
    /// This process's stdin, stdout and stderr.
    pub fn local() -> Io {
        Io {
            input: Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            remote: None,
        }
    }

    /// A daemon connection: `input` is what the client streams after its request line.
    pub fn remote(input: Box<dyn AsyncBufRead + Send + Unpin>, tx: RemoteTx) -> Io {
        Io {
            input,
            remote: Some(tx),
        }
    }

    /// True when answering another process.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Writes one line to stdout and flushes it.
    pub async fn out(&mut self, line: &str) -> Result<(), CliError> {
        match &self.remote {
            Some(tx) => send(tx, &Frame::Out(line.to_string())).await,
            None => {
                let mut o = std::io::stdout().lock();
                writeln!(o, "{line}")
                    .and_then(|()| o.flush())
                    .map_err(|e| CliError::other(format!("cannot write to stdout: {e}")))
            }
        }
    }

    /// Writes one line to stderr.
    pub async fn err(&mut self, line: &str) -> Result<(), CliError> {
        match &self.remote {
            Some(tx) => send(tx, &Frame::Err(line.to_string())).await,
            None => {
                let mut o = std::io::stderr().lock();
                let _ = writeln!(o, "{line}");
                Ok(())
            }
        }
    }
}

/// Sends one frame.
pub async fn send(tx: &RemoteTx, frame: &Frame) -> Result<(), CliError> {
    let mut line = serde_json::to_vec(frame)
        .map_err(|e| CliError::other(format!("cannot encode a reply: {e}")))?;
    line.push(b'\n');
    let mut w = tx.lock().await;
    w.write_all(&line)
        .await
        .map_err(|e| CliError::other(format!("the client went away: {e}")))
}
