//! The core benchmark (issue 2, SPEC §11): every figure is a ratio against a baseline measured in
//! the same run, on the same disk, with A/B rounds interleaved (this machine's disk switches
//! between ~75 µs and ~4 ms per fdatasync for minutes at a time). 256-byte payloads. One JSON
//! object per line on stdout:
//!
//! - `enqueue_always_1`: one producer under `always` vs one raw append + fdatasync per record
//!   (same directory); ratio = durq p50 ÷ raw p50 (target ≤ 1.3).
//! - `enqueue_always_64`: 64 concurrent producers under `always` vs the lower of raw appends with
//!   one fdatasync per 64 records and raw sled `apply_batch` of 64 (no flush); ratio = durq ops/s
//!   ÷ baseline ops/s (target ≥ 0.7).
//! - `cycle_always_16`, `cycle_everysec_16`: enqueue + reserve + ack from 16 tasks vs Redis'
//!   reliable-queue cycle (LPUSH, LMOVE, LREM) from 16 tasks on one multiplexed connection to a
//!   `redis-server` started here with `appendonly yes` and the same `appendfsync`; ratio = durq
//!   ops/s ÷ Redis ops/s (target ≥ 3).
//! - `reopen_1m`: time to open a store holding 1 M waiting jobs and the peak RSS of the process
//!   that opens it (a fresh child process; target ≤ 3 s and ≤ 200 MiB).
//!
//! - `redis_backend_cycle_always_16`, `redis_backend_cycle_everysec_16` (feature `redis`):
//!   the Redis backend's enqueue + reserve + ack from 16 tasks vs the same raw reliable-queue
//!   cycle on the same `redis-server`; ratio = backend ops/s ÷ raw ops/s (target ≥ 0.5); also
//!   enqueue alone (1 and 16 tasks) and reserve + ack alone (16 tasks).
//!
//! `cargo bench --bench cycle`; `DURQ_BENCH_QUICK=1` for a run of a few minutes (fewer rounds,
//! 200 k jobs for the reopen figure, said in its JSON). `DURQ_BENCH_ONLY=cycle_always_16,...`
//! runs some figures only.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::{FsyncPolicy, NewJob, Queue, ReserveRequest};
use hdrhistogram::Histogram;
use serde_json::json;

const PAYLOAD: usize = 256;

struct Cfg {
    quick: bool,
    rounds: usize,
    only: Option<Vec<String>>,
}

impl Cfg {
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    }
}

/// Latencies and elapsed time of one side of a figure, summed over its rounds.
struct Side {
    hist: Histogram<u64>,
    ops: u64,
    secs: f64,
    round_rates: Vec<f64>,
}

impl Side {
    fn new() -> Side {
        Side {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            ops: 0,
            secs: 0.0,
            round_rates: Vec::new(),
        }
    }
    fn add_round(&mut self, ops: u64, secs: f64, lat_us: &[u64]) {
        self.ops += ops;
        self.secs += secs;
        self.round_rates.push(ops as f64 / secs);
        for l in lat_us {
            let _ = self.hist.record((*l).max(1));
        }
    }
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn p(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64
    }
}

fn payload(tag: u64) -> Vec<u8> {
    let mut p = format!("{tag:020}").into_bytes();
    p.resize(PAYLOAD, b'x');
    p
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[allow(clippy::too_many_arguments)]
fn emit(
    name: &str,
    a: &Side,
    baseline: &str,
    b: &Side,
    ratio: f64,
    target: &str,
    met: bool,
    extra: serde_json::Value,
) {
    let mut v = json!({
        "name": name,
        "ops_per_s": a.rate().round(),
        "p50_us": a.p(0.5),
        "p99_us": a.p(0.99),
        "baseline": baseline,
        "baseline_ops_per_s": b.rate().round(),
        "baseline_p50_us": b.p(0.5),
        "ratio": round2(ratio),
        "target": target,
        "met": met,
    });
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    println!("{v}");
}

async fn open(dir: &Path, policy: FsyncPolicy) -> Queue {
    Queue::builder(dir).fsync(policy).open().await.unwrap()
}

/// One raw append + fdatasync per record, or one fdatasync per `group` records.
fn raw_appends(path: &Path, records: usize, group: usize) -> (f64, Vec<u64>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let rec = payload(7);
    let mut lat = Vec::with_capacity(records / group + 1);
    let start = Instant::now();
    let mut t = Instant::now();
    for i in 1..=records {
        f.write_all(&rec).unwrap();
        if i % group == 0 {
            f.sync_data().unwrap();
            lat.push(t.elapsed().as_micros() as u64);
            t = Instant::now();
        }
    }
    (start.elapsed().as_secs_f64(), lat)
}

/// Raw sled `apply_batch` of `group` inserts, no flush.
fn raw_sled(db: &sled::Db, next: &mut u64, records: usize, group: usize) -> (f64, Vec<u64>) {
    let rec = payload(7);
    let mut lat = Vec::new();
    let start = Instant::now();
    for _ in 0..records / group {
        let t = Instant::now();
        let mut b = sled::Batch::default();
        for _ in 0..group {
            *next += 1;
            b.insert(&next.to_be_bytes(), rec.as_slice());
        }
        db.apply_batch(b).unwrap();
        lat.push(t.elapsed().as_micros() as u64);
    }
    (start.elapsed().as_secs_f64(), lat)
}

/// `tasks` producers enqueue `per_task` jobs each; returns (secs, latencies).
async fn durq_enqueue(q: &Queue, tasks: usize, per_task: usize) -> (f64, Vec<u64>) {
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let q = q.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let job = NewJob::new("bench", payload((t * per_task + i) as u64));
                let s = Instant::now();
                q.enqueue(job).await.unwrap();
                lat.push(s.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    (start.elapsed().as_secs_f64(), lat)
}

async fn enqueue_always_1(cfg: &Cfg, tmp: &Path) {
    let n = if cfg.quick { 200 } else { 500 };
    let q = open(&tmp.join("e1"), FsyncPolicy::Always).await;
    let raw = tmp.join("e1-raw.log");
    let (mut a, mut b) = (Side::new(), Side::new());
    durq_enqueue(&q, 1, 20).await; // warm-up
    raw_appends(&raw, 20, 1);
    let mut ratios = Vec::new();
    for _ in 0..cfg.rounds {
        let (s, l) = durq_enqueue(&q, 1, n).await;
        let p50a = median(&l);
        a.add_round(n as u64, s, &l);
        let raw2 = raw.clone();
        let (s, l) = tokio::task::spawn_blocking(move || raw_appends(&raw2, n, 1))
            .await
            .unwrap();
        ratios.push(round2(p50a / median(&l)));
        b.add_round(n as u64, s, &l);
    }
    q.shutdown().await.unwrap();
    let ratio = a.p(0.5) / b.p(0.5);
    emit(
        "enqueue_always_1",
        &a,
        "raw append + fdatasync per record",
        &b,
        ratio,
        "<= 1.3",
        ratio <= 1.3,
        json!({"round_ratios": ratios}),
    );
}

fn median(v: &[u64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0).max(1) as f64
}

async fn enqueue_always_64(cfg: &Cfg, tmp: &Path) {
    let per_task = if cfg.quick { 40 } else { 100 };
    let q = open(&tmp.join("e64"), FsyncPolicy::Always).await;
    let raw = tmp.join("e64-raw.log");
    let db = Arc::new(
        sled::Config::new()
            .path(tmp.join("e64-sled"))
            .cache_capacity(64 << 20)
            .open()
            .unwrap(),
    );
    let (mut a, mut disk, mut store) = (Side::new(), Side::new(), Side::new());
    let records = 64 * per_task;
    let mut next = 0u64;
    durq_enqueue(&q, 64, 5).await;
    for _ in 0..cfg.rounds {
        let (s, l) = durq_enqueue(&q, 64, per_task).await;
        a.add_round(records as u64, s, &l);
        let raw2 = raw.clone();
        let (s, l) = tokio::task::spawn_blocking(move || raw_appends(&raw2, records, 64))
            .await
            .unwrap();
        disk.add_round(records as u64, s, &l);
        let db2 = db.clone();
        let (s, l, n2) = tokio::task::spawn_blocking(move || {
            let (s, l) = raw_sled(&db2, &mut next, records, 64);
            (s, l, next)
        })
        .await
        .unwrap();
        next = n2;
        store.add_round(records as u64, s, &l);
    }
    q.shutdown().await.unwrap();
    let (name, b) = if disk.rate() <= store.rate() {
        (
            "raw appends with one fdatasync per 64 records (lower than sled apply_batch of 64)",
            &disk,
        )
    } else {
        (
            "raw sled apply_batch of 64, no flush (lower than appends with fdatasync per 64)",
            &store,
        )
    };
    let ratio = a.rate() / b.rate();
    emit(
        "enqueue_always_64",
        &a,
        name,
        b,
        ratio,
        ">= 0.7",
        ratio >= 0.7,
        json!({
            "disk_ops_per_s": disk.rate().round(), "sled_ops_per_s": store.rate().round(),
            "baseline_p50_us_is": "per group of 64",
        }),
    );
}

/// A `redis-server` on a free loopback port, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_redis(tmp: &Path, fsync: &str) -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir_in(tmp).unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
        ])
        .args(["--appendfsync", fsync, "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install -y redis-server)");
    let server = RedisServer {
        child,
        port,
        _dir: dir,
    };
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    for _ in 0..200 {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            if redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .is_ok()
            {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server on port {port} did not answer");
}

async fn redis_cycle(
    con: &redis::aio::MultiplexedConnection,
    tasks: usize,
    per_task: usize,
) -> (f64, Vec<u64>) {
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let mut con = con.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for i in 0..per_task {
                let p = payload((t * 1_000_000 + i) as u64);
                let s = Instant::now();
                redis::cmd("LPUSH")
                    .arg("q")
                    .arg(&p)
                    .query_async::<i64>(&mut con)
                    .await
                    .unwrap();
                let mut got: Option<Vec<u8>> = redis::cmd("LMOVE")
                    .arg(&["q", "processing", "RIGHT", "LEFT"])
                    .query_async(&mut con)
                    .await
                    .unwrap();
                if got.is_none() {
                    got = redis::cmd("BLMOVE")
                        .arg(&["q", "processing", "RIGHT", "LEFT", "5"])
                        .query_async(&mut con)
                        .await
                        .unwrap();
                }
                let got = got.expect("a job within 5 s");
                redis::cmd("LREM")
                    .arg("processing")
                    .arg(1)
                    .arg(&got)
                    .query_async::<i64>(&mut con)
                    .await
                    .unwrap();
                lat.push(s.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    (start.elapsed().as_secs_f64(), lat)
}

async fn durq_cycle(q: &Queue, tasks: usize, per_task: usize) -> (f64, Vec<u64>) {
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..tasks {
        let q = q.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            let req = ReserveRequest::new(["bench"]).wait(Duration::from_secs(5));
            for i in 0..per_task {
                let s = Instant::now();
                q.enqueue(NewJob::new("bench", payload((t * 1_000_000 + i) as u64)))
                    .await
                    .unwrap();
                let lease = q
                    .reserve_with(req.clone())
                    .await
                    .unwrap()
                    .expect("a job within 5 s");
                q.ack(&lease).await.unwrap();
                lat.push(s.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.unwrap());
    }
    (start.elapsed().as_secs_f64(), lat)
}

async fn cycle(cfg: &Cfg, tmp: &Path, policy: FsyncPolicy, name: &str) {
    let per_task = if cfg.quick { 100 } else { 300 };
    let server = start_redis(tmp, &policy.to_string()).await;
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port)).unwrap();
    let con = client.get_multiplexed_async_connection().await.unwrap();
    let q = open(&tmp.join(name), policy).await;
    let (mut a, mut b) = (Side::new(), Side::new());
    durq_cycle(&q, 16, 10).await;
    redis_cycle(&con, 16, 10).await;
    let mut ratios = Vec::new();
    for _ in 0..cfg.rounds {
        let (s, l) = durq_cycle(&q, 16, per_task).await;
        a.add_round((16 * per_task) as u64, s, &l);
        let (s2, l) = redis_cycle(&con, 16, per_task).await;
        b.add_round((16 * per_task) as u64, s2, &l);
        ratios.push(round2(s2 / s));
    }
    q.shutdown().await.unwrap();
    let ratio = a.rate() / b.rate();
    let base = format!("redis-server 7 LPUSH+LMOVE+LREM, appendfsync {policy}, 16 tasks, one multiplexed connection");
    emit(
        name,
        &a,
        &base,
        &b,
        ratio,
        ">= 3",
        ratio >= 3.0,
        json!({"round_ratios": ratios}),
    );
}

/// The Redis backend's cycle against the raw reliable-queue cycle on the same private
/// `redis-server`, rounds interleaved; also enqueue alone (1 and 16 tasks) and reserve + ack
/// alone (16 tasks) of the backend.
#[cfg(feature = "redis")]
async fn redis_backend_cycle(cfg: &Cfg, tmp: &Path, policy: FsyncPolicy, name: &str) {
    let per_task = if cfg.quick { 100 } else { 300 };
    let server = start_redis(tmp, &policy.to_string()).await;
    let url = format!("redis://127.0.0.1:{}/", server.port);
    let client = redis::Client::open(url.clone()).unwrap();
    let con = client.get_multiplexed_async_connection().await.unwrap();
    let q = Queue::builder(tmp.join(name))
        .redis(url)
        .open()
        .await
        .unwrap();
    let (mut a, mut b) = (Side::new(), Side::new());
    durq_cycle(&q, 16, 10).await;
    redis_cycle(&con, 16, 10).await;
    let mut ratios = Vec::new();
    for _ in 0..cfg.rounds {
        let (s, l) = durq_cycle(&q, 16, per_task).await;
        a.add_round((16 * per_task) as u64, s, &l);
        let (s2, l) = redis_cycle(&con, 16, per_task).await;
        b.add_round((16 * per_task) as u64, s2, &l);
        ratios.push(round2(s2 / s));
    }
    // The parts alone.
    let n = 16 * per_task;
    let (s1, _) = durq_enqueue(&q, 1, n / 4).await;
    let (s16, _) = durq_enqueue(&q, 16, per_task).await;
    let start = Instant::now();
    let mut hs = Vec::new();
    for _ in 0..16 {
        let q = q.clone();
        hs.push(tokio::spawn(async move {
            while let Some(l) = q.reserve(&["bench"]).await.unwrap() {
                q.ack(&l).await.unwrap();
            }
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let reserve_ack = (n / 4 + n) as f64 / start.elapsed().as_secs_f64();
    q.shutdown().await.unwrap();
    let ratio = a.rate() / b.rate();
    let base = format!("redis-server 7 LPUSH+LMOVE+LREM, appendfsync {policy}, 16 tasks, one multiplexed connection");
    emit(
        name,
        &a,
        &base,
        &b,
        ratio,
        ">= 0.5",
        ratio >= 0.5,
        json!({
            "round_ratios": ratios,
            "enqueue_1_task_ops_per_s": ((n / 4) as f64 / s1).round(),
            "enqueue_16_tasks_ops_per_s": (n as f64 / s16).round(),
            "reserve_ack_16_tasks_ops_per_s": reserve_ack.round(),
        }),
    );
}

async fn reopen(cfg: &Cfg, tmp: &Path) {
    let jobs: usize = if cfg.quick { 200_000 } else { 1_000_000 };
    let dir = tmp.join("reopen");
    let build = Instant::now();
    {
        let q = open(&dir, FsyncPolicy::No).await;
        let mut n = 0u64;
        while (n as usize) < jobs {
            let batch: Vec<NewJob> = (0..10_000)
                .map(|i| NewJob::new("bench", payload(n + i)))
                .collect();
            n += batch.len() as u64;
            q.enqueue_batch(batch).await.unwrap();
        }
        q.shutdown().await.unwrap();
    }
    let build_secs = build.elapsed().as_secs_f64();
    // Open in a fresh process so the RSS is the open's alone.
    let out = Command::new(std::env::current_exe().unwrap())
        .env("DURQ_BENCH_REOPEN_CHILD", &dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let mut v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|_| {
        panic!(
            "reopen child said: {line} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let secs = v["secs"].as_f64().unwrap_or(f64::MAX);
    let rss = v["rss_mib"].as_f64().unwrap_or(f64::MAX);
    let o = v.as_object_mut().unwrap();
    o.insert("jobs".into(), json!(jobs));
    o.insert("quick".into(), json!(cfg.quick));
    o.insert("build_secs".into(), json!(round2(build_secs)));
    o.insert(
        "target".into(),
        json!("secs <= 3 and rss_mib <= 200 (for 1 M jobs)"),
    );
    o.insert("met".into(), json!(secs <= 3.0 && rss <= 200.0));
    println!("{v}");
}

fn reopen_child(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Instant::now();
        let q = Queue::builder(dir).open().await.unwrap();
        let s = q.stats().await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kib = |key: &str| {
            status.lines().find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0)
        };
        println!("{}", json!({
            "name": "reopen_1m", "secs": round2(secs), "rss_mib": round2(kib("VmHWM:") / 1024.0),
            "rss_now_mib": round2(kib("VmRSS:") / 1024.0), "waiting": s.totals.waiting,
        }));
        q.shutdown().await.unwrap();
    });
}

fn main() {
    if let Ok(dir) = std::env::var("DURQ_BENCH_REOPEN_CHILD") {
        return reopen_child(&dir);
    }
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks harness=false benches to list tests.
    }
    let quick = std::env::var("DURQ_BENCH_QUICK").is_ok_and(|v| v != "0");
    let cfg = Cfg {
        quick,
        rounds: if quick { 3 } else { 8 },
        only: std::env::var("DURQ_BENCH_ONLY")
            .ok()
            .map(|s| s.split(',').map(str::to_string).collect()),
    };
    // The same disk as the data directories users pick (not a tmpfs).
    let base = std::env::var_os("DURQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if cfg.wants("enqueue_always_1") {
            enqueue_always_1(&cfg, tmp.path()).await;
        }
        if cfg.wants("enqueue_always_64") {
            enqueue_always_64(&cfg, tmp.path()).await;
        }
        if cfg.wants("cycle_always_16") {
            cycle(&cfg, tmp.path(), FsyncPolicy::Always, "cycle_always_16").await;
        }
        if cfg.wants("cycle_everysec_16") {
            cycle(&cfg, tmp.path(), FsyncPolicy::EverySec, "cycle_everysec_16").await;
        }
        if cfg.wants("reopen_1m") {
            reopen(&cfg, tmp.path()).await;
        }
        #[cfg(feature = "redis")]
        for (policy, name) in [
            (FsyncPolicy::Always, "redis_backend_cycle_always_16"),
            (FsyncPolicy::EverySec, "redis_backend_cycle_everysec_16"),
        ] {
            if cfg.wants(name) {
                redis_backend_cycle(&cfg, tmp.path(), policy, name).await;
            }
        }
    });
}
