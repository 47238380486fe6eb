//! Snapshot statistics and the event stream's event type.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{JobId, Timestamp};

/// Counts for one queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Ready to run (including jobs waiting behind their partition key).
    pub waiting: u64,
    /// Scheduled for later.
    pub delayed: u64,
    /// Leased by a worker.
    pub active: u64,
    /// Dead letters.
    pub dead: u64,
    /// Completed jobs still kept.
    pub completed: u64,
    /// Whether reserving from the queue is paused.
    pub paused: bool,
    /// Age of the oldest waiting job, in seconds (`None` when nothing waits).
    pub oldest_waiting_secs: Option<f64>,
}

/// Counts for every queue plus totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Per queue, by name.
    pub queues: BTreeMap<String, QueueStats>,
    /// Sums over all queues (`paused` is true if any is paused; oldest is the oldest overall).
    pub totals: QueueStats,
}

impl Stats {
    /// Recomputes `totals` from `queues`.
    pub fn compute_totals(&mut self) {
        let mut t = QueueStats::default();
        for q in self.queues.values() {
            t.waiting += q.waiting;
            t.delayed += q.delayed;
            t.active += q.active;
            t.dead += q.dead;
            t.completed += q.completed;
            t.paused |= q.paused;
            t.oldest_waiting_secs = match (t.oldest_waiting_secs, q.oldest_waiting_secs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        self.totals = t;
    }
}

/// Something that happened to a job, sent to every subscriber of the event stream.
///
/// Subscribers that fall behind lose the oldest events (a broadcast channel); the state on disk is
/// the truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A job was enqueued (not sent for duplicates).
    Enqueued {
        /// Job id.
        id: JobId,
        /// Queue.
        queue: String,
        /// Kind.
        kind: String,
    },
    /// An enqueue hit a live dedup key.
    Deduplicated {
        /// The existing job's id.
        id: JobId,
        /// Queue.
        queue: String,
    },
    /// A worker reserved a job.
    Started {
        /// Job id.
        id: JobId,
        /// Queue.
        queue: String,
        /// Kind.
        kind: String,
        /// Attempt number (1 for the first run).
        attempt: u32,
        /// Time from when the job became ready to this start.
        #[serde(with = "duration_ms")]
        waited: Duration,
    },
    /// A job completed.
    Completed {
        /// Job id.
        id: JobId,
        /// Queue.
        queue: String,
        /// Kind.
        kind: String,
        /// Time from reserve to ack.
        #[serde(with = "duration_ms")]
        took: Duration,
    },
    /// An attempt failed and the job will run again.
    Retrying {
        /// Job id.
        id: JobId,
        /// Queue.
        queue: String,
        /// Kind.
        kind: String,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
        /// When it runs again.
        run_at: Timestamp,
    },
    /// A job failed its last attempt (or gave up) and is now a dead letter.
    Dead {
        /// Job id.
        id: JobId,
        /// Queue.
        queue: String,
        /// Kind.
        kind: String,
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: String,
    },
    /// Dead letters were put back to waiting.
    Requeued {
        /// Queue.
        queue: String,
        /// How many.
        count: u64,
    },
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_secs_f64((ms / 1000.0).max(0.0)))
    }
}
