//! In-memory indexes of the engine: what is ready, in which order; what is delayed until when;
//! which leases run out when; which partition key is held by whom. Rebuilt from the state store
//! on open, never scanned from disk on the hot path. Payloads are never held here.
//!
//! Invariants:
//! - A job is in at most one of: a queue's ready set, the delayed timer, the gated set, the
//!   active table, a key FIFO behind its head.
//! - Under `always`, a job enters a ready set only once the record that brought it in is
//!   durable (`Slot::gate <= durable`); until then it waits in `gated` (durability, README "Guarantees": nothing runs
//!   that a power cut could erase).
//! - Ready order per queue and kind: priority descending, then ready time, then id.
//! - For a partition key, only the FIFO's head may be ready, delayed or active; the jobs behind
//!   it wait in enqueue order and are not in any ready set.
//! - `ext` holds exactly the non-default extensions of the stored jobs (`Op::Ext`), so reads
//!   and reserves never look them up on disk.
//! - `pending` (per queue, run_at → count) counts every waiting or delayed job, so waiting vs
//!   delayed counts and the oldest waiting age come from it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::job::{JobId, Priority};
use crate::record::{JobExt, JobMeta};

/// Ready-set key: priority descending, then ready time, then id.
pub type ReadyKey = (Reverse<u8>, u64, JobId);

/// Where a waiting/delayed job sits, enough to move it between sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub queue: u32,
    pub kind: u32,
    pub priority: u8,
    pub run_at: u64,
    pub key: Option<String>,
    /// The seq of the record that brought the job in (enqueue, requeue), which must be durable
    /// before the job may be reserved; 0 when nothing is held back (`everysec`, `no`, loaded).
    pub gate: u64,
}

impl Slot {
    pub fn ready_key(&self, id: JobId) -> ReadyKey {
        (Reverse(self.priority), self.run_at, id)
    }
}

/// One partition key of one queue.
#[derive(Debug, Default)]
pub struct KeyMem {
    /// Jobs holding or waiting for the key, in enqueue order; `fifo[0]` is the head.
    pub fifo: VecDeque<(JobId, Slot)>,
    /// Held back until this time (rate limits, retry-after).
    pub paused_until: u64,
}

/// An active job.
#[derive(Debug, Clone)]
pub struct Active {
    pub meta: JobMeta,
    pub queue: u32,
    pub token: u64,
    pub until: u64,
    pub ready_at: u64,
}

/// Per-queue indexes.
#[derive(Debug, Default)]
pub struct QueueMem {
    pub name: String,
    pub paused: bool,
    /// kind → ready set.
    pub ready: HashMap<u32, BTreeSet<ReadyKey>>,
    /// run_at → number of waiting or delayed jobs.
    pub pending: BTreeMap<u64, u32>,
    pub pending_total: u64,
    pub active: u64,
    /// Dead letters → when they died (use [`QueueMem::add_dead`] / [`QueueMem::remove_dead`]).
    pub dead: BTreeMap<JobId, u64>,
    /// (died at, id) of the dead letters, oldest first (retention by age and count).
    pub dead_by_time: BTreeSet<(u64, JobId)>,
    /// Completed jobs as (finished at, id), oldest first.
    pub completed: VecDeque<(u64, JobId)>,
}

impl QueueMem {
    pub fn add_dead(&mut self, id: JobId, at: u64) {
        if let Some(old) = self.dead.insert(id, at) {
            self.dead_by_time.remove(&(old, id));
        }
        self.dead_by_time.insert((at, id));
    }
    pub fn remove_dead(&mut self, id: JobId) -> bool {
        match self.dead.remove(&id) {
            Some(at) => {
                self.dead_by_time.remove(&(at, id));
                true
            }
            None => false,
        }
    }
    pub fn pending_add(&mut self, run_at: u64) {
        *self.pending.entry(run_at).or_insert(0) += 1;
        self.pending_total += 1;
    }
    pub fn pending_remove(&mut self, run_at: u64) {
        if let Some(c) = self.pending.get_mut(&run_at) {
            *c -= 1;
            if *c == 0 {
                self.pending.remove(&run_at);
            }
            self.pending_total -= 1;
        }
    }
    /// (waiting, delayed, oldest waiting run_at).
    pub fn pending_split(&self, now: u64) -> (u64, u64, Option<u64>) {
        let delayed: u64 = self
            .pending
            .range(now.saturating_add(1)..)
            .map(|(_, c)| *c as u64)
            .sum();
        let oldest = self.pending.keys().next().copied().filter(|t| *t <= now);
        (self.pending_total - delayed, delayed, oldest)
    }
}

/// All indexes.
#[derive(Debug, Default)]
pub struct Mem {
    pub queues: Vec<QueueMem>,
    pub queue_ids: HashMap<String, u32>,
    pub kinds: Vec<String>,
    pub kind_ids: HashMap<String, u32>,
    pub keys: HashMap<(u32, String), KeyMem>,
    /// (run_at, id) of delayed jobs (non-keyed, or keyed heads).
    pub delayed: BTreeSet<(u64, JobId)>,
    pub delayed_slots: HashMap<JobId, Slot>,
    pub active: HashMap<JobId, Active>,
    /// (lease until, id).
    pub leases: BTreeSet<(u64, JobId)>,
    /// (until, queue, key) of paused keys whose head waits for the pause to end.
    pub key_pauses: BTreeSet<(u64, u32, String)>,
    /// (queue, dedup key) → (first job, expires).
    pub dedup: HashMap<(u32, String), (JobId, u64)>,
    pub dedup_expiry: BTreeSet<(u64, u32, String)>,
    /// The highest journal seq known durable (synced). Only compared with [`Slot::gate`].
    pub durable: u64,
    /// (gate seq, id) of jobs that could run but whose record is not yet durable.
    pub gated: BTreeSet<(u64, JobId)>,
    pub gated_slots: HashMap<JobId, Slot>,
    /// Jobs with a non-default extension (timeout, postponement, cancel asked), as stored.
    pub ext: HashMap<JobId, JobExt>,
}

impl Mem {
    pub fn queue_id(&mut self, name: &str) -> u32 {
        if let Some(&q) = self.queue_ids.get(name) {
            return q;
        }
        let q = self.queues.len() as u32;
        self.queues.push(QueueMem {
            name: name.to_string(),
            ..Default::default()
        });
        self.queue_ids.insert(name.to_string(), q);
        q
    }

    pub fn kind_id(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.kind_ids.get(name) {
            return k;
        }
        let k = self.kinds.len() as u32;
        self.kinds.push(name.to_string());
        self.kind_ids.insert(name.to_string(), k);
        k
    }

    pub fn slot_of(&mut self, meta: &JobMeta) -> Slot {
        Slot {
            queue: self.queue_id(&meta.queue),
            kind: self.kind_id(&meta.kind),
            priority: meta.priority.0,
            run_at: meta.run_at.0,
            key: meta.key.clone(),
            gate: 0,
        }
    }

    /// A new waiting/delayed job arrives (enqueue, requeue): joins its key FIFO or is placed.
    pub fn arrive(&mut self, id: JobId, slot: Slot, now: u64) {
        self.queues[slot.queue as usize].pending_add(slot.run_at);
        if let Some(key) = slot.key.clone() {
            let km = self.keys.entry((slot.queue, key)).or_default();
            km.fifo.push_back((id, slot.clone()));
            if km.fifo.len() > 1 {
                return; // behind the head
            }
        }
        self.place(id, slot, now);
    }

    /// Puts a job that may run (a FIFO head or an unkeyed job) into the ready set, the delayed
    /// timer, the key-pause timer, or (its record not yet durable) the gated set. Its `pending`
    /// count is already held.
    pub fn place(&mut self, id: JobId, slot: Slot, now: u64) {
        if slot.run_at > now {
            self.delayed.insert((slot.run_at, id));
            self.delayed_slots.insert(id, slot);
            return;
        }
        if let Some(key) = &slot.key {
            if let Some(km) = self.keys.get(&(slot.queue, key.clone())) {
                if km.paused_until > now {
                    self.key_pauses
                        .insert((km.paused_until, slot.queue, key.clone()));
                    return;
                }
            }
        }
        if slot.gate > self.durable {
            self.gated.insert((slot.gate, id));
            self.gated_slots.insert(id, slot);
            return;
        }
        let rk = slot.ready_key(id);
        self.queues[slot.queue as usize]
            .ready
            .entry(slot.kind)
            .or_default()
            .insert(rk);
    }

    /// Records that every seq up to `durable` is synced and places the jobs it releases.
    pub fn set_durable(&mut self, durable: u64, now: u64) {
        if durable <= self.durable {
            return;
        }
        self.durable = durable;
        while let Some(&(seq, id)) = self.gated.first() {
            if seq > durable {
                break;
            }
            self.gated.pop_first();
            if let Some(slot) = self.gated_slots.remove(&id) {
                self.place(id, slot, now);
            }
        }
    }

    /// Jobs of `queue` held back until their record is durable, in run order.
    pub fn gated_in(&self, queue: u32) -> Vec<JobId> {
        let mut v: Vec<(ReadyKey, JobId)> = self
            .gated_slots
            .iter()
            .filter(|(_, s)| s.queue == queue)
            .map(|(id, s)| (s.ready_key(*id), *id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// A key's head finished (completed or dead): the next job of the key may run.
    pub fn key_release(&mut self, queue: u32, key: &str, id: JobId, now: u64) {
        let k = (queue, key.to_string());
        let next = match self.keys.get_mut(&k) {
            Some(km) => {
                if let Some(pos) = km.fifo.iter().position(|(j, _)| *j == id) {
                    km.fifo.remove(pos);
                }
                if km.fifo.is_empty() && km.paused_until <= now {
                    self.keys.remove(&k);
                    None
                } else {
                    km.fifo.front().cloned()
                }
            }
            None => None,
        };
        if let Some((nid, slot)) = next {
            self.place(nid, slot, now);
        }
    }

    /// The best ready job among `queues` (not paused), skipping `exclude` kinds.
    pub fn best_ready(&self, queues: &[u32], exclude: &[u32]) -> Option<(u32, u32, ReadyKey)> {
        let mut best: Option<(u32, u32, ReadyKey)> = None;
        for &q in queues {
            let qm = &self.queues[q as usize];
            if qm.paused {
                continue;
            }
            for (&kind, set) in &qm.ready {
                if exclude.contains(&kind) {
                    continue;
                }
                if let Some(first) = set.first() {
                    if best.as_ref().is_none_or(|b| first < &b.2) {
                        best = Some((q, kind, *first));
                    }
                }
            }
        }
        best
    }

    /// After a reload: gives each active job the later of its stored expiry and the one held
    /// before the reload (`id → (token, until)`), when the token is the same lease's.
    pub fn restore_lease_expiries(&mut self, before: &HashMap<JobId, (u64, u64)>) {
        for (id, a) in self.active.iter_mut() {
            let Some(&(token, until)) = before.get(id) else {
                continue;
            };
            if token != a.token || until <= a.until {
                continue;
            }
            self.leases.remove(&(a.until, *id));
            a.until = until;
            if let Some(l) = &mut a.meta.lease {
                l.until = crate::job::Timestamp(until);
            }
            self.leases.insert((until, *id));
        }
    }

    pub fn remove_ready(&mut self, queue: u32, kind: u32, rk: &ReadyKey) -> bool {
        self.queues[queue as usize]
            .ready
            .get_mut(&kind)
            .is_some_and(|s| s.remove(rk))
    }

    /// Jobs ready at `now` in a queue's ready sets, in run order, up to `limit`.
    pub fn ready_in_order(&self, queue: u32, limit: usize) -> Vec<JobId> {
        let qm = &self.queues[queue as usize];
        let mut iters: Vec<_> = qm.ready.values().map(|s| s.iter().peekable()).collect();
        let mut out = Vec::new();
        while out.len() < limit {
            let mut best: Option<(usize, ReadyKey)> = None;
            for (i, it) in iters.iter_mut().enumerate() {
                if let Some(k) = it.peek() {
                    if best.as_ref().is_none_or(|b| **k < b.1) {
                        best = Some((i, **k));
                    }
                }
            }
            let Some((i, k)) = best else { break };
            iters[i].next();
            out.push(k.2);
        }
        out
    }

    /// Jobs waiting behind a key head in `queue` (id, run_at, priority).
    pub fn blocked(&self, queue: u32) -> Vec<(JobId, u64, Priority)> {
        let mut v: Vec<_> = self
            .keys
            .iter()
            .filter(|((q, _), _)| *q == queue)
            .flat_map(|(_, km)| km.fifo.iter().skip(1))
            .map(|(id, s)| (*id, s.run_at, Priority(s.priority)))
            .collect();
        v.sort_by_key(|(id, run_at, p)| (Reverse(p.0), *run_at, *id));
        v
    }
}
