//! The engine: the one owner of all mutations, on its own OS thread.
//!
//! Callers send [`Cmd`]s over a channel. The engine decides each change against its in-memory
//! indexes ([`mem`]), encodes it as a journal [`Op`] with the next seq, and hands groups of
//! records to the journal writer, which answers durable operations once they are written (and
//! synced, under `always`) and then applies them to the state store. Reads are answered at once
//! from memory, from `pending` (records handed to the writer but not yet applied to sled) or
//! from sled.
//!
//! Invariants:
//! - Records are staged in seq order and never reordered; the engine is the only producer.
//! - An operation's in-memory effect and its record are produced in the same step.
//! - When the writer reports a failed append, the engine drops its in-memory state and reloads
//!   it from the state store (which holds exactly the records that were written), then resyncs.
//! - sled calls and fsyncs happen on the engine and writer threads, never on tokio's workers.
//! - Under `always`, a job is handed to a worker only once the record that enqueued (or
//!   requeued) it is durable: the writer raises `durable` after each sync, before answering
//!   that batch's callers, and wakes the engine, which then moves the jobs out of the gated
//!   set ([`mem::Mem::set_durable`]). Listings and stats show such jobs at once.
//! - Heartbeats are not journaled; a reload keeps the lease expiries they extended.

mod cancel;
pub mod mem;
mod ops;
mod retention;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tokio::sync::{broadcast, oneshot};

use crate::backend::ReserveRequest;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::job::{
    CancelOutcome, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease, LeaseToken,
    NewJob, Selection, Timestamp,
};
use crate::journal::writer::{self, Batch, Reply, Staged};
use crate::options::Options;
use crate::record::{JobMeta, Op};
use crate::stats::{Event, Stats};
use crate::store::Store;
use mem::Mem;

/// A request to the engine.
pub enum Cmd {
    Enqueue(Vec<NewJob>, oneshot::Sender<Result<Vec<Enqueued>>>),
    Reserve(ReserveRequest, oneshot::Sender<Result<Option<Lease>>>),
    Ack(JobId, LeaseToken, oneshot::Sender<Result<()>>),
    Fail(
        JobId,
        LeaseToken,
        String,
        FailAction,
        oneshot::Sender<Result<FailOutcome>>,
    ),
    Heartbeat(
        JobId,
        LeaseToken,
        Duration,
        oneshot::Sender<Result<Timestamp>>,
    ),
    Release(JobId, LeaseToken, oneshot::Sender<Result<()>>),
    Get(JobId, oneshot::Sender<Result<Option<Job>>>),
    List(
        String,
        Option<JobState>,
        usize,
        oneshot::Sender<Result<Vec<Job>>>,
    ),
    Stats(oneshot::Sender<Result<Stats>>),
    Requeue(String, Selection, oneshot::Sender<Result<u64>>),
    Purge(String, Selection, oneshot::Sender<Result<u64>>),
    SetPaused(String, bool, oneshot::Sender<Result<()>>),
    PauseKey(String, String, Duration, oneshot::Sender<Result<()>>),
    Cancel(Vec<JobId>, oneshot::Sender<Result<Vec<CancelOutcome>>>),
    CancelWhere(
        String,
        JobState,
        Option<String>,
        oneshot::Sender<Result<u64>>,
    ),
    Postpone(
        JobId,
        LeaseToken,
        Duration,
        String,
        oneshot::Sender<Result<FailOutcome>>,
    ),
    /// The writer failed an append; the journal ends at this seq.
    WriterFailed(u64),
    Shutdown(oneshot::Sender<Result<()>>),
}

struct Pending {
    seq: u64,
    meta: Option<JobMeta>,
    payload: Option<Arc<Vec<u8>>>,
}

struct Waiter {
    req: ReserveRequest,
    deadline: u64,
    reply: oneshot::Sender<Result<Option<Lease>>>,
}

/// The engine's state (owned by its thread).
pub struct Engine {
    opts: Options,
    clock: Arc<dyn Clock>,
    store: Store,
    writer: Sender<writer::Msg>,
    applied: Arc<AtomicU64>,
    next_seq: u64,
    last_id: u64,
    staged: Vec<Staged>,
    replies: Vec<Reply>,
    written: Vec<Reply>,
    resync: bool,
    pending: HashMap<JobId, Pending>,
    pending_order: VecDeque<(u64, JobId)>,
    mem: Mem,
    waiters: VecDeque<Waiter>,
    events: broadcast::Sender<Event>,
    rng: fastrand::Rng,
    closed: bool,
    /// Set by the writer to (last good seq + 1) when an append failed.
    failed: Arc<AtomicU64>,
    /// Under `always`: jobs are reservable only once their record is durable.
    gating: bool,
    /// The highest seq the writer has synced (under `always`), set before it answers callers.
    durable: Arc<AtomicU64>,
    /// Wakes the engine when `durable` moves (bounded to one pending wake).
    wake_tx: Sender<()>,
    wake_rx: Receiver<()>,
    /// When retention by age was last applied.
    last_trim: u64,
}

impl Engine {
    /// Builds the engine over a recovered store and loads its indexes. Jobs that were active
    /// when the previous process stopped go back to waiting (their attempt counted) or die.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        opts: Options,
        clock: Arc<dyn Clock>,
        store: Store,
        writer: Sender<writer::Msg>,
        applied: Arc<AtomicU64>,
        last_seq: u64,
        events: broadcast::Sender<Event>,
        failed: Arc<AtomicU64>,
    ) -> Result<Engine> {
        let gating = opts.fsync == crate::options::FsyncPolicy::Always;
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let mut e = Engine {
            opts,
            clock,
            store,
            writer,
            applied,
            next_seq: last_seq + 1,
            last_id: 0,
            staged: Vec::new(),
            replies: Vec::new(),
            written: Vec::new(),
            resync: false,
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            mem: Mem::default(),
            waiters: VecDeque::new(),
            events,
            rng: fastrand::Rng::new(),
            closed: false,
            failed,
            gating,
            durable: Arc::new(AtomicU64::new(last_seq)),
            wake_tx,
            wake_rx,
            last_trim: 0,
        };
        e.mem.durable = last_seq;
        if gating {
            // Recovered records may be written but never synced (the previous process died
            // between its write and its fdatasync): sync them before any job is handed out.
            let (tx, rx) = std::sync::mpsc::channel();
            let sent = e.writer.send(writer::Msg::Flush(Box::new(move |r| {
                let _ = tx.send(r);
            })));
            if sent.is_ok() {
                rx.recv_timeout(Duration::from_secs(60))
                    .unwrap_or(Err(Error::Closed))?;
            }
        }
        e.last_id = e.store.next_id().saturating_sub(1);
        let orphans = e.load(false)?;
        let now = e.now();
        for meta in orphans {
            e.expire_lease(meta, now, "the process stopped before the job finished");
        }
        Ok(e)
    }

    fn now(&self) -> u64 {
        self.clock.now().0
    }

    /// Runs the command loop until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Cmd>) {
        loop {
            let failed = self.failed.swap(0, Ordering::AcqRel);
            if failed > 0 {
                self.writer_failed(failed - 1);
            }
            let now = self.now();
            let wait = self
                .next_deadline()
                .map(|t| t.saturating_sub(now))
                .unwrap_or(1000)
                .clamp(1, 1000);
            if self.gating {
                // Also woken when the writer reports a sync (gated jobs may become ready).
                let wake = self.wake_rx.clone();
                crossbeam_channel::select! {
                    recv(rx) -> m => match m {
                        Ok(cmd) => self.handle(cmd),
                        Err(_) => break,
                    },
                    recv(wake) -> _ => {}
                    default(Duration::from_millis(wait)) => {}
                }
            } else {
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(cmd) => self.handle(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            for _ in 0..1024 {
                if self.closed {
                    break;
                }
                match rx.try_recv() {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                }
            }
            if self.closed {
                return;
            }
            self.run_timers();
            self.serve_waiters();
            self.flush();
            self.prune_pending();
        }
        // All handles dropped: best-effort flush.
        self.flush();
        let (tx, rx2) = std::sync::mpsc::channel();
        let _ = self.writer.send(writer::Msg::Stop(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        let _ = rx2.recv_timeout(Duration::from_secs(10));
    }

    fn handle(&mut self, cmd: Cmd) {
        if self.closed {
            return;
        }
        // A failed append reported since the last loop turn: reload before answering anything,
        // so no command sees records that never reached the journal.
        let failed = self.failed.swap(0, Ordering::AcqRel);
        if failed > 0 {
            self.writer_failed(failed - 1);
        }
        // Every command sees what is due at its time (delayed jobs, leases, dedup expiry).
        self.run_timers();
        match cmd {
            Cmd::Enqueue(jobs, reply) => self.enqueue(jobs, reply),
            Cmd::Reserve(req, reply) => self.reserve_cmd(req, reply),
            Cmd::Ack(id, tok, reply) => self.ack(id, tok, reply),
            Cmd::Fail(id, tok, err, action, reply) => self.fail(id, tok, err, action, reply),
            Cmd::Heartbeat(id, tok, d, reply) => {
                let _ = reply.send(self.heartbeat(id, tok, d));
            }
            Cmd::Release(id, tok, reply) => self.release(id, tok, reply),
            Cmd::Get(id, reply) => {
                let _ = reply.send(self.get(id));
            }
            Cmd::List(q, st, limit, reply) => {
                let _ = reply.send(self.list(&q, st, limit));
            }
            Cmd::Stats(reply) => {
                let _ = reply.send(Ok(self.stats()));
            }
            Cmd::Requeue(q, sel, reply) => self.requeue(&q, sel, reply),
            Cmd::Purge(q, sel, reply) => self.purge(&q, sel, reply),
            Cmd::SetPaused(q, p, reply) => self.set_paused(&q, p, reply),
            Cmd::PauseKey(q, k, d, reply) => {
                let _ = reply.send(self.pause_key(&q, &k, d));
            }
            Cmd::Cancel(ids, reply) => self.cancel(ids, reply),
            Cmd::CancelWhere(q, st, kind, reply) => self.cancel_where(&q, st, kind, reply),
            Cmd::Postpone(id, tok, d, why, reply) => self.postpone(id, tok, d, why, reply),
            Cmd::WriterFailed(last) => self.writer_failed(last),
            Cmd::Shutdown(reply) => self.shutdown(reply),
        }
    }

    /// Stages one record and remembers the jobs it touches for reads until sled has it.
    fn stage(&mut self, op: Op) -> Result<u64> {
        let bytes = op.encode()?;
        Ok(self.stage_encoded(op, bytes))
    }

    /// Stages a record already encoded by [`Op::encode`] (which is where a record that could
    /// not be written is refused, before anything changes).
    fn stage_encoded(&mut self, op: Op, bytes: Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.remember_op(seq, &op);
        self.staged.push(Staged { seq, op, bytes });
        seq
    }

    /// Remembers the jobs an op touches (for reads until sled has it).
    fn remember_op(&mut self, seq: u64, op: &Op) {
        match op {
            Op::Enqueue { jobs } => {
                for j in jobs {
                    self.remember(
                        seq,
                        j.meta.id,
                        Some(j.meta.clone()),
                        Some(Arc::new(j.payload.clone())),
                    );
                }
            }
            Op::Update { metas, .. } => {
                for m in metas {
                    self.remember(seq, m.id, Some(m.clone()), None);
                }
            }
            Op::Delete { ids } | Op::Cancel { ids, .. } => {
                for id in ids {
                    self.remember(seq, *id, None, None);
                }
            }
            Op::Group { ops } => {
                for op in ops {
                    self.remember_op(seq, op);
                }
            }
            _ => {}
        }
    }

    fn remember(
        &mut self,
        seq: u64,
        id: JobId,
        meta: Option<JobMeta>,
        payload: Option<Arc<Vec<u8>>>,
    ) {
        let deleted = meta.is_none();
        let entry = self.pending.entry(id).or_insert(Pending {
            seq,
            meta: None,
            payload: None,
        });
        entry.seq = seq;
        entry.meta = meta;
        if payload.is_some() {
            entry.payload = payload;
        }
        if deleted {
            entry.payload = None;
        }
        self.pending_order.push_back((seq, id));
    }

    fn prune_pending(&mut self) {
        let applied = self.applied.load(Ordering::Acquire);
        while let Some(&(seq, id)) = self.pending_order.front() {
            if seq > applied {
                break;
            }
            self.pending_order.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.seq <= applied) {
                self.pending.remove(&id);
            }
        }
    }

    /// A job's latest metadata (pending first, then sled).
    fn meta(&self, id: JobId) -> Result<Option<JobMeta>> {
        if let Some(p) = self.pending.get(&id) {
            return Ok(p.meta.clone());
        }
        self.store.meta(id)
    }

    fn payload(&self, id: JobId) -> Result<Vec<u8>> {
        if let Some(Some(p)) = self.pending.get(&id).map(|p| p.payload.clone()) {
            return Ok((*p).clone());
        }
        Ok(self.store.payload(id)?.unwrap_or_default())
    }

    /// Sends staged records (and their replies) to the writer.
    fn flush(&mut self) {
        if self.staged.is_empty()
            && self.replies.is_empty()
            && self.written.is_empty()
            && !self.resync
        {
            return;
        }
        let mut replies = std::mem::take(&mut self.replies);
        if self.gating {
            if let Some(last) = self.staged.last().map(|r| r.seq) {
                // First of the batch's replies: the engine learns the records are durable
                // before any caller of this batch is answered (a caller that reserves right
                // after its enqueue returned finds the job ready).
                let durable = self.durable.clone();
                let wake = self.wake_tx.clone();
                replies.insert(
                    0,
                    Box::new(move |r: Result<()>| {
                        if r.is_ok() {
                            durable.fetch_max(last, Ordering::AcqRel);
                            let _ = wake.try_send(());
                        }
                    }),
                );
            }
        }
        let batch = Batch {
            records: std::mem::take(&mut self.staged),
            replies,
            written: std::mem::take(&mut self.written),
            resync: std::mem::take(&mut self.resync),
        };
        if let Err(crossbeam_channel::SendError(writer::Msg::Batch(b))) =
            self.writer.send(writer::Msg::Batch(batch))
        {
            for r in b.written.into_iter().chain(b.replies) {
                r(Err(Error::Closed));
            }
        }
    }

    /// Registers a reply to send once the staged records are written (not yet synced).
    fn on_written<T: Send + 'static>(&mut self, reply: oneshot::Sender<Result<T>>, value: T) {
        self.written.push(Box::new(move |r: Result<()>| {
            let _ = reply.send(r.map(|_| value));
        }));
    }

    /// Registers a reply to send once the staged records are durable.
    fn on_durable<T: Send + 'static>(&mut self, reply: oneshot::Sender<Result<T>>, value: T) {
        self.replies.push(Box::new(move |r: Result<()>| {
            let _ = reply.send(r.map(|_| value));
        }));
    }

    fn emit(&self, ev: Event) {
        let _ = self.events.send(ev);
    }

    fn writer_failed(&mut self, last_seq: u64) {
        tracing::warn!(
            last_seq,
            "journal append failed; reloading state from the store"
        );
        let unanswered = std::mem::take(&mut self.written)
            .into_iter()
            .chain(std::mem::take(&mut self.replies));
        for r in unanswered {
            r(Err(Error::io(
                "journal append failed",
                std::io::Error::other("an earlier append failed; this operation was not written"),
            )));
        }
        self.staged.clear();
        self.pending.clear();
        self.pending_order.clear();
        self.next_seq = last_seq + 1;
        // Heartbeats are not journaled: the store holds each lease's expiry as reserved. Keep
        // the expiries that heartbeats extended (same job, same token), so a reload never
        // expires a lease early.
        let extended: HashMap<JobId, (u64, u64)> = self
            .mem
            .active
            .iter()
            .map(|(id, a)| (*id, (a.token, a.until)))
            .collect();
        if let Err(e) = self.load(true) {
            tracing::error!(error = %e, "cannot reload state after a failed append");
        }
        self.mem.restore_lease_expiries(&extended);
        self.resync = true;
    }

    fn shutdown(&mut self, reply: oneshot::Sender<Result<()>>) {
        for w in std::mem::take(&mut self.waiters) {
            let _ = w.reply.send(Ok(None));
        }
        self.flush();
        let (tx, rx) = std::sync::mpsc::channel();
        let sent = self.writer.send(writer::Msg::Stop(Box::new(move |r| {
            let _ = tx.send(r);
        })));
        let r = match sent {
            Ok(()) => rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or(Err(Error::Closed)),
            Err(_) => Ok(()),
        };
        let _ = self.store.flush();
        self.closed = true;
        let _ = reply.send(r);
    }

    /// The seq the next staged record gets, as a gate for the jobs it brings in (0 when jobs
    /// are not held back: `everysec`, `no`).
    fn gate_for(&self, records_ahead: u64) -> u64 {
        if self.gating {
            self.next_seq + records_ahead
        } else {
            0
        }
    }

    /// Next id: unique, sortable by creation: `max(last + 1, now_ms << 16)`.
    fn next_id(&mut self, now: u64) -> JobId {
        let id = self.last_id.saturating_add(1).max(now << 16);
        self.last_id = id;
        JobId(id)
    }
}

/// Keeps the last `MAX_ERROR_TEXT` bytes of an error, on a char boundary.
pub(crate) fn error_tail(s: &str) -> String {
    let max = crate::job::MAX_ERROR_TEXT;
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}
