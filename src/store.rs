//! The materialised state in sled: one tree, key prefixes, one atomic `apply_batch` per group of
//! journal records together with `applied_seq`.
//!
//! Layout (all integers big-endian so keys sort numerically):
//! ```text
//! "m" 0x00 "applied"      -> u64   seq of the last applied journal record
//! "m" 0x00 "next_id"      -> u64   next job id floor
//! "m" 0x00 "format"       -> u32   STATE_VERSION
//! "j" id:u64              -> bincode (JobMeta, Option<payload>)  payload inline if <= 4 KiB
//! "p" id:u64              -> payload bytes                       larger payloads only
//! "d" queue 0x00 key      -> bincode (JobId, Timestamp expires)
//! "q" queue               -> [paused: u8]
//! ```
//! Applying a group of records first folds them into an overlay (last state per job), so a job
//! enqueued, reserved and acked within one group costs one sled write; `Update` keeps the stored
//! payload (payloads never change after enqueue).
//!
//! Invariants: sled is never the only copy of anything acknowledged — the journal is. sled's
//! `flush()` is not durable on Linux (sync_file_range), so nothing relies on it; if the state is
//! missing, damaged, of another version, behind the last base or ahead of the journal, it is
//! rebuilt from base + segments.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::job::{JobId, Timestamp};
use crate::journal::writer::Staged;
use crate::record::{JobMeta, NewRecord, Op};

/// Version of the state layout.
pub const STATE_VERSION: u32 = 1;

/// Payloads up to this size are stored inline with the job's metadata (one sled entry per job).
pub const INLINE_PAYLOAD: usize = 4096;

const K_APPLIED: &[u8] = b"m\x00applied";
const K_NEXT_ID: &[u8] = b"m\x00next_id";
const K_FORMAT: &[u8] = b"m\x00format";

/// Handle to the state tree. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    next_id: Arc<AtomicU64>,
}

fn sled_err(what: &str, e: sled::Error) -> Error {
    Error::Backend(format!("state store: {what}: {e}"))
}

fn job_key(id: JobId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'j';
    k[1..].copy_from_slice(&id.0.to_be_bytes());
    k
}

fn payload_key(id: JobId) -> [u8; 9] {
    let mut k = job_key(id);
    k[0] = b'p';
    k
}

fn dedup_key(queue: &str, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + queue.len() + key.len());
    k.push(b'd');
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

fn queue_key(queue: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + queue.len());
    k.push(b'q');
    k.extend_from_slice(queue.as_bytes());
    k
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| Error::Backend(format!("cannot encode state: {e}")))
}

fn dec<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| Error::Backend(format!("state store: damaged {what}: {e}")))
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[8 - n..].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// A job as stored: metadata first (so it can be decoded alone), then an inline payload.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    meta: JobMeta,
    #[serde(with = "serde_bytes")]
    payload: Option<Vec<u8>>,
}

/// A dedup entry as loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupEntry {
    /// Queue.
    pub queue: String,
    /// Key.
    pub key: String,
    /// First job's id.
    pub id: JobId,
    /// Expiry.
    pub expires: Timestamp,
}

impl Store {
    /// Opens sled in `dir`. Fails if sled cannot open it (the caller then rebuilds).
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| sled_err(&format!("cannot open {}", dir.display()), e))?;
        let store = Store {
            db,
            next_id: Arc::new(AtomicU64::new(0)),
        };
        let next = store
            .db
            .get(K_NEXT_ID)
            .map_err(|e| sled_err("read", e))?
            .map(|v| u64_of(&v))
            .unwrap_or(0);
        store.next_id.store(next, Ordering::Relaxed);
        Ok(store)
    }

    /// True if the store was written by this layout version (or is empty).
    pub fn version_ok(&self) -> Result<bool> {
        Ok(
            match self.db.get(K_FORMAT).map_err(|e| sled_err("read", e))? {
                None => self.db.is_empty(),
                Some(v) => {
                    v.len() == 4 && u32::from_be_bytes([v[0], v[1], v[2], v[3]]) == STATE_VERSION
                }
            },
        )
    }

    /// Seq of the last applied record (0 if none).
    pub fn applied_seq(&self) -> Result<u64> {
        Ok(self
            .db
            .get(K_APPLIED)
            .map_err(|e| sled_err("read", e))?
            .map(|v| u64_of(&v))
            .unwrap_or(0))
    }

    /// The id floor persisted by applied records.
    pub fn next_id(&self) -> u64 {
        self.next_id.load(Ordering::Relaxed)
    }

    /// Deletes everything (before a rebuild).
    pub fn clear(&self) -> Result<()> {
        self.db.clear().map_err(|e| sled_err("clear", e))?;
        self.next_id.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Applies records atomically, with `applied_seq` = the last record's seq.
    pub fn apply(&self, records: &[Staged]) -> Result<()> {
        let last = records.last().map(|r| r.seq);
        self.apply_iter(records.iter().map(|r| &r.op), last)
    }

    /// Applies ops (from a base or a replay) with a given `applied_seq`.
    pub fn apply_ops(&self, ops: &[Op], applied: u64) -> Result<()> {
        self.apply_iter(ops.iter(), Some(applied))
    }

    fn apply_iter<'a>(
        &self,
        ops: impl Iterator<Item = &'a Op>,
        applied: Option<u64>,
    ) -> Result<()> {
        let mut b = sled::Batch::default();
        // Last state per job in this group: Some = put, None = delete.
        let mut jobs: HashMap<JobId, Option<Stored>> = HashMap::new();
        for op in ops {
            self.stage(&mut b, &mut jobs, op)?;
        }
        for (id, v) in jobs {
            match v {
                Some(st) => b.insert(&job_key(id), enc(&st)?),
                None => b.remove(&job_key(id)),
            }
        }
        if let Some(seq) = applied {
            b.insert(K_APPLIED, &seq.to_be_bytes());
        }
        b.insert(K_FORMAT, &STATE_VERSION.to_be_bytes());
        b.insert(K_NEXT_ID, &self.next_id().to_be_bytes());
        self.db.apply_batch(b).map_err(|e| sled_err("apply", e))
    }

    fn bump_id(&self, id: JobId) {
        self.next_id.fetch_max(id.0 + 1, Ordering::Relaxed);
    }

    fn put_new(
        &self,
        b: &mut sled::Batch,
        jobs: &mut HashMap<JobId, Option<Stored>>,
        rec: &NewRecord,
    ) -> Result<()> {
        let id = rec.meta.id;
        self.bump_id(id);
        // A job's payload never changes, so neither does where it lives: an inline job never
        // had a `p` entry to remove.
        let inline = rec.payload.len() <= INLINE_PAYLOAD;
        if !inline {
            b.insert(&payload_key(id), rec.payload.as_slice());
        }
        jobs.insert(
            id,
            Some(Stored {
                meta: rec.meta.clone(),
                payload: inline.then(|| rec.payload.clone()),
            }),
        );
        if let (Some(k), Some(exp)) = (&rec.meta.dedup, rec.dedup_expires) {
            b.insert(dedup_key(&rec.meta.queue, k), enc(&(id, exp))?);
        }
        Ok(())
    }

    fn stage(
        &self,
        b: &mut sled::Batch,
        jobs: &mut HashMap<JobId, Option<Stored>>,
        op: &Op,
    ) -> Result<()> {
        match op {
            Op::Enqueue { jobs: recs } => {
                for rec in recs {
                    self.put_new(b, jobs, rec)?;
                }
            }
            Op::Snapshot { rec } => self.put_new(b, jobs, rec)?,
            Op::Update { metas, .. } => {
                for m in metas {
                    let cur = match jobs.get(&m.id) {
                        Some(v) => v.clone(),
                        None => self.stored(m.id)?,
                    };
                    // A job missing here was deleted later in the journal (fuzzy base replay):
                    // a later record deletes it again, so skipping keeps the final state exact.
                    if let Some(mut st) = cur {
                        st.meta = m.clone();
                        jobs.insert(m.id, Some(st));
                    }
                }
            }
            Op::Delete { ids } => {
                for id in ids {
                    jobs.insert(*id, None);
                    b.remove(&payload_key(*id));
                }
            }
            Op::Dedup {
                queue,
                key,
                id,
                expires,
            } => b.insert(dedup_key(queue, key), enc(&(*id, *expires))?),
            Op::DedupDrop { entries } => {
                for (q, k) in entries {
                    b.remove(dedup_key(q, k));
                }
            }
            Op::Paused { queue, paused } => {
                if *paused {
                    b.insert(queue_key(queue), &[1u8][..]);
                } else {
                    b.remove(queue_key(queue));
                }
            }
            Op::NextId { next } => {
                self.next_id.fetch_max(*next, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn stored(&self, id: JobId) -> Result<Option<Stored>> {
        match self.db.get(job_key(id)).map_err(|e| sled_err("read", e))? {
            Some(v) => dec(&v, "job").map(Some),
            None => Ok(None),
        }
    }

    /// Reads a job's metadata.
    pub fn meta(&self, id: JobId) -> Result<Option<JobMeta>> {
        match self.db.get(job_key(id)).map_err(|e| sled_err("read", e))? {
            // The metadata is the encoding's prefix: decode it alone.
            Some(v) => dec(&v, "job metadata").map(Some),
            None => Ok(None),
        }
    }

    /// Reads a job's payload.
    pub fn payload(&self, id: JobId) -> Result<Option<Vec<u8>>> {
        match self.stored(id)? {
            Some(Stored {
                payload: Some(p), ..
            }) => Ok(Some(p)),
            _ => Ok(self
                .db
                .get(payload_key(id))
                .map_err(|e| sled_err("read", e))?
                .map(|v| v.to_vec())),
        }
    }

    /// Calls `f` with every job's metadata, in id order.
    pub fn for_each_meta(&self, mut f: impl FnMut(JobMeta) -> Result<()>) -> Result<()> {
        for kv in self.db.scan_prefix(b"j") {
            let (_, v) = kv.map_err(|e| sled_err("scan", e))?;
            f(dec(&v, "job metadata")?)?;
        }
        Ok(())
    }

    /// Every dedup entry.
    pub fn dedups(&self) -> Result<Vec<DedupEntry>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"d") {
            let (k, v) = kv.map_err(|e| sled_err("scan", e))?;
            let rest = &k[1..];
            let Some(nul) = rest.iter().position(|&c| c == 0) else {
                continue;
            };
            let (id, expires): (JobId, Timestamp) = dec(&v, "dedup entry")?;
            out.push(DedupEntry {
                queue: String::from_utf8_lossy(&rest[..nul]).into_owned(),
                key: String::from_utf8_lossy(&rest[nul + 1..]).into_owned(),
                id,
                expires,
            });
        }
        Ok(out)
    }

    /// Names of paused queues.
    pub fn paused(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"q") {
            let (k, _) = kv.map_err(|e| sled_err("scan", e))?;
            out.push(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(out)
    }

    /// Emits the live state as base-snapshot ops. Fuzzy: writers may run meanwhile.
    pub fn snapshot(&self, mut f: impl FnMut(Op) -> Result<()>) -> Result<()> {
        f(Op::NextId {
            next: self.next_id(),
        })?;
        for q in self.paused()? {
            f(Op::Paused {
                queue: q,
                paused: true,
            })?;
        }
        for d in self.dedups()? {
            f(Op::Dedup {
                queue: d.queue,
                key: d.key,
                id: d.id,
                expires: d.expires,
            })?;
        }
        for kv in self.db.scan_prefix(b"j") {
            let (k, v) = kv.map_err(|e| sled_err("scan", e))?;
            let st: Stored = dec(&v, "job")?;
            let payload = match st.payload {
                Some(p) => p,
                None => {
                    let mut pk = k.to_vec();
                    pk[0] = b'p';
                    match self.db.get(&pk).map_err(|e| sled_err("read", e))? {
                        Some(p) => p.to_vec(),
                        None => continue, // deleted meanwhile
                    }
                }
            };
            f(Op::Snapshot {
                rec: NewRecord {
                    meta: st.meta,
                    payload,
                    dedup_expires: None,
                },
            })?;
        }
        Ok(())
    }

    /// Flushes sled's buffers to the OS (not durable by itself; see module docs).
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| sled_err("flush", e))
    }
}
