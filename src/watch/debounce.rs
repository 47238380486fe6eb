//! The per-path trailing debouncer: a pure state machine over an injected clock.
//!
//! Invariants:
//! - Every path that received an event is reported by [`Debouncer::poll`] exactly once per burst,
//!   either `debounce` after its last event (`stable: true`) or `max_wait` after the burst's first
//!   event (`stable: false`), whichever comes first.
//! - A path whose writer has not closed it yet (a data modification without a later close-write)
//!   is held until the max wait; only that max-wait report carries `stable: false`.
//! - The two ends of a rename are reported in the same poll, so the settle step can pair them.
//! - No I/O and no clock reads happen here: `now` is always a parameter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What an OS event says about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint {
    /// Something changed (created, removed, metadata, renamed); no writer is known to be open.
    Changed,
    /// The file's data was modified: a writer has it open until a close-write is seen.
    Writing,
    /// A writer closed the file.
    Closed,
}

/// A path whose burst is over (or hit the max wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The path.
    pub path: PathBuf,
    /// False when reported because of the max wait.
    pub stable: bool,
    /// When the burst began (kept if the settle step holds the path again).
    pub first: Instant,
}

#[derive(Clone, Debug)]
struct Entry {
    first: Instant,
    last: Instant,
    writing: bool,
    partner: Option<PathBuf>,
}

/// Per-path trailing debounce with a max wait.
#[derive(Debug)]
pub struct Debouncer {
    debounce: Duration,
    max_wait: Duration,
    entries: HashMap<PathBuf, Entry>,
    /// A lower bound of the earliest due time (exact right after a poll), so polls and deadline
    /// queries during a storm of thousands of pending paths are O(1) until something may be due.
    lb: Option<Instant>,
}

impl Debouncer {
    /// A debouncer reporting `debounce` after the last event, at the latest `max_wait` after the
    /// first.
    pub fn new(debounce: Duration, max_wait: Duration) -> Self {
        Debouncer {
            debounce,
            max_wait: max_wait.max(debounce),
            entries: HashMap::new(),
            lb: None,
        }
    }

    /// Records an event on `path` at `now`.
    pub fn event(&mut self, path: PathBuf, hint: Hint, now: Instant) {
        let e = self.entries.entry(path).or_insert(Entry {
            first: now,
            last: now,
            writing: false,
            partner: None,
        });
        e.last = now;
        match hint {
            Hint::Writing => e.writing = true,
            Hint::Closed => e.writing = false,
            Hint::Changed => {}
        }
        let e = e.clone();
        self.lower(&e);
    }

    fn lower(&mut self, e: &Entry) {
        let at = self.due_at(e).0;
        self.lb = Some(self.lb.map_or(at, |lb| lb.min(at)));
    }

    /// Records a rename from `from` to `to`: both ends are reported together.
    pub fn rename(&mut self, from: PathBuf, to: PathBuf, now: Instant) {
        self.event(from.clone(), Hint::Changed, now);
        self.event(to.clone(), Hint::Changed, now);
        if let Some(e) = self.entries.get_mut(&from) {
            e.partner = Some(to.clone());
        }
        if let Some(e) = self.entries.get_mut(&to) {
            e.partner = Some(from);
        }
    }

    /// Holds `path` again (its size was still moving when settled), keeping the burst's start.
    pub fn hold(&mut self, path: PathBuf, first: Instant, now: Instant) {
        let e = self.entries.entry(path).or_insert(Entry {
            first,
            last: now,
            writing: false,
            partner: None,
        });
        e.first = e.first.min(first);
        e.last = now;
        let e = e.clone();
        self.lower(&e);
    }

    fn due_at(&self, e: &Entry) -> (Instant, bool) {
        let max = e.first + self.max_wait;
        if e.writing {
            return (max, false);
        }
        let quiet = e.last + self.debounce;
        if quiet <= max {
            (quiet, true)
        } else {
            (max, false)
        }
    }

    /// Removes and returns every path due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Due> {
        if self.lb.is_none_or(|lb| lb > now) {
            return Vec::new();
        }
        let mut due: Vec<Due> = Vec::new();
        for (p, e) in &self.entries {
            let (at, stable) = self.due_at(e);
            if at <= now {
                due.push(Due {
                    path: p.clone(),
                    stable,
                    first: e.first,
                });
            }
        }
        // Pull the other end of a rename forward so both settle together.
        let mut extra = Vec::new();
        for d in &due {
            if let Some(partner) = self.entries.get(&d.path).and_then(|e| e.partner.clone()) {
                if let Some(pe) = self.entries.get(&partner) {
                    if !due.iter().any(|x| x.path == partner)
                        && !extra.iter().any(|x: &Due| x.path == partner)
                    {
                        extra.push(Due {
                            path: partner,
                            stable: !pe.writing,
                            first: pe.first,
                        });
                    }
                }
            }
        }
        due.extend(extra);
        for d in &due {
            self.entries.remove(&d.path);
        }
        self.lb = self.entries.values().map(|e| self.due_at(e).0).min();
        due.sort_by(|a, b| a.path.cmp(&b.path));
        due
    }

    /// Removes and returns every pending path (shutdown). Paths still open for writing or not yet
    /// quiet at `now` are flagged `stable: false`.
    pub fn flush(&mut self, now: Instant) -> Vec<Due> {
        let mut out: Vec<Due> = self
            .entries
            .drain()
            .map(|(path, e)| Due {
                stable: !e.writing && e.last + self.debounce <= now,
                path,
                first: e.first,
            })
            .collect();
        self.lb = None;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// When to poll next: a lower bound of the earliest due time (polling earlier is harmless;
    /// it is exact after a poll and when no pending deadline moved later since).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lb
    }

    /// How many paths are pending.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }
}
