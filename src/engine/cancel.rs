//! Cancelling jobs and postponing attempts (a server's retry-after) without counting them.
//!
//! Invariants:
//! - A cancelled waiting, delayed or dead job leaves every index (ready set, delayed timer,
//!   gated set, key FIFO, pending counts, dead set, dedup) in the same step that stages its
//!   `Op::Cancel`; a key whose head it was passes to the next job of the key.
//! - An active job is never taken from its worker: cancel marks it (`JobExt::cancelled`,
//!   journaled), and whichever way its attempt ends — ack, fail, release, lease expiry or a
//!   restart — it is dropped with `Op::Cancel` instead of completing or retrying.
//! - A postponed attempt does not count: `attempts` goes back by one, the job waits (as its
//!   key's head) until the delay has passed, and the delay adds to `JobExt::postponed_ms`,
//!   written in the same record. Past the queue's budget it is an ordinary failed attempt.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Engine;
use crate::duration;
use crate::error::{Error, Result};
use crate::job::{
    validate_queue_name, CancelOutcome, FailAction, FailOutcome, JobId, JobState, LeaseToken,
    Timestamp,
};
use crate::record::{Change, JobMeta, Op};

/// Ids per `Op::Cancel` record (bounds one record's size).
const CANCEL_CHUNK: usize = 16384;

impl Engine {
    /// The per-job timeout stored with a job.
    pub(super) fn timeout_of(&self, id: JobId) -> Option<Duration> {
        self.mem
            .ext
            .get(&id)
            .and_then(|e| e.timeout_ms)
            .map(Duration::from_millis)
    }

    /// True when cancel was asked while the job ran.
    pub(super) fn cancel_asked(&self, id: JobId) -> bool {
        self.mem.ext.get(&id).is_some_and(|e| e.cancelled)
    }

    /// Drops a job whose attempt ended after cancel was asked (it is already out of the active
    /// table): its key passes on, its dedup key is released, its record is deleted.
    pub(super) fn drop_cancelled(&mut self, meta: &JobMeta, q: u32, now: u64) -> Result<()> {
        if let Some(key) = &meta.key {
            self.mem.key_release(q, key, meta.id, now);
        }
        let dedup = self.release_dedup(meta, q);
        self.mem.ext.remove(&meta.id);
        tracing::info!(id = %meta.id, queue = %meta.queue, "cancelled job dropped as its attempt ended");
        self.stage(Op::Cancel {
            ids: vec![meta.id],
            dedup,
        })?;
        Ok(())
    }

    /// Forgets the dedup entry that points to this job, if any; returns it for the record.
    fn release_dedup(&mut self, meta: &JobMeta, q: u32) -> Vec<(String, String)> {
        let Some(dk) = &meta.dedup else {
            return Vec::new();
        };
        let k = (q, dk.clone());
        match self.mem.dedup.get(&k) {
            Some(&(id, exp)) if id == meta.id => {
                self.mem.dedup.remove(&k);
                self.mem.dedup_expiry.remove(&(exp, q, dk.clone()));
                vec![(meta.queue.clone(), dk.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Takes a waiting or delayed job out of every index.
    fn unindex_pending(&mut self, meta: &JobMeta, q: u32, now: u64) {
        let id = meta.id;
        let slot = self.mem.slot_of(meta);
        self.mem.queues[q as usize].pending_remove(slot.run_at);
        let rk = slot.ready_key(id);
        self.mem.remove_ready(q, slot.kind, &rk);
        if self.mem.delayed_slots.remove(&id).is_some() {
            self.mem.delayed.remove(&(slot.run_at, id));
        }
        if let Some(g) = self.mem.gated_slots.remove(&id) {
            self.mem.gated.remove(&(g.gate, id));
        }
        let Some(key) = &meta.key else { return };
        let head = self
            .mem
            .keys
            .get(&(q, key.clone()))
            .and_then(|km| km.fifo.front().map(|(j, _)| *j));
        if head == Some(id) {
            // The key passes to the next job (placed, or held by the key's pause).
            self.mem.key_release(q, key, id, now);
        } else if let Some(km) = self.mem.keys.get_mut(&(q, key.clone())) {
            km.fifo.retain(|(j, _)| *j != id);
        }
    }

    /// Cancels each id; stages the records; answers once they are durable.
    pub(super) fn cancel(
        &mut self,
        ids: Vec<JobId>,
        reply: oneshot::Sender<Result<Vec<CancelOutcome>>>,
    ) {
        match self.cancel_inner(&ids) {
            Ok((out, true)) => self.on_durable(reply, out),
            Ok((out, false)) => {
                let _ = reply.send(Ok(out));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Returns each id's outcome and whether anything was staged.
    fn cancel_inner(&mut self, ids: &[JobId]) -> Result<(Vec<CancelOutcome>, bool)> {
        let now = self.now();
        let mut seen: HashMap<JobId, CancelOutcome> = HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        let mut dedup = Vec::new();
        let mut marks = Vec::new();
        for &id in ids {
            if let Some(o) = seen.get(&id) {
                out.push(*o);
                continue;
            }
            let o = if self.mem.active.contains_key(&id) {
                if !self.cancel_asked(id) {
                    let mut ext = self.mem.ext.get(&id).cloned().unwrap_or_default();
                    ext.cancelled = true;
                    marks.push((id, ext));
                }
                CancelOutcome::WillCancel
            } else {
                match self.meta(id)? {
                    None => CancelOutcome::NotFound,
                    Some(m) => match m.state {
                        JobState::Completed => CancelOutcome::AlreadyFinished,
                        // Counted active but not leased here (an orphan being expired): its
                        // attempt is ending now; mark it so that end drops it.
                        JobState::Active => {
                            let mut ext = self.mem.ext.get(&id).cloned().unwrap_or_default();
                            ext.cancelled = true;
                            marks.push((id, ext));
                            CancelOutcome::WillCancel
                        }
                        JobState::Waiting | JobState::Delayed | JobState::Dead => {
                            let q = self.mem.queue_id(&m.queue);
                            if m.state == JobState::Dead {
                                self.mem.queues[q as usize].remove_dead(id);
                            } else {
                                self.unindex_pending(&m, q, now);
                            }
                            dedup.extend(self.release_dedup(&m, q));
                            self.mem.ext.remove(&id);
                            gone.push(id);
                            CancelOutcome::Cancelled
                        }
                    },
                }
            };
            seen.insert(id, o);
            out.push(o);
        }
        let staged = !gone.is_empty() || !marks.is_empty();
        for (id, ext) in marks {
            self.mem.ext.insert(id, ext.clone());
            self.stage(Op::Ext { id, ext })?;
        }
        let mut dedup = Some(dedup);
        for chunk in gone.chunks(CANCEL_CHUNK) {
            self.stage(Op::Cancel {
                ids: chunk.to_vec(),
                dedup: dedup.take().unwrap_or_default(),
            })?;
        }
        Ok((out, staged))
    }

    /// Cancels every job of a queue in one state (and of one kind, if given).
    pub(super) fn cancel_where(
        &mut self,
        queue: &str,
        state: JobState,
        kind: Option<String>,
        reply: oneshot::Sender<Result<u64>>,
    ) {
        let r = (|| {
            validate_queue_name(queue)?;
            if state == JobState::Completed {
                return Err(Error::invalid(
                    "completed jobs cannot be cancelled; pick waiting, delayed, active or dead",
                ));
            }
            let ids: Vec<JobId> = self
                .list(queue, Some(state), usize::MAX)?
                .into_iter()
                .filter(|j| kind.as_deref().is_none_or(|k| j.kind == k))
                .map(|j| j.id)
                .collect();
            let (out, staged) = self.cancel_inner(&ids)?;
            Ok((
                out.iter().filter(|o| o.is_cancelled()).count() as u64,
                staged,
            ))
        })();
        match r {
            Ok((n, true)) => self.on_durable(reply, n),
            Ok((n, false)) => {
                let _ = reply.send(Ok(n));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Ends a leased attempt without counting it; the job runs again after `d`.
    pub(super) fn postpone(
        &mut self,
        id: JobId,
        token: LeaseToken,
        d: Duration,
        why: String,
        reply: oneshot::Sender<Result<FailOutcome>>,
    ) {
        // Checked before the lease is taken: a refused postpone changes nothing.
        if let Err(e) = duration::check("retry_after", d) {
            let _ = reply.send(Err(e));
            return;
        }
        let r = self
            .take_active(id, token)
            .and_then(|a| self.postpone_meta(a.meta, a.queue, d, &why));
        match r {
            Ok(o) => self.on_durable(reply, o),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn postpone_meta(
        &mut self,
        mut meta: JobMeta,
        q: u32,
        d: Duration,
        why: &str,
    ) -> Result<FailOutcome> {
        let now = self.now();
        let id = meta.id;
        if self.cancel_asked(id) {
            self.drop_cancelled(&meta, q, now)?;
            return Ok(FailOutcome::Cancelled);
        }
        let budget = self.opts.queue_config(&meta.queue).max_postpone;
        let mut ext = self.mem.ext.get(&id).cloned().unwrap_or_default();
        let total = ext.postponed_ms.saturating_add(duration::millis(d));
        if total > duration::millis(budget) {
            let msg = format!(
                "{why} (postponed {} in all, over the queue's budget of {}; counted as a failed attempt)",
                humantime::format_duration(Duration::from_millis(total)),
                humantime::format_duration(budget),
            );
            return self.fail_meta(
                meta,
                q,
                now,
                &msg,
                FailAction::RetryAfter(d),
                Change::Retried,
            );
        }
        ext.postponed_ms = total;
        let run_at = Timestamp(duration::after(now, d));
        meta.attempts = meta.attempts.saturating_sub(1);
        meta.lease = None;
        meta.run_at = run_at;
        meta.state = if run_at.0 > now {
            JobState::Delayed
        } else {
            JobState::Waiting
        };
        let op = Op::Group {
            ops: vec![
                Op::Update {
                    metas: vec![meta.clone()],
                    change: Change::Postponed,
                },
                Op::Ext {
                    id,
                    ext: ext.clone(),
                },
            ],
        };
        let bytes = op.encode()?;
        // A keyed job stays its key's head: placed directly, the key waits with it.
        let slot = self.mem.slot_of(&meta);
        self.mem.queues[q as usize].pending_add(run_at.0);
        self.mem.place(id, slot, now);
        self.mem.ext.insert(id, ext);
        self.stage_encoded(op, bytes);
        Ok(FailOutcome::Retrying { run_at })
    }
}
