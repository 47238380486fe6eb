//! What verifying the whole journal costs an open: a store of N waiting jobs (256-byte
//! payloads, enqueued in batches of 1,000 and one at a time), closed cleanly, then reopened.
//! Prints the time of `recovery::verify` (every record's CRC and decode) beside the whole open,
//! and checks the reopened store holds every job. `DURQ_OPEN_COST_JOBS` sets N (default 20,000;
//! run with `--release` for figures worth quoting).

mod dur_util;

use std::time::Instant;

use dur_util::*;
use durq::NewJob;

#[tokio::test]
async fn verifying_the_journal_on_open() {
    let n: usize = std::env::var("DURQ_OPEN_COST_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let q = durq::Queue::builder(dir.path())
        .fsync(durq::FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    // Half in batches, half one job per record: both record shapes.
    let mut i = 0;
    let mut records = 0u64;
    while i < n / 2 {
        let k = 1000.min(n / 2 - i);
        let batch = (i..i + k)
            .map(|j| NewJob::new("q", payload(j, 256)))
            .collect();
        q.enqueue_batch(batch).await.unwrap();
        records += 1;
        i += k;
    }
    for j in i..n {
        q.enqueue(NewJob::new("q", payload(j, 256))).await.unwrap();
        records += 1;
    }
    q.shutdown().await.unwrap();

    let t = Instant::now();
    let v = durq::journal::recovery::verify(&dir.path().join("journal")).unwrap();
    let verify = t.elapsed();
    assert_eq!(v.last_seq, records, "one record per enqueue call");

    let t = Instant::now();
    let q = open(dir.path(), 64 << 20).await.unwrap();
    let open_time = t.elapsed();
    let stats = q.stats().await.unwrap();
    q.shutdown().await.unwrap();
    assert_eq!(stats.queues["q"].waiting as usize, n);
    eprintln!(
        "open_cost: {n} jobs, {} records read (base included): verify {:.1} ms, whole open {:.1} ms ({:.0}% of it)",
        v.records,
        verify.as_secs_f64() * 1e3,
        open_time.as_secs_f64() * 1e3,
        100.0 * verify.as_secs_f64() / open_time.as_secs_f64()
    );
}
