//! Watcher benchmarks (JSON lines, like `benches/cycle.rs`):
//! - `watch_hash_{4k,1m,256m}`: the settle path's streamed file hash (open + read + SHA-256, one
//!   thread, as one pool worker) vs `sha2::Sha256` over the same bytes already in memory, rounds
//!   interleaved in the same run (target ratio ≥ 0.8 in bytes/s). Also reported: the floor of any
//!   file hash, `std::fs::read` + SHA-256 (`ratio_vs_read_floor`), which shows what per-file
//!   syscalls cost for small files.
//! - `watch_storm_10k`: 10,000 files created at once in a watched tree: events settled per second
//!   (first write to last job) and the time from the last write to the last job enqueued.
//!
//! `cargo bench --bench watch` (`DURQ_BENCH_QUICK=1` for fewer rounds and a 64 MiB big file,
//! `DURQ_BENCH_DIR` for the disk to use, `DURQ_BENCH_ONLY=storm,4k` to pick).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use durq::watch::hash::{hash_file, hash_file_with, BUF};
use durq::watch::{WatchConfig, Watcher};
use serde_json::json;
use sha2::{Digest, Sha256};

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.u8(..)).collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn hash_bench(dir: &Path, name: &str, size: usize, files: usize, rounds: usize) {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut datas: Vec<Vec<u8>> = Vec::new();
    for i in 0..files {
        let b = bytes(size, i as u64);
        let p = d.join(format!("f{i}"));
        std::fs::write(&p, &b).unwrap();
        paths.push(p);
        datas.push(b);
    }
    // Warm the page cache once (the settle path reads files an event just reported written).
    for p in &paths {
        hash_file(p).unwrap();
    }
    let (mut best_w, mut best_b, mut best_r) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut buf = vec![0u8; BUF]; // one buffer per pool thread, as in `HashPool`
    for _ in 0..rounds {
        let t = Instant::now();
        for (p, b) in paths.iter().zip(&datas) {
            let (sha, n) = hash_file_with(p, &mut buf).unwrap();
            assert_eq!(n as usize, b.len());
            std::hint::black_box(sha);
        }
        best_w = best_w.min(t.elapsed());
        let t = Instant::now();
        for b in &datas {
            std::hint::black_box(Sha256::digest(std::hint::black_box(b)));
        }
        best_b = best_b.min(t.elapsed());
        // The floor of any file hash: `std::fs::read` (open, statx, read, close) + SHA-256.
        let t = Instant::now();
        for p in &paths {
            let b = std::fs::read(p).unwrap();
            std::hint::black_box(Sha256::digest(&b));
        }
        best_r = best_r.min(t.elapsed());
    }
    let total = (size * files) as f64;
    let (w, b) = (best_w.as_secs_f64(), best_b.as_secs_f64());
    let ratio = b / w;
    let r = best_r.as_secs_f64();
    println!(
        "{}",
        json!({
            "name": name,
            "ops_per_s": (files as f64 / w).round(),
            "mb_per_s": round2(total / w / 1e6),
            "baseline": "sha2_in_memory",
            "baseline_ops_per_s": (files as f64 / b).round(),
            "baseline_mb_per_s": round2(total / b / 1e6),
            "ratio": round2(ratio),
            "read_floor_mb_per_s": round2(total / r / 1e6),
            "ratio_vs_read_floor": round2(r / w),
            "target": ">= 0.8",
            "met": ratio >= 0.8,
            "file_bytes": size,
            "files": files,
            "rounds": rounds,
        })
    );
}

fn write_files(dir: &Path, n: usize) -> Instant {
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:05}")), format!("content {i}")).unwrap();
    }
    Instant::now()
}

async fn storm(dir: &Path, n: usize) {
    // Baseline: the same writes into a tree nobody watches.
    let plain = dir.join("storm-plain");
    std::fs::create_dir_all(&plain).unwrap();
    let t = Instant::now();
    let p = plain.clone();
    tokio::task::spawn_blocking(move || write_files(&p, n))
        .await
        .unwrap();
    let plain_s = t.elapsed().as_secs_f64();
    let data = dir.join("storm-data");
    let tree = dir.join("storm-tree");
    std::fs::create_dir_all(tree.join("untar")).unwrap();
    let q = durq::Queue::open(data.join("q")).await.unwrap();
    let mut cfg = WatchConfig::new(vec![tree.clone()], "files", data.join("watch"));
    cfg.debounce = Duration::from_millis(200);
    let w = Watcher::start(q.clone(), cfg).await.unwrap();
    let t0 = Instant::now();
    let t = tree.join("untar");
    let last_write = tokio::task::spawn_blocking(move || write_files(&t, n))
        .await
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let st = q.stats().await.unwrap();
        if st.totals.waiting as usize >= n {
            break;
        }
        assert!(Instant::now() < end, "storm did not finish: {st:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let done = Instant::now();
    let m = w.metrics();
    w.stop().await.unwrap();
    // The settle path alone: a fresh watcher (no records) settles the 10,000 files in its
    // start-up scan: stat, hash, enqueue, record.
    let mut cfg = WatchConfig::new(vec![tree.clone()], "scan", data.join("watch-scan"));
    cfg.debounce = Duration::from_millis(200);
    let t = Instant::now();
    let w2 = Watcher::start(q.clone(), cfg).await.unwrap();
    let scan = t.elapsed();
    let settled = w2.metrics().events_settled;
    w2.stop().await.unwrap();
    q.shutdown().await.unwrap();
    println!(
        "{}",
        json!({
            "name": "watch_scan_10k",
            "ops_per_s": (settled as f64 / scan.as_secs_f64()).round(),
            "files": settled,
            "scan_ms": scan.as_millis(),
        })
    );
    let total = done - t0;
    println!(
        "{}",
        json!({
            "name": "watch_storm_10k",
            "ops_per_s": (n as f64 / total.as_secs_f64()).round(),
            "files": n,
            "write_s": round2((last_write - t0).as_secs_f64()),
            "baseline": "same_writes_unwatched",
            "baseline_write_s": round2(plain_s),
            "last_write_to_last_job_ms": (done - last_write).as_millis(),
            "debounce_ms": 200,
            "rescans": m.rescans,
        })
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches to list tests.
    }
    let quick = std::env::var("DURQ_BENCH_QUICK").is_ok_and(|v| v != "0");
    let base = std::env::var_os("DURQ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let only = std::env::var("DURQ_BENCH_ONLY").ok();
    let wants = |n: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|x| n.contains(x)))
    };
    let rounds = if quick { 3 } else { 7 };
    if wants("watch_hash_4k") {
        hash_bench(tmp.path(), "watch_hash_4k", 4096, 2048, rounds);
    }
    if wants("watch_hash_1m") {
        hash_bench(tmp.path(), "watch_hash_1m", 1 << 20, 64, rounds);
    }
    let big = if quick { 64 << 20 } else { 256 << 20 };
    if wants("watch_hash_256m") {
        hash_bench(tmp.path(), "watch_hash_256m", big, 1, rounds.min(4));
    }
    if wants("watch_storm_10k") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(storm(tmp.path(), 10_000));
    }
}
