//! The bodies of journal records: what the engine decided, written before it is applied.
//!
//! Invariants:
//! - Every op is a *blind write*: applying it never reads the state it replaces
//!   (`Enqueue` puts, `Update` overwrites a job's whole metadata, `Delete` removes). So replaying
//!   a record twice, or on top of a fuzzy base snapshot, gives the same state (see `journal`).
//! - The engine decides everything (ids, times, jitter, lease tokens) before writing the op;
//!   applying it is deterministic.
//! - The encoding is bincode 2 (standard config), frozen by the pinned crate version, and
//!   versioned by `journal::format::FORMAT_VERSION`.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::job::{AttemptError, Job, JobId, JobState, Priority, RetryPolicy, Timestamp};

/// A job's metadata: everything but the payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMeta {
    /// Id.
    pub id: JobId,
    /// Queue name.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Priority.
    pub priority: Priority,
    /// Partition key.
    pub key: Option<String>,
    /// Dedup key.
    pub dedup: Option<String>,
    /// State.
    pub state: JobState,
    /// Attempts started.
    pub attempts: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Enqueue time.
    pub created_at: Timestamp,
    /// Ready time.
    pub run_at: Timestamp,
    /// Completion / death time.
    pub finished_at: Option<Timestamp>,
    /// Failed attempts.
    pub errors: Vec<AttemptError>,
    /// Current lease (state `Active` only).
    pub lease: Option<LeaseInfo>,
    /// Arrival order in its partition key's FIFO: the id for a new job, a fresh value of the
    /// id sequence when it is requeued from the dead letters. The FIFOs are not stored; reopen
    /// rebuilds them by this value, so the order (and the one holder per key) survives restarts.
    pub queued: u64,
}

/// The lease of an active job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Token the holder must present.
    pub token: u64,
    /// Expiry.
    pub until: Timestamp,
    /// When the attempt started.
    pub started: Timestamp,
}

impl JobMeta {
    /// Joins metadata and payload into a public [`Job`].
    pub fn into_job(self, payload: Vec<u8>) -> Job {
        Job {
            id: self.id,
            queue: self.queue,
            kind: self.kind,
            payload,
            priority: self.priority,
            key: self.key,
            dedup: self.dedup,
            state: self.state,
            attempts: self.attempts,
            retry: self.retry,
            created_at: self.created_at,
            run_at: self.run_at,
            finished_at: self.finished_at,
            errors: self.errors,
        }
    }
}

/// A new job in an `Enqueue` op.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewRecord {
    /// Metadata (state `Waiting` or `Delayed`).
    pub meta: JobMeta,
    /// Payload bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Dedup key expiry, when the job has a dedup key.
    pub dedup_expires: Option<Timestamp>,
}

/// Why an `Update` was written (for readers of the journal such as the mirror; applying it does
/// not depend on this).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A worker leased the job.
    Reserved,
    /// The job completed.
    Acked,
    /// An attempt failed; retry scheduled.
    Retried,
    /// The job became a dead letter.
    Died,
    /// A lease was given back without counting the attempt.
    Released,
    /// A lease ran out (or the process died) before the job finished.
    Expired,
    /// Dead letters were put back to waiting.
    Requeued,
}

/// One journal record body.
// `Snapshot` is much larger than the other variants; ops are short-lived (staged, written,
// applied), so boxing it would cost an allocation per base record for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// New jobs (one atomic batch).
    Enqueue {
        /// The jobs.
        jobs: Vec<NewRecord>,
    },
    /// Overwrite the metadata of existing jobs.
    Update {
        /// New metadata.
        metas: Vec<JobMeta>,
        /// Why.
        change: Change,
    },
    /// Delete jobs (completed-history trimming, dead-letter purge).
    Delete {
        /// Ids.
        ids: Vec<JobId>,
    },
    /// A dedup entry (written by base snapshots).
    Dedup {
        /// Queue.
        queue: String,
        /// Dedup key.
        key: String,
        /// The job it points to.
        id: JobId,
        /// Expiry.
        expires: Timestamp,
    },
    /// Drop expired dedup entries.
    DedupDrop {
        /// (queue, key) pairs.
        entries: Vec<(String, String)>,
    },
    /// Pause or resume a queue.
    Paused {
        /// Queue.
        queue: String,
        /// New state.
        paused: bool,
    },
    /// A job, whole, in a base snapshot.
    Snapshot {
        /// The job.
        rec: NewRecord,
    },
    /// The id counter (base snapshots).
    NextId {
        /// Next id to hand out.
        next: u64,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_limited<const LIMIT: usize>(body: &[u8]) -> std::result::Result<(Op, usize), String> {
    bincode::serde::decode_from_slice(body, config().with_limit::<LIMIT>())
        .map_err(|e| e.to_string())
}

impl Op {
    /// Encodes the op.
    pub fn encode(&self) -> Result<Vec<u8>> {
        bincode::serde::encode_to_vec(self, config())
            .map_err(|e| Error::Backend(format!("cannot encode journal record: {e}")))
    }

    /// Decodes an op; the whole body must be consumed.
    pub fn decode(body: &[u8]) -> std::result::Result<Op, String> {
        // bincode allocates a string's or byte buffer's claimed length before reading it. A valid
        // body never claims more bytes than it holds, so a limit in the size class just above
        // the body's length bounds what a damaged one can make us allocate.
        let (op, used) = match body.len() {
            n if n <= 4 << 10 => decode_limited::<{ 4 << 10 }>(body),
            n if n <= 64 << 10 => decode_limited::<{ 64 << 10 }>(body),
            n if n <= 1 << 20 => decode_limited::<{ 1 << 20 }>(body),
            n if n <= 16 << 20 => decode_limited::<{ 16 << 20 }>(body),
            _ => decode_limited::<{ 256 << 20 }>(body),
        }?;
        if used != body.len() {
            return Err(format!(
                "{} trailing bytes after the record body",
                body.len() - used
            ));
        }
        // One spelling per record: bincode also accepts over-long varints, which the writer
        // never produces; a body that does not re-encode to itself is damage.
        match op.encode() {
            Ok(again) if again == body => Ok(op),
            _ => Err("the record body is not in canonical form".to_string()),
        }
    }
}
