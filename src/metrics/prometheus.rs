//! The Prometheus text exposition format (0.0.4): every family has one `# HELP` and one
//! `# TYPE` line before its samples; label values are escaped (`\\`, `\"`, `\n`); durations are
//! in seconds; summaries carry quantiles 0.5, 0.95 and 0.99 plus `_sum` and `_count`.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::State;
use crate::job::JobState;
use crate::stats::Stats;

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.0, "{name}{} {v}", labels(l));
    }
    fn summary(&mut self, name: &str, l: &[(&str, &str)], h: &Histogram<u64>) {
        for (q, qs) in [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")] {
            let mut ll = l.to_vec();
            ll.push(("quantile", qs));
            let v = if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(q) as f64 / 1e6
            };
            self.sample(name, &ll, v);
        }
        let sum = h.mean() * h.len() as f64 / 1e6;
        self.sample(&format!("{name}_sum"), l, sum);
        self.sample(&format!("{name}_count"), l, h.len() as f64);
    }
}

pub(super) fn render(st: &mut State, stats: &Stats, now: Duration) -> String {
    let mut o = Out(String::with_capacity(4096));
    type Get = fn(&super::Series) -> u64;
    let counters: [(&str, &str, Get); 5] = [
        ("durq_jobs_enqueued_total", "Jobs enqueued.", |s| s.enqueued),
        ("durq_jobs_completed_total", "Jobs completed.", |s| {
            s.completed
        }),
        (
            "durq_jobs_failed_total",
            "Attempts that failed (retried or dead).",
            |s| s.failed,
        ),
        (
            "durq_jobs_retried_total",
            "Failed attempts scheduled for a retry.",
            |s| s.retried,
        ),
        (
            "durq_jobs_dead_total",
            "Jobs moved to the dead letters.",
            |s| s.dead,
        ),
    ];
    for (name, help, get) in counters {
        o.family(name, "counter", help);
        for ((q, k), s) in &st.series {
            o.sample(name, &[("queue", q), ("kind", k)], get(s) as f64);
        }
    }
    o.family(
        "durq_jobs_deduplicated_total",
        "counter",
        "Enqueues that hit a live dedup key.",
    );
    for (q, n) in &st.deduplicated {
        o.sample("durq_jobs_deduplicated_total", &[("queue", q)], *n as f64);
    }
    o.family("durq_jobs", "gauge", "Jobs per queue and state.");
    for (q, s) in &stats.queues {
        for state in JobState::ALL {
            let n = match state {
                JobState::Waiting => s.waiting,
                JobState::Active => s.active,
                JobState::Delayed => s.delayed,
                JobState::Completed => s.completed,
                JobState::Dead => s.dead,
            };
            o.sample(
                "durq_jobs",
                &[("queue", q), ("state", state.as_str())],
                n as f64,
            );
        }
    }
    o.family(
        "durq_queue_paused",
        "gauge",
        "1 when reserving from the queue is paused.",
    );
    for (q, s) in &stats.queues {
        o.sample(
            "durq_queue_paused",
            &[("queue", q)],
            f64::from(u8::from(s.paused)),
        );
    }
    o.family(
        "durq_oldest_waiting_seconds",
        "gauge",
        "Age of the oldest waiting job.",
    );
    for (q, s) in &stats.queues {
        o.sample(
            "durq_oldest_waiting_seconds",
            &[("queue", q)],
            s.oldest_waiting_secs.unwrap_or(0.0),
        );
    }
    o.family(
        "durq_processing_seconds",
        "summary",
        "Time from reserve to ack of completed jobs.",
    );
    for ((q, k), s) in &st.series {
        o.summary(
            "durq_processing_seconds",
            &[("queue", q), ("kind", k)],
            &s.processing,
        );
    }
    o.family("durq_wait_seconds", "summary", "Time from ready to start.");
    for ((q, k), s) in &st.series {
        o.summary("durq_wait_seconds", &[("queue", q), ("kind", k)], &s.wait);
    }
    o.family(
        "durq_success_rate",
        "gauge",
        "Successful attempts / attempts over the recent window (absent when nothing ran).",
    );
    for ((q, k), s) in st.series.iter_mut() {
        if let Some(r) = s.window.rate(now) {
            o.sample("durq_success_rate", &[("queue", q), ("kind", k)], r);
        }
    }
    o.family("durq_workers", "gauge", "Workers by state.");
    o.sample("durq_workers", &[("state", "busy")], st.busy as f64);
    o.sample(
        "durq_workers",
        &[("state", "idle")],
        st.workers.saturating_sub(st.busy) as f64,
    );
    o.family(
        "durq_breaker_state",
        "gauge",
        "Circuit breaker per kind: 0 closed, 1 half-open, 2 open.",
    );
    for (k, b) in &st.breakers {
        o.sample(
            "durq_breaker_state",
            &[("kind", k)],
            f64::from(b.as_gauge()),
        );
    }
    o.family(
        "durq_pool_scaled_total",
        "counter",
        "Autoscaling decisions.",
    );
    o.sample("durq_pool_scaled_total", &[], st.scaled as f64);
    o.family(
        "durq_worker_restarts_total",
        "counter",
        "Workers replaced after a panic or death.",
    );
    o.sample("durq_worker_restarts_total", &[], st.restarts as f64);
    o.family(
        "durq_alert_firing",
        "gauge",
        "1 while an alert rule is raised.",
    );
    for a in &st.alerts {
        o.sample(
            "durq_alert_firing",
            &[("rule", &a.rule().name)],
            f64::from(u8::from(a.firing())),
        );
    }
    super::fsync::render(&mut o.0);
    o.0
}
