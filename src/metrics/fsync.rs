//! Fsync latency, process-wide (like Redis' `aof_delayed_fsync`): every journal fsync is timed
//! into a fixed-bucket histogram (`durq_fsync_seconds`); an fsync slower than [`SLOW_FSYNC`] and
//! an `everysec` append that had to wait for a stalled background fsync are each logged as a
//! `tracing` warning naming the file and the time, and counted in `durq_fsync_delayed_total`
//! (label `reason`: `slow_fsync` or `append_waited`).
//!
//! Invariants: lock-free (atomics only), so the journal threads never wait on a reader of the
//! metrics; counters only grow; the histogram is cumulative as Prometheus wants it when
//! rendered ([`render`]).

use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An fsync slower than this is logged and counted as delayed.
pub const SLOW_FSYNC: Duration = Duration::from_secs(2);

/// Upper bounds (seconds) of the histogram buckets; `+Inf` follows.
pub const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

struct FsyncStats {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    slow: AtomicU64,
    waited: AtomicU64,
}

static STATS: FsyncStats = FsyncStats {
    buckets: [const { AtomicU64::new(0) }; BUCKETS.len()],
    count: AtomicU64::new(0),
    sum_nanos: AtomicU64::new(0),
    slow: AtomicU64::new(0),
    waited: AtomicU64::new(0),
};

/// Records one fsync of `file` that took `took`; warns and counts it when it was slow.
pub fn observe(file: &Path, took: Duration) {
    let secs = took.as_secs_f64();
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        STATS.buckets[i].fetch_add(1, Ordering::Relaxed);
    }
    STATS.count.fetch_add(1, Ordering::Relaxed);
    STATS.sum_nanos.fetch_add(
        took.as_nanos().min(u64::MAX as u128) as u64,
        Ordering::Relaxed,
    );
    ::metrics::histogram!("durq_fsync_seconds").record(secs);
    if took > SLOW_FSYNC {
        STATS.slow.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!("durq_fsync_delayed_total", "reason" => "slow_fsync").increment(1);
        tracing::warn!(
            file = %file.display(),
            took_ms = took.as_millis() as u64,
            "fsync of {} took {:.1} s (over {} s): the disk is slow",
            file.display(),
            secs,
            SLOW_FSYNC.as_secs()
        );
    }
}

/// Records that an `everysec` append waited `waited` for a background fsync of `file` that
/// had been running for over 2 s.
pub fn append_waited(file: &Path, waited: Duration) {
    STATS.waited.fetch_add(1, Ordering::Relaxed);
    ::metrics::counter!("durq_fsync_delayed_total", "reason" => "append_waited").increment(1);
    tracing::warn!(
        file = %file.display(),
        waited_ms = waited.as_millis() as u64,
        "an append waited {:.1} s for a background fsync of {} that had been running for over 2 s (everysec)",
        waited.as_secs_f64(),
        file.display()
    );
}

/// Delayed fsyncs so far: (slow fsyncs, appends that waited).
pub fn delayed() -> (u64, u64) {
    (
        STATS.slow.load(Ordering::Relaxed),
        STATS.waited.load(Ordering::Relaxed),
    )
}

/// Fsyncs timed so far.
pub fn count() -> u64 {
    STATS.count.load(Ordering::Relaxed)
}

/// Appends the fsync families in the Prometheus text format (HELP and TYPE lines first).
pub fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP durq_fsync_delayed_total Journal fsyncs slower than 2 s, and everysec appends that waited for a stalled fsync."
    );
    let _ = writeln!(out, "# TYPE durq_fsync_delayed_total counter");
    let (slow, waited) = delayed();
    let _ = writeln!(
        out,
        "durq_fsync_delayed_total{{reason=\"slow_fsync\"}} {slow}"
    );
    let _ = writeln!(
        out,
        "durq_fsync_delayed_total{{reason=\"append_waited\"}} {waited}"
    );
    let _ = writeln!(out, "# HELP durq_fsync_seconds Latency of journal fsyncs.");
    let _ = writeln!(out, "# TYPE durq_fsync_seconds histogram");
    let mut cum = 0u64;
    for (b, n) in BUCKETS.iter().zip(&STATS.buckets) {
        cum += n.load(Ordering::Relaxed);
        let _ = writeln!(out, "durq_fsync_seconds_bucket{{le=\"{b}\"}} {cum}");
    }
    let count = count();
    let _ = writeln!(out, "durq_fsync_seconds_bucket{{le=\"+Inf\"}} {count}");
    let sum = STATS.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "durq_fsync_seconds_sum {sum}");
    let _ = writeln!(out, "durq_fsync_seconds_count {count}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_slow_fsyncs() {
        let (slow0, _) = delayed();
        let n0 = count();
        observe(Path::new("x.seg"), Duration::from_micros(50));
        observe(Path::new("x.seg"), Duration::from_millis(2100));
        assert!(count() >= n0 + 2);
        assert!(delayed().0 > slow0);
        let mut s = String::new();
        render(&mut s);
        assert!(s.contains("# TYPE durq_fsync_seconds histogram"));
        let mut last = 0u64;
        for line in s
            .lines()
            .filter(|l| l.starts_with("durq_fsync_seconds_bucket"))
        {
            let v: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= last, "buckets must be cumulative: {line}");
            last = v;
        }
        assert!(last >= n0 + 2, "+Inf bucket counts every fsync");
    }
}
