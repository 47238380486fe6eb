use durq::{FsyncPolicy, JobState, NewJob, Priority, Queue};
use std::time::Duration;

#[tokio::test]
async fn enqueue_reserve_ack_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .open()
        .await
        .unwrap();
    let a = q.enqueue(NewJob::new("q", b"a".to_vec())).await.unwrap();
    let b = q
        .enqueue(NewJob::new("q", b"b".to_vec()).priority(Priority::HIGH))
        .await
        .unwrap();
    let d1 = q
        .enqueue(NewJob::new("q", b"c".to_vec()).dedup("k", Duration::from_secs(60)))
        .await
        .unwrap();
    let d2 = q
        .enqueue(NewJob::new("q", b"c".to_vec()).dedup("k", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(d2.duplicate && d2.id == d1.id);
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    assert_eq!(l.job.id, b.id);
    q.ack(&l).await.unwrap();
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    assert_eq!(l.job.id, a.id);
    q.fail(&l, "boom").await.unwrap();
    let s = q.stats().await.unwrap();
    assert_eq!(s.queues["q"].completed, 1);
    assert_eq!(s.queues["q"].delayed, 1);
    q.shutdown().await.unwrap();
    drop(q);
    let q = Queue::builder(dir.path()).open().await.unwrap();
    let s = q.stats().await.unwrap();
    assert_eq!(s.queues["q"].completed, 1, "{s:?}");
    assert_eq!(s.queues["q"].delayed + s.queues["q"].waiting, 2, "{s:?}");
    let j = q.get(a.id).await.unwrap().unwrap();
    assert_eq!(j.errors.len(), 1);
    assert_eq!(j.state, JobState::Delayed);
    let d3 = q
        .enqueue(NewJob::new("q", b"c".to_vec()).dedup("k", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(d3.duplicate);
    q.shutdown().await.unwrap();
}

/// `shutdown()` returns only once every thread of the store is done with the directory: the
/// applier has applied everything written and let go of the state store, so another opener
/// (here sled itself, which takes a file lock) gets it at once, with every job applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_go_of_the_state_store() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    for b in 0..40 {
        let jobs = (0..2_000)
            .map(|i| {
                let mut p = format!("{b}-{i}-").into_bytes();
                p.resize(1_000, b'p');
                NewJob::new("q", p)
            })
            .collect();
        q.enqueue_batch(jobs).await.unwrap();
    }
    q.shutdown().await.unwrap();
    let db = sled::Config::new()
        .path(dir.path().join("state"))
        .open()
        .expect("the state store is still held after shutdown");
    let jobs = db.scan_prefix(b"j").count();
    assert_eq!(jobs, 80_000, "every written job is applied by shutdown");
    drop(db);
    let q = Queue::open(dir.path()).await.unwrap();
    assert_eq!(q.stats().await.unwrap().totals.waiting, 80_000);
    q.shutdown().await.unwrap();
}
