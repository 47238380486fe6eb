//! The persisted record of each watched file: the truth that OS events are only hints about.
//!
//! Invariants:
//! - A record is written only after the job reporting its change was enqueued (a crash in
//!   between re-reports the change on restart, and the job's dedup key drops the duplicate).
//! - Records live in their own small sled database under the watcher's state directory (the
//!   core's database belongs to the core), keyed by the file's absolute path.
//! - `gen` counts reported changes of the path; it makes dedup keys of A→B→A→B distinct.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::watch::hash::Sha;
use crate::watch::job::FileEvent;

/// How close (ns) an mtime may be to the time its record was taken before it is not trusted.
pub const RACY_NS: i128 = 2_000_000_000;

/// What a stat says about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i128,
    /// Status change time, ns since the epoch.
    pub ctime_ns: i128,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl Meta {
    /// From `std` metadata (of an lstat).
    pub fn of(m: &std::fs::Metadata) -> Meta {
        Meta {
            size: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// The record of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Its stat when recorded.
    pub meta: Meta,
    /// Its content hash.
    pub sha: Sha,
    /// Wall time (ns since the epoch) at which the stat was taken.
    pub taken_ns: i128,
    /// Number of changes reported for this path.
    pub gen: u64,
}

impl Record {
    /// True when `now` (a fresh stat) proves the content unchanged without hashing: every field
    /// equal, and the last change (mtime, or ctime if later) was old enough when the record was
    /// taken to not be racy (a write in the same timestamp tick would leave the stat unchanged).
    pub fn trusts(&self, now: &Meta) -> bool {
        let changed = self.meta.mtime_ns.max(self.meta.ctime_ns);
        self.meta == *now && self.taken_ns - changed > RACY_NS
    }
}

/// Wall time in ns since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Key prefix of the stored open batch (paths are absolute, so no record key starts with NUL).
const PENDING: &[u8] = b"\0pending\0";

fn pending_key(ev: &FileEvent) -> Vec<u8> {
    let mut k = PENDING.to_vec();
    k.extend_from_slice(ev.dedup_key().as_bytes());
    k
}

/// A change of the open batch as stored.
#[derive(Serialize, Deserialize)]
struct Pending {
    ev: FileEvent,
    gen: u64,
}

/// Records in memory, backed by a sled tree.
pub struct Records {
    db: sled::Db,
    /// Changes of the open batch restored at open (batch mode), not yet in a batch job.
    restored: Vec<FileEvent>,
    map: BTreeMap<PathBuf, Record>,
    /// (device, inode) → path, to pair a rename whose two ends settle apart.
    by_inode: HashMap<(u64, u64), PathBuf>,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

fn db_err(dir: &Path, e: sled::Error) -> Error {
    Error::io(
        format!("watch records in {}", dir.display()),
        std::io::Error::other(e.to_string()),
    )
}

impl Records {
    /// Opens (creating) the records under `state_dir` and loads those below `roots`.
    pub fn open(state_dir: &Path, roots: &[PathBuf]) -> Result<Records> {
        crate::perms::private_dir(state_dir)?;
        let path = state_dir.join("records");
        crate::perms::private_dir(&path)?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| db_err(&path, e))?;
        crate::perms::restrict_tree(&path);
        let mut map = BTreeMap::new();
        for root in roots {
            for kv in db.scan_prefix(root.as_os_str().as_bytes()) {
                let (k, v) = kv.map_err(|e| db_err(&path, e))?;
                let p = PathBuf::from(std::ffi::OsStr::from_bytes(&k));
                if !p.starts_with(root) {
                    continue;
                }
                match serde_json::from_slice::<Record>(&v) {
                    Ok(r) => {
                        map.insert(p, r);
                    }
                    Err(e) => {
                        tracing::warn!("dropping unreadable watch record of {}: {e}", p.display())
                    }
                }
            }
        }
        let by_inode = map
            .iter()
            .map(|(p, r)| ((r.meta.dev, r.meta.ino), p.clone()))
            .collect();
        let mut restored = Vec::new();
        let roots_s: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        for kv in db.scan_prefix(PENDING) {
            let (_, v) = kv.map_err(|e| db_err(&path, e))?;
            match serde_json::from_slice::<Pending>(&v) {
                Ok(p) if roots_s.contains(&p.ev.root) => {
                    let mut ev = p.ev;
                    ev.gen = p.gen;
                    restored.push(ev);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("dropping an unreadable pending batch change: {e}"),
            }
        }
        Ok(Records {
            db,
            restored,
            map,
            by_inode,
        })
    }

    /// The recorded path with this device and inode.
    pub fn by_inode(&self, dev: u64, ino: u64) -> Option<&PathBuf> {
        self.by_inode.get(&(dev, ino))
    }

    fn unindex(&mut self, p: &Path) {
        if let Some(old) = self.map.get(p) {
            let id = (old.meta.dev, old.meta.ino);
            if self.by_inode.get(&id).is_some_and(|q| q == p) {
                self.by_inode.remove(&id);
            }
        }
    }

    /// The record of `path`.
    pub fn get(&self, path: &Path) -> Option<&Record> {
        self.map.get(path)
    }

    /// Records of `dir` itself and of every path below it.
    pub fn under(&self, dir: &Path) -> Vec<PathBuf> {
        self.map
            .range(dir.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Number of records in memory.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no record is loaded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The open batch's changes found at open (batch mode), once.
    pub fn take_restored(&mut self) -> Vec<FileEvent> {
        std::mem::take(&mut self.restored)
    }

    /// Drops changes from the stored open batch: their `batch_process` job is enqueued.
    pub async fn batched(&mut self, changes: &[FileEvent]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for c in changes {
            batch.remove(pending_key(c));
        }
        let here = PathBuf::from("watch records");
        self.db.apply_batch(batch).map_err(|e| db_err(&here, e))?;
        self.db.flush_async().await.map_err(|e| db_err(&here, e))?;
        Ok(())
    }

    /// Applies puts (`Some`) and removals (`None`) in memory and in one sled batch, together
    /// with `open_batch` (changes joining the open batch, batch mode), then flushes.
    pub async fn apply(
        &mut self,
        changes: Vec<(PathBuf, Option<Record>)>,
        open_batch: &[FileEvent],
    ) -> Result<()> {
        if changes.is_empty() && open_batch.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for ev in open_batch {
            let v = serde_json::to_vec(&Pending {
                ev: ev.clone(),
                gen: ev.gen,
            })
            .map_err(|e| Error::Backend(format!("encoding a pending batch change: {e}")))?;
            batch.insert(pending_key(ev), v);
        }
        for (p, r) in changes {
            let k = p.as_os_str().as_bytes().to_vec();
            match r {
                Some(r) => {
                    let v = serde_json::to_vec(&r)
                        .map_err(|e| Error::Backend(format!("encoding a watch record: {e}")))?;
                    batch.insert(k, v);
                    self.unindex(&p);
                    self.by_inode.insert((r.meta.dev, r.meta.ino), p.clone());
                    self.map.insert(p, r);
                }
                None => {
                    batch.remove(k);
                    self.unindex(&p);
                    self.map.remove(&p);
                }
            }
        }
        let here = PathBuf::from("watch records");
        self.db.apply_batch(batch).map_err(|e| db_err(&here, e))?;
        self.db.flush_async().await.map_err(|e| db_err(&here, e))?;
        Ok(())
    }
}
