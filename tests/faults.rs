//! I/O faults through the journal's fault hook: ENOSPC and short writes on append, ENOSPC at a
//! segment roll, a manifest write and a base write (rewrite), EIO on fsync, a slow fsync.
//! Acknowledged writes are never lost; reads keep working; a full disk is the typed
//! `DiskFull` naming the data directory and heals by itself once space returns; a failed fsync
//! poisons the store until it is reopened; a slow fsync is logged, counted and exported.

mod dur_util;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dur_util::*;
use durq::journal::faults::{Faults, WriteFault};
use durq::{Error, FsyncPolicy, NewJob, Queue};

#[derive(Default)]
struct Switch {
    enospc: AtomicBool,
    short: AtomicBool,
    eio_sync: AtomicBool,
    writes_failed: AtomicU32,
    syncs_failed: AtomicU32,
}

impl Faults for Switch {
    fn on_write(&self, _file: &Path, len: usize) -> WriteFault {
        if self.enospc.load(Ordering::SeqCst) {
            self.writes_failed.fetch_add(1, Ordering::SeqCst);
            return WriteFault::Fail(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.short.load(Ordering::SeqCst) {
            self.writes_failed.fetch_add(1, Ordering::SeqCst);
            return WriteFault::Short(len / 2, std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        WriteFault::None
    }
    fn on_sync(&self, _file: &Path) -> std::io::Result<()> {
        if self.eio_sync.load(Ordering::SeqCst) {
            self.syncs_failed.fetch_add(1, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

async fn open_with(dir: &Path, policy: FsyncPolicy, f: Arc<Switch>) -> Queue {
    Queue::builder(dir)
        .fsync(policy)
        .faults(f)
        .open()
        .await
        .unwrap()
}

/// Enqueues until one succeeds, for at most 5 s (the engine reloads its state after a failed
/// append; the first write after that may still be refused).
async fn enqueue_eventually(q: &Queue, p: Vec<u8>) -> durq::JobId {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut tries = 0;
    loop {
        tries += 1;
        match q.enqueue(NewJob::new("q", p.clone())).await {
            Ok(e) => {
                assert!(tries <= 2, "writes resumed only after {tries} tries");
                return e.id;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, Error::DiskFull { .. }), "{e}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    }
}

async fn append_failure(short: bool) {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(Switch::default());
    let q = open_with(dir.path(), FsyncPolicy::Always, f.clone()).await;
    let mut acked = fill(&q, 10, 100).await;
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();

    if short { &f.short } else { &f.enospc }.store(true, Ordering::SeqCst);
    let err = q
        .enqueue(NewJob::new("q", payload(99, 100)))
        .await
        .unwrap_err();
    match &err {
        Error::DiskFull { dir: d, detail } => {
            assert_eq!(d, dir.path(), "{err}");
            assert!(detail.contains("No space left"), "{detail}");
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    assert!(f.writes_failed.load(Ordering::SeqCst) >= 1);
    // The part of the write that landed was cut off.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    // A batch fails as a whole too.
    let batch = (0..3)
        .map(|i| NewJob::new("q", payload(200 + i, 50)))
        .collect();
    let r = q.enqueue_batch(batch).await;
    assert!(matches!(r, Err(Error::DiskFull { .. })), "{r:?}");

    // Reads still work and see exactly the acknowledged jobs.
    let got = jobs(&q).await;
    assert_eq!(got.len(), acked.len());
    for (id, p) in &acked {
        assert_eq!(got.get(id), Some(p));
    }
    assert_eq!(
        q.stats().await.unwrap().queues["q"].waiting,
        acked.len() as u64
    );

    // Space returns: writes work again.
    f.short.store(false, Ordering::SeqCst);
    f.enospc.store(false, Ordering::SeqCst);
    let id = enqueue_eventually(&q, payload(100, 100)).await;
    acked.push((id, payload(100, 100)));
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    assert_eq!(l.job.id, acked[0].0, "FIFO order survives the reload");
    q.ack(&l).await.unwrap();
    q.shutdown().await.unwrap();

    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .open()
        .await
        .unwrap();
    let got = jobs(&q).await;
    assert_eq!(
        got.len(),
        acked.len(),
        "nothing but the acknowledged jobs after reopen"
    );
    for (id, p) in &acked {
        assert_eq!(got.get(id), Some(p));
    }
    assert_eq!(
        q.get(acked[0].0).await.unwrap().unwrap().state,
        durq::JobState::Completed
    );
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_on_append_errors_and_writes_resume() {
    append_failure(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_write_on_append_is_cut_off_and_writes_resume() {
    append_failure(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_on_fsync_under_always_poisons_until_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(Switch::default());
    let q = Arc::new(open_with(dir.path(), FsyncPolicy::Always, f.clone()).await);
    let acked = fill(&q, 10, 100).await;

    f.eio_sync.store(true, Ordering::SeqCst);
    // A group of concurrent callers: every one of them gets an error.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            q.enqueue(NewJob::new("q", payload(1000 + i, 100))).await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert!(matches!(r, Err(Error::Poisoned(_))), "{r:?}");
    }
    assert!(f.syncs_failed.load(Ordering::SeqCst) >= 1);
    // Later writes are refused even though fsync would work now: no success is ever claimed
    // for records whose sync failed.
    f.eio_sync.store(false, Ordering::SeqCst);
    let r = q.enqueue(NewJob::new("q", payload(2000, 100))).await;
    assert!(matches!(r, Err(Error::Poisoned(_))), "{r:?}");
    // Reads still work.
    let got = q.get(acked[3].0).await.unwrap().unwrap();
    assert_eq!(got.payload, acked[3].1);
    let _ = q.shutdown().await;
    drop(q);

    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .open()
        .await
        .unwrap();
    let got = jobs(&q).await;
    for (id, p) in &acked {
        assert_eq!(got.get(id), Some(p), "acknowledged job {id} lost");
    }
    // Whatever else is there is one of the records whose callers were told it failed.
    for (id, p) in &got {
        if !acked.iter().any(|(a, _)| a == id) {
            assert!(p.starts_with(b"job-001"), "unexpected job {id}");
        }
    }
    q.enqueue(NewJob::new("q", b"after".to_vec()))
        .await
        .unwrap();
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eio_on_background_fsync_under_everysec_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(Switch::default());
    let q = open_with(dir.path(), FsyncPolicy::EverySec, f.clone()).await;
    let acked = fill(&q, 5, 100).await;
    f.eio_sync.store(true, Ordering::SeqCst);
    // Writes are answered after write(); the next background sync fails and poisons.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    loop {
        i += 1;
        match q.enqueue(NewJob::new("q", payload(500 + i, 10))).await {
            Ok(_) => assert!(
                Instant::now() < deadline,
                "background fsync failure never surfaced"
            ),
            Err(Error::Poisoned(_)) => break,
            Err(e) => panic!("expected Poisoned, got {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // pacing the writes, not syncing
    }
    let _ = q.shutdown().await;
    drop(q);
    let q = Queue::open(dir.path()).await.unwrap();
    let got = jobs(&q).await;
    for (id, p) in &acked {
        assert_eq!(got.get(id), Some(p));
    }
    q.shutdown().await.unwrap();
}

/// Fails writes to files of one kind with ENOSPC while `on` (segment headers of a roll, the
/// manifest, a base), counting them.
#[derive(Default)]
struct SiteFault {
    on: AtomicBool,
    site: std::sync::Mutex<&'static str>,
    hits: AtomicU32,
}

impl Faults for SiteFault {
    fn on_write(&self, file: &Path, _len: usize) -> WriteFault {
        let name = file.file_name().unwrap().to_string_lossy();
        let site = *self.site.lock().unwrap();
        let hit = match site {
            "roll" => name.ends_with(".seg") && !file.exists(),
            "manifest" => name == "MANIFEST.tmp",
            "base" => name.ends_with(".base"),
            _ => false,
        };
        if hit && self.on.load(Ordering::SeqCst) {
            self.hits.fetch_add(1, Ordering::SeqCst);
            return WriteFault::Fail(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        WriteFault::None
    }
}

fn journal_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn manifest(dir: &Path) -> durq::journal::manifest::Manifest {
    durq::journal::manifest::Manifest::load(&dir.join("journal"))
        .unwrap()
        .unwrap()
}

/// ENOSPC at `site` while writing: every write is still acknowledged (the journal keeps
/// appending to the current segment), nothing is poisoned, no half-made file stays, and once
/// the fault is gone the roll / rewrite happens by itself.
async fn full_at_site(site: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(SiteFault::default());
    *f.site.lock().unwrap() = site;
    f.on.store(true, Ordering::SeqCst);
    let (seg, rewrite) = if site == "base" {
        (64 << 20, 64 << 10)
    } else {
        (64 << 10, 64 << 20)
    };
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .segment_bytes(seg)
        .rewrite_min_bytes(rewrite)
        .faults(f.clone())
        .open()
        .await
        .unwrap();
    let mut acked = fill(&q, 400, 200).await;
    assert!(
        f.hits.load(Ordering::SeqCst) >= 1,
        "the {site} write was reached"
    );
    let m = manifest(dir.path());
    assert_eq!(m.base, None);
    if site != "base" {
        assert_eq!(m.segments.len(), 1, "no roll took effect");
    }
    let names = journal_names(dir.path());
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".seg")).count(),
        m.segments.len(),
        "no half-made segment is left: {names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".base") || n.ends_with(".tmp")),
        "{names:?}"
    );
    let got = jobs(&q).await;
    assert_eq!(got.len(), acked.len());

    f.on.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 10_000;
    loop {
        let m = manifest(dir.path());
        let done = if site == "base" {
            m.base.is_some()
        } else {
            m.segments.len() >= 2
        };
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the {site} was never retried");
        let p = payload(i, 200);
        acked.push((q.enqueue(NewJob::new("q", p.clone())).await.unwrap().id, p));
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await; // pacing writes past the backoff
    }
    q.shutdown().await.unwrap();
    let q = Queue::builder(dir.path()).open().await.unwrap();
    let got = jobs(&q).await;
    assert_eq!(got.len(), acked.len());
    for (id, p) in &acked {
        assert_eq!(got.get(id), Some(p), "acknowledged job {id} lost");
    }
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_at_segment_roll_keeps_appending_and_rolls_later() {
    full_at_site("roll").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_at_manifest_write_undoes_the_roll_and_retries() {
    full_at_site("manifest").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_at_base_write_keeps_old_files_and_retries() {
    full_at_site("base").await;
}

/// Sleeps in every fsync while `slow` is set.
#[derive(Default)]
struct SlowSync {
    slow: AtomicBool,
}

impl Faults for SlowSync {
    fn on_sync(&self, _file: &Path) -> std::io::Result<()> {
        if self.slow.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3));
        }
        Ok(())
    }
}

/// GET `path` from a loopback server; returns the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` in /metrics"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_fsync_is_logged_counted_and_exported() {
    let _log = log();
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(SlowSync::default());
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .faults(f.clone())
        .open()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = durq::http::AppState {
        queue: q.clone(),
        metrics: Arc::new(durq::metrics::Metrics::new()),
        auth: None,
        security: Arc::new(
            durq::http::Security::new(addr, &[], false, durq::http::Limits::default()).unwrap(),
        ),
    };
    let server = tokio::spawn(async move {
        axum::serve(listener, durq::http::router(state))
            .await
            .unwrap();
    });
    let before = http_get(addr, "/metrics").await;
    let slow0 = sample(&before, "durq_fsync_delayed_total{reason=\"slow_fsync\"}");
    let count0 = sample(&before, "durq_fsync_seconds_count");

    // `always`: the enqueue's own fsync takes 3 s.
    f.slow.store(true, Ordering::SeqCst);
    let t = Instant::now();
    q.enqueue(NewJob::new("q", b"slow".to_vec())).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(2900));
    let seg = segments(dir.path()).pop().unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let lines = log_lines("fsync of");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&name) && l.contains("took 3.")),
        "a warning names the file and the time: {lines:?}"
    );

    let after = http_get(addr, "/metrics").await;
    for family in ["durq_fsync_delayed_total", "durq_fsync_seconds"] {
        assert!(
            after.contains(&format!("# HELP {family} ")),
            "{family} HELP"
        );
        assert!(
            after.contains(&format!("# TYPE {family} ")),
            "{family} TYPE"
        );
    }
    assert!(sample(&after, "durq_fsync_delayed_total{reason=\"slow_fsync\"}") >= slow0 + 1.0);
    assert!(sample(&after, "durq_fsync_seconds_count") >= count0 + 1.0);
    // The slow fsync sits in the buckets above 2.5 s only.
    let le_1 = sample(&after, "durq_fsync_seconds_bucket{le=\"2.5\"}");
    let inf = sample(&after, "durq_fsync_seconds_bucket{le=\"+Inf\"}");
    assert!(inf >= le_1 + 1.0, "le=2.5: {le_1}, +Inf: {inf}");
    server.abort();
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everysec_append_waiting_for_a_stalled_fsync_is_counted() {
    let _log = log();
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(SlowSync::default());
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::EverySec)
        .faults(f.clone())
        .open()
        .await
        .unwrap();
    let waited0 = durq::metrics::fsync::delayed().1;
    f.slow.store(true, Ordering::SeqCst);
    q.enqueue(NewJob::new("q", b"a".to_vec())).await.unwrap();
    // Keep appending until one has waited for the stalled background fsync (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while durq::metrics::fsync::delayed().1 == waited0 {
        assert!(
            Instant::now() < deadline,
            "no append waited for the stalled fsync"
        );
        q.enqueue(NewJob::new("q", payload(i, 10))).await.unwrap();
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await; // pacing the writes, not syncing
    }
    let lines = log_lines("waited");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(".seg") && l.contains("everysec")),
        "{lines:?}"
    );
    q.shutdown().await.unwrap();
}
