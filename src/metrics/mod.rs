//! Metrics per queue and kind: counters, processing- and wait-time
//! histograms (hdrhistogram, p50/p95/p99), success rate over a window, workers busy/idle,
//! breaker states, alert rules; a JSON [`Snapshot`], the Prometheus text format
//! ([`Metrics::render_prometheus`]) and an event stream of [`Notice`]s.
//!
//! Feeding: [`Metrics::attach`] follows a queue's event stream (the worker pool does this when
//! given metrics); the pool reports workers, breakers and scaling itself. Everything is also
//! sent through the `metrics` facade (`durq_*` names) so an embedding app can pick its exporter.
//!
//! Invariants: counters only grow; histograms hold microseconds from 1 µs to 1 h (longer values
//! are clamped); the state lock is never held across an await.

pub mod alerts;
pub mod fsync;
mod prometheus;
#[cfg(feature = "http")]
pub mod sinks;
mod snapshot;
pub mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::pool_event::{BreakerState, PoolEvent};
use crate::queue::Queue;
use crate::stats::{Event, Stats};
pub use alerts::{AlertChange, AlertMeasure, AlertRule, AlertTracker};
pub use snapshot::{Quantiles, SeriesSnapshot, Snapshot};
pub use window::SuccessWindow;

/// Something the metrics saw or concluded, for [`Metrics::subscribe`] subscribers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Notice {
    /// A job event from the queue (completed, retrying, dead, …).
    Job(Event),
    /// A pool event (breaker changed, scaled, worker restarted).
    Pool(PoolEvent),
    /// An alert was raised or cleared.
    Alert {
        /// Rule name.
        rule: String,
        /// Raised or cleared.
        change: AlertChange,
        /// The measured value.
        value: f64,
        /// The rule's threshold.
        threshold: f64,
    },
}

/// Counters and histograms of one (queue, kind).
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub enqueued: u64,
    pub completed: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead: u64,
    pub processing: Histogram<u64>,
    pub wait: Histogram<u64>,
    pub window: SuccessWindow,
}

impl Series {
    fn new(window: Duration) -> Series {
        // Constant, valid bounds: 1 µs to 1 h with 3 significant digits.
        let h =
            || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("constant bounds are valid");
        Series {
            enqueued: 0,
            completed: 0,
            failed: 0,
            retried: 0,
            dead: 0,
            processing: h(),
            wait: h(),
            window: SuccessWindow::new(window),
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub series: BTreeMap<(String, String), Series>,
    pub deduplicated: BTreeMap<String, u64>,
    pub requeued: BTreeMap<String, u64>,
    pub workers: usize,
    pub busy: usize,
    pub pools: BTreeMap<u64, (usize, usize)>,
    pub breakers: BTreeMap<String, BreakerState>,
    pub scaled: u64,
    pub restarts: u64,
    pub dead_history: VecDeque<(Duration, u64)>,
    pub alerts: Vec<AlertTracker>,
}

/// Metrics of one process. Share it as `Arc<Metrics>`.
pub struct Metrics {
    pub(crate) state: Mutex<State>,
    notices: broadcast::Sender<Notice>,
    origin: Instant,
    window: Duration,
    attached: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Empty metrics with a 60 s success-rate window.
    pub fn new() -> Metrics {
        Metrics::with_window(Duration::from_secs(60))
    }

    /// Empty metrics with this success-rate window.
    pub fn with_window(window: Duration) -> Metrics {
        let (notices, _) = broadcast::channel(1024);
        Metrics {
            state: Mutex::new(State::default()),
            notices,
            origin: Instant::now(),
            window,
            attached: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The notice stream (job events, pool events, alerts).
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// Adds an alert rule.
    pub fn add_alert(&self, rule: AlertRule) {
        self.state.lock().alerts.push(AlertTracker::new(rule));
    }

    /// Whether any alert rule is set.
    pub fn has_alert_rules(&self) -> bool {
        !self.state.lock().alerts.is_empty()
    }

    /// Follows `queue`'s event stream until the queue closes or the task is aborted. Only the
    /// first call attaches (so a pool given already-attached metrics does not count twice); later
    /// calls return `None`.
    pub fn attach(self: &Arc<Self>, queue: &Queue) -> Option<tokio::task::JoinHandle<()>> {
        if self
            .attached
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        let mut rx = queue.subscribe();
        let me = self.clone();
        Some(tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(ev) => me.observe(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "metrics fell behind the event stream; counts are low by that much"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }))
    }

    /// Counts one job event at the current time.
    pub fn observe(&self, ev: &Event) {
        self.observe_at(ev, self.now());
    }

    /// Counts one job event at `now` (time since any fixed origin; tests).
    pub fn observe_at(&self, ev: &Event, now: Duration) {
        let window = self.window;
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let map = &mut st.series;
            fn series<'a>(
                map: &'a mut BTreeMap<(String, String), Series>,
                q: &str,
                k: &str,
                window: Duration,
            ) -> &'a mut Series {
                map.entry((q.to_string(), k.to_string()))
                    .or_insert_with(|| Series::new(window))
            }
            match ev {
                Event::Enqueued { queue, kind, .. } => {
                    series(map, queue, kind, window).enqueued += 1;
                    ::metrics::counter!("durq_jobs_enqueued_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                }
                Event::Deduplicated { queue, .. } => {
                    *st.deduplicated.entry(queue.clone()).or_default() += 1;
                    ::metrics::counter!("durq_jobs_deduplicated_total", "queue" => queue.clone())
                        .increment(1);
                }
                Event::Started {
                    queue,
                    kind,
                    waited,
                    ..
                } => {
                    series(map, queue, kind, window)
                        .wait
                        .saturating_record(waited.as_micros() as u64);
                    ::metrics::histogram!("durq_wait_seconds", "queue" => queue.clone(), "kind" => kind.clone()).record(waited.as_secs_f64());
                }
                Event::Completed {
                    queue, kind, took, ..
                } => {
                    let s = series(map, queue, kind, window);
                    s.completed += 1;
                    s.processing.saturating_record(took.as_micros() as u64);
                    s.window.record(now, true);
                    ::metrics::counter!("durq_jobs_completed_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                    ::metrics::histogram!("durq_processing_seconds", "queue" => queue.clone(), "kind" => kind.clone()).record(took.as_secs_f64());
                }
                Event::Retrying { queue, kind, .. } => {
                    let s = series(map, queue, kind, window);
                    s.failed += 1;
                    s.retried += 1;
                    s.window.record(now, false);
                    ::metrics::counter!("durq_jobs_failed_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                    ::metrics::counter!("durq_jobs_retried_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                }
                Event::Dead { queue, kind, .. } => {
                    let s = series(map, queue, kind, window);
                    s.failed += 1;
                    s.dead += 1;
                    s.window.record(now, false);
                    ::metrics::counter!("durq_jobs_failed_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                    ::metrics::counter!("durq_jobs_dead_total", "queue" => queue.clone(), "kind" => kind.clone()).increment(1);
                }
                Event::Requeued { queue, count } => {
                    *st.requeued.entry(queue.clone()).or_default() += count;
                }
            }
        }
        let _ = self.notices.send(Notice::Job(ev.clone()));
    }

    /// Records a pool event (breaker change, scaling, restart).
    pub fn observe_pool(&self, ev: &PoolEvent) {
        {
            let mut st = self.state.lock();
            match ev {
                PoolEvent::BreakerChanged { kind, to, .. } => {
                    st.breakers.insert(kind.clone(), *to);
                    ::metrics::gauge!("durq_breaker_state", "kind" => kind.clone())
                        .set(f64::from(to.as_gauge()));
                }
                PoolEvent::Scaled(_) => st.scaled += 1,
                PoolEvent::WorkerRestarted { .. } => st.restarts += 1,
            }
        }
        let _ = self.notices.send(Notice::Pool(ev.clone()));
    }

    /// Sets the worker gauges.
    pub fn set_workers(&self, workers: usize, busy: usize) {
        self.set_pool_workers(0, workers, busy);
    }

    /// Sets one pool's worker counts (several pools may share these metrics; the gauges are
    /// the sums over pools).
    pub fn set_pool_workers(&self, pool: u64, workers: usize, busy: usize) {
        let mut st = self.state.lock();
        st.pools.insert(pool, (workers, busy.min(workers)));
        let (w, b) = st
            .pools
            .values()
            .fold((0, 0), |(w, b), (pw, pb)| (w + pw, b + pb));
        st.workers = w;
        st.busy = b;
        ::metrics::gauge!("durq_workers", "state" => "busy").set(b as f64);
        ::metrics::gauge!("durq_workers", "state" => "idle").set((w - b) as f64);
    }

    /// A JSON-ready snapshot (with `stats` when given).
    /// The Prometheus text exposition format (version 0.0.4), with queue depths from `stats`.
    pub fn render_prometheus(&self, stats: &Stats) -> String {
        let now = self.now();
        prometheus::render(&mut self.state.lock(), stats, now)
    }
}
