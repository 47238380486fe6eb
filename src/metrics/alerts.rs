//! Alert rules: a threshold on one measure, a hold time, raised once per crossing and cleared
//! when the measure is back at or under the threshold. A pure state machine over an injected
//! clock; the metrics feed it values and turn its changes into events and `tracing::warn!`.

use std::collections::VecDeque;
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
    /// Journal fsyncs delayed (slower than 2 s, or an append that waited for one) within
    /// `window`, process-wide ([`super::fsync::delayed`]).
    FsyncStalls {
        /// The window.
        #[serde(with = "secs")]
        window: Duration,
    },
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
    /// Samples of a process-wide counter (for [`AlertMeasure::FsyncStalls`]).
    history: VecDeque<(Duration, u64)>,
}

impl AlertTracker {
    /// A tracker in the normal state.
    pub fn new(rule: AlertRule) -> Self {
        AlertTracker {
            rule,
            above_since: None,
            firing: false,
            history: VecDeque::new(),
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

    /// Records a counter sample at `now` and returns its growth over the last `window`
    /// (samples older than the window are forgotten, one before it is kept as the base).
    pub fn growth(&mut self, now: Duration, window: Duration, value: u64) -> u64 {
        self.history.push_back((now, value));
        while self.history.len() > 1
            && self
                .history
                .get(1)
                .is_some_and(|(t, _)| now.saturating_sub(*t) >= window)
        {
            self.history.pop_front();
        }
        let base = self.history.front().map_or(value, |(_, v)| *v);
        value.saturating_sub(base)
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
                let measure = a.rule().measure.clone();
                let value = match &measure {
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
                    AlertMeasure::FsyncStalls { window } => {
                        let (slow, waited) = super::fsync::delayed();
                        a.growth(now, *window, slow + waited) as f64
                    }
                };
                if let Some(change) = a.step(now, value) {
                    let rule = a.rule();
                    match change {
                        AlertChange::Raised => {
                            tracing::warn!(rule = %rule.name, value, threshold = rule.threshold, "alert raised")
                        }
                        AlertChange::Cleared => {
                            tracing::warn!(rule = %rule.name, value, threshold = rule.threshold, "alert cleared")
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

/// The rules `durq serve` runs unless told not to, with their thresholds:
///
/// | name | fires when | hold |
/// |---|---|---|
/// | `dead_letters` | any job became a dead letter in the last 10 min | 0 s |
/// | `failure_rate` | over half of the attempts of the last 60 s failed | 2 min |
/// | `oldest_waiting` | a job has been waiting over 300 s | 1 min |
/// | `breaker_open` | a kind's circuit breaker is open | 0 s |
/// | `fsync_stalls` | a journal fsync was delayed over 2 s in the last 5 min | 0 s |
pub fn default_rules() -> Vec<AlertRule> {
    let rule = |name: &str, measure, threshold, hold_secs| AlertRule {
        name: name.into(),
        measure,
        threshold,
        hold: Duration::from_secs(hold_secs),
    };
    vec![
        rule(
            "dead_letters",
            AlertMeasure::DeadGrowth {
                window: Duration::from_secs(600),
            },
            0.0,
            0,
        ),
        rule("failure_rate", AlertMeasure::FailureRate, 0.5, 120),
        rule("oldest_waiting", AlertMeasure::OldestWaiting, 300.0, 60),
        rule("breaker_open", AlertMeasure::BreakerOpen, 0.0, 0),
        rule(
            "fsync_stalls",
            AlertMeasure::FsyncStalls {
                window: Duration::from_secs(300),
            },
            0.0,
            0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raised_once_per_crossing_and_cleared_once() {
        let mut t = AlertTracker::new(AlertRule {
            name: "r".into(),
            measure: AlertMeasure::FailureRate,
            threshold: 0.5,
            hold: Duration::from_secs(10),
        });
        let s = Duration::from_secs;
        let mut changes = Vec::new();
        for (at, v) in [
            (0, 0.9),
            (5, 0.9),
            (10, 0.9),
            (11, 0.8),
            (20, 0.7),
            (21, 0.1),
            (22, 0.0),
        ] {
            if let Some(c) = t.step(s(at), v) {
                changes.push((at, c));
            }
        }
        assert_eq!(
            changes,
            vec![(10, AlertChange::Raised), (21, AlertChange::Cleared)]
        );
    }

    #[test]
    fn counter_growth_over_a_window() {
        let mut t = AlertTracker::new(default_rules().pop().unwrap());
        let s = Duration::from_secs;
        let w = s(60);
        assert_eq!(t.growth(s(0), w, 3), 0);
        assert_eq!(t.growth(s(10), w, 4), 1);
        assert_eq!(t.growth(s(59), w, 4), 1);
        // At 70 s the sample of 10 s is the base: nothing grew since.
        assert_eq!(t.growth(s(70), w, 4), 0);
        assert_eq!(t.growth(s(80), w, 6), 2);
        assert_eq!(t.growth(s(200), w, 6), 0);
    }
}
