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
//! "x" id:u64              -> bincode JobExt (jobs with a non-default extension only)
//! ```
//! Applying a group of records first folds them into an overlay (last state per job), so a job
//! enqueued, reserved and acked within one group costs one sled write; `Update` keeps the stored
//! payload (payloads never change after enqueue).
//!
//! Invariants: sled is never the only copy of anything acknowledged — the journal is. sled's
//! `flush()` is not durable on Linux (sync_file_range), so nothing relies on it; if the state is
//! missing, damaged, of another version, behind the last base or ahead of the journal, it is
//! rebuilt from base + segments.
//!
//! **Disk full.** When sled cannot write a group because the disk is full (ENOSPC, EFBIG,
//! EDQUOT), the group's changes are *held* in an in-memory overlay instead: every read
//! ([`Store::meta`], scans, [`Store::applied_seq`], the base snapshot) sees sled with the overlay
//! on top, so the store's view always contains every applied record, and later groups fold into
//! the overlay too. sled's I/O errors are sticky (it refuses every later write until reopened),
//! so healing ([`Store::flush_held`], [`Store::reopen`], done by the applier with backoff) writes
//! the overlay to sled, reopening sled first when needed; the applier catches a reopened sled up
//! from the journal before the overlay goes (sled may have lost writes it had reported done). Only
//! the applier (one thread) and recovery (before the applier starts) ever write.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use sled::IVec;

use crate::error::{Error, Result};
use crate::job::{JobId, Timestamp};
use crate::journal::writer::Staged;
use crate::record::{JobExt, JobMeta, NewRecord, Op};

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
    inner: Arc<Inner>,
}

struct Inner {
    /// `state/`.
    dir: PathBuf,
    cache: u64,
    /// `None` only while sled is being reopened.
    db: RwLock<Option<sled::Db>>,
    next_id: AtomicU64,
    /// Changes applied while sled could not write them (disk full): read on top of sled.
    held: Mutex<Held>,
    /// Set while changes are held: nothing is written to sled until they are.
    holding: AtomicBool,
    /// Seq of the last group applied (to sled or held).
    last_applied: AtomicU64,
    /// Bumped by every reopen.
    generation: AtomicU64,
    /// Serialises reopening and writing the held changes.
    maintenance: Mutex<()>,
    /// Brings a reopened store up to a seq from the journal (set by the journal writer).
    catch_up: Mutex<Option<CatchUp>>,
}

/// See [`Store::set_catch_up`].
pub type CatchUp = Arc<dyn Fn(&Store, u64) -> Result<()> + Send + Sync>;

/// Space kept in reserve next to `state/` (files `state.reserve.N`, [`RESERVES`] of them),
/// one released each time sled must be reopened on a full disk (opening sled writes), all taken
/// again once space returns.
pub const RESERVE_BYTES: u64 = 2 << 20;

/// Free bytes the state store's file system must have before sled is given a write or a
/// flush. sled 0.34 never recovers from a failed write in-process (its error is sticky, and a
/// flush racing the failure can wait forever while holding sled's process-wide lock, which
/// wedges every later batch), so durq keeps sled away from a nearly full disk: below this
/// room, changes are held in memory (the journal has them) until space returns. What sled
/// buffers between two checks is far below this, so only another process filling the last
/// 8 MiB within one flush interval can still make a sled write fail.
pub const WRITE_ROOM: u64 = 8 << 20;

/// Free bytes for unprivileged writers (`f_bavail` of `statvfs`) on `dir`'s file system.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (r == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Number of reserve files.
pub const RESERVES: usize = 3;

/// Longest wait for a sled flush (see [`Store::flush`]).
pub const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Default)]
struct Held {
    /// Key -> value (`None`: deleted).
    kv: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Bytes of keys and values held.
    bytes: usize,
}

/// True when a sled error means the disk is full.
fn sled_disk_full(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if Error::is_disk_full_io(io))
}

/// The data directory of a `state/` directory (its parent).
fn data_dir(state_dir: &Path) -> PathBuf {
    state_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| state_dir.to_path_buf())
}

fn sled_err(what: &str, e: sled::Error) -> Error {
    Error::Backend(format!("state store: {what}: {e}"))
}

/// Where staged changes go: a sled batch (normal case) or the held overlay (disk full).
trait Sink {
    fn put(&mut self, k: &[u8], v: &[u8]);
    fn del(&mut self, k: &[u8]);
}

impl Sink for sled::Batch {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.insert(k, v);
    }
    fn del(&mut self, k: &[u8]) {
        self.remove(k);
    }
}

impl Sink for BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    fn put(&mut self, k: &[u8], v: &[u8]) {
        self.insert(k.to_vec(), Some(v.to_vec()));
    }
    fn del(&mut self, k: &[u8]) {
        self.insert(k.to_vec(), None);
    }
}

fn job_key(id: JobId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'j';
    k[1..].copy_from_slice(&id.0.to_be_bytes());
    k
}

fn ext_key(id: JobId) -> [u8; 9] {
    let mut k = job_key(id);
    k[0] = b'x';
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
        let db = match open_db(dir, cache_bytes) {
            Ok(db) => db,
            // Opening sled writes: on a full disk, use the space reserve.
            Err(e) if release_one(dir) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot open the state store; released the space reserve and trying again");
                open_db(dir, cache_bytes)?
            }
            Err(e) => return Err(e),
        };
        let store = Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                cache: cache_bytes,
                db: RwLock::new(Some(db)),
                next_id: AtomicU64::new(0),
                held: Mutex::new(Held::default()),
                holding: AtomicBool::new(false),
                last_applied: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                maintenance: Mutex::new(()),
                catch_up: Mutex::new(None),
            }),
        };
        let next = store.get(K_NEXT_ID)?.map(|v| u64_of(&v)).unwrap_or(0);
        store.inner.next_id.store(next, Ordering::Relaxed);
        let applied = store.get(K_APPLIED)?.map(|v| u64_of(&v)).unwrap_or(0);
        store.inner.last_applied.store(applied, Ordering::Relaxed);
        store.take_reserve();
        Ok(store)
    }

    /// Sets how a reopened store is caught up from the journal (the journal writer does this).
    pub fn set_catch_up(&self, f: CatchUp) {
        *self.inner.catch_up.lock() = Some(f);
    }

    /// Takes the reserve files not held yet (best effort: on a full disk there is nothing to
    /// take).
    pub fn take_reserve(&self) {
        for i in 0..RESERVES {
            take_one(&reserve_path(&self.inner.dir, i));
        }
    }

    /// Gives one reserve file back to the file system; true if there was one.
    fn release_reserve(&self) -> bool {
        release_one(&self.inner.dir)
    }

    /// After sled failed a *read* with its sticky write error: reopen it (from the reserve's
    /// space), caught up from the journal into memory, without writing anything to it.
    fn recover_reads(&self, generation: u64) -> Result<()> {
        if self.inner.generation.load(Ordering::Acquire) != generation {
            return Ok(()); // reopened meanwhile
        }
        let Some(cu) = self.inner.catch_up.lock().clone() else {
            return Err(Error::Backend(
                "state store: it failed on a full disk and cannot be reopened here".into(),
            ));
        };
        if !self.release_reserve() {
            return Err(Error::Backend(
                "state store: it fails reads after a write error on a full disk, and no space is left to reopen it; free some space".into(),
            ));
        }
        let upto = self.inner.last_applied.load(Ordering::Acquire);
        tracing::warn!(dir = %self.inner.dir.display(), upto, "the state store fails reads after a write error on a full disk; reopening it read-only until space returns");
        self.reopen_with(false, |fresh| cu(fresh, upto))
    }

    /// Runs a sled read; if sled fails it with its sticky disk-full error, reopens sled once
    /// (see [`Store::recover_reads`]) and reads again.
    fn sled_read<T>(&self, f: impl Fn(&sled::Db) -> sled::Result<T>) -> Result<T> {
        let gen = self.inner.generation.load(Ordering::Acquire);
        match self.with_db(|db| Ok(f(db)))? {
            Ok(v) => Ok(v),
            Err(e) if sled_disk_full(&e) => {
                self.recover_reads(gen)?;
                self.with_db(|db| f(db).map_err(|e| sled_err("read", e)))
            }
            Err(e) => Err(sled_err("read", e)),
        }
    }

    /// The `state/` directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    fn disk_full(&self, what: &str, e: &sled::Error) -> Error {
        Error::DiskFull {
            dir: data_dir(&self.inner.dir),
            detail: format!(
                "the state store in {} cannot {what}: {e}",
                self.inner.dir.display()
            ),
        }
    }

    /// Runs `f` on sled (never while it is being reopened).
    fn with_db<T>(&self, f: impl FnOnce(&sled::Db) -> Result<T>) -> Result<T> {
        let g = self.inner.db.read_recursive();
        match g.as_ref() {
            Some(db) => f(db),
            None => Err(Error::Backend(
                "state store: it is being reopened after a write failed; try again".into(),
            )),
        }
    }

    fn holding(&self) -> bool {
        self.inner.holding.load(Ordering::Acquire)
    }

    /// True when the file system has less than [`WRITE_ROOM`] free (unknown counts as room).
    fn short_of_room(&self) -> bool {
        let short = free_bytes(&self.inner.dir).is_some_and(|f| f < WRITE_ROOM);
        if short && !self.holding() {
            tracing::warn!(dir = %self.inner.dir.display(), room = WRITE_ROOM, "the disk is nearly full; holding state-store changes in memory until space returns (the journal has them)");
        }
        short
    }

    /// Reads a key: the held overlay first, then sled.
    fn get(&self, key: &[u8]) -> Result<Option<IVec>> {
        if self.holding() {
            if let Some(v) = self.inner.held.lock().kv.get(key) {
                return Ok(v.as_deref().map(IVec::from));
            }
        }
        self.sled_read(|db| db.get(key))
    }

    /// Calls `f` with every live (key, value) under `prefix`, in key order: sled merged with
    /// the held overlay. If sled fails mid-way with its sticky disk-full error, it is reopened
    /// (see [`Store::recover_reads`]) and the scan resumes after the last key given to `f`.
    fn scan(&self, prefix: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mut after: Option<Vec<u8>> = None;
        for attempt in 0..2 {
            let gen = self.inner.generation.load(Ordering::Acquire);
            let from = after.clone();
            match self.scan_from(prefix, from.as_deref(), &mut after, &mut f)? {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 && sled_disk_full(&e) => self.recover_reads(gen)?,
                Err(e) => return Err(sled_err("scan", e)),
            }
        }
        Ok(())
    }

    /// One scan pass over keys under `prefix` greater than `from`; records the last key given
    /// to `f` in `last`. A sled error is returned inside `Ok` (to resume after a reopen).
    fn scan_from(
        &self,
        prefix: &[u8],
        from: Option<&[u8]>,
        last: &mut Option<Vec<u8>>,
        f: &mut impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<sled::Result<()>> {
        use std::ops::Bound;
        let lower = match from {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let over: Vec<(Vec<u8>, Option<Vec<u8>>)> = if self.holding() {
            self.inner
                .held
                .lock()
                .kv
                .range((lower.clone(), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.with_db(|db| {
            let mut over = over.into_iter().peekable();
            let mut emit = |k: &[u8], v: &[u8], last: &mut Option<Vec<u8>>| {
                *last = Some(k.to_vec());
                f(k, v)
            };
            for kv in db
                .range::<Vec<u8>, _>((lower, Bound::Unbounded))
                .take_while(|kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            {
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => return Ok(Err(e)),
                };
                while let Some((ok, _)) = over.peek() {
                    if ok.as_slice() >= &k[..] {
                        break;
                    }
                    if let Some((ok, ov)) = over.next() {
                        match ov {
                            Some(ov) => emit(&ok, &ov, last)?,
                            None => *last = Some(ok),
                        }
                    }
                }
                if over.peek().is_some_and(|(ok, _)| ok.as_slice() == &k[..]) {
                    if let Some((ok, ov)) = over.next() {
                        match ov {
                            Some(ov) => emit(&ok, &ov, last)?,
                            None => *last = Some(ok),
                        }
                    }
                    continue;
                }
                emit(&k, &v, last)?;
            }
            for (ok, ov) in over {
                if let Some(ov) = ov {
                    emit(&ok, &ov, last)?;
                }
            }
            Ok(Ok(()))
        })
    }

    /// True if the store was written by this layout version (or is empty).
    pub fn version_ok(&self) -> Result<bool> {
        Ok(match self.get(K_FORMAT)? {
            None => self.with_db(|db| Ok(db.is_empty()))? && !self.holding(),
            Some(v) => {
                v.len() == 4 && u32::from_be_bytes([v[0], v[1], v[2], v[3]]) == STATE_VERSION
            }
        })
    }

    /// Seq of the last applied record (0 if none), held changes included.
    pub fn applied_seq(&self) -> Result<u64> {
        Ok(self.get(K_APPLIED)?.map(|v| u64_of(&v)).unwrap_or(0))
    }

    /// The id floor persisted by applied records.
    pub fn next_id(&self) -> u64 {
        self.inner.next_id.load(Ordering::Relaxed)
    }

    /// Deletes everything (before a rebuild), held changes included.
    pub fn clear(&self) -> Result<()> {
        self.with_db(|db| db.clear().map_err(|e| sled_err("clear", e)))?;
        let mut h = self.inner.held.lock();
        *h = Held::default();
        self.inner.holding.store(false, Ordering::Release);
        self.inner.next_id.store(0, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of changes held in memory because sled could not write them (0 normally).
    pub fn held_bytes(&self) -> usize {
        if !self.holding() {
            return 0;
        }
        self.inner.held.lock().bytes
    }

    /// True while changes are held in memory (sled could not write them).
    pub fn is_holding(&self) -> bool {
        self.holding()
    }

    /// Writes the held changes to sled; on success nothing is held anymore. On a full disk
    /// the changes stay held and [`Error::DiskFull`] is returned.
    pub fn flush_held(&self) -> Result<()> {
        let _m = self.inner.maintenance.lock();
        self.flush_held_locked()
    }

    fn flush_held_locked(&self) -> Result<()> {
        if !self.holding() {
            return Ok(());
        }
        let batch = {
            let h = self.inner.held.lock();
            let mut b = sled::Batch::default();
            for (k, v) in &h.kv {
                match v {
                    Some(v) => b.insert(k.as_slice(), v.as_slice()),
                    None => b.remove(k.as_slice()),
                }
            }
            b
        };
        self.with_db(|db| {
            db.apply_batch(batch).map_err(|e| {
                if sled_disk_full(&e) {
                    self.disk_full("write", &e)
                } else {
                    sled_err("apply", e)
                }
            })
        })?;
        // Only the applier writes, so nothing was held meanwhile.
        let mut h = self.inner.held.lock();
        *h = Held::default();
        self.inner.holding.store(false, Ordering::Release);
        Ok(())
    }

    /// Closes and reopens sled (its I/O errors are sticky) and puts the reopened sled in place
    /// with a view as complete as before: `catch_up` gets a store over the reopened sled alone
    /// (sled may come back behind what it had reported written) and brings it up to the held
    /// changes' seq — into sled, or, if sled still cannot write, into that store's own held
    /// changes —; then the held changes go on top and are written if sled can. Readers wait
    /// meanwhile and never see a half-caught-up sled. If `catch_up` fails otherwise, sled stays
    /// closed (reads fail with a clear error) until a later attempt succeeds.
    pub fn reopen_with(
        &self,
        write: bool,
        catch_up: impl FnOnce(&Store) -> Result<()>,
    ) -> Result<()> {
        let _m = self.inner.maintenance.lock();
        let mut g = self.inner.db.write();
        // Drop the old handle first: sled locks its files.
        drop(g.take());
        let mut last = None;
        let mut db = None;
        // open_db itself waits for sled's lock; other failures get a few more tries.
        for _ in 0..3 {
            match open_db(&self.inner.dir, self.inner.cache) {
                Ok(d) => {
                    db = Some(d);
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let Some(db) = db else {
            return Err(last.unwrap_or(Error::Closed));
        };
        let fresh = Store {
            inner: Arc::new(Inner {
                dir: self.inner.dir.clone(),
                cache: self.inner.cache,
                db: RwLock::new(Some(db.clone())),
                next_id: AtomicU64::new(self.next_id()),
                held: Mutex::new(Held::default()),
                // Not writing: everything the catch-up applies is held in memory.
                holding: AtomicBool::new(!write),
                last_applied: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                maintenance: Mutex::new(()),
                catch_up: Mutex::new(None),
            }),
        };
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = catch_up(&fresh) {
            drop(fresh);
            // Closed rather than behind: reads fail clearly until a later attempt.
            drop(db);
            return Err(e);
        }
        // The catch-up's own held changes below, ours on top.
        let mut merged = std::mem::take(&mut *fresh.inner.held.lock());
        drop(fresh);
        {
            let mut h = self.inner.held.lock();
            for (k, v) in std::mem::take(&mut h.kv) {
                merged.bytes += k.len() + v.as_ref().map_or(0, Vec::len);
                merged.kv.insert(k, v);
            }
            *h = merged;
            // Nothing reaches sled until the held changes are written.
            self.inner.holding.store(true, Ordering::Release);
        }
        *g = Some(db);
        drop(g);
        if write {
            self.flush_held_locked()
        } else {
            Ok(())
        }
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

    /// Applies a group: to sled normally; into the held overlay when changes are held already
    /// or sled reports a full disk (then the group is visible to reads all the same, and `Ok`).
    fn apply_iter<'a>(
        &self,
        ops: impl Iterator<Item = &'a Op> + Clone,
        applied: Option<u64>,
    ) -> Result<()> {
        if !self.holding() && !self.short_of_room() {
            let mut b = sled::Batch::default();
            // Last state per job in this group: Some = put, None = delete.
            let mut jobs: HashMap<JobId, Option<Stored>> = HashMap::new();
            for op in ops.clone() {
                self.stage(&mut b, &mut jobs, op)?;
            }
            self.finish(&mut b, jobs, applied)?;
            // Checked again under the lock: a reopen may have started holding meanwhile.
            let r = self.with_db(|db| Ok((!self.holding()).then(|| db.apply_batch(b))))?;
            match r {
                None => {}
                Some(Ok(())) => {
                    if let Some(seq) = applied {
                        self.inner.last_applied.store(seq, Ordering::Release);
                    }
                    return Ok(());
                }
                Some(Err(e)) if sled_disk_full(&e) => {
                    tracing::warn!(dir = %self.inner.dir.display(), error = %e, "the state store cannot write (disk full); holding its changes in memory until space returns (the journal has them)");
                }
                Some(Err(e)) => return Err(sled_err("apply", e)),
            }
        }
        let mut ch: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        let mut jobs: HashMap<JobId, Option<Stored>> = HashMap::new();
        for op in ops {
            self.stage(&mut ch, &mut jobs, op)?;
        }
        self.finish(&mut ch, jobs, applied)?;
        let mut h = self.inner.held.lock();
        for (k, v) in ch {
            h.bytes += k.len() + v.as_ref().map_or(0, Vec::len);
            h.kv.insert(k, v);
        }
        self.inner.holding.store(true, Ordering::Release);
        if let Some(seq) = applied {
            self.inner.last_applied.store(seq, Ordering::Release);
        }
        Ok(())
    }

    /// Adds the folded jobs and the meta keys to a group's changes.
    fn finish(
        &self,
        b: &mut impl Sink,
        jobs: HashMap<JobId, Option<Stored>>,
        applied: Option<u64>,
    ) -> Result<()> {
        for (id, v) in jobs {
            match v {
                Some(st) => b.put(&job_key(id), &enc(&st)?),
                None => b.del(&job_key(id)),
            }
        }
        if let Some(seq) = applied {
            b.put(K_APPLIED, &seq.to_be_bytes());
        }
        b.put(K_FORMAT, &STATE_VERSION.to_be_bytes());
        b.put(K_NEXT_ID, &self.next_id().to_be_bytes());
        Ok(())
    }

    fn bump_id(&self, id: JobId) {
        self.inner.next_id.fetch_max(id.0 + 1, Ordering::Relaxed);
    }

    fn put_new(
        &self,
        b: &mut impl Sink,
        jobs: &mut HashMap<JobId, Option<Stored>>,
        rec: &NewRecord,
    ) -> Result<()> {
        let id = rec.meta.id;
        self.bump_id(id);
        // A job's payload never changes, so neither does where it lives: an inline job never
        // had a `p` entry to remove.
        let inline = rec.payload.len() <= INLINE_PAYLOAD;
        if !inline {
            b.put(&payload_key(id), rec.payload.as_slice());
        }
        jobs.insert(
            id,
            Some(Stored {
                meta: rec.meta.clone(),
                payload: inline.then(|| rec.payload.clone()),
            }),
        );
        if let (Some(k), Some(exp)) = (&rec.meta.dedup, rec.dedup_expires) {
            b.put(&dedup_key(&rec.meta.queue, k), &enc(&(id, exp))?);
        }
        Ok(())
    }

    fn stage(
        &self,
        b: &mut impl Sink,
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
                    b.del(&payload_key(*id));
                    b.del(&ext_key(*id));
                }
            }
            Op::Cancel { ids, dedup } => {
                for id in ids {
                    jobs.insert(*id, None);
                    b.del(&payload_key(*id));
                    b.del(&ext_key(*id));
                }
                for (q, k) in dedup {
                    b.del(&dedup_key(q, k));
                }
            }
            Op::Ext { id, ext } => {
                if ext.is_default() {
                    b.del(&ext_key(*id));
                } else {
                    b.put(&ext_key(*id), &enc(ext)?);
                }
            }
            Op::Group { ops } => {
                for op in ops {
                    self.stage(b, jobs, op)?;
                }
            }
            Op::Dedup {
                queue,
                key,
                id,
                expires,
            } => b.put(&dedup_key(queue, key), &enc(&(*id, *expires))?),
            Op::DedupDrop { entries } => {
                for (q, k) in entries {
                    b.del(&dedup_key(q, k));
                }
            }
            Op::Paused { queue, paused } => {
                if *paused {
                    b.put(&queue_key(queue), &[1u8][..]);
                } else {
                    b.del(&queue_key(queue));
                }
            }
            Op::NextId { next } => {
                self.inner.next_id.fetch_max(*next, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn stored(&self, id: JobId) -> Result<Option<Stored>> {
        match self.get(&job_key(id))? {
            Some(v) => dec(&v, "job").map(Some),
            None => Ok(None),
        }
    }

    /// Reads a job's metadata.
    pub fn meta(&self, id: JobId) -> Result<Option<JobMeta>> {
        match self.get(&job_key(id))? {
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
            _ => Ok(self.get(&payload_key(id))?.map(|v| v.to_vec())),
        }
    }

    /// Calls `f` with every job's metadata, in id order.
    pub fn for_each_meta(&self, mut f: impl FnMut(JobMeta) -> Result<()>) -> Result<()> {
        self.scan(b"j", |_, v| f(dec(v, "job metadata")?))
    }

    /// Every dedup entry.
    pub fn dedups(&self) -> Result<Vec<DedupEntry>> {
        let mut out = Vec::new();
        self.scan(b"d", |k, v| {
            let rest = &k[1..];
            let Some(nul) = rest.iter().position(|&c| c == 0) else {
                return Ok(());
            };
            let (id, expires): (JobId, Timestamp) = dec(v, "dedup entry")?;
            out.push(DedupEntry {
                queue: String::from_utf8_lossy(&rest[..nul]).into_owned(),
                key: String::from_utf8_lossy(&rest[nul + 1..]).into_owned(),
                id,
                expires,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Every job's non-default extension.
    pub fn exts(&self) -> Result<Vec<(JobId, JobExt)>> {
        let mut out = Vec::new();
        self.scan(b"x", |k, v| {
            let Some(id) = k.get(1..9).and_then(|b| b.try_into().ok()) else {
                return Ok(());
            };
            out.push((JobId(u64::from_be_bytes(id)), dec(v, "job extension")?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Names of paused queues.
    pub fn paused(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.scan(b"q", |k, _| {
            out.push(String::from_utf8_lossy(&k[1..]).into_owned());
            Ok(())
        })?;
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
        self.scan(b"j", |k, v| {
            let st: Stored = dec(v, "job")?;
            let payload = match st.payload {
                Some(p) => p,
                None => {
                    let mut pk = k.to_vec();
                    pk[0] = b'p';
                    match self.get(&pk)? {
                        Some(p) => p.to_vec(),
                        None => return Ok(()), // deleted meanwhile
                    }
                }
            };
            f(Op::Snapshot {
                rec: NewRecord {
                    meta: st.meta,
                    payload,
                    dedup_expires: None,
                },
            })
        })?;
        // After the jobs: replaying a base applies each extension on top of its job.
        for (id, ext) in self.exts()? {
            f(Op::Ext { id, ext })?;
        }
        Ok(())
    }

    /// Flushes sled's buffers to the OS (not durable by itself; see module docs). While
    /// changes are held (disk full) there is nothing sled could flush them to: the journal has
    /// them, and the next open replays them, so this succeeds.
    pub fn flush(&self) -> Result<()> {
        if self.holding() {
            return Ok(());
        }
        if free_bytes(&self.inner.dir).is_some_and(|f| f < WRITE_ROOM) {
            return Err(Error::DiskFull {
                dir: data_dir(&self.inner.dir),
                detail: format!(
                    "less than {} MiB free; the state store is not flushed until space returns",
                    WRITE_ROOM >> 20
                ),
            });
        }
        // Not under the lock: readers and a reopen must never wait on sled's flush.
        let db = self.with_db(|db| Ok(db.clone()))?;
        let typed = |what: &str, e: sled::Error| {
            if sled_disk_full(&e) {
                self.disk_full(what, &e)
            } else {
                sled_err(what, e)
            }
        };
        // A sled that failed a write refuses every later one, and its flush may then wait
        // forever: probe with a write (of a value it already has) before flushing.
        db.insert(K_FORMAT, &STATE_VERSION.to_be_bytes())
            .map_err(|e| typed("write", e))?;
        // sled 0.34's flush can also wait forever when a write fails while it runs (no
        // wake-up after the failed buffer): bound the wait. A flush that does not finish leaves
        // its thread waiting; the journal still holds every record.
        let (tx, rx) = std::sync::mpsc::channel();
        let flusher = db.clone();
        std::thread::Builder::new()
            .name("durq-state-flush".into())
            .spawn(move || {
                let _ = tx.send(flusher.flush().map(|_| ()));
            })
            .map_err(|e| Error::io("cannot start the state flush thread", e))?;
        match rx.recv_timeout(FLUSH_TIMEOUT) {
            Ok(r) => r.map_err(|e| typed("flush", e)),
            Err(_) => Err(Error::DiskFull {
                dir: data_dir(&self.inner.dir),
                detail: format!(
                    "the state store in {} did not finish a flush within {} s (a write failed)",
                    self.inner.dir.display(),
                    FLUSH_TIMEOUT.as_secs()
                ),
            }),
        }
    }
}

fn reserve_path(state_dir: &Path, i: usize) -> PathBuf {
    state_dir.with_extension(format!("reserve.{i}"))
}

fn take_one(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= RESERVE_BYTES) {
        return;
    }
    let ok = crate::perms::file_options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| {
            use std::os::fd::AsRawFd;
            // SAFETY: a valid open descriptor; fallocate only allocates blocks to it.
            let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, RESERVE_BYTES as i64) };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f.sync_all()
        });
    if ok.is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes one reserve file of `state_dir`; true if there was one.
fn release_one(state_dir: &Path) -> bool {
    for i in 0..RESERVES {
        let path = reserve_path(state_dir, i);
        if std::fs::remove_file(&path).is_ok() {
            tracing::warn!(file = %path.display(), bytes = RESERVE_BYTES, "disk full: released a space reserve so the state store can reopen");
            return true;
        }
    }
    false
}

/// How long an open waits for sled's own lock file. durq's lock (`DIR/lock`) already keeps
/// other processes out, so a busy sled lock is this process's previous store still winding
/// down (sled's background threads drop their handles a moment after the `Db`), or a child
/// forked while it was open that has not exec'ed yet.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_db(dir: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let start = std::time::Instant::now();
    loop {
        let opened = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open();
        match opened {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r.map_err(|e| sled_err(&format!("cannot open {}", dir.display()), e)),
        }
    }
}
