//! Model-based test (proptest): random sequences of enqueue / batch / invalid batch / reserve /
//! ack / fail / heartbeat / release / lease expiry (ManualClock) / dedup / requeue / purge /
//! pause / close-and-reopen run against the local backend and against a plain in-memory model;
//! after every step the store's stats and every job's state, attempts, error count and run time
//! must equal the model's, and every reserve must return the job the model predicts.
//!
//! Cases: 64 by default (a few seconds), a quarter of that again under `always` (jobs held back
//! until durable); `PROPTEST_CASES=500 cargo test --test model` for more.
//! A requeued keyed job joins the back of its key's FIFO, in the model as in the store, and
//! that order must survive close-and-reopen.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use durq::clock::ManualClock;
use durq::{
    FailAction, FailOutcome, FsyncPolicy, JobState, NewJob, Priority, Queue, ReserveRequest,
    RetryPolicy, Selection, Timestamp,
};
use proptest::prelude::*;

const T0: u64 = 1_800_000_000_000;
const QUEUES: [&str; 2] = ["alpha", "beta"];
const PRIOS: [Priority; 3] = [Priority::LOW, Priority::NORMAL, Priority::HIGH];
const MAX_RETRIES: u32 = 2;
const LEASE_MS: u64 = 10_000;
const DEDUP_TTL_MS: u64 = 2_000;
const KEEP_COMPLETED: usize = 2;

#[derive(Clone, Debug)]
struct Spec {
    queue: usize,
    prio: usize,
    key: Option<u8>,
    dedup: Option<u8>,
    delay_ms: Option<u64>,
}

#[derive(Clone, Debug)]
enum Step {
    Enqueue(Spec),
    Batch(Vec<Spec>),
    BadBatch(Vec<Spec>),
    Reserve { mask: u8, lease_ms: Option<u64> },
    Ack(usize),
    Fail(usize, u8),
    Heartbeat(usize, u64),
    Release(usize),
    Advance(u64),
    Requeue(usize),
    Purge(usize),
    Pause(usize, bool),
    Reopen,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..2usize,
        0..3usize,
        prop::option::weighted(0.5, 0..2u8),
        prop::option::weighted(0.3, 0..3u8),
        prop::option::weighted(0.2, prop::sample::select(vec![500u64, 3_000])),
    )
        .prop_map(|(queue, prio, key, dedup, delay_ms)| Spec {
            queue,
            prio,
            key,
            dedup,
            delay_ms,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => spec().prop_map(Step::Enqueue),
        1 => prop::collection::vec(spec(), 1..5).prop_map(Step::Batch),
        1 => prop::collection::vec(spec(), 1..3).prop_map(Step::BadBatch),
        5 => (1..4u8, prop::option::of(prop::sample::select(vec![1_000u64, 4_000])))
            .prop_map(|(mask, lease_ms)| Step::Reserve { mask, lease_ms }),
        2 => any::<usize>().prop_map(Step::Ack),
        3 => (any::<usize>(), 0..4u8).prop_map(|(i, a)| Step::Fail(i, a)),
        1 => (any::<usize>(), prop::sample::select(vec![500u64, 5_000]))
            .prop_map(|(i, d)| Step::Heartbeat(i, d)),
        1 => any::<usize>().prop_map(Step::Release),
        3 => prop::sample::select(vec![300u64, 1_000, 2_000, 12_000]).prop_map(Step::Advance),
        1 => any::<usize>().prop_map(Step::Requeue),
        1 => any::<usize>().prop_map(Step::Purge),
        1 => (0..2usize, any::<bool>()).prop_map(|(q, p)| Step::Pause(q, p)),
        1 => Just(Step::Reopen),
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Pending,
    Active,
    Completed,
    Dead,
}

#[derive(Clone, Debug)]
struct MJob {
    queue: usize,
    prio: u8,
    key: Option<u8>,
    payload: Vec<u8>,
    state: MState,
    attempts: u32,
    run_at: u64,
    errors: usize,
    until: u64,
    token: u64,
}

/// The plain in-memory model of the contract.
#[derive(Default)]
struct Model {
    now: u64,
    jobs: BTreeMap<u64, MJob>,
    fifo: HashMap<(usize, u8), VecDeque<u64>>,
    completed: [VecDeque<(u64, u64)>; 2],
    dedup: HashMap<(usize, u8), (u64, u64)>,
    paused: [bool; 2],
    /// Leases handed out (id, token), including stale ones.
    leases: Vec<(u64, u64)>,
}

impl Model {
    fn ready(&self, id: u64, j: &MJob) -> bool {
        j.state == MState::Pending
            && j.run_at <= self.now
            && !self.paused[j.queue]
            && j.key
                .is_none_or(|k| self.fifo.get(&(j.queue, k)).and_then(|f| f.front()) == Some(&id))
    }

    fn best(&self, mask: u8) -> Option<u64> {
        self.jobs
            .iter()
            .filter(|(id, j)| mask & (1 << j.queue) != 0 && self.ready(**id, j))
            .min_by_key(|(id, j)| (std::cmp::Reverse(j.prio), j.run_at, **id))
            .map(|(id, _)| *id)
    }

    fn release_key(&mut self, id: u64) {
        let j = &self.jobs[&id];
        if let Some(k) = j.key {
            if let Some(f) = self.fifo.get_mut(&(j.queue, k)) {
                f.retain(|x| *x != id);
            }
        }
    }

    /// A failed attempt (fail, or lease expiry with `after = Some(0)`).
    fn fail(&mut self, id: u64, action: FailAction) -> FailOutcome {
        let now = self.now;
        let j = self.jobs.get_mut(&id).unwrap();
        j.errors += 1;
        let exhausted = j.attempts > MAX_RETRIES;
        let run_at = match action {
            FailAction::GiveUp => None,
            _ if exhausted => None,
            FailAction::Retry => Some(now + 1_000 * (1u64 << (j.attempts - 1))),
            FailAction::RetryAfter(d) => Some(now + d.as_millis() as u64),
        };
        match run_at {
            Some(t) => {
                j.state = MState::Pending;
                j.run_at = t;
                FailOutcome::Retrying {
                    run_at: Timestamp(t),
                }
            }
            None => {
                j.state = MState::Dead;
                self.release_key(id);
                FailOutcome::Dead
            }
        }
    }

    /// Leases that ran out, in (until, id) order.
    fn expire(&mut self) {
        let mut due: Vec<(u64, u64)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == MState::Active && j.until <= self.now)
            .map(|(id, j)| (j.until, *id))
            .collect();
        due.sort();
        for (_, id) in due {
            self.fail(id, FailAction::RetryAfter(Duration::ZERO));
        }
    }

    fn ack(&mut self, id: u64) {
        let j = self.jobs.get_mut(&id).unwrap();
        j.state = MState::Completed;
        let q = j.queue;
        self.release_key(id);
        self.completed[q].push_back((self.now, id));
        while self.completed[q].len() > KEEP_COMPLETED {
            let (_, old) = self.completed[q].pop_front().unwrap();
            self.jobs.remove(&old);
        }
    }

    fn valid(&self, id: u64, token: u64) -> bool {
        self.jobs
            .get(&id)
            .is_some_and(|j| j.state == MState::Active && j.token == token)
    }

    fn public_state(&self, j: &MJob) -> JobState {
        match j.state {
            MState::Pending if j.run_at > self.now => JobState::Delayed,
            MState::Pending => JobState::Waiting,
            MState::Active => JobState::Active,
            MState::Completed => JobState::Completed,
            MState::Dead => JobState::Dead,
        }
    }
}

struct Sut {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    q: Queue,
    policy: FsyncPolicy,
}

async fn open(dir: &std::path::Path, clock: &Arc<ManualClock>, policy: FsyncPolicy) -> Queue {
    Queue::builder(dir)
        .fsync(policy)
        .clock(clock.clone())
        .lease(Duration::from_millis(LEASE_MS))
        .keep_completed(KEEP_COMPLETED)
        .retry(RetryPolicy {
            max_retries: MAX_RETRIES,
            ..RetryPolicy::default()
        })
        .open()
        .await
        .unwrap()
}

fn new_job(s: &Spec, n: usize) -> NewJob {
    let mut j =
        NewJob::new(QUEUES[s.queue], format!("payload-{n}").into_bytes()).priority(PRIOS[s.prio]);
    if let Some(k) = s.key {
        j = j.key(format!("k{k}"));
    }
    if let Some(d) = s.dedup {
        j = j.dedup(format!("d{d}"), Duration::from_millis(DEDUP_TTL_MS));
    }
    if let Some(d) = s.delay_ms {
        j = j.delay(Duration::from_millis(d));
    }
    j
}

/// Applies enqueue specs to the model the way the contract says and checks the store's answers
/// (duplicates return the live key's first id).
fn model_enqueue(m: &mut Model, specs: &[Spec], ids: &[durq::Enqueued], payloads: &[Vec<u8>]) {
    let mut claimed: HashMap<(usize, u8), u64> = HashMap::new();
    for ((s, e), payload) in specs.iter().zip(ids).zip(payloads) {
        if let Some(d) = s.dedup {
            let live = m
                .dedup
                .get(&(s.queue, d))
                .filter(|(_, exp)| *exp > m.now)
                .map(|(id, _)| *id)
                .or_else(|| claimed.get(&(s.queue, d)).copied());
            if let Some(first) = live {
                assert_eq!((e.id.0, e.duplicate), (first, true), "duplicate of {first}");
                continue;
            }
            claimed.insert((s.queue, d), e.id.0);
            m.dedup.insert((s.queue, d), (e.id.0, m.now + DEDUP_TTL_MS));
        }
        assert!(!e.duplicate, "not a duplicate: {s:?}");
        assert!(m.jobs.keys().all(|id| *id < e.id.0), "ids grow");
        if let Some(k) = s.key {
            m.fifo.entry((s.queue, k)).or_default().push_back(e.id.0);
        }
        m.jobs.insert(
            e.id.0,
            MJob {
                queue: s.queue,
                prio: PRIOS[s.prio].0,
                key: s.key,
                payload: payload.clone(),
                state: MState::Pending,
                attempts: 0,
                run_at: m.now + s.delay_ms.unwrap_or(0),
                errors: 0,
                until: 0,
                token: 0,
            },
        );
    }
}

/// A lease to act on: mostly a live one, sometimes any (stale ones must get `LeaseLost`).
fn pick(m: &Model, i: usize) -> Option<(u64, u64)> {
    let live: Vec<(u64, u64)> = m
        .leases
        .iter()
        .copied()
        .filter(|(id, t)| m.valid(*id, *t))
        .collect();
    if i % 4 != 0 && !live.is_empty() {
        return Some(live[(i / 4) % live.len()]);
    }
    (!m.leases.is_empty()).then(|| m.leases[i % m.leases.len()])
}

fn lease_of(id: u64, token: u64) -> durq::Lease {
    durq::Lease {
        job: durq::Job {
            id: durq::JobId(id),
            queue: String::new(),
            kind: String::new(),
            payload: Vec::new(),
            priority: Priority::NORMAL,
            key: None,
            dedup: None,
            state: JobState::Active,
            attempts: 0,
            retry: RetryPolicy::default(),
            created_at: Timestamp(0),
            run_at: Timestamp(0),
            finished_at: None,
            errors: Vec::new(),
            timeout: None,
        },
        token: durq::LeaseToken(token),
        expires_at: Timestamp(0),
    }
}

fn lost<T: std::fmt::Debug>(r: durq::Result<T>) {
    assert!(
        matches!(r, Err(durq::Error::LeaseLost { .. })),
        "expected LeaseLost, got {r:?}"
    );
}

async fn apply(sut: &mut Sut, m: &mut Model, step: &Step, n: &mut usize) {
    // Every command first processes what is due at its time.
    m.expire();
    let q = sut.q.clone();
    match step {
        Step::Enqueue(s) => {
            *n += 1;
            let e = q.enqueue(new_job(s, *n)).await.unwrap();
            let payload = format!("payload-{n}").into_bytes();
            model_enqueue(m, std::slice::from_ref(s), &[e], &[payload]);
        }
        Step::Batch(specs) => {
            let mut jobs = Vec::new();
            let mut payloads = Vec::new();
            for s in specs {
                *n += 1;
                jobs.push(new_job(s, *n));
                payloads.push(format!("payload-{n}").into_bytes());
            }
            let out = q.enqueue_batch(jobs).await.unwrap();
            assert_eq!(out.len(), specs.len());
            model_enqueue(m, specs, &out, &payloads);
        }
        Step::BadBatch(specs) => {
            let mut jobs: Vec<NewJob> = specs.iter().map(|s| new_job(s, 0)).collect();
            jobs.insert(jobs.len() / 2, NewJob::new("no good", b"x".to_vec()));
            let e = q.enqueue_batch(jobs).await.unwrap_err();
            assert!(e.is_invalid_input(), "{e}");
        }
        Step::Reserve { mask, lease_ms } => {
            let names: Vec<&str> = (0..2)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| QUEUES[i])
                .collect();
            let mut req = ReserveRequest::new(names);
            if let Some(l) = lease_ms {
                req = req.lease(Duration::from_millis(*l));
            }
            let got = q.reserve_with(req).await.unwrap();
            let want = m.best(*mask);
            assert_eq!(
                got.as_ref().map(|l| l.job.id.0),
                want,
                "reserve picked the wrong job"
            );
            if let (Some(l), Some(id)) = (got, want) {
                let now = m.now;
                let j = m.jobs.get_mut(&id).unwrap();
                j.state = MState::Active;
                j.attempts += 1;
                j.until = now + lease_ms.unwrap_or(LEASE_MS);
                j.token = l.token.0;
                assert_eq!(l.job.payload, j.payload);
                assert_eq!((l.job.attempts, l.expires_at.0), (j.attempts, j.until));
                m.leases.push((id, l.token.0));
            }
        }
        Step::Ack(i) => {
            let Some((id, tok)) = pick(m, *i) else { return };
            let r = q.ack(&lease_of(id, tok)).await;
            if m.valid(id, tok) {
                r.unwrap();
                m.ack(id);
            } else {
                lost(r);
            }
        }
        Step::Fail(i, a) => {
            let Some((id, tok)) = pick(m, *i) else { return };
            let action = match a {
                0 | 1 => FailAction::Retry,
                2 => FailAction::RetryAfter(Duration::from_millis(700)),
                _ => FailAction::GiveUp,
            };
            let r = q.fail_with(&lease_of(id, tok), "boom", action).await;
            if m.valid(id, tok) {
                assert_eq!(r.unwrap(), m.fail(id, action));
            } else {
                lost(r);
            }
        }
        Step::Heartbeat(i, d) => {
            let Some((id, tok)) = pick(m, *i) else { return };
            let r = q
                .heartbeat(&lease_of(id, tok), Duration::from_millis(*d))
                .await;
            if m.valid(id, tok) {
                let until = m.now + d;
                assert_eq!(r.unwrap(), Timestamp(until));
                m.jobs.get_mut(&id).unwrap().until = until;
            } else {
                lost(r);
            }
        }
        Step::Release(i) => {
            let Some((id, tok)) = pick(m, *i) else { return };
            let r = q.release(&lease_of(id, tok)).await;
            if m.valid(id, tok) {
                r.unwrap();
                let j = m.jobs.get_mut(&id).unwrap();
                j.state = MState::Pending;
                j.attempts -= 1;
            } else {
                lost(r);
            }
        }
        Step::Advance(ms) => {
            sut.clock.advance(Duration::from_millis(*ms));
            m.now += ms;
        }
        Step::Requeue(i) | Step::Purge(i) => {
            let dead: Vec<(u64, usize)> = m
                .jobs
                .iter()
                .filter(|(_, j)| j.state == MState::Dead)
                .map(|(id, j)| (*id, j.queue))
                .collect();
            if dead.is_empty() {
                return;
            }
            let (id, queue) = dead[i % dead.len()];
            let sel = Selection::Ids(vec![durq::JobId(id)]);
            if matches!(step, Step::Requeue(_)) {
                assert_eq!(q.requeue_dead(QUEUES[queue], sel).await.unwrap(), 1);
                let now = m.now;
                let j = m.jobs.get_mut(&id).unwrap();
                j.state = MState::Pending;
                j.attempts = 0;
                j.run_at = now;
                if let Some(k) = j.key {
                    m.fifo.entry((queue, k)).or_default().push_back(id);
                }
            } else {
                assert_eq!(q.purge_dead(QUEUES[queue], sel).await.unwrap(), 1);
                m.jobs.remove(&id);
            }
        }
        Step::Pause(queue, p) => {
            if *p {
                q.pause(QUEUES[*queue]).await.unwrap();
            } else {
                q.resume(QUEUES[*queue]).await.unwrap();
            }
            m.paused[*queue] = *p;
        }
        Step::Reopen => {
            q.shutdown().await.unwrap();
            drop(q);
            sut.q = open(sut.dir.path(), &sut.clock, sut.policy).await;
            // Leases do not survive: every active job's attempt fails, in id order.
            let active: Vec<u64> = m
                .jobs
                .iter()
                .filter(|(_, j)| j.state == MState::Active)
                .map(|(id, _)| *id)
                .collect();
            for id in active {
                m.fail(id, FailAction::RetryAfter(Duration::ZERO));
            }
            // Completed history is reloaded in (finish time, id) order.
            for c in &mut m.completed {
                c.make_contiguous().sort();
            }
        }
    }
}

async fn check(sut: &Sut, m: &mut Model, step: &Step) {
    // The stats call below processes what is due, as any command does.
    m.expire();
    let m = &*m;
    let stats = sut.q.stats().await.unwrap();
    for (qi, name) in QUEUES.iter().enumerate() {
        let s = stats.queues.get(*name).cloned().unwrap_or_default();
        let count = |st: JobState| {
            m.jobs
                .values()
                .filter(|j| j.queue == qi && m.public_state(j) == st)
                .count() as u64
        };
        let want = (
            count(JobState::Waiting),
            count(JobState::Delayed),
            count(JobState::Active),
            count(JobState::Completed),
            count(JobState::Dead),
        );
        let got = (s.waiting, s.delayed, s.active, s.completed, s.dead);
        assert_eq!(got, want, "stats of {name} after {step:?}");
        assert_eq!(s.paused, m.paused[qi], "paused flag of {name}");
        let listed = sut.q.list(name, None, 10_000).await.unwrap();
        let got: BTreeMap<u64, (JobState, u32, usize, u64)> = listed
            .iter()
            .map(|j| (j.id.0, (j.state, j.attempts, j.errors.len(), j.run_at.0)))
            .collect();
        let want: BTreeMap<u64, (JobState, u32, usize, u64)> = m
            .jobs
            .iter()
            .filter(|(_, j)| j.queue == qi)
            .map(|(id, j)| (*id, (m.public_state(j), j.attempts, j.errors, j.run_at)))
            .collect();
        assert_eq!(got, want, "jobs of {name} after {step:?}");
    }
}

fn run(steps: Vec<Step>, policy: FsyncPolicy) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(Timestamp(T0)));
        let q = open(dir.path(), &clock, policy).await;
        let mut sut = Sut {
            dir,
            clock,
            q,
            policy,
        };
        let mut m = Model {
            now: T0,
            ..Model::default()
        };
        let mut n = 0;
        for step in &steps {
            apply(&mut sut, &mut m, step, &mut n).await;
            check(&sut, &mut m, step).await;
        }
        sut.q.shutdown().await.unwrap();
    });
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_model(steps in prop::collection::vec(step(), 1..100)) {
        run(steps, FsyncPolicy::No);
    }
}

proptest! {
    // Under `always` jobs are held back until their record is synced; every call here waits
    // for its answer, so the store must still match the model step for step.
    #![proptest_config(ProptestConfig {
        cases: cases().div_ceil(4),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn queue_matches_model_under_always(steps in prop::collection::vec(step(), 1..100)) {
        run(steps, FsyncPolicy::Always);
    }
}
