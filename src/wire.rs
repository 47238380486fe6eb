//! The wire shapes the command line and the HTTP API share, below both of them: job options
//! ([`JobOpts`], also the CLI's flags), JSON job specs ([`JobSpec`]), the validation that turns
//! them into a [`NewJob`] ([`build`], [`spec_job`]), the JSON of a job and of the stats
//! ([`job_json`], [`stats_json`]) and the error both report ([`WireError`]).
//!
//! Invariants:
//! - A job is validated completely (payload is UTF-8 JSON within the size limit, every option
//!   well-formed) before anything is stored; a refusal is a [`WireError`] with code 2 (usage).
//! - The JSON shapes are the CLI's `--json` output and the HTTP API's bodies, identical:
//!   a job is `id` (string), `queue`, `kind`, `priority` (number), `key` (string or null),
//!   `state`, `attempts`, `created_at`, `run_at` (RFC 3339), `payload` (the JSON value itself),
//!   `errors` (array of `{attempt, at, error}`); stats are `{"queues": {NAME: {waiting, delayed,
//!   active, dead, completed, paused, oldest_waiting_secs}}, "totals": {…}}`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::job::{Job, NewJob, Priority, DEFAULT_DEDUP_TTL, DEFAULT_MAX_PAYLOAD};
use crate::stats::{QueueStats, Stats};

/// A refused or failed request: an exit-code class and one sentence (the CLI's stderr line, the
/// HTTP API's `{"error": ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// 2 for bad usage or input, 1 otherwise.
    pub code: u8,
    /// The sentence.
    pub msg: String,
}

impl WireError {
    /// Bad usage or input (exit 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        WireError {
            code: 2,
            msg: msg.into(),
        }
    }
    /// Any other failure (exit 1).
    pub fn other(msg: impl Into<String>) -> Self {
        WireError {
            code: 1,
            msg: msg.into(),
        }
    }
}

impl From<crate::Error> for WireError {
    fn from(e: crate::Error) -> Self {
        if e.is_invalid_input() {
            WireError::usage(inner_msg(&e))
        } else {
            WireError::other(e.to_string())
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h`.
pub fn duration(s: &str) -> Result<Duration, String> {
    crate::job::parse_duration(s).map_err(|e| inner_msg(&e))
}

/// Parses a priority: a level name or 0-255 (the CLI's `--priority`).
#[cfg(feature = "cli")]
pub(crate) fn priority(s: &str) -> Result<Priority, String> {
    s.parse::<Priority>().map_err(|e| inner_msg(&e))
}

/// The message of an error without the "invalid input: " prefix.
pub fn inner_msg(e: &crate::Error) -> String {
    match e {
        crate::Error::InvalidInput(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Options of one job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct JobOpts {
    /// Job kind (selects the handler).
    #[cfg_attr(feature = "cli", arg(long))]
    pub kind: Option<String>,
    /// Priority: low, normal, high, critical or 0-255.
    #[cfg_attr(feature = "cli", arg(long, value_parser = priority))]
    pub priority: Option<Priority>,
    /// Partition key: jobs sharing it run one at a time, in order.
    #[cfg_attr(feature = "cli", arg(long))]
    pub key: Option<String>,
    /// Dedup key: a second enqueue while it is live enqueues nothing.
    #[cfg_attr(feature = "cli", arg(long))]
    pub dedup: Option<String>,
    /// How long the dedup key stays live (default 1h).
    #[cfg_attr(feature = "cli", arg(long, value_parser = duration, value_name = "DUR"))]
    pub dedup_ttl: Option<Duration>,
    /// Run no earlier than this from now.
    #[cfg_attr(feature = "cli", arg(long, value_parser = duration, value_name = "DUR"))]
    pub delay: Option<Duration>,
    /// Retries after the first attempt.
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_retries: Option<u32>,
    /// First retry delay, doubling after (default 1s).
    #[cfg_attr(feature = "cli", arg(long, value_parser = duration, value_name = "DUR"))]
    pub backoff: Option<Duration>,
}

/// Builds and validates a job: the payload must be JSON within the size limit.
pub fn build(queue: &str, payload: Vec<u8>, o: &JobOpts) -> Result<NewJob, WireError> {
    let payload = trim(&payload).to_vec();
    if payload.len() > DEFAULT_MAX_PAYLOAD {
        return Err(WireError::usage(format!(
            "payload is {} bytes, over the limit of {DEFAULT_MAX_PAYLOAD} bytes; store large data elsewhere and enqueue a reference",
            payload.len()
        )));
    }
    if payload.is_empty() {
        return Err(WireError::usage(
            "payload is empty; give a JSON value such as {} or \"text\"",
        ));
    }
    let text = std::str::from_utf8(&payload).map_err(|e| {
        WireError::usage(format!(
            "payload is not valid UTF-8 (bad byte at offset {}); JSON must be UTF-8 text",
            e.valid_up_to()
        ))
    })?;
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(WireError::usage(format!("payload is not valid JSON: {e}")));
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
            return Err(WireError::usage(
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

/// `b` without leading and trailing ASCII whitespace.
pub(crate) fn trim(b: &[u8]) -> &[u8] {
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

fn dur(field: &str, v: &Option<String>) -> Result<Option<Duration>, WireError> {
    v.as_deref()
        .map(|s| duration(s).map_err(|e| WireError::usage(format!("{field}: {e}"))))
        .transpose()
}

/// Builds a job from a [`JobSpec`]; its fields override `defaults`.
pub fn spec_job(queue: &str, s: JobSpec, defaults: &JobOpts) -> Result<NewJob, WireError> {
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
                .ok_or_else(|| WireError::usage(format!("priority {n} is not in 0..=255")))?,
            serde_json::Value::String(s) => s.parse::<Priority>()?,
            other => {
                return Err(WireError::usage(format!(
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
        .map_err(|e| WireError::usage(format!("payload cannot be encoded: {e}")))?;
    build(queue, payload, &o)
}

/// A job as JSON.
pub fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id.to_string(),
        "queue": j.queue,
        "kind": j.kind,
        "priority": j.priority.0,
        "key": j.key,
        "state": j.state.as_str(),
        "attempts": j.attempts,
        "created_at": j.created_at.to_rfc3339(),
        "run_at": j.run_at.to_rfc3339(),
        "payload": j.payload_json(),
        "errors": j.errors.iter().map(|e| json!({
            "attempt": e.attempt,
            "at": e.at.to_rfc3339(),
            "error": e.error,
        })).collect::<Vec<_>>(),
    })
}

fn queue_stats_json(s: &QueueStats) -> Value {
    json!({
        "waiting": s.waiting,
        "delayed": s.delayed,
        "active": s.active,
        "dead": s.dead,
        "completed": s.completed,
        "paused": s.paused,
        "oldest_waiting_secs": s.oldest_waiting_secs,
    })
}

/// Stats as JSON; with `only`, just that queue (all zero if it has no jobs) and its totals.
pub fn stats_json(stats: &Stats, only: Option<&str>) -> Value {
    let s = restrict(stats, only);
    let queues: serde_json::Map<String, Value> = s
        .queues
        .iter()
        .map(|(k, v)| (k.clone(), queue_stats_json(v)))
        .collect();
    json!({"queues": queues, "totals": queue_stats_json(&s.totals)})
}

/// The stats of one queue only (or all of them).
pub fn restrict(stats: &Stats, only: Option<&str>) -> Stats {
    match only {
        None => stats.clone(),
        Some(q) => {
            let mut s = Stats::default();
            s.queues.insert(
                q.to_string(),
                stats.queues.get(q).cloned().unwrap_or_default(),
            );
            s.compute_totals();
            s
        }
    }
}
