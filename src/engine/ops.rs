//! The engine's operations: each decides a change, updates the indexes and stages its record.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::oneshot;

use super::mem::Active;
use super::{error_tail, Engine, Waiter};
use crate::backend::ReserveRequest;
use crate::duration;
use crate::error::{Error, Result};
use crate::job::{
    validate_queue_name, AttemptError, Enqueued, FailAction, FailOutcome, Job, JobId, JobState,
    Lease, LeaseToken, NewJob, Selection, Timestamp,
};
use crate::record::{Change, JobExt, JobMeta, LeaseInfo, NewRecord, Op};
use crate::stats::{Event, QueueStats, Stats};

impl Engine {
    pub(super) fn enqueue(
        &mut self,
        jobs: Vec<NewJob>,
        reply: oneshot::Sender<Result<Vec<Enqueued>>>,
    ) {
        match self.enqueue_inner(jobs) {
            Ok((out, staged)) if staged => self.on_durable(reply, out),
            Ok((out, _)) => {
                // Only duplicates: nothing to write, but answer after what is queued is durable
                // (the first job may itself be in flight).
                self.on_durable(reply, out)
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn enqueue_inner(&mut self, jobs: Vec<NewJob>) -> Result<(Vec<Enqueued>, bool)> {
        if jobs.is_empty() {
            return Ok((Vec::new(), false));
        }
        crate::job::validate_batch(&jobs, self.opts.max_payload)?;
        let now = self.now();
        let mut out = Vec::with_capacity(jobs.len());
        let mut recs = Vec::with_capacity(jobs.len());
        let mut exts = Vec::new();
        // Dedup keys claimed earlier in this same batch.
        let mut claimed: std::collections::HashMap<(u32, String), JobId> =
            std::collections::HashMap::new();
        let queues_before = self.mem.queues.len();
        for j in jobs {
            let q = self.mem.queue_id(&j.queue);
            if let Some((dk, ttl)) = &j.dedup {
                let k = (q, dk.clone());
                let live = self
                    .mem
                    .dedup
                    .get(&k)
                    .filter(|(_, exp)| *exp > now)
                    .map(|(id, _)| *id)
                    .or_else(|| claimed.get(&k).copied());
                if let Some(id) = live {
                    out.push(Enqueued {
                        id,
                        duplicate: true,
                    });
                    self.emit(Event::Deduplicated {
                        id,
                        queue: j.queue.clone(),
                    });
                    continue;
                }
                let _ = ttl;
            }
            let id = self.next_id(now);
            let mut retry = j
                .retry
                .clone()
                .unwrap_or_else(|| self.opts.queue_config(&j.queue).retry.clone());
            if let Some(n) = j.max_retries {
                retry.max_retries = n;
            }
            if let Some(b) = j.backoff {
                retry.base_ms = duration::millis(b);
            }
            let run_at = duration::after(now, j.delay.unwrap_or_default());
            let meta = JobMeta {
                id,
                queue: j.queue,
                kind: j.kind,
                priority: j.priority,
                key: j.key,
                dedup: j.dedup.as_ref().map(|(k, _)| k.clone()),
                state: if run_at > now {
                    JobState::Delayed
                } else {
                    JobState::Waiting
                },
                attempts: 0,
                retry,
                created_at: Timestamp(now),
                run_at: Timestamp(run_at),
                finished_at: None,
                errors: Vec::new(),
                lease: None,
                queued: id.0,
            };
            let dedup_expires = j
                .dedup
                .as_ref()
                .map(|(_, ttl)| Timestamp(duration::after(now, *ttl)));
            if let Some((dk, _)) = &j.dedup {
                claimed.insert((q, dk.clone()), id);
            }
            if let Some(t) = j.timeout {
                let ext = JobExt {
                    timeout_ms: Some(duration::millis(t).max(1)),
                    ..JobExt::default()
                };
                exts.push(Op::Ext { id, ext });
            }
            out.push(Enqueued {
                id,
                duplicate: false,
            });
            recs.push(NewRecord {
                meta,
                payload: j.payload,
                dedup_expires,
            });
        }
        if recs.is_empty() {
            return Ok((out, false));
        }
        // Encode first (a record that could not be written is refused with nothing changed),
        // then index the jobs and stage the one atomic record.
        // Jobs with an extension (a timeout) are written with it in one atomic group.
        let op = if exts.is_empty() {
            Op::Enqueue { jobs: recs }
        } else {
            let mut ops = vec![Op::Enqueue { jobs: recs }];
            ops.extend(exts);
            Op::Group { ops }
        };
        let bytes = op.encode().inspect_err(|_| {
            // Queues first seen in this refused batch are forgotten too.
            for qm in self.mem.queues.drain(queues_before..) {
                self.mem.queue_ids.remove(&qm.name);
            }
        })?;
        let (recs, exts) = match &op {
            Op::Enqueue { jobs } => (jobs, &[][..]),
            Op::Group { ops } => match ops.split_first() {
                Some((Op::Enqueue { jobs }, rest)) => (jobs, rest),
                _ => unreachable!("built as a group led by an enqueue just above"),
            },
            _ => unreachable!("built as an enqueue just above"),
        };
        for e in exts {
            if let Op::Ext { id, ext } = e {
                self.mem.ext.insert(*id, ext.clone());
            }
        }
        // The record is staged next: its seq gates the jobs under `always`.
        let gate = self.gate_for(0);
        for r in recs {
            let mut slot = self.mem.slot_of(&r.meta);
            slot.gate = gate;
            let q = slot.queue;
            if let (Some(dk), Some(exp)) = (&r.meta.dedup, r.dedup_expires) {
                self.mem.dedup.insert((q, dk.clone()), (r.meta.id, exp.0));
                self.mem.dedup_expiry.insert((exp.0, q, dk.clone()));
            }
            self.mem.arrive(r.meta.id, slot, now);
            self.emit(Event::Enqueued {
                id: r.meta.id,
                queue: r.meta.queue.clone(),
                kind: r.meta.kind.clone(),
            });
        }
        self.stage_encoded(op, bytes);
        Ok((out, true))
    }

    pub(super) fn reserve_cmd(
        &mut self,
        req: ReserveRequest,
        reply: oneshot::Sender<Result<Option<Lease>>>,
    ) {
        for q in &req.queues {
            if let Err(e) = validate_queue_name(q) {
                let _ = reply.send(Err(e));
                return;
            }
        }
        if req.queues.is_empty() {
            let _ = reply.send(Err(Error::invalid("reserve needs at least one queue name")));
            return;
        }
        // Durations are checked before anything is reserved.
        let checked = req
            .lease
            .map(|d| duration::check("lease", d))
            .transpose()
            .and_then(|_| req.wait.map(|d| duration::check("wait", d)).transpose());
        if let Err(e) = checked {
            let _ = reply.send(Err(e));
            return;
        }
        match self.try_reserve(&req) {
            Ok(Some(lease)) => self.hand_out(lease, reply),
            Ok(None) => {
                let wait = req.wait.unwrap_or_default();
                if wait.is_zero() {
                    let _ = reply.send(Ok(None));
                } else {
                    let deadline = duration::after(self.now(), wait);
                    self.waiters.push_back(Waiter {
                        req,
                        deadline,
                        reply,
                    });
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Sends a lease once its reserve record is written (so a process killed after a worker got
    /// the job still counts that attempt); if the caller is already gone, gives the job back.
    /// (A caller that leaves during the write loses the lease to its expiry.)
    pub(super) fn hand_out(&mut self, lease: Lease, reply: oneshot::Sender<Result<Option<Lease>>>) {
        if reply.is_closed() {
            let _ = self.release_inner(lease.job.id, lease.token);
            return;
        }
        self.on_written(reply, Some(lease));
    }

    /// Takes the best ready job for `req`, if any.
    pub(super) fn try_reserve(&mut self, req: &ReserveRequest) -> Result<Option<Lease>> {
        let queues: Vec<u32> = req
            .queues
            .iter()
            .filter_map(|q| self.mem.queue_ids.get(q).copied())
            .collect();
        let exclude: Vec<u32> = req
            .exclude_kinds
            .iter()
            .filter_map(|k| self.mem.kind_ids.get(k).copied())
            .collect();
        let Some((q, kind, rk)) = self.mem.best_ready(&queues, &exclude) else {
            return Ok(None);
        };
        let id = rk.2;
        let Some(mut meta) = self.meta(id)? else {
            // Index and store disagree: drop the stale entry.
            self.mem.remove_ready(q, kind, &rk);
            tracing::warn!(%id, "ready job missing from the state store; skipped");
            return Ok(None);
        };
        let payload = self.payload(id)?;
        self.mem.remove_ready(q, kind, &rk);
        let now = self.now();
        self.mem.queues[q as usize].pending_remove(meta.run_at.0);
        let lease_ms = duration::millis(req.lease.unwrap_or(self.opts.lease)).max(1);
        let token = self.rng.u64(..);
        let until = now.saturating_add(lease_ms);
        let ready_at = meta.run_at.0;
        meta.attempts += 1;
        meta.state = JobState::Active;
        meta.lease = Some(LeaseInfo {
            token,
            until: Timestamp(until),
            started: Timestamp(now),
        });
        self.stage(Op::Update {
            metas: vec![meta.clone()],
            change: Change::Reserved,
        })?;
        self.mem.leases.insert((until, id));
        self.mem.queues[q as usize].active += 1;
        self.mem.active.insert(
            id,
            Active {
                meta: meta.clone(),
                queue: q,
                token,
                until,
                ready_at,
            },
        );
        self.emit(Event::Started {
            id,
            queue: meta.queue.clone(),
            kind: meta.kind.clone(),
            attempt: meta.attempts,
            waited: Duration::from_millis(now.saturating_sub(ready_at)),
        });
        let mut job = meta.into_job(payload);
        job.timeout = self.timeout_of(id);
        Ok(Some(Lease {
            job,
            token: LeaseToken(token),
            expires_at: Timestamp(until),
        }))
    }

    /// Removes an active job whose token matches.
    pub(super) fn take_active(&mut self, id: JobId, token: LeaseToken) -> Result<Active> {
        match self.mem.active.get(&id) {
            Some(a) if a.token == token.0 => {}
            _ => return Err(Error::LeaseLost { id: id.to_string() }),
        }
        let a = self
            .mem
            .active
            .remove(&id)
            .ok_or_else(|| Error::LeaseLost { id: id.to_string() })?;
        self.mem.leases.remove(&(a.until, id));
        self.mem.queues[a.queue as usize].active -= 1;
        Ok(a)
    }

    pub(super) fn ack(&mut self, id: JobId, token: LeaseToken, reply: oneshot::Sender<Result<()>>) {
        match self.ack_inner(id, token) {
            Ok(()) => self.on_durable(reply, ()),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn ack_inner(&mut self, id: JobId, token: LeaseToken) -> Result<()> {
        let a = self.take_active(id, token)?;
        let now = self.now();
        if self.cancel_asked(id) {
            return self.drop_cancelled(&a.meta, a.queue, now);
        }
        let mut meta = a.meta;
        let took = meta
            .lease
            .map(|l| now.saturating_sub(l.started.0))
            .unwrap_or(0);
        meta.state = JobState::Completed;
        meta.finished_at = Some(Timestamp(now));
        meta.lease = None;
        let q = a.queue;
        let keep = self.opts.queue_config(&meta.queue).keep_completed;
        let qm = &mut self.mem.queues[q as usize];
        qm.completed.push_back((now, id));
        let mut drop = Vec::new();
        while qm.completed.len() > keep {
            if let Some((_, old)) = qm.completed.pop_front() {
                drop.push(old);
            }
        }
        if let Some(key) = &meta.key {
            self.mem.key_release(q, key, id, now);
        }
        self.emit(Event::Completed {
            id,
            queue: meta.queue.clone(),
            kind: meta.kind.clone(),
            took: Duration::from_millis(took),
        });
        self.stage(Op::Update {
            metas: vec![meta],
            change: Change::Acked,
        })?;
        if !drop.is_empty() {
            for id in &drop {
                self.mem.ext.remove(id);
            }
            self.stage(Op::Delete { ids: drop })?;
        }
        Ok(())
    }

    pub(super) fn fail(
        &mut self,
        id: JobId,
        token: LeaseToken,
        error: String,
        action: FailAction,
        reply: oneshot::Sender<Result<FailOutcome>>,
    ) {
        if let FailAction::RetryAfter(d) = action {
            // Checked before the lease is taken: a refused fail changes nothing.
            if let Err(e) = duration::check("retry_after", d) {
                let _ = reply.send(Err(e));
                return;
            }
        }
        match self.take_active(id, token) {
            Ok(a) => {
                let now = self.now();
                match self.fail_meta(a.meta, a.queue, now, &error, action, Change::Retried) {
                    Ok(outcome) => self.on_durable(reply, outcome),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Records a failed attempt of an active (already un-indexed) job and decides its fate.
    pub(super) fn fail_meta(
        &mut self,
        mut meta: JobMeta,
        q: u32,
        now: u64,
        error: &str,
        action: FailAction,
        change: Change,
    ) -> Result<FailOutcome> {
        let id = meta.id;
        if self.cancel_asked(id) {
            self.drop_cancelled(&meta, q, now)?;
            return Ok(FailOutcome::Cancelled);
        }
        meta.lease = None;
        meta.errors.push(AttemptError {
            attempt: meta.attempts,
            at: Timestamp(now),
            error: error_tail(error),
        });
        let exhausted = meta.attempts > meta.retry.max_retries;
        let outcome = match action {
            FailAction::GiveUp => FailOutcome::Dead,
            _ if exhausted => FailOutcome::Dead,
            FailAction::Retry => {
                let d = meta.retry.delay_with_jitter(meta.attempts, self.rng.f64());
                FailOutcome::Retrying {
                    run_at: Timestamp(duration::after(now, d)),
                }
            }
            FailAction::RetryAfter(d) => FailOutcome::Retrying {
                run_at: Timestamp(duration::after(now, d)),
            },
        };
        let final_change = match outcome {
            FailOutcome::Cancelled => unreachable!("a cancel-asked job returned above"),
            FailOutcome::Dead => {
                meta.state = JobState::Dead;
                meta.finished_at = Some(Timestamp(now));
                self.mem.queues[q as usize].add_dead(id, now);
                if let Some(key) = &meta.key {
                    self.mem.key_release(q, key, id, now);
                }
                self.emit(Event::Dead {
                    id,
                    queue: meta.queue.clone(),
                    kind: meta.kind.clone(),
                    attempt: meta.attempts,
                    error: error_tail(error),
                });
                Change::Died
            }
            FailOutcome::Retrying { run_at } => {
                meta.state = if run_at.0 > now {
                    JobState::Delayed
                } else {
                    JobState::Waiting
                };
                meta.run_at = run_at;
                let slot = self.mem.slot_of(&meta);
                self.mem.queues[q as usize].pending_add(run_at.0);
                // A keyed job stays its key's head: place it directly.
                self.mem.place(id, slot, now);
                self.emit(Event::Retrying {
                    id,
                    queue: meta.queue.clone(),
                    kind: meta.kind.clone(),
                    attempt: meta.attempts,
                    error: error_tail(error),
                    run_at,
                });
                change
            }
        };
        self.stage(Op::Update {
            metas: vec![meta],
            change: final_change,
        })?;
        if outcome == FailOutcome::Dead {
            self.trim_dead_count(q);
        }
        Ok(outcome)
    }

    pub(super) fn heartbeat(
        &mut self,
        id: JobId,
        token: LeaseToken,
        d: Duration,
    ) -> Result<Timestamp> {
        duration::check("heartbeat lease", d)?;
        let now = self.now();
        let a = match self.mem.active.get_mut(&id) {
            Some(a) if a.token == token.0 => a,
            _ => return Err(Error::LeaseLost { id: id.to_string() }),
        };
        if self.mem.ext.get(&id).is_some_and(|e| e.cancelled) {
            // The lease still holds (ack/fail drop the job); the holder should stop now.
            return Err(Error::Cancelled { id: id.to_string() });
        }
        let until = now.saturating_add(duration::millis(d).max(1));
        self.mem.leases.remove(&(a.until, id));
        a.until = until;
        if let Some(l) = &mut a.meta.lease {
            l.until = Timestamp(until);
        }
        self.mem.leases.insert((until, id));
        Ok(Timestamp(until))
    }

    pub(super) fn release(
        &mut self,
        id: JobId,
        token: LeaseToken,
        reply: oneshot::Sender<Result<()>>,
    ) {
        match self.release_inner(id, token) {
            Ok(()) => self.on_durable(reply, ()),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn release_inner(&mut self, id: JobId, token: LeaseToken) -> Result<()> {
        let a = self.take_active(id, token)?;
        let now = self.now();
        if self.cancel_asked(id) {
            return self.drop_cancelled(&a.meta, a.queue, now);
        }
        let mut meta = a.meta;
        meta.attempts = meta.attempts.saturating_sub(1);
        meta.state = JobState::Waiting;
        meta.lease = None;
        let slot = self.mem.slot_of(&meta);
        self.mem.queues[a.queue as usize].pending_add(slot.run_at);
        self.mem.place(id, slot, now);
        self.stage(Op::Update {
            metas: vec![meta],
            change: Change::Released,
        })?;
        Ok(())
    }

    /// A job as the public sees it: waiting vs delayed decided by its run time.
    fn public(&self, meta: JobMeta, now: u64) -> Result<Job> {
        let payload = self.payload(meta.id)?;
        let id = meta.id;
        let mut job = meta.into_job(payload);
        job.timeout = self.timeout_of(id);
        if matches!(job.state, JobState::Waiting | JobState::Delayed) {
            job.state = if job.run_at.0 > now {
                JobState::Delayed
            } else {
                JobState::Waiting
            };
        }
        Ok(job)
    }

    pub(super) fn get(&self, id: JobId) -> Result<Option<Job>> {
        let now = self.now();
        if let Some(a) = self.mem.active.get(&id) {
            return self.public(a.meta.clone(), now).map(Some);
        }
        match self.meta(id)? {
            Some(m) => self.public(m, now).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        validate_queue_name(queue)?;
        let Some(&q) = self.mem.queue_ids.get(queue) else {
            return Ok(Vec::new());
        };
        let now = self.now();
        let states: Vec<JobState> = match state {
            Some(s) => vec![s],
            None => JobState::ALL.to_vec(),
        };
        let mut ids: Vec<JobId> = Vec::new();
        for st in states {
            if ids.len() >= limit {
                break;
            }
            let room = limit - ids.len();
            match st {
                JobState::Waiting => {
                    let mut v = self.mem.ready_in_order(q, room);
                    // Not yet durable (under `always`): waiting, not yet reservable.
                    v.extend(
                        self.mem
                            .gated_in(q)
                            .into_iter()
                            .take(room.saturating_sub(v.len())),
                    );
                    let blocked = self.mem.blocked(q);
                    v.extend(
                        blocked
                            .iter()
                            .filter(|(_, run_at, _)| *run_at <= now)
                            .map(|(id, _, _)| *id)
                            .take(room.saturating_sub(v.len())),
                    );
                    // Paused keys' heads wait in key_pauses.
                    for (_, kq, key) in &self.mem.key_pauses {
                        if *kq == q && v.len() < room {
                            if let Some(km) = self.mem.keys.get(&(q, key.clone())) {
                                if let Some((id, _)) = km.fifo.front() {
                                    v.push(*id);
                                }
                            }
                        }
                    }
                    ids.extend(v);
                }
                JobState::Delayed => {
                    let mut v: Vec<(u64, JobId)> = self
                        .mem
                        .delayed
                        .iter()
                        .filter(|(_, id)| {
                            self.mem.delayed_slots.get(id).is_some_and(|s| s.queue == q)
                        })
                        .copied()
                        .collect();
                    v.extend(
                        self.mem
                            .blocked(q)
                            .into_iter()
                            .filter(|(_, run_at, _)| *run_at > now)
                            .map(|(id, run_at, _)| (run_at, id)),
                    );
                    v.sort();
                    ids.extend(v.into_iter().take(room).map(|(_, id)| id));
                }
                JobState::Active => {
                    let mut v: Vec<(u64, JobId)> = self
                        .mem
                        .active
                        .iter()
                        .filter(|(_, a)| a.queue == q)
                        .map(|(id, a)| (a.until, *id))
                        .collect();
                    v.sort();
                    ids.extend(v.into_iter().take(room).map(|(_, id)| id));
                }
                JobState::Completed => {
                    ids.extend(
                        self.mem.queues[q as usize]
                            .completed
                            .iter()
                            .rev()
                            .map(|(_, id)| *id)
                            .take(room),
                    );
                }
                JobState::Dead => {
                    ids.extend(self.mem.queues[q as usize].dead.keys().rev().take(room));
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(j) = self.get(id)? {
                out.push(j);
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self) -> Stats {
        let now = self.now();
        let mut s = Stats::default();
        for qm in &self.mem.queues {
            let (waiting, delayed, oldest) = qm.pending_split(now);
            s.queues.insert(
                qm.name.clone(),
                QueueStats {
                    waiting,
                    delayed,
                    active: qm.active,
                    dead: qm.dead.len() as u64,
                    completed: qm.completed.len() as u64,
                    paused: qm.paused,
                    oldest_waiting_secs: oldest.map(|t| now.saturating_sub(t) as f64 / 1000.0),
                },
            );
        }
        s.compute_totals();
        s
    }

    fn select_dead(&self, queue: &str, sel: &Selection) -> Result<(u32, Vec<JobId>)> {
        validate_queue_name(queue)?;
        let Some(&q) = self.mem.queue_ids.get(queue) else {
            return match sel {
                Selection::All => Ok((0, Vec::new())),
                Selection::Ids(ids) => Err(Error::NotFound {
                    id: ids.first().map(|i| i.to_string()).unwrap_or_default(),
                }),
            };
        };
        let dead = &self.mem.queues[q as usize].dead;
        let ids = match sel {
            Selection::All => dead.keys().copied().collect(),
            Selection::Ids(ids) => {
                if let Some(missing) = ids.iter().find(|id| !dead.contains_key(id)) {
                    return Err(Error::invalid(format!(
                        "job {missing} is not a dead letter of queue `{queue}`; list them with `durq dlq list {queue}`"
                    )));
                }
                let mut v = ids.clone();
                v.sort();
                v.dedup();
                v
            }
        };
        Ok((q, ids))
    }

    pub(super) fn requeue(
        &mut self,
        queue: &str,
        sel: Selection,
        reply: oneshot::Sender<Result<u64>>,
    ) {
        let r = (|| {
            let (q, ids) = self.select_dead(queue, &sel)?;
            if ids.is_empty() {
                return Ok(0);
            }
            let now = self.now();
            let mut metas = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(mut meta) = self.meta(*id)? else {
                    continue;
                };
                meta.state = JobState::Waiting;
                meta.attempts = 0;
                meta.run_at = Timestamp(now);
                meta.finished_at = None;
                // Joins the back of its key's FIFO: a fresh value of the id sequence.
                meta.queued = self.next_id(now).0;
                metas.push(meta);
            }
            // Staged below in chunks: the last chunk's seq gates them all.
            let chunks = update_chunks(&metas);
            let gate = self.gate_for(chunks.len().saturating_sub(1) as u64);
            for meta in &metas {
                self.mem.queues[q as usize].remove_dead(meta.id);
                let mut slot = self.mem.slot_of(meta);
                slot.gate = gate;
                self.mem.arrive(meta.id, slot, now);
            }
            let n = metas.len() as u64;
            // Big requeues are split so no single record grows without bound.
            for range in chunks {
                self.stage(Op::Update {
                    metas: metas[range].to_vec(),
                    change: Change::Requeued,
                })?;
            }
            // A requeued job starts afresh: its postponement budget too (its timeout stays).
            for meta in &metas {
                let Some(ext) = self.mem.ext.get(&meta.id) else {
                    continue;
                };
                if ext.postponed_ms == 0 {
                    continue;
                }
                let ext = JobExt {
                    postponed_ms: 0,
                    ..ext.clone()
                };
                if ext.is_default() {
                    self.mem.ext.remove(&meta.id);
                } else {
                    self.mem.ext.insert(meta.id, ext.clone());
                }
                self.stage(Op::Ext { id: meta.id, ext })?;
            }
            self.emit(Event::Requeued {
                queue: queue.to_string(),
                count: n,
            });
            Ok(n)
        })();
        match r {
            Ok(n) if n > 0 => self.on_durable(reply, n),
            other => {
                let _ = reply.send(other);
            }
        }
    }

    pub(super) fn purge(
        &mut self,
        queue: &str,
        sel: Selection,
        reply: oneshot::Sender<Result<u64>>,
    ) {
        let r = (|| {
            let (q, ids) = self.select_dead(queue, &sel)?;
            if ids.is_empty() {
                return Ok(0);
            }
            for id in &ids {
                self.mem.queues[q as usize].remove_dead(*id);
                self.mem.ext.remove(id);
            }
            let n = ids.len() as u64;
            for chunk in ids.chunks(16384) {
                self.stage(Op::Delete {
                    ids: chunk.to_vec(),
                })?;
            }
            Ok(n)
        })();
        match r {
            Ok(n) if n > 0 => self.on_durable(reply, n),
            other => {
                let _ = reply.send(other);
            }
        }
    }

    pub(super) fn set_paused(
        &mut self,
        queue: &str,
        paused: bool,
        reply: oneshot::Sender<Result<()>>,
    ) {
        let r = (|| {
            validate_queue_name(queue)?;
            let q = self.mem.queue_id(queue);
            self.mem.queues[q as usize].paused = paused;
            self.stage(Op::Paused {
                queue: queue.to_string(),
                paused,
            })?;
            Ok(())
        })();
        match r {
            Ok(()) => self.on_durable(reply, ()),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn pause_key(&mut self, queue: &str, key: &str, d: Duration) -> Result<()> {
        validate_queue_name(queue)?;
        duration::check("key pause", d)?;
        let q = self.mem.queue_id(queue);
        let now = self.now();
        let until = duration::after(now, d);
        let km = self.mem.keys.entry((q, key.to_string())).or_default();
        if km.paused_until >= until {
            return Ok(());
        }
        let old = km.paused_until;
        km.paused_until = until;
        let head = km.fifo.front().cloned();
        self.mem.key_pauses.remove(&(old, q, key.to_string()));
        if let Some((id, slot)) = head {
            let rk = slot.ready_key(id);
            if self.mem.remove_ready(q, slot.kind, &rk) || old > now {
                self.mem.key_pauses.insert((until, q, key.to_string()));
            }
        } else {
            // Nothing queued for the key yet: the pause applies to what arrives.
            self.mem.key_pauses.insert((until, q, key.to_string()));
        }
        Ok(())
    }

    /// (Re)builds the indexes from the state store. With `keep_active`, leased jobs stay leased
    /// (a reload in the same process); otherwise they are returned for expiry.
    pub(super) fn load(&mut self, keep_active: bool) -> Result<Vec<JobMeta>> {
        let now = self.now();
        let mut mem = super::mem::Mem::default();
        for q in self.store.paused()? {
            let id = mem.queue_id(&q);
            mem.queues[id as usize].paused = true;
        }
        for d in self.store.dedups()? {
            let q = mem.queue_id(&d.queue);
            mem.dedup.insert((q, d.key.clone()), (d.id, d.expires.0));
            mem.dedup_expiry.insert((d.expires.0, q, d.key));
        }
        let mut orphans = Vec::new();
        let mut completed: BTreeMap<u32, Vec<(u64, JobId)>> = BTreeMap::new();
        let mut keyed: Vec<(KeyRank, JobId, super::mem::Slot)> = Vec::new();
        let mut max_id = self.last_id;
        self.store.for_each_meta(|meta| {
            max_id = max_id.max(meta.id.0).max(meta.queued);
            let slot = mem.slot_of(&meta);
            let q = slot.queue;
            if slot.key.is_some()
                && matches!(
                    meta.state,
                    JobState::Waiting | JobState::Delayed | JobState::Active
                )
            {
                keyed.push((KeyRank::of(&meta, q), meta.id, slot.clone()));
            }
            match meta.state {
                JobState::Waiting | JobState::Delayed => {
                    if slot.key.is_none() {
                        mem.arrive(meta.id, slot, now)
                    }
                }
                JobState::Active => {
                    if keep_active {
                        let lease = meta.lease.unwrap_or(LeaseInfo {
                            token: 0,
                            until: Timestamp(now),
                            started: Timestamp(now),
                        });
                        mem.leases.insert((lease.until.0, meta.id));
                        mem.queues[q as usize].active += 1;
                        mem.active.insert(
                            meta.id,
                            Active {
                                ready_at: meta.run_at.0,
                                meta,
                                queue: q,
                                token: lease.token,
                                until: lease.until.0,
                            },
                        );
                    } else {
                        mem.queues[q as usize].active += 1;
                        orphans.push(meta);
                    }
                }
                JobState::Completed => completed
                    .entry(q)
                    .or_default()
                    .push((meta.finished_at.map(|t| t.0).unwrap_or(0), meta.id)),
                JobState::Dead => {
                    let at = meta.finished_at.map(|t| t.0).unwrap_or(0);
                    mem.queues[q as usize].add_dead(meta.id, at);
                }
            }
            Ok(())
        })?;
        mem.ext = self.store.exts()?.into_iter().collect();
        for (q, mut v) in completed {
            v.sort();
            mem.queues[q as usize].completed = v.into_iter().collect();
        }
        // Rebuild each key's FIFO in its run-time order (see `KeyRank`): the holder first, so
        // exactly one job per key may run, then the rest in arrival order.
        keyed.sort_unstable_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (rank, id, slot) in keyed {
            if rank.class == 0 {
                // Active: holds its key; enters the FIFO as head without being placed.
                let key = slot.key.clone().unwrap_or_default();
                mem.keys
                    .entry((slot.queue, key))
                    .or_default()
                    .fifo
                    .push_back((id, slot));
            } else {
                mem.arrive(id, slot, now);
            }
        }
        self.last_id = max_id;
        self.mem = mem;
        Ok(orphans)
    }

    /// A lease ran out (or its process died): the attempt counts; retry at once or die.
    pub(super) fn expire_lease(&mut self, meta: JobMeta, now: u64, why: &str) {
        let q = self.mem.queue_id(&meta.queue);
        // An orphan from load() is counted active but not in the active table.
        if self.mem.active.remove(&meta.id).is_none() {
            self.mem.queues[q as usize].active =
                self.mem.queues[q as usize].active.saturating_sub(1);
        } else {
            self.mem.queues[q as usize].active -= 1;
        }
        tracing::warn!(id = %meta.id, queue = %meta.queue, attempt = meta.attempts, "{why}; the job will run again");
        if let Err(e) = self.fail_meta(
            meta,
            q,
            now,
            why,
            FailAction::RetryAfter(Duration::ZERO),
            Change::Expired,
        ) {
            tracing::error!(error = %e, "cannot record an expired lease");
        }
    }
}

/// Where an unfinished keyed job stands in its key's FIFO, from its metadata alone (the FIFO
/// itself is not stored). The FIFO is arrival order (`JobMeta::queued`) and only its head ever
/// runs, so an `Active` job is the head; it sorts first regardless, as a guard.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct KeyRank {
    queue: u32,
    key: String,
    class: u8,
    queued: u64,
}

impl KeyRank {
    fn of(meta: &JobMeta, queue: u32) -> KeyRank {
        KeyRank {
            queue,
            key: meta.key.clone().unwrap_or_default(),
            class: u8::from(meta.state != JobState::Active),
            queued: meta.queued,
        }
    }
}

/// Splits metadata for `Op::Update` records: at most 4096 jobs and about 16 MiB (by
/// [`JobMeta::size_bound`]) per record, so a record stays far below `MAX_RECORD` whatever the
/// jobs carry (a dead job may hold many attempt errors of 4 KiB each).
fn update_chunks(metas: &[JobMeta]) -> Vec<std::ops::Range<usize>> {
    const MAX_JOBS: usize = 4096;
    const MAX_BYTES: usize = 16 << 20;
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, m) in metas.iter().enumerate() {
        let b = m.size_bound();
        if i > start && (i - start == MAX_JOBS || bytes + b > MAX_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += b;
    }
    if start < metas.len() {
        out.push(start..metas.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{AttemptError, Priority, RetryPolicy, Timestamp};

    fn meta(errors: usize) -> JobMeta {
        JobMeta {
            id: crate::job::JobId(1),
            queue: "q".into(),
            kind: "k".into(),
            priority: Priority::NORMAL,
            key: None,
            dedup: None,
            state: JobState::Dead,
            attempts: errors as u32,
            retry: RetryPolicy::default(),
            created_at: Timestamp(0),
            run_at: Timestamp(0),
            finished_at: None,
            errors: (0..errors)
                .map(|i| AttemptError {
                    attempt: i as u32 + 1,
                    at: Timestamp(0),
                    error: "e".repeat(crate::job::MAX_ERROR_TEXT),
                })
                .collect(),
            lease: None,
            queued: 1,
        }
    }

    #[test]
    fn update_chunks_split_by_count_and_by_size() {
        let small = vec![meta(0); 10_000];
        let c = update_chunks(&small);
        assert_eq!(c, vec![0..4096, 4096..8192, 8192..10_000]);
        // 1,000 attempts of 4 KiB each: about 4 MiB a job, so 3 a record.
        let big = vec![meta(1000); 10];
        let c = update_chunks(&big);
        assert!(c.len() >= 3, "{c:?}");
        for r in &c {
            let bytes: usize = big[r.clone()].iter().map(JobMeta::size_bound).sum();
            assert!(bytes <= 16 << 20 || r.len() == 1, "{r:?}: {bytes}");
        }
        assert_eq!(c.first().unwrap().start, 0);
        assert_eq!(c.last().unwrap().end, 10);
        assert!(c.windows(2).all(|w| w[0].end == w[1].start));
        assert!(update_chunks(&[]).is_empty());
    }
}
