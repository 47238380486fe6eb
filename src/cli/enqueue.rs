//! `durq enqueue`: one job from an argument or stdin, or `--batch` NDJSON from stdin.
//!
//! Invariants:
//! - Every value of a job is checked before the data directory is opened: a refused single
//!   enqueue changes nothing; a refused batch line stops the batch with exit 2 naming the line,
//!   and only the lines before it were enqueued (their ids were printed).
//! - Batch ids are printed in input order, each line flushed as soon as its job is durable.
//!   Lines already read are enqueued together (one atomic batch, one sync) while the next
//!   lines are read, so a fast producer is not held to one sync per line.
//! - Memory is bounded whatever the input: a batch line is read with a cap ([`LINE_CAP`]: the
//!   payload limit plus 64 KiB for `--spec` fields and whitespace), so a line that never ends is
//!   refused after at most `LINE_CAP + 1` of its bytes; payloads read but not yet acknowledged
//!   hold at most [`MAX_IN_FLIGHT`] bytes (the reader waits for the store beyond that).
//! - A payload is UTF-8 JSON: invalid UTF-8 (even inside a JSON string, which serde_json's
//!   skipping parser lets through) is refused with exit 2 before anything is stored.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::job::{Enqueued, NewJob, DEFAULT_MAX_PAYLOAD};

use super::args::EnqueueArgs;
#[cfg(test)]
use super::args::JobOpts;
use super::client::Ctx;
use super::sink::Io;
use super::CliError;
use crate::wire::trim;
pub use crate::wire::{build, spec_job, JobSpec};

/// Most jobs sent to the store in one atomic batch.
const MAX_CHUNK: usize = 256;
/// Longest `--batch` line accepted, newline excluded.
pub const LINE_CAP: usize = DEFAULT_MAX_PAYLOAD + 64 * 1024;
/// Most payload bytes read from a batch but not yet acknowledged by the store.
pub const MAX_IN_FLIGHT: usize = 64 << 20;

/// Runs `durq enqueue`.
pub async fn run(a: &EnqueueArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    if a.batch {
        if a.payload.as_deref().is_some_and(|p| p != "-") {
            return Err(CliError::usage(
                "--batch reads its payloads from stdin; leave out the PAYLOAD argument",
            ));
        }
        return batch(a, json, ctx, io).await;
    }
    let payload = match a.payload.as_deref() {
        Some(p) if p != "-" => p.as_bytes().to_vec(),
        _ => {
            use std::io::IsTerminal;
            if !io.is_remote() && std::io::stdin().is_terminal() {
                io.err("reading the JSON payload from stdin (end it with Ctrl-D)")
                    .await?;
            }
            read_all(io).await?
        }
    };
    let job = build(&a.queue, payload, &a.opts)?;
    let dedup = job.dedup.as_ref().map(|(k, _)| k.clone());
    let q = ctx.queue().await?;
    let e = q.enqueue(job).await?;
    report(io, json, &e, dedup.as_deref()).await
}

async fn read_all(io: &mut Io) -> Result<Vec<u8>, CliError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    (&mut io.input)
        .take(DEFAULT_MAX_PAYLOAD as u64 + 2)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| CliError::other(format!("cannot read the payload from stdin: {e}")))?;
    Ok(buf)
}

/// Prints one enqueue's result (and the duplicate notice).
async fn report(
    io: &mut Io,
    json: bool,
    e: &Enqueued,
    dedup: Option<&str>,
) -> Result<(), CliError> {
    if e.duplicate {
        io.err(&format!(
            "job {} is a duplicate: dedup key `{}` is still live, so nothing was enqueued",
            e.id,
            dedup.unwrap_or("")
        ))
        .await?;
    }
    if json {
        let v = serde_json::json!({"id": e.id.to_string(), "duplicate": e.duplicate});
        io.out(&v.to_string()).await
    } else {
        io.out(&e.id.to_string()).await
    }
}

/// Parses one batch line into a job.
pub fn parse_line(a: &EnqueueArgs, line: &[u8]) -> Result<NewJob, CliError> {
    if !a.spec {
        return build(&a.queue, line.to_vec(), &a.opts);
    }
    let s: JobSpec = serde_json::from_slice(line)
        .map_err(|e| CliError::usage(format!("not a valid job spec: {e}")))?;
    spec_job(&a.queue, s, &a.opts)
}

enum Item {
    Job(Box<NewJob>, Option<String>, OwnedSemaphorePermit),
    Bad(usize, CliError),
    ReadFailed(String),
}

/// `--batch`: a reader task parses lines while the loop below enqueues what has been read.
async fn batch(a: &EnqueueArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    let input = std::mem::replace(&mut io.input, Box::new(tokio::io::empty()));
    let (tx, mut rx) = mpsc::channel::<Item>(4 * MAX_CHUNK);
    let args = a.clone();
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let reader = tokio::spawn(async move {
        let mut input = input;
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let end = match read_line_capped(&mut input, &mut buf, LINE_CAP).await {
                Ok(end) => end,
                Err(e) => {
                    let _ = tx.send(Item::ReadFailed(e.to_string())).await;
                    break;
                }
            };
            if end == LineEnd::Eof {
                break;
            }
            line_no += 1;
            if end == LineEnd::TooLong {
                let e = CliError::usage(format!(
                    "the line is longer than {LINE_CAP} bytes (the payload limit of {DEFAULT_MAX_PAYLOAD} bytes plus 64 KiB); store large data elsewhere and enqueue a reference"
                ));
                let _ = tx.send(Item::Bad(line_no, e)).await;
                break;
            }
            if trim(&buf).is_empty() {
                continue;
            }
            let item = match parse_line(&args, &buf) {
                Ok(job) => {
                    let d = job.dedup.as_ref().map(|(k, _)| k.clone());
                    let cost = (job.payload.len() + 256).min(MAX_IN_FLIGHT) as u32;
                    let Ok(permit) = budget.clone().acquire_many_owned(cost).await else {
                        break;
                    };
                    Item::Job(Box::new(job), d, permit)
                }
                Err(e) => Item::Bad(line_no, e),
            };
            let stop = matches!(item, Item::Bad(..));
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let progress = progress_bar(io);
    let mut failure = None;
    'outer: while let Some(first) = rx.recv().await {
        let mut chunk = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Job(j, d, permit) => chunk.push((*j, (d, permit))),
                Item::Bad(n, e) => {
                    failure = Some(CliError::usage(format!("line {n}: {}", e.msg)));
                }
                Item::ReadFailed(e) => {
                    failure = Some(CliError::other(format!("cannot read stdin: {e}")));
                }
            }
            if failure.is_some() || chunk.len() >= MAX_CHUNK {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !chunk.is_empty() {
            let q = ctx.queue().await?;
            let (jobs, keys): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
            let done = q.enqueue_batch(jobs).await?;
            for (e, (k, _permit)) in done.iter().zip(keys) {
                report(io, json, e, k.as_deref()).await?;
            }
            if let Some(p) = &progress {
                p.inc(done.len() as u64);
            }
        }
        if failure.is_some() {
            break 'outer;
        }
    }
    reader.abort();
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    failure.map_or(Ok(()), Err)
}

/// How a capped line read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// End of input, nothing read.
    Eof,
    /// A line (with its newline, or the last line without one) is in the buffer.
    Line,
    /// The line is longer than the cap: the buffer holds its first `cap + 1` bytes, the rest is
    /// left unread.
    TooLong,
}

/// Appends one line of `r` to `buf`, reading at most `cap + 1` bytes of a line longer than `cap`
/// (newline excluded), so memory stays bounded whatever the input.
pub async fn read_line_capped<R: AsyncBufRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineEnd> {
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() {
                LineEnd::Eof
            } else {
                LineEnd::Line
            });
        }
        let (n, found) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let content = if found { n - 1 } else { n };
        if buf.len() + content > cap {
            let keep = (cap + 1 - buf.len()).min(avail.len());
            buf.extend_from_slice(&avail[..keep]);
            r.consume(keep);
            return Ok(LineEnd::TooLong);
        }
        buf.extend_from_slice(&avail[..n]);
        r.consume(n);
        if found {
            return Ok(LineEnd::Line);
        }
    }
}

/// A spinner on stderr when it is a terminal and stdout is not (the ids go elsewhere).
fn progress_bar(io: &Io) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if io.is_remote() || !std::io::stderr().is_terminal() || std::io::stdout().is_terminal() {
        return None;
    }
    let p = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {pos} {msg} ({per_sec})")
    {
        p.set_style(style);
    }
    p.set_message("jobs enqueued");
    p.enable_steady_tick(Duration::from_millis(100));
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn capped_lines_stop_after_cap_plus_one_bytes() {
        let input = b"ab\nabcdef\nxyz".to_vec();
        let mut r = tokio::io::BufReader::with_capacity(2, &input[..]);
        let mut buf = Vec::new();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 4).await.unwrap(),
            LineEnd::Line
        );
        assert_eq!(buf, b"ab\n");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 4).await.unwrap(),
            LineEnd::TooLong
        );
        assert_eq!(buf, b"abcde", "cap + 1 bytes, no more");
        let mut r = tokio::io::BufReader::new(&b"abcd\nxyz"[..]);
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 4).await.unwrap(),
            LineEnd::Line
        );
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 4).await.unwrap(),
            LineEnd::Line
        );
        assert_eq!(buf, b"xyz");
        buf.clear();
        assert_eq!(
            read_line_capped(&mut r, &mut buf, 4).await.unwrap(),
            LineEnd::Eof
        );
    }

    #[test]
    fn invalid_utf8_is_refused_even_inside_a_string() {
        let e = build("q", b"\"\xff\"".to_vec(), &JobOpts::default()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.msg.contains("UTF-8"), "{}", e.msg);
    }
}
