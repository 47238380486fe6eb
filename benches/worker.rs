//! The worker-pool benchmark (issue 5, SPEC §11). One JSON object per line on stdout:
//!
//! - `noop_pool_5`, `noop_pool_16`: a pool with a no-op handler draining a prefilled queue
//!   (256-byte payloads, `everysec`) vs the core's raw reserve + ack cycle from the same number
//!   of tasks on the same disk, rounds interleaved; ratio = pool jobs/s ÷ raw jobs/s
//!   (target ≥ 0.8).
//! - `enqueue_to_start_1000`: enqueue → handler start latency at a steady 1,000 jobs/s with 5
//!   workers under `everysec` (p50/p99; target p99 ≤ 2 ms). No baseline.
//!
//! `cargo bench --bench worker`; `DURQ_BENCH_QUICK=1` for a short run (fewer, smaller rounds).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::worker::{handler_fn, Outcome, Pool};
use durq::{FsyncPolicy, NewJob, Queue};
use hdrhistogram::Histogram;
use serde_json::json;

const PAYLOAD: usize = 256;

async fn open(dir: &Path) -> Queue {
    Queue::builder(dir)
        .fsync(FsyncPolicy::EverySec)
        .keep_completed(1000)
        .open()
        .await
        .unwrap()
}

async fn prefill(q: &Queue, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(1000);
        let jobs = (0..k)
            .map(|_| NewJob::new("b", vec![b'x'; PAYLOAD]).kind("noop"))
            .collect();
        q.enqueue_batch(jobs).await.unwrap();
        left -= k;
    }
}

/// Jobs/s of a pool with a no-op handler draining `n` jobs.
async fn pool_round(dir: &Path, workers: usize, n: usize) -> f64 {
    let q = open(dir).await;
    prefill(&q, n).await;
    let pool = Pool::builder(q.clone(), vec!["b".into()])
        .concurrency(workers)
        .handler("noop", handler_fn(|_| async { Outcome::Done }))
        .start()
        .await
        .unwrap();
    let t = Instant::now();
    while pool.stats().completed < n as u64 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    pool.shutdown().await.unwrap();
    q.shutdown().await.unwrap();
    n as f64 / secs
}

/// Jobs/s of `tasks` raw reserve + ack loops draining `n` jobs.
async fn raw_round(dir: &Path, tasks: usize, n: usize) -> f64 {
    let q = open(dir).await;
    prefill(&q, n).await;
    let done = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (q, done) = (q.clone(), done.clone());
        set.spawn(async move {
            while let Some(l) = q.reserve(&["b"]).await.unwrap() {
                q.ack(&l).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(done.load(Ordering::Relaxed), n as u64);
    q.shutdown().await.unwrap();
    n as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn noop(base: &Path, workers: usize, rounds: usize, n: usize) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // Alternate which side goes first: the disk changes speed by itself.
        let da = tempfile::tempdir_in(base).unwrap();
        let db = tempfile::tempdir_in(base).unwrap();
        if r % 2 == 0 {
            a.push(pool_round(da.path(), workers, n).await);
            b.push(raw_round(db.path(), workers, n).await);
        } else {
            b.push(raw_round(db.path(), workers, n).await);
            a.push(pool_round(da.path(), workers, n).await);
        }
    }
    let (pa, pb) = (median(a.clone()), median(b.clone()));
    let ratio = pa / pb;
    println!(
        "{}",
        json!({
            "name": format!("noop_pool_{workers}"),
            "ops_per_s": pa.round(),
            "p50_us": null,
            "p99_us": null,
            "baseline": format!("raw reserve+ack, {workers} tasks"),
            "baseline_ops_per_s": pb.round(),
            "ratio": (ratio * 100.0).round() / 100.0,
            "target": ">= 0.8",
            "met": ratio >= 0.8,
            "jobs_per_round": n,
            "rounds": rounds,
            "round_ops_per_s": a.iter().map(|x| x.round()).collect::<Vec<_>>(),
            "round_baseline_ops_per_s": b.iter().map(|x| x.round()).collect::<Vec<_>>(),
        })
    );
}

async fn latency(base: &Path, secs: u64) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let q = open(dir.path()).await;
    let origin = Instant::now();
    let hist = Arc::new(parking_lot::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let h = hist.clone();
    let pool = Pool::builder(q.clone(), vec!["b".into()])
        .concurrency(5)
        .handler(
            "noop",
            handler_fn(move |job: durq::Job| {
                let h = h.clone();
                async move {
                    let now = origin.elapsed().as_nanos() as u64;
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&job.payload[..8]);
                    let us = now.saturating_sub(u64::from_le_bytes(sent)) / 1000;
                    h.lock().saturating_record(us.max(1));
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    let n = secs * 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t = Instant::now();
    for _ in 0..n {
        tick.tick().await;
        let mut p = (origin.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
        p.resize(PAYLOAD, b'x');
        let q = q.clone();
        // Enqueue from its own task so a slow enqueue does not delay the next one.
        tokio::spawn(async move { q.enqueue(NewJob::new("b", p).kind("noop")).await.unwrap() });
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    while pool.stats().completed < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pool.shutdown().await.unwrap();
    q.shutdown().await.unwrap();
    let h = hist.lock();
    let p99 = h.value_at_quantile(0.99);
    println!(
        "{}",
        json!({
            "name": "enqueue_to_start_1000",
            "ops_per_s": rate.round(),
            "p50_us": h.value_at_quantile(0.5),
            "p99_us": p99,
            "max_us": h.max(),
            "baseline": null,
            "baseline_ops_per_s": null,
            "ratio": null,
            "target": "p99 <= 2000 us",
            "met": p99 <= 2000,
            "jobs": n,
        })
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches to list tests.
    }
    let quick = std::env::var("DURQ_BENCH_QUICK").is_ok_and(|v| v != "0");
    let (rounds, n, secs) = if quick {
        (3, 5_000, 3)
    } else {
        (7, 20_000, 10)
    };
    let base = std::env::var_os("DURQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        noop(&base, 5, rounds, n).await;
        noop(&base, 16, rounds, n).await;
        latency(&base, secs).await;
    });
}
