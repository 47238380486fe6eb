//! The running watcher: the event loop (debounce, rescans) and the settle task (records, jobs,
//! batches).
//!
//! Invariants:
//! - Start order: OS watch first, then the start-up scan, then the loop; events that arrive
//!   during the scan are buffered and settle afterwards (a settle of an unchanged file is a no-op),
//!   so nothing changed during start-up is lost.
//! - Only the settle task touches the records; batches of due paths reach it in order.
//! - Events lost (kernel overflow, full channel) schedule a reconcile of every root after a quiet
//!   window; each such reconcile counts one rescan.
//! - Stop: the OS watch is dropped, buffered events are drained, every pending path settles,
//!   the open batch closes, and only then does `stop` return.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::queue::Queue;
use crate::watch::debounce::{Debouncer, Due, Hint};
use crate::watch::events::{Raw, Sink};
use crate::watch::hash::HashPool;
use crate::watch::ignore::Ignorer;
use crate::watch::job::Batcher;
use crate::watch::record::Records;
use crate::watch::scan::{count_dirs, max_user_watches, watch_limit_error};
use crate::watch::settle::{Item, Settler};
use crate::watch::{Counters, WatchConfig};

enum Work {
    Items(Vec<Item>, bool),
    /// Answered once every earlier item is settled.
    Barrier(oneshot::Sender<()>),
    Flush(oneshot::Sender<Result<()>>),
}

/// Handles of a running watcher.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Stops and drains.
    pub async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| Error::Backend(format!("the watcher task failed: {e}")))?
    }
}

fn items(due: Vec<Due>) -> Vec<Item> {
    due.into_iter()
        .map(|d| Item {
            path: d.path,
            stable: d.stable,
            first: d.first,
        })
        .collect()
}

/// Starts everything; returns after the start-up scan's jobs are enqueued.
pub async fn start(queue: Queue, cfg: WatchConfig, counters: Arc<Counters>) -> Result<Running> {
    let roots = cfg.roots.clone();
    let names = roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let needed: u64 = roots.iter().map(|r| count_dirs(r)).sum();
    let limit = max_user_watches();
    if limit.is_some_and(|l| needed > l) {
        return Err(watch_limit_error(&names, needed, limit));
    }
    let ignore = Arc::new(RwLock::new(Ignorer::new(&roots, &cfg.ignore)?));
    let records = {
        let (dir, roots) = (cfg.state_dir.clone(), roots.clone());
        tokio::task::spawn_blocking(move || Records::open(&dir, &roots))
            .await
            .map_err(|e| Error::Backend(format!("opening watch records failed: {e}")))??
    };

    let (tx, mut raw_rx) = mpsc::channel(cfg.channel_capacity);
    let overflow = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let sink = Sink {
        tx,
        overflow: overflow.clone(),
        wake: wake.clone(),
        counters: counters.clone(),
        gate: cfg.gate.clone(),
    };
    let mut os = notify::RecommendedWatcher::new(
        sink,
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| {
        Error::io(
            "starting the file watcher",
            std::io::Error::other(e.to_string()),
        )
    })?;
    for r in &roots {
        if let Err(e) = os.watch(r, RecursiveMode::Recursive) {
            return Err(match e.kind {
                notify::ErrorKind::MaxFilesWatch => watch_limit_error(&names, needed, limit),
                _ => Error::io(
                    format!("watching {}", r.display()),
                    std::io::Error::other(e.to_string()),
                ),
            });
        }
    }

    let (held_tx, held_rx) = mpsc::unbounded_channel::<Item>();
    let big = Arc::new(crate::watch::big::BigHashes::default());
    let mut settler = Settler {
        queue,
        queue_name: cfg.queue.clone(),
        roots: roots.clone(),
        records,
        ignore: ignore.clone(),
        pool: HashPool::new(cfg.hash_workers),
        counters: counters.clone(),
        max_wait: cfg.max_wait,
        debounce: cfg.debounce,
        holding: true,
        live: false,
        big: big.clone(),
        batching: cfg.batch,
        back: held_tx.clone(),
    };
    // Changes of a batch left open by a crash: they open the first batch again (without batch
    // mode they are dropped: each has its `file_event` job already).
    let restored = settler.records.take_restored();
    if !cfg.batch && !restored.is_empty() {
        settler.records.batched(&restored).await?;
    }
    let now = Instant::now();
    let scan = settler
        .settle(
            roots
                .iter()
                .map(|r| Item {
                    path: r.clone(),
                    stable: true,
                    first: now.into_std(),
                })
                .collect(),
        )
        .await?;
    let mut batcher = cfg
        .batch
        .then(|| Batcher::new(cfg.debounce, cfg.max_wait, cfg.batch_max));
    if let Some(b) = batcher.as_mut() {
        let mut changes = restored;
        changes.extend(scan.changes.iter().cloned());
        for closed in b.add(&changes, now.into_std()) {
            settler.enqueue_batch_job(&closed).await?;
        }
    }

    let (work_tx, work_rx) = mpsc::channel::<Work>(16);
    settler.live = true;
    for h in scan.held {
        let _ = held_tx.send(h);
    }
    let pending = Arc::new(AtomicUsize::new(0));
    let debounce = cfg.debounce;
    let settle_task = tokio::spawn(settle_loop(
        settler,
        batcher,
        work_rx,
        held_tx,
        pending.clone(),
        debounce,
    ));
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let mut deb = Debouncer::new(cfg.debounce, cfg.max_wait);
    let mut held_rx = held_rx;
    let gate = cfg.gate.clone();
    let task = tokio::spawn(async move {
        let mut rescans: HashSet<PathBuf> = HashSet::new();
        let mut buf = Vec::with_capacity(1024);
        loop {
            let deadline = deb.next_deadline().map(Instant::from_std);
            let held = gate.as_ref().is_some_and(|g| g.loop_held());
            tokio::select! {
                biased;
                _ = &mut stop_rx => break,
                _ = async { if let Some(g) = &gate { g.loop_released().await } }, if held => {}
                n = raw_rx.recv_many(&mut buf, 1024), if !held => {
                    if n == 0 { break; }
                    let now = std::time::Instant::now();
                    for raw in buf.drain(..) {
                        on_raw(&roots, &mut deb, &ignore, &counters, raw, now);
                    }
                }
                Some(h) = held_rx.recv() => {
                    deb.hold(h.path, h.first, std::time::Instant::now());
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
            }
            let now = std::time::Instant::now();
            if overflow.swap(false, Ordering::SeqCst) {
                for r in &roots {
                    rescans.insert(r.clone());
                    deb.event(r.clone(), Hint::Changed, now);
                }
            }
            let due = deb.poll(now);
            pending.store(deb.pending(), Ordering::Relaxed);
            if !due.is_empty() {
                for d in &due {
                    if rescans.remove(&d.path) {
                        counters.add_rescan();
                        tracing::warn!(
                            "file events were lost (kernel queue overflow or a full channel); reconciling {}",
                            d.path.display()
                        );
                        // Directories created while events were lost have no watch yet.
                        if let Err(e) = os.watch(&d.path, RecursiveMode::Recursive) {
                            counters.add_error();
                            tracing::error!("re-watching {} failed: {e}", d.path.display());
                        }
                    }
                }
                if work_tx.send(Work::Items(items(due), false)).await.is_err() {
                    break;
                }
            }
        }
        // Stop: no more OS events; let the batches in flight finish (they may hand paths back),
        // drain what is buffered, settle everything pending.
        drop(os);
        let (btx, brx) = oneshot::channel();
        if work_tx.send(Work::Barrier(btx)).await.is_ok() {
            let _ = brx.await;
        }
        let now = std::time::Instant::now();
        while let Ok(raw) = raw_rx.try_recv() {
            on_raw(&roots, &mut deb, &ignore, &counters, raw, now);
        }
        while let Ok(h) = held_rx.try_recv() {
            deb.hold(h.path, h.first, now);
        }
        if overflow.swap(false, Ordering::SeqCst) {
            counters.add_rescan();
            for r in &roots {
                deb.event(r.clone(), Hint::Changed, now);
            }
        }
        for p in big.paths() {
            deb.event(p, Hint::Changed, now);
        }
        let rest = deb.flush(now);
        let mut result = Ok(());
        if !rest.is_empty() && work_tx.send(Work::Items(items(rest), true)).await.is_err() {
            result = Err(Error::Backend(
                "the watcher's settle task stopped early".into(),
            ));
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        if work_tx.send(Work::Flush(reply_tx)).await.is_ok() {
            if let Ok(r) = reply_rx.await {
                result = result.and(r);
            }
        }
        drop(work_tx);
        let _ = settle_task.await;
        result
    });
    Ok(Running {
        stop: stop_tx,
        task,
    })
}

fn on_raw(
    roots: &[PathBuf],
    deb: &mut Debouncer,
    ignore: &RwLock<Ignorer>,
    counters: &Counters,
    raw: Raw,
    now: std::time::Instant,
) {
    match raw {
        Raw::Path(p, hint) => {
            if p.file_name().is_some_and(|n| n == ".gitignore") {
                if let Some(d) = p.parent() {
                    deb.event(d.to_path_buf(), Hint::Changed, now);
                }
            }
            if !ignore.read().is_ignored(&p, false) {
                deb.event(p, hint, now);
            }
        }
        Raw::Rename(from, to) => {
            let ign = ignore.read();
            match (ign.is_ignored(&from, false), ign.is_ignored(&to, false)) {
                (false, false) => deb.rename(from, to, now),
                (true, false) => deb.event(to, Hint::Changed, now),
                (false, true) => deb.event(from, Hint::Changed, now),
                (true, true) => {}
            }
        }
        Raw::WatchLimit(e) => {
            counters.add_error();
            let needed: u64 = roots.iter().map(|r| count_dirs(r)).sum();
            let limit = max_user_watches().map_or_else(|| "unknown".into(), |l| l.to_string());
            tracing::error!(
                "a new directory is NOT watched: the tree needs about {needed} inotify watches but \
                 fs.inotify.max_user_watches is {limit} ({e}); raise it, e.g. \
                 `sysctl fs.inotify.max_user_watches={}`, and restart durq watch",
                (needed * 2).max(8192)
            );
        }
        Raw::Error(e) => {
            counters.add_error();
            tracing::warn!("file watcher error: {e}");
        }
    }
}

async fn settle_loop(
    mut settler: Settler,
    mut batcher: Option<Batcher>,
    mut rx: mpsc::Receiver<Work>,
    held: mpsc::UnboundedSender<Item>,
    pending: Arc<AtomicUsize>,
    debounce: Duration,
) {
    let mut failed: Option<Error> = None;
    loop {
        let wake = batcher.as_ref().and_then(|b| b.deadline()).map(|d| {
            let at = Instant::from_std(d);
            at.max(Instant::now() + debounce / 10)
        });
        let work = tokio::select! {
            w = rx.recv() => w,
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {
                let busy = pending.load(Ordering::Relaxed) > 0;
                if let Some(closed) = batcher.as_mut().and_then(|b| b.poll(std::time::Instant::now(), busy)) {
                    if let Err(e) = settler.enqueue_batch_job(&closed).await {
                        settler.counters.add_error();
                        tracing::error!("enqueueing a batch_process job failed: {e}");
                    }
                }
                continue;
            }
        };
        match work {
            None => return,
            Some(Work::Items(items, last)) => {
                settler.holding = !last;
                settler.live = !last;
                match settler.settle(items).await {
                    Ok(out) => {
                        for h in out.held {
                            let _ = held.send(h);
                        }
                        if let Some(b) = batcher.as_mut() {
                            for closed in b.add(&out.changes, std::time::Instant::now()) {
                                if let Err(e) = settler.enqueue_batch_job(&closed).await {
                                    settler.counters.add_error();
                                    tracing::error!("enqueueing a batch_process job failed: {e}");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        settler.counters.add_error();
                        tracing::error!("settling file changes failed: {e}; they will be reported by the next scan");
                        failed = Some(e);
                    }
                }
            }
            Some(Work::Barrier(reply)) => {
                let _ = reply.send(());
            }
            Some(Work::Flush(reply)) => {
                let mut r = match failed.take() {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
                if let Some(closed) = batcher.as_mut().and_then(|b| b.flush()) {
                    r = r.and(settler.enqueue_batch_job(&closed).await);
                }
                let _ = reply.send(r);
                return;
            }
        }
    }
}
