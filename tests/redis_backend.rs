//! The Redis backend against real, private `redis-server`s: several backends sharing one
//! queue, a SIGKILLed server, a host that dies holding leases, an unreachable server.
#![cfg(feature = "redis")]

mod redis_support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::{Error, Event, JobState, NewJob, Queue, ReserveRequest};
use parking_lot::Mutex;
use redis_support::RedisServer;

/// Hand-outs seen by the consumers: (payload, partition key).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn open(server: &RedisServer) -> Queue {
    open_with(server, Duration::from_secs(2)).await
}

async fn open_with(server: &RedisServer, timeout: Duration) -> Queue {
    Queue::builder(server.path())
        .redis(server.url())
        .redis_timeout(timeout)
        .open()
        .await
        .unwrap()
}

/// Two backends (separate connections), 4 producers and 8 consumers: every job is handed out
/// exactly once, none is lost, and the jobs of one key run one at a time in enqueue order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_backends_share_one_queue_under_load() {
    const PRODUCERS: usize = 4;
    const PER_PRODUCER: usize = 400;
    const KEYS_PER_PRODUCER: usize = 5;
    let server = RedisServer::start();
    let backends = [open(&server).await, open(&server).await];
    let total = PRODUCERS * PER_PRODUCER;

    // Producer p owns keys p-0..p-4 (so each key's enqueue order is well defined); every
    // third job has no key.
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = backends[p % 2].clone();
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                let mut j = NewJob::new("load", format!("{p}:{i}").into_bytes());
                if i % 3 != 0 {
                    j = j.key(format!("{p}-{}", i % KEYS_PER_PRODUCER));
                }
                q.enqueue(j).await.unwrap();
            }
        }));
    }

    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let mut consumers = Vec::new();
    for c in 0..8 {
        let q = backends[c % 2].clone();
        let (seen, in_flight, done, overlap) = (
            seen.clone(),
            in_flight.clone(),
            done.clone(),
            overlap.clone(),
        );
        consumers.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < total {
                let req = ReserveRequest::new(["load"]).wait(Duration::from_millis(200));
                let Some(l) = q.reserve_with(req).await.unwrap() else {
                    continue;
                };
                let payload = String::from_utf8(l.job.payload.clone()).unwrap();
                if let Some(k) = &l.job.key {
                    if !in_flight.lock().insert(k.clone()) {
                        overlap.store(true, Ordering::SeqCst);
                    }
                }
                seen.lock().push((payload, l.job.key.clone()));
                tokio::task::yield_now().await;
                if let Some(k) = &l.job.key {
                    in_flight.lock().remove(k);
                }
                q.ack(&l).await.unwrap();
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for p in producers {
        p.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        for c in consumers {
            c.await.unwrap();
        }
    })
    .await
    .expect("every job was consumed");

    assert!(
        !overlap.load(Ordering::SeqCst),
        "two jobs of one key ran at once"
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), total, "each job handed out once");
    let distinct: HashSet<&String> = seen.iter().map(|(p, _)| p).collect();
    assert_eq!(distinct.len(), total, "no job handed out twice");
    // Per key, the order of hand-out is the enqueue order.
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (payload, key) in &seen {
        if let Some(k) = key {
            let i: usize = payload.split(':').nth(1).unwrap().parse().unwrap();
            per_key.entry(k.clone()).or_default().push(i);
        }
    }
    assert_eq!(per_key.len(), PRODUCERS * KEYS_PER_PRODUCER);
    for (k, order) in per_key {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "key {k} ran out of order: {order:?}"
        );
    }
    let s = backends[0].stats().await.unwrap().queues["load"].clone();
    assert_eq!((s.waiting, s.active, s.delayed), (0, 0, 0), "{s:?}");
    for b in backends {
        b.shutdown().await.unwrap();
    }
}

/// SIGKILL of redis-server (appendfsync always) mid-run: every enqueue that returned Ok is
/// there after the restart, calls during the outage fail fast with `Unavailable`, the backend
/// reconnects by itself, and no job exists twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_redis_loses_no_acknowledged_enqueue() {
    let timeout = Duration::from_millis(500);
    let mut server = RedisServer::start();
    let q = open_with(&server, timeout).await;
    let acked: Arc<Mutex<Vec<(durq::JobId, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4 {
        let (q, acked, failed, stop) = (q.clone(), acked.clone(), failed.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let payload = format!("{p}:{i}");
                i += 1;
                let started = Instant::now();
                match q
                    .enqueue(NewJob::new("crash", payload.clone().into_bytes()))
                    .await
                {
                    Ok(e) => acked.lock().push((e.id, payload)),
                    Err(Error::Unavailable { url, .. }) => {
                        assert!(url.contains("127.0.0.1"), "{url}");
                        // One retry of an ambiguous reply at most: two timeouts and a pause.
                        assert!(
                            started.elapsed() < timeout * 2 + Duration::from_millis(500),
                            "an enqueue during the outage took {:?}",
                            started.elapsed()
                        );
                        failed.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(60), async {
                while acked.lock().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("enqueues make progress");
        }
    };
    wait_for(300).await;
    server.kill();
    let before_restart = acked.lock().len();
    // Calls during the outage fail fast, naming the server.
    let started = Instant::now();
    let e = q.stats().await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(e.to_string().contains(&server.url()[..16]), "{e}");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    tokio::time::timeout(Duration::from_secs(30), async {
        while failed.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("producers saw the outage");
    server.restart();
    // The same backend recovers by itself.
    wait_for(before_restart + 300).await;
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().clone();
    for (id, payload) in &acked {
        let j = q
            .get(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged job {id} ({payload}) was lost"));
        assert_eq!(j.payload, payload.as_bytes());
    }
    let all = q
        .list("crash", Some(JobState::Waiting), 1_000_000)
        .await
        .unwrap();
    let mut payloads = HashSet::new();
    for j in &all {
        assert!(
            payloads.insert(j.payload.clone()),
            "job {:?} exists twice",
            String::from_utf8_lossy(&j.payload)
        );
    }
    assert!(all.len() >= acked.len());
    q.shutdown().await.unwrap();
}

/// A host that reserved jobs and died (no shutdown): its jobs come back after the lease and
/// run on the other host, the attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_hosts_leases_come_back_after_expiry() {
    let server = RedisServer::start();
    let a = open(&server).await;
    let b = open(&server).await;
    let e = a.enqueue(NewJob::new("jobs", b"x".to_vec())).await.unwrap();
    let req = ReserveRequest::new(["jobs"]).lease(Duration::from_millis(700));
    let la = a.reserve_with(req).await.unwrap().unwrap();
    assert_eq!(la.job.id, e.id);
    drop(a); // host A dies without a word
    assert!(
        b.reserve(&["jobs"]).await.unwrap().is_none(),
        "still leased"
    );
    let lb = b
        .reserve_with(ReserveRequest::new(["jobs"]).wait(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the job came back");
    assert_eq!((lb.job.id, lb.job.attempts), (e.id, 2));
    assert!(lb.job.errors[0].error.contains("lease"));
    b.ack(&lb).await.unwrap();
    // A's late ack is refused.
    let err = b.backend().ack(la.job.id, la.token).await.unwrap_err();
    assert!(matches!(err, Error::LeaseLost { .. }), "{err}");
    b.shutdown().await.unwrap();
}

/// Nobody listening: the open fails within the timeout with `Unavailable` naming the URL.
#[tokio::test]
async fn unreachable_redis_is_unavailable_fast() {
    let port = redis_support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let e = Queue::builder(dir.path())
        .redis(url.clone())
        .redis_timeout(Duration::from_millis(300))
        .open()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match &e {
        Error::Unavailable { url: u, .. } => assert_eq!(u, &url),
        other => panic!("expected Unavailable, got {other}"),
    }
    assert!(e.to_string().contains(&url), "{e}");
    let bad = Queue::builder(dir.path()).redis("http://x").open().await;
    assert!(bad.unwrap_err().is_invalid_input());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the directory is untouched"
    );
}

/// The event stream carries this backend's operations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_operations() {
    let server = RedisServer::start();
    let q = open(&server).await;
    let mut rx = q.subscribe();
    let e = q
        .enqueue(NewJob::new("ev", b"x".to_vec()).kind("mail").max_retries(0))
        .await
        .unwrap();
    let l = q.reserve(&["ev"]).await.unwrap().unwrap();
    q.fail(&l, "boom").await.unwrap();
    q.requeue_dead("ev", durq::Selection::All).await.unwrap();
    let l = q.reserve(&["ev"]).await.unwrap().unwrap();
    q.ack(&l).await.unwrap();
    let mut names = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        names.push(match ev {
            Event::Enqueued { id, .. }
            | Event::Started { id, .. }
            | Event::Completed { id, .. } => {
                assert_eq!(id, e.id);
                format!("{ev:?}")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string()
            }
            other => format!("{other:?}")
                .split_whitespace()
                .next()
                .unwrap()
                .to_string(),
        });
    }
    assert_eq!(
        names,
        [
            "Enqueued",
            "Started",
            "Dead",
            "Requeued",
            "Started",
            "Completed"
        ]
    );
    q.shutdown().await.unwrap();
    assert!(matches!(q.stats().await, Err(Error::Closed)));
}

/// A reply lost to a timeout: the backend sends the same enqueue again (same token, same ids)
/// and the server applies it once. `CLIENT PAUSE WRITE` holds both sends past their timeouts;
/// when it ends, both run: the first adds the job, the second finds its token and changes
/// nothing (without the token it would queue the keyed job a second time behind itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_retried_after_a_lost_reply_adds_one_job() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let q = open_with(&server, timeout).await;
    q.enqueue(NewJob::new("idem", b"warm-up".to_vec()))
        .await
        .unwrap();
    let mut raw = server.raw();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query(&mut raw)
        .unwrap();
    let started = Instant::now();
    let e = q
        .enqueue(NewJob::new("idem", b"once".to_vec()).key("k"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "both sends timed out during the pause"
    );
    // Wait for the pause to end and both sends to run.
    let all = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(all) = q.list("idem", None, 100).await {
                if all.iter().any(|j| j.payload == b"once") {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return q.list("idem", None, 100).await.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the paused enqueue ran after the pause");
    let once = all.iter().filter(|j| j.payload == b"once").count();
    assert_eq!(once, 1, "the retried enqueue made a second job");
    let mut runs = 0;
    while let Some(l) = q.reserve(&["idem"]).await.unwrap() {
        if l.job.payload == b"once" {
            runs += 1;
        }
        q.ack(&l).await.unwrap();
    }
    assert_eq!(runs, 1, "the job ran once");
    let s = q.stats().await.unwrap().queues["idem"].clone();
    assert_eq!((s.waiting, s.completed), (0, 2), "{s:?}");
    q.shutdown().await.unwrap();
}
