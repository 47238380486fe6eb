//! Simulated power cuts beneath the journal (see `power_support`): the fsync policies keep what
//! they promise, and a cut never leaves a hole.
//!
//! Each seeded case opens a fresh store (small segments and rewrite threshold, so segment rolls,
//! rewrites and checkpoint deletes happen), runs a random sequence of operations one at a time
//! (enqueue, batch, reserve, ack, fail, dead letters, requeue, purge, dedup duplicates, pause /
//! resume) and records the observable state after each acknowledgement (`S_0..S_n`: every job
//! of every queue in run order, with state, attempts, errors and a payload checksum, and the
//! paused flags). The power goes off at a random journal I/O event (or at the end); the model
//! writes what the disk would hold into a fresh directory, with the state store either as the
//! process left it (so *ahead* of the journal: recovery must notice and rebuild) or missing.
//!
//! Oracles, on the store opened from that image (its state `D`):
//! - **prefix, no hole**: `D == S_k` for some `k`: the replay of a prefix of the acknowledged
//!   operations (a batch record is kept or lost whole);
//! - **fsync promise**: `k >=` every operation acknowledged before the start of the last segment
//!   fsync that completed before the cut (all policies); under `always`, `k >=` every operation
//!   acknowledged before the cut whose answer waits for the fsync (all but reserve); and every
//!   job a worker received under `always` exists; under `everysec`, every operation
//!   acknowledged more than 2 s before the cut is kept;
//! - **no effect of a lost record**: rebuilding the state from the journal alone (state
//!   deleted) gives `D` again.
//!
//! A third of the cases cut twice in a row (the second run opens the first one's recovered
//! image). Other tests here: a rewrite's base never holds effects of unsynced records (targeted,
//! fails without the sync before the manifest names the base); `everysec` loses at most the last
//! ~second (2 s bound) and `always` nothing; under `always` no acknowledged enqueue and no job
//! handed to a worker is lost, with concurrent producers and a long-polling consumer.
//!
//! `DURQ_POWER_CUTS=N` runs N seeded cuts (default 300), `DURQ_POWER_SEED=S` replays one;
//! failing seeds are printed. By default one case in four uses out-of-order (by sector)
//! write-back; `DURQ_POWER_MODE=ordered|reordered` picks one mode for all; `DURQ_POWER_DISK=1`
//! runs on the real disk instead of tmpfs.

mod power_support;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::clock::ManualClock;
use durq::{
    FsyncPolicy, JobId, JobState, Lease, NewJob, Priority, Queue, RetryPolicy, Selection, Timestamp,
};
use power_support::{Mode, PowerModel};

const QUEUES: [&str; 2] = ["a", "b"];
/// Fixed time: nothing is promoted or expires by itself, so every state is a function of the
/// operations alone.
const T0: u64 = 1_800_000_000_000;
/// Under `everysec`, what a power cut may lose: the last ~1 s of acknowledgements, up to 2 s
/// when an fsync stalls (README, "Guarantees").
const EVERYSEC_WINDOW: Duration = Duration::from_secs(2);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The error an open records on a job that was active when the process stopped.
const RECLAIMED: &str = "the process stopped before the job finished";

/// The observable state, as sorted lines (one per job). A job that was active (leased) is printed in a form that also matches
/// what the next open makes of it (the lease is taken back as a failed attempt with the error
/// [`RECLAIMED`]: retry or dead letter), since every open does that.
async fn digest(q: &Queue) -> String {
    let mut s = String::new();
    let mut lines = Vec::new();
    for name in QUEUES {
        for j in q.list(name, None, 1_000_000).await.unwrap() {
            let mut errors: Vec<&String> = j.errors.iter().map(|e| &e.error).collect();
            let leased =
                j.state == JobState::Active || errors.last().is_some_and(|e| *e == RECLAIMED);
            if leased && j.state != JobState::Active {
                errors.pop();
            }
            let line = format!(
                "{} {} {} a{} p{} {:?} {:?} run{} e{:?} {:08x}",
                j.id.0,
                j.queue,
                if leased {
                    "Leased".to_string()
                } else {
                    format!("{:?}", j.state)
                },
                j.attempts,
                j.priority.0,
                j.key,
                j.dedup,
                if leased { 0 } else { j.run_at.0 },
                errors,
                crc32fast::hash(&j.payload)
            );
            lines.push(line);
        }
    }
    // Sorted: an open takes leases back (a retry or a dead letter), which can release a
    // partition key and so change the run order of waiting jobs; order is checked elsewhere
    // (tests/crash.rs, tests/model.rs).
    lines.sort();
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    let stats = q.stats().await.unwrap();
    for (name, st) in &stats.queues {
        if st.paused {
            let _ = writeln!(s, "paused {name}");
        }
    }
    s
}

async fn open(dir: &Path, policy: FsyncPolicy, model: Option<Arc<PowerModel>>) -> Queue {
    let mut b = Queue::builder(dir)
        .fsync(policy)
        .segment_bytes(64 << 10)
        .rewrite_min_bytes(48 << 10)
        .retry(RetryPolicy {
            max_retries: 1,
            ..RetryPolicy::default()
        })
        .clock(Arc::new(ManualClock::new(Timestamp(T0))));
    if let Some(m) = model {
        b = b.faults(m);
    }
    b.open().await.unwrap()
}

fn new_job(rng: &mut fastrand::Rng, n: u64) -> NewJob {
    let queue = QUEUES[rng.usize(0..QUEUES.len())];
    let len = if rng.u8(0..5) == 0 {
        rng.usize(2000..8000)
    } else {
        rng.usize(1..400)
    };
    let mut payload = format!("job {n} ").into_bytes();
    payload.extend((0..len).map(|_| rng.alphanumeric() as u8));
    let mut j = NewJob::new(queue, payload)
        .priority([Priority::LOW, Priority::NORMAL, Priority::HIGH][rng.usize(0..3)])
        .max_retries(rng.u32(0..2));
    if rng.u8(0..4) == 0 {
        j = j.key(format!("k{}", rng.u8(0..3)));
    }
    if rng.u8(0..5) == 0 {
        j = j.dedup(format!("d{}", rng.u8(0..6)), Duration::from_secs(3600));
    }
    j
}

/// What one operation was, for the oracles.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Answered once written (not synced): a reserve.
    Written,
    /// Answered once durable per the policy.
    Durable,
}

struct Run {
    /// Observable state after each acknowledged op; `states[0]` before any.
    states: Vec<String>,
    /// Per op: kind, whether it was acknowledged before the cut, when it was acknowledged.
    ops: Vec<(Kind, bool, Instant)>,
    /// Jobs handed to a worker before the cut.
    reserved: Vec<JobId>,
    /// The op (1-based) that enqueued each job.
    enqueued_by: std::collections::HashMap<JobId, usize>,
    /// Names of the ops, for messages.
    names: Vec<String>,
}

async fn run_ops(q: &Queue, model: &PowerModel, rng: &mut fastrand::Rng, nops: usize) -> Run {
    let mut run = Run {
        states: vec![digest(q).await],
        ops: Vec::new(),
        reserved: Vec::new(),
        enqueued_by: Default::default(),
        names: Vec::new(),
    };
    let mut leases: Vec<Lease> = Vec::new();
    let mut n = 0u64;
    let mut paused = [false; 2];
    for _ in 0..nops {
        let r = rng.u8(0..100);
        let (kind, name) = match r {
            0..=29 => {
                n += 1;
                let e = q.enqueue(new_job(rng, n)).await.unwrap();
                run.enqueued_by.entry(e.id).or_insert(run.ops.len() + 1);
                (
                    Kind::Durable,
                    format!(
                        "enqueue {}{}",
                        e.id.0,
                        if e.duplicate { " (dup)" } else { "" }
                    ),
                )
            }
            30..=41 => {
                let jobs: Vec<NewJob> = (0..rng.usize(2..14))
                    .map(|_| {
                        n += 1;
                        new_job(rng, n)
                    })
                    .collect();
                let k = jobs.len();
                for e in q.enqueue_batch(jobs).await.unwrap() {
                    run.enqueued_by.entry(e.id).or_insert(run.ops.len() + 1);
                }
                (Kind::Durable, format!("batch of {k}"))
            }
            42..=61 => match q.reserve(&QUEUES).await.unwrap() {
                Some(l) => {
                    let id = l.job.id;
                    leases.push(l);
                    (Kind::Written, format!("reserve {}", id.0))
                }
                None => (Kind::Written, "reserve (none)".into()),
            },
            62..=75 if !leases.is_empty() => {
                let l = leases.swap_remove(rng.usize(0..leases.len()));
                q.ack(&l).await.unwrap();
                (Kind::Durable, format!("ack {}", l.job.id.0))
            }
            76..=86 if !leases.is_empty() => {
                let l = leases.swap_remove(rng.usize(0..leases.len()));
                let out = q.fail(&l, format!("boom {n}")).await.unwrap();
                (Kind::Durable, format!("fail {} -> {out:?}", l.job.id.0))
            }
            87..=90 => {
                let qn = QUEUES[rng.usize(0..2)];
                let c = q.requeue_dead(qn, Selection::All).await.unwrap();
                (Kind::Durable, format!("requeue {qn} ({c})"))
            }
            91..=92 => {
                let qn = QUEUES[rng.usize(0..2)];
                let c = q.purge_dead(qn, Selection::All).await.unwrap();
                (Kind::Durable, format!("purge {qn} ({c})"))
            }
            93..=99 => {
                let i = rng.usize(0..2);
                if paused[i] {
                    q.resume(QUEUES[i]).await.unwrap();
                } else {
                    q.pause(QUEUES[i]).await.unwrap();
                }
                paused[i] = !paused[i];
                (
                    Kind::Durable,
                    format!("pause {} = {}", QUEUES[i], paused[i]),
                )
            }
            _ => continue,
        };
        let before_cut = !model.is_cut();
        if before_cut {
            model.acked();
            if let Some(l) = leases.last() {
                if name.starts_with("reserve ") && !name.ends_with("(none)") {
                    run.reserved.push(l.job.id);
                }
            }
        }
        run.ops.push((kind, before_cut, Instant::now()));
        run.names.push(name);
        run.states.push(digest(q).await);
        if !before_cut {
            break;
        }
    }
    run
}

struct Case {
    seed: u64,
    policy: FsyncPolicy,
    mode: Mode,
    keep_state: bool,
    nops: usize,
    cut_at: u64,
    /// Power cuts in a row: each generation opens the previous one's recovered image.
    gens: usize,
}

impl Case {
    fn from_seed(seed: u64) -> Case {
        let mut rng = fastrand::Rng::with_seed(seed);
        let policy = [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No][rng.usize(0..3)];
        let r = rng.u8(0..4);
        // Default: mixed, one case in four with out-of-order (by sector) write-back.
        let mode = match std::env::var("DURQ_POWER_MODE").as_deref() {
            Ok("reordered") => Mode::Reordered,
            Ok("ordered") => Mode::Ordered,
            _ if r == 0 => Mode::Reordered,
            _ => Mode::Ordered,
        };
        let keep_state = rng.bool();
        let nops = rng.usize(10..100);
        // About 3 observed events per op; 1 in 8 cases cut only at the end.
        let cut_at = if rng.u8(0..8) == 0 {
            0
        } else {
            rng.u64(1..=(nops as u64 * 4))
        };
        let gens = if rng.u8(0..3) == 0 { 2 } else { 1 };
        Case {
            seed,
            policy,
            mode,
            keep_state,
            nops,
            cut_at,
            gens,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn tmp_root() -> tempfile::TempDir {
    // The model, not the disk, decides what survives: run on tmpfs where there is one, so
    // fsyncs cost nothing.
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::env::var_os("DURQ_POWER_DISK").is_none() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// What a case exercised.
#[derive(Default, Debug)]
struct Covered {
    /// The image names a base (a rewrite was installed before the cut).
    base: bool,
    /// The image holds more than one segment, or a base (segments rolled).
    rolled: bool,
    /// Acknowledged operations lost (allowed under everysec / no).
    lost: usize,
    /// The kept state store was ahead of the journal (it had to be rebuilt).
    ahead: bool,
    /// Generations (cuts in a row).
    gens: usize,
}

async fn run_case(c: &Case) -> Result<Covered, String> {
    let root = tmp_root();
    let mut live = root.path().join("gen0");
    let mut cov = Covered::default();
    for gen in 0..c.gens {
        let img = root.path().join(format!("gen{}", gen + 1));
        let g = if gen == 0 {
            run_generation(c, gen, &live, &img).await?
        } else {
            let mut cg =
                Case::from_seed(c.seed ^ (0x517c_c1b7_2722_0a95_u64.wrapping_mul(gen as u64)));
            cg.seed = c.seed;
            run_generation(&cg, gen, &live, &img).await?
        };
        cov.base |= g.base;
        cov.rolled |= g.rolled;
        cov.lost += g.lost;
        cov.ahead |= g.ahead;
        cov.gens += 1;
        live = img;
    }
    Ok(cov)
}

/// One generation: open `live` (fresh, or the previous generation's recovered image), run the
/// ops, cut, write the image into `img`, check it.
async fn run_generation(c: &Case, gen: usize, live: &Path, img: &Path) -> Result<Covered, String> {
    let model = Arc::new(PowerModel::new(
        &live.join("journal"),
        c.seed,
        c.mode,
        c.cut_at,
    ));
    let mut rng = fastrand::Rng::with_seed(c.seed.wrapping_mul(31).wrapping_add(7 + gen as u64));
    let q = open(live, c.policy, Some(model.clone())).await;
    let run = run_ops(&q, &model, &mut rng, c.nops).await;
    model.cut_now();
    let cut_at = Instant::now();
    q.shutdown().await.unwrap();
    drop(q);
    model.write_image(&img.join("journal"));
    if c.keep_state {
        copy_dir(&live.join("state"), &img.join("state"));
    }
    let ctx = |msg: String| {
        format!(
            "seed {} generation {gen} ({:?}, {:?}, keep_state {}, {} ops, cut_at event {}): {msg}\n  {}\n  replay with DURQ_POWER_SEED={}",
            c.seed,
            c.policy,
            c.mode,
            c.keep_state,
            run.ops.len(),
            c.cut_at,
            model.describe(),
            c.seed
        )
    };

    let q = Queue::builder(img)
        .fsync(c.policy)
        .segment_bytes(64 << 10)
        .rewrite_min_bytes(48 << 10)
        .clock(Arc::new(ManualClock::new(Timestamp(T0))))
        .open()
        .await
        .map_err(|e| ctx(format!("the image does not open: {e}")))?;
    let d = digest(&q).await;
    q.shutdown().await.unwrap();
    drop(q);

    // Lower bound: what the fsyncs made durable.
    let mut k_min = model.durable_ops() as usize;
    let mut why = format!("ops acked before the last completed segment fsync began: {k_min}");
    for (i, (kind, before, at)) in run.ops.iter().enumerate() {
        if !before {
            continue;
        }
        let must = match c.policy {
            FsyncPolicy::Always => *kind == Kind::Durable,
            FsyncPolicy::EverySec => cut_at.duration_since(*at) > EVERYSEC_WINDOW,
            FsyncPolicy::No => false,
        };
        if must && i + 1 > k_min {
            k_min = i + 1;
            why = format!(
                "op {} ({}) was acknowledged under {:?}",
                i + 1,
                run.names[i],
                c.policy
            );
        }
    }
    let k_max = run.ops.len();
    let found = (k_min..=k_max).rev().find(|&k| run.states[k] == d);
    let Some(k) = found else {
        let any = (0..run.states.len()).rev().find(|&k| run.states[k] == d);
        let near = (k_min.saturating_sub(2)..=k_max.min(k_min + 2))
            .map(|k| {
                format!(
                    "  S_{k} (after {}):\n{}",
                    k.checked_sub(1)
                        .map(|i| run.names[i].as_str())
                        .unwrap_or("nothing"),
                    run.states[k]
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        return Err(ctx(match any {
            Some(k) => format!(
                "recovered state is S_{k}, but at least S_{k_min} must survive ({why})"
            ),
            None => format!(
                "recovered state is no prefix of the acknowledged operations (a hole):\n  recovered:\n{d}\n{near}"
            ),
        }));
    };
    // Under `always` a job reaches a worker only once its enqueue is durable: the recovered
    // prefix includes the enqueue of every job a worker received before the cut.
    if c.policy == FsyncPolicy::Always {
        for id in &run.reserved {
            // Jobs of an earlier generation are in S_0.
            let by = run.enqueued_by.get(id).copied().unwrap_or(0);
            if k < by {
                return Err(ctx(format!(
                    "job {} reached a worker before the cut, but its enqueue (op {by}) is lost (recovered S_{k})",
                    id.0
                )));
            }
        }
    }

    // Rebuilt from the journal alone, the state is the same: nothing was kept from a lost record.
    std::fs::remove_dir_all(img.join("state")).ok();
    let q = Queue::builder(img)
        .fsync(c.policy)
        .clock(Arc::new(ManualClock::new(Timestamp(T0))))
        .open()
        .await
        .map_err(|e| {
            ctx(format!(
                "the image does not reopen with state/ deleted: {e}"
            ))
        })?;
    let d2 = digest(&q).await;
    q.shutdown().await.unwrap();
    if d2 != d {
        return Err(ctx(format!(
            "state rebuilt from the journal differs from the recovered state (S_{k}):\n  recovered:\n{d}\n  rebuilt:\n{d2}"
        )));
    }
    let names = model.image_names();
    let acked = run.ops.iter().filter(|o| o.1).count();
    let lost = acked.saturating_sub(k);
    Ok(Covered {
        base: names.iter().any(|n| n.ends_with(".base")),
        rolled: names.iter().filter(|n| n.ends_with(".seg")).count() > 1
            || names.iter().any(|n| n.ends_with(".base")),
        lost,
        ahead: c.keep_state && run.ops.len() > k,
        gens: 1,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_keep_the_fsync_promises() {
    let seeds: Vec<u64> = match env_u64("DURQ_POWER_SEED") {
        Some(s) => vec![s],
        None => {
            let n = env_u64("DURQ_POWER_CUTS").unwrap_or(300);
            let base = env_u64("DURQ_POWER_BASE").unwrap_or(0x9e37_79b9);
            (0..n)
                .map(|i| base.wrapping_add(i.wrapping_mul(0x1000_0001)))
                .collect()
        }
    };
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut cut_mid = 0;
    let mut totals: std::collections::BTreeMap<&str, usize> = Default::default();
    for &seed in &seeds {
        let c = Case::from_seed(seed);
        if c.cut_at != 0 {
            cut_mid += 1;
        }
        match run_case(&c).await {
            Ok(cov) => {
                *totals.entry("with a base").or_default() += cov.base as usize;
                *totals.entry("segments rolled").or_default() += cov.rolled as usize;
                *totals.entry("state ahead of journal").or_default() += cov.ahead as usize;
                *totals.entry("acked ops lost").or_default() += (cov.lost > 0) as usize;
                *totals.entry("two cuts in a row").or_default() += (cov.gens > 1) as usize;
                let p = match c.policy {
                    FsyncPolicy::Always => "policy always",
                    FsyncPolicy::EverySec => "policy everysec",
                    FsyncPolicy::No => "policy no",
                };
                *totals.entry(p).or_default() += 1;
            }
            Err(e) => {
                eprintln!("FAILED {e}\n");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "{} power cuts ({cut_mid} at a random I/O event) in {:.1} s; cases by what they exercised: {totals:?}; failing seeds: {failures:?}",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

/// Waits up to `timeout` for the named step; false if it did not come.
fn saw(steps: &std::sync::mpsc::Receiver<String>, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match steps.recv_timeout(left) {
            Ok(s) if s == name => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}

/// Whether the base file in `journal` holds a record mentioning `needle` (Debug of the op).
fn base_mentions(journal: &Path, needle: &str) -> bool {
    let mut found = false;
    for e in std::fs::read_dir(journal).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "base") {
            durq::journal::reader::scan_file(&p, Some(0), |_, body| {
                let op = durq::record::Op::decode(body).expect("a base record decodes");
                found |= format!("{op:?}").contains(needle);
                Ok(())
            })
            .unwrap();
        }
    }
    found
}

/// A rewrite's fuzzy scan runs while writers go on, so the base can hold effects of records
/// written after the rotation and not yet synced. The manifest that names the base is written
/// only once those records are durable: after a power cut that loses every unsynced write, the
/// recovered state holds no effect of a record the journal lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_never_holds_effects_of_unsynced_records() {
    for policy in [FsyncPolicy::No, FsyncPolicy::EverySec] {
        let root = tmp_root();
        let live = root.path().join("live");
        let img = root.path().join("image");
        let model = Arc::new(PowerModel::new(&live.join("journal"), 1, Mode::LoseAll, 0));
        let steps = model.watch_steps();
        let release = model.gate("rewrite:scan-start");
        let q = open(&live, policy, Some(model.clone())).await;
        let mut states = vec![digest(&q).await];
        // Fill until a rewrite starts; its scan waits at the gate.
        loop {
            q.enqueue(NewJob::new("a", vec![b'x'; 2000])).await.unwrap();
            model.acked();
            states.push(digest(&q).await);
            if saw(&steps, "rewrite:scan-start", Duration::from_millis(1)) {
                break;
            }
            assert!(states.len() < 500, "no rewrite started");
        }
        // Written after the rotation, not synced (policy no; everysec: within its second).
        for i in 0..3 {
            let job = NewJob::new("b", format!("late {i}").into_bytes()).kind("late-kind");
            q.enqueue(job).await.unwrap();
            model.acked();
            states.push(digest(&q).await);
        }
        // The applier applies what is written at least every 10 ms; give it ample time, then
        // let the scan run (it must see the late jobs for this test to mean anything: checked
        // below on the base itself).
        tokio::time::sleep(Duration::from_millis(300)).await;
        release.send(()).unwrap();
        assert!(
            saw(&steps, "rewrite:manifest-written", Duration::from_secs(20)),
            "the rewrite did not install its base"
        );
        model.cut_now();
        q.shutdown().await.unwrap();
        drop(q);
        model.write_image(&img.join("journal"));
        assert!(
            base_mentions(&img.join("journal"), "late-kind"),
            "{policy:?}: the base does not hold the late jobs: the scan ran too early to test anything"
        );
        let q = Queue::builder(&img)
            .fsync(policy)
            .clock(Arc::new(ManualClock::new(Timestamp(T0))))
            .open()
            .await
            .unwrap();
        let d = digest(&q).await;
        q.shutdown().await.unwrap();
        let k = states
            .iter()
            .rposition(|s| *s == d)
            .unwrap_or_else(|| panic!("{policy:?}: recovered state is no prefix:\n{d}"));
        let durable = model.durable_ops() as usize;
        assert!(
            k <= durable + 1,
            "{policy:?}: recovered S_{k}, but only {durable} ops were durable: the base held effects of lost records ({})",
            model.describe()
        );
        assert_eq!(
            k,
            states.len() - 1,
            "{policy:?}: the synced late jobs must survive"
        );
    }
}

/// `everysec` over a few seconds of steady writes, then a cut that loses every unsynced write
/// (the worst case): what is lost is a suffix of at most ~1 s of acknowledgements (2 s bound).
/// `always` in the same run loses no acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everysec_loses_at_most_the_last_second() {
    // Half-way through a second: the background fsync runs once a second from the open.
    let secs = env_u64("DURQ_POWER_EVERYSEC_SECS").unwrap_or(2);
    let run_for = Duration::from_millis(secs * 1000 + 500);
    for policy in [FsyncPolicy::EverySec, FsyncPolicy::Always] {
        let root = tmp_root();
        let live = root.path().join("live");
        let img = root.path().join("image");
        let model = Arc::new(PowerModel::new(&live.join("journal"), 2, Mode::LoseAll, 0));
        let q = open(&live, policy, Some(model.clone())).await;
        let mut acked_at = Vec::new();
        let mut states = vec![digest(&q).await];
        let start = Instant::now();
        while start.elapsed() < run_for {
            q.enqueue(NewJob::new("a", vec![b'y'; 100])).await.unwrap();
            model.acked();
            acked_at.push(Instant::now());
            states.push(digest(&q).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        model.cut_now();
        let cut = Instant::now();
        q.shutdown().await.unwrap();
        drop(q);
        model.write_image(&img.join("journal"));
        let q = Queue::builder(&img)
            .fsync(policy)
            .clock(Arc::new(ManualClock::new(Timestamp(T0))))
            .open()
            .await
            .unwrap();
        let d = digest(&q).await;
        q.shutdown().await.unwrap();
        let k = states
            .iter()
            .rposition(|s| *s == d)
            .unwrap_or_else(|| panic!("{policy:?}: recovered state is no prefix:\n{d}"));
        let n = acked_at.len();
        let window = if k < n {
            cut.duration_since(acked_at[k])
        } else {
            Duration::ZERO
        };
        eprintln!(
            "{policy:?}: {n} enqueues over {secs} s, cut lost {} of them: the last {:.0} ms of acknowledgements; {}",
            n - k,
            window.as_secs_f64() * 1e3,
            model.describe()
        );
        match policy {
            FsyncPolicy::Always => assert_eq!(k, n, "always lost acknowledged enqueues"),
            _ => {
                assert!(
                    window <= EVERYSEC_WINDOW,
                    "everysec lost {:.0} ms of acknowledgements (bound {EVERYSEC_WINDOW:?})",
                    window.as_secs_f64() * 1e3
                );
                assert!(
                    model.syncs_done() >= secs - 1,
                    "the background fsync ran {} times in {secs} s",
                    model.syncs_done()
                );
            }
        }
    }
}

/// Under `always`, with producers and a long-polling consumer running concurrently (group
/// commit): every enqueue acknowledged before the cut survives, and so does every job a worker
/// received before the cut (SPEC G1: a job is handed out only once its enqueue is durable).
/// The disk is slow (each segment fsync takes 2 ms) so that a lease handed out before its
/// enqueue's fsync completes would be seen by the worker before the cut.
/// `DURQ_POWER_RESERVE=acked` checks reserved jobs only when their enqueue was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_keeps_every_acknowledged_and_every_reserved_job() {
    let n = env_u64("DURQ_POWER_CUTS").map_or(20, |n| (n / 10).max(1));
    for i in 0..n {
        let seed = env_u64("DURQ_POWER_SEED").unwrap_or(0xa1_0000 + i);
        let mut rng = fastrand::Rng::with_seed(seed);
        let root = tmp_root();
        let live = root.path().join("live");
        let img = root.path().join("image");
        let model = Arc::new(PowerModel::new(
            &live.join("journal"),
            seed,
            // Ordered, reordered (by sector) or every unsynced write lost, by seed;
            // `DURQ_POWER_MODE` picks one.
            match std::env::var("DURQ_POWER_MODE").as_deref() {
                Ok("ordered") => Mode::Ordered,
                Ok("reordered") => Mode::Reordered,
                Ok("lose-all") => Mode::LoseAll,
                _ => [Mode::Ordered, Mode::Reordered, Mode::LoseAll][rng.usize(0..3)],
            },
            rng.u64(1..600),
        ));
        // A slow disk: a worker has time to see what a pending fsync would make durable.
        *model.sync_delay.lock() = Duration::from_millis(2);
        let q = Arc::new(open(&live, FsyncPolicy::Always, Some(model.clone())).await);
        let mut producers = Vec::new();
        // Two producers, slower than the consumer: most enqueues fill a waiting reserve.
        for p in 0..2 {
            let (q, model) = (q.clone(), model.clone());
            producers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for j in 0..30 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let e = q
                        .enqueue(NewJob::new("a", format!("p{p} j{j}").into_bytes()))
                        .await
                        .unwrap();
                    if !model.is_cut() {
                        acked.push(e.id);
                    }
                }
                acked
            }));
        }
        let consumer = {
            let (q, model) = (q.clone(), model.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut total = 0;
                let deadline = Instant::now() + Duration::from_secs(20);
                while total < 60 && Instant::now() < deadline {
                    // A long-poll reserve: answered as soon as an enqueue fills it.
                    let mut req = durq::ReserveRequest::new(["a"]);
                    req.wait = Some(Duration::from_millis(200));
                    match q.reserve_with(req).await.unwrap() {
                        Some(l) => {
                            total += 1;
                            if !model.is_cut() {
                                got.push(l.job.id);
                            }
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                assert_eq!(total, 60, "the consumer did not get the 60 jobs in 20 s");
                got
            })
        };
        let mut acked = Vec::new();
        for p in producers {
            acked.extend(p.await.unwrap());
        }
        let reserved = consumer.await.unwrap();
        model.cut_now();
        q.shutdown().await.unwrap();
        drop(q);
        model.write_image(&img.join("journal"));
        if rng.bool() {
            copy_dir(&live.join("state"), &img.join("state"));
        }
        let q = Queue::builder(&img)
            .fsync(FsyncPolicy::Always)
            .clock(Arc::new(ManualClock::new(Timestamp(T0))))
            .open()
            .await
            .unwrap();
        let early = reserved.iter().filter(|id| !acked.contains(id)).count();
        if std::env::var_os("DURQ_POWER_VERBOSE").is_some() {
            eprintln!("seed {seed}: {} acked, {} reserved, {early} of them before their enqueue was acknowledged", acked.len(), reserved.len());
        }
        let reserved: Vec<JobId> = match std::env::var("DURQ_POWER_RESERVE").as_deref() {
            Ok("acked") => reserved
                .into_iter()
                .filter(|id| acked.contains(id))
                .collect(),
            _ => reserved,
        };
        for (what, ids) in [("acknowledged", &acked), ("reserved", &reserved)] {
            for id in ids {
                assert!(
                    q.get(*id).await.unwrap().is_some(),
                    "seed {seed}: {what} job {} is lost ({} acked, {} reserved before the cut; {})",
                    id.0,
                    acked.len(),
                    reserved.len(),
                    model.describe()
                );
            }
        }
        q.shutdown().await.unwrap();
    }
}

/// The simulated disk itself: an fsync makes durable what was written before it started, once
/// it returns; a directory entry needs a directory fsync; a rename keeps the file's contents.
#[test]
fn the_model_keeps_exactly_what_was_synced() {
    use durq::journal::faults::{Faults, IoEvent};
    let root = tmp_root();
    let dir = root.path().join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("old.seg"), b"durable").unwrap();
    let m = PowerModel::new(&dir, 1, Mode::LoseAll, 0);
    m.on_step("recovery:replayed");
    let (a, b, t) = (dir.join("a.seg"), dir.join("b"), dir.join("t"));
    let io = |e: IoEvent<'_>| m.on_io(&e);
    io(IoEvent::Created { file: &a });
    io(IoEvent::SyncStart { path: &dir });
    io(IoEvent::SyncDone { path: &dir });
    io(IoEvent::Wrote {
        file: &a,
        offset: 0,
        bytes: b"one ",
    });
    io(IoEvent::SyncStart { path: &a });
    // Written while the fsync runs: not covered by it.
    io(IoEvent::Wrote {
        file: &a,
        offset: 4,
        bytes: b"two ",
    });
    io(IoEvent::SyncDone { path: &a });
    io(IoEvent::Wrote {
        file: &a,
        offset: 8,
        bytes: b"three",
    });
    // Renamed over a durable name with the directory synced: the new name has the contents.
    io(IoEvent::Created { file: &t });
    io(IoEvent::Wrote {
        file: &t,
        offset: 0,
        bytes: b"manifest",
    });
    io(IoEvent::SyncStart { path: &t });
    io(IoEvent::SyncDone { path: &t });
    io(IoEvent::Renamed {
        from: &t,
        to: &dir.join("old.seg"),
    });
    io(IoEvent::SyncStart { path: &dir });
    io(IoEvent::SyncDone { path: &dir });
    // A synced file whose directory entry was never synced is lost.
    io(IoEvent::Created { file: &b });
    io(IoEvent::Wrote {
        file: &b,
        offset: 0,
        bytes: b"b",
    });
    io(IoEvent::SyncStart { path: &b });
    io(IoEvent::SyncDone { path: &b });
    // Removed without a directory fsync: still there after the cut.
    io(IoEvent::Removed { file: &a });
    let img = root.path().join("img");
    m.write_image(&img);
    let mut names: Vec<String> = std::fs::read_dir(&img)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.seg", "old.seg"]);
    assert_eq!(std::fs::read(img.join("a.seg")).unwrap(), b"one ");
    assert_eq!(std::fs::read(img.join("old.seg")).unwrap(), b"manifest");
}

/// A torn write keeps, loses or garbles whole 512-byte sectors of what it wrote, never bytes an
/// earlier fsync made durable.
#[test]
fn a_torn_write_never_touches_synced_bytes() {
    use durq::journal::faults::{Faults, IoEvent};
    for seed in 0..64 {
        let root = tmp_root();
        let dir = root.path().join("journal");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s.seg"), vec![7u8; 700]).unwrap();
        let m = PowerModel::new(&dir, seed, Mode::Ordered, 0);
        m.on_step("recovery:replayed");
        let s = dir.join("s.seg");
        let new = vec![9u8; 2000];
        m.on_io(&IoEvent::Wrote {
            file: &s,
            offset: 700,
            bytes: &new,
        });
        let img = root.path().join("img");
        m.write_image(&img);
        let got = std::fs::read(img.join("s.seg")).unwrap();
        assert!(
            got.len() >= 700 && got.len() <= 2700,
            "seed {seed}: {}",
            got.len()
        );
        assert!(
            got[..700].iter().all(|&b| b == 7),
            "seed {seed}: synced bytes changed"
        );
        // Sector by sector (file offsets): each sector of the write is all new, all lost
        // (zeros, or past the end) or garbage: never a mix of new and lost bytes.
        let mut sector = 512;
        while sector < got.len() {
            let part = &got[sector.max(700)..(sector + 512).min(got.len())];
            let new = part.iter().filter(|&&b| b == 9).count();
            let zero = part.iter().filter(|&&b| b == 0).count();
            assert!(
                new == part.len() || zero == part.len() || new < part.len() / 4,
                "seed {seed}: sector at {sector} mixes new and lost bytes"
            );
            sector += 512;
        }
    }
}
