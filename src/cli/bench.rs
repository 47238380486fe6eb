//! `durq bench`: a quick in-process measurement, 256-byte payloads, each figure beside a
//! baseline measured in the same run on the same disk (the disk's sync speed drifts, so only
//! ratios compare across runs). Rows:
//! - `raw_append_fdatasync`: one `write` + `fdatasync` per record (the baseline);
//! - `enqueue_1`: one producer, per fsync policy (p50 latency vs the baseline's);
//! - `enqueue_64`: 64 concurrent producers, per policy;
//! - `cycle_16`: enqueue then reserve + ack by 16 tasks, per policy.
//!
//! The `benches/` directory holds the full criterion-style runs; this is the quick look.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::backend::ReserveRequest;
use crate::job::NewJob;
use crate::options::FsyncPolicy;
use crate::queue::Queue;

use super::args::BenchArgs;
use super::{CliError, Globals};

const PAYLOAD: usize = 256;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured.
    pub bench: &'static str,
    /// Fsync policy (`-` for the baseline).
    pub policy: String,
    /// Operations done.
    pub ops: usize,
    /// Operations per second.
    pub ops_per_sec: f64,
    /// Median latency of one operation, in microseconds (when measured one by one).
    pub p50_us: Option<f64>,
    /// Throughput relative to the raw baseline.
    pub ratio_vs_raw: f64,
}

fn payload(i: usize) -> Vec<u8> {
    let mut s = format!("{{\"n\":{i},\"pad\":\"");
    while s.len() < PAYLOAD - 2 {
        s.push('x');
    }
    s.push_str("\"}");
    s.into_bytes()
}

fn p50(mut v: Vec<Duration>) -> Option<f64> {
    v.sort();
    v.get(v.len() / 2).map(|d| d.as_secs_f64() * 1e6)
}

fn raw_baseline(dir: &Path, n: usize) -> Result<(f64, Option<f64>), CliError> {
    let path = dir.join("raw.log");
    let mut f = std::fs::File::create(&path)
        .map_err(|e| CliError::other(format!("cannot create {}: {e}", path.display())))?;
    let rec = vec![b'x'; PAYLOAD + 16];
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&rec)
            .and_then(|()| f.sync_data())
            .map_err(|e| CliError::other(format!("raw append failed: {e}")))?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((n as f64 / secs, p50(lat)))
}

async fn open(dir: &Path, policy: FsyncPolicy) -> Result<Queue, CliError> {
    Ok(Queue::builder(dir).fsync(policy).open().await?)
}

async fn enqueue_1(
    dir: &Path,
    policy: FsyncPolicy,
    n: usize,
) -> Result<(f64, Option<f64>), CliError> {
    let q = open(dir, policy).await?;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        q.enqueue(NewJob::new("bench", payload(i))).await?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    q.shutdown().await?;
    Ok((n as f64 / secs, p50(lat)))
}

/// Ops per second of `tasks` concurrent tasks doing `n` enqueues in all, each followed by a
/// reserve + ack of that task's own queue when `cycle` is set.
async fn drive(
    dir: &Path,
    policy: FsyncPolicy,
    n: usize,
    tasks: usize,
    cycle: bool,
) -> Result<f64, CliError> {
    let q = open(dir, policy).await?;
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let q = q.clone();
        let share = n / tasks + usize::from(t < n % tasks);
        let queue = if cycle {
            format!("cycle-{t}")
        } else {
            "bench".to_string()
        };
        set.spawn(async move {
            for i in 0..share {
                q.enqueue(NewJob::new(queue.clone(), payload(i))).await?;
                if cycle {
                    let req = ReserveRequest::new([queue.clone()]);
                    if let Some(l) = q.reserve_with(req).await? {
                        q.ack(&l).await?;
                    }
                }
            }
            Ok::<_, crate::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| CliError::other(format!("a bench task failed: {e}")))??;
    }
    let secs = start.elapsed().as_secs_f64();
    q.shutdown().await?;
    Ok(n as f64 / secs)
}

/// Runs `durq bench`.
pub async fn run(g: &Globals, a: BenchArgs) -> Result<(), CliError> {
    if a.ops == 0 || a.ops > 10_000_000 {
        return Err(CliError::usage("--ops must be from 1 to 10000000"));
    }
    let scratch = match &a.dir {
        Some(d) => tempfile_in(d)?,
        None => tempfile_in(&std::env::temp_dir())?,
    };
    let root = scratch.path().to_path_buf();
    let spinner = super::check::spinner("benchmarking");
    let n = a.ops;
    let (raw_rate, raw_p50) = raw_baseline(&root, n)?;
    let mut rows = vec![Row {
        bench: "raw_append_fdatasync",
        policy: "-".into(),
        ops: n,
        ops_per_sec: raw_rate,
        p50_us: raw_p50,
        ratio_vs_raw: 1.0,
    }];
    for policy in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No] {
        let sub = |name: &str| root.join(format!("{name}-{policy}"));
        let (rate, lat) = enqueue_1(&sub("e1"), policy, n).await?;
        rows.push(row("enqueue_1", policy, n, rate, lat, raw_rate));
        let rate = drive(&sub("e64"), policy, n, 64, false).await?;
        rows.push(row("enqueue_64", policy, n, rate, None, raw_rate));
        let rate = drive(&sub("c16"), policy, n, 16, true).await?;
        rows.push(row("cycle_16", policy, n, rate, None, raw_rate));
    }
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    print(&rows, g.json)
}

fn row(
    bench: &'static str,
    p: FsyncPolicy,
    ops: usize,
    rate: f64,
    p50_us: Option<f64>,
    raw: f64,
) -> Row {
    Row {
        bench,
        policy: p.to_string(),
        ops,
        ops_per_sec: rate,
        p50_us,
        ratio_vs_raw: rate / raw,
    }
}

fn tempfile_in(d: &Path) -> Result<tempfile_dir::TempDir, CliError> {
    tempfile_dir::TempDir::new_in(d).map_err(|e| {
        CliError::other(format!(
            "cannot create a scratch directory in {}: {e}",
            d.display()
        ))
    })
}

fn print(rows: &[Row], json: bool) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock<'_>, s: String| {
        writeln!(out, "{s}").map_err(|e| CliError::other(format!("cannot write to stdout: {e}")))
    };
    if json {
        for r in rows {
            let line = serde_json::to_string(r)
                .map_err(|e| CliError::other(format!("cannot encode a row: {e}")))?;
            w(&mut out, line)?;
        }
        return Ok(());
    }
    w(
        &mut out,
        format!(
            "{:<22} {:<9} {:>8} {:>12} {:>10} {:>8}",
            "BENCH", "FSYNC", "OPS", "OPS/S", "P50 µs", "VS RAW"
        ),
    )?;
    for r in rows {
        w(
            &mut out,
            format!(
                "{:<22} {:<9} {:>8} {:>12.0} {:>10} {:>7.2}x",
                r.bench,
                r.policy,
                r.ops,
                r.ops_per_sec,
                r.p50_us.map_or("-".into(), |v| format!("{v:.0}")),
                r.ratio_vs_raw
            ),
        )?;
    }
    Ok(())
}

/// A scratch directory removed on drop (no dependency on the `tempfile` dev crate).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    /// A directory removed when dropped.
    #[derive(Debug)]
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `durq-bench-<pid>-<n>` inside `parent`.
        pub fn new_in(parent: &Path) -> std::io::Result<TempDir> {
            let p = parent.join(format!(
                "durq-bench-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }
        /// Its path.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
