//! Day-two operations through the library on the local store: cancel (waiting, delayed, dead,
//! active, keyed, deduplicated, by filter, idempotent, durable across reopen) and postponing an
//! attempt without counting it (retry-after), up to the queue's budget. Time is the injected
//! clock; nothing sleeps to synchronise.

use std::sync::Arc;
use std::time::Duration;

use durq::clock::ManualClock;
use durq::{
    CancelOutcome, FailAction, FailOutcome, FsyncPolicy, JobState, NewJob, Queue, QueueConfig,
    Timestamp,
};

const T0: u64 = 1_800_000_000_000;

async fn open(dir: &std::path::Path, clock: &Arc<ManualClock>) -> Queue {
    Queue::builder(dir)
        .fsync(FsyncPolicy::No)
        .clock(clock.clone())
        .queue(
            "short",
            QueueConfig {
                max_postpone: Duration::from_secs(10),
                ..QueueConfig::default()
            },
        )
        .open()
        .await
        .unwrap()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp(T0)))
}

async fn take(q: &Queue, queue: &str) -> durq::Lease {
    q.reserve(&[queue]).await.unwrap().expect("a job is ready")
}

#[tokio::test]
async fn cancel_removes_waiting_delayed_and_dead_jobs_durably() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    let waiting = q.enqueue(NewJob::new("q", "w")).await.unwrap().id;
    let delayed = q
        .enqueue(NewJob::new("q", "d").delay(Duration::from_secs(60)))
        .await
        .unwrap()
        .id;
    let dead = q
        .enqueue(NewJob::new("q", "x").max_retries(0))
        .await
        .unwrap()
        .id;
    let keep = q.enqueue(NewJob::new("q", "keep")).await.unwrap().id;
    // Make `dead` a dead letter: reserve in order (w, x, keep) and fail x.
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, waiting);
    q.release(&l).await.unwrap();
    let out = q.cancel(waiting).await.unwrap();
    assert_eq!(out, CancelOutcome::Cancelled);
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, dead);
    assert_eq!(q.fail(&l, "boom").await.unwrap(), FailOutcome::Dead);

    let outs = q
        .cancel_many(vec![delayed, dead, durq::JobId(12345), delayed])
        .await
        .unwrap();
    assert_eq!(
        outs,
        vec![
            CancelOutcome::Cancelled,
            CancelOutcome::Cancelled,
            CancelOutcome::NotFound,
            CancelOutcome::Cancelled
        ]
    );
    let s = q.stats().await.unwrap();
    let qs = &s.queues["q"];
    assert_eq!((qs.waiting, qs.delayed, qs.dead), (1, 0, 0), "{qs:?}");
    // Idempotent: a second cancel says not found and changes nothing.
    assert_eq!(q.cancel(waiting).await.unwrap(), CancelOutcome::NotFound);
    // The job left is the one still to run.
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, keep);
    q.ack(&l).await.unwrap();
    assert_eq!(
        q.cancel(keep).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    q.shutdown().await.unwrap();

    // Durable: after a reopen (replaying the journal into a fresh state store too) the
    // cancelled jobs stay gone.
    for rebuild in [false, true] {
        if rebuild {
            std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        }
        let q = open(dir.path(), &c).await;
        for id in [waiting, delayed, dead] {
            assert!(q.get(id).await.unwrap().is_none(), "{id} gone");
        }
        c.advance(Duration::from_secs(120));
        assert!(q.reserve(&["q"]).await.unwrap().is_none(), "nothing left");
        assert_eq!(
            q.get(keep).await.unwrap().unwrap().state,
            JobState::Completed
        );
        q.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn cancelling_a_keys_head_passes_the_key_on_and_releases_its_dedup_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    let a = q
        .enqueue(
            NewJob::new("q", "a")
                .key("chat")
                .dedup("once", Duration::from_secs(3600)),
        )
        .await
        .unwrap()
        .id;
    let b = q
        .enqueue(NewJob::new("q", "b").key("chat"))
        .await
        .unwrap()
        .id;
    let cc = q
        .enqueue(NewJob::new("q", "c").key("chat"))
        .await
        .unwrap()
        .id;
    // Cancel the middle one (behind the head), then the head.
    assert_eq!(q.cancel(b).await.unwrap(), CancelOutcome::Cancelled);
    assert_eq!(q.cancel(a).await.unwrap(), CancelOutcome::Cancelled);
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, cc, "the key passed to the next job");
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    q.ack(&l).await.unwrap();
    // The dedup key went with the cancelled job: the same key enqueues anew.
    let again = q
        .enqueue(NewJob::new("q", "a2").dedup("once", Duration::from_secs(3600)))
        .await
        .unwrap();
    assert!(!again.duplicate);
    assert_ne!(again.id, a);
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_cancelled_active_job_is_dropped_when_its_attempt_ends_however_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    for p in ["ack", "fail", "release", "expire", "crash"] {
        q.enqueue(NewJob::new("q", p).key("k").max_retries(5))
            .await
            .unwrap();
    }
    q.enqueue(NewJob::new("q", "after").key("k")).await.unwrap();

    // ack → dropped, not completed.
    let l = take(&q, "q").await;
    assert_eq!(q.cancel(l.job.id).await.unwrap(), CancelOutcome::WillCancel);
    assert_eq!(q.cancel(l.job.id).await.unwrap(), CancelOutcome::WillCancel);
    q.ack(&l).await.unwrap();
    assert!(q.get(l.job.id).await.unwrap().is_none());
    // fail → dropped, not retried.
    let l = take(&q, "q").await;
    assert_eq!(l.job.payload, b"fail");
    q.cancel(l.job.id).await.unwrap();
    assert_eq!(q.fail(&l, "x").await.unwrap(), FailOutcome::Cancelled);
    assert!(q.get(l.job.id).await.unwrap().is_none());
    // release (shutdown give-back) → dropped.
    let l = take(&q, "q").await;
    assert_eq!(l.job.payload, b"release");
    q.cancel(l.job.id).await.unwrap();
    q.release(&l).await.unwrap();
    assert!(q.get(l.job.id).await.unwrap().is_none());
    // lease expiry → dropped.
    let l = take(&q, "q").await;
    assert_eq!(l.job.payload, b"expire");
    q.cancel(l.job.id).await.unwrap();
    c.advance(Duration::from_secs(31));
    let l2 = take(&q, "q").await;
    assert!(q.get(l.job.id).await.unwrap().is_none());
    assert_eq!(l2.job.payload, b"crash");
    // the process stops while it runs → dropped on reopen, the key passes on.
    assert_eq!(
        q.cancel(l2.job.id).await.unwrap(),
        CancelOutcome::WillCancel
    );
    q.shutdown().await.unwrap();
    let q = open(dir.path(), &c).await;
    assert!(q.get(l2.job.id).await.unwrap().is_none());
    let l = take(&q, "q").await;
    assert_eq!(l.job.payload, b"after");
    q.ack(&l).await.unwrap();
    let s = q.stats().await.unwrap();
    let qs = &s.queues["q"];
    assert_eq!(
        (qs.waiting, qs.active, qs.dead, qs.completed),
        (0, 0, 0, 1),
        "{qs:?}"
    );
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn cancel_by_filter_takes_one_state_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    for i in 0..5 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind(if i % 2 == 0 { "even" } else { "odd" }))
            .await
            .unwrap();
    }
    q.enqueue(NewJob::new("q", "later").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    let n = q
        .cancel_where("q", JobState::Waiting, Some("even"))
        .await
        .unwrap();
    assert_eq!(n, 3);
    let left: Vec<String> = q
        .list("q", Some(JobState::Waiting), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.kind)
        .collect();
    assert_eq!(left, vec!["odd", "odd"]);
    assert_eq!(
        q.cancel_where("q", JobState::Delayed, None).await.unwrap(),
        1
    );
    let err = q
        .cancel_where("q", JobState::Completed, None)
        .await
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("completed jobs cannot be cancelled"));
    assert_eq!(q.stats().await.unwrap().queues["q"].waiting, 2);
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn postpone_does_not_count_an_attempt_until_the_budget_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    // Budget of queue `short`: 10 s in all.
    let id = q
        .enqueue(NewJob::new("short", "m").key("chat").max_retries(1))
        .await
        .unwrap()
        .id;
    q.enqueue(NewJob::new("short", "next").key("chat"))
        .await
        .unwrap();
    for round in 0..2 {
        let l = take(&q, "short").await;
        assert_eq!((l.job.id, l.job.attempts), (id, 1), "round {round}");
        let out = q
            .postpone(&l, Duration::from_secs(4), "429 retry after 4")
            .await
            .unwrap();
        assert_eq!(
            out,
            FailOutcome::Retrying {
                run_at: Timestamp(c.now_ms() + 4000)
            }
        );
        let j = q.get(id).await.unwrap().unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Delayed, 0));
        assert!(j.errors.is_empty());
        // The key waits with it: the next job of the chat does not overtake.
        assert!(q.reserve(&["short"]).await.unwrap().is_none());
        c.advance(Duration::from_secs(4));
    }
    // The budget survives a restart (it is journaled with the job).
    q.shutdown().await.unwrap();
    let q = open(dir.path(), &c).await;
    let l = take(&q, "short").await;
    assert_eq!((l.job.id, l.job.attempts), (id, 1));
    // 8 s spent; 4 more would pass 10 s: this one counts as a failed attempt.
    let out = q
        .postpone(&l, Duration::from_secs(4), "429 retry after 4")
        .await
        .unwrap();
    assert!(matches!(out, FailOutcome::Retrying { .. }));
    let j = q.get(id).await.unwrap().unwrap();
    assert_eq!(j.errors.len(), 1);
    assert!(
        j.errors[0].error.contains("over the queue's budget of 10s"),
        "{:?}",
        j.errors
    );
    c.advance(Duration::from_secs(4));
    let l = take(&q, "short").await;
    assert_eq!(l.job.attempts, 2, "the counted attempt stays counted");
    // Out of retries: dead (the key passes to `next`).
    assert_eq!(q.fail(&l, "down").await.unwrap(), FailOutcome::Dead);
    // A bad delay is refused and changes nothing.
    let l = take(&q, "short").await;
    assert_eq!(l.job.payload, b"next");
    let err = q
        .postpone(&l, Duration::from_secs(400 * 365 * 86_400), "x")
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    q.ack(&l).await.unwrap();
    // Requeued, the dead letter gets a fresh budget: 9 s more are not counted.
    q.requeue_dead("short", durq::Selection::Ids(vec![id]))
        .await
        .unwrap();
    let l = take(&q, "short").await;
    assert_eq!((l.job.id, l.job.attempts), (id, 1));
    q.postpone(&l, Duration::from_secs(9), "429").await.unwrap();
    assert_eq!(
        q.get(id).await.unwrap().unwrap().errors.len(),
        2,
        "not counted"
    );
    c.advance(Duration::from_secs(9));
    let l = take(&q, "short").await;
    assert_eq!((l.job.id, l.job.attempts), (id, 1));
    q.ack(&l).await.unwrap();
    // The counting variant is still there for callers that want it.
    let id3 = q.enqueue(NewJob::new("short", "z")).await.unwrap().id;
    let l = take(&q, "short").await;
    q.fail_with(&l, "429", FailAction::RetryAfter(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(q.get(id3).await.unwrap().unwrap().errors.len(), 1);
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_jobs_timeout_is_stored_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let q = open(dir.path(), &c).await;
    let id = q
        .enqueue(NewJob::new("q", "t").timeout(Duration::from_millis(1500)))
        .await
        .unwrap()
        .id;
    let plain = q.enqueue(NewJob::new("q", "p")).await.unwrap().id;
    let err = q
        .enqueue(NewJob::new("q", "z").timeout(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timeout must be longer than zero"));
    q.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let q = open(dir.path(), &c).await;
    let j = q.get(id).await.unwrap().unwrap();
    assert_eq!(j.timeout, Some(Duration::from_millis(1500)));
    assert_eq!(q.get(plain).await.unwrap().unwrap().timeout, None);
    let l = take(&q, "q").await;
    assert_eq!(l.job.timeout, Some(Duration::from_millis(1500)));
    q.shutdown().await.unwrap();
}

trait NowMs {
    fn now_ms(&self) -> u64;
}

impl NowMs for ManualClock {
    fn now_ms(&self) -> u64 {
        use durq::clock::Clock;
        self.now().0
    }
}

#[tokio::test]
async fn retention_drops_completed_and_dead_jobs_by_count_and_age_durably() {
    let dir = tempfile::tempdir().unwrap();
    let c = clock();
    let open_ret = |c: Arc<ManualClock>| {
        let dir = dir.path().to_path_buf();
        async move {
            Queue::builder(&dir)
                .fsync(FsyncPolicy::No)
                .clock(c)
                .queue(
                    "ret",
                    QueueConfig {
                        keep_completed: 3,
                        keep_completed_for: Some(Duration::from_secs(3600)),
                        keep_dead: Some(2),
                        keep_dead_for: Some(Duration::from_secs(86_400)),
                        ..QueueConfig::default()
                    },
                )
                .open()
                .await
                .unwrap()
        }
    };
    let q = open_ret(c.clone()).await;
    let mut done = Vec::new();
    for i in 0..5 {
        let id = q
            .enqueue(NewJob::new("ret", format!("{i}")))
            .await
            .unwrap()
            .id;
        let l = take(&q, "ret").await;
        q.ack(&l).await.unwrap();
        done.push(id);
        c.advance(Duration::from_secs(600));
    }
    // By count: the last 3.
    assert_eq!(q.stats().await.unwrap().queues["ret"].completed, 3);
    assert!(q.get(done[1]).await.unwrap().is_none());
    // By age: completed at 20, 30, 40 min; now 50 min; at 85 min the one of 20 min is over 1 h.
    c.advance(Duration::from_secs(35 * 60));
    assert_eq!(q.stats().await.unwrap().queues["ret"].completed, 2);
    assert!(q.get(done[2]).await.unwrap().is_none());
    assert!(q.get(done[3]).await.unwrap().is_some());
    let mut dead = Vec::new();
    for i in 0..4 {
        let id = q
            .enqueue(NewJob::new("ret", format!("d{i}")).max_retries(0))
            .await
            .unwrap()
            .id;
        let l = take(&q, "ret").await;
        assert_eq!(q.fail(&l, "no").await.unwrap(), FailOutcome::Dead);
        dead.push(id);
        c.advance(Duration::from_secs(60));
    }
    let listed: Vec<_> = q
        .dead_letters("ret", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, vec![dead[3], dead[2]], "the newest 2 dead letters");
    q.shutdown().await.unwrap();
    // Journaled: a rebuilt state agrees.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let q = open_ret(c.clone()).await;
    let s = q.stats().await.unwrap();
    assert_eq!((s.queues["ret"].completed, s.queues["ret"].dead), (2, 2));
    for id in [done[0], done[1], done[2], dead[0], dead[1]] {
        assert!(q.get(id).await.unwrap().is_none(), "{id} was dropped");
    }
    c.advance(Duration::from_secs(86_400));
    let s = q.stats().await.unwrap();
    assert_eq!((s.queues["ret"].completed, s.queues["ret"].dead), (0, 0));
    q.shutdown().await.unwrap();
}

// ------------------------------------------------------------------ through the worker pool

mod pool {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use durq::worker::{handler_fn, Outcome, Pool};
    use durq::{FsyncPolicy, Job, JobState, NewJob, Queue};
    use parking_lot::Mutex;

    async fn open(dir: &std::path::Path) -> Queue {
        Queue::builder(dir)
            .fsync(FsyncPolicy::No)
            .open()
            .await
            .unwrap()
    }

    async fn drained(pool: &Pool) {
        tokio::time::timeout(Duration::from_secs(30), pool.wait_until_empty())
            .await
            .expect("queue drained in time")
            .unwrap();
    }

    type Log = Arc<Mutex<Vec<(String, u32, Instant)>>>;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postpone_outcome_keeps_the_attempt_count_and_the_keys_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path()).await;
        let first = q
            .enqueue(NewJob::new("q", "0").kind("k").key("chat").max_retries(0))
            .await
            .unwrap()
            .id;
        q.enqueue(NewJob::new("q", "1").kind("k").key("chat"))
            .await
            .unwrap();
        let log: Log = Arc::default();
        let l = log.clone();
        let pool = Pool::builder(q.clone(), vec!["q".into()])
            .concurrency(2)
            .handler(
                "k",
                handler_fn(move |job: Job| {
                    let l = l.clone();
                    async move {
                        let p = String::from_utf8(job.payload).unwrap();
                        let n = {
                            let mut g = l.lock();
                            g.push((p.clone(), job.attempts, Instant::now()));
                            g.iter().filter(|e| e.0 == p).count()
                        };
                        // With max_retries 0, a counted failure would kill the job at once.
                        if p == "0" && n <= 3 {
                            return Outcome::Postpone(
                                Duration::from_millis(150),
                                "429 too many requests".into(),
                            );
                        }
                        Outcome::Done
                    }
                }),
            )
            .start()
            .await
            .unwrap();
        drained(&pool).await;
        let stats = pool.shutdown().await.unwrap().stats;
        let log = log.lock().clone();
        let runs: Vec<(String, u32)> = log.iter().map(|e| (e.0.clone(), e.1)).collect();
        assert_eq!(
            runs,
            vec![
                ("0".into(), 1),
                ("0".into(), 1),
                ("0".into(), 1),
                ("0".into(), 1),
                ("1".into(), 1)
            ],
            "never counted, never overtaken"
        );
        for w in log.windows(2).take(3) {
            assert!(
                w[1].2 - w[0].2 >= Duration::from_millis(140),
                "delay honoured"
            );
        }
        let j = q.get(first).await.unwrap().unwrap();
        assert_eq!((j.state, j.attempts), (JobState::Completed, 1));
        assert!(j.errors.is_empty());
        assert_eq!((stats.failed, stats.released), (0, 3));
        q.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_rule_limits_only_the_keys_it_picks() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path()).await;
        for key in ["-100", "7"] {
            for i in 0..4 {
                q.enqueue(NewJob::new("q", format!("{i}")).kind("k").key(key))
                    .await
                    .unwrap();
            }
        }
        let log: Log = Arc::default();
        let l = log.clone();
        let pool = Pool::builder(q.clone(), vec!["q".into()])
            .concurrency(4)
            .rate_limit_keys_where(|k| k.starts_with('-'), 5.0)
            .handler(
                "k",
                handler_fn(move |job: Job| {
                    let l = l.clone();
                    async move {
                        l.lock()
                            .push((job.key.clone().unwrap(), job.attempts, Instant::now()));
                        Outcome::Done
                    }
                }),
            )
            .start()
            .await
            .unwrap();
        drained(&pool).await;
        pool.shutdown().await.unwrap();
        let log = log.lock().clone();
        let starts =
            |k: &str| -> Vec<Instant> { log.iter().filter(|e| e.0 == k).map(|e| e.2).collect() };
        let group = starts("-100");
        assert_eq!(group.len(), 4);
        for w in group.windows(2) {
            assert!(
                w[1] - w[0] >= Duration::from_millis(190),
                "5/s for the picked key: {:?}",
                w[1] - w[0]
            );
        }
        let other = starts("7");
        assert_eq!(other.len(), 4);
        assert!(
            other[3] - other[0] < Duration::from_millis(500),
            "a key the rule does not pick is not held back: {:?}",
            other[3] - other[0]
        );
        assert!(log.iter().all(|e| e.1 == 1), "held back, not failed");
        q.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelling_a_running_job_stops_its_handler_at_the_next_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let q = open(dir.path()).await;
        let id = q
            .enqueue(NewJob::new("q", "hang").kind("k").key("chat"))
            .await
            .unwrap()
            .id;
        let next = q
            .enqueue(NewJob::new("q", "next").kind("k").key("chat"))
            .await
            .unwrap()
            .id;
        let started = Arc::new(tokio::sync::Notify::new());
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        struct OnDrop(Arc<std::sync::atomic::AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let (s, st) = (started.clone(), stopped.clone());
        let pool = Pool::builder(q.clone(), vec!["q".into()])
            .lease(Duration::from_millis(300))
            .handler(
                "k",
                handler_fn(move |job: Job| {
                    let (s, guard) = (s.clone(), OnDrop(st.clone()));
                    async move {
                        if job.payload == b"hang" {
                            let _guard = guard;
                            s.notify_one();
                            std::future::pending::<()>().await;
                        }
                        Outcome::Done
                    }
                }),
            )
            .start()
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), started.notified())
            .await
            .expect("the handler started");
        assert_eq!(q.cancel(id).await.unwrap(), durq::CancelOutcome::WillCancel);
        drained(&pool).await;
        let stats = pool.shutdown().await.unwrap().stats;
        assert!(
            stopped.load(std::sync::atomic::Ordering::SeqCst),
            "handler dropped"
        );
        assert!(
            q.get(id).await.unwrap().is_none(),
            "the cancelled job is gone"
        );
        assert_eq!(
            q.get(next).await.unwrap().unwrap().state,
            JobState::Completed,
            "the key went on"
        );
        assert_eq!((stats.leases_lost, stats.dead), (0, 0));
        q.shutdown().await.unwrap();
    }

    #[cfg(feature = "telegram")]
    #[test]
    fn telegram_groups_are_negative_chat_ids() {
        use durq::worker::telegram::is_group_chat;
        assert!(is_group_chat("-1001234567890"));
        assert!(is_group_chat("-42"));
        for k in ["42", "-", "@channel", "-12a", ""] {
            assert!(!is_group_chat(k), "{k}");
        }
    }
}
