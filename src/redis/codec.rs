//! Turning the fields of a job's hash (as `HGETALL` returns them) back into a [`Job`].
//!
//! A job hash holds: `id` (20 digits), `kind`, `payload`, `prio`, `key`?, `dedup`?, `state`
//! (`waiting`, `active`, `completed`, `dead`), `att`, `r_max`, `r_base`, `r_factor`, `r_cap`,
//! `r_jit`, `created`, `run_at`, `fin`?, `errs` (a JSON array of attempt errors) and, while
//! leased, `tok`, `until`, `started`. Waiting versus delayed is decided by `run_at` and now,
//! as in the local backend.

use std::collections::HashMap;

use redis::Value;

use crate::error::{Error, Result};
use crate::job::{AttemptError, Job, JobId, JobState, Priority, RetryPolicy, Timestamp};

/// A job hash's fields by name.
pub struct Fields(HashMap<String, Vec<u8>>);

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn corrupt(what: &str) -> Error {
    Error::Backend(format!(
        "a job hash in Redis has a bad or missing `{what}` field; was it changed by hand?"
    ))
}

impl Fields {
    /// From a flat `[name, value, name, value, ...]` array (empty: `None`).
    pub fn from_values(v: &[Value]) -> Result<Option<Fields>> {
        if v.is_empty() {
            return Ok(None);
        }
        let mut m = HashMap::with_capacity(v.len() / 2);
        for pair in v.chunks(2) {
            let (Some(k), Some(val)) = (pair.first().and_then(bytes), pair.get(1).and_then(bytes))
            else {
                return Err(corrupt("(name)"));
            };
            m.insert(String::from_utf8_lossy(&k).into_owned(), val);
        }
        Ok(Some(Fields(m)))
    }

    /// From a value that should be such an array.
    pub fn from_value(v: &Value) -> Result<Option<Fields>> {
        match v {
            Value::Array(a) => Fields::from_values(a),
            Value::Nil => Ok(None),
            _ => Err(corrupt("(hash)")),
        }
    }

    /// A text field, if present.
    pub fn text(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// A numeric field.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<T> {
        self.text(name)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt(name))
    }

    /// The job these fields describe, as seen at `now`.
    pub fn job(mut self, queue: &str, now: u64) -> Result<Job> {
        let run_at: u64 = self.num("run_at")?;
        let state = match self.text("state").as_deref() {
            Some("waiting") if run_at > now => JobState::Delayed,
            Some("waiting") => JobState::Waiting,
            Some("active") => JobState::Active,
            Some("completed") => JobState::Completed,
            Some("dead") => JobState::Dead,
            _ => return Err(corrupt("state")),
        };
        let errors: Vec<AttemptError> = match self.0.get("errs") {
            Some(b) if b.as_slice() != b"{}" => {
                serde_json::from_slice(b).map_err(|_| corrupt("errs"))?
            }
            _ => Vec::new(),
        };
        Ok(Job {
            id: JobId(self.num("id")?),
            queue: queue.to_string(),
            kind: self.text("kind").ok_or_else(|| corrupt("kind"))?,
            payload: self.0.remove("payload").unwrap_or_default(),
            priority: Priority(self.num("prio")?),
            key: self.text("key"),
            dedup: self.text("dedup"),
            state,
            attempts: self.num("att")?,
            retry: RetryPolicy {
                max_retries: self.num("r_max")?,
                base_ms: self.num("r_base")?,
                factor: self.num("r_factor")?,
                cap_ms: self.num("r_cap")?,
                jitter: self.num("r_jit")?,
            },
            created_at: Timestamp(self.num("created")?),
            run_at: Timestamp(run_at),
            finished_at: self.text("fin").and_then(|s| s.parse().ok()).map(Timestamp),
            errors,
            timeout: self
                .text("timeout")
                .and_then(|s| s.parse().ok())
                .map(std::time::Duration::from_millis),
        })
    }
}
