//! The applier: a thread that materialises written journal records into the state store.
//!
//! Invariants:
//! - Only records already written to the journal (synced under `always`) arrive here, in seq
//!   order; they are applied in that order, in groups, each group one atomic `apply_batch`
//!   together with `applied_seq` (sled's batch keeps the last write per key, so a job enqueued,
//!   reserved and acked within one group costs one write).
//! - `applied` is raised after each group; the engine serves reads of newer records from its
//!   `pending` map until then.
//! - An apply error poisons the journal (writes refused until reopen; the journal still holds
//!   every record, and the state store is rebuilt from it on open).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use crate::journal::writer::Staged;
use crate::store::Store;

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
    while let Ok(first) = rx.recv() {
        let mut group: Vec<Staged> = Vec::new();
        let mut barriers = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ApplyMsg::Records(r) => group.extend(r),
                ApplyMsg::Barrier(tx) => barriers.push(tx),
            }
            if group.len() >= 65_536 {
                break;
            }
            next = rx.try_recv().ok();
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
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}
