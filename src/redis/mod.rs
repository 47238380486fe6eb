//! The Redis backend (feature `redis`): the [`Backend`] contract on a Redis server that several
//! hosts share. Open it with [`crate::QueueBuilder::redis`].
//!
//! Invariants:
//! - Every change is one Lua script call (one atomic step on the server), so two hosts never
//!   take the same job and a crash between two commands never leaves a half-state. The
//!   scripts, the key layout and the per-queue hash tag are in [`scripts`] and `lua/`.
//! - Time comes from the caller's clock and is passed to every script: leases, delays, dedup
//!   TTLs and key pauses are compared against it, so hosts need roughly synchronised clocks
//!   (as with any lease).
//! - Every script first does what became due in its queue (expired leases count as failed
//!   attempts, due delayed jobs become ready), so no background task is needed.
//! - An enqueue carries an idempotency token and its ids are chosen before it is sent: a
//!   retry of the same call after a lost reply returns the first answer instead of adding
//!   jobs. It is retried once by the backend itself.
//! - Events are the ones this backend's own calls produce (a broadcast fed by its operations):
//!   a subscriber sees what this process did, not what other hosts did.
//! - Unlike the local backend, a `reserve` future dropped after its script ran (or whose reply
//!   was lost) does not give its job back at once: the job comes back when its lease expires.
//! - Durability is Redis's: an `Ok` means the script ran; whether it survives a crash depends
//!   on `appendonly`/`appendfsync` (checked at open, see [`persistence`]).

mod codec;
mod conn;
mod keys;
pub mod persistence;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::Value;
use tokio::sync::{broadcast, Notify};

use crate::backend::{Backend, ReserveRequest};
use crate::clock::{Clock, SystemClock};
use crate::duration;
use crate::error::{Error, Result};
use crate::job::{
    validate_queue_name, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease,
    LeaseToken, NewJob, Selection, Timestamp, MAX_ERROR_TEXT,
};
use crate::options::Options;
use crate::stats::{Event, QueueStats, Stats};

use codec::Fields;
use conn::Conn;
use scripts::Scripts;

pub use conn::shown_url;

/// Default connect and response timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an enqueue's idempotency token is remembered: far longer than the backend's own
/// retry of a lost reply (one timeout later), short enough that the tokens of a busy queue
/// take little memory (~100 bytes per enqueue of the last minute).
const IDEM_TTL_MS: u64 = 60_000;
/// Longest sleep between two tries of a waiting reserve.
const MAX_POLL: Duration = Duration::from_millis(100);
/// Jobs a requeue or purge of all dead letters takes per script call.
const DEAD_CHUNK: u64 = 1000;
/// Job ids taken from the global sequence at once (an enqueue then needs one round trip).
const ID_BLOCK: u64 = 1024;

/// Where and how to reach Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Connect and response timeout of every call (default 2 s).
    pub timeout: Duration,
}

impl RedisConfig {
    /// A config for `url` with the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// A queue store on Redis. Use it through [`crate::Queue`].
pub struct RedisBackend {
    conn: Conn,
    scripts: Scripts,
    opts: Options,
    clock: Arc<dyn Clock>,
    qnos: Mutex<HashMap<String, u64>>,
    qnames: Mutex<HashMap<u64, String>>,
    leases: Mutex<HashMap<JobId, (String, LeaseToken)>>,
    events: broadcast::Sender<Event>,
    enqueued: Notify,
    closed: AtomicBool,
    /// Sequence numbers taken but not used yet: `[next, end)`.
    ids: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.conn.url())
            .finish_non_exhaustive()
    }
}

/// The last `MAX_ERROR_TEXT` bytes of an error text.
fn error_tail(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_string();
    }
    let mut start = s.len() - MAX_ERROR_TEXT;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn max_ms() -> u64 {
    duration::millis(duration::MAX_DURATION)
}

fn unexpected(what: &str, v: &Value) -> Error {
    Error::Backend(format!(
        "Redis answered {what} with an unexpected value: {v:?}"
    ))
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

impl RedisBackend {
    /// Connects to Redis (failing with [`Error::Unavailable`] within `cfg.timeout` when it is
    /// unreachable) and checks its persistence settings (warnings only).
    pub async fn open(cfg: RedisConfig, opts: Options) -> Result<RedisBackend> {
        opts.validate()?;
        if cfg.timeout.is_zero() || cfg.timeout > Duration::from_secs(3600) {
            return Err(Error::invalid(format!(
                "Redis timeout {:?} is out of range; use 1ms to 1h",
                cfg.timeout
            )));
        }
        let conn = Conn::open(&cfg.url, cfg.timeout).await?;
        for w in persistence::check(&conn).await {
            tracing::warn!(url = %conn.url(), "{w}");
        }
        let clock: Arc<dyn Clock> = opts.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let (events, _) = broadcast::channel(4096);
        Ok(RedisBackend {
            conn,
            scripts: Scripts::new(),
            opts,
            clock,
            qnos: Mutex::new(HashMap::new()),
            qnames: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            events,
            enqueued: Notify::new(),
            closed: AtomicBool::new(false),
            ids: Mutex::new((0, 0)),
        })
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    fn live(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn emit(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The number of a queue, registering it (and listing it for stats) on first use.
    async fn register(&self, queue: &str) -> Result<u64> {
        if let Some(n) = self.qnos.lock().get(queue) {
            return Ok(*n);
        }
        let mut inv = self.scripts.register.prepare_invoke();
        inv.key(keys::QUEUES)
            .key(keys::QUEUE_NO)
            .key(keys::QUEUE_NAME)
            .key(keys::QUEUE_COUNT)
            .arg(queue)
            .arg(keys::MAX_QUEUES);
        let n: u64 = self.conn.script(&inv).await?;
        self.qnos.lock().insert(queue.to_string(), n);
        self.qnames.lock().insert(n, queue.to_string());
        Ok(n)
    }

    /// The queue a job id belongs to (`None`: no such queue, so no such job).
    async fn queue_of(&self, id: JobId) -> Result<Option<String>> {
        let n = keys::queue_no(id);
        if let Some(q) = self.qnames.lock().get(&n) {
            return Ok(Some(q.clone()));
        }
        let name: Option<String> = self
            .conn
            .cmd(redis::cmd("HGET").arg(keys::QUEUE_NAME).arg(n))
            .await?;
        if let Some(q) = &name {
            self.qnames.lock().insert(n, q.clone());
        }
        Ok(name)
    }

    /// `n` consecutive sequence numbers, from the block this backend holds (refilled from the
    /// global counter in blocks of [`ID_BLOCK`]).
    async fn take_seqs(&self, n: u64) -> Result<u64> {
        {
            let mut p = self.ids.lock();
            if p.1 - p.0 >= n {
                p.0 += n;
                return Ok(p.0 - n);
            }
        }
        let grab = n.max(ID_BLOCK);
        let last: u64 = self
            .conn
            .cmd(redis::cmd("INCRBY").arg(keys::SEQ).arg(grab))
            .await?;
        let first = last + 1 - grab;
        *self.ids.lock() = (first + n, last + 1);
        Ok(first)
    }

    fn validate(&self, jobs: &[NewJob]) -> Result<()> {
        crate::job::validate_batch(jobs, self.opts.max_payload)
    }

    /// Runs one of the single-queue scripts with `now` and the duration cap as its first two
    /// arguments.
    async fn queue_script(
        &self,
        script: &redis::Script,
        queue: &str,
        args: &[String],
    ) -> Result<Value> {
        let mut inv = script.prepare_invoke();
        inv.key(keys::meta(queue)).arg(self.now()).arg(max_ms());
        for a in args {
            inv.arg(a);
        }
        self.conn.script(&inv).await
    }

    /// A lease call (ack, fail, heartbeat, release): the job's queue, or LeaseLost.
    async fn lease_queue(&self, id: JobId) -> Result<String> {
        self.live()?;
        if let Some((q, _)) = self.leases.lock().get(&id) {
            return Ok(q.clone());
        }
        self.queue_of(id)
            .await?
            .ok_or_else(|| Error::LeaseLost { id: id.to_string() })
    }

    fn lost(&self, id: JobId) -> Error {
        self.leases.lock().remove(&id);
        Error::LeaseLost { id: id.to_string() }
    }

    /// On a Redis Cluster the queues of one reserve may live on different nodes: each queue's
    /// best ready job is peeked (one script per queue), then the best of them is taken from
    /// its queue alone. Another host may take it in between; then this try finds the next
    /// job of that queue or nothing, and a waiting reserve tries again.
    async fn try_reserve(&self, req: &ReserveRequest, lease_ms: u64) -> Result<Option<Lease>> {
        if !self.conn.is_cluster() || req.queues.len() == 1 {
            return self.try_reserve_in(req, lease_ms).await;
        }
        let mut best: Option<(f64, String, &String)> = None;
        for q in &req.queues {
            let mut inv = self.scripts.reserve.prepare_invoke();
            inv.key(keys::meta(q))
                .arg(self.now())
                .arg(max_ms())
                .arg("peek")
                .arg(0);
            for k in &req.exclude_kinds {
                inv.arg(k);
            }
            let v: Value = self.conn.script(&inv).await?;
            if let Value::Array(a) = &v {
                let score = a
                    .first()
                    .and_then(as_text)
                    .and_then(|s| s.parse::<f64>().ok());
                let id = a.get(1).and_then(as_text);
                let (Some(score), Some(id)) = (score, id) else {
                    return Err(unexpected("a peek", &v));
                };
                if best
                    .as_ref()
                    .is_none_or(|(s, i, _)| score < *s || (score == *s && id < *i))
                {
                    best = Some((score, id, q));
                }
            }
        }
        match best {
            None => Ok(None),
            Some((_, _, q)) => {
                let one = ReserveRequest {
                    queues: vec![q.clone()],
                    ..req.clone()
                };
                self.try_reserve_in(&one, lease_ms).await
            }
        }
    }

    async fn try_reserve_in(&self, req: &ReserveRequest, lease_ms: u64) -> Result<Option<Lease>> {
        let now = self.now();
        let token = LeaseToken(fastrand::u64(1..));
        let mut inv = self.scripts.reserve.prepare_invoke();
        for q in &req.queues {
            inv.key(keys::meta(q));
        }
        inv.arg(now).arg(max_ms()).arg(lease_ms).arg(token.0);
        for k in &req.exclude_kinds {
            inv.arg(k);
        }
        let v: Value = self.conn.script(&inv).await?;
        let items = match &v {
            Value::Nil => return Ok(None),
            Value::Array(a) if !a.is_empty() => a,
            _ => return Err(unexpected("a reserve", &v)),
        };
        let qi = as_u64(&items[0]).ok_or_else(|| unexpected("a reserve", &v))? as usize;
        let queue = req
            .queues
            .get(qi.wrapping_sub(1))
            .ok_or_else(|| unexpected("a reserve", &v))?;
        let fields =
            Fields::from_values(&items[1..])?.ok_or_else(|| unexpected("a reserve", &v))?;
        let job = fields.job(queue, now)?;
        let ready_at = job.run_at.0;
        self.leases.lock().insert(job.id, (queue.clone(), token));
        self.emit(Event::Started {
            id: job.id,
            queue: queue.clone(),
            kind: job.kind.clone(),
            attempt: job.attempts,
            waited: Duration::from_millis(now.saturating_sub(ready_at)),
        });
        Ok(Some(Lease {
            job,
            token,
            expires_at: Timestamp(now.saturating_add(lease_ms)),
        }))
    }

    async fn dead_op(&self, op: &str, queue: &str, which: Selection) -> Result<u64> {
        self.live()?;
        validate_queue_name(queue)?;
        match which {
            Selection::Ids(ids) => {
                if ids.is_empty() {
                    return Ok(0);
                }
                let members: Vec<String> = ids.iter().map(|i| keys::member(*i)).collect();
                let mut inv = self.scripts.dead.prepare_invoke();
                inv.key(keys::meta(queue))
                    .arg(self.now())
                    .arg(max_ms())
                    .arg(op)
                    .arg("ids");
                for m in &members {
                    inv.arg(m);
                }
                let v: Value = self.conn.script(&inv).await?;
                self.dead_answer(queue, &v)
            }
            Selection::All => {
                let mut total = 0;
                loop {
                    let v = self
                        .queue_script(
                            &self.scripts.dead,
                            queue,
                            &[op.to_string(), "all".to_string()],
                        )
                        .await?;
                    let n = self.dead_answer(queue, &v)?;
                    total += n;
                    if n < DEAD_CHUNK {
                        return Ok(total);
                    }
                }
            }
        }
    }

    fn dead_answer(&self, queue: &str, v: &Value) -> Result<u64> {
        match v {
            Value::Array(a) if a.len() == 1 => {
                as_u64(&a[0]).ok_or_else(|| unexpected("a dead-letter call", v))
            }
            Value::Array(a) if a.len() == 2 => {
                let id = as_text(&a[1]).unwrap_or_default();
                let id = id.trim_start_matches('0');
                Err(Error::invalid(format!(
                    "job {} is not a dead letter of queue `{queue}`; list them with `durq dlq list {queue}`",
                    if id.is_empty() { "0" } else { id }
                )))
            }
            _ => Err(unexpected("a dead-letter call", v)),
        }
    }

    /// Counts of one queue.
    async fn queue_stats(&self, queue: &str, now: u64) -> Result<QueueStats> {
        let v = self.queue_script(&self.scripts.stats, queue, &[]).await?;
        let a = match &v {
            Value::Array(a) if a.len() == 7 => a,
            _ => return Err(unexpected("stats", &v)),
        };
        let n = |i: usize| as_u64(&a[i]).ok_or_else(|| unexpected("stats", &v));
        let oldest = as_text(&a[6])
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|t| *t >= 0)
            .map(|t| now.saturating_sub(t as u64) as f64 / 1000.0);
        Ok(QueueStats {
            waiting: n(0)?,
            delayed: n(1)?,
            active: n(2)?,
            completed: n(3)?,
            dead: n(4)?,
            paused: n(5)? == 1,
            oldest_waiting_secs: oldest,
        })
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.live()?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.validate(&jobs)?;
        if self.conn.is_cluster() && jobs.iter().any(|j| j.queue != jobs[0].queue) {
            return Err(Error::invalid(
                "on Redis Cluster a batch is atomic only within one queue (each queue lives on its own node); enqueue one batch per queue",
            ));
        }
        let mut queues: Vec<String> = Vec::new();
        let mut qnos = Vec::new();
        for j in &jobs {
            if !queues.contains(&j.queue) {
                qnos.push(self.register(&j.queue).await?);
                queues.push(j.queue.clone());
            }
        }
        let n = jobs.len() as u64;
        let first = self.take_seqs(n).await?;
        let now = self.now();
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let mut inv = self.scripts.enqueue.prepare_invoke();
        for q in &queues {
            inv.key(keys::meta(q));
        }
        inv.arg(now)
            .arg(max_ms())
            .arg(&token)
            .arg(IDEM_TTL_MS)
            .arg(n);
        for (i, j) in jobs.iter().enumerate() {
            let qi = queues.iter().position(|q| *q == j.queue).unwrap_or(0);
            let id = keys::job_id(first + i as u64, qnos[qi]);
            let mut retry = j
                .retry
                .clone()
                .unwrap_or_else(|| self.opts.queue_config(&j.queue).retry.clone());
            if let Some(m) = j.max_retries {
                retry.max_retries = m;
            }
            if let Some(b) = j.backoff {
                retry.base_ms = duration::millis(b);
            }
            let (dedup, dttl) = match &j.dedup {
                Some((k, ttl)) => (k.as_str(), duration::millis(*ttl).max(1)),
                None => ("", 0),
            };
            inv.arg(qi + 1)
                .arg(keys::member(id))
                .arg(&j.kind)
                .arg(&j.payload)
                .arg(j.priority.0)
                .arg(j.key.as_deref().unwrap_or(""))
                .arg(dedup)
                .arg(dttl)
                .arg(duration::after(now, j.delay.unwrap_or_default()))
                .arg(retry.max_retries)
                .arg(retry.base_ms)
                .arg(retry.factor)
                .arg(retry.cap_ms)
                .arg(retry.jitter)
                .arg(j.timeout.map_or(0, |d| duration::millis(d).max(1)));
        }
        // A reply lost to a disconnect is ambiguous: the same call (same token, same ids) is
        // sent once more, and the script answers from its record if the first one ran.
        let v: Value = match self.conn.script(&inv).await {
            Err(Error::Unavailable { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                self.conn.script(&inv).await?
            }
            r => r?,
        };
        let (answer, replayed) = match &v {
            Value::Array(a) if a.len() == 2 => (
                as_text(&a[0]).ok_or_else(|| unexpected("an enqueue", &v))?,
                as_u64(&a[1]) == Some(1),
            ),
            _ => return Err(unexpected("an enqueue", &v)),
        };
        let mut out = Vec::with_capacity(jobs.len());
        for (part, j) in answer.split(',').zip(&jobs) {
            let (id, dup) = part
                .split_once(':')
                .ok_or_else(|| unexpected("an enqueue", &v))?;
            let id = JobId(id.parse().map_err(|_| unexpected("an enqueue", &v))?);
            let duplicate = dup == "1";
            if !replayed {
                self.emit(if duplicate {
                    Event::Deduplicated {
                        id,
                        queue: j.queue.clone(),
                    }
                } else {
                    Event::Enqueued {
                        id,
                        queue: j.queue.clone(),
                        kind: j.kind.clone(),
                    }
                });
            }
            out.push(Enqueued { id, duplicate });
        }
        if out.len() != jobs.len() {
            return Err(unexpected("an enqueue", &v));
        }
        self.enqueued.notify_waiters();
        Ok(out)
    }

    async fn reserve(&self, req: ReserveRequest) -> Result<Option<Lease>> {
        self.live()?;
        if req.queues.is_empty() {
            return Err(Error::invalid(
                "reserve needs at least one queue name to take jobs from",
            ));
        }
        for q in &req.queues {
            validate_queue_name(q)?;
        }
        let lease = req
            .lease
            .map(|d| duration::check("lease", d))
            .transpose()?
            .unwrap_or(self.opts.lease);
        let lease_ms = duration::millis(lease).max(1);
        let wait = req
            .wait
            .map(|d| duration::check("wait", d))
            .transpose()?
            .unwrap_or_default();
        let deadline = duration::after(self.now(), wait);
        let mut pause = Duration::from_millis(5);
        loop {
            // Registered before the try, so an enqueue of this process during it wakes us.
            let woken = self.enqueued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(l) = self.try_reserve(&req, lease_ms).await? {
                return Ok(Some(l));
            }
            if wait.is_zero() || self.now() >= deadline {
                return Ok(None);
            }
            self.live()?;
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    async fn ack(&self, id: JobId, token: LeaseToken) -> Result<()> {
        let queue = self.lease_queue(id).await?;
        let keep = self.opts.queue_config(&queue).keep_completed as u64;
        let v = self
            .queue_script(
                &self.scripts.ack,
                &queue,
                &[keys::member(id), token.0.to_string(), keep.to_string()],
            )
            .await?;
        match &v {
            Value::Nil => Err(self.lost(id)),
            Value::Array(a) if a.len() == 2 => {
                self.leases.lock().remove(&id);
                let kind = as_text(&a[0]).unwrap_or_default();
                let started = as_u64(&a[1]).unwrap_or(self.now());
                self.emit(Event::Completed {
                    id,
                    queue,
                    kind,
                    took: Duration::from_millis(self.now().saturating_sub(started)),
                });
                Ok(())
            }
            _ => Err(unexpected("an ack", &v)),
        }
    }

    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: String,
        action: FailAction,
    ) -> Result<FailOutcome> {
        let (act, after) = match action {
            FailAction::Retry => ("retry", 0),
            FailAction::RetryAfter(d) => (
                "after",
                duration::millis(duration::check("retry_after", d)?),
            ),
            FailAction::GiveUp => ("giveup", 0),
        };
        let queue = self.lease_queue(id).await?;
        let error = error_tail(&error);
        let v = self
            .queue_script(
                &self.scripts.fail,
                &queue,
                &[
                    keys::member(id),
                    token.0.to_string(),
                    error.to_string(),
                    act.to_string(),
                    after.to_string(),
                    fastrand::f64().to_string(),
                ],
            )
            .await?;
        let a = match &v {
            Value::Nil => return Err(self.lost(id)),
            Value::Array(a) if a.len() >= 3 => a,
            _ => return Err(unexpected("a fail", &v)),
        };
        self.leases.lock().remove(&id);
        let kind = as_text(&a[1]).unwrap_or_default();
        let attempt = as_u64(&a[2]).unwrap_or(0) as u32;
        if as_text(&a[0]).as_deref() == Some("dead") {
            self.emit(Event::Dead {
                id,
                queue,
                kind,
                attempt,
                error,
            });
            return Ok(FailOutcome::Dead);
        }
        let run_at = Timestamp(
            a.get(3)
                .and_then(as_u64)
                .ok_or_else(|| unexpected("a fail", &v))?,
        );
        self.emit(Event::Retrying {
            id,
            queue,
            kind,
            attempt,
            error,
            run_at,
        });
        Ok(FailOutcome::Retrying { run_at })
    }

    async fn heartbeat(&self, id: JobId, token: LeaseToken, lease: Duration) -> Result<Timestamp> {
        duration::check("heartbeat lease", lease)?;
        let queue = self.lease_queue(id).await?;
        let ms = duration::millis(lease).max(1);
        let v = self
            .queue_script(
                &self.scripts.heartbeat,
                &queue,
                &[keys::member(id), token.0.to_string(), ms.to_string()],
            )
            .await?;
        match &v {
            Value::Nil => Err(self.lost(id)),
            v => as_u64(v)
                .map(Timestamp)
                .ok_or_else(|| unexpected("a heartbeat", v)),
        }
    }

    async fn release(&self, id: JobId, token: LeaseToken) -> Result<()> {
        let queue = self.lease_queue(id).await?;
        let v = self
            .queue_script(
                &self.scripts.release,
                &queue,
                &[keys::member(id), token.0.to_string()],
            )
            .await?;
        match v {
            Value::Nil => Err(self.lost(id)),
            _ => {
                self.leases.lock().remove(&id);
                Ok(())
            }
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.live()?;
        let Some(queue) = self.queue_of(id).await? else {
            return Ok(None);
        };
        let now = self.now();
        let v = self
            .queue_script(&self.scripts.get, &queue, &[keys::member(id)])
            .await?;
        match Fields::from_value(&v)? {
            Some(f) => Ok(Some(f.job(&queue, now)?)),
            None => Ok(None),
        }
    }

    async fn list(&self, queue: &str, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        self.live()?;
        validate_queue_name(queue)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = self.now();
        let want = state.map(|s| s.as_str()).unwrap_or("");
        let v = self
            .queue_script(
                &self.scripts.list,
                queue,
                &[want.to_string(), (limit as u64).to_string()],
            )
            .await?;
        let Value::Array(items) = &v else {
            return Err(unexpected("a list", &v));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(f) = Fields::from_value(item)? {
                let job = f.job(queue, now)?;
                // `waiting` in Redis is waiting or delayed by run_at; keep what was asked.
                if state.is_none_or(|s| s == job.state) {
                    out.push(job);
                }
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<Stats> {
        self.live()?;
        let names: Vec<String> = self
            .conn
            .cmd(redis::cmd("SMEMBERS").arg(keys::QUEUES))
            .await?;
        let now = self.now();
        let counts =
            futures::future::join_all(names.iter().map(|q| self.queue_stats(q, now))).await;
        let mut s = Stats::default();
        for (name, c) in names.into_iter().zip(counts) {
            s.queues.insert(name, c?);
        }
        s.compute_totals();
        Ok(s)
    }

    async fn requeue_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        let n = self.dead_op("requeue", queue, which).await?;
        if n > 0 {
            self.emit(Event::Requeued {
                queue: queue.to_string(),
                count: n,
            });
            self.enqueued.notify_waiters();
        }
        Ok(n)
    }

    async fn purge_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        self.dead_op("purge", queue, which).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.live()?;
        validate_queue_name(queue)?;
        self.register(queue).await?;
        let _: Value = self
            .conn
            .cmd(
                redis::cmd("HSET")
                    .arg(keys::meta(queue))
                    .arg("paused")
                    .arg(if paused { "1" } else { "0" }),
            )
            .await?;
        if !paused {
            self.enqueued.notify_waiters();
        }
        Ok(())
    }

    async fn pause_key(&self, queue: &str, key: &str, for_: Duration) -> Result<()> {
        self.live()?;
        validate_queue_name(queue)?;
        duration::check("key pause", for_)?;
        if key.is_empty() {
            return Err(Error::invalid(
                "the partition key to pause is empty; name the key",
            ));
        }
        self.register(queue).await?;
        let until = duration::after(self.now(), for_);
        self.queue_script(
            &self.scripts.pause_key,
            queue,
            &[key.to_string(), until.to_string()],
        )
        .await?;
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Ends the leases this backend still holds (the next call on their queue counts the
    /// attempt and puts the job back) and refuses every later call with [`Error::Closed`].
    async fn shutdown(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let held: Vec<(JobId, (String, LeaseToken))> = self.leases.lock().drain().collect();
        let mut first_err = None;
        for (id, (queue, token)) in held {
            let r = self
                .queue_script(
                    &self.scripts.abandon,
                    &queue,
                    &[keys::member(id), token.0.to_string()],
                )
                .await;
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        self.enqueued.notify_waiters();
        match first_err {
            // The leases run out by themselves; nothing acknowledged is at stake.
            Some(e) => {
                tracing::warn!(error = %e, "could not hand back leases at shutdown; they come back when they expire");
                Ok(())
            }
            None => Ok(()),
        }
    }
}
