//! Settle: the one step that turns "something may have changed under these paths" into jobs.
//!
//! stat → compare with the record (size, mtime, ctime, inode; racy mtimes re-hashed) → stream
//! SHA-256 on the pool if needed → compare hashes → pair vanished and new files by inode + hash
//! as renames → enqueue → update the records. Live events, the start-up scan and rescans all call
//! [`Settler::settle`], so they agree by construction.
//!
//! Invariants:
//! - Same bytes as recorded → no job (touch, chmod, identical rewrite, delete + recreate).
//! - Records are updated only after the jobs are enqueued.
//! - A file whose stat moved while it was hashed is handed back to be held (within the max wait).
//! - A file that cannot be read gets a warning and an error count, no job and no record, so it is
//!   reported once it becomes readable.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::error::Result;
use crate::queue::Queue;
use crate::watch::big::{BigHashes, BIG_BYTES};
use crate::watch::hash::{hex, HashPool, Sha};
use crate::watch::ignore::Ignorer;
use crate::watch::job::{rfc3339, FileEvent, Kind};
use crate::watch::record::{now_ns, Meta, Record, Records};
use crate::watch::scan::walk;
use crate::watch::Counters;

/// A path to settle.
#[derive(Clone, Debug)]
pub struct Item {
    /// Absolute path (a file, a directory, or something gone).
    pub path: PathBuf,
    /// False when reported because of the max wait.
    pub stable: bool,
    /// Start of its burst.
    pub first: Instant,
}

/// Owner of the records; settles batches of paths.
pub struct Settler {
    pub(crate) queue: Queue,
    pub(crate) queue_name: String,
    pub(crate) roots: Vec<PathBuf>,
    pub(crate) records: Records,
    pub(crate) ignore: Arc<RwLock<Ignorer>>,
    pub(crate) pool: HashPool,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_wait: std::time::Duration,
    pub(crate) debounce: std::time::Duration,
    /// False on the final settle at stop: nothing is held any more.
    pub(crate) holding: bool,
    /// Live watching (not the start-up scan, not the final settle at stop): big files are hashed
    /// in the background and files changed within the debounce window are held.
    pub(crate) live: bool,
    pub(crate) big: Arc<BigHashes>,
    /// Batch mode: the changes reported also join the stored open batch.
    pub(crate) batching: bool,
    /// Paths to settle again (held, or big hashes done), back to the loop.
    pub(crate) back: tokio::sync::mpsc::UnboundedSender<Item>,
}

/// What one settle produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The changes reported (jobs enqueued).
    pub changes: Vec<FileEvent>,
    /// Paths still moving, to hold again.
    pub held: Vec<Item>,
}

struct Fresh {
    path: PathBuf,
    meta: Meta,
    sha: Sha,
    stable: bool,
}

impl Settler {
    fn root_of(&self, p: &Path) -> Option<&PathBuf> {
        self.roots
            .iter()
            .filter(|r| p.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
    }

    fn rel(&self, p: &Path) -> (String, String) {
        match self.root_of(p) {
            Some(r) => (
                p.strip_prefix(r)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned(),
                r.to_string_lossy().into_owned(),
            ),
            None => (p.to_string_lossy().into_owned(), String::new()),
        }
    }

    fn warn_unreadable(&self, p: &Path, e: &std::io::Error) {
        self.counters.add_error();
        tracing::warn!(
            "cannot read {}: {e}; it will be reported once it is readable",
            p.display()
        );
    }

    /// Settles `items`: reports what changed under each path and updates the records.
    pub async fn settle(&mut self, items: Vec<Item>) -> Result<Outcome> {
        let mut out = Outcome::default();
        // 1. The disk side: files present under each path; recorded files no longer there.
        let mut files: BTreeMap<PathBuf, (Meta, Item)> = BTreeMap::new();
        let mut gone: BTreeMap<PathBuf, bool> = BTreeMap::new();
        for it in items {
            if self.root_of(&it.path).is_none() {
                continue;
            }
            if it.path.file_name().is_some_and(|n| n == ".gitignore") {
                if let Some(d) = it.path.parent() {
                    self.ignore.write().reload(d);
                }
            }
            let mut blocked: Vec<PathBuf> = Vec::new();
            match std::fs::symlink_metadata(&it.path) {
                Ok(m) if m.is_file() => {
                    if !self.ignore.read().is_ignored(&it.path, false) {
                        files.insert(it.path.clone(), (Meta::of(&m), it.clone()));
                    }
                }
                Ok(m) if m.is_dir() => {
                    if !self.ignore.read().is_ignored(&it.path, true) {
                        let w = walk(&it.path, &mut self.ignore.write());
                        for (p, e) in w.unreadable {
                            self.warn_unreadable(&p, &e);
                            blocked.push(p);
                        }
                        for (p, meta) in w.files {
                            files.insert(p, (meta, it.clone()));
                        }
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.warn_unreadable(&it.path, &e);
                    continue;
                }
            }
            for p in self.records.under(&it.path) {
                if files.contains_key(&p) || blocked.iter().any(|b| p.starts_with(b)) {
                    continue;
                }
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_file() => {} // present but ignored now, or outside this walk
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {}
                    _ => {
                        if !self.ignore.read().is_ignored(&p, false) {
                            gone.insert(p, it.stable);
                        }
                    }
                }
            }
        }
        // Files changed within the last debounce window are not quiet yet (found by a directory
        // walk before their own events arrived, or events were lost): hold them.
        if self.live {
            let now = now_ns();
            let window = self.debounce.as_nanos() as i128;
            files.retain(|p, (meta, it)| {
                // ctime, not mtime: the kernel sets it, so it is never in the future.
                let recent = now - meta.ctime_ns < window;
                if recent && it.first.elapsed() < self.max_wait {
                    out.held.push(Item {
                        path: p.clone(),
                        stable: it.stable,
                        first: it.first,
                    });
                    false
                } else {
                    true
                }
            });
        }
        // 2. Hash what the stat cannot vouch for.
        let mut to_hash = Vec::new();
        let mut ready = Vec::new();
        for (p, (meta, it)) in &files {
            match self.records.get(p) {
                Some(r) if r.trusts(meta) => {}
                _ => {
                    if let Some(r) = self.big.take(p, meta) {
                        ready.push(((p.clone(), meta.size), r));
                    } else if self.live && meta.size >= BIG_BYTES {
                        self.big
                            .spawn(&self.pool, it.clone(), *meta, self.back.clone());
                    } else {
                        to_hash.push((p.clone(), meta.size));
                    }
                }
            }
        }
        let hashed = self.pool.hash_all(to_hash.clone()).await;
        let to_hash: Vec<_> = to_hash.into_iter().zip(hashed).chain(ready).collect();
        let mut fresh: Vec<Fresh> = Vec::new();
        let mut silent: Vec<(PathBuf, Option<Record>)> = Vec::new();
        let taken = now_ns();
        for ((p, _), res) in to_hash {
            let Some((meta, it)) = files.get(&p) else {
                continue;
            };
            let (sha, n) = match res {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.records.get(&p).is_some() {
                        gone.insert(p.clone(), it.stable);
                    }
                    continue;
                }
                Err(e) => {
                    self.warn_unreadable(&p, &e);
                    continue;
                }
            };
            self.counters.add_hashed(n);
            let after = std::fs::symlink_metadata(&p).map(|m| Meta::of(&m)).ok();
            let moved = after.as_ref() != Some(meta) || n != meta.size;
            if moved && self.holding && it.first.elapsed() < self.max_wait {
                out.held.push(Item {
                    path: p.clone(),
                    stable: it.stable,
                    first: it.first,
                });
                continue;
            }
            let stable = it.stable && !moved;
            match self.records.get(&p) {
                Some(r) if r.sha == sha => {
                    let rec = Record {
                        meta: *meta,
                        sha,
                        taken_ns: taken,
                        gen: r.gen,
                    };
                    if *r != rec {
                        silent.push((p.clone(), Some(rec)));
                    }
                }
                _ => fresh.push(Fresh {
                    path: p.clone(),
                    meta: *meta,
                    sha,
                    stable,
                }),
            }
        }
        // 3. Pair vanished records with new files by (device, inode, hash): renames.
        let mut by_id: HashMap<(u64, u64, Sha), PathBuf> = HashMap::new();
        for p in gone.keys() {
            if let Some(r) = self.records.get(p) {
                by_id.insert((r.meta.dev, r.meta.ino, r.sha), p.clone());
            }
        }
        let mut updates = silent;
        let mut claimed: std::collections::HashSet<PathBuf> = Default::default();
        for f in fresh {
            let (rel, root) = self.rel(&f.path);
            let prev = self.records.get(&f.path).cloned();
            let from = if prev.is_none() {
                by_id.remove(&(f.meta.dev, f.meta.ino, f.sha)).or_else(|| {
                    self.moved_away(&f, &files)
                        .filter(|p| claimed.insert(p.clone()))
                })
            } else {
                None
            };
            let (kind, from_rec) = match (&prev, &from) {
                (Some(_), _) => (Kind::Modified, None),
                (None, Some(fp)) => (Kind::Renamed, self.records.get(fp).cloned()),
                (None, None) => (Kind::Created, None),
            };
            let base = prev.as_ref().or(from_rec.as_ref());
            let gen = base.map_or(0, |r| r.gen) + 1;
            out.changes.push(FileEvent {
                path: rel,
                root,
                kind,
                from: from.as_ref().map(|fp| self.rel(fp).0),
                size: Some(f.meta.size),
                sha256: Some(hex(&f.sha)),
                prev_sha256: base.map(|r| hex(&r.sha)),
                mtime: Some(rfc3339(f.meta.mtime_ns)),
                stable: f.stable,
                gen,
            });
            if let Some(fp) = from {
                gone.remove(&fp);
                updates.push((fp, None));
            }
            updates.push((
                f.path,
                Some(Record {
                    meta: f.meta,
                    sha: f.sha,
                    taken_ns: taken,
                    gen,
                }),
            ));
        }
        for (p, stable) in gone {
            let Some(r) = self.records.get(&p) else {
                continue;
            };
            let (rel, root) = self.rel(&p);
            out.changes.push(FileEvent {
                path: rel,
                root,
                kind: Kind::Deleted,
                from: None,
                size: None,
                sha256: None,
                prev_sha256: Some(hex(&r.sha)),
                mtime: None,
                stable,
                gen: r.gen + 1,
            });
            updates.push((p, None));
        }
        // 4. Enqueue, then record.
        self.enqueue(&out.changes).await?;
        let open_batch: &[FileEvent] = if self.batching { &out.changes } else { &[] };
        self.records.apply(updates, open_batch).await?;
        self.counters.add_settled(out.changes.len() as u64);
        Ok(out)
    }

    /// The recorded path `f` was renamed from when that end was not part of this settle: same
    /// device, inode and hash, and no file there any more.
    fn moved_away(&self, f: &Fresh, files: &BTreeMap<PathBuf, (Meta, Item)>) -> Option<PathBuf> {
        let p = self.records.by_inode(f.meta.dev, f.meta.ino)?;
        let r = self.records.get(p)?;
        let gone = matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        (p != &f.path && r.sha == f.sha && gone && !files.contains_key(p)).then(|| p.clone())
    }

    async fn enqueue(&self, changes: &[FileEvent]) -> Result<()> {
        for chunk in changes.chunks(512) {
            let jobs = chunk
                .iter()
                .map(|c| c.job(&self.queue_name))
                .collect::<Result<Vec<_>>>()?;
            let res = self.queue.enqueue_batch(jobs).await?;
            self.counters
                .add_enqueued(res.iter().filter(|e| !e.duplicate).count() as u64);
        }
        Ok(())
    }

    /// Enqueues one `batch_process` job.
    /// Enqueues one `batch_process` job, then drops its changes from the stored open batch.
    pub async fn enqueue_batch_job(&mut self, changes: &[FileEvent]) -> Result<()> {
        let job = crate::watch::job::batch_job(&self.queue_name, changes)?;
        if !self.queue.enqueue(job).await?.duplicate {
            self.counters.add_enqueued(1);
        }
        self.records.batched(changes).await
    }
}
