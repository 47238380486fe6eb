//! The JSON snapshot of the metrics: counters, p50/p95/p99 in milliseconds, success rate,
//! workers, breakers, raised alerts, and (when given) the queue counts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Metrics;
use crate::pool_event::BreakerState;
use crate::stats::Stats;

/// Latency quantiles in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

impl Quantiles {
    fn of(h: &Histogram<u64>) -> Quantiles {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Quantiles {
            count: h.len(),
            p50_ms: q(0.5),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }
}

/// One (queue, kind) in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesSnapshot {
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts failed.
    pub failed: u64,
    /// Attempts failed and retried.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Successes / attempts over the window.
    pub success_rate: Option<f64>,
    /// Time from reserve to ack.
    pub processing: Quantiles,
    /// Time from ready to start.
    pub wait: Quantiles,
}

/// Everything, as JSON for the HTTP API and the dashboard.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snapshot {
    /// Per (queue, kind).
    pub series: Vec<SeriesSnapshot>,
    /// Duplicate enqueues per queue.
    pub deduplicated: BTreeMap<String, u64>,
    /// Live workers.
    pub workers: usize,
    /// Workers running a handler.
    pub busy: usize,
    /// Breaker state per kind.
    pub breakers: BTreeMap<String, BreakerState>,
    /// Raised alerts.
    pub alerts_firing: Vec<String>,
    /// Queue counts, when given.
    pub stats: Option<Stats>,
}

impl Metrics {
    /// A JSON-ready snapshot (with `stats` when given).
    pub fn snapshot(&self, stats: Option<&Stats>) -> Snapshot {
        let now = self.now();
        let mut st = self.state.lock();
        let series = st
            .series
            .iter_mut()
            .map(|((q, k), s)| SeriesSnapshot {
                queue: q.clone(),
                kind: k.clone(),
                enqueued: s.enqueued,
                completed: s.completed,
                failed: s.failed,
                retried: s.retried,
                dead: s.dead,
                success_rate: s.window.rate(now),
                processing: Quantiles::of(&s.processing),
                wait: Quantiles::of(&s.wait),
            })
            .collect();
        Snapshot {
            series,
            deduplicated: st.deduplicated.clone(),
            workers: st.workers,
            busy: st.busy,
            breakers: st.breakers.clone(),
            alerts_firing: st
                .alerts
                .iter()
                .filter(|a| a.firing())
                .map(|a| a.rule().name.clone())
                .collect(),
            stats: stats.cloned(),
        }
    }
}
