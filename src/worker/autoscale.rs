//! Autoscaling decisions with hysteresis, as a pure state machine over an injected clock.
//!
//! Backlog (more jobs waiting than workers, or the oldest waiting job older than `max_age`) must
//! last `up_after` before the pool grows (doubling, at most `max`); idleness (nothing waiting and
//! fewer than half the workers busy) must last `down_after` before it shrinks (halving, at least
//! `min` and at least the busy count). After any change nothing happens for `cooldown`. The up
//! and down conditions exclude each other and each needs to hold for a while, so a load that
//! hovers at a boundary does not flap the worker count.

use std::time::Duration;

pub use crate::pool_event::Decision;

/// Limits and timings of autoscaling.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscaleConfig {
    /// Fewest workers.
    pub min: usize,
    /// Most workers.
    pub max: usize,
    /// How long a backlog must last before growing (default 1 s).
    pub up_after: Duration,
    /// How long idleness must last before shrinking (default 10 s).
    pub down_after: Duration,
    /// Oldest-waiting age that counts as backlog (default 5 s).
    pub max_age: Duration,
    /// Quiet time after a change (default 2 s).
    pub cooldown: Duration,
}

impl AutoscaleConfig {
    /// Defaults with these bounds.
    pub fn new(min: usize, max: usize) -> Self {
        AutoscaleConfig {
            min,
            max,
            up_after: Duration::from_secs(1),
            down_after: Duration::from_secs(10),
            max_age: Duration::from_secs(5),
            cooldown: Duration::from_secs(2),
        }
    }
}

/// What the autoscaler looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Signals {
    /// Jobs waiting in the pool's queues.
    pub waiting: u64,
    /// Age of the oldest waiting job.
    pub oldest_waiting: Option<Duration>,
    /// Workers running a handler.
    pub busy: usize,
}

/// The autoscaler's memory.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    cfg: AutoscaleConfig,
    backlog_since: Option<Duration>,
    idle_since: Option<Duration>,
    last_change: Option<Duration>,
}

impl Autoscaler {
    /// A new autoscaler.
    pub fn new(cfg: AutoscaleConfig) -> Self {
        Autoscaler {
            cfg,
            backlog_since: None,
            idle_since: None,
            last_change: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AutoscaleConfig {
        &self.cfg
    }

    /// Looks at the signals at `now` with `current` workers; returns a change, if one is due.
    pub fn decide(&mut self, now: Duration, current: usize, s: Signals) -> Option<Decision> {
        let old = s.oldest_waiting.is_some_and(|a| a >= self.cfg.max_age);
        let backlog = s.waiting > current as u64 || old;
        let idle = s.waiting == 0 && s.busy * 2 < current;
        self.backlog_since = if backlog {
            self.backlog_since.or(Some(now))
        } else {
            None
        };
        self.idle_since = if idle {
            self.idle_since.or(Some(now))
        } else {
            None
        };
        if self
            .last_change
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.cooldown)
        {
            return None;
        }
        let held = |since: Option<Duration>, d: Duration| {
            since.is_some_and(|t| now.saturating_sub(t) >= d)
        };
        let (to, reason) = if current < self.cfg.min {
            (self.cfg.min, "below the minimum".to_string())
        } else if current > self.cfg.max {
            (self.cfg.max, "above the maximum".to_string())
        } else if held(self.backlog_since, self.cfg.up_after) && current < self.cfg.max {
            let to = (current * 2).max(current + 1).min(self.cfg.max);
            let why = if old {
                format!("oldest waiting job older than {:?}", self.cfg.max_age)
            } else {
                format!("{} jobs waiting for {} workers", s.waiting, current)
            };
            (to, why)
        } else if held(self.idle_since, self.cfg.down_after) && current > self.cfg.min {
            let to = (current / 2).max(s.busy).max(self.cfg.min);
            (
                to,
                format!("idle for {:?} ({} busy)", self.cfg.down_after, s.busy),
            )
        } else {
            return None;
        };
        if to == current {
            return None;
        }
        self.last_change = Some(now);
        self.backlog_since = None;
        self.idle_since = None;
        Some(Decision {
            from: current,
            to,
            reason,
        })
    }
}
