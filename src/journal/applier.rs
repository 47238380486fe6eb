//! The applier: a thread that materialises written journal records into the state store.
//!
//! Invariants:
//! - Only records already written to the journal (synced under `always`) arrive here, in seq
//!   order; they are applied in that order, in groups, each group one atomic `apply_batch`
//!   together with `applied_seq` (sled's batch keeps the last write per key, so a job enqueued,
//!   reserved and acked within one group costs one write).
//! - `applied` is raised after each group; the engine serves reads of newer records from its
//!   `pending` map until then.
//! - Groups are applied at most every [`APPLY_EVERY`] (sooner when [`MAX_GROUP_BYTES`] are
//!   waiting, on a barrier, or at shutdown): every sled `apply_batch` ends with a synchronous
//!   write of sled's log buffer (`pwrite` + `sync_file_range(WAIT)`), which competes with the
//!   journal's fdatasync on the same disk, so fewer, larger batches keep it off the latency of
//!   writes (measured: one apply per write doubled the p50 of a single `always` enqueue).
//! - Memory is bounded: the writer's channel holds at most [`MAX_BEHIND`] write groups, and one
//!   apply takes at most [`MAX_GROUP_BYTES`] of records (sled's memory grows with batch size).
//! - **Disk full never stops the applier.** When sled cannot write (ENOSPC, EFBIG, EDQUOT),
//!   the [`Store`] holds the group's changes in memory, visible to every read, and the applier
//!   counts the group as applied (so barriers and the engine's `pending` move on). It then heals
//!   with backoff ([`HEAL_FIRST`] doubling to [`HEAL_MAX`]): write the held changes; if sled's
//!   error is sticky and the disk has room again, reopen sled, catch it up from the journal
//!   (records above what sled holds, up to what the overlay covers; a full rebuild from the base
//!   when sled fell behind it), then write the held changes. Nothing acknowledged depends on
//!   sled: the journal holds every record the applier ever saw.
//! - Any other apply error poisons the journal (writes refused until reopen; the journal still
//!   holds every record, and the state store is rebuilt from it on open).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::{Error, Result};
use crate::journal::format::{base_name, segment_name};
use crate::journal::manifest::Manifest;
use crate::journal::reader::scan_file;
use crate::journal::writer::Staged;
use crate::record::Op;
use crate::store::Store;

/// First wait before healing a store that holds changes (disk full).
pub const HEAL_FIRST: Duration = Duration::from_millis(100);

/// Longest wait between two heal attempts.
pub const HEAL_MAX: Duration = Duration::from_secs(2);

/// Free bytes wanted on the state store's file system, beyond twice the held bytes, before
/// sled is reopened (reopening on a still-full disk would only fail again).
pub const HEAL_ROOM: u64 = crate::store::WRITE_ROOM;

/// Write groups the writer may run ahead of the applier before it waits.
pub const MAX_BEHIND: usize = 64;

/// Encoded bytes of records applied in one sled batch (a single bigger record goes alone).
pub const MAX_GROUP_BYTES: usize = 8 << 20;

/// Shortest time between two applies while records keep coming.
pub const APPLY_EVERY: Duration = Duration::from_millis(10);

/// Messages to the applier.
pub enum ApplyMsg {
    /// Records written to the journal.
    Records(Vec<Staged>),
    /// Apply everything queued, then answer.
    Barrier(crossbeam_channel::Sender<()>),
}

/// Runs the applier loop until the channel closes.
pub fn run(
    store: Store,
    applied: Arc<AtomicU64>,
    rx: Receiver<ApplyMsg>,
    journal_dir: PathBuf,
    on_error: Box<dyn Fn(String) + Send>,
) {
    let mut failed = false;
    let mut last_apply = Instant::now() - APPLY_EVERY;
    let mut open = true;
    let mut heal_wait = HEAL_FIRST;
    let mut heal_at = store.is_holding().then(|| Instant::now() + heal_wait);
    while open {
        let first = match heal_at {
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    match heal(&store, &journal_dir) {
                        Ok(()) => {
                            tracing::info!(dir = %store.dir().display(), "the state store caught up after the disk had been full");
                            heal_at = None;
                            heal_wait = HEAL_FIRST;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "the state store still cannot write; retrying");
                            heal_wait = (heal_wait * 2).min(HEAL_MAX);
                            heal_at = Some(Instant::now() + heal_wait);
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        let mut group: Vec<Staged> = Vec::new();
        let mut bytes = 0;
        let mut barriers = Vec::new();
        let mut next = Some(first);
        // Collect until the interval since the last apply is over, enough bytes wait, or a
        // barrier asks for everything now.
        while let Some(msg) = next.take() {
            match msg {
                ApplyMsg::Records(r) => {
                    bytes += r.iter().map(|s| s.bytes.len()).sum::<usize>();
                    group.extend(r);
                }
                ApplyMsg::Barrier(tx) => barriers.push(tx),
            }
            if bytes >= MAX_GROUP_BYTES || !barriers.is_empty() {
                break;
            }
            let due = last_apply + APPLY_EVERY;
            next = match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            };
        }
        if !group.is_empty() && !failed {
            let last = group.last().map(|r| r.seq).unwrap_or(0);
            match store.apply(&group) {
                Ok(()) => {
                    applied.store(last, Ordering::Release);
                    if store.is_holding() && heal_at.is_none() {
                        heal_at = Some(Instant::now() + heal_wait);
                    }
                }
                Err(e) => {
                    failed = true;
                    on_error(format!("cannot apply records to the state store: {e}"));
                }
            }
            last_apply = Instant::now();
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
    if store.is_holding() {
        // Last chance before stopping; otherwise the next open replays them from the journal.
        if let Err(e) = heal(&store, &journal_dir) {
            tracing::warn!(error = %e, "stopping with state-store changes held in memory; the next open replays them from the journal");
        }
    }
}

/// Writes held changes to the state store, reopening sled and catching it up from the
/// journal when its error is sticky. `Ok` once nothing is held.
pub fn heal(store: &Store, journal_dir: &Path) -> Result<()> {
    let free = crate::store::free_bytes(store.dir()).unwrap_or(0);
    if free < 2 * store.held_bytes() as u64 + HEAL_ROOM {
        return Err(Error::DiskFull {
            dir: store.dir().parent().unwrap_or(store.dir()).to_path_buf(),
            detail: format!("{free} bytes free; waiting for more before writing the state store"),
        });
    }
    let first = match store.flush_held() {
        Ok(()) => {
            store.take_reserve();
            return Ok(());
        }
        Err(e) => e,
    };
    tracing::info!(dir = %store.dir().display(), error = %first, free, "reopening the state store to clear its write error");
    let upto = store.applied_seq()?;
    store.reopen_with(true, |fresh| catch_up(fresh, journal_dir, upto))?;
    store.take_reserve();
    Ok(())
}

/// Brings a freshly reopened store up to journal seq `upto`: replays the records above what it
/// holds, from the base when it fell behind it. Reads only records the applier has seen (so
/// complete, even in the segment being appended to) and never changes a journal file.
pub fn catch_up(store: &Store, dir: &Path, upto: u64) -> Result<()> {
    const CHUNK: usize = 2048;
    let manifest = Manifest::load(dir)?.ok_or_else(|| {
        Error::Backend(format!("no manifest in {} to catch up from", dir.display()))
    })?;
    let base_seq = manifest.base.map(|(_, s)| s).unwrap_or(0);
    let mut from = store.applied_seq()?;
    if from >= upto {
        return Ok(());
    }
    let decode = |path: &Path, body: &[u8]| {
        Op::decode(body).map_err(|e| Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!("a record with a valid checksum does not decode: {e}"),
        })
    };
    if from < base_seq {
        tracing::warn!(
            sled = from,
            base_seq,
            "the reopened state store is behind the journal's base; rebuilding it"
        );
        let (n, seq) = manifest.base.unwrap_or((0, 0));
        store.clear()?;
        let path = dir.join(base_name(n));
        let mut ops = Vec::new();
        scan_file(&path, Some(0), |_, body| {
            ops.push(decode(&path, body)?);
            if ops.len() >= CHUNK {
                store.apply_ops(&ops, 0)?;
                ops.clear();
            }
            Ok(())
        })?;
        store.apply_ops(&ops, seq)?;
        from = seq;
    }
    let mut reached = from;
    for seg in &manifest.segments {
        let path = dir.join(segment_name(seg.number));
        let mut ops = Vec::new();
        let mut last = 0;
        scan_file(&path, Some(seg.start_seq), |seq, body| {
            if seq > from && seq <= upto {
                ops.push(decode(&path, body)?);
                last = seq;
                if ops.len() >= CHUNK {
                    store.apply_ops(&ops, seq)?;
                    ops.clear();
                }
            }
            Ok(())
        })?;
        if !ops.is_empty() {
            store.apply_ops(&ops, last)?;
        }
        reached = reached.max(last);
    }
    if reached < upto {
        return Err(Error::Backend(format!(
            "the journal in {} ends at seq {reached}, before seq {upto} the state store needs",
            dir.display()
        )));
    }
    Ok(())
}
