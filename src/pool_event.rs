//! What a worker pool reports, as plain data below both the pool ([`crate::worker`]) and the
//! metrics ([`crate::metrics`]): breaker states, scale decisions and [`PoolEvent`]s. The pool
//! produces them; the metrics only read them, so `metrics` never depends on `worker`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of one breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Jobs flow.
    Closed,
    /// Jobs of the kind are not reserved (they wait; no retry budget is burned).
    Open,
    /// One probe may run.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
    /// 0 closed, 1 half-open, 2 open (the Prometheus gauge value).
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scale decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Workers before.
    pub from: usize,
    /// Workers after.
    pub to: usize,
    /// Why, in words.
    pub reason: String,
}

/// Something the pool did, sent to [`crate::worker::Pool::subscribe`] subscribers (and to the metrics).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PoolEvent {
    /// A kind's circuit breaker changed state.
    BreakerChanged {
        /// The job kind.
        kind: String,
        /// Old state.
        from: BreakerState,
        /// New state.
        to: BreakerState,
    },
    /// The autoscaler changed the worker count.
    Scaled(Decision),
    /// A worker was replaced (after a handler panic, or after the worker itself died).
    WorkerRestarted {
        /// Why.
        reason: String,
    },
}
