//! Alert rules: a threshold on one measure, a hold time, raised once per crossing and cleared
//! when the measure is back at or under the threshold. A pure state machine over an injected
//! clock; the metrics feed it values and turn its changes into events and `tracing::warn!`.

use std::time::Duration;

use serde::Serialize;

use super::{Metrics, Notice};
use crate::pool_event::BreakerState;
use crate::stats::Stats;

/// What a rule measures.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "measure", rename_all = "snake_case")]
pub enum AlertMeasure {
    /// Waiting + delayed jobs of a queue (all queues if `None`).
    Depth {
        /// Queue.
        queue: Option<String>,
    },
    /// Failed attempts / attempts over the success window, all kinds (0.0–1.0).
    FailureRate,
    /// Growth of the dead-letter count over `window`.
    DeadGrowth {
        /// The window.
        #[serde(with = "secs")]
        window: Duration,
    },
    /// Age in seconds of the oldest waiting job (any queue).
    OldestWaiting,
    /// Number of kinds whose circuit breaker is open.
    BreakerOpen,
}

/// A threshold rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertRule {
    /// Name (a label in the Prometheus output; `[a-zA-Z0-9_]` recommended).
    pub name: String,
    /// What is measured.
    pub measure: AlertMeasure,
    /// Raised when the measure stays above this.
    pub threshold: f64,
    /// ...for this long.
    #[serde(with = "secs")]
    pub hold: Duration,
}

mod secs {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// A rule's state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    /// The measure stayed above the threshold for the hold time.
    Raised,
    /// The measure is back at or under the threshold.
    Cleared,
}

/// One rule with its state.
#[derive(Clone, Debug)]
pub struct AlertTracker {
    rule: AlertRule,
    above_since: Option<Duration>,
    firing: bool,
}

impl AlertTracker {
    /// A tracker in the normal state.
    pub fn new(rule: AlertRule) -> Self {
        AlertTracker {
            rule,
            above_since: None,
            firing: false,
        }
    }

    /// The rule.
    pub fn rule(&self) -> &AlertRule {
        &self.rule
    }

    /// Whether the alert is raised.
    pub fn firing(&self) -> bool {
        self.firing
    }

    /// Feeds the measure's value at `now`; returns a change, if any.
    pub fn step(&mut self, now: Duration, value: f64) -> Option<AlertChange> {
        if value > self.rule.threshold {
            let since = *self.above_since.get_or_insert(now);
            if !self.firing && now.saturating_sub(since) >= self.rule.hold {
                self.firing = true;
                return Some(AlertChange::Raised);
            }
            None
        } else {
            self.above_since = None;
            if self.firing {
                self.firing = false;
                return Some(AlertChange::Cleared);
            }
            None
        }
    }
}

impl Metrics {
    /// Evaluates the alert rules against `stats` now; raised and cleared alerts become notices
    /// and warnings. Returns the changes.
    pub fn evaluate_alerts(&self, stats: &Stats) -> Vec<(String, AlertChange)> {
        self.evaluate_alerts_at(stats, self.now())
    }

    /// As [`Metrics::evaluate_alerts`] at `now` (tests).
    pub fn evaluate_alerts_at(&self, stats: &Stats, now: Duration) -> Vec<(String, AlertChange)> {
        let mut out = Vec::new();
        let mut notices = Vec::new();
        {
            let mut st = self.state.lock();
            let dead_now = stats.totals.dead;
            st.dead_history.push_back((now, dead_now));
            let longest = st
                .alerts
                .iter()
                .filter_map(|a| match &a.rule().measure {
                    AlertMeasure::DeadGrowth { window } => Some(*window),
                    _ => None,
                })
                .max()
                .unwrap_or_default();
            while st.dead_history.len() > 1
                && st
                    .dead_history
                    .front()
                    .is_some_and(|(t, _)| now.saturating_sub(*t) > longest)
            {
                st.dead_history.pop_front();
            }
            let (mut ok, mut fail) = (0, 0);
            for s in st.series.values_mut() {
                let (a, b) = s.window.counts(now);
                ok += a;
                fail += b;
            }
            let open = st
                .breakers
                .values()
                .filter(|b| **b == BreakerState::Open)
                .count();
            let history = st.dead_history.clone();
            for a in st.alerts.iter_mut() {
                let value = match &a.rule().measure {
                    AlertMeasure::Depth { queue: Some(q) } => stats
                        .queues
                        .get(q)
                        .map_or(0.0, |s| (s.waiting + s.delayed) as f64),
                    AlertMeasure::Depth { queue: None } => {
                        (stats.totals.waiting + stats.totals.delayed) as f64
                    }
                    AlertMeasure::FailureRate => {
                        if ok + fail == 0 {
                            0.0
                        } else {
                            fail as f64 / (ok + fail) as f64
                        }
                    }
                    AlertMeasure::DeadGrowth { window } => {
                        let base = history
                            .iter()
                            .find(|(t, _)| now.saturating_sub(*t) <= *window)
                            .map_or(dead_now, |(_, d)| *d);
                        dead_now.saturating_sub(base) as f64
                    }
                    AlertMeasure::OldestWaiting => stats.totals.oldest_waiting_secs.unwrap_or(0.0),
                    AlertMeasure::BreakerOpen => open as f64,
                };
                if let Some(change) = a.step(now, value) {
                    let rule = a.rule();
                    match change {
                        AlertChange::Raised => {
                            tracing::warn!(rule = %rule.name, value, threshold = rule.threshold, "alert raised")
                        }
                        AlertChange::Cleared => {
                            tracing::info!(rule = %rule.name, value, "alert cleared")
                        }
                    }
                    out.push((rule.name.clone(), change));
                    notices.push(Notice::Alert {
                        rule: rule.name.clone(),
                        change,
                        value,
                        threshold: rule.threshold,
                    });
                }
            }
        }
        for n in notices {
            let _ = self.notices.send(n);
        }
        out
    }
}
