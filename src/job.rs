//! Jobs and the values that describe them: ids, priorities, states, retry policies, leases.
//!
//! Invariants:
//! - A [`JobId`] is unique within a data directory and sorts by creation: ids are
//!   `max(previous + 1, unix_ms << 16)`, so the high bits are the creation millisecond.
//! - Times are whole milliseconds since the Unix epoch ([`Timestamp`]); every `u64` formats.
//! - Durations are at most 10 years ([`crate::duration::MAX_DURATION`]), checked on input.
//! - A [`NewJob`] is validated by the backend on enqueue (queue name, sizes, durations); invalid
//!   input changes nothing.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest payload accepted by default (16 MiB).
pub const DEFAULT_MAX_PAYLOAD: usize = 16 << 20;
/// Longest queue name.
pub const MAX_QUEUE_NAME: usize = 128;
/// Longest kind, partition key or dedup key.
pub const MAX_NAME: usize = 1024;
/// Longest error text kept per attempt (the tail is kept).
pub const MAX_ERROR_TEXT: usize = 4096;

/// A job id: unique per data directory, sortable by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.trim().parse::<u64>().map(JobId).map_err(|_| {
            Error::invalid(format!(
                "`{s}` is not a job id (ids are decimal numbers, as printed by enqueue)"
            ))
        })
    }
}

/// Milliseconds since the Unix epoch.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }
    /// This time plus a duration (saturating).
    pub fn after(self, d: Duration) -> Self {
        Timestamp(crate::duration::after(self.0, d))
    }
    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
    /// RFC 3339 with milliseconds, UTC (`2026-11-28T04:13:45.123Z`). Never panics: any value
    /// formats (years past 9999 in the ISO 8601 expanded form, see [`crate::duration`]).
    pub fn to_rfc3339(self) -> String {
        crate::duration::format_rfc3339_millis(self.0)
    }
    /// Time elapsed from `self` to `now`, zero if `now` is earlier.
    pub fn elapsed_until(self, now: Timestamp) -> Duration {
        Duration::from_millis(now.0.saturating_sub(self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Priority 0–255; higher runs first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority(pub u8);

impl Priority {
    /// `low` = 64.
    pub const LOW: Priority = Priority(64);
    /// `normal` = 128, the default.
    pub const NORMAL: Priority = Priority(128);
    /// `high` = 192.
    pub const HIGH: Priority = Priority(192);
    /// `critical` = 255.
    pub const CRITICAL: Priority = Priority(255);
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

impl FromStr for Priority {
    type Err = Error;
    /// Accepts `low`, `normal`, `high`, `critical` or a number 0–255.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Priority::LOW),
            "normal" => Ok(Priority::NORMAL),
            "high" => Ok(Priority::HIGH),
            "critical" => Ok(Priority::CRITICAL),
            other => other.parse::<u8>().map(Priority).map_err(|_| {
                Error::invalid(format!(
                    "priority `{s}` is not valid; use low, normal, high, critical or a number from 0 to 255"
                ))
            }),
        }
    }
}

/// Where a job is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    /// Ready to run (or waiting for its partition key).
    Waiting,
    /// Reserved by a worker under a lease.
    Active,
    /// Scheduled for later (delay or retry backoff).
    Delayed,
    /// Finished successfully (kept for a bounded time for inspection).
    Completed,
    /// Failed its last retry; kept with its error history.
    Dead,
}

impl JobState {
    /// All states, in life-cycle order.
    pub const ALL: [JobState; 5] = [
        JobState::Waiting,
        JobState::Active,
        JobState::Delayed,
        JobState::Completed,
        JobState::Dead,
    ];
    /// The lower-case name used by the CLI and the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Delayed => "delayed",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "state `{s}` is not valid; use waiting, active, delayed, completed or dead"
                ))
            })
    }
}

/// How failed attempts are retried: `base * factor^(n-1)`, capped, with optional jitter.
///
/// The default is 5 retries after 1, 2, 4, 8, 16 s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds.
    pub base_ms: u64,
    /// Growth factor per retry (>= 1.0).
    pub factor: f64,
    /// Largest delay, in milliseconds (0 = no cap).
    pub cap_ms: u64,
    /// Random spread as a fraction of the delay, 0.0–1.0 (0.2 = ±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_ms: 1000,
            factor: 2.0,
            cap_ms: 0,
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), without jitter; never longer than
    /// [`crate::duration::MAX_DURATION`] (10 years), however many retries.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(64) as i32;
        let mut ms = (self.base_ms as f64) * self.factor.powi(exp);
        if self.cap_ms > 0 && ms > self.cap_ms as f64 {
            ms = self.cap_ms as f64;
        }
        Self::clamp_ms(ms)
    }

    /// The delay with jitter applied, using `unit` (a number in 0.0..1.0) as the random draw;
    /// also at most 10 years.
    pub fn delay_with_jitter(&self, retry: u32, unit: f64) -> Duration {
        let d = self.delay(retry).as_millis() as f64;
        let spread = d * self.jitter * (2.0 * unit - 1.0);
        Self::clamp_ms(d + spread)
    }

    fn clamp_ms(ms: f64) -> Duration {
        let max = crate::duration::MAX_DURATION.as_millis() as f64;
        // NaN (not reachable with validated values) becomes zero.
        let ms = if ms.is_nan() { 0.0 } else { ms.clamp(0.0, max) };
        Duration::from_millis(ms as u64)
    }

    /// Checks the values; explains what is wrong.
    pub fn validate(&self) -> Result<()> {
        if !(self.factor.is_finite() && self.factor >= 1.0 && self.factor <= 1000.0) {
            return Err(Error::invalid(format!(
                "retry factor {} is not valid; use a number from 1 to 1000",
                self.factor
            )));
        }
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(Error::invalid(format!(
                "retry jitter {} is not valid; use a fraction from 0.0 to 1.0",
                self.jitter
            )));
        }
        if self.max_retries > 1000 {
            return Err(Error::invalid(format!(
                "max retries {} is too many; use at most 1000",
                self.max_retries
            )));
        }
        crate::duration::check("retry backoff base", Duration::from_millis(self.base_ms))?;
        crate::duration::check("retry backoff cap", Duration::from_millis(self.cap_ms))?;
        Ok(())
    }
}

/// One failed attempt, kept in the job's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// Attempt number (1 for the first run).
    pub attempt: u32,
    /// When it failed.
    pub at: Timestamp,
    /// The error text (its last 4 KiB).
    pub error: String,
}

/// A job as stored, with its payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: String,
    /// What kind of job this is (selects the handler).
    pub kind: String,
    /// The payload bytes (JSON in the CLI and HTTP API).
    pub payload: Vec<u8>,
    /// Priority; higher runs first.
    pub priority: Priority,
    /// Partition key: jobs sharing it run one at a time in enqueue order.
    pub key: Option<String>,
    /// Dedup key, if any.
    pub dedup: Option<String>,
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Retry policy fixed at enqueue time.
    pub retry: RetryPolicy,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it may run (or ran last).
    pub run_at: Timestamp,
    /// When it completed or died.
    pub finished_at: Option<Timestamp>,
    /// Every failed attempt.
    pub errors: Vec<AttemptError>,
    /// Per-attempt execution timeout set on the job (`None`: the pool's, if any).
    #[serde(default)]
    pub timeout: Option<Duration>,
}

impl Job {
    /// Decodes the payload as JSON into `T`.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::invalid(format!(
                "payload of job {} is not the expected JSON: {e}",
                self.id
            ))
        })
    }
    /// The payload as a JSON value, or a JSON string holding the lossy text if it is not JSON.
    pub fn payload_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&self.payload).into_owned())
        })
    }
    /// The error of the most recent failed attempt.
    pub fn last_error(&self) -> Option<&str> {
        self.errors.last().map(|e| e.error.as_str())
    }
}

/// A job to enqueue. Build it with [`NewJob::new`] and the chained setters.
///
/// ```
/// use durq::{NewJob, Priority};
/// use std::time::Duration;
/// let job = NewJob::new("emails", br#"{"to":"a@b.c"}"#.to_vec())
///     .kind("send_email")
///     .priority(Priority::HIGH)
///     .key("user-42")
///     .dedup("welcome-42", Duration::from_secs(3600))
///     .max_retries(3);
/// assert_eq!(job.queue, "emails");
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct NewJob {
    /// Target queue.
    pub queue: String,
    /// Kind (default `default`).
    pub kind: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Priority (default normal = 128).
    pub priority: Priority,
    /// Partition key.
    pub key: Option<String>,
    /// Dedup key and its time to live.
    pub dedup: Option<(String, Duration)>,
    /// Run no earlier than this delay after enqueue.
    pub delay: Option<Duration>,
    /// Retry policy; `None` takes the queue's (or the store's) default.
    pub retry: Option<RetryPolicy>,
    /// Override of the policy's max retries.
    pub max_retries: Option<u32>,
    /// Override of the policy's first retry delay.
    pub backoff: Option<Duration>,
    /// Per-attempt execution timeout (overrides the pool's); stored with the job.
    pub timeout: Option<Duration>,
}

/// Default dedup time to live when none is given (1 hour).
pub const DEFAULT_DEDUP_TTL: Duration = Duration::from_secs(3600);

impl NewJob {
    /// A job with defaults: kind `default`, normal priority, no key, no delay.
    pub fn new(queue: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        NewJob {
            queue: queue.into(),
            kind: "default".into(),
            payload: payload.into(),
            priority: Priority::NORMAL,
            key: None,
            dedup: None,
            delay: None,
            retry: None,
            max_retries: None,
            backoff: None,
            timeout: None,
        }
    }
    /// A job whose payload is `value` serialised as JSON.
    pub fn json<T: Serialize>(queue: impl Into<String>, value: &T) -> Result<Self> {
        let payload = serde_json::to_vec(value)
            .map_err(|e| Error::invalid(format!("payload cannot be serialised as JSON: {e}")))?;
        Ok(NewJob::new(queue, payload))
    }
    /// Sets the kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = kind.into();
        self
    }
    /// Sets the priority.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }
    /// Sets the partition key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Sets a dedup key live for `ttl`.
    pub fn dedup(mut self, key: impl Into<String>, ttl: Duration) -> Self {
        self.dedup = Some((key.into(), ttl));
        self
    }
    /// Delays the first run.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
    /// Sets the whole retry policy.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// Sets the number of retries.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }
    /// Sets the first retry delay (doubling after).
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = Some(d);
        self
    }

    /// Sets the per-attempt execution timeout: an attempt still running after `d` is cancelled
    /// and fails with "timed out after D" (the pool's own timeout, if any, does not apply).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Checks the job against the limits; says what is wrong.
    pub fn validate(&self, max_payload: usize) -> Result<()> {
        validate_queue_name(&self.queue)?;
        validate_name("kind", &self.kind)?;
        if let Some(k) = &self.key {
            validate_name("partition key", k)?;
        }
        if let Some((k, ttl)) = &self.dedup {
            validate_name("dedup key", k)?;
            if ttl.is_zero() {
                return Err(Error::invalid("dedup TTL must be longer than zero"));
            }
            crate::duration::check("dedup TTL", *ttl)?;
        }
        if let Some(d) = self.delay {
            crate::duration::check("delay", d)?;
        }
        if let Some(d) = self.backoff {
            crate::duration::check("backoff", d)?;
        }
        if let Some(d) = self.timeout {
            if d.is_zero() {
                return Err(Error::invalid(
                    "timeout must be longer than zero; leave it out for no timeout",
                ));
            }
            crate::duration::check("timeout", d)?;
        }
        if self.payload.len() > max_payload {
            return Err(Error::invalid(format!(
                "payload is {} bytes, over the limit of {} bytes; store large data elsewhere and enqueue a reference",
                self.payload.len(),
                max_payload
            )));
        }
        if let Some(p) = &self.retry {
            p.validate()?;
        }
        if let Some(n) = self.max_retries {
            if n > 1000 {
                return Err(Error::invalid(format!(
                    "max retries {n} is too many; use at most 1000"
                )));
            }
        }
        Ok(())
    }
}

/// Most payload bytes one batch may carry.
pub const MAX_BATCH_PAYLOAD: usize = 128 << 20;

/// Checks every job of a batch (naming the failing job's place when there are several) and the
/// batch's total payload against [`MAX_BATCH_PAYLOAD`]. Every backend runs this before it
/// changes anything.
pub fn validate_batch(jobs: &[NewJob], max_payload: usize) -> Result<()> {
    let mut total = 0usize;
    for (i, j) in jobs.iter().enumerate() {
        j.validate(max_payload).map_err(|e| match e {
            Error::InvalidInput(m) if jobs.len() > 1 => {
                Error::InvalidInput(format!("job {} of the batch: {m}", i + 1))
            }
            e => e,
        })?;
        total += j.payload.len();
    }
    if total > MAX_BATCH_PAYLOAD {
        return Err(Error::invalid(format!(
            "the batch holds {total} payload bytes, over the 128 MiB limit for one batch; split it"
        )));
    }
    Ok(())
}

/// Checks a queue name: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn validate_queue_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "queue name `{name}` is not valid; use 1 to 128 characters of letters, digits, `.`, `_`, `:` and `-`"
        )))
    }
}

fn validate_name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(Error::invalid(format!(
            "{what} must be 1 to {MAX_NAME} bytes long (got {})",
            value.len()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} `{}` contains control characters; use printable text",
            value.escape_debug()
        )));
    }
    Ok(())
}

/// What an enqueue produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The new job's id, or the first job's id for a duplicate.
    pub id: JobId,
    /// True when the dedup key was live and nothing was enqueued.
    pub duplicate: bool,
}

/// The secret that proves a worker holds a job's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseToken(pub u64);

impl fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for LeaseToken {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        u64::from_str_radix(s.trim(), 16)
            .map(LeaseToken)
            .map_err(|_| Error::invalid(format!("`{s}` is not a lease token (16 hex digits)")))
    }
}

/// A reserved job: it belongs to the holder until acked, failed, released or expired.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The job (with payload); `attempts` includes this attempt.
    pub job: Job,
    /// Token to present to ack / fail / heartbeat / release.
    pub token: LeaseToken,
    /// When the lease runs out unless extended.
    pub expires_at: Timestamp,
}

/// What to do with a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailAction {
    /// Retry per the job's policy (dead letter after the last retry).
    Retry,
    /// Retry after this delay (a server's `retry_after`); still counts the attempt (see
    /// [`crate::Queue::postpone`] for one that does not).
    RetryAfter(Duration),
    /// Give up now: straight to the dead letters.
    GiveUp,
}

/// What happened to a failed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will run again at this time.
    Retrying {
        /// When.
        run_at: Timestamp,
    },
    /// It is now a dead letter.
    Dead,
    /// It was cancelled while it ran: dropped, not retried.
    Cancelled,
}

/// What a cancel did to one job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The job was waiting, delayed or dead, and is gone (with its dedup key).
    Cancelled,
    /// The job is running: when its attempt ends (ack, fail, lease expiry) it is dropped, not
    /// retried or completed.
    WillCancel,
    /// No such job: unknown id, cancelled before, or dropped by retention.
    NotFound,
    /// The job completed; nothing to cancel.
    AlreadyFinished,
}

impl CancelOutcome {
    /// As shown by the CLI and the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::WillCancel => "will_cancel",
            CancelOutcome::NotFound => "not_found",
            CancelOutcome::AlreadyFinished => "already_finished",
        }
    }
    /// True when the job is (or will be) cancelled.
    pub fn is_cancelled(self) -> bool {
        matches!(self, CancelOutcome::Cancelled | CancelOutcome::WillCancel)
    }
}

/// Which jobs a dead-letter operation applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These ids.
    Ids(Vec<JobId>),
    /// Every dead letter of the queue.
    All,
}

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h`, `1h30m`; at most 10 years (see
/// [`crate::duration`]).
pub fn parse_duration(s: &str) -> Result<Duration> {
    crate::duration::parse_any(s)
}
