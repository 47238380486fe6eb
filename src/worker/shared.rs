//! The state every worker of a pool shares: settings, handlers, breakers, limiters, counters.
//!
//! Locks are `parking_lot` mutexes held only for a few map operations, never across an await.
//! The stop signal is a `watch` of a level: 0 running, 1 stop reserving (grace), 2 abort.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, watch};

use super::autoscale::{AutoscaleConfig, Decision};
use super::batch::Batcher;
use super::breaker::{Breaker, BreakerConfig};
use super::handler::SharedHandler;
use super::pool::{PoolBuilder, PoolEvent, PoolStats};
use super::ratelimit::KeyedLimiter;
use crate::job::{JobId, Lease};
use crate::metrics::Metrics;
use crate::queue::Queue;

/// Stop levels.
pub(crate) const RUNNING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const ABORTING: u8 = 2;

/// Resolves once the stop level reaches `level` (or the pool is gone). The guard `wait_for`
/// returns is dropped here, so callers stay `Send`.
pub(crate) async fn reached(rx: &mut watch::Receiver<u8>, level: u8) {
    let _ = rx.wait_for(|v| *v >= level).await.map(|_| ());
}

#[derive(Default)]
pub(crate) struct Counters {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    pub panics: AtomicU64,
    pub restarts: AtomicU64,
    pub leases_lost: AtomicU64,
    pub released: AtomicU64,
}

pub(crate) struct Shared {
    /// Unique per pool in this process (the metrics sum worker gauges over pools).
    pub id: u64,
    pub queue: Queue,
    pub queues: Vec<String>,
    pub handlers: HashMap<String, SharedHandler>,
    pub default: Option<SharedHandler>,
    pub batch_tx: HashMap<String, mpsc::Sender<Lease>>,
    pub lease: Duration,
    pub grace: Duration,
    pub tick: Duration,
    pub concurrency: usize,
    pub autoscale: Option<AutoscaleConfig>,
    origin: tokio::time::Instant,
    breaker_cfg: Option<BreakerConfig>,
    breakers: Mutex<HashMap<String, Breaker>>,
    pub queue_limit: Option<Mutex<KeyedLimiter>>,
    pub key_limit: Option<Mutex<KeyedLimiter>>,
    /// Extra per-key limits for the keys each predicate picks.
    pub key_rules: Vec<(super::pool::KeyRule, Mutex<KeyedLimiter>)>,
    /// Per-attempt timeout for jobs without their own.
    pub timeout: Option<Duration>,
    kind_pauses: Mutex<HashMap<String, Duration>>,
    pub metrics: Option<Arc<Metrics>>,
    pub stop: watch::Sender<u8>,
    pub c: Counters,
    pub busy: AtomicUsize,
    pub alive: AtomicUsize,
    pub target: AtomicUsize,
    pub retire: AtomicUsize,
    pub returned: Mutex<Vec<JobId>>,
    scale_log: Mutex<VecDeque<Decision>>,
    pub events: broadcast::Sender<PoolEvent>,
}

impl Shared {
    pub(crate) fn new(b: PoolBuilder) -> (Arc<Shared>, Vec<Batcher>) {
        let mut batch_tx = HashMap::new();
        let mut batchers = Vec::new();
        for (kind, (h, cfg)) in b.batch {
            let (tx, rx) = mpsc::channel(cfg.size.saturating_mul(2).max(1));
            batch_tx.insert(kind.clone(), tx);
            batchers.push(Batcher {
                kind,
                handler: h,
                cfg,
                rx,
            });
        }
        let (stop, _) = watch::channel(RUNNING);
        let (events, _) = broadcast::channel(1024);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let shared = Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: b.queue,
            queues: b.queues,
            handlers: b.handlers,
            default: b.default,
            batch_tx,
            lease: b.lease,
            grace: b.grace,
            tick: b.tick,
            concurrency: b.concurrency,
            autoscale: b.autoscale,
            origin: tokio::time::Instant::now(),
            breaker_cfg: b.breaker,
            breakers: Mutex::new(HashMap::new()),
            queue_limit: b
                .rate_queue
                .map(|r| Mutex::new(KeyedLimiter::new(r, r.max(1.0)))),
            key_limit: b.rate_key.map(|r| Mutex::new(KeyedLimiter::new(r, 1.0))),
            key_rules: b
                .key_rules
                .into_iter()
                .map(|r| {
                    let lim = Mutex::new(KeyedLimiter::new(r.per_sec, 1.0));
                    (r, lim)
                })
                .collect(),
            timeout: b.timeout,
            kind_pauses: Mutex::new(HashMap::new()),
            metrics: b.metrics,
            stop,
            c: Counters::default(),
            busy: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            target: AtomicUsize::new(b.concurrency),
            retire: AtomicUsize::new(0),
            returned: Mutex::new(Vec::new()),
            scale_log: Mutex::new(VecDeque::new()),
            events,
        };
        (Arc::new(shared), batchers)
    }

    /// Time since the pool started (the breakers' and limiters' clock).
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    pub fn begin_stop(&self) {
        self.stop.send_if_modified(|v| {
            if *v < DRAINING {
                *v = DRAINING;
                true
            } else {
                false
            }
        });
    }

    pub fn emit(&self, ev: PoolEvent) {
        if let Some(m) = &self.metrics {
            m.observe_pool(&ev);
        }
        let _ = self.events.send(ev);
    }

    pub fn update_gauges(&self) {
        if let Some(m) = &self.metrics {
            m.set_pool_workers(
                self.id,
                self.alive.load(Ordering::Relaxed),
                self.busy.load(Ordering::Relaxed),
            );
        }
    }

    /// Kinds not to reserve now: open breakers, half-open breakers with a probe running,
    /// kinds paused by a `RetryAfter`.
    pub fn excluded_kinds(&self) -> Vec<String> {
        let now = self.now();
        let mut out = Vec::new();
        if self.breaker_cfg.is_some() {
            let mut changes = Vec::new();
            for (kind, b) in self.breakers.lock().iter_mut() {
                if let Some((from, to)) = b.poll(now) {
                    changes.push(PoolEvent::BreakerChanged {
                        kind: kind.clone(),
                        from,
                        to,
                    });
                }
                if !b.allows(now) {
                    out.push(kind.clone());
                }
            }
            for ev in changes {
                self.breaker_changed(ev);
            }
        }
        let mut pauses = self.kind_pauses.lock();
        pauses.retain(|_, until| *until > now);
        out.extend(pauses.keys().cloned());
        out
    }

    fn breaker_changed(&self, ev: PoolEvent) {
        if let PoolEvent::BreakerChanged { kind, from, to } = &ev {
            tracing::warn!(kind = %kind, from = %from, to = %to, "circuit breaker changed state");
        }
        self.emit(ev);
    }

    /// May a reserved job of `kind` run? (Takes the half-open probe slot.)
    pub fn breaker_start(&self, kind: &str) -> bool {
        let Some(cfg) = &self.breaker_cfg else {
            return true;
        };
        let now = self.now();
        let mut map = self.breakers.lock();
        let b = map
            .entry(kind.to_string())
            .or_insert_with(|| Breaker::new(cfg.clone()));
        let ev = b.poll(now).map(|(from, to)| PoolEvent::BreakerChanged {
            kind: kind.to_string(),
            from,
            to,
        });
        let ok = b.on_start(now);
        drop(map);
        if let Some(ev) = ev {
            self.breaker_changed(ev);
        }
        ok
    }

    pub fn breaker_abandon(&self, kind: &str) {
        if let Some(b) = self.breakers.lock().get_mut(kind) {
            b.on_abandon();
        }
    }

    /// Records a result: `Some(true)` success, `Some(false)` failure, `None` neither.
    pub fn breaker_record(&self, kind: &str, success: Option<bool>) {
        let Some(success) = success else {
            self.breaker_abandon(kind);
            return;
        };
        let now = self.now();
        let ev = self.breakers.lock().get_mut(kind).and_then(|b| {
            b.record(now, success)
                .map(|(from, to)| PoolEvent::BreakerChanged {
                    kind: kind.to_string(),
                    from,
                    to,
                })
        });
        if let Some(ev) = ev {
            self.breaker_changed(ev);
        }
    }

    pub fn pause_kind(&self, kind: &str, d: Duration) {
        let until = self.now() + d;
        let mut p = self.kind_pauses.lock();
        let e = p.entry(kind.to_string()).or_insert(until);
        *e = (*e).max(until);
    }

    pub fn record_scale(&self, d: Decision) {
        tracing::info!(from = d.from, to = d.to, reason = %d.reason, "worker pool scaled");
        {
            let mut log = self.scale_log.lock();
            if log.len() >= 32 {
                log.pop_front();
            }
            log.push_back(d.clone());
        }
        self.emit(PoolEvent::Scaled(d));
    }

    pub fn stats(&self) -> PoolStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            workers: self.alive.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
            target: self.target.load(Ordering::Relaxed),
            completed: l(&self.c.completed),
            failed: l(&self.c.failed),
            dead: l(&self.c.dead),
            panics: l(&self.c.panics),
            restarts: l(&self.c.restarts),
            leases_lost: l(&self.c.leases_lost),
            released: l(&self.c.released),
            breakers: self
                .breakers
                .lock()
                .iter()
                .map(|(k, b)| (k.clone(), b.state()))
                .collect(),
            scale_decisions: self.scale_log.lock().iter().cloned().collect(),
        }
    }
}
