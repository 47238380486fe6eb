//! Crash tests with a real process, a real SIGKILL and a real mixed workload.
//!
//! The child is this test binary re-run with `DURQ_CRASH_CHILD=1` (test `crash_child`): it opens
//! a data dir and runs the mixed workload from 6 worker tasks and an admin task — single
//! enqueues and batches of 1–2,000 jobs (payloads 1 B–64 KiB, rarely up to 4 MiB), reserve /
//! ack / fail with max_retries 0, 1 or 3 (so jobs die), dead-letter requeue and purge, dedup
//! keys used again and again, pause/resume of a queue, partition keys — printing an intent line
//! before each operation and an ack line after it returned (protocol and checker:
//! `dur_util/crash_model.rs`). The parent SIGKILLs it after a random number of lines or a
//! random time (possibly during its open), or the child kills itself at a named checkpoint step;
//! then the parent reopens the dir, checks every acknowledged operation and every state found,
//! probes every dedup key, drains the queue checking order, and starts the next life on the same
//! directory.
//!
//! Knobs: `DURQ_CRASH_SEED` replays a run; `DURQ_CRASH_ITERS` scales every scenario (default
//! 2); `DURQ_SOAK_KILLS=N` makes each `sigkill_mixed_*` test do N kills and print one summary
//! line per fsync policy (`scripts/soak.sh` runs them on a release build).

#[path = "dur_util/crash_model.rs"]
mod model;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durq::journal::faults::Faults;
use durq::{
    FailOutcome, FsyncPolicy, JobId, JobState, Queue, QueueBuilder, RetryPolicy, Selection,
};
use model::{boom, new_job, Life, Model, Tally};

// ---------------------------------------------------------------- configuration

/// Store options of one data directory (the child and the checker open it alike).
#[derive(Clone, Copy, Debug)]
struct Cfg {
    policy: FsyncPolicy,
    seg: u64,
    rewrite: u64,
    keep: usize,
}

impl Cfg {
    fn encode(&self) -> String {
        format!(
            "{},{},{},{}",
            self.policy, self.seg, self.rewrite, self.keep
        )
    }

    fn decode(s: &str) -> Cfg {
        let f: Vec<&str> = s.split(',').collect();
        Cfg {
            policy: f[0].parse().unwrap(),
            seg: f[1].parse().unwrap(),
            rewrite: f[2].parse().unwrap(),
            keep: f[3].parse().unwrap(),
        }
    }

    fn builder(&self, dir: &Path) -> QueueBuilder {
        Queue::builder(dir)
            .fsync(self.policy)
            .segment_bytes(self.seg)
            .rewrite_min_bytes(self.rewrite)
            .keep_completed(self.keep)
            .retry(RetryPolicy {
                max_retries: 3,
                base_ms: 5,
                factor: 2.0,
                cap_ms: 40,
                jitter: 0.0,
            })
    }

    /// A random configuration: small segments and rewrite thresholds so that rotations and
    /// rewrites happen under kills; a short or unbounded completed history.
    fn random(policy: FsyncPolicy, rng: &mut fastrand::Rng) -> Cfg {
        Cfg {
            policy,
            seg: [64 << 10, 256 << 10, 4 << 20][rng.usize(0..3)],
            rewrite: [256 << 10, 1 << 20, 64 << 20][rng.usize(0..3)],
            keep: [100, 1_000_000][rng.usize(0..2)],
        }
    }
}

/// The tests that fork children run one at a time: a child forked by one test holds copies of
/// every descriptor the process has open (another test's lock or sled files) until it execs,
/// which makes a concurrent reopen of that directory see it as locked.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn iters() -> u64 {
    env("DURQ_CRASH_ITERS").parse().unwrap_or(2)
}

fn base_seed() -> u64 {
    let seed = env("DURQ_CRASH_SEED")
        .parse()
        .unwrap_or_else(|_| fastrand::u64(..));
    println!("crash test seed {seed} (DURQ_CRASH_SEED={seed} to replay)");
    seed
}

// ---------------------------------------------------------------- child

struct KillAt {
    step: String,
    nth: u32,
    seen: AtomicU32,
}

impl Faults for KillAt {
    fn on_step(&self, step: &str) {
        if step == self.step && self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.nth {
            println!("\nSTEP {step}");
            // SAFETY: sending a signal to our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

#[test]
fn crash_child() {
    if env("DURQ_CRASH_CHILD") != "1" {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(child_main());
    std::process::exit(3); // ran out of time without being killed
}

async fn child_main() {
    if std::env::var_os("DURQ_CRASH_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing::Level::INFO)
            .try_init();
    }
    let dir = env("DURQ_CRASH_DIR");
    let mode = env("DURQ_CRASH_MODE");
    let seed: u64 = env("DURQ_CRASH_SEED").parse().unwrap();
    let life: u64 = env("DURQ_CRASH_LIFE").parse().unwrap();
    let cfg = Cfg::decode(&env("DURQ_CRASH_CFG"));
    let mut b = cfg.builder(Path::new(&dir));
    if let Some(step) = std::env::var("DURQ_CRASH_STEP")
        .ok()
        .filter(|s| !s.is_empty())
    {
        b = b.faults(Arc::new(KillAt {
            step,
            nth: env("DURQ_CRASH_NTH").parse().unwrap_or(1),
            seen: Default::default(),
        }));
    }
    let q = b.open().await.unwrap();
    println!("\nREADY"); // (the harness has printed "test crash_child ... " without a newline)
    if mode == "recover" {
        // Only recovery was under test; wait to be killed.
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let out: Out = Arc::new(|s: &str| println!("{s}"));
    let _ = tokio::time::timeout(Duration::from_secs(30), workload(q, life, seed, out, None)).await;
}

// ---------------------------------------------------------------- the workload

type Out = Arc<dyn Fn(&str) + Send + Sync>;
type DeadList = Arc<Mutex<Vec<(String, JobId)>>>;

/// Runs the mixed workload: 6 workers (`ops` operations each, or forever) and an admin task.
///
/// Ordering the checker relies on: a reserve is printed under a read lock; a fail and a
/// requeue run and print under the write lock, so a job's next reserve is printed after them;
/// dead letters are requeued or purged only once their `F` line is out.
async fn workload(q: Queue, life: u64, seed: u64, out: Out, ops: Option<u64>) {
    let lock = Arc::new(tokio::sync::RwLock::new(()));
    let dead: DeadList = Arc::new(Mutex::new(Vec::new()));
    for name in ["q", "p"] {
        for j in q.dead_letters(name, usize::MAX).await.unwrap() {
            dead.lock().unwrap().push((name.to_string(), j.id));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for t in 0..6u64 {
        workers.push(tokio::spawn(worker(
            q.clone(),
            life,
            t,
            seed,
            out.clone(),
            lock.clone(),
            dead.clone(),
            ops,
        )));
    }
    let admin = tokio::spawn(admin(
        q.clone(),
        seed,
        out.clone(),
        lock.clone(),
        dead.clone(),
        stop.clone(),
    ));
    for w in workers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    admin.await.unwrap();
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    q: Queue,
    life: u64,
    t: u64,
    seed: u64,
    out: Out,
    lock: Arc<tokio::sync::RwLock<()>>,
    dead: DeadList,
    ops: Option<u64>,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut i = 0u64;
    while ops.is_none_or(|n| i < n) {
        i += 1;
        let r = rng.u32(0..100);
        if r < 38 {
            let tag = format!("{life}.{t}.{i}");
            out(&format!("e {tag}"));
            let e = q.enqueue(new_job(&tag)).await.unwrap();
            out(&format!("E {tag} {} {}", e.id, u8::from(e.duplicate)));
        } else if r < 42 {
            let base = format!("{life}.{t}.{i}");
            let n = match rng.u32(0..10) {
                0..=5 => rng.usize(1..=20),
                6..=8 => rng.usize(20..=300),
                _ => rng.usize(300..=2000),
            };
            let jobs = (0..n).map(|k| new_job(&format!("{base}.{k}"))).collect();
            out(&format!("b {base} {n}"));
            let done = q.enqueue_batch(jobs).await.unwrap();
            let ids: Vec<String> = done.iter().map(|e| e.id.to_string()).collect();
            out(&format!("B {base} {n} {}", ids.join(",")));
        } else {
            let g = lock.read().await;
            let Some(l) = q.reserve(&["q", "p"]).await.unwrap() else {
                drop(g);
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let (id, n) = (l.job.id, l.job.attempts);
            out(&format!("R {id} {n}"));
            drop(g);
            if rng.u8(0..100) < 60 {
                out(&format!("a {id}"));
                q.ack(&l).await.unwrap();
                out(&format!("A {id}"));
            } else {
                let _g = lock.write().await;
                out(&format!("f {id} {n}"));
                let died = q.fail(&l, boom(id, n)).await.unwrap() == FailOutcome::Dead;
                out(&format!("F {id} {n} {}", u8::from(died)));
                if died {
                    dead.lock().unwrap().push((l.job.queue.clone(), id));
                }
            }
        }
    }
}

async fn admin(
    q: Queue,
    seed: u64,
    out: Out,
    lock: Arc<tokio::sync::RwLock<()>>,
    dead: DeadList,
    stop: Arc<AtomicBool>,
) {
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xAD);
    let mut paused = q
        .stats()
        .await
        .unwrap()
        .queues
        .get("p")
        .is_some_and(|s| s.paused);
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.u64(2..15))).await;
        let r = rng.u8(0..10);
        if r < 3 {
            paused = !paused;
            out(&format!("z {}", u8::from(paused)));
            if paused {
                q.pause("p").await.unwrap();
            } else {
                q.resume("p").await.unwrap();
            }
            out(&format!("Z {}", u8::from(paused)));
            continue;
        }
        let picked: Vec<(String, JobId)> = {
            let mut d = dead.lock().unwrap();
            let Some((queue, _)) = d.first().cloned() else {
                continue;
            };
            let want = rng.usize(1..=5);
            let mut picked = Vec::new();
            d.retain(|e| {
                if picked.len() < want && e.0 == queue {
                    picked.push(e.clone());
                    false
                } else {
                    true
                }
            });
            picked
        };
        let queue = picked[0].0.clone();
        let ids: Vec<JobId> = picked.iter().map(|(_, id)| *id).collect();
        let list = ids
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        if r < 7 {
            let _g = lock.write().await;
            out(&format!("q {list}"));
            let n = q.requeue_dead(&queue, Selection::Ids(ids)).await.unwrap();
            assert_eq!(n as usize, picked.len());
            out(&format!("Q {list}"));
        } else {
            out(&format!("p {list}"));
            let n = q.purge_dead(&queue, Selection::Ids(ids)).await.unwrap();
            assert_eq!(n as usize, picked.len());
            out(&format!("P {list}"));
        }
    }
}

// ---------------------------------------------------------------- parent

enum Kill {
    /// After this many protocol lines (READY included).
    Lines(usize),
    /// This long after the spawn (possibly during the child's open).
    After(Duration),
    /// The child kills itself at a step.
    AtStep,
}

struct Spawn<'a> {
    dir: &'a Path,
    mode: &'a str,
    cfg: Cfg,
    seed: u64,
    life: u64,
    step: Option<(&'a str, u32)>,
    kill: Kill,
}

/// Runs one child life; returns what it printed and, if it was not SIGKILLed, why.
fn run_child(s: &Spawn) -> (Life, Result<(), String>) {
    let exe = std::env::current_exe().unwrap();
    let errlog = std::env::temp_dir().join(format!(
        "durq-crash-{}-{}-{}.stderr",
        std::process::id(),
        s.seed,
        s.life
    ));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("DURQ_CRASH_CHILD", "1")
        .env("DURQ_CRASH_DIR", s.dir)
        .env("DURQ_CRASH_MODE", s.mode)
        .env("DURQ_CRASH_SEED", s.seed.to_string())
        .env("DURQ_CRASH_LIFE", s.life.to_string())
        .env("DURQ_CRASH_CFG", s.cfg.encode())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errlog).unwrap());
    if let Some((step, nth)) = s.step {
        cmd.env("DURQ_CRASH_STEP", step)
            .env("DURQ_CRASH_NTH", nth.to_string());
    }
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut life = Life::default();
    let mut killed = false;
    let hang = Duration::from_secs(60);
    loop {
        let wait = match (&s.kill, killed) {
            (Kill::After(d), false) => d.saturating_sub(start.elapsed()),
            _ => hang,
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                life.parse(&line);
                if !killed && matches!(s.kill, Kill::Lines(k) if life.lines >= k) {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                if killed || !matches!(s.kill, Kill::After(_)) {
                    let _ = child.wait();
                    return (life, Err(format!("child hung (seed {})", s.seed)));
                }
                killed = true;
            }
        }
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&errlog).unwrap_or_default();
    let _ = std::fs::remove_file(&errlog);
    if status.signal() == Some(libc::SIGKILL) {
        (life, Ok(()))
    } else {
        let tail: String = stderr
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        (
            life,
            Err(format!(
                "child was not killed: {status:?} (seed {}, life {}); its stderr ends:\n{tail}",
                s.seed, s.life
            )),
        )
    }
}

/// Reopens `dir`, checks it against the model and the life, and runs the offline journal check.
/// Returns false if the directory refused to open.
async fn check_dir(dir: &Path, cfg: Cfg, model: &mut Model, life: &Life, t: &mut Tally) -> bool {
    // The checker's own writes (probes, the drain) need not be fsynced: a clean shutdown
    // follows, and the next open is what is under test.
    match cfg.builder(dir).fsync(FsyncPolicy::No).open().await {
        Ok(q) => {
            model.check(&q, life, t).await;
            q.shutdown().await.unwrap();
            drop(q);
        }
        Err(e) => {
            // Keep the directory for a post-mortem.
            let keep = std::env::temp_dir().join(format!(
                "durq-crash-refused-{}-{}",
                std::process::id(),
                t.refused
            ));
            copy_dir(dir, &keep);
            t.refused += 1;
            t.problems.push(format!(
                "REFUSED: {} does not open: {e} (copy kept in {})",
                dir.display(),
                keep.display()
            ));
            return false;
        }
    }
    // A child that another test thread is forking right now holds a copy of our (closed)
    // lock's descriptor until it execs: wait that moment out.
    let mut checked = durq::journal::check::check(dir);
    for _ in 0..50 {
        if !matches!(checked, Err(durq::Error::Locked { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        checked = durq::journal::check::check(dir);
    }
    match checked {
        Ok(r) if r.is_clean() => {}
        Ok(r) => {
            t.unexpected += 1;
            t.problems.push(format!("UNEXPECTED: durq check: {r:?}"));
        }
        Err(e) => {
            t.unexpected += 1;
            t.problems
                .push(format!("UNEXPECTED: durq check fails: {e}"));
        }
    }
    true
}

fn fail_report(what: &str, seed: u64, t: &Tally) -> String {
    let mut s = format!("{what} (seed {seed}): {}\n", t.line());
    for p in t.problems.iter().take(30) {
        s.push_str(p);
        s.push('\n');
    }
    s
}

/// Kills the mixed workload `kills` times under `policy`, 8 lives per data directory.
async fn kill_mixed(policy: FsyncPolicy, kills: u64) -> (u64, Tally) {
    let seed = base_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut t = Tally::default();
    let mut n = 0u64;
    while n < kills {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Cfg::random(policy, &mut rng);
        let mut model = Model::default();
        for life in 1..=8u64 {
            if n >= kills {
                break;
            }
            let s = seed.wrapping_add(n);
            n += 1;
            let kill = if rng.bool() {
                Kill::Lines(rng.usize(1..1200))
            } else {
                Kill::After(Duration::from_millis(rng.u64(0..900)))
            };
            let t_child = Instant::now();
            let (lived, status) = run_child(&Spawn {
                dir: dir.path(),
                mode: "mixed",
                cfg,
                seed: s,
                life,
                step: None,
                kill,
            });
            t.kills += 1;
            if std::env::var("DURQ_CRASH_VERBOSE").is_ok() {
                eprintln!(
                    "life {life}: {} lines, ready={}, child {:.0?}",
                    lived.lines,
                    lived.ready,
                    t_child.elapsed()
                );
            }
            if let Err(e) = status {
                t.unexpected += 1;
                t.problems.push(format!("UNEXPECTED: {e}"));
            }
            let before = t.lost + t.duplicated + t.unexpected;
            if !check_dir(dir.path(), cfg, &mut model, &lived, &mut t).await {
                break;
            }
            if std::env::var("DURQ_CRASH_VERBOSE").is_ok() {
                eprintln!(
                    "  checked: {:.0?} total, {} jobs known",
                    t_child.elapsed(),
                    model.known()
                );
            }
            if t.lost + t.duplicated + t.unexpected > before {
                t.problems.push(format!(
                    "  (above: policy {policy}, cfg {}, child seed {s}, life {life})",
                    cfg.encode()
                ));
            }
        }
    }
    (seed, t)
}

async fn mixed(policy: FsyncPolicy) {
    let _serial = serial().await;
    let kills = env("DURQ_SOAK_KILLS")
        .parse()
        .unwrap_or_else(|_| 2 * iters());
    let started = Instant::now();
    let (seed, t) = kill_mixed(policy, kills).await;
    println!(
        "policy={policy} {} ({:.0?}, seed {seed})",
        t.line(),
        started.elapsed()
    );
    assert!(t.clean(), "{}", fail_report("mixed workload", seed, &t));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mixed_always() {
    mixed(FsyncPolicy::Always).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mixed_everysec() {
    mixed(FsyncPolicy::EverySec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mixed_no() {
    mixed(FsyncPolicy::No).await;
}

/// Steps a checkpoint goes through; the child kills itself at the Nth occurrence of each.
const STEPS: [&str; 7] = [
    "rotate:segment-created",
    "manifest:tmp-written",
    "manifest:renamed",
    "rewrite:base-written",
    "rewrite:manifest-written",
    "rewrite:deleting-old",
    "rewrite:old-deleted",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_checkpoint_step() {
    let _serial = serial().await;
    let seed = base_seed();
    let mut t = Tally::default();
    for it in 0..iters().div_ceil(2) {
        for (i, step) in STEPS.iter().enumerate() {
            let s = seed.wrapping_add(it * 16 + i as u64);
            let nth = 1 + (s % 3) as u32;
            let dir = tempfile::tempdir().unwrap();
            let cfg = Cfg {
                policy: FsyncPolicy::Always,
                seg: 64 << 10,
                rewrite: 128 << 10,
                keep: 1_000_000,
            };
            let mut model = Model::default();
            let (life, status) = run_child(&Spawn {
                dir: dir.path(),
                mode: "mixed",
                cfg,
                seed: s,
                life: 1,
                step: Some((step, nth)),
                kill: Kill::AtStep,
            });
            status.unwrap();
            assert!(
                life.step_hit,
                "the child never reached {step} #{nth} (seed {s})"
            );
            t.kills += 1;
            assert!(check_dir(dir.path(), cfg, &mut model, &life, &mut t).await);
            assert!(
                t.clean(),
                "{}",
                fail_report(&format!("kill at {step} #{nth}"), s, &t)
            );
            // A second life on the recovered directory (every other step), killed at random.
            if i % 2 == 1 {
                continue;
            }
            let (life, status) = run_child(&Spawn {
                dir: dir.path(),
                mode: "mixed",
                cfg,
                seed: s ^ 1,
                life: 2,
                step: None,
                kill: Kill::Lines(1 + (s % 300) as usize),
            });
            status.unwrap();
            t.kills += 1;
            assert!(check_dir(dir.path(), cfg, &mut model, &life, &mut t).await);
            assert!(
                t.clean(),
                "{}",
                fail_report(&format!("kill at {step} #{nth}"), s, &t)
            );
        }
    }
    println!("checkpoint steps: {}", t.line());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Reads `applied_seq` from the state store the way the engine stores it.
fn applied_seq(dir: &Path) -> u64 {
    let store = durq::store::Store::open(&dir.join("state"), 1 << 20).unwrap();
    let seq = store.applied_seq().unwrap();
    drop(store);
    seq
}

/// A large journal opened with `state/` removed, killed during the rebuild again and again:
/// `applied_seq` never goes backwards, and the final open has everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_replay_repeatedly() {
    let _serial = serial().await;
    let seed = base_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for with_base in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Cfg {
            policy: FsyncPolicy::No,
            seg: 1 << 20,
            rewrite: if with_base { 512 << 10 } else { 1 << 40 },
            keep: 1_000_000,
        };
        // Build the journal in-process: every operation completes, so all are acknowledged.
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = lines.clone();
        let out: Out = Arc::new(move |s: &str| sink.lock().unwrap().push(s.to_string()));
        let q = cfg.builder(dir.path()).open().await.unwrap();
        workload(q.clone(), 1, seed, out, Some(40 * iters())).await;
        q.shutdown().await.unwrap();
        drop(q);
        let mut life = Life::default();
        for l in lines.lock().unwrap().iter() {
            life.parse(l);
        }
        let full = applied_seq(dir.path());
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        // How long a full rebuild takes here (on a copy).
        let copy = tempfile::tempdir().unwrap();
        copy_dir(&dir.path().join("journal"), &copy.path().join("journal"));
        let t0 = Instant::now();
        let (l, st) = run_child(&Spawn {
            dir: copy.path(),
            mode: "recover",
            cfg,
            seed,
            life: 2,
            step: None,
            kill: Kill::Lines(1),
        });
        st.unwrap();
        assert!(l.ready);
        let rebuild = t0.elapsed();
        let mut prev = 0u64;
        let mut mid = 0u32;
        let mut seqs = Vec::new();
        for k in 0..(3 * iters()) {
            let ms = rng.u64(rebuild.as_millis() as u64 / 5..=rebuild.as_millis() as u64);
            let (l, st) = run_child(&Spawn {
                dir: dir.path(),
                mode: "recover",
                cfg,
                seed: seed.wrapping_add(k),
                life: 2,
                step: None,
                kill: Kill::After(Duration::from_millis(ms)),
            });
            st.unwrap();
            let seq = applied_seq(dir.path());
            seqs.push((ms, l.ready, seq));
            assert!(
                seq >= prev,
                "applied_seq went back from {prev} to {seq} after a kill during replay \
                 (seed {seed}, kills so far {seqs:?})"
            );
            assert!(seq <= full, "applied_seq {seq} beyond the journal's {full}");
            prev = seq;
            if l.ready {
                // That open completed: start another full rebuild.
                std::fs::remove_dir_all(dir.path().join("state")).unwrap();
                prev = 0;
            } else {
                mid += 1;
            }
        }
        println!(
            "replay kills (base={with_base}, rebuild {rebuild:.0?}, journal seq {full}): \
             (ms, opened, applied_seq) {seqs:?}"
        );
        assert!(mid > 0, "no kill landed during the replay (seed {seed})");
        // And once more right after a replay completes, before the engine starts.
        let (l, st) = run_child(&Spawn {
            dir: dir.path(),
            mode: "recover",
            cfg,
            seed,
            life: 2,
            step: Some(("recovery:replayed", 1)),
            kill: Kill::AtStep,
        });
        st.unwrap();
        assert!(l.step_hit && !l.ready, "not killed at recovery:replayed");
        let seq = applied_seq(dir.path());
        assert!(
            seq >= prev,
            "applied_seq went back from {prev} to {seq} (seed {seed})"
        );
        let mut t = Tally::default();
        let mut model = Model::default();
        assert!(check_dir(dir.path(), cfg, &mut model, &life, &mut t).await);
        assert!(model.known() > 500, "the journal was not large");
        assert!(t.clean(), "{}", fail_report("replay kills", seed, &t));
    }
}

/// The checker itself: an acknowledged job that vanished is counted as lost, a state nothing
/// explains as unexpected (so a green run means something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checker_catches_lost_and_unexpected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Cfg {
        policy: FsyncPolicy::Always,
        seg: 64 << 10,
        rewrite: 1 << 40,
        keep: 1_000_000,
    };
    let q = cfg.builder(dir.path()).open().await.unwrap();
    let mut life = Life::default();
    let mut ids = Vec::new();
    for i in 0..4 {
        let tag = format!("1.0.{i}");
        let e = q.enqueue(new_job(&tag)).await.unwrap();
        life.parse(&format!("E {tag} {} {}", e.id, u8::from(e.duplicate)));
        if !e.duplicate {
            ids.push(e.id);
        }
    }
    let mut model = Model::default();
    let mut t = Tally::default();
    model.check(&q, &life, &mut t).await;
    assert!(t.clean(), "{}", fail_report("honest", 0, &t));
    // Lie: claim an ack of a job that was never reserved in this life, and an enqueue that
    // never happened.
    let mut lie = Life::default();
    lie.parse(&format!("R {} 1", ids[0]));
    lie.parse(&format!("A {}", ids[0]));
    lie.parse("E 1.9.9 999999999 0");
    let mut t = Tally::default();
    model.check(&q, &lie, &mut t).await;
    assert!(t.unexpected > 0, "{t:?}");
    assert!(t.lost > 0, "{t:?}");
    // A job enqueued behind the checker's back is unexpected.
    q.enqueue(durq::NewJob::new("q", b"stray".to_vec()))
        .await
        .unwrap();
    let mut t = Tally::default();
    model.check(&q, &Life::default(), &mut t).await;
    assert!(t.unexpected > 0, "{t:?}");
    let _ = JobState::Waiting;
    q.shutdown().await.unwrap();
}

/// A kill during the very first open of a new data directory, after `journal/00000001.seg` is
/// created and before `MANIFEST` is renamed into place (`recovery::prepare`), leaves exactly
/// this: a header-only segment 1 and no manifest (perhaps a `MANIFEST.tmp`). Found by the soak
/// (`refused_to_open`: "the manifest is missing but 1 journal files exist"). Such a directory
/// holds nothing acknowledged and must open (fresh), not refuse forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_first_open_never_bricks() {
    let _serial = serial().await;
    use durq::journal::format::{segment_name, FileKind};
    for with_tmp in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("journal");
        std::fs::create_dir_all(&j).unwrap();
        durq::journal::writer::create_journal_file(
            &j.join(segment_name(1)),
            FileKind::Segment,
            1,
            0,
        )
        .unwrap();
        if with_tmp {
            std::fs::write(j.join("MANIFEST.tmp"), b"durq-manifest 1\nseg 1 0\n").unwrap();
        }
        let q = Queue::builder(dir.path())
            .open()
            .await
            .unwrap_or_else(|e| panic!("a never-used directory refuses to open: {e}"));
        let e = q.enqueue(new_job("1.0.1")).await.unwrap();
        assert!(q.get(e.id).await.unwrap().is_some());
        q.shutdown().await.unwrap();
    }
}
