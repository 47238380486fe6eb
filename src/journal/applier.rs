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
//! - An apply error poisons the journal (writes refused until reopen; the journal still holds
//!   every record, and the state store is rebuilt from it on open).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::journal::writer::Staged;
use crate::store::Store;

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
    on_error: Box<dyn Fn(String) + Send>,
) {
    let mut failed = false;
    let mut last_apply = Instant::now() - APPLY_EVERY;
    let mut open = true;
    while open {
        let Ok(first) = rx.recv() else { break };
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
                Ok(()) => applied.store(last, Ordering::Release),
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
}
