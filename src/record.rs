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
use crate::journal::format::MAX_RECORD;

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
    /// An upper bound of this metadata's encoded size (each integer at its widest varint,
    /// each string with its length prefix), for splitting big updates into records that stay
    /// far below `MAX_RECORD`.
    pub fn size_bound(&self) -> usize {
        const FIXED: usize = 256;
        let s = |o: &Option<String>| o.as_ref().map_or(1, |v| v.len() + 9);
        FIXED
            + self.queue.len()
            + self.kind.len()
            + s(&self.key)
            + s(&self.dedup)
            + self
                .errors
                .iter()
                .map(|e| e.error.len() + 32)
                .sum::<usize>()
    }

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
            timeout: None,
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
    /// A lease was given back with a delay (a server's retry-after) without counting the
    /// attempt.
    Postponed,
}

/// What a job carries beyond [`JobMeta`] (appended to the format in a record of its own, so
/// journals written before it still decode). A job without one has the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobExt {
    /// Per-attempt execution timeout in milliseconds (`None`: the pool's, if any).
    pub timeout_ms: Option<u64>,
    /// Total time the job was postponed without counting an attempt (retry-after).
    pub postponed_ms: u64,
    /// Cancel was asked while the job ran: when its attempt ends it is dropped, not retried.
    pub cancelled: bool,
}

impl JobExt {
    /// True when the job carries nothing beyond the default.
    pub fn is_default(&self) -> bool {
        *self == JobExt::default()
    }
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
    // Variants below were added after format 1 was first released: append only, so every
    // journal written before still decodes to the same ops.
    /// Overwrite a job's extension (written with the job's `Enqueue`/`Update` in a `Group`,
    /// and by base snapshots). The default extension removes the entry.
    Ext {
        /// The job.
        id: JobId,
        /// Its whole extension.
        ext: JobExt,
    },
    /// Cancelled jobs: deleted, with the dedup entries that pointed to them.
    Cancel {
        /// Ids.
        ids: Vec<JobId>,
        /// (queue, dedup key) pairs released with them.
        dedup: Vec<(String, String)>,
    },
    /// Several ops that apply as one record (all or none, even across a crash).
    Group {
        /// The ops, applied in order; never empty, never nested.
        ops: Vec<Op>,
    },
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn decode_limited<const LIMIT: usize>(body: &[u8]) -> std::result::Result<(Op, usize), String> {
    bincode::serde::decode_from_slice(body, config().with_limit::<LIMIT>())
        .map_err(|e| e.to_string())
}

/// A bincode writer that checks the bytes written equal `want`, in order.
struct SameAs<'a> {
    want: &'a [u8],
    at: usize,
}

impl bincode::enc::write::Writer for SameAs<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), bincode::error::EncodeError> {
        let end = self.at + bytes.len();
        if self.want.get(self.at..end) != Some(bytes) {
            return Err(bincode::error::EncodeError::Other("differs"));
        }
        self.at = end;
        Ok(())
    }
}

/// How many bytes bincode may claim per encoded byte. bincode's limit counts what decoding
/// *claims*, not what it reads: every integer claims its in-memory size (a `u64` varint of one
/// byte claims 8), an enum tag claims 4, a length prefix 8, a string or byte buffer its length.
/// No value in an `Op` claims more than 8 bytes per byte it occupies (checked against
/// bincode-2.0.1's source: `char` claims its width, `f64` 8 for 8, an `Option` tag 1, structs
/// and tuples nothing; only `u128`/`i128` would claim 16 per byte, and `Op` must never hold
/// one), so a limit of 8 × the body length
/// (plus slack for the smallest bodies) admits every body the writer produces, while a damaged
/// length prefix can still make us allocate at most 8 × the record's size.
pub const CLAIM_PER_BYTE: usize = 8;

impl Op {
    /// Encodes the op. A body over [`MAX_RECORD`] is refused with [`Error::InvalidInput`] before
    /// anything is written; every body this returns decodes again (a property test covers the
    /// whole range, and debug builds check each one).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let bytes = bincode::serde::encode_to_vec(self, config())
            .map_err(|e| Error::Backend(format!("cannot encode journal record: {e}")))?;
        if bytes.len() > MAX_RECORD as usize {
            return Err(Error::invalid(format!(
                "one journal record would be {} bytes, over the {} MiB a record may hold; \
                 enqueue (or act on) fewer or smaller jobs at once",
                bytes.len(),
                MAX_RECORD >> 20
            )));
        }
        #[cfg(debug_assertions)]
        if let Err(e) = Op::decode_unchecked(&bytes) {
            panic!("a record the writer produced does not decode: {e}");
        }
        Ok(bytes)
    }

    /// Decodes an op; the whole body must be consumed and in canonical form.
    pub fn decode(body: &[u8]) -> std::result::Result<Op, String> {
        let op = Op::decode_unchecked(body)?;
        // One spelling per record: bincode also accepts over-long varints, which the writer
        // never produces; a body that does not re-encode to itself is damage. The re-encoding
        // is compared as it is produced, without a buffer.
        let mut same = SameAs { want: body, at: 0 };
        match bincode::serde::encode_into_writer(&op, &mut same, config()) {
            Ok(()) if same.at == body.len() => Ok(op),
            _ => Err("the record body is not in canonical form".to_string()),
        }
    }

    /// Decodes an op with the allocation bound of [`CLAIM_PER_BYTE`]; the whole body must be
    /// consumed.
    fn decode_unchecked(body: &[u8]) -> std::result::Result<Op, String> {
        // The limit is a const generic: pick the size class just above 8 × the body's length.
        let claim = body.len().saturating_mul(CLAIM_PER_BYTE).saturating_add(64);
        let (op, used) = match claim {
            n if n <= 64 << 10 => decode_limited::<{ 64 << 10 }>(body),
            n if n <= 1 << 20 => decode_limited::<{ 1 << 20 }>(body),
            n if n <= 16 << 20 => decode_limited::<{ 16 << 20 }>(body),
            n if n <= 256 << 20 => decode_limited::<{ 256 << 20 }>(body),
            _ => decode_limited::<{ (MAX_RECORD as usize) * CLAIM_PER_BYTE + 64 }>(body),
        }?;
        if used != body.len() {
            return Err(format!(
                "{} trailing bytes after the record body",
                body.len() - used
            ));
        }
        Ok(op)
    }
}
