//! durq in one minute: open a data directory, enqueue 1,000 jobs of mixed priorities and
//! partition keys, process them with 5 concurrent consumers, print the stats.
//!
//! One job in ten fails twice before it succeeds (retried after 10 ms, then 20 ms); one job is
//! poison: it fails every attempt and ends in the dead letters with its error history.
//!
//! ```text
//! cargo run --release --example quickstart            # a fresh temporary directory
//! cargo run --release --example quickstart -- ./data  # or a directory of your choice
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::{FailOutcome, NewJob, Priority, Queue, ReserveRequest, RetryPolicy};
use parking_lot::Mutex;

const JOBS: u64 = 1_000;
const CONSUMERS: usize = 5;
const POISON: u64 = 777;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp;
    let dir = match std::env::args_os().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            temp = tempfile::Builder::new()
                .prefix("durq-quickstart-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!("data directory: {}", dir.display());

    // Short retries so the demo finishes in seconds: 10 ms, 20 ms, 40 ms, then dead.
    let q = Queue::builder(&dir)
        .retry(RetryPolicy {
            max_retries: 3,
            base_ms: 10,
            factor: 2.0,
            cap_ms: 0,
            jitter: 0.0,
        })
        .open()
        .await?;

    // 1,000 jobs in batches of 100: priorities cycle low/normal/high/critical; half of them
    // carry one of 20 chat ids as partition key (those run one at a time, in order).
    let start = Instant::now();
    let levels = [
        Priority::LOW,
        Priority::NORMAL,
        Priority::HIGH,
        Priority::CRITICAL,
    ];
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(100) {
        let mut batch = Vec::with_capacity(chunk.len());
        for &n in chunk {
            let body = serde_json::json!({ "n": n, "text": format!("message {n}") });
            let mut job = NewJob::json("messages", &body)?
                .kind("telegram_message")
                .priority(levels[(n % 4) as usize]);
            if n % 2 == 0 {
                job = job.key(format!("chat-{}", n % 20));
            }
            batch.push(job);
        }
        q.enqueue_batch(batch).await?;
    }
    println!(
        "enqueued {JOBS} jobs in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );

    let finished = Arc::new(AtomicU64::new(0));
    // Per partition key, the job numbers in completion order (to show the order guarantee).
    let order: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let start = Instant::now();
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (q, finished, order) = (q.clone(), finished.clone(), order.clone());
        consumers.push(tokio::spawn(async move {
            let req = ReserveRequest::new(["messages"]).wait(Duration::from_millis(100));
            while finished.load(Ordering::Acquire) < JOBS {
                let Some(lease) = q.reserve_with(req.clone()).await? else {
                    continue;
                };
                let n = lease.job.json::<serde_json::Value>()?["n"]
                    .as_u64()
                    .unwrap_or(0);
                let flaky = n % 10 == 3 && lease.job.attempts <= 2;
                if n == POISON || flaky {
                    let why = if n == POISON {
                        "poison: cannot parse"
                    } else {
                        "flaky upstream"
                    };
                    if q.fail(&lease, why).await? == FailOutcome::Dead {
                        finished.fetch_add(1, Ordering::AcqRel);
                    }
                    continue;
                }
                if let Some(key) = &lease.job.key {
                    order.lock().entry(key.clone()).or_default().push(n);
                }
                q.ack(&lease).await?;
                finished.fetch_add(1, Ordering::AcqRel);
            }
            Ok::<(), durq::Error>(())
        }));
    }
    for c in consumers {
        c.await??;
    }
    let took = start.elapsed();
    println!(
        "processed {JOBS} jobs with {CONSUMERS} consumers in {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    let in_order = order
        .lock()
        .values()
        .all(|v| v.windows(2).all(|w| w[0] < w[1]));
    println!("jobs sharing a partition key ran in enqueue order: {in_order}");

    let s = q.stats().await?;
    let m = &s.queues["messages"];
    println!(
        "stats: waiting {} delayed {} active {} completed {} dead {}",
        m.waiting, m.delayed, m.active, m.completed, m.dead
    );
    for job in q.dead_letters("messages", 10).await? {
        println!("dead letter {} ({} attempts):", job.id, job.attempts);
        for e in &job.errors {
            println!("  attempt {} at {}: {}", e.attempt, e.at, e.error);
        }
    }
    q.shutdown().await?;
    Ok(())
}
