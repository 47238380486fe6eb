//! Crash tests with a real process and a real SIGKILL.
//!
//! The child is this test binary re-run with `DURQ_CRASH_CHILD=1` (test `crash_child`): it opens
//! a data dir and enqueues (and reserves, acks, fails) from 8 tokio tasks, printing each
//! acknowledged operation on stdout, line by line. The parent kills it at a random moment (or
//! the child kills itself at a named checkpoint step), reopens the dir and checks: every
//! acknowledged enqueue is there exactly once with its payload, acked jobs are completed,
//! failed ones carry their error, batches are all or none, and order within priority and
//! within a partition key holds. The seed is printed; `DURQ_CRASH_SEED` replays one,
//! `DURQ_CRASH_ITERS` sets the iterations per scenario (default 2).

mod dur_util;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use durq::journal::faults::Faults;
use durq::{FsyncPolicy, JobId, JobState, NewJob, Priority, Queue};

const SEG: u64 = 64 << 10;

// ---------------------------------------------------------------- child

struct KillAt {
    step: String,
    nth: u32,
    seen: std::sync::atomic::AtomicU32,
}

impl Faults for KillAt {
    fn on_step(&self, step: &str) {
        if step == self.step
            && self.seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= self.nth
        {
            println!("\nSTEP {step}");
            // SAFETY: sending a signal to our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
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
    let dir = env("DURQ_CRASH_DIR");
    let mode = env("DURQ_CRASH_MODE");
    let seed: u64 = env("DURQ_CRASH_SEED").parse().unwrap();
    let policy: FsyncPolicy = env("DURQ_CRASH_POLICY").parse().unwrap();
    let mut b = Queue::builder(&dir)
        .fsync(policy)
        .segment_bytes(SEG)
        .keep_completed(1_000_000);
    if let Some(step) = std::env::var("DURQ_CRASH_STEP")
        .ok()
        .filter(|s| !s.is_empty())
    {
        let nth = env("DURQ_CRASH_NTH").parse().unwrap_or(1);
        b = b.faults(Arc::new(KillAt {
            step,
            nth,
            seen: Default::default(),
        }));
    }
    if mode == "steps" {
        b = b.rewrite_min_bytes(128 << 10);
    }
    let q = Arc::new(b.open().await.unwrap());
    println!("\nREADY"); // (the harness has printed "test crash_child ... " without a newline)
    if mode == "recover" {
        // Only recovery was under test; wait to be killed.
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    }
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let q = q.clone();
        let mode = mode.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng =
                fastrand::Rng::with_seed(seed ^ (t + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for i in 0.. {
                if mode == "batch" {
                    let jobs: Vec<NewJob> = (0..5)
                        .map(|k| NewJob::new("q", format!("b-{seed}.{t}.{i}-{k}").into_bytes()))
                        .collect();
                    let done = q.enqueue_batch(jobs).await.unwrap();
                    let ids: Vec<String> = done.iter().map(|e| e.id.to_string()).collect();
                    println!("B {}", ids.join(","));
                    continue;
                }
                let prio = [Priority::LOW, Priority::NORMAL, Priority::HIGH][rng.usize(0..3)];
                let key = (rng.u8(0..4) == 0).then(|| format!("k{}", rng.u8(0..3)));
                let pad = if mode == "steps" {
                    1000
                } else {
                    rng.usize(0..200)
                };
                let payload = format!("{seed}.{t}.{i}-{}", "x".repeat(pad));
                let mut job = NewJob::new("q", payload.clone().into_bytes()).priority(prio);
                if let Some(k) = &key {
                    job = job.key(k.clone());
                }
                let e = q.enqueue(job).await.unwrap();
                println!(
                    "E {} {} {} {payload}",
                    e.id,
                    prio.0,
                    key.as_deref().unwrap_or("-")
                );
                if rng.u8(0..10) < 3 {
                    if let Some(l) = q.reserve(&["q"]).await.unwrap() {
                        if rng.u8(0..10) < 7 {
                            q.ack(&l).await.unwrap();
                            println!("A {}", l.job.id);
                        } else {
                            q.fail(&l, "boom").await.unwrap();
                            println!("F {}", l.job.id);
                        }
                    }
                }
            }
        }));
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), futures::future::join_all(tasks)).await;
}

// ---------------------------------------------------------------- parent

#[derive(Default, Debug)]
struct Seen {
    enq: BTreeMap<JobId, (u8, Option<String>, Vec<u8>)>,
    acked: Vec<JobId>,
    failed: Vec<JobId>,
    batches: Vec<Vec<JobId>>,
    step_hit: bool,
}

struct Run<'a> {
    dir: &'a Path,
    mode: &'a str,
    policy: FsyncPolicy,
    seed: u64,
    step: Option<(&'a str, u32)>,
    /// Kill after this many output lines (None: wait for the child to kill itself).
    kill_after: Option<usize>,
}

fn run_child(r: &Run) -> Seen {
    let exe = std::env::current_exe().unwrap();
    let errlog = std::env::temp_dir().join(format!(
        "durq-crash-{}-{}.stderr",
        std::process::id(),
        r.seed
    ));
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("DURQ_CRASH_CHILD", "1")
        .env("DURQ_CRASH_DIR", r.dir)
        .env("DURQ_CRASH_MODE", r.mode)
        .env("DURQ_CRASH_SEED", r.seed.to_string())
        .env("DURQ_CRASH_POLICY", r.policy.to_string())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errlog).unwrap());
    if let Some((step, nth)) = r.step {
        cmd.env("DURQ_CRASH_STEP", step)
            .env("DURQ_CRASH_NTH", nth.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Seen::default();
    let mut n = 0usize;
    let mut killed = false;
    loop {
        match rx.recv_timeout(Duration::from_secs(40)) {
            Ok(line) => {
                parse(&line, &mut seen);
                n += 1;
                if !killed && r.kill_after.is_some_and(|k| n >= k) {
                    child.kill().unwrap(); // SIGKILL
                    killed = true;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("child {} hung (seed {})", r.mode, r.seed);
            }
        }
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&errlog).unwrap_or_default();
    let _ = std::fs::remove_file(&errlog);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "child was not killed: {status:?} (seed {}); its stderr:\n{stderr}",
        r.seed
    );
    seen
}

fn parse(line: &str, s: &mut Seen) {
    let mut it = line.splitn(5, ' ');
    match it.next() {
        Some("E") => {
            let id: JobId = it.next().unwrap().parse().unwrap();
            let prio: u8 = it.next().unwrap().parse().unwrap();
            let key = it.next().unwrap();
            let payload = it.next().unwrap().as_bytes().to_vec();
            s.enq
                .insert(id, (prio, (key != "-").then(|| key.to_string()), payload));
        }
        Some("A") => s.acked.push(it.next().unwrap().parse().unwrap()),
        Some("F") => s.failed.push(it.next().unwrap().parse().unwrap()),
        Some("B") => s.batches.push(
            it.next()
                .unwrap()
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect(),
        ),
        Some("STEP") => s.step_hit = true,
        _ => {}
    }
}

/// Reopens `dir` and checks everything the child was told.
async fn verify(dir: &Path, seen: &Seen, seed: u64) {
    let ctx = format!("(seed {seed}, dir {})", dir.display());
    let q = Queue::builder(dir)
        .fsync(FsyncPolicy::Always)
        .keep_completed(1_000_000)
        .open()
        .await
        .unwrap();
    let all = q.list("q", None, usize::MAX).await.unwrap();
    let mut by_payload: HashMap<Vec<u8>, usize> = HashMap::new();
    for j in &all {
        *by_payload.entry(j.payload.clone()).or_default() += 1;
    }
    let by_id: HashMap<JobId, &durq::Job> = all.iter().map(|j| (j.id, j)).collect();
    for (id, (prio, key, payload)) in &seen.enq {
        let j = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged job {id} is missing {ctx}"));
        assert_eq!(&j.payload, payload, "job {id} payload {ctx}");
        assert_eq!((j.priority.0, &j.key), (*prio, key), "job {id} {ctx}");
        assert_eq!(
            by_payload[payload], 1,
            "job {id} is there more than once {ctx}"
        );
    }
    for id in &seen.acked {
        assert_eq!(by_id[id].state, JobState::Completed, "acked job {id} {ctx}");
    }
    for id in &seen.failed {
        assert!(
            !by_id[id].errors.is_empty() || by_id[id].state == JobState::Completed,
            "failed job {id} {ctx}"
        );
    }
    // Batches: the ones answered are whole; every batch found is whole.
    for b in &seen.batches {
        for id in b {
            assert!(
                by_id.contains_key(id),
                "job {id} of an acknowledged batch is missing {ctx}"
            );
        }
    }
    let mut groups: HashMap<String, usize> = HashMap::new();
    for j in &all {
        let p = String::from_utf8_lossy(&j.payload).into_owned();
        if let Some((group, _)) = p.strip_prefix("b-").and_then(|r| r.rsplit_once('-')) {
            *groups.entry(group.to_string()).or_default() += 1;
        }
    }
    for (g, n) in &groups {
        assert_eq!(*n, 5, "batch {g} is partial after the crash {ctx}");
    }
    drain_and_check_order(&q, &ctx).await;
    q.shutdown().await.unwrap();
}

/// Reserves every ready job: unkeyed first attempts come out by priority then enqueue order;
/// each key's jobs come out in enqueue order, and none overtakes an earlier job of its key.
async fn drain_and_check_order(q: &Queue, ctx: &str) {
    let mut firsts: Vec<(u8, JobId)> = Vec::new();
    let mut per_key: HashMap<String, Vec<JobId>> = HashMap::new();
    while let Some(l) = q.reserve(&["q"]).await.unwrap() {
        match &l.job.key {
            Some(k) => per_key.entry(k.clone()).or_default().push(l.job.id),
            None if l.job.attempts == 1 => firsts.push((l.job.priority.0, l.job.id)),
            None => {}
        }
        q.ack(&l).await.unwrap();
    }
    let mut sorted = firsts.clone();
    sorted.sort_by_key(|(p, id)| (std::cmp::Reverse(*p), *id));
    assert_eq!(firsts, sorted, "priority/FIFO order broken {ctx}");
    let left = q.list("q", None, usize::MAX).await.unwrap();
    for (k, ids) in &per_key {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "key {k} out of order: {ids:?} {ctx}"
        );
        for j in left.iter().filter(|j| j.key.as_deref() == Some(k)) {
            if matches!(j.state, JobState::Waiting | JobState::Delayed) {
                assert!(
                    ids.iter().all(|id| *id < j.id),
                    "key {k}: a later job overtook {} {ctx}",
                    j.id
                );
            }
        }
    }
}

fn iters() -> u64 {
    std::env::var("DURQ_CRASH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

fn base_seed() -> u64 {
    let seed = std::env::var("DURQ_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("crash test seed {seed} (DURQ_CRASH_SEED={seed} to replay)");
    seed
}

async fn kill_randomly(mode: &str, policy: FsyncPolicy) {
    let seed = base_seed();
    for it in 0..iters() {
        let seed = seed.wrapping_add(it);
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let run = Run {
            dir: dir.path(),
            mode,
            policy,
            seed,
            step: None,
            kill_after: Some(rng.usize(2..400)),
        };
        let seen = run_child(&run);
        verify(dir.path(), &seen, seed).await;
        // A second life on the same dir: crash again after recovery, check again.
        let run = Run {
            seed: seed ^ 1,
            kill_after: Some(rng.usize(2..200)),
            ..run
        };
        let more = run_child(&run);
        // (The first life's jobs were all acked by the drain in `verify`.)
        let mut all = seen;
        all.enq.extend(more.enq);
        all.batches.extend(more.batches);
        all.acked.extend(more.acked);
        all.failed.extend(more.failed);
        verify(dir.path(), &all, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_always() {
    kill_randomly("mixed", FsyncPolicy::Always).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_everysec() {
    kill_randomly("mixed", FsyncPolicy::EverySec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_no() {
    kill_randomly("mixed", FsyncPolicy::No).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_batches_are_all_or_none() {
    kill_randomly("batch", FsyncPolicy::Always).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_recovery() {
    let seed = base_seed();
    for it in 0..iters() {
        let seed = seed.wrapping_add(it);
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let run = Run {
            dir: dir.path(),
            mode: "mixed",
            policy: FsyncPolicy::Always,
            seed,
            step: None,
            kill_after: Some(rng.usize(50..400)),
        };
        let seen = run_child(&run);
        // Force a full rebuild on the next open, then die right after its replay.
        if it % 2 == 0 {
            std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        }
        let again = Run {
            mode: "recover",
            step: Some(("recovery:replayed", 1)),
            kill_after: None,
            ..run
        };
        let s = run_child(&again);
        assert!(
            s.step_hit,
            "the child did not reach recovery:replayed (seed {seed})"
        );
        verify(dir.path(), &seen, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_each_checkpoint_step() {
    let seed = base_seed();
    let steps = [
        "rotate:segment-created",
        "rewrite:base-written",
        "rewrite:manifest-written",
        "rewrite:old-deleted",
    ];
    for it in 0..iters().div_ceil(2) {
        for (i, step) in steps.iter().enumerate() {
            let seed = seed.wrapping_add(it * 8 + i as u64);
            let nth = 1 + (seed % 2) as u32;
            let dir = tempfile::tempdir().unwrap();
            let run = Run {
                dir: dir.path(),
                mode: "steps",
                policy: FsyncPolicy::Always,
                seed,
                step: Some((step, nth)),
                kill_after: None,
            };
            let seen = run_child(&run);
            assert!(
                seen.step_hit,
                "the child never reached {step} (seed {seed})"
            );
            verify(dir.path(), &seen, seed).await;
            assert!(
                durq::journal::check::check(dir.path()).unwrap().is_clean(),
                "{step} (seed {seed})"
            );
        }
    }
}
