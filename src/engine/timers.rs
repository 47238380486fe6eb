//! Time-driven work of the engine: delayed jobs becoming ready, leases running out, key pauses
//! ending, dedup keys expiring, retention by age, and long-poll reserves being served or timing
//! out.

use super::Engine;
use crate::record::Op;

impl Engine {
    /// The earliest time something is due.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        [
            self.mem.delayed.first().map(|(t, _)| *t),
            self.mem.leases.first().map(|(t, _)| *t),
            self.mem.key_pauses.first().map(|(t, _, _)| *t),
            self.mem.dedup_expiry.first().map(|(t, _, _)| *t),
            self.waiters.iter().map(|w| w.deadline).min(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub(super) fn run_timers(&mut self) {
        let now = self.now();
        // Records synced since the last turn: their jobs may be reserved now.
        if self.gating {
            let durable = self.durable.load(std::sync::atomic::Ordering::Acquire);
            self.mem.set_durable(durable, now);
        }
        // Delayed → ready.
        while let Some(&(t, id)) = self.mem.delayed.first() {
            if t > now {
                break;
            }
            self.mem.delayed.pop_first();
            if let Some(slot) = self.mem.delayed_slots.remove(&id) {
                self.mem.place(id, slot, now);
            }
        }
        // Key pauses ending.
        while let Some((t, q, key)) = self.mem.key_pauses.first().cloned() {
            if t > now {
                break;
            }
            self.mem.key_pauses.pop_first();
            let head = match self.mem.keys.get(&(q, key.clone())) {
                Some(km) if km.paused_until <= now => km.fifo.front().cloned(),
                _ => None,
            };
            match head {
                Some((id, slot))
                    if !self.mem.active.contains_key(&id)
                        && !self.mem.delayed_slots.contains_key(&id) =>
                {
                    self.mem.place(id, slot, now)
                }
                Some(_) => {}
                None => {
                    if self
                        .mem
                        .keys
                        .get(&(q, key.clone()))
                        .is_some_and(|km| km.fifo.is_empty())
                    {
                        self.mem.keys.remove(&(q, key));
                    }
                }
            }
        }
        // Leases running out.
        while let Some(&(t, id)) = self.mem.leases.first() {
            if t > now {
                break;
            }
            self.mem.leases.pop_first();
            if let Some(a) = self.mem.active.get(&id) {
                let meta = a.meta.clone();
                let secs = (t.saturating_sub(meta.lease.map(|l| l.started.0).unwrap_or(t))) as f64
                    / 1000.0;
                self.expire_lease(
                    meta,
                    now,
                    &format!("lease expired after {secs:.1}s without ack or heartbeat"),
                );
            }
        }
        // Dedup keys expiring (dropped from disk in bounded groups).
        let mut drop = Vec::new();
        while let Some((t, q, key)) = self.mem.dedup_expiry.first().cloned() {
            if t > now || drop.len() >= 4096 {
                break;
            }
            self.mem.dedup_expiry.pop_first();
            let k = (q, key.clone());
            if self.mem.dedup.get(&k).is_some_and(|(_, exp)| *exp <= now) {
                self.mem.dedup.remove(&k);
                drop.push((self.mem.queues[q as usize].name.clone(), key));
            }
        }
        if !drop.is_empty() {
            if let Err(e) = self.stage(Op::DedupDrop { entries: drop }) {
                tracing::error!(error = %e, "cannot record expired dedup keys");
            }
        }
        // Completed jobs and dead letters past their queue's retention age.
        self.trim_by_age(now);
    }

    /// Answers waiting reserves: with a job when one is ready, with `None` at their deadline.
    pub(super) fn serve_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let now = self.now();
        let mut keep = std::collections::VecDeque::with_capacity(self.waiters.len());
        while let Some(w) = self.waiters.pop_front() {
            if w.reply.is_closed() {
                continue;
            }
            match self.try_reserve(&w.req) {
                Ok(Some(lease)) => self.hand_out(lease, w.reply),
                Ok(None) if w.deadline <= now => {
                    let _ = w.reply.send(Ok(None));
                }
                Ok(None) => keep.push_back(w),
                Err(e) => {
                    let _ = w.reply.send(Err(e));
                }
            }
        }
        self.waiters = keep;
    }
}
