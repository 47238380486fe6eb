//! The crash tests' workload vocabulary and checker (included by `tests/crash.rs` only).
//!
//! Every job is named by a *tag* (`life.task.op` for single enqueues, `life.task.op.k` for the
//! k-th member of a batch, `probe.life.key` for the checker's dedup probes). Everything about
//! the job — queue, priority, partition key, dedup key, max retries, payload length and bytes —
//! is derived from the tag alone ([`spec`], [`payload`]), so the child prints only tags and ids
//! and the parent can recompute and compare every byte.
//!
//! The child prints an *intent* line before each operation and an *ack* line once it returned
//! Ok (line protocol in [`Life::parse`]). The checker ([`Model`]) knows, per job, the state it
//! observed at the last check, the acknowledged events since, and at most one in-flight
//! operation; after a kill it reopens the store and accepts exactly the states these explain
//! (an in-flight operation applied or not, a reserve the child had no time to print, then the
//! lease expiry that every reopen performs on orphaned leases). Anything else is counted:
//! - **lost**: an acknowledged job missing, a wrong payload or spec, or a state from before an
//!   acknowledged operation (the operation was undone);
//! - **duplicated**: a job present twice, or one dedup key answered by two ids;
//! - **unexpected**: a job or state that no operation explains (also order violations);
//! - **refused**: an open that failed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use durq::{JobId, JobState, NewJob, Priority, Queue};

/// Number of distinct dedup keys the workload uses.
pub const DEDUP_KEYS: u8 = 12;
/// Dedup TTL: long enough never to expire during a test.
pub const DEDUP_TTL: Duration = Duration::from_secs(3600);

fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= x as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a tag stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    pub queue: &'static str,
    pub prio: u8,
    pub key: Option<String>,
    pub dedup: Option<String>,
    pub max_retries: u32,
    pub len: usize,
}

/// Payload length: mostly tiny, some up to 64 KiB, and (singles only) rarely up to 4 MiB.
fn size(r: &mut fastrand::Rng, big_ok: bool) -> usize {
    let x = r.u32(0..1000);
    let (lo, hi) = if x < 850 {
        (0.0, 8.0)
    } else if x < 996 || !big_ok {
        (8.0, 16.0)
    } else {
        (16.0, 22.0)
    };
    let e: f64 = lo + r.f64() * (hi - lo);
    (2f64.powf(e) as usize).max(1)
}

/// The job a tag stands for.
pub fn spec(tag: &str) -> Spec {
    if let Some(rest) = tag.strip_prefix("probe.") {
        let key = rest.rsplit_once('.').map(|(_, k)| k).unwrap_or(rest);
        return Spec {
            queue: "q",
            prio: 128,
            key: None,
            dedup: Some(key.to_string()),
            max_retries: 3,
            len: 24,
        };
    }
    let batch = tag.matches('.').count() >= 3;
    let mut r = fastrand::Rng::with_seed(fnv(tag.as_bytes()));
    let queue = if !batch && r.u8(0..10) == 0 { "p" } else { "q" };
    let prio = [64u8, 128, 192][r.usize(0..3)];
    let key = (queue == "q" && r.u8(0..4) == 0).then(|| format!("k{}", r.u8(0..4)));
    let dedup =
        (!batch && queue == "q" && r.u8(0..6) == 0).then(|| format!("d{}", r.u8(0..DEDUP_KEYS)));
    let max_retries = [0u32, 1, 3][r.usize(0..3)];
    let len = size(&mut r, !batch);
    Spec {
        queue,
        prio,
        key,
        dedup,
        max_retries,
        len,
    }
}

/// The payload of a tag: the tag and `|`, then pseudo-random bytes, cut to the spec's length.
pub fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut v = format!("{tag}|").into_bytes();
    if v.len() >= len {
        v.truncate(len);
        return v;
    }
    let start = v.len();
    v.resize(len, 0);
    fastrand::Rng::with_seed(fnv(tag.as_bytes()) ^ 0x5555).fill(&mut v[start..]);
    v
}

/// Identity of a payload: (length, crc32).
pub fn phash(p: &[u8]) -> (usize, u32) {
    (p.len(), crc32fast::hash(p))
}

/// The job to enqueue for a tag.
pub fn new_job(tag: &str) -> NewJob {
    let s = spec(tag);
    let mut j = NewJob::new(s.queue, payload(tag, s.len))
        .priority(Priority(s.prio))
        .max_retries(s.max_retries);
    if let Some(k) = s.key {
        j = j.key(k);
    }
    if let Some(d) = s.dedup {
        j = j.dedup(d, DEDUP_TTL);
    }
    j
}

/// The error text the workload fails attempt `n` of job `id` with.
pub fn boom(id: JobId, n: u32) -> String {
    format!("boom {id}/{n}")
}

// ------------------------------------------------------------------------ one life's output

/// An operation on a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    /// Reserved, attempt n.
    R(u32),
    /// Acked.
    A,
    /// Failed attempt n; dead-lettered or not (as the store answered; for an intent, computed).
    F(u32, bool),
    /// Requeued from the dead letters.
    Q,
    /// Purged from the dead letters.
    P,
}

/// What one child life printed.
#[derive(Default, Debug)]
pub struct Life {
    /// Acknowledged enqueues: (tag, id, answered as a duplicate).
    pub enq: Vec<(String, JobId, bool)>,
    /// Enqueue intents never answered (batch members included).
    pub pending_tags: HashSet<String>,
    /// Batch intents never answered: base tag -> size.
    pub pending_batches: HashMap<String, usize>,
    /// Acknowledged operations per job, in order.
    pub events: HashMap<JobId, Vec<Ev>>,
    /// The one operation per job sent but not answered.
    pub intents: HashMap<JobId, Ev>,
    /// Acknowledged pause states of queue `p`, in order, and one sent but not answered.
    pub pauses: Vec<bool>,
    pub pause_pending: Option<bool>,
    pub ready: bool,
    pub step_hit: bool,
    pub lines: usize,
}

fn ids(s: &str) -> Vec<JobId> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().unwrap())
        .collect()
}

impl Life {
    /// Protocol (one line each): `e TAG` / `E TAG ID DUP` (single enqueue), `b BASE N` /
    /// `B BASE N ID,ID,…` (batch), `R ID N` (reserved, attempt N), `a ID` / `A ID` (ack),
    /// `f ID N` / `F ID N DEAD` (fail), `q ID,…` / `Q ID,…` (requeue dead), `p ID,…` / `P ID,…`
    /// (purge dead), `z 0|1` / `Z 0|1` (pause queue `p`), `READY`, `STEP name`.
    pub fn parse(&mut self, line: &str) {
        self.lines += 1;
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["e", tag] => {
                self.pending_tags.insert(tag.to_string());
            }
            ["E", tag, id, dup] => {
                self.pending_tags.remove(*tag);
                self.enq
                    .push((tag.to_string(), id.parse().unwrap(), *dup == "1"));
            }
            ["b", base, n] => {
                let n: usize = n.parse().unwrap();
                for k in 0..n {
                    self.pending_tags.insert(format!("{base}.{k}"));
                }
                self.pending_batches.insert(base.to_string(), n);
            }
            ["B", base, n, list] => {
                let n: usize = n.parse().unwrap();
                let list = ids(list);
                assert_eq!(list.len(), n, "batch {base} answered {} ids", list.len());
                self.pending_batches.remove(*base);
                for (k, id) in list.into_iter().enumerate() {
                    let tag = format!("{base}.{k}");
                    self.pending_tags.remove(&tag);
                    self.enq.push((tag, id, false));
                }
            }
            ["R", id, n] => self.ack_ev(id.parse().unwrap(), Ev::R(n.parse().unwrap())),
            ["a", id] => {
                self.intents.insert(id.parse().unwrap(), Ev::A);
            }
            ["A", id] => self.ack_ev(id.parse().unwrap(), Ev::A),
            ["f", id, n] => {
                // Whether it dies is decided by the checker from the spec.
                self.intents
                    .insert(id.parse().unwrap(), Ev::F(n.parse().unwrap(), false));
            }
            ["F", id, n, dead] => {
                self.ack_ev(id.parse().unwrap(), Ev::F(n.parse().unwrap(), *dead == "1"))
            }
            ["q", list] => ids(list).into_iter().for_each(|id| {
                self.intents.insert(id, Ev::Q);
            }),
            ["Q", list] => ids(list).into_iter().for_each(|id| self.ack_ev(id, Ev::Q)),
            ["p", list] => ids(list).into_iter().for_each(|id| {
                self.intents.insert(id, Ev::P);
            }),
            ["P", list] => ids(list).into_iter().for_each(|id| self.ack_ev(id, Ev::P)),
            ["z", v] => self.pause_pending = Some(*v == "1"),
            ["Z", v] => {
                self.pause_pending = None;
                self.pauses.push(*v == "1");
            }
            ["READY"] => self.ready = true,
            ["STEP", _] => self.step_hit = true,
            _ => self.lines -= 1,
        }
    }

    fn ack_ev(&mut self, id: JobId, ev: Ev) {
        self.intents.remove(&id);
        self.events.entry(id).or_default().push(ev);
    }
}

// ------------------------------------------------------------------------ abstract job states

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum St {
    /// Waiting or delayed.
    W,
    /// Active (leased).
    A,
    /// Completed (may be trimmed from the history).
    C,
    /// Dead letter.
    D,
    /// Purged or trimmed: must stay absent.
    Gone,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrK {
    Boom(u32),
    Expired,
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abs {
    pub st: St,
    pub attempts: u32,
    pub errs: Vec<ErrK>,
}

impl Abs {
    fn fresh() -> Abs {
        Abs {
            st: St::W,
            attempts: 0,
            errs: Vec::new(),
        }
    }

    fn of(j: &durq::Job) -> Abs {
        let st = match j.state {
            JobState::Waiting | JobState::Delayed => St::W,
            JobState::Active => St::A,
            JobState::Completed => St::C,
            JobState::Dead => St::D,
        };
        let want = format!("boom {}/", j.id);
        let errs = j
            .errors
            .iter()
            .map(|e| {
                if let Some(n) = e.error.strip_prefix(&want).and_then(|n| n.parse().ok()) {
                    if n == e.attempt {
                        return ErrK::Boom(n);
                    }
                }
                if e.error.starts_with("lease expired")
                    || e.error == "the process stopped before the job finished"
                {
                    ErrK::Expired
                } else {
                    ErrK::Other(format!("attempt {}: {}", e.attempt, e.error))
                }
            })
            .collect();
        Abs {
            st,
            attempts: j.attempts,
            errs,
        }
    }

    fn matches(&self, obs: Option<&Abs>) -> bool {
        match obs {
            None => matches!(self.st, St::C | St::Gone),
            Some(o) => self.st != St::Gone && self == o,
        }
    }

    fn apply(&self, ev: &Ev, max_retries: u32) -> Result<Abs, String> {
        let mut a = self.clone();
        match (ev, &self.st) {
            (Ev::R(n), St::W) if *n == self.attempts + 1 => {
                a.st = St::A;
                a.attempts = *n;
            }
            (Ev::A, St::A) => a.st = St::C,
            (Ev::F(n, dead), St::A) if *n == self.attempts => {
                if *dead != (*n > max_retries) {
                    return Err(format!(
                        "fail of attempt {n} answered dead={dead} with max_retries {max_retries}"
                    ));
                }
                a.errs.push(ErrK::Boom(*n));
                a.st = if *dead { St::D } else { St::W };
            }
            (Ev::Q, St::D) => {
                a.st = St::W;
                a.attempts = 0;
            }
            (Ev::P, St::D) => a.st = St::Gone,
            _ => return Err(format!("{ev:?} is impossible in state {self:?}")),
        }
        Ok(a)
    }

    /// What a reopen does to a job left active by a dead process.
    fn expire(mut self, max_retries: u32) -> Abs {
        if self.st == St::A {
            self.errs.push(ErrK::Expired);
            self.st = if self.attempts > max_retries {
                St::D
            } else {
                St::W
            };
        }
        self
    }
}

// ------------------------------------------------------------------------ the model

#[derive(Clone, Debug)]
struct MJob {
    tag: String,
    spec: Spec,
    phash: (usize, u32),
    base: Abs,
    requeued: bool,
}

/// Counts of what a check found.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub kills: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub refused: u64,
    pub problems: Vec<String>,
}

impl Tally {
    pub fn clean(&self) -> bool {
        self.lost + self.duplicated + self.unexpected + self.refused == 0
    }
    pub fn line(&self) -> String {
        format!(
            "kills={} lost={} duplicated={} unexpected={} refused_to_open={}",
            self.kills, self.lost, self.duplicated, self.unexpected, self.refused
        )
    }
    fn lost(&mut self, m: String) {
        self.lost += 1;
        self.problems.push(format!("LOST: {m}"));
    }
    fn dup(&mut self, m: String) {
        self.duplicated += 1;
        self.problems.push(format!("DUPLICATED: {m}"));
    }
    fn unexpected(&mut self, m: String) {
        self.unexpected += 1;
        self.problems.push(format!("UNEXPECTED: {m}"));
    }
}

/// Everything known about one data directory, across lives.
#[derive(Default)]
pub struct Model {
    jobs: BTreeMap<JobId, MJob>,
    tags: HashMap<String, JobId>,
    dedup_first: HashMap<String, JobId>,
    paused: bool,
    probes: u64,
}

impl Model {
    /// Number of jobs ever known.
    pub fn known(&self) -> usize {
        self.jobs.len()
    }

    fn add(&mut self, tag: &str, id: JobId, t: &mut Tally) {
        if let Some(old) = self.tags.get(tag) {
            if *old != id {
                t.dup(format!("tag {tag} is job {old} and job {id}"));
            }
            return;
        }
        if self.jobs.contains_key(&id) {
            t.unexpected(format!(
                "id {id} given to {tag} and to {}",
                self.jobs[&id].tag
            ));
            return;
        }
        let spec = spec(tag);
        let phash = phash(&payload(tag, spec.len));
        self.tags.insert(tag.to_string(), id);
        self.jobs.insert(
            id,
            MJob {
                tag: tag.to_string(),
                spec,
                phash,
                base: Abs::fresh(),
                requeued: false,
            },
        );
    }

    /// Reopens the store and checks it against the model and what the last life printed;
    /// then adopts what it found, probes every dedup key and drains queue `q` checking order.
    pub async fn check(&mut self, q: &Queue, life: &Life, t: &mut Tally) {
        let mut obs: HashMap<JobId, durq::Job> = HashMap::new();
        for name in ["q", "p"] {
            for j in q.list(name, None, usize::MAX).await.unwrap() {
                if let Some(old) = obs.insert(j.id, j) {
                    t.dup(format!("job {} listed twice", old.id));
                }
            }
        }
        // Dedup answers of this life, per key.
        let mut answers: HashMap<String, HashSet<JobId>> = HashMap::new();
        for (tag, id, dup) in &life.enq {
            let s = spec(tag);
            if let Some(k) = &s.dedup {
                answers.entry(k.clone()).or_default().insert(*id);
            }
            if *dup {
                if s.dedup.is_none() {
                    t.unexpected(format!("{tag} answered as a duplicate without a dedup key"));
                }
                continue;
            }
            self.add(tag, *id, t);
        }
        // Jobs the model does not know: an in-flight enqueue that reached the journal. A
        // payload long enough to hold `tag|` names its tag; a shorter one (tiny payloads) may
        // fit several pending tags, and goes to the batch most of whose members were found by
        // name (batches land whole), else to any fitting tag.
        let mut pending: Vec<(String, (usize, u32), Spec)> = life
            .pending_tags
            .iter()
            .map(|tag| {
                let s = spec(tag);
                (tag.clone(), phash(&payload(tag, s.len)), s)
            })
            .collect();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let fits = |j: &durq::Job, ph: (usize, u32), (_, h, s): &(String, (usize, u32), Spec)| {
            *h == ph
                && s.queue == j.queue
                && s.prio == j.priority.0
                && s.key == j.key
                && s.dedup == j.dedup
                && s.max_retries == j.retry.max_retries
        };
        let batch_of = |tag: &str| -> Option<String> {
            (tag.matches('.').count() >= 3).then(|| tag.rsplit_once('.').unwrap().0.to_string())
        };
        let mut adopted_batch: HashMap<String, usize> = HashMap::new();
        let mut unknown: Vec<JobId> = obs
            .keys()
            .filter(|id| !self.jobs.contains_key(id))
            .copied()
            .collect();
        unknown.sort();
        let mut matched: Vec<(JobId, String)> = Vec::new();
        let mut ambiguous: Vec<JobId> = Vec::new();
        for id in unknown {
            let j = &obs[&id];
            let ph = phash(&j.payload);
            let named = j
                .payload
                .iter()
                .position(|&b| b == b'|')
                .and_then(|i| std::str::from_utf8(&j.payload[..i]).ok())
                .and_then(|tag| pending.iter().position(|p| p.0 == tag && fits(j, ph, p)));
            match named {
                Some(i) => {
                    let tag = pending.remove(i).0;
                    if let Some(b) = batch_of(&tag) {
                        *adopted_batch.entry(b).or_default() += 1;
                    }
                    matched.push((id, tag));
                }
                None => ambiguous.push(id),
            }
        }
        for id in ambiguous {
            let j = &obs[&id];
            let ph = phash(&j.payload);
            let best = pending
                .iter()
                .enumerate()
                .filter(|(_, p)| fits(j, ph, p))
                .max_by_key(|(_, p)| {
                    batch_of(&p.0).map_or(0, |b| adopted_batch.get(&b).copied().unwrap_or(0))
                })
                .map(|(i, _)| i);
            match best {
                Some(i) => {
                    let tag = pending.remove(i).0;
                    if let Some(b) = batch_of(&tag) {
                        *adopted_batch.entry(b).or_default() += 1;
                    }
                    matched.push((id, tag));
                }
                None => {
                    let tag =
                        String::from_utf8_lossy(&j.payload[..j.payload.len().min(40)]).into_owned();
                    if self.jobs.values().any(|m| m.phash == ph) {
                        t.dup(format!("job {id} repeats a known job's payload ({tag}…)"));
                    } else {
                        t.unexpected(format!(
                            "job {id} ({tag}…, {:?}) was never enqueued",
                            j.state
                        ));
                    }
                }
            }
        }
        for (id, tag) in matched {
            if let Some(k) = &obs[&id].dedup {
                answers.entry(k.clone()).or_default().insert(id);
            }
            self.add(&tag, id, t);
        }
        for (base, n) in &life.pending_batches {
            let got = adopted_batch.get(base).copied().unwrap_or(0);
            if got != 0 && got != *n {
                t.unexpected(format!("batch {base} is partial: {got} of {n} jobs"));
            }
        }
        // Events about jobs nobody knows.
        for id in life.events.keys() {
            if !self.jobs.contains_key(id) {
                t.lost(format!(
                    "job {id} was reserved/acked by the child but is missing"
                ));
            }
        }
        // Every known job against its explained states.
        for (id, m) in self.jobs.iter_mut() {
            let o = obs.get(id);
            if let Some(j) = o {
                if phash(&j.payload) != m.phash
                    || j.queue != m.spec.queue
                    || j.priority.0 != m.spec.prio
                    || j.key != m.spec.key
                    || j.dedup != m.spec.dedup
                {
                    t.lost(format!("job {id} ({}) has a wrong payload or spec", m.tag));
                }
            }
            let oa = o.map(Abs::of);
            let evs: &[Ev] = life.events.get(id).map(|v| v.as_slice()).unwrap_or(&[]);
            let mr = m.spec.max_retries;
            let mut cur = Some(m.base.clone());
            let mut prefixes = vec![m.base.clone()];
            for ev in evs {
                if *ev == Ev::Q {
                    m.requeued = true;
                }
                cur = match cur.as_ref().map(|c| c.apply(ev, mr)) {
                    Some(Ok(n)) => Some(n),
                    Some(Err(e)) => {
                        t.unexpected(format!("job {id} ({}): {e}", m.tag));
                        None
                    }
                    None => None,
                };
                if let Some(c) = &cur {
                    prefixes.push(c.clone());
                }
            }
            let Some(last) = cur else { continue };
            prefixes.pop();
            let mut cands = vec![last.clone()];
            if let Some(i) = life.intents.get(id) {
                let i = match i {
                    Ev::F(n, _) => Ev::F(*n, *n > mr),
                    e => e.clone(),
                };
                if i == Ev::Q {
                    m.requeued = true;
                }
                if let Ok(n) = last.apply(&i, mr) {
                    cands.push(n);
                }
            }
            for c in cands.clone() {
                if c.st == St::W {
                    cands.push(c.apply(&Ev::R(c.attempts + 1), mr).unwrap());
                }
            }
            let cands: Vec<Abs> = cands.into_iter().map(|c| c.expire(mr)).collect();
            if cands.iter().any(|c| c.matches(oa.as_ref())) {
                continue;
            }
            let undone = prefixes
                .iter()
                .map(|p| p.clone().expire(mr))
                .any(|p| p.matches(oa.as_ref()));
            let what = format!(
                "job {id} ({}): found {:?}, expected one of {:?} (events {:?}, in flight {:?})",
                m.tag,
                oa,
                cands,
                evs,
                life.intents.get(id)
            );
            if oa.is_none() || undone {
                t.lost(what);
            } else {
                t.unexpected(what);
            }
        }
        // Dedup: one id per key, across kills; at most one live job per key.
        let mut holders: HashMap<String, Vec<JobId>> = HashMap::new();
        for j in obs.values() {
            if let Some(k) = &j.dedup {
                holders.entry(k.clone()).or_default().push(j.id);
            }
        }
        for (k, h) in &holders {
            if h.len() > 1 {
                t.dup(format!("dedup key {k} is held by jobs {h:?}"));
            }
        }
        for (k, a) in &answers {
            let mut all = a.clone();
            if let Some(f) = self.dedup_first.get(k) {
                all.insert(*f);
            }
            if all.len() > 1 {
                t.dup(format!("dedup key {k} was answered with ids {all:?}"));
            }
            for id in a {
                if !self.jobs.contains_key(id) {
                    t.lost(format!(
                        "dedup key {k} answered with job {id}, which is missing"
                    ));
                }
            }
            if let Some(id) = all.iter().min() {
                self.dedup_first.entry(k.clone()).or_insert(*id);
            }
        }
        // Pause of queue `p`.
        let paused = q
            .stats()
            .await
            .unwrap()
            .queues
            .get("p")
            .is_some_and(|s| s.paused);
        let last = life.pauses.last().copied().unwrap_or(self.paused);
        if paused != last && Some(paused) != life.pause_pending {
            let m = format!("queue p paused={paused}, acknowledged {last}");
            let n = life.pauses.len();
            if n > 0 && (self.paused == paused || life.pauses[..n - 1].contains(&paused)) {
                t.lost(m);
            } else {
                t.unexpected(m);
            }
        }
        self.paused = paused;
        // Probe every dedup key: the answer is the first id, whatever happened.
        self.probes += 1;
        for n in 0..DEDUP_KEYS {
            let k = format!("d{n}");
            let tag = format!("probe.{}.{k}", self.probes);
            let e = q.enqueue(new_job(&tag)).await.unwrap();
            match self.dedup_first.get(&k) {
                Some(f) if *f == e.id && e.duplicate => {}
                Some(f) => t.dup(format!(
                    "dedup key {k}: probe answered {} (duplicate={}), first id was {f}",
                    e.id, e.duplicate
                )),
                None if holders.contains_key(&k) => t.dup(format!(
                    "dedup key {k}: probe answered {}, a job holding it is {:?}",
                    e.id, holders[&k]
                )),
                None => {
                    assert!(!e.duplicate, "probe {tag}");
                    self.dedup_first.insert(k.clone(), e.id);
                    self.add(&tag, e.id, t);
                }
            }
        }
        self.drain(q, t).await;
        self.adopt(q).await;
    }

    /// Reserves and acks every job of queue `q`: unkeyed first attempts come out by priority
    /// then id; each key's jobs in id order (requeued jobs rejoin at the back: not checked).
    async fn drain(&mut self, q: &Queue, t: &mut Tally) {
        let mut firsts: Vec<(u8, JobId)> = Vec::new();
        let mut per_key: HashMap<String, Vec<JobId>> = HashMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match q.reserve(&["q"]).await.unwrap() {
                Some(l) => {
                    let requeued = self.jobs.get(&l.job.id).is_none_or(|m| m.requeued);
                    if !requeued {
                        match &l.job.key {
                            Some(k) => per_key.entry(k.clone()).or_default().push(l.job.id),
                            None if l.job.attempts == 1 => {
                                firsts.push((l.job.priority.0, l.job.id))
                            }
                            None => {}
                        }
                    }
                    q.ack(&l).await.unwrap();
                }
                None => {
                    let delayed = q.stats().await.unwrap().queues.get("q").map(|s| s.delayed);
                    if delayed.unwrap_or(0) == 0 || std::time::Instant::now() > deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        let mut sorted = firsts.clone();
        sorted.sort_by_key(|(p, id)| (std::cmp::Reverse(*p), *id));
        if firsts != sorted {
            t.unexpected(format!("priority/FIFO order broken: {firsts:?}"));
        }
        for (k, v) in per_key {
            if !v.windows(2).all(|w| w[0] < w[1]) {
                t.unexpected(format!("key {k} out of order: {v:?}"));
            }
        }
    }

    /// Takes what the store holds now as the truth for the next life.
    async fn adopt(&mut self, q: &Queue) {
        let mut obs: HashMap<JobId, Abs> = HashMap::new();
        for name in ["q", "p"] {
            for j in q.list(name, None, usize::MAX).await.unwrap() {
                obs.insert(j.id, Abs::of(&j));
            }
        }
        for (id, m) in self.jobs.iter_mut() {
            m.base = obs.remove(id).unwrap_or(Abs {
                st: St::Gone,
                attempts: 0,
                errs: Vec::new(),
            });
        }
    }
}
