//! The local (embedded) backend: a data directory with `journal/`, `state/` and a lock file,
//! an engine thread and a journal-writer thread.
//!
//! Opening: take the lock, recover the journal, catch up (or rebuild) the state store, start
//! the writer and the engine. Every [`Backend`] call becomes one command to the engine.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};

use crate::backend::{Backend, ReserveRequest};
use crate::clock::{Clock, SystemClock};
use crate::engine::{Cmd, Engine};
use crate::error::{Error, Result};
use crate::job::{
    CancelOutcome, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease, LeaseToken,
    NewJob, Selection, Timestamp,
};
use crate::journal::fsutil::{create_dir_durable, fsync_dir};
use crate::journal::manifest::Manifest;
use crate::journal::{recovery, writer};
use crate::lock::DirLock;
use crate::options::Options;
use crate::stats::{Event, Stats};
use crate::store::Store;

/// Sub-directory holding journal files.
pub const JOURNAL_DIR: &str = "journal";
/// Sub-directory holding the sled state.
pub const STATE_DIR: &str = "state";

/// The embedded backend. Use it through [`crate::Queue`].
pub struct Local {
    tx: crossbeam_channel::Sender<Cmd>,
    events: broadcast::Sender<Event>,
    engine: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Opens the state store (0700, its files 0600), rebuilding it from scratch when it does not
/// open. Returns why it was rebuilt, when it was.
fn open_store(state_dir: &Path, cache: u64) -> Result<(Store, Option<String>)> {
    crate::perms::private_dir(state_dir)?;
    match Store::open(state_dir, cache) {
        Ok(s) => Ok((crate::perms::restricted(state_dir, s), None)),
        Err(e) => {
            tracing::warn!(dir = %state_dir.display(), error = %e, "state store does not open; rebuilding it from the journal");
            std::fs::remove_dir_all(state_dir)
                .map_err(|e| Error::io(format!("cannot remove {}", state_dir.display()), e))?;
            crate::perms::private_dir(state_dir)?;
            let s = Store::open(state_dir, cache)?;
            Ok((
                crate::perms::restricted(state_dir, s),
                Some(format!("the state store refuses to open ({e})")),
            ))
        }
    }
}

/// A panic inside the state store (sled) while opening: its message.
struct StatePanic(String);

/// Runs `f`, turning a panic into [`StatePanic`] (sled 0.34 panics on some damaged files).
fn guard<T>(f: impl FnOnce() -> T) -> std::result::Result<T, StatePanic> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        StatePanic(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into()),
        )
    })
}

/// Calls the test hook at a named step of the open path.
fn step(opts: &Options, name: &str) {
    if let Some(f) = &opts.faults {
        f.on_step(name);
    }
}

/// Opens the state store and brings it up to date with the verified, settled journal. When it
/// has to be rebuilt (missing, damaged, refuses to open, behind or ahead of the journal, fails
/// during replay), one warning says why, how many records were replayed and how long it took.
fn recover_state(
    dir: &Path,
    manifest: &Manifest,
    opts: &Options,
    discard: Option<String>,
) -> Result<(Store, u64)> {
    let jdir = dir.join(JOURNAL_DIR);
    let sdir = dir.join(STATE_DIR);
    let started = Instant::now();
    if discard.is_some() && sdir.exists() {
        std::fs::remove_dir_all(&sdir)
            .map_err(|e| Error::io(format!("cannot remove {}", sdir.display()), e))?;
    }
    let existed = sdir.exists();
    let (mut store, mut why) = open_store(&sdir, opts.cache_bytes)?;
    why = discard.or(why);
    if !existed || why.is_some() {
        // state/ was created: make its entry in DIR durable.
        fsync_dir(dir)?;
        step(opts, "open:state-created");
    }
    let rec = match recovery::replay(&jdir, manifest, &store) {
        Ok(r) => r,
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => return Err(e),
        Err(e) => {
            // The state store itself failed: rebuild it from scratch.
            tracing::warn!(error = %e, "state store failed during replay; rebuilding it from the journal");
            why = Some(format!("the state store failed during replay ({e})"));
            drop(store);
            std::fs::remove_dir_all(&sdir)
                .map_err(|e| Error::io(format!("cannot remove {}", sdir.display()), e))?;
            store = open_store(&sdir, opts.cache_bytes)?.0;
            fsync_dir(dir)?;
            recovery::replay(&jdir, manifest, &store)?
        }
    };
    if why.is_none() && !existed && (rec.rebuilt || rec.replayed > 0) {
        why = Some("the state store (state/) was missing".into());
    }
    match why.or(rec.rebuild_reason) {
        Some(reason) => tracing::warn!(
            dir = %sdir.display(),
            %reason,
            records = rec.replayed,
            secs = format_args!("{:.3}", started.elapsed().as_secs_f64()),
            "rebuilt the state store from the journal"
        ),
        None if rec.replayed > 0 => tracing::info!(
            replayed = rec.replayed,
            last_seq = rec.last_seq,
            "journal recovered"
        ),
        None => {}
    }
    Ok((store, rec.last_seq))
}

impl Local {
    /// Opens (creating) the data directory. Blocking: call from a blocking context.
    ///
    /// The journal is verified whole before anything in the directory changes (the lock file
    /// aside), so an open that refuses leaves the directory byte-identical; see
    /// [`recovery`](crate::journal::recovery).
    pub fn open(dir: &Path, opts: Options) -> Result<Local> {
        opts.validate()?;
        if create_dir_durable(dir)? {
            step(&opts, "open:dir-created");
        }
        crate::perms::data_dir(dir)?;
        match Local::open_once(dir, opts.clone(), None) {
            Err(StatePanic(why)) => {
                // sled 0.34 panics on some damaged files instead of returning an error. The
                // journal is the truth: rebuild the state store from it, once.
                tracing::warn!(dir = %dir.display(), %why, "the state store panicked; rebuilding it from the journal");
                Local::open_once(dir, opts, Some(format!("the state store panicked ({why})")))
                    .map_err(|StatePanic(why)| {
                        Error::Backend(format!(
                            "the state store panicked again after a rebuild from the journal ({why})"
                        ))
                    })?
            }
            Ok(r) => r,
        }
    }

    /// One attempt at opening: `Ok(Err(_))` is an ordinary error, `Err(StatePanic)` a panic in
    /// the state store (the lock and every thread are let go by then). `discard` rebuilds the
    /// state store from scratch, giving the reason.
    fn open_once(
        dir: &Path,
        opts: Options,
        discard: Option<String>,
    ) -> std::result::Result<Result<Local>, StatePanic> {
        let lock = match DirLock::acquire(dir) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let jdir = dir.join(JOURNAL_DIR);
        let recovered = guard(|| {
            let verified = recovery::verify(&jdir)?;
            let manifest = recovery::settle(&jdir, &verified, opts.faults.as_deref())?;
            let (store, last_seq) = recover_state(dir, &manifest, &opts, discard)?;
            Ok((manifest, store, last_seq))
        })?;
        let (manifest, store, last_seq) = match recovered {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        step(&opts, "recovery:replayed");
        Local::start(dir, opts, lock, manifest, store, last_seq)
    }

    fn start(
        dir: &Path,
        opts: Options,
        lock: DirLock,
        manifest: Manifest,
        store: Store,
        last_seq: u64,
    ) -> std::result::Result<Result<Local>, StatePanic> {
        let applied = Arc::new(AtomicU64::new(last_seq));
        let failed = Arc::new(AtomicU64::new(0));
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let failed_w = failed.clone();
        let w = writer::Writer::new(
            writer::WriterConfig {
                dir: dir.join(JOURNAL_DIR),
                state_dir: dir.join(STATE_DIR),
                policy: opts.fsync,
                segment_bytes: opts.segment_bytes,
                rewrite_min_bytes: opts.rewrite_min_bytes,
                faults: opts.faults.clone(),
            },
            manifest,
            last_seq,
            store.clone(),
            applied.clone(),
            Box::new(move |last| failed_w.store(last + 1, Ordering::Release)),
            wtx.clone(),
        );
        let w = match w {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let writer_thread = match std::thread::Builder::new()
            .name("durq-journal".into())
            .spawn(move || w.run(wrx))
        {
            Ok(t) => t,
            Err(e) => return Ok(Err(Error::io("cannot start the journal thread", e))),
        };
        let stop_writer = {
            let wtx = wtx.clone();
            move || {
                let (tx, rx) = std::sync::mpsc::channel();
                let _ = wtx.send(writer::Msg::Stop(Box::new(move |r| {
                    let _ = tx.send(r);
                })));
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }
        };
        let clock: Arc<dyn Clock> = opts.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let (events, _) = broadcast::channel(4096);
        let engine = guard(|| {
            Engine::new(
                opts,
                clock,
                store,
                wtx,
                applied,
                last_seq,
                events.clone(),
                failed,
            )
        });
        let engine = match engine {
            Ok(Ok(e)) => e,
            Ok(Err(e)) => {
                stop_writer();
                let _ = writer_thread.join();
                return Ok(Err(e));
            }
            Err(p) => {
                stop_writer();
                let _ = writer_thread.join();
                return Err(p);
            }
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let engine_thread = std::thread::Builder::new()
            .name("durq-engine".into())
            .spawn(move || {
                engine.run(rx);
                let _ = writer_thread.join();
                drop(lock);
            })
            .map_err(|e| Error::io("cannot start the engine thread", e));
        let engine_thread = match engine_thread {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Local {
            tx,
            events,
            engine: Mutex::new(Some(engine_thread)),
            dir: dir.to_path_buf(),
        }))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Cmd) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

#[async_trait]
impl Backend for Local {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.call(|r| Cmd::Enqueue(jobs, r)).await
    }
    async fn reserve(&self, req: ReserveRequest) -> Result<Option<Lease>> {
        self.call(|r| Cmd::Reserve(req, r)).await
    }
    async fn ack(&self, id: JobId, token: LeaseToken) -> Result<()> {
        self.call(|r| Cmd::Ack(id, token, r)).await
    }
    async fn fail(
        &self,
        id: JobId,
        token: LeaseToken,
        error: String,
        action: FailAction,
    ) -> Result<FailOutcome> {
        self.call(|r| Cmd::Fail(id, token, error, action, r)).await
    }
    async fn heartbeat(&self, id: JobId, token: LeaseToken, lease: Duration) -> Result<Timestamp> {
        self.call(|r| Cmd::Heartbeat(id, token, lease, r)).await
    }
    async fn release(&self, id: JobId, token: LeaseToken) -> Result<()> {
        self.call(|r| Cmd::Release(id, token, r)).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.call(|r| Cmd::Get(id, r)).await
    }
    async fn list(&self, queue: &str, state: Option<JobState>, limit: usize) -> Result<Vec<Job>> {
        let q = queue.to_string();
        self.call(|r| Cmd::List(q, state, limit, r)).await
    }
    async fn stats(&self) -> Result<Stats> {
        self.call(Cmd::Stats).await
    }
    async fn requeue_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        let q = queue.to_string();
        self.call(|r| Cmd::Requeue(q, which, r)).await
    }
    async fn purge_dead(&self, queue: &str, which: Selection) -> Result<u64> {
        let q = queue.to_string();
        self.call(|r| Cmd::Purge(q, which, r)).await
    }
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let q = queue.to_string();
        self.call(|r| Cmd::SetPaused(q, paused, r)).await
    }
    async fn pause_key(&self, queue: &str, key: &str, for_: Duration) -> Result<()> {
        let (q, k) = (queue.to_string(), key.to_string());
        self.call(|r| Cmd::PauseKey(q, k, for_, r)).await
    }
    async fn cancel(&self, ids: Vec<JobId>) -> Result<Vec<CancelOutcome>> {
        self.call(|r| Cmd::Cancel(ids, r)).await
    }
    async fn cancel_where(&self, queue: &str, state: JobState, kind: Option<&str>) -> Result<u64> {
        let (q, k) = (queue.to_string(), kind.map(str::to_string));
        self.call(|r| Cmd::CancelWhere(q, state, k, r)).await
    }
    async fn postpone(
        &self,
        id: JobId,
        token: LeaseToken,
        delay: Duration,
        reason: String,
    ) -> Result<FailOutcome> {
        self.call(|r| Cmd::Postpone(id, token, delay, reason, r))
            .await
    }
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
    async fn shutdown(&self) -> Result<()> {
        let r = match self.call(Cmd::Shutdown).await {
            Err(Error::Closed) => Ok(()),
            r => r,
        };
        let handle = self.engine.lock().take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        r
    }
}
