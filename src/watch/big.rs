//! Big files are hashed in the background, so one 1 GiB file does not delay the small files
//! settled with it.
//!
//! Invariants:
//! - A big file needing a hash is skipped by the settle that found it; its hash runs on the
//!   shared pool; when done, the path is handed back to the loop and settles again, taking the
//!   hash only if the file's stat is still exactly the one taken before hashing (else it is hashed
//!   again).
//! - At most one background hash per path runs at a time.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::watch::hash::{HashPool, Sha};
use crate::watch::record::Meta;
use crate::watch::settle::Item;

/// Files at least this big are hashed in the background during live watching.
pub const BIG_BYTES: u64 = 64 << 20;

type Done = (Meta, std::io::Result<(Sha, u64)>);

/// Background hashes, finished or running.
#[derive(Debug, Default)]
pub struct BigHashes {
    done: Mutex<HashMap<PathBuf, Done>>,
    running: Mutex<HashSet<PathBuf>>,
}

impl BigHashes {
    /// The finished hash of `path` if it was taken at exactly `meta`.
    pub fn take(&self, path: &Path, meta: &Meta) -> Option<std::io::Result<(Sha, u64)>> {
        let mut done = self.done.lock();
        match done.remove(path) {
            Some((m, r)) if m == *meta => Some(r),
            _ => None,
        }
    }

    /// Paths with a background hash running or finished but not yet settled.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.running.lock().iter().cloned().collect();
        v.extend(self.done.lock().keys().cloned());
        v
    }

    /// Starts hashing `item.path` (stat `meta`) unless a hash of it is already running; the item
    /// is sent on `back` when done.
    pub fn spawn(
        self: &Arc<Self>,
        pool: &HashPool,
        item: Item,
        meta: Meta,
        back: mpsc::UnboundedSender<Item>,
    ) {
        if !self.running.lock().insert(item.path.clone()) {
            return;
        }
        let (me, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            let mut r = pool.hash_all(vec![(item.path.clone(), meta.size)]).await;
            let res = r
                .pop()
                .unwrap_or_else(|| Err(std::io::Error::other("no hash result")));
            me.done.lock().insert(item.path.clone(), (meta, res));
            me.running.lock().remove(&item.path);
            let _ = back.send(item);
        });
    }
}
