//! Supervision: the worker loop, the supervisor that starts, replaces, scales and drains
//! workers, and the restart backoff.
//!
//! Invariants:
//! - A worker whose handler panicked is replaced at once (its attempt was failed by `run_one`).
//! - A worker task that dies any other way is restarted after a backoff that doubles with each
//!   death inside a minute (100 ms … 30 s) and is reported as an event and a `tracing::error!`.
//! - Shutdown: level 1 stops reserving (a pending reserve is dropped, which gives its job
//!   back), handlers get `grace` to finish; then level 2 aborts the rest, which release their
//!   jobs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::autoscale::{Autoscaler, Signals};
use super::batch::Batcher;
use super::pool::PoolEvent;
use super::run::RunEnd;
use super::shared::{reached, Shared, ABORTING, DRAINING};
use crate::backend::ReserveRequest;
use crate::error::Error;

/// Why a worker task ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    Stopped,
    Retired,
    Replace,
    Closed,
}

/// Delay before restarting a dead worker, as a pure function of recent deaths.
#[derive(Clone, Debug)]
pub struct RestartBackoff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    streak: u32,
    last: Option<Duration>,
}

impl RestartBackoff {
    /// Doubling from `base` up to `cap`; a quiet `reset_after` forgets the streak.
    pub fn new(base: Duration, cap: Duration, reset_after: Duration) -> Self {
        RestartBackoff {
            base,
            cap,
            reset_after,
            streak: 0,
            last: None,
        }
    }

    /// A worker died at `now`: how long to wait before restarting it.
    pub fn on_death(&mut self, now: Duration) -> Duration {
        if self
            .last
            .is_some_and(|t| now.saturating_sub(t) >= self.reset_after)
        {
            self.streak = 0;
        }
        self.last = Some(now);
        let d = self.base.saturating_mul(1u32 << self.streak.min(20));
        self.streak = self.streak.saturating_add(1);
        d.min(self.cap)
    }
}

async fn worker(shared: Arc<Shared>) -> Exit {
    let mut stop = shared.stop.subscribe();
    let mut errors = 0u32;
    loop {
        if *stop.borrow() >= DRAINING {
            return Exit::Stopped;
        }
        if shared
            .retire
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(1))
            .is_ok()
        {
            return Exit::Retired;
        }
        let req = ReserveRequest::new(shared.queues.iter().cloned())
            .wait(Duration::from_millis(500))
            .lease(shared.lease)
            .exclude_kinds(shared.excluded_kinds());
        let got = tokio::select! {
            r = shared.queue.reserve_with(req) => r,
            _ = reached(&mut stop, DRAINING) => return Exit::Stopped,
        };
        let lease = match got {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(Error::Closed) => return Exit::Closed,
            Err(e) => {
                errors += 1;
                let d = Duration::from_millis(50u64 << errors.min(6));
                tracing::warn!(error = %e, retry_in = ?d, "reserve failed");
                tokio::time::sleep(d).await;
                continue;
            }
        };
        errors = 0;
        // One span per attempt, around the checks, the handler and the settling.
        let span = tracing::info_span!(
            "job",
            queue = %lease.job.queue,
            kind = %lease.job.kind,
            id = %lease.job.id,
            attempt = lease.job.attempts,
            key = lease.job.key.as_deref().unwrap_or(""),
        );
        let end = tracing::Instrument::instrument(
            async {
                let t = std::time::Instant::now();
                let end = shared.run_one(lease, &mut stop).await;
                tracing::debug!(took_ms = t.elapsed().as_millis() as u64, end = ?end, "attempt finished");
                end
            },
            span,
        )
        .await;
        match end {
            RunEnd::Next => {}
            RunEnd::Panicked => return Exit::Replace,
            RunEnd::Aborted => return Exit::Stopped,
        }
    }
}

fn spawn_worker(set: &mut JoinSet<Exit>, shared: &Arc<Shared>) {
    shared.alive.fetch_add(1, Ordering::Relaxed);
    set.spawn(worker(shared.clone()));
    shared.update_gauges();
}

async fn autoscale(shared: &Arc<Shared>, scaler: &mut Autoscaler, set: &mut JoinSet<Exit>) {
    let stats = match shared.queue.stats().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no stats for autoscaling");
            return;
        }
    };
    let mut sig = Signals {
        busy: shared.busy.load(Ordering::Relaxed),
        ..Signals::default()
    };
    for q in shared.queues.iter().filter_map(|q| stats.queues.get(q)) {
        sig.waiting += q.waiting;
        if let Some(s) = q.oldest_waiting_secs {
            let d = Duration::from_secs_f64(s.max(0.0));
            sig.oldest_waiting = Some(sig.oldest_waiting.map_or(d, |o| o.max(d)));
        }
    }
    let current = shared.target.load(Ordering::Relaxed);
    if let Some(d) = scaler.decide(shared.now(), current, sig) {
        shared.target.store(d.to, Ordering::Relaxed);
        let alive = shared.alive.load(Ordering::Relaxed);
        if d.to > alive {
            shared.retire.store(0, Ordering::Relaxed);
            for _ in alive..d.to {
                spawn_worker(set, shared);
            }
        } else {
            shared.retire.store(alive - d.to, Ordering::Relaxed);
        }
        shared.record_scale(d);
    }
}

/// Runs the pool until shutdown; returns how many handlers finished within the grace period.
pub(crate) async fn supervise(shared: Arc<Shared>, batchers: Vec<Batcher>) -> usize {
    let mut set = JoinSet::new();
    let mut helpers = JoinSet::new();
    for b in batchers {
        helpers.spawn(b.run(shared.clone()));
    }
    let feeder = shared
        .metrics
        .as_ref()
        .and_then(|m| m.attach(&shared.queue));
    for _ in 0..shared.concurrency {
        spawn_worker(&mut set, &shared);
    }
    let mut scaler = shared.autoscale.clone().map(Autoscaler::new);
    let mut backoff = RestartBackoff::new(
        Duration::from_millis(100),
        Duration::from_secs(30),
        Duration::from_secs(60),
    );
    let mut stop = shared.stop.subscribe();
    let mut tick = tokio::time::interval(shared.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(r) = set.join_next() => {
                shared.alive.fetch_sub(1, Ordering::Relaxed);
                shared.update_gauges();
                let reason = match r {
                    Ok(Exit::Replace) => "its handler panicked".to_string(),
                    Ok(Exit::Closed) => {
                        tracing::warn!("the queue was shut down; the worker stops");
                        continue;
                    }
                    Ok(Exit::Stopped | Exit::Retired) => continue,
                    Err(e) => {
                        let d = backoff.on_death(shared.now());
                        tracing::error!(error = %e, restart_in = ?d, "a worker died; restarting it");
                        tokio::time::sleep(d).await;
                        format!("the worker died: {e}")
                    }
                };
                shared.c.restarts.fetch_add(1, Ordering::Relaxed);
                shared.emit(PoolEvent::WorkerRestarted { reason });
                if *stop.borrow() < DRAINING {
                    spawn_worker(&mut set, &shared);
                }
            }
            _ = tick.tick() => {
                if let Some(s) = scaler.as_mut() {
                    autoscale(&shared, s, &mut set).await;
                }
                if let Some(m) = &shared.metrics {
                    if m.has_alert_rules() {
                        if let Ok(stats) = shared.queue.stats().await {
                            m.evaluate_alerts(&stats);
                        }
                    }
                }
            }
            _ = reached(&mut stop, DRAINING) => break,
        }
    }
    let busy_at_stop = shared.busy.load(Ordering::Relaxed);
    tracing::info!(busy = busy_at_stop, grace = ?shared.grace, "worker pool stopping");
    let drained = tokio::time::timeout(shared.grace, async {
        while set.join_next().await.is_some() {
            shared.alive.fetch_sub(1, Ordering::Relaxed);
        }
        while helpers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let _ = shared.stop.send(ABORTING);
        while set.join_next().await.is_some() {
            shared.alive.fetch_sub(1, Ordering::Relaxed);
        }
        while helpers.join_next().await.is_some() {}
    }
    shared.update_gauges();
    if let Some(f) = feeder {
        f.abort();
    }
    let returned = shared.returned.lock().len();
    busy_at_stop.saturating_sub(returned)
}
