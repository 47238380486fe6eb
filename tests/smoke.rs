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
