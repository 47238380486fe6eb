//! SPEC G1 under `always`: a job is handed to a worker only once its enqueue record is durable.
//!
//! A fault hook blocks the writer's fdatasync on a barrier: while it is blocked, the enqueue
//! has been written but not synced; a waiting reserve must not get the job (and the engine must
//! not have leased it); once the sync is released, the reserve gets it. A failed fsync (EIO)
//! means the job is never handed out. A requeued dead letter waits for its requeue's sync.
//! Reopening under `always` syncs the recovered journal (which the previous process may have
//! written but not synced) before it serves anything. Under `everysec` the job is handed out
//! without waiting for a sync (today's behaviour).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durq::journal::faults::Faults;
use durq::{FsyncPolicy, JobState, Lease, NewJob, Queue, ReserveRequest};
use parking_lot::{Condvar, Mutex};

/// Blocks fdatasync while `hold` is set (counting how many syncs are blocked), or fails it
/// with EIO while `eio` is set.
#[derive(Default)]
struct SyncGate {
    hold: AtomicBool,
    eio: AtomicBool,
    blocked: Mutex<u32>,
    cv: Condvar,
}

impl SyncGate {
    fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
        let _g = self.blocked.lock();
        self.cv.notify_all();
    }
    /// Waits until a sync is blocked in the hook (panics after `timeout`).
    fn wait_blocked(&self, timeout: Duration) {
        let mut n = self.blocked.lock();
        let deadline = std::time::Instant::now() + timeout;
        while *n == 0 {
            assert!(
                !self.cv.wait_until(&mut n, deadline).timed_out(),
                "no fdatasync reached the hook within {timeout:?}"
            );
        }
    }
}

impl Faults for SyncGate {
    fn on_sync(&self, _file: &Path) -> std::io::Result<()> {
        if self.eio.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        let mut n = self.blocked.lock();
        if self.hold.load(Ordering::SeqCst) {
            *n += 1;
            self.cv.notify_all();
            while self.hold.load(Ordering::SeqCst) {
                self.cv.wait(&mut n);
            }
            *n -= 1;
        }
        Ok(())
    }
}

async fn open(dir: &Path, policy: FsyncPolicy, gate: Arc<SyncGate>) -> Queue {
    Queue::builder(dir)
        .fsync(policy)
        .faults(gate)
        .open()
        .await
        .unwrap()
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = durq::Result<Option<Lease>>>>>;

/// A long-poll reserve on "q", polled once so its command is in the engine's channel.
async fn waiting_reserve(q: &Queue, wait: Duration) -> Pending {
    let q2 = q.clone();
    let mut fut: Pending =
        Box::pin(async move { q2.reserve_with(ReserveRequest::new(["q"]).wait(wait)).await });
    tokio::select! {
        biased;
        r = &mut fut => panic!("the reserve answered before any job existed: {r:?}"),
        _ = std::future::ready(()) => {}
    }
    // A round trip through the engine: the reserve (sent first) is now a registered waiter.
    q.stats().await.unwrap();
    fut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_waits_for_the_enqueue_sync_before_handing_out() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let q = open(dir.path(), FsyncPolicy::Always, gate.clone()).await;
    let mut reserve = waiting_reserve(&q, Duration::from_secs(30)).await;

    gate.hold.store(true, Ordering::SeqCst);
    let q2 = q.clone();
    let mut enqueue =
        tokio::spawn(async move { q2.enqueue(NewJob::new("q", b"{\"n\":1}".to_vec())).await });
    {
        let g = gate.clone();
        tokio::task::spawn_blocking(move || g.wait_blocked(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    // The enqueue record is written, its fdatasync is blocked. The engine knows the job
    // (listings may show it) but has not leased it.
    let jobs = q.list("q", None, 10).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, JobState::Waiting);
    assert_eq!(
        jobs[0].attempts, 0,
        "the job was reserved before it was durable"
    );
    assert!(q
        .list("q", Some(JobState::Active), 10)
        .await
        .unwrap()
        .is_empty());
    // A reserve without waiting gets nothing either.
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    // Neither caller has been answered while the sync is blocked.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut reserve)
            .await
            .is_err(),
        "a worker got a job whose enqueue was not yet durable"
    );
    assert!(
        !enqueue.is_finished(),
        "the enqueue returned before its sync"
    );

    gate.release();
    let id = tokio::time::timeout(Duration::from_secs(10), &mut enqueue)
        .await
        .expect("the enqueue returns once synced")
        .unwrap()
        .unwrap()
        .id;
    let lease = tokio::time::timeout(Duration::from_secs(10), reserve)
        .await
        .expect("the waiting reserve is answered once the enqueue is durable")
        .unwrap()
        .expect("it gets the job");
    assert_eq!(lease.job.id, id);
    assert_eq!(lease.job.attempts, 1);
    q.ack(&lease).await.unwrap();

    // Enqueue, then reserve at once without waiting: the enqueue returned, so it is durable
    // and reservable (durability is known to the engine before the caller is answered).
    for i in 0..50 {
        let e = q
            .enqueue(NewJob::new("q", format!("{i}").into_bytes()))
            .await
            .unwrap();
        let l = q
            .reserve(&["q"])
            .await
            .unwrap()
            .expect("durable job is ready");
        assert_eq!(l.job.id, e.id);
        q.ack(&l).await.unwrap();
    }
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_requeued_dead_letter_waits_for_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let q = open(dir.path(), FsyncPolicy::Always, gate.clone()).await;
    q.enqueue(NewJob::new("q", b"1".to_vec()).max_retries(0))
        .await
        .unwrap();
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    q.fail(&l, "boom").await.unwrap();
    let mut reserve = waiting_reserve(&q, Duration::from_secs(30)).await;

    gate.hold.store(true, Ordering::SeqCst);
    let q2 = q.clone();
    let requeue = tokio::spawn(async move { q2.requeue_dead("q", durq::Selection::All).await });
    {
        let g = gate.clone();
        tokio::task::spawn_blocking(move || g.wait_blocked(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    let waiting = q.list("q", Some(JobState::Waiting), 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "listed as waiting before it is durable");
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut reserve)
            .await
            .is_err(),
        "a worker got a requeued job before the requeue was durable"
    );
    gate.release();
    assert_eq!(requeue.await.unwrap().unwrap(), 1);
    let lease = tokio::time::timeout(Duration::from_secs(10), reserve)
        .await
        .unwrap()
        .unwrap()
        .expect("handed out once durable");
    assert_eq!(lease.job.id, l.job.id);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failed_fsync_never_hands_the_job_out() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let q = open(dir.path(), FsyncPolicy::Always, gate.clone()).await;
    let reserve = waiting_reserve(&q, Duration::from_millis(1500)).await;
    gate.eio.store(true, Ordering::SeqCst);
    let r = q.enqueue(NewJob::new("q", b"1".to_vec())).await;
    assert!(r.is_err(), "an enqueue whose fsync failed returned Ok");
    gate.eio.store(false, Ordering::SeqCst);
    match reserve.await {
        Ok(None) | Err(_) => {}
        Ok(Some(l)) => panic!("job {} was handed out after its fsync failed", l.job.id),
    }
    assert!(q.reserve(&["q"]).await.unwrap_or(None).is_none());
    let active = q.list("q", Some(JobState::Active), 10).await.unwrap();
    assert!(active.is_empty(), "{active:?}");
    let _ = q.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everysec_hands_out_without_waiting_for_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let q = open(dir.path(), FsyncPolicy::EverySec, gate.clone()).await;
    // Hold every background sync: under everysec, reserves do not wait for one.
    gate.hold.store(true, Ordering::SeqCst);
    let e = q.enqueue(NewJob::new("q", b"1".to_vec())).await.unwrap();
    let l = q.reserve(&["q"]).await.unwrap().expect("ready at once");
    assert_eq!(l.job.id, e.id);
    q.ack(&l).await.unwrap();
    gate.release();
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_syncs_recovered_records_before_handing_them_out() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    // Written under `no`: never synced by durq.
    let q = open(dir.path(), FsyncPolicy::No, gate.clone()).await;
    let e = q.enqueue(NewJob::new("q", b"1".to_vec())).await.unwrap();
    q.shutdown().await.unwrap();
    drop(q);

    // Reopened under `always`: the open syncs the recovered journal before it serves anything.
    gate.hold.store(true, Ordering::SeqCst);
    let (d, g) = (dir.path().to_path_buf(), gate.clone());
    let opening = tokio::spawn(async move { open(&d, FsyncPolicy::Always, g).await });
    {
        let g = gate.clone();
        tokio::task::spawn_blocking(move || g.wait_blocked(Duration::from_secs(10)))
            .await
            .unwrap();
    }
    assert!(
        !opening.is_finished(),
        "opened before the recovered records were synced"
    );
    gate.release();
    let q = tokio::time::timeout(Duration::from_secs(10), opening)
        .await
        .expect("opens once synced")
        .unwrap();
    let l = q.reserve(&["q"]).await.unwrap().expect("recovered job");
    assert_eq!(l.job.id, e.id);
    q.ack(&l).await.unwrap();
    q.shutdown().await.unwrap();
}
