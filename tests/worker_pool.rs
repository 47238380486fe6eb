//! The worker pool against a real local store: concurrency, typed handlers, panics, shutdown,
//! partition order, autoscaling, breakers, retry-after, rate limits, batches.
//! No sleeps as synchronisation: tests wait for the queue to drain or for an event, with a
//! timeout. Handlers may sleep: that is their simulated work.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::worker::{
    handler_fn, typed, AutoscaleConfig, BatchConfig, BatchHandler, BreakerConfig, BreakerState,
    Outcome, Pool, PoolEvent,
};
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

async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<PoolEvent>,
    f: impl Fn(&PoolEvent) -> bool,
) -> PoolEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("event in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_respected_and_reached() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..40 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind("work"))
            .await
            .unwrap();
    }
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(4)
        .handler(
            "work",
            handler_fn(move |_job| {
                let (r, p) = (r.clone(), p.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.stats.completed, 40);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "never more than 4 at once, and 4 reached"
    );
    assert_eq!(q.stats().await.unwrap().queues["q"].completed, 40);
    q.shutdown().await.unwrap();
}

#[derive(serde::Deserialize)]
struct Greeting {
    name: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handler_decode_failure_gives_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let good = q
        .enqueue(NewJob::new("q", br#"{"name":"ada"}"#.to_vec()).kind("greet"))
        .await
        .unwrap();
    let bad = q
        .enqueue(NewJob::new("q", br#"{"nom":1}"#.to_vec()).kind("greet"))
        .await
        .unwrap();
    let unknown = q
        .enqueue(NewJob::new("q", b"{}".to_vec()).kind("mystery"))
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .handler(
            "greet",
            typed(move |g: Greeting, _job| {
                let s = s.clone();
                async move {
                    s.lock().push(g.name);
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    pool.shutdown().await.unwrap();
    assert_eq!(*seen.lock(), vec!["ada".to_string()]);
    assert_eq!(
        q.get(good.id).await.unwrap().unwrap().state,
        JobState::Completed
    );
    let b = q.get(bad.id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Dead);
    assert_eq!(b.attempts, 1, "a decode failure is permanent");
    let err = b.last_error().unwrap();
    assert!(
        err.contains("does not decode") && err.contains("missing field `name`"),
        "{err}"
    );
    let u = q.get(unknown.id).await.unwrap().unwrap();
    assert_eq!(u.state, JobState::Dead);
    assert!(u
        .last_error()
        .unwrap()
        .contains("no handler is registered for kind `mystery`"));
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_a_failed_attempt_and_the_worker_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let boom = q
        .enqueue(
            NewJob::new("q", b"boom".to_vec())
                .kind("k")
                .backoff(Duration::from_millis(10)),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        q.enqueue(NewJob::new("q", b"fine".to_vec()).kind("k"))
            .await
            .unwrap();
    }
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(2)
        .handler(
            "k",
            handler_fn(|job: Job| async move {
                if job.payload == b"boom" && job.attempts == 1 {
                    panic!("kaboom on attempt {}", job.attempts);
                }
                Outcome::Done
            }),
        )
        .start()
        .await
        .unwrap();
    let mut ev = pool.subscribe();
    wait_event(&mut ev, |e| matches!(e, PoolEvent::WorkerRestarted { .. })).await;
    drained(&pool).await;
    let stats = pool.stats();
    assert_eq!(stats.panics, 1);
    assert_eq!(stats.restarts, 1);
    assert_eq!(stats.workers, 2, "the replaced worker is back");
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.stats.completed, 11);
    let j = q.get(boom.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Completed);
    assert_eq!(j.attempts, 2);
    assert_eq!(j.errors[0].error, "handler panicked: kaboom on attempt 1");
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_grace_period_then_returns_the_rest_to_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let mut stuck = Vec::new();
    for _ in 0..2 {
        stuck.push(
            q.enqueue(NewJob::new("q", b"".to_vec()).kind("stuck"))
                .await
                .unwrap()
                .id,
        );
    }
    let quick = q
        .enqueue(NewJob::new("q", b"".to_vec()).kind("quick"))
        .await
        .unwrap()
        .id;
    let started = Arc::new(AtomicUsize::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let (s1, n1, s2, n2) = (
        started.clone(),
        notify.clone(),
        started.clone(),
        notify.clone(),
    );
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(3)
        .grace(Duration::from_millis(600))
        .handler(
            "stuck",
            handler_fn(move |_| {
                let (s, n) = (s1.clone(), n1.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    n.notify_one();
                    std::future::pending::<()>().await;
                    Outcome::Done
                }
            }),
        )
        .handler(
            "quick",
            handler_fn(move |_| {
                let (s, n) = (s2.clone(), n2.clone());
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    n.notify_one();
                    // Still running when shutdown begins; finishes within the grace period.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while started.load(Ordering::SeqCst) < 3 {
            notify.notified().await;
        }
    })
    .await
    .unwrap();
    let t = Instant::now();
    let report = pool.shutdown().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "waited for the grace period"
    );
    let mut returned = report.returned.clone();
    returned.sort();
    assert_eq!(returned, stuck);
    assert_eq!(report.finished_in_grace, 1);
    for id in &stuck {
        let j = q.get(*id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Waiting);
        assert_eq!(j.attempts, 0, "the aborted attempt is not counted");
    }
    assert_eq!(
        q.get(quick).await.unwrap().unwrap().state,
        JobState::Completed
    );
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_keys_run_in_order_one_at_a_time_and_in_parallel_across_keys() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..20u32 {
        for k in 0..5 {
            q.enqueue(
                NewJob::new("q", i.to_string())
                    .kind("k")
                    .key(format!("key{k}")),
            )
            .await
            .unwrap();
        }
    }
    let log: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let active: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (l, a, r, p) = (log.clone(), active.clone(), running.clone(), peak.clone());
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(5)
        .handler(
            "k",
            handler_fn(move |job: Job| {
                let (l, a, r, p) = (l.clone(), a.clone(), r.clone(), p.clone());
                async move {
                    let key = job.key.clone().unwrap();
                    let seq: u32 = String::from_utf8(job.payload).unwrap().parse().unwrap();
                    {
                        let mut a = a.lock();
                        let n = a.entry(key.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "two jobs of {key} at once");
                    }
                    l.lock().push((key.clone(), seq));
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..6))).await;
                    r.fetch_sub(1, Ordering::SeqCst);
                    *a.lock().get_mut(&key).unwrap() -= 1;
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.stats.completed, 100);
    assert_eq!(report.stats.panics, 0, "no handler assertion failed");
    let mut per_key: HashMap<String, Vec<u32>> = HashMap::new();
    for (k, s) in log.lock().iter() {
        per_key.entry(k.clone()).or_default().push(*s);
    }
    for (k, v) in per_key {
        assert_eq!(v, (0..20).collect::<Vec<_>>(), "order of {k}");
    }
    assert!(
        peak.load(Ordering::SeqCst) >= 2,
        "different keys ran in parallel"
    );
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_grows_under_backlog_and_shrinks_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..200 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind("k"))
            .await
            .unwrap();
    }
    let cfg = AutoscaleConfig {
        min: 1,
        max: 4,
        up_after: Duration::from_millis(100),
        down_after: Duration::from_millis(300),
        max_age: Duration::from_secs(60),
        cooldown: Duration::from_millis(100),
    };
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .autoscale(cfg)
        .tick(Duration::from_millis(50))
        .handler(
            "k",
            handler_fn(|_| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Outcome::Done
            }),
        )
        .start()
        .await
        .unwrap();
    let mut ev = pool.subscribe();
    wait_event(&mut ev, |e| matches!(e, PoolEvent::Scaled(d) if d.to == 4)).await;
    drained(&pool).await;
    wait_event(&mut ev, |e| matches!(e, PoolEvent::Scaled(d) if d.to == 1)).await;
    let stats = pool.stats();
    assert_eq!(stats.target, 1);
    assert!(stats.scale_decisions.iter().any(|d| d.from < d.to));
    assert!(stats.scale_decisions.iter().any(|d| d.from > d.to));
    // Retired workers leave when idle; wait for the count to settle.
    tokio::time::timeout(Duration::from_secs(5), async {
        while pool.stats().workers != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("workers retired");
    let report = pool.shutdown().await.unwrap();
    assert_eq!(report.stats.completed, 200);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_holds_its_kind_back_without_burning_retries() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let mut flaky = Vec::new();
    for _ in 0..10 {
        let e = NewJob::new("q", b"".to_vec())
            .kind("flaky")
            .backoff(Duration::from_millis(1))
            .max_retries(50);
        flaky.push(q.enqueue(e).await.unwrap().id);
    }
    for _ in 0..30 {
        q.enqueue(NewJob::new("q", b"".to_vec()).kind("fine"))
            .await
            .unwrap();
    }
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(1)
        .breaker(BreakerConfig {
            failures: 3,
            window: Duration::from_secs(10),
            failure_rate: 1.0,
            min_calls: 100,
            cooldown: Duration::from_secs(3600),
        })
        .handler(
            "flaky",
            handler_fn(|_| async { Outcome::Retry("service down".into()) }),
        )
        .handler("fine", handler_fn(|_| async { Outcome::Done }))
        .start()
        .await
        .unwrap();
    let mut ev = pool.subscribe();
    wait_event(&mut ev, |e| {
        matches!(e, PoolEvent::BreakerChanged { kind, to: BreakerState::Open, .. } if kind == "flaky")
    })
    .await;
    // Every `fine` job still completes while `flaky` is held back.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = q.stats().await.unwrap();
            if s.queues["q"].completed == 30 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("fine jobs completed");
    assert_eq!(pool.stats().breakers["flaky"], BreakerState::Open);
    let report = pool.shutdown().await.unwrap();
    let mut attempts = 0;
    for id in &flaky {
        let j = q.get(*id).await.unwrap().unwrap();
        assert_ne!(j.state, JobState::Dead);
        attempts += j.attempts;
    }
    assert_eq!(
        attempts, 3,
        "only the attempts that opened the breaker were spent"
    );
    assert_eq!(report.stats.failed, 3);
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_the_key_and_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..3 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind("k").key("chat1"))
            .await
            .unwrap();
    }
    q.enqueue(NewJob::new("q", b"x".to_vec()).kind("k").key("chat2"))
        .await
        .unwrap();
    let log: Arc<Mutex<Vec<(String, u32, Instant)>>> = Arc::default();
    let l = log.clone();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(3)
        .handler(
            "k",
            handler_fn(move |job: Job| {
                let l = l.clone();
                async move {
                    let p = String::from_utf8(job.payload).unwrap();
                    l.lock().push((p.clone(), job.attempts, Instant::now()));
                    if p == "0" && job.attempts == 1 {
                        return Outcome::RetryAfter(
                            Duration::from_millis(400),
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
    pool.shutdown().await.unwrap();
    let log = log.lock().clone();
    let chat1: Vec<(String, u32)> = log
        .iter()
        .filter(|e| e.0 != "x")
        .map(|e| (e.0.clone(), e.1))
        .collect();
    assert_eq!(
        chat1,
        vec![
            ("0".into(), 1),
            ("0".into(), 2),
            ("1".into(), 1),
            ("2".into(), 1)
        ],
        "the key's order survives the retry-after"
    );
    let first = log.iter().find(|e| e.0 == "0").unwrap().2;
    let second = log.iter().filter(|e| e.0 == "0").nth(1).unwrap().2;
    assert!(
        second - first >= Duration::from_millis(390),
        "retry honoured retry_after: {:?}",
        second - first
    );
    let x = log.iter().find(|e| e.0 == "x").unwrap().2;
    assert!(x < second, "another key was not held back");
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_rate_limit_spaces_starts_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..5 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind("k").key("chat"))
            .await
            .unwrap();
    }
    let log: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let l = log.clone();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(4)
        .rate_limit_key(10.0)
        .handler(
            "k",
            handler_fn(move |job: Job| {
                let l = l.clone();
                async move {
                    let i: u32 = String::from_utf8(job.payload).unwrap().parse().unwrap();
                    l.lock().push((i, Instant::now()));
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let report = pool.shutdown().await.unwrap();
    let log = log.lock().clone();
    assert_eq!(
        log.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    for w in log.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(
            gap >= Duration::from_millis(80),
            "starts {gap:?} apart at 10/s"
        );
    }
    assert!(
        report.stats.released >= 1,
        "jobs were given back while their key was limited"
    );
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_queue_rate_limit_caps_the_start_rate() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    for i in 0..40 {
        q.enqueue(NewJob::new("q", format!("{i}")).kind("k"))
            .await
            .unwrap();
    }
    let starts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let s = starts.clone();
    // 20/s with a burst of one second's worth: 20 at once, the next 20 over about a second.
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(5)
        .rate_limit_queue(20.0)
        .handler(
            "k",
            handler_fn(move |_| {
                let s = s.clone();
                async move {
                    s.lock().push(Instant::now());
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let r = pool.shutdown().await.unwrap();
    assert_eq!(r.stats.completed, 40);
    let mut starts = starts.lock().clone();
    starts.sort();
    let span = starts[39] - starts[0];
    assert!(
        span >= Duration::from_millis(900),
        "40 starts at 20/s (burst 20) took {span:?}"
    );
    // After the burst, starts follow the refill rate (one per 50 ms).
    let tail = starts[39] - starts[20];
    assert!(
        tail >= Duration::from_millis(850),
        "19 starts after the burst took {tail:?}"
    );
    q.shutdown().await.unwrap();
}

struct SumBatch {
    sizes: Arc<Mutex<Vec<usize>>>,
}

#[async_trait::async_trait]
impl BatchHandler for SumBatch {
    async fn handle_batch(&self, jobs: Vec<Job>) -> Vec<Outcome> {
        self.sizes.lock().push(jobs.len());
        jobs.iter()
            .map(|j| {
                if j.payload == b"bad" && j.attempts == 1 {
                    Outcome::Retry("bad item".into())
                } else {
                    Outcome::Done
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_handler_gets_batches_by_size_and_time_and_settles_each_job() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let mut bad = None;
    for i in 0..10 {
        let p = if i == 3 {
            b"bad".to_vec()
        } else {
            b"ok".to_vec()
        };
        let e = q
            .enqueue(
                NewJob::new("q", p)
                    .kind("b")
                    .backoff(Duration::from_millis(5)),
            )
            .await
            .unwrap();
        if i == 3 {
            bad = Some(e.id);
        }
    }
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(4)
        .batch_handler(
            "b",
            SumBatch {
                sizes: sizes.clone(),
            },
            BatchConfig {
                size: 4,
                timeout: Duration::from_millis(100),
            },
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let report = pool.shutdown().await.unwrap();
    let sizes = sizes.lock().clone();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        11,
        "10 jobs plus one retry: {sizes:?}"
    );
    assert!(sizes.iter().all(|s| *s <= 4), "{sizes:?}");
    assert!(sizes.contains(&4), "a batch closed by size: {sizes:?}");
    assert_eq!(report.stats.completed, 10);
    assert_eq!(report.stats.failed, 1);
    let j = q.get(bad.unwrap()).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Completed, 2));
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_handler_passes_payload_and_env_and_reports_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let ok = q
        .enqueue(
            NewJob::new("q", b"hello stdin".to_vec())
                .kind("ok")
                .key("k1"),
        )
        .await
        .unwrap();
    let fail = q
        .enqueue(NewJob::new("q", b"".to_vec()).kind("fail").max_retries(0))
        .await
        .unwrap();
    let give_up = q
        .enqueue(NewJob::new("q", b"".to_vec()).kind("giveup"))
        .await
        .unwrap();
    let cmd = format!(
        r#"case "$DURQ_KIND" in
  ok) {{ echo "$DURQ_JOB_ID|$DURQ_QUEUE|$DURQ_KIND|$DURQ_ATTEMPT|$DURQ_KEY"; cat; }} > {}/out ;;
  fail) echo "something broke" >&2; exit 3 ;;
  giveup) echo "never" >&2; exit 100 ;;
esac"#,
        out.path().display()
    );
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .shell(cmd)
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    pool.shutdown().await.unwrap();
    let text = std::fs::read_to_string(out.path().join("out")).unwrap();
    assert_eq!(text, format!("{}|q|ok|1|k1\nhello stdin", ok.id));
    let f = q.get(fail.id).await.unwrap().unwrap();
    assert_eq!(f.state, JobState::Dead);
    assert_eq!(
        f.last_error(),
        Some("command exited with status 3: something broke")
    );
    let g = q.get(give_up.id).await.unwrap().unwrap();
    assert_eq!((g.state, g.attempts), (JobState::Dead, 1));
    assert_eq!(
        g.last_error(),
        Some("command exited with status 100: never")
    );
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_settings_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let h = || handler_fn(|_| async { Outcome::Done });
    let e = Pool::builder(q.clone(), vec![])
        .handler("k", h())
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at least one queue"), "{e}");
    let e = Pool::builder(q.clone(), vec!["bad name".into()])
        .handler("k", h())
        .start()
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = Pool::builder(q.clone(), vec!["q".into()])
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("needs a handler"), "{e}");
    let e = Pool::builder(q.clone(), vec!["q".into()])
        .min_max(4, 2)
        .handler("k", h())
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("autoscaling bounds"), "{e}");
    let e = Pool::builder(q.clone(), vec!["q".into()])
        .rate_limit_key(0.0)
        .handler("k", h())
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("rate limit"), "{e}");
    q.shutdown().await.unwrap();
}

/// A handler written without `#[async_trait]` that panics before it even returns its future.
struct EagerPanic;

impl durq::worker::Handler for EagerPanic {
    fn handle<'a, 'b>(
        &'a self,
        job: Job,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'b>>
    where
        'a: 'b,
    {
        if job.attempts == 1 {
            panic!("eager panic");
        }
        Box::pin(async { Outcome::Done })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_before_the_handler_future_exists_is_caught_too() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let id = q
        .enqueue(
            NewJob::new("q", b"".to_vec())
                .kind("k")
                .backoff(Duration::from_millis(5)),
        )
        .await
        .unwrap()
        .id;
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(1)
        .handler("k", EagerPanic)
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let report = pool.shutdown().await.unwrap();
    assert_eq!((report.stats.panics, report.stats.restarts), (1, 1));
    let j = q.get(id).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Completed, 2));
    assert_eq!(j.errors[0].error, "handler panicked: eager panic");
    q.shutdown().await.unwrap();
}
