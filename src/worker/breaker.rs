//! A circuit breaker per job kind, as a pure state machine over an injected clock.
//!
//! Closed → Open when, within `window`, at least `failures` attempts failed, or at least
//! `min_calls` attempts ran and the failure fraction reached `failure_rate`. Open → HalfOpen once
//! `cooldown` has passed; HalfOpen lets exactly one probe run: success closes the breaker (and
//! forgets the window), failure opens it again for another cooldown.
//!
//! Time is a [`Duration`] since any fixed origin (the pool uses its start instant), so tests can
//! drive it from a table without sleeping. What counts as a failure is the caller's choice: the
//! pool counts `Retry` outcomes and panics, not `GiveUp` (a bad payload says nothing about the
//! service) nor `RetryAfter` (a rate limit is not an outage).

use std::collections::VecDeque;
use std::time::Duration;

pub use crate::pool_event::BreakerState;

/// When a breaker opens and how long it stays open.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker (default 5).
    pub failures: u32,
    /// The sliding window (default 10 s).
    pub window: Duration,
    /// Failure fraction within `window` that opens the breaker (default 0.5), once at least
    /// `min_calls` attempts ran in it.
    pub failure_rate: f64,
    /// Attempts needed in the window before `failure_rate` applies (default 20).
    pub min_calls: u32,
    /// How long the breaker stays open before a probe (default 30 s).
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            window: Duration::from_secs(10),
            failure_rate: 0.5,
            min_calls: 20,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Checks the values; says what is wrong.
    pub fn validate(&self) -> crate::Result<()> {
        if self.failures == 0 || self.window.is_zero() || self.cooldown.is_zero() {
            return Err(crate::Error::invalid(
                "breaker failures, window and cooldown must all be greater than zero",
            ));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(crate::Error::invalid(format!(
                "breaker failure rate {} is not valid; use a fraction above 0 and at most 1",
                self.failure_rate
            )));
        }
        Ok(())
    }
}

/// A change of state: (from, to).
pub type Transition = (BreakerState, BreakerState);

/// One breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    calls: VecDeque<(Duration, bool)>,
    opened_at: Duration,
    probe_in_flight: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breaker {
            cfg,
            state: BreakerState::Closed,
            calls: VecDeque::new(),
            opened_at: Duration::ZERO,
            probe_in_flight: false,
        }
    }

    /// The current state (after [`Breaker::poll`]).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Moves Open → HalfOpen when the cooldown has passed.
    pub fn poll(&mut self, now: Duration) -> Option<Transition> {
        if self.state == BreakerState::Open && now >= self.opened_at + self.cfg.cooldown {
            self.state = BreakerState::HalfOpen;
            self.probe_in_flight = false;
            return Some((BreakerState::Open, BreakerState::HalfOpen));
        }
        None
    }

    /// Whether a job of this kind may be reserved now.
    pub fn allows(&mut self, now: Duration) -> bool {
        self.poll(now);
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !self.probe_in_flight,
        }
    }

    /// A job of this kind was reserved: returns false if it must not run (give it back).
    /// In HalfOpen the first start becomes the probe.
    pub fn on_start(&mut self, now: Duration) -> bool {
        if !self.allows(now) {
            return false;
        }
        if self.state == BreakerState::HalfOpen {
            self.probe_in_flight = true;
        }
        true
    }

    /// A started job was given back without a result (shutdown, rate limit).
    pub fn on_abandon(&mut self) {
        self.probe_in_flight = false;
    }

    /// Records an attempt's result; returns the transition it caused, if any.
    pub fn record(&mut self, now: Duration, success: bool) -> Option<Transition> {
        match self.state {
            BreakerState::HalfOpen => {
                self.probe_in_flight = false;
                if success {
                    self.calls.clear();
                    self.state = BreakerState::Closed;
                    Some((BreakerState::HalfOpen, BreakerState::Closed))
                } else {
                    self.open(now);
                    Some((BreakerState::HalfOpen, BreakerState::Open))
                }
            }
            // Results of jobs started before the breaker opened change nothing.
            BreakerState::Open => None,
            BreakerState::Closed => {
                self.calls.push_back((now, success));
                while let Some(&(t, _)) = self.calls.front() {
                    if now.saturating_sub(t) >= self.cfg.window {
                        self.calls.pop_front();
                    } else {
                        break;
                    }
                }
                let total = self.calls.len() as u32;
                let failed = self.calls.iter().filter(|(_, ok)| !ok).count() as u32;
                let by_count = failed >= self.cfg.failures;
                let by_rate = total >= self.cfg.min_calls.max(1)
                    && f64::from(failed) / f64::from(total) >= self.cfg.failure_rate;
                if !success && (by_count || by_rate) {
                    self.open(now);
                    Some((BreakerState::Closed, BreakerState::Open))
                } else {
                    None
                }
            }
        }
    }

    fn open(&mut self, now: Duration) {
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.calls.clear();
    }
}
