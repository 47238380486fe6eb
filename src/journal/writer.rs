//! The journal writer: one thread owns the active segment and the manifest.
//!
//! Invariants:
//! - **Group commit.** Batches queued while the previous write or fsync ran go out together in
//!   one `write()` and (under `always`) one `fdatasync`, before any of their callers is answered.
//! - **Every policy writes before answering**, so SIGKILL never loses an acknowledged write.
//!   `everysec`: a background thread fdatasyncs once a second; if a sync has been running for more
//!   than 2 s, answers wait for it. `no`: the writer never syncs by itself.
//! - **Write-ahead.** Records reach the state store (through the [`super::applier`] thread) only
//!   after they are written (and under `always`, synced), and after their callers are answered.
//! - **A failed `write()` is cut off** (the file is truncated back) and its callers get the error;
//!   later batches are refused until the engine has reloaded its state and sends `resync`.
//! - **A failed fsync poisons** the writer: every later batch fails with [`Error::Poisoned`]
//!   until the store is reopened (the kernel may have dropped the dirty pages).
//! - Segments are synced before the next one is created; the directory is fsynced after every
//!   create, rename and delete; the manifest is replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::journal::applier::{self, ApplyMsg};
use crate::journal::faults::{observe, observe_arc, Faults, IoEvent, WriteFault};
use crate::journal::format::{
    base_name, encode_record, segment_name, FileHeader, FileKind, HEADER_LEN,
};
use crate::journal::fsutil::fsync_dir_observed;
use crate::journal::manifest::{Manifest, SegEntry};
use crate::options::FsyncPolicy;
use crate::record::Op;
use crate::store::Store;

/// Called once the batch's records are durable per the policy (or failed).
pub type Reply = Box<dyn FnOnce(Result<()>) + Send>;

/// A record ready to write: its seq, the op (for the state store) and its encoded body.
#[derive(Debug)]
pub struct Staged {
    /// Record seq.
    pub seq: u64,
    /// The op.
    pub op: Op,
    /// bincode of `op`.
    pub bytes: Vec<u8>,
}

/// A group of records from the engine.
pub struct Batch {
    /// Records in seq order.
    pub records: Vec<Staged>,
    /// Callers to answer once the records are durable.
    pub replies: Vec<Reply>,
    /// Callers to answer once the records are written (before any fsync): what must survive the
    /// process being killed but needs no sync (a reserve: its attempt is counted).
    pub written: Vec<Reply>,
    /// Set on the first batch after the engine reloaded its state following a failed write.
    pub resync: bool,
}

/// Messages to the writer thread.
pub enum Msg {
    /// Records to append.
    Batch(Batch),
    /// A rewrite finished writing its base.
    BaseReady {
        /// Base number (= first segment it does not cover).
        number: u64,
        /// Seq it covers.
        seq: u64,
        /// Its size.
        bytes: u64,
        /// Whether writing it worked.
        result: Result<()>,
    },
    /// fsync now and answer (shutdown, explicit flush).
    Flush(Reply),
    /// Stop after answering.
    Stop(Reply),
}

/// Told to the engine when an append failed: the seq of the last record that is on disk.
pub type OnFailure = Box<dyn Fn(u64) + Send>;

struct SyncState {
    file: Arc<File>,
    path: PathBuf,
    dirty: bool,
    since: Option<Instant>,
    poisoned: Option<String>,
    stop: bool,
}

struct SyncShared {
    state: Mutex<SyncState>,
    cv: Condvar,
}

/// Settings of the writer.
pub struct WriterConfig {
    /// `journal/` directory.
    pub dir: PathBuf,
    /// `state/` directory (fsynced before a rewrite drops segments).
    pub state_dir: PathBuf,
    /// Fsync policy.
    pub policy: FsyncPolicy,
    /// Rotate segments past this size.
    pub segment_bytes: u64,
    /// No rewrite below this journal size.
    pub rewrite_min_bytes: u64,
    /// Fault hook.
    pub faults: Option<Arc<dyn Faults>>,
}

/// The writer's state; runs on its own thread via [`Writer::run`].
pub struct Writer {
    cfg: WriterConfig,
    manifest: Manifest,
    file: Arc<File>,
    path: PathBuf,
    number: u64,
    len: u64,
    last_seq: u64,
    journal_bytes: u64,
    base_bytes: u64,
    rewriting: bool,
    failed: bool,
    /// Why the last append failed (answered to batches refused until `resync`).
    last_failure: Option<Error>,
    /// After a failed segment roll: not before this time, and the wait after the next failure.
    roll_retry: Option<(Instant, Duration)>,
    /// After a failed rewrite on a full disk: not before this time, and the next wait.
    rewrite_retry: Option<(Instant, Duration)>,
    sync: Arc<SyncShared>,
    syncer: Option<std::thread::JoinHandle<()>>,
    store: Store,
    apply_tx: Option<Sender<ApplyMsg>>,
    applier: Option<std::thread::JoinHandle<()>>,
    /// The running rewrite, if any, and its cancel flag: stop cancels and joins it, so no
    /// thread of this writer touches the directory once the lock is released.
    rewrite: Option<(std::thread::JoinHandle<()>, Arc<AtomicBool>)>,
    on_failure: OnFailure,
    self_tx: Sender<Msg>,
}

impl Writer {
    /// Takes over the last segment of `manifest` (already recovered: its tail is clean).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: WriterConfig,
        manifest: Manifest,
        last_seq: u64,
        store: Store,
        applied: Arc<AtomicU64>,
        on_failure: OnFailure,
        self_tx: Sender<Msg>,
    ) -> Result<Writer> {
        let seg = *manifest
            .segments
            .last()
            .ok_or_else(|| Error::Backend("manifest names no segment".into()))?;
        let path = cfg.dir.join(segment_name(seg.number));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len();
        let mut journal_bytes = 0;
        for s in &manifest.segments {
            journal_bytes += fs::metadata(cfg.dir.join(segment_name(s.number)))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let base_bytes = manifest
            .base
            .and_then(|(n, _)| fs::metadata(cfg.dir.join(base_name(n))).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        let file = Arc::new(file);
        let sync = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                file: file.clone(),
                path: path.clone(),
                dirty: false,
                since: None,
                poisoned: None,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        // Bounded: when the applier falls this many write groups behind, the writer waits, so
        // a flood of writes (fsync `no`, big batches) cannot queue unapplied records without
        // limit (they are held in memory until applied).
        let (apply_tx, apply_rx) = crossbeam_channel::bounded(applier::MAX_BEHIND);
        {
            let jdir = cfg.dir.clone();
            store.set_catch_up(Arc::new(move |fresh, upto| {
                applier::catch_up(fresh, &jdir, upto)
            }));
        }
        let applier = {
            let store = store.clone();
            let applied = applied.clone();
            let shared = sync.clone();
            let jdir = cfg.dir.clone();
            std::thread::Builder::new()
                .name("durq-apply".into())
                .spawn(move || {
                    applier::run(
                        store,
                        applied,
                        apply_rx,
                        jdir,
                        Box::new(move |why| {
                            tracing::error!(%why, "journal poisoned: refusing writes until reopened");
                            let mut st = shared.state.lock();
                            if st.poisoned.is_none() {
                                st.poisoned = Some(why);
                            }
                        }),
                    )
                })
                .map_err(|e| Error::io("cannot start the apply thread", e))?
        };
        let syncer = if cfg.policy == FsyncPolicy::EverySec {
            let shared = sync.clone();
            let faults = cfg.faults.clone();
            Some(
                std::thread::Builder::new()
                    .name("durq-fsync".into())
                    .spawn(move || syncer_loop(shared, faults))
                    .map_err(|e| Error::io("cannot start the fsync thread", e))?,
            )
        } else {
            None
        };
        Ok(Writer {
            cfg,
            manifest,
            file,
            path,
            number: seg.number,
            len,
            last_seq,
            journal_bytes,
            base_bytes,
            rewriting: false,
            failed: false,
            last_failure: None,
            roll_retry: None,
            rewrite_retry: None,
            sync,
            syncer,
            store,
            apply_tx: Some(apply_tx),
            applier: Some(applier),
            rewrite: None,
            on_failure,
            self_tx,
        })
    }

    /// The writer loop: runs until `Stop` or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Batch(first) => {
                    let mut batches = vec![first];
                    let mut other = Vec::new();
                    // Group commit: take whatever else is queued.
                    while batches.len() < 1024 {
                        match rx.try_recv() {
                            Ok(Msg::Batch(b)) => batches.push(b),
                            Ok(m) => {
                                other.push(m);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.write_batches(batches);
                    for m in other {
                        if self.handle_other(m) {
                            return;
                        }
                    }
                }
                m => {
                    if self.handle_other(m) {
                        return;
                    }
                }
            }
        }
        self.stop_syncer();
        let _ = self.stop_threads();
    }

    fn handle_other(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Batch(b) => self.write_batches(vec![b]),
            Msg::BaseReady {
                number,
                seq,
                bytes,
                result,
            } => self.install_base(number, seq, bytes, result),
            Msg::Flush(reply) => reply(self.sync_now()),
            Msg::Stop(reply) => {
                let r = self.sync_now();
                self.stop_syncer();
                let r = r.and(self.stop_threads());
                reply(r);
                return true;
            }
        }
        false
    }

    /// Cancels a running rewrite, lets the applier apply everything written, joins both and
    /// flushes the state store: after this, no thread of this writer uses the directory.
    fn stop_threads(&mut self) -> Result<()> {
        if let Some((h, cancel)) = self.rewrite.take() {
            cancel.store(true, Ordering::Release);
            let _ = h.join();
        }
        self.apply_tx = None;
        if let Some(h) = self.applier.take() {
            let _ = h.join();
        }
        match self.store.flush() {
            // The journal holds every record; the next open replays what sled lacks.
            Err(e @ Error::DiskFull { .. }) => {
                tracing::warn!(error = %e, "cannot flush the state store on a full disk; the next open replays the journal");
                Ok(())
            }
            r => r,
        }
    }

    fn poisoned(&self) -> Option<String> {
        self.sync.state.lock().poisoned.clone()
    }

    fn poison(&self, why: String) {
        tracing::error!(%why, "journal poisoned: refusing writes until reopened");
        let mut st = self.sync.state.lock();
        if st.poisoned.is_none() {
            st.poisoned = Some(why);
        }
    }

    fn write_batches(&mut self, batches: Vec<Batch>) {
        // Split off batches that must be refused.
        let mut ok: Vec<Batch> = Vec::with_capacity(batches.len());
        for b in batches {
            if let Some(p) = self.poisoned() {
                answer(b.written, Err(Error::Poisoned(p.clone())));
                answer(b.replies, Err(Error::Poisoned(p)));
                continue;
            }
            if b.resync {
                self.failed = false;
            }
            if self.failed {
                let refused = || {
                    match &self.last_failure {
                    Some(e @ Error::DiskFull { .. }) => Err(e.duplicate()),
                    _ => Err(Error::io(
                        format!("append to {} refused", self.path.display()),
                        std::io::Error::other(
                            "an earlier append failed and the queue is reloading its state; try again",
                        ),
                    )),
                }
                };
                answer(b.written, refused());
                answer(b.replies, refused());
                continue;
            }
            ok.push(b);
        }
        if ok.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        let mut last = self.last_seq;
        for b in &ok {
            for r in &b.records {
                encode_record(&mut buf, self.number, r.seq, &r.bytes);
                last = r.seq;
            }
        }
        if !buf.is_empty() {
            if let Err(e) = self.append(&buf) {
                self.failed = true;
                self.last_failure = Some(e.duplicate());
                // The engine reloads from the state store: it must hold every written record.
                self.apply_barrier();
                // Tell the engine before any caller sees the error, so that no later command
                // is answered from state that includes the records that were not written.
                (self.on_failure)(self.last_seq);
                for b in ok {
                    answer(b.written, Err(e.duplicate()));
                    answer(b.replies, Err(e.duplicate()));
                }
                return;
            }
            for b in &mut ok {
                answer(std::mem::take(&mut b.written), Ok(()));
            }
            if self.cfg.policy == FsyncPolicy::Always {
                if let Err(e) = self.fdatasync() {
                    let why = e.to_string();
                    self.poison(why.clone());
                    for b in ok {
                        answer(b.replies, Err(Error::Poisoned(why.clone())));
                    }
                    return;
                }
            } else if self.cfg.policy == FsyncPolicy::EverySec {
                self.mark_dirty_and_wait_stall();
            }
            self.last_seq = last;
        }
        // Durable per policy: answer, then apply to the state store.
        let mut records = Vec::new();
        for b in ok {
            answer(b.written, Ok(()));
            answer(b.replies, Ok(()));
            records.extend(b.records);
        }
        if !records.is_empty() {
            if let Some(tx) = &self.apply_tx {
                let _ = tx.send(ApplyMsg::Records(records));
            }
        }
        if self.len >= self.cfg.segment_bytes && due(self.roll_retry) && self.try_rotate().is_err()
        {
            return;
        }
        self.maybe_rewrite();
    }

    /// The data directory (the parent of `journal/`).
    fn data_dir(&self) -> PathBuf {
        self.cfg
            .dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.cfg.dir.clone())
    }

    /// Turns an I/O error that means "disk full" into [`Error::DiskFull`].
    fn typed(&self, e: Error) -> Error {
        if is_disk_full(&e) {
            Error::DiskFull {
                dir: self.data_dir(),
                detail: e.to_string(),
            }
        } else {
            e
        }
    }

    /// Rolls to a new segment; on failure keeps the current one and schedules a retry (a
    /// failed fsync has poisoned the writer already).
    fn try_rotate(&mut self) -> Result<()> {
        match self.rotate() {
            Ok(()) => {
                self.roll_retry = None;
                Ok(())
            }
            Err(e) => {
                let wait = self
                    .roll_retry
                    .map(|(_, w)| (w * 2).min(RETRY_MAX))
                    .unwrap_or(RETRY_FIRST);
                self.roll_retry = Some((Instant::now() + wait, wait));
                tracing::warn!(error = %e, file = %self.path.display(), retry_in_ms = wait.as_millis() as u64, "cannot start a new journal segment; appending to the current one and retrying later");
                Err(e)
            }
        }
    }

    fn append(&mut self, buf: &[u8]) -> Result<()> {
        let fault = match &self.cfg.faults {
            Some(f) => f.on_write(&self.path, buf.len()),
            None => WriteFault::None,
        };
        let res = match fault {
            WriteFault::None => self.file.write_all_at(buf, self.len).map(|()| {
                let (file, offset) = (&self.path, self.len);
                observe_arc(
                    &self.cfg.faults,
                    IoEvent::Wrote {
                        file,
                        offset,
                        bytes: buf,
                    },
                );
            }),
            WriteFault::Fail(e) => Err(e),
            WriteFault::Short(n, e) => {
                let n = n.min(buf.len());
                if self.file.write_all_at(&buf[..n], self.len).is_ok() {
                    let (file, offset, bytes) = (&self.path, self.len, &buf[..n]);
                    observe_arc(
                        &self.cfg.faults,
                        IoEvent::Wrote {
                            file,
                            offset,
                            bytes,
                        },
                    );
                }
                Err(e)
            }
        };
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                self.journal_bytes += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the write landed.
                let cut = self.file.set_len(self.len);
                if cut.is_ok() {
                    let (file, len) = (&self.path, self.len);
                    observe_arc(&self.cfg.faults, IoEvent::Truncated { file, len });
                }
                if let Err(te) = cut {
                    self.poison(format!(
                        "cannot truncate {} after a failed write: {te}",
                        self.path.display()
                    ));
                }
                let what = format!("cannot append to journal segment {}", self.path.display());
                if Error::is_disk_full_io(&e) {
                    tracing::warn!(file = %self.path.display(), error = %e, "journal append failed: disk full; truncated back");
                    Err(Error::DiskFull {
                        dir: self.data_dir(),
                        detail: format!("{what}: {e}"),
                    })
                } else {
                    tracing::warn!(file = %self.path.display(), error = %e, "journal append failed; truncated back");
                    Err(Error::io(what, e))
                }
            }
        }
    }

    fn fdatasync(&self) -> Result<()> {
        let t = Instant::now();
        let r = (|| {
            if let Some(f) = &self.cfg.faults {
                f.on_sync(&self.path)?;
            }
            observe_arc(&self.cfg.faults, IoEvent::SyncStart { path: &self.path });
            self.file.sync_data()?;
            observe_arc(&self.cfg.faults, IoEvent::SyncDone { path: &self.path });
            Ok(())
        })();
        crate::metrics::fsync::observe(&self.path, t.elapsed());
        r.map_err(|e: std::io::Error| {
            Error::io(format!("fsync of {} failed", self.path.display()), e)
        })
    }

    fn mark_dirty_and_wait_stall(&self) {
        let mut st = self.sync.state.lock();
        st.dirty = true;
        let mut waited = None;
        while let Some(since) = st.since {
            if since.elapsed() < Duration::from_secs(2) {
                break;
            }
            // A sync has been pending for over 2 s: hold answers until it is done.
            waited.get_or_insert_with(Instant::now);
            self.sync.cv.wait_for(&mut st, Duration::from_millis(100));
        }
        if let Some(t) = waited {
            let path = st.path.clone();
            drop(st);
            crate::metrics::fsync::append_waited(&path, t.elapsed());
        }
    }

    fn sync_now(&mut self) -> Result<()> {
        if let Some(p) = self.poisoned() {
            return Err(Error::Poisoned(p));
        }
        if self.cfg.policy == FsyncPolicy::No {
            return Ok(());
        }
        match self.fdatasync() {
            Ok(()) => Ok(()),
            Err(e) => {
                self.poison(e.to_string());
                Err(e)
            }
        }
    }

    /// Waits until every record sent so far is applied to the state store.
    fn apply_barrier(&self) {
        if let Some(tx) = &self.apply_tx {
            let (btx, brx) = crossbeam_channel::bounded(1);
            if tx.send(ApplyMsg::Barrier(btx)).is_ok() {
                let _ = brx.recv();
            }
        }
    }

    fn stop_syncer(&mut self) {
        self.apply_tx = None;
        if let Some(h) = self.applier.take() {
            let _ = h.join();
        }
        {
            let mut st = self.sync.state.lock();
            st.stop = true;
        }
        self.sync.cv.notify_all();
        if let Some(h) = self.syncer.take() {
            let _ = h.join();
        }
    }

    fn step(&self, name: &str) {
        if let Some(f) = &self.cfg.faults {
            f.on_step(name);
        }
    }

    /// Syncs the active segment, starts the next one and names it in the manifest. On a full
    /// disk nothing changes (the half-made segment is removed) and the error is
    /// [`Error::DiskFull`]; a failed fsync poisons.
    fn rotate(&mut self) -> Result<()> {
        if let Err(e) = self.fdatasync() {
            self.poison(e.to_string());
            return Err(e);
        }
        let number = self.number + 1;
        let path = self.cfg.dir.join(segment_name(number));
        let undo = |e: Error| {
            let _ = fs::remove_file(&path);
            e
        };
        let faults = self.cfg.faults.as_deref();
        let file = inject(faults, &path, HEADER_LEN)
            .and_then(|()| {
                create_journal_file_observed(
                    &path,
                    FileKind::Segment,
                    number,
                    self.last_seq,
                    faults,
                )
            })
            .map_err(|e| self.typed(undo(e)))?;
        if let Err(e) = fsync_dir_observed(&self.cfg.dir, faults) {
            let e = self.typed(undo(e));
            if !matches!(e, Error::DiskFull { .. }) {
                self.poison(e.to_string());
            }
            return Err(e);
        }
        self.step("rotate:segment-created");
        let mut m = self.manifest.clone();
        m.segments.push(SegEntry {
            number,
            start_seq: self.last_seq,
        });
        if let Err(e) = self.store_manifest(&m) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.manifest = m;
        self.file = Arc::new(file);
        self.path = path.clone();
        self.number = number;
        self.len = crate::journal::format::HEADER_LEN as u64;
        self.journal_bytes += self.len;
        let mut st = self.sync.state.lock();
        st.file = self.file.clone();
        st.path = path;
        st.dirty = false;
        Ok(())
    }

    /// Writes `m` as the manifest. When that fails, reads the manifest back: if the new one is
    /// in place (only the directory fsync failed) it is kept — and a failed fsync poisons —;
    /// if the old one is, nothing changed and the (typed) error is returned; otherwise poisons.
    fn store_manifest(&mut self, m: &Manifest) -> Result<()> {
        let tmp = self.cfg.dir.join("MANIFEST.tmp");
        let stored = inject(self.cfg.faults.as_deref(), &tmp, m.encode().len())
            .and_then(|()| m.store_with(&self.cfg.dir, self.cfg.faults.as_deref()));
        let e = match stored {
            Ok(()) => return Ok(()),
            Err(e) => self.typed(e),
        };
        let _ = fs::remove_file(self.cfg.dir.join("MANIFEST.tmp"));
        match Manifest::load(&self.cfg.dir) {
            Ok(Some(on_disk)) if &on_disk == m => {
                if matches!(e, Error::DiskFull { .. }) {
                    tracing::warn!(error = %e, "the new manifest is in place but the directory fsync failed on a full disk; continuing");
                } else {
                    self.poison(format!("manifest written but not synced: {e}"));
                }
                Ok(())
            }
            Ok(Some(on_disk)) if on_disk == self.manifest => Err(e),
            other => {
                self.poison(format!(
                    "cannot tell which manifest is in force after a failed write ({e}; read back: {other:?})"
                ));
                Err(e)
            }
        }
    }

    fn maybe_rewrite(&mut self) {
        if self.rewriting
            || self.journal_bytes < self.cfg.rewrite_min_bytes
            || self.journal_bytes < 2 * self.base_bytes
            || !due(self.rewrite_retry)
        {
            return;
        }
        if let Err(e) = self.try_rotate() {
            self.rewrite_failed(&e);
            return;
        }
        self.apply_barrier();
        self.rewriting = true;
        let number = self.number;
        let seq = self.last_seq;
        let store = self.store.clone();
        let dir = self.cfg.dir.clone();
        let state_dir = self.cfg.state_dir.clone();
        let faults = self.cfg.faults.clone();
        let tx = self.self_tx.clone();
        tracing::info!(
            journal_bytes = self.journal_bytes,
            base = number,
            "journal rewrite started"
        );
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("durq-rewrite".into())
            .spawn(move || {
                let (result, bytes) = match write_base(
                    &dir,
                    &state_dir,
                    number,
                    seq,
                    &store,
                    faults.as_deref(),
                    &cancelled,
                ) {
                    Ok(b) => (Ok(()), b),
                    Err(e) => (Err(e), 0),
                };
                let _ = tx.send(Msg::BaseReady {
                    number,
                    seq,
                    bytes,
                    result,
                });
            });
        match spawned {
            Ok(h) => {
                if let Some((old, _)) = self.rewrite.replace((h, cancel)) {
                    let _ = old.join();
                }
            }
            Err(_) => self.rewriting = false,
        }
    }

    /// After a failed rewrite: on a full disk, retry with backoff; otherwise wait for the
    /// journal to grow by another `rewrite_min`.
    fn rewrite_failed(&mut self, e: &Error) {
        if matches!(e, Error::DiskFull { .. }) {
            let wait = self
                .rewrite_retry
                .map(|(_, w)| (w * 2).min(RETRY_MAX))
                .unwrap_or(RETRY_FIRST);
            self.rewrite_retry = Some((Instant::now() + wait, wait));
            tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "journal rewrite failed on a full disk; keeping the old files and retrying later");
        } else {
            tracing::warn!(error = %e, "journal rewrite failed; keeping the old files");
            // Do not retry at once: wait for the journal to grow by another rewrite_min.
            self.base_bytes = self.journal_bytes;
        }
    }

    fn install_base(&mut self, number: u64, seq: u64, bytes: u64, result: Result<()>) {
        self.rewriting = false;
        if let Err(e) = result {
            let base = self.cfg.dir.join(base_name(number));
            if fs::remove_file(&base).is_ok() {
                observe_arc(&self.cfg.faults, IoEvent::Removed { file: &base });
            }
            let e = self.typed(e);
            self.rewrite_failed(&e);
            return;
        }
        // The scan ran while writers went on: the base may hold effects of any record written
        // so far, synced or not. Make them all durable before a manifest names the base, or a
        // power cut could leave a base ahead of the journal (a hole). Rotation synced the older
        // segments, so syncing the active one covers every written record.
        if let Err(e) = self.fdatasync() {
            self.poison(e.to_string());
            tracing::warn!(error = %e, "cannot sync the journal before installing the rewritten base; keeping the old files");
            return;
        }
        let old = self.manifest.clone();
        let mut m = old.clone();
        m.base = Some((number, seq));
        m.segments.retain(|s| s.number >= number);
        if let Err(e) = self.store_manifest(&m) {
            let base = self.cfg.dir.join(base_name(number));
            if fs::remove_file(&base).is_ok() {
                observe_arc(&self.cfg.faults, IoEvent::Removed { file: &base });
            }
            self.rewrite_failed(&e);
            return;
        }
        self.rewrite_retry = None;
        self.step("rewrite:manifest-written");
        self.manifest = m;
        let old_files = old.base.iter().map(|(n, _)| base_name(*n)).chain(
            (old.segments.iter().filter(|s| s.number < number)).map(|s| segment_name(s.number)),
        );
        for name in old_files {
            let file = self.cfg.dir.join(name);
            if fs::remove_file(&file).is_ok() {
                observe_arc(&self.cfg.faults, IoEvent::Removed { file: &file });
            }
            self.step("rewrite:deleting-old");
        }
        let _ = fsync_dir_observed(&self.cfg.dir, self.cfg.faults.as_deref());
        self.step("rewrite:old-deleted");
        self.base_bytes = bytes;
        self.journal_bytes = self
            .manifest
            .segments
            .iter()
            .map(|s| {
                fs::metadata(self.cfg.dir.join(segment_name(s.number)))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum();
        tracing::info!(
            base = number,
            base_bytes = bytes,
            journal_bytes = self.journal_bytes,
            "journal rewrite done"
        );
    }
}

/// Asks the fault hook about a write of `len` bytes to `path` (segment and base headers, base
/// records, the manifest): a fault becomes the I/O error the write would have returned.
fn inject(faults: Option<&dyn Faults>, path: &Path, len: usize) -> Result<()> {
    let fault = match faults {
        Some(f) => f.on_write(path, len),
        None => return Ok(()),
    };
    match fault {
        WriteFault::None => Ok(()),
        WriteFault::Fail(e) | WriteFault::Short(_, e) => {
            Err(Error::io(format!("cannot write {}", path.display()), e))
        }
    }
}

/// First wait before retrying a failed segment roll or rewrite on a full disk.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// True when no retry is scheduled or its time has come.
fn due(retry: Option<(Instant, Duration)>) -> bool {
    retry.is_none_or(|(at, _)| Instant::now() >= at)
}

/// True for an I/O error that means the disk is full.
fn is_disk_full(e: &Error) -> bool {
    match e {
        Error::DiskFull { .. } => true,
        Error::Io { source, .. } => Error::is_disk_full_io(source),
        _ => false,
    }
}

fn answer(replies: Vec<Reply>, r: Result<()>) {
    match r {
        Ok(()) => replies.into_iter().for_each(|f| f(Ok(()))),
        Err(e) => replies.into_iter().for_each(|f| f(Err(e.duplicate()))),
    }
}

/// Creates a journal file with its header, synced.
pub fn create_journal_file(path: &Path, kind: FileKind, number: u64, seq: u64) -> Result<File> {
    create_journal_file_observed(path, kind, number, seq, None)
}

/// [`create_journal_file`], reporting each I/O to the journal's test hook.
pub fn create_journal_file_observed(
    path: &Path,
    kind: FileKind,
    number: u64,
    seq: u64,
    faults: Option<&dyn Faults>,
) -> Result<File> {
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    let file = crate::perms::file_options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io("cannot create", e))?;
    observe(faults, IoEvent::Created { file: path });
    let h = FileHeader { kind, number, seq }.encode();
    file.write_all_at(&h, 0)
        .map_err(|e| io("cannot write", e))?;
    observe(
        faults,
        IoEvent::Wrote {
            file: path,
            offset: 0,
            bytes: &h,
        },
    );
    observe(faults, IoEvent::SyncStart { path });
    file.sync_all().map_err(|e| io("cannot fsync", e))?;
    observe(faults, IoEvent::SyncDone { path });
    Ok(file)
}

/// Writes `number.base` from the state store (a fuzzy snapshot: see `journal` module docs),
/// fsyncs it and the state store. Returns its size.
fn write_base(
    dir: &Path,
    state_dir: &Path,
    number: u64,
    seq: u64,
    store: &Store,
    faults: Option<&dyn Faults>,
    cancel: &AtomicBool,
) -> Result<u64> {
    use std::io::Write;
    let path = dir.join(base_name(number));
    if fs::remove_file(&path).is_ok() {
        observe(faults, IoEvent::Removed { file: &path });
    }
    inject(faults, &path, HEADER_LEN)?;
    let file = create_journal_file_observed(&path, FileKind::Base, number, seq, faults)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rec_seq = 0u64;
    let mut buf = Vec::new();
    let mut size = crate::journal::format::HEADER_LEN as u64;
    let io = |e| Error::io(format!("cannot write {}", path.display()), e);
    // Header already written at offset 0 with pwrite; position the buffered writer after it.
    {
        use std::io::Seek;
        w.get_mut()
            .seek(std::io::SeekFrom::Start(size))
            .map_err(io)?;
    }
    if let Some(f) = faults {
        f.on_step("rewrite:scan-start");
    }
    store.snapshot(|op| {
        if cancel.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        rec_seq += 1;
        buf.clear();
        encode_record(&mut buf, number, rec_seq, &op.encode()?);
        inject(faults, &path, buf.len())?;
        w.write_all(&buf).map_err(io)?;
        let (file, offset, bytes) = (&path, size, &buf[..]);
        observe(
            faults,
            IoEvent::Wrote {
                file,
                offset,
                bytes,
            },
        );
        size += buf.len() as u64;
        Ok(())
    })?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    observe(faults, IoEvent::SyncStart { path: &path });
    file.sync_all().map_err(io)?;
    observe(faults, IoEvent::SyncDone { path: &path });
    fsync_dir_observed(dir, faults)?;
    if let Some(f) = faults {
        f.on_step("rewrite:base-written");
    }
    store.flush()?;
    crate::journal::fsutil::fsync_tree(state_dir)?;
    Ok(size)
}

fn syncer_loop(shared: Arc<SyncShared>, faults: Option<Arc<dyn Faults>>) {
    loop {
        let (file, path) = {
            let mut st = shared.state.lock();
            if st.stop {
                return;
            }
            shared.cv.wait_for(&mut st, Duration::from_secs(1));
            if st.stop {
                return;
            }
            if !st.dirty || st.poisoned.is_some() {
                continue;
            }
            st.dirty = false;
            st.since = Some(Instant::now());
            (st.file.clone(), st.path.clone())
        };
        let t = Instant::now();
        let res = match &faults {
            Some(f) => f.on_sync(&path).and_then(|_| {
                f.on_io(&IoEvent::SyncStart { path: &path });
                file.sync_data()?;
                f.on_io(&IoEvent::SyncDone { path: &path });
                Ok(())
            }),
            None => file.sync_data(),
        };
        crate::metrics::fsync::observe(&path, t.elapsed());
        let mut st = shared.state.lock();
        st.since = None;
        if let Err(e) = res {
            let why = format!("fsync of {} failed: {e}", path.display());
            tracing::error!(%why, "background fsync failed; refusing writes until reopened");
            st.poisoned = Some(why);
        }
        shared.cv.notify_all();
    }
}
