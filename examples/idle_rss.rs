//! Idle memory of an embedded queue: opens a queue in a fresh directory (default options,
//! `everysec`), enqueues and completes one job, idles for `DURQ_IDLE_SECS` (default 3) seconds,
//! then prints the process's resident set size (`VmRSS` from `/proc/self/status`) as one JSON line.
//!
//! `cargo run --release --example idle_rss`

use std::time::Duration;

use durq::{NewJob, Queue};

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() -> durq::Result<()> {
    let secs: u64 = std::env::var("DURQ_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("cannot create a temporary directory");
    let q = Queue::open(dir.path()).await?;
    q.enqueue(NewJob::new("q", b"{}".to_vec())).await?;
    let lease = q.reserve(&["q"]).await?.expect("the job just enqueued");
    q.ack(&lease).await?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let rss = vm_rss_kib().unwrap_or(0);
    println!(
        r#"{{"idle_secs":{secs},"vm_rss_kib":{rss},"vm_rss_mib":{:.1}}}"#,
        rss as f64 / 1024.0
    );
    q.shutdown().await?;
    Ok(())
}
