//! The `notify` adapter: raw OS events translated into debouncer hints, first filtering.
//!
//! Invariants:
//! - Open, read and close-without-write events are dropped here, on notify's thread, before
//!   they reach any channel: durq's own hashing (and handlers reading files) trigger nothing.
//!   (notify 8.2 always asks the kernel for IN_OPEN; that cannot be turned off from outside.)
//! - The channel to the watcher loop is bounded; when it is full the event is dropped and the
//!   overflow flag is raised, which makes the loop run a reconcile scan: nothing is lost.
//! - notify's rescan flag (kernel IN_Q_OVERFLOW) raises the same flag.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
use parking_lot::{Condvar, Mutex};
use tokio::sync::{mpsc, Notify};

use crate::watch::debounce::Hint;

/// One translated event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Raw {
    /// Something happened to a path.
    Path(PathBuf, Hint),
    /// A rename inside the watched tree.
    Rename(PathBuf, PathBuf),
    /// A watch could not be added: `fs.inotify.max_user_watches` is exhausted.
    WatchLimit(String),
    /// Another error from the OS watcher.
    Error(String),
}

/// Translates one notify event (the rescan flag is handled by the caller).
pub fn translate(ev: notify::Result<notify::Event>) -> Vec<Raw> {
    let ev = match ev {
        Ok(ev) => ev,
        Err(e) => {
            return vec![match e.kind {
                notify::ErrorKind::MaxFilesWatch => Raw::WatchLimit(format!("{e:?}")),
                _ => Raw::Error(e.to_string()),
            }]
        }
    };
    let hint = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Hint::Closed,
        EventKind::Access(_) => return Vec::new(),
        EventKind::Modify(ModifyKind::Data(_)) => Hint::Writing,
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
            return vec![Raw::Rename(ev.paths[0].clone(), ev.paths[1].clone())];
        }
        _ => Hint::Changed,
    };
    ev.paths.into_iter().map(|p| Raw::Path(p, hint)).collect()
}

/// A test hook with two switches: while paused, notify's thread blocks in the handler (so the
/// kernel queue fills up and overflows, as with a stalled process); while the loop is held, the
/// watcher loop stops reading the internal channel (so it fills up, as with a slow loop).
#[derive(Debug, Default)]
pub struct EventGate {
    paused: Mutex<bool>,
    cv: Condvar,
    loop_held: AtomicBool,
    loop_wake: Notify,
}

impl EventGate {
    /// Blocks the event thread from now on.
    pub fn pause(&self) {
        *self.paused.lock() = true;
    }
    /// Lets it run again.
    pub fn resume(&self) {
        *self.paused.lock() = false;
        self.cv.notify_all();
    }
    /// Stops the watcher loop from reading the internal channel.
    pub fn hold_loop(&self) {
        self.loop_held.store(true, Ordering::SeqCst);
    }
    /// Lets the watcher loop read again.
    pub fn release_loop(&self) {
        self.loop_held.store(false, Ordering::SeqCst);
        self.loop_wake.notify_one();
    }
    pub(crate) fn loop_held(&self) -> bool {
        self.loop_held.load(Ordering::SeqCst)
    }
    pub(crate) async fn loop_released(&self) {
        while self.loop_held() {
            self.loop_wake.notified().await;
        }
    }
    fn wait(&self) {
        let mut g = self.paused.lock();
        while *g {
            self.cv.wait(&mut g);
        }
    }
}

/// The handler notify calls on its own thread.
pub struct Sink {
    /// Translated events to the watcher loop.
    pub tx: mpsc::Sender<Raw>,
    /// Raised on kernel overflow or a full channel.
    pub overflow: Arc<AtomicBool>,
    /// Wakes the loop when `overflow` is raised.
    pub wake: Arc<Notify>,
    /// Counts the events dropped on a full channel.
    pub counters: Arc<crate::watch::Counters>,
    /// Test hook.
    pub gate: Option<Arc<EventGate>>,
}

impl notify::EventHandler for Sink {
    fn handle_event(&mut self, ev: notify::Result<notify::Event>) {
        if let Some(g) = &self.gate {
            g.wait();
        }
        if matches!(&ev, Ok(e) if e.need_rescan()) {
            self.overflow.store(true, Ordering::SeqCst);
            self.wake.notify_one();
            return;
        }
        for raw in translate(ev) {
            match self.tx.try_send(raw) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.counters.add_dropped();
                    self.overflow.store(true, Ordering::SeqCst);
                    self.wake.notify_one();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}
