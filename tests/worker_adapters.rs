//! The `file_event` / `batch_process` adapters decode what the watcher really enqueues
//! (built with `durq::watch::job`), and a long handler keeps its lease through heartbeats.

use std::sync::Arc;
use std::time::Duration;

use durq::watch::job::{batch_job, FileEvent, Kind};
use durq::worker::adapters::{self, ChangeBatch, FileChange};
use durq::worker::{handler_fn, Outcome, Pool};
use durq::{FsyncPolicy, JobState, NewJob, Queue};
use parking_lot::Mutex;

fn change(path: &str, kind: Kind) -> FileEvent {
    FileEvent {
        path: path.into(),
        root: "/data/in".into(),
        kind,
        from: None,
        size: Some(12),
        sha256: Some("ab".repeat(32)),
        prev_sha256: None,
        mtime: Some("2026-11-28T04:00:00.000Z".into()),
        stable: true,
        gen: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_decode_the_watchers_payloads() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    q.enqueue(change("a.txt", Kind::Created).job("w").unwrap())
        .await
        .unwrap();
    let batch = [
        change("b.txt", Kind::Modified),
        change("c.txt", Kind::Deleted),
    ];
    q.enqueue(batch_job("w", &batch).unwrap()).await.unwrap();
    let bad = q
        .enqueue(NewJob::new("w", br#"{"path":1}"#.to_vec()).kind(adapters::FILE_EVENT))
        .await
        .unwrap();
    let singles: Arc<Mutex<Vec<FileChange>>> = Arc::default();
    let batches: Arc<Mutex<Vec<ChangeBatch>>> = Arc::default();
    let (s, b) = (singles.clone(), batches.clone());
    let pool = Pool::builder(q.clone(), vec!["w".into()])
        .handler(
            adapters::FILE_EVENT,
            adapters::file_event(move |c, _job| {
                let s = s.clone();
                async move {
                    s.lock().push(c);
                    Outcome::Done
                }
            }),
        )
        .handler(
            adapters::BATCH_PROCESS,
            adapters::batch_process(move |c, _job| {
                let b = b.clone();
                async move {
                    b.lock().push(c);
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), pool.wait_until_empty())
        .await
        .unwrap()
        .unwrap();
    pool.shutdown().await.unwrap();
    let singles = singles.lock().clone();
    assert_eq!(singles.len(), 1);
    assert_eq!(singles[0].kind, "created");
    assert_eq!(
        singles[0].full_path(),
        std::path::PathBuf::from("/data/in/a.txt")
    );
    assert_eq!(singles[0].sha256.as_deref(), Some(&*"ab".repeat(32)));
    let batches = batches.lock().clone();
    assert_eq!(batches.len(), 1);
    let paths: Vec<(&str, &str)> = batches[0]
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(paths, vec![("b.txt", "modified"), ("c.txt", "deleted")]);
    let j = q.get(bad.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Dead);
    assert!(j.last_error().unwrap().contains("does not decode"));
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_longer_than_its_lease_keeps_it_by_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    let id = q
        .enqueue(NewJob::new("q", b"".to_vec()).kind("long"))
        .await
        .unwrap()
        .id;
    let runs = Arc::new(Mutex::new(0));
    let r = runs.clone();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(2)
        .lease(Duration::from_millis(150))
        .handler(
            "long",
            handler_fn(move |_| {
                let r = r.clone();
                async move {
                    *r.lock() += 1;
                    // Work for 5 leases' worth of time.
                    tokio::time::sleep(Duration::from_millis(750)).await;
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), pool.wait_until_empty())
        .await
        .unwrap()
        .unwrap();
    let report = pool.shutdown().await.unwrap();
    assert_eq!(
        *runs.lock(),
        1,
        "the lease never ran out, so the job ran once"
    );
    assert_eq!(report.stats.leases_lost, 0);
    let j = q.get(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Completed, 1, 0)
    );
    q.shutdown().await.unwrap();
}
