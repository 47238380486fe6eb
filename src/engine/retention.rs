//! Retention: completed jobs and dead letters dropped by count and by age, per queue
//! ([`crate::QueueConfig`]: `keep_completed`, `keep_completed_for`, `keep_dead`,
//! `keep_dead_for`).
//!
//! Invariants:
//! - Drops are journaled (`Op::Delete`) in the same step that takes the jobs out of the
//!   indexes, so stats, listings and a reopened store agree.
//! - Oldest first: completed jobs by completion time, dead letters by time of death.
//! - Age is checked at most every [`TRIM_EVERY_MS`] of engine time, and only at the front of
//!   each queue's time-ordered index, so it costs O(queues) per check plus O(dropped).

use super::Engine;
use crate::duration;
use crate::job::JobId;
use crate::record::Op;

/// How often (engine time) retention by age is applied.
const TRIM_EVERY_MS: u64 = 250;
/// Ids per `Op::Delete` record.
const DELETE_CHUNK: usize = 16384;

impl Engine {
    /// Drops completed jobs and dead letters older than their queue's retention age.
    pub(super) fn trim_by_age(&mut self, now: u64) {
        if now < self.last_trim.saturating_add(TRIM_EVERY_MS) && self.last_trim <= now {
            return;
        }
        self.last_trim = now;
        let mut drop = Vec::new();
        for q in 0..self.mem.queues.len() {
            let cfg = self.opts.queue_config(&self.mem.queues[q].name);
            let (completed_for, dead_for) = (cfg.keep_completed_for, cfg.keep_dead_for);
            let qm = &mut self.mem.queues[q];
            if let Some(age) = completed_for {
                let cutoff = now.saturating_sub(duration::millis(age));
                while let Some(&(t, id)) = qm.completed.front() {
                    if t > cutoff {
                        break;
                    }
                    qm.completed.pop_front();
                    drop.push(id);
                }
            }
            if let Some(age) = dead_for {
                let cutoff = now.saturating_sub(duration::millis(age));
                while let Some(&(t, id)) = qm.dead_by_time.first() {
                    if t > cutoff {
                        break;
                    }
                    qm.remove_dead(id);
                    drop.push(id);
                }
            }
        }
        self.drop_jobs(drop);
    }

    /// Drops the oldest dead letters of a queue beyond its `keep_dead`.
    pub(super) fn trim_dead_count(&mut self, q: u32) {
        let qm = &self.mem.queues[q as usize];
        let Some(keep) = self.opts.queue_config(&qm.name).keep_dead else {
            return;
        };
        let qm = &mut self.mem.queues[q as usize];
        let mut drop = Vec::new();
        while qm.dead.len() > keep {
            let Some(&(_, id)) = qm.dead_by_time.first() else {
                break;
            };
            qm.remove_dead(id);
            drop.push(id);
        }
        self.drop_jobs(drop);
    }

    /// Journals the deletion of jobs already out of the indexes.
    fn drop_jobs(&mut self, ids: Vec<JobId>) {
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            self.mem.ext.remove(id);
        }
        for chunk in ids.chunks(DELETE_CHUNK) {
            if let Err(e) = self.stage(Op::Delete {
                ids: chunk.to_vec(),
            }) {
                tracing::error!(error = %e, "cannot record jobs dropped by retention");
            }
        }
    }
}
