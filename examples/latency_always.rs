//! Enqueue → handler-start latency at a steady rate with a 5-worker pool, under a chosen fsync
//! policy (the `enqueue_to_start_1000` figure of `benches/worker.rs`, which runs `everysec`
//! only). Also the enqueue call's own latency. One JSON line on stdout.
//!
//! `cargo run --release --example latency_always -- [always|everysec|no] [SECONDS] [RATE]`
//! (defaults: always, 3 s, 1000 jobs/s). `DURQ_BENCH_DIR` picks the directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::worker::{handler_fn, Outcome, Pool};
use durq::{FsyncPolicy, NewJob, Queue};
use hdrhistogram::Histogram;
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let policy: FsyncPolicy = args
        .first()
        .map(|s| s.parse().unwrap())
        .unwrap_or(FsyncPolicy::Always);
    let secs: u64 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(3);
    let rate: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(1000);
    let base = std::env::var_os("DURQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir_in(&base).unwrap();
        let q = Queue::builder(dir.path())
            .fsync(policy)
            .keep_completed(1000)
            .open()
            .await
            .unwrap();
        let origin = Instant::now();
        let start_h = Arc::new(parking_lot::Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ));
        let enq_h = Arc::new(parking_lot::Mutex::new(
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
        ));
        let h = start_h.clone();
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
        let n = secs * rate;
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let t = Instant::now();
        for _ in 0..n {
            tick.tick().await;
            let sent = origin.elapsed().as_nanos() as u64;
            let mut p = sent.to_le_bytes().to_vec();
            p.resize(256, b'x');
            let q = q.clone();
            let eh = enq_h.clone();
            tokio::spawn(async move {
                q.enqueue(NewJob::new("b", p).kind("noop")).await.unwrap();
                let us = (origin.elapsed().as_nanos() as u64).saturating_sub(sent) / 1000;
                eh.lock().saturating_record(us.max(1));
            });
        }
        let achieved = n as f64 / t.elapsed().as_secs_f64();
        while pool.stats().completed < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        pool.shutdown().await.unwrap();
        q.shutdown().await.unwrap();
        let s = start_h.lock();
        let e = enq_h.lock();
        println!(
            "{}",
            json!({
                "name": format!("enqueue_to_start_{rate}_{policy}"),
                "ops_per_s": achieved.round(),
                "start_p50_us": s.value_at_quantile(0.5),
                "start_p99_us": s.value_at_quantile(0.99),
                "enqueue_p50_us": e.value_at_quantile(0.5),
                "enqueue_p99_us": e.value_at_quantile(0.99),
                "jobs": n,
            })
        );
    });
}
