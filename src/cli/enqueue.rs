//! `durq enqueue`: one job from an argument or stdin, or `--batch` NDJSON from stdin.
//!
//! Invariants:
//! - Every value of a job is checked before the data directory is opened: a refused single
//!   enqueue changes nothing; a refused batch line stops the batch with exit 2 naming the line,
//!   and only the lines before it were enqueued (their ids were printed).
//! - Batch ids are printed in input order, each line flushed as soon as its job is durable.
//!   Lines already read are enqueued together (one atomic batch, one sync) while the next
//!   lines are read, so a fast producer is not held to one sync per line.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::job::{Enqueued, NewJob, Priority, DEFAULT_DEDUP_TTL, DEFAULT_MAX_PAYLOAD};

use super::args::{duration, EnqueueArgs, JobOpts};
use super::client::Ctx;
use super::sink::Io;
use super::CliError;

/// Most jobs sent to the store in one atomic batch.
const MAX_CHUNK: usize = 256;

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

/// Builds and validates a job: the payload must be JSON within the size limit.
pub fn build(queue: &str, payload: Vec<u8>, o: &JobOpts) -> Result<NewJob, CliError> {
    let payload = trim(&payload).to_vec();
    if payload.len() > DEFAULT_MAX_PAYLOAD {
        return Err(CliError::usage(format!(
            "payload is {} bytes, over the limit of {DEFAULT_MAX_PAYLOAD} bytes; store large data elsewhere and enqueue a reference",
            payload.len()
        )));
    }
    if payload.is_empty() {
        return Err(CliError::usage(
            "payload is empty; give a JSON value such as {} or \"text\"",
        ));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(CliError::usage(format!("payload is not valid JSON: {e}")));
    }
    let mut job = NewJob::new(queue, payload);
    if let Some(k) = &o.kind {
        job = job.kind(k.clone());
    }
    if let Some(p) = o.priority {
        job = job.priority(p);
    }
    if let Some(k) = &o.key {
        job = job.key(k.clone());
    }
    match (&o.dedup, o.dedup_ttl) {
        (Some(k), ttl) => job = job.dedup(k.clone(), ttl.unwrap_or(DEFAULT_DEDUP_TTL)),
        (None, Some(_)) => {
            return Err(CliError::usage(
                "--dedup-ttl needs a dedup key; add --dedup KEY",
            ))
        }
        (None, None) => {}
    }
    if let Some(d) = o.delay {
        job = job.delay(d);
    }
    if let Some(n) = o.max_retries {
        job = job.max_retries(n);
    }
    if let Some(d) = o.backoff {
        job = job.backoff(d);
    }
    job.validate(DEFAULT_MAX_PAYLOAD)?;
    Ok(job)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// One job as JSON: a `--spec` line, or an HTTP enqueue body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The payload (any JSON value).
    pub payload: serde_json::Value,
    /// Kind.
    pub kind: Option<String>,
    /// Priority: a number 0–255 or a level name.
    pub priority: Option<serde_json::Value>,
    /// Partition key.
    pub key: Option<String>,
    /// Dedup key.
    pub dedup: Option<String>,
    /// Dedup TTL such as "1h".
    pub dedup_ttl: Option<String>,
    /// Delay such as "5s".
    pub delay: Option<String>,
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// First retry delay such as "1s".
    pub backoff: Option<String>,
}

fn dur(field: &str, v: &Option<String>) -> Result<Option<Duration>, CliError> {
    v.as_deref()
        .map(|s| duration(s).map_err(|e| CliError::usage(format!("{field}: {e}"))))
        .transpose()
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

/// Builds a job from a [`JobSpec`]; its fields override `defaults`.
pub fn spec_job(queue: &str, s: JobSpec, defaults: &JobOpts) -> Result<NewJob, CliError> {
    let mut o = defaults.clone();
    if s.kind.is_some() {
        o.kind = s.kind;
    }
    if let Some(p) = s.priority {
        o.priority = Some(match &p {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .map(Priority)
                .ok_or_else(|| CliError::usage(format!("priority {n} is not in 0..=255")))?,
            serde_json::Value::String(s) => s.parse::<Priority>()?,
            other => {
                return Err(CliError::usage(format!(
                "priority {other} is not valid; use a number 0-255 or low, normal, high, critical"
            )))
            }
        });
    }
    if s.key.is_some() {
        o.key = s.key;
    }
    if s.dedup.is_some() {
        o.dedup = s.dedup;
    }
    if let Some(d) = dur("dedup_ttl", &s.dedup_ttl)? {
        o.dedup_ttl = Some(d);
    }
    if let Some(d) = dur("delay", &s.delay)? {
        o.delay = Some(d);
    }
    if s.max_retries.is_some() {
        o.max_retries = s.max_retries;
    }
    if let Some(d) = dur("backoff", &s.backoff)? {
        o.backoff = Some(d);
    }
    let payload = serde_json::to_vec(&s.payload)
        .map_err(|e| CliError::usage(format!("payload cannot be encoded: {e}")))?;
    build(queue, payload, &o)
}

enum Item {
    Job(Box<NewJob>, Option<String>),
    Bad(usize, CliError),
    ReadFailed(String),
}

/// `--batch`: a reader task parses lines while the loop below enqueues what has been read.
async fn batch(a: &EnqueueArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    let input = std::mem::replace(&mut io.input, Box::new(tokio::io::empty()));
    let (tx, mut rx) = mpsc::channel::<Item>(4 * MAX_CHUNK);
    let args = a.clone();
    let reader = tokio::spawn(async move {
        let mut input = input;
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Item::ReadFailed(e.to_string())).await;
                    break;
                }
            }
            line_no += 1;
            if trim(&buf).is_empty() {
                continue;
            }
            let item = match parse_line(&args, &buf) {
                Ok(job) => {
                    let d = job.dedup.as_ref().map(|(k, _)| k.clone());
                    Item::Job(Box::new(job), d)
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
                Item::Job(j, d) => chunk.push((*j, d)),
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
            for (e, k) in done.iter().zip(keys) {
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
