//! I/O faults through the journal's fault hook: ENOSPC and short writes on append, EIO on
//! fsync. Acknowledged writes are never lost; reads keep working; writes resume once space
//! returns; a failed fsync poisons the store until it is reopened.

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
                assert!(matches!(e, Error::Io { .. }), "{e}");
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
        Error::Io { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{err}")
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(f.writes_failed.load(Ordering::SeqCst) >= 1);
    // The part of the write that landed was cut off.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
    // A batch fails as a whole too.
    let batch = (0..3)
        .map(|i| NewJob::new("q", payload(200 + i, 50)))
        .collect();
    assert!(q.enqueue_batch(batch).await.is_err());

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
