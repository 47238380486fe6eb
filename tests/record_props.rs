//! Every record the writer can produce decodes back to the same op.
//!
//! The record decoder bounds bincode's allocation limit by `CLAIM_PER_BYTE` × the body length
//! (bincode counts what each value *claims* in memory, not what it reads). These properties
//! build ops of every `Op` variant across the whole range the writer produces — batches of
//! 1–10,000 jobs, payloads up to the 16 MiB limit, names up to their limits, error histories of
//! up to 1,001 attempts of up to `MAX_ERROR_TEXT` bytes, extreme times and ids — and check that
//! each encodes and decodes to itself. Big cases are few (`PROPTEST_CASES` scales the small ones).
//!
//! Also: a record over `MAX_RECORD` is refused with a typed error, an enqueue through the public
//! API that would exceed it changes nothing, the original bug (a batch of 1,000 small jobs that
//! made the data directory refuse to open) stays fixed, and the fuzz seeds in
//! `fuzz/seeds/record_decoder/` are valid records (`DURQ_WRITE_SEEDS=1` rewrites them).

mod dur_util;

use std::path::{Path, PathBuf};

use dur_util::*;
use durq::job::{
    AttemptError, JobId, JobState, Priority, RetryPolicy, Timestamp, MAX_ERROR_TEXT, MAX_QUEUE_NAME,
};
use durq::journal::format::{encode_record, MAX_RECORD};
use durq::record::{Change, JobExt, JobMeta, LeaseInfo, NewRecord, Op, CLAIM_PER_BYTE};
use durq::{Error, NewJob};
use proptest::prelude::*;

const MAX_NAME: usize = durq::job::MAX_NAME;
const MAX_PAYLOAD: usize = durq::job::DEFAULT_MAX_PAYLOAD;
/// Most attempts a job can record: `max_retries` is at most 1,000, so 1,001 attempts.
const MAX_ATTEMPTS: usize = 1001;

// ------------------------------------------------------------------ strategies

/// A u64 biased to the extremes.
fn big() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0..300u64,
        any::<u64>()
    ]
}

fn small_u32() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(u32::MAX), 0..2000u32, any::<u32>()]
}

/// A finite f64 (NaN never equals itself; the writer validates factors and jitter anyway).
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        any::<f64>().prop_filter("finite", |f| f.is_finite())
    ]
}

/// A string of at most `max` bytes: empty, exactly `max`, or anything between; ASCII or any
/// Unicode (multi-byte chars are truncated on a char boundary).
fn text(max: usize) -> impl Strategy<Value = String> {
    let len = prop_oneof![Just(0usize), Just(max), 0..=max];
    (len, any::<bool>(), any::<u64>()).prop_map(move |(len, ascii, seed)| {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut s = String::with_capacity(len);
        while s.len() < len {
            let c = if ascii {
                rng.char('!'..='~')
            } else {
                rng.char(..)
            };
            if s.len() + c.len_utf8() > len {
                // Fill the rest with ASCII so the length is exact.
                s.push('x');
            } else {
                s.push(c);
            }
        }
        s
    })
}

fn queue_name() -> impl Strategy<Value = String> {
    let len = prop_oneof![Just(1usize), Just(MAX_QUEUE_NAME), 1..=MAX_QUEUE_NAME];
    (len, any::<u64>()).prop_map(|(len, seed)| {
        const ALPHABET: &[u8] = b"ABCXYZabcxyz0123456789._:-";
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..len)
            .map(|_| ALPHABET[rng.usize(..ALPHABET.len())] as char)
            .collect()
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![Just(0usize), Just(max), 0..=max];
    (len, any::<u8>()).prop_map(|(len, fill)| {
        // Cheap to build even at 16 MiB; the varied prefix keeps it from being one value.
        let mut v = vec![fill; len];
        for (i, b) in v.iter_mut().take(64).enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ fill;
        }
        v
    })
}

fn state() -> impl Strategy<Value = JobState> {
    prop::sample::select(JobState::ALL.to_vec())
}

fn change() -> impl Strategy<Value = Change> {
    prop::sample::select(vec![
        Change::Reserved,
        Change::Acked,
        Change::Retried,
        Change::Died,
        Change::Released,
        Change::Expired,
        Change::Requeued,
        Change::Postponed,
    ])
}

fn job_ext() -> impl Strategy<Value = JobExt> {
    (prop::option::of(big()), big(), any::<bool>()).prop_map(
        |(timeout_ms, postponed_ms, cancelled)| JobExt {
            timeout_ms,
            postponed_ms,
            cancelled,
        },
    )
}

/// The variants appended after format 1 was first released.
fn later_op() -> BoxedStrategy<Op> {
    prop_oneof![
        (big(), job_ext()).prop_map(|(id, ext)| Op::Ext { id: JobId(id), ext }),
        (
            prop::collection::vec(big().prop_map(JobId), 0..200),
            prop::collection::vec((queue_name(), text(MAX_NAME)), 0..20),
        )
            .prop_map(|(ids, dedup)| Op::Cancel { ids, dedup }),
    ]
    .boxed()
}

fn retry() -> impl Strategy<Value = RetryPolicy> {
    (small_u32(), big(), finite(), big(), finite()).prop_map(
        |(max_retries, base_ms, factor, cap_ms, jitter)| RetryPolicy {
            max_retries,
            base_ms,
            factor,
            cap_ms,
            jitter,
        },
    )
}

/// Limits of one generated job.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    name: usize,
    payload: usize,
    attempts: usize,
    error: usize,
}

const SMALL: Sizes = Sizes {
    name: MAX_NAME,
    payload: 4096,
    attempts: 12,
    error: MAX_ERROR_TEXT,
};

/// Tiny jobs for big batches: the worst ratio of claimed to encoded bytes.
const TINY: Sizes = Sizes {
    name: 12,
    payload: 300,
    attempts: 2,
    error: 40,
};

fn errors(s: Sizes) -> impl Strategy<Value = Vec<AttemptError>> {
    let n = prop_oneof![Just(0usize), Just(s.attempts), 0..=s.attempts];
    (n, text(s.error), small_u32(), big()).prop_map(|(n, error, attempt, at)| {
        (0..n)
            .map(|i| AttemptError {
                attempt: attempt.wrapping_add(i as u32),
                at: Timestamp(at.wrapping_add(i as u64)),
                // Vary the length a little per attempt without building n strings from scratch.
                error: error[..floor_char(&error, error.len().saturating_sub(i % 3))].to_string(),
            })
            .collect()
    })
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn lease() -> impl Strategy<Value = Option<LeaseInfo>> {
    prop::option::of(
        (big(), big(), big()).prop_map(|(token, until, started)| LeaseInfo {
            token,
            until: Timestamp(until),
            started: Timestamp(started),
        }),
    )
}

fn meta(s: Sizes) -> BoxedStrategy<JobMeta> {
    (
        (big(), queue_name(), text(s.name), any::<u8>()),
        (
            prop::option::of(text(s.name)),
            prop::option::of(text(s.name)),
            state(),
            small_u32(),
        ),
        (retry(), big(), big(), prop::option::of(big())),
        (errors(s), lease(), big()),
    )
        .prop_map(
            |(
                (id, queue, kind, priority),
                (key, dedup, state, attempts),
                (retry, created_at, run_at, finished_at),
                (errors, lease, queued),
            )| JobMeta {
                id: JobId(id),
                queue,
                kind,
                priority: Priority(priority),
                key,
                dedup,
                state,
                attempts,
                retry,
                created_at: Timestamp(created_at),
                run_at: Timestamp(run_at),
                finished_at: finished_at.map(Timestamp),
                errors,
                lease,
                queued,
            },
        )
        .boxed()
}

fn new_record(s: Sizes) -> BoxedStrategy<NewRecord> {
    (meta(s), bytes(s.payload), prop::option::of(big()))
        .prop_map(|(meta, payload, dedup_expires)| NewRecord {
            meta,
            payload,
            dedup_expires: dedup_expires.map(Timestamp),
        })
        .boxed()
}

/// A batch of `n` jobs built from one generated job (cheap at 10,000), each varied a little.
fn batch(n: std::ops::RangeInclusive<usize>, s: Sizes) -> impl Strategy<Value = Vec<NewRecord>> {
    (n, new_record(s), any::<u64>()).prop_map(|(n, first, seed)| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..n)
            .map(|i| {
                let mut r = first.clone();
                r.meta.id = JobId(r.meta.id.0.wrapping_add(i as u64));
                r.meta.queued = rng.u64(..);
                let keep = rng.usize(..=r.payload.len());
                r.payload.truncate(keep);
                if rng.bool() {
                    r.meta.key = None;
                }
                r
            })
            .collect()
    })
}

/// One op of any variant, with small to medium sizes.
fn any_op() -> BoxedStrategy<Op> {
    prop_oneof![
        batch(1..=20, SMALL)
            .prop_map(|jobs| Op::Enqueue { jobs })
            .boxed(),
        (prop::collection::vec(meta(SMALL), 0..8), change())
            .prop_map(|(metas, change)| Op::Update { metas, change })
            .boxed(),
        prop::collection::vec(big().prop_map(JobId), 0..200)
            .prop_map(|ids| Op::Delete { ids })
            .boxed(),
        (queue_name(), text(MAX_NAME), big(), big()).prop_map(|(queue, key, id, expires)| {
            Op::Dedup {
                queue,
                key,
                id: JobId(id),
                expires: Timestamp(expires),
            }
        }),
        prop::collection::vec((queue_name(), text(MAX_NAME)), 0..50)
            .prop_map(|entries| Op::DedupDrop { entries }),
        (queue_name(), any::<bool>()).prop_map(|(queue, paused)| Op::Paused { queue, paused }),
        new_record(SMALL)
            .prop_map(|rec| Op::Snapshot { rec })
            .boxed(),
        big().prop_map(|next| Op::NextId { next }).boxed(),
        later_op(),
        // A group as the engine writes it: an enqueue or an update, then extensions.
        (
            prop_oneof![
                batch(1..=5, SMALL).prop_map(|jobs| Op::Enqueue { jobs }),
                (prop::collection::vec(meta(SMALL), 1..3), change())
                    .prop_map(|(metas, change)| Op::Update { metas, change }),
            ],
            prop::collection::vec(later_op(), 0..6),
        )
            .prop_map(|(first, rest)| {
                let mut ops = vec![first];
                ops.extend(rest);
                Op::Group { ops }
            })
            .boxed(),
    ]
    .boxed()
}

/// Encodes, decodes, and checks the op comes back whole.
fn round_trip(op: &Op) -> std::result::Result<(), TestCaseError> {
    let body = op
        .encode()
        .map_err(|e| TestCaseError::fail(format!("encode refused: {e}")))?;
    prop_assert!(body.len() <= MAX_RECORD as usize);
    let back = Op::decode(&body).map_err(|e| {
        TestCaseError::fail(format!("a {} byte record does not decode: {e}", body.len()))
    })?;
    prop_assert!(&back == op, "decoded op differs from the written one");
    Ok(())
}

// ------------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_op_round_trips(op in any_op()) {
        round_trip(&op)?;
    }

    /// `JobMeta::size_bound` (what big updates are split by) is never below the encoding.
    #[test]
    fn meta_size_bound_covers_its_encoding(m in meta(SMALL), change in change()) {
        let bound = m.size_bound();
        let len = Op::Update { metas: vec![m], change }.encode().unwrap().len();
        prop_assert!(len <= bound, "encoded {len} > bound {bound}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, ..ProptestConfig::default() })]

    /// Batches of up to 10,000 small jobs: the case that used to exceed the decode bound.
    #[test]
    fn big_batches_round_trip(jobs in batch(1..=10_000, TINY)) {
        round_trip(&Op::Enqueue { jobs })?;
    }

    /// Jobs at the limits: 16 MiB payloads, names at their limits, 1,001 attempts of
    /// `MAX_ERROR_TEXT` bytes, as an enqueue, an update and a base snapshot record.
    #[test]
    fn jobs_at_the_limits_round_trip(
        rec in new_record(Sizes {
            name: MAX_NAME,
            payload: MAX_PAYLOAD,
            attempts: MAX_ATTEMPTS,
            error: MAX_ERROR_TEXT,
        }),
        change in change(),
    ) {
        let bound = rec.meta.size_bound();
        let len = Op::Update { metas: vec![rec.meta.clone()], change }.encode().unwrap().len();
        prop_assert!(len <= bound, "encoded {len} > bound {bound}");
        round_trip(&Op::Update { metas: vec![rec.meta.clone()], change })?;
        round_trip(&Op::Snapshot { rec: rec.clone() })?;
        round_trip(&Op::Enqueue { jobs: vec![rec] })?;
    }
}

// ------------------------------------------------------------------ fixed worst cases

/// The smallest possible job: every integer 0, every string empty. Its encoding has the
/// highest ratio of claimed to encoded bytes.
fn minimal(id: u64) -> NewRecord {
    NewRecord {
        meta: JobMeta {
            id: JobId(id),
            queue: String::new(),
            kind: String::new(),
            priority: Priority(0),
            key: None,
            dedup: None,
            state: JobState::Waiting,
            attempts: 0,
            retry: RetryPolicy {
                max_retries: 0,
                base_ms: 0,
                factor: 0.0,
                cap_ms: 0,
                jitter: 0.0,
            },
            created_at: Timestamp(0),
            run_at: Timestamp(0),
            finished_at: None,
            errors: Vec::new(),
            lease: None,
            queued: 0,
        },
        payload: Vec::new(),
        dedup_expires: None,
    }
}

#[test]
fn worst_ratio_records_decode() {
    let jobs: Vec<NewRecord> = (0..10_000).map(|_| minimal(0)).collect();
    let op = Op::Enqueue { jobs };
    round_trip(&op).unwrap();
    // A minimal job with every error at its limit, and an update of 10,000 minimal metas.
    let mut rec = minimal(1);
    rec.meta.errors = (0..MAX_ATTEMPTS)
        .map(|_| AttemptError {
            attempt: 0,
            at: Timestamp(0),
            error: String::new(),
        })
        .collect();
    round_trip(&Op::Snapshot { rec }).unwrap();
    let metas = (0..10_000).map(|_| minimal(0).meta).collect();
    round_trip(&Op::Update {
        metas,
        change: Change::Reserved,
    })
    .unwrap();
    let ids = vec![JobId(0); 100_000];
    round_trip(&Op::Delete { ids }).unwrap();
    let entries = vec![(String::new(), String::new()); 100_000];
    round_trip(&Op::DedupDrop { entries }).unwrap();
    round_trip(&Op::NextId { next: 0 }).unwrap();
    round_trip(&Op::NextId { next: u64::MAX }).unwrap();
    assert_eq!(CLAIM_PER_BYTE, 8, "docs/format.md states the bound");
}

#[test]
fn a_record_over_the_limit_is_refused_with_a_typed_error() {
    // 17 payloads of 16 MiB: 272 MiB, over the 256 MiB a record may hold.
    let one = {
        let mut r = minimal(1);
        r.payload = vec![7u8; MAX_PAYLOAD];
        r
    };
    let n = (MAX_RECORD as usize) / MAX_PAYLOAD + 1;
    let op = Op::Enqueue { jobs: vec![one; n] };
    match op.encode() {
        Err(Error::InvalidInput(m)) => {
            assert!(m.contains("MiB a record may hold"), "{m}");
            assert!(m.contains("fewer or smaller"), "{m}");
        }
        other => panic!("expected InvalidInput, got {:?}", other.map(|b| b.len())),
    }
}

#[tokio::test]
async fn an_enqueue_over_the_record_limit_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), 64 << 20).await.unwrap();
    let before_jobs = fill(&q, 3, 100).await;
    let stats = q.stats().await.unwrap();
    let bytes = journal_bytes(dir.path());
    // A batch passes every per-job and per-batch check (128 MiB of payloads at most) yet its
    // record would exceed MAX_RECORD: 75,000 jobs of 1,789 payload bytes with a kind and a
    // partition key of MAX_NAME bytes each — about 290 MB. The first 100 carry dedup keys, and
    // the batch goes to a queue not seen before: neither may be left behind.
    let n = 75_000;
    let per = (128 << 20) / n;
    let name = |c: char, i: usize| {
        let mut s = format!("{c}{i:06}");
        s.extend(std::iter::repeat_n(c, MAX_NAME - s.len()));
        s
    };
    let batch: Vec<NewJob> = (0..n)
        .map(|i| {
            let j = NewJob::new("fresh", vec![i as u8; per])
                .kind(name('k', i))
                .key(name('p', i));
            if i < 100 {
                j.dedup(format!("d{i}"), std::time::Duration::from_secs(3600))
            } else {
                j
            }
        })
        .collect();
    match q.enqueue_batch(batch).await {
        Err(Error::InvalidInput(m)) => assert!(m.contains("record"), "{m}"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(
        counts(q.stats().await.unwrap()),
        counts(stats),
        "stats changed"
    );
    assert_eq!(journal_bytes(dir.path()), bytes, "journal changed");
    // The dedup keys of the refused batch were not claimed.
    let e = q
        .enqueue(
            NewJob::new("fresh", b"x".to_vec()).dedup("d7", std::time::Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(!e.duplicate, "a refused batch left its dedup key behind");
    let fresh = q.list("fresh", None, 10).await.unwrap();
    assert_eq!(fresh.len(), 1);
    // The store still takes writes, and holds exactly what was acknowledged.
    let after = fill(&q, 1, 10).await;
    q.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let q = open(dir.path(), 64 << 20).await.unwrap();
    let got = jobs(&q).await;
    q.shutdown().await.unwrap();
    let want: std::collections::BTreeMap<_, _> = before_jobs.into_iter().chain(after).collect();
    assert_eq!(got, want);
}

/// Stats without the ages that move with the clock.
fn counts(mut s: durq::Stats) -> durq::Stats {
    for q in s.queues.values_mut().chain([&mut s.totals]) {
        q.oldest_waiting_secs = None;
    }
    s
}

/// The original bug: one batch of 1,000 payloads of 50–300 bytes made every later open refuse
/// (the record exceeded the old decode bound). Rebuilding the state from the journal (state/
/// deleted) must find all 1,000 jobs.
#[tokio::test]
async fn a_batch_of_a_thousand_small_jobs_replays() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), 64 << 20).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(8);
    let payloads: Vec<Vec<u8>> = (0..1000).map(|i| payload(i, rng.usize(50..=300))).collect();
    let batch = payloads
        .iter()
        .map(|p| NewJob::new("q", p.clone()))
        .collect();
    let ids: Vec<JobId> = q
        .enqueue_batch(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    q.shutdown().await.unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let q = open(dir.path(), 64 << 20).await.unwrap();
    let got = jobs(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(got.len(), 1000);
    for (id, p) in ids.iter().zip(&payloads) {
        assert_eq!(got.get(id), Some(p), "job {id}");
    }
}

// ------------------------------------------------------------------ fuzz seeds

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/record_decoder")
}

/// Valid records of every variant, one large batch among them (all seeds < 2 MiB in total).
fn seed_ops() -> Vec<(&'static str, Op)> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut gen = |s: &dyn Fn() -> BoxedStrategy<Op>| s().new_tree(&mut runner).unwrap().current();
    let small = Sizes {
        name: 40,
        payload: 200,
        attempts: 3,
        error: 60,
    };
    vec![
        (
            "enqueue",
            gen(&|| {
                batch(1..=3, small)
                    .prop_map(|jobs| Op::Enqueue { jobs })
                    .boxed()
            }),
        ),
        (
            "enqueue-batch-1000",
            gen(&|| {
                batch(1000..=1000, TINY)
                    .prop_map(|jobs| Op::Enqueue { jobs })
                    .boxed()
            }),
        ),
        (
            "update",
            gen(&|| {
                (prop::collection::vec(meta(small), 1..3), change())
                    .prop_map(|(metas, change)| Op::Update { metas, change })
                    .boxed()
            }),
        ),
        (
            "delete",
            Op::Delete {
                ids: vec![JobId(0), JobId(1 << 40), JobId(u64::MAX)],
            },
        ),
        (
            "dedup",
            Op::Dedup {
                queue: "q".into(),
                key: "k".into(),
                id: JobId(7),
                expires: Timestamp(u64::MAX),
            },
        ),
        (
            "dedup-drop",
            Op::DedupDrop {
                entries: vec![("q".into(), "a".into()), ("r".into(), String::new())],
            },
        ),
        (
            "paused",
            Op::Paused {
                queue: "q".into(),
                paused: true,
            },
        ),
        (
            "snapshot",
            gen(&|| {
                new_record(small)
                    .prop_map(|rec| Op::Snapshot { rec })
                    .boxed()
            }),
        ),
        ("next-id", Op::NextId { next: u64::MAX }),
        (
            "ext",
            Op::Ext {
                id: JobId(u64::MAX),
                ext: JobExt {
                    timeout_ms: Some(30_000),
                    postponed_ms: 1000,
                    cancelled: true,
                },
            },
        ),
        (
            "cancel",
            Op::Cancel {
                ids: vec![JobId(1), JobId(u64::MAX)],
                dedup: vec![("q".into(), "k".into())],
            },
        ),
        (
            "group",
            Op::Group {
                ops: vec![
                    gen(&|| {
                        batch(1..=2, small)
                            .prop_map(|jobs| Op::Enqueue { jobs })
                            .boxed()
                    }),
                    Op::Ext {
                        id: JobId(9),
                        ext: JobExt {
                            timeout_ms: Some(5),
                            ..JobExt::default()
                        },
                    },
                ],
            },
        ),
    ]
}

/// The seed format of the `record_decoder` target: 8 bytes of file number, then the bytes.
/// `NAME-body` seeds are a bare body (fuzzed below the CRC), `NAME-frame` a framed record.
fn seed_files() -> Vec<(String, Vec<u8>)> {
    let number = 3u64;
    let mut out = Vec::new();
    for (i, (name, op)) in seed_ops().into_iter().enumerate() {
        let body = op.encode().unwrap();
        let mut b = number.to_le_bytes().to_vec();
        b.extend_from_slice(&body);
        out.push((format!("op-{name}-body"), b));
        let mut f = number.to_le_bytes().to_vec();
        encode_record(&mut f, number, 1 + i as u64, &body);
        out.push((format!("op-{name}-frame"), f));
    }
    out
}

#[test]
fn fuzz_seeds_are_valid_records() {
    let files = seed_files();
    if std::env::var("DURQ_WRITE_SEEDS").as_deref() == Ok("1") {
        for (name, bytes) in &files {
            std::fs::write(seed_dir().join(name), bytes).unwrap();
        }
    }
    let mut total = 0;
    for (name, want) in &files {
        let path = seed_dir().join(name);
        let got = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (DURQ_WRITE_SEEDS=1 writes it)", path.display()));
        assert_eq!(
            &got,
            want,
            "{} is stale (DURQ_WRITE_SEEDS=1)",
            path.display()
        );
        if name.ends_with("-body") {
            let op = Op::decode(&got[8..]).unwrap();
            assert_eq!(op.encode().unwrap(), &got[8..]);
        } else {
            let f = durq::journal::format::decode_frame(&got[8..], 3).unwrap();
            Op::decode(f.body).unwrap();
        }
        total += got.len();
    }
    // Every seed in the directory (ours and the older ones) is a valid body or frame.
    for e in std::fs::read_dir(seed_dir()).unwrap() {
        let p = e.unwrap().path();
        let b = std::fs::read(&p).unwrap();
        let number = u64::from_le_bytes(b[..8].try_into().unwrap());
        let ok = Op::decode(&b[8..]).is_ok()
            || durq::journal::format::decode_frame(&b[8..], number)
                .is_ok_and(|f| Op::decode(f.body).is_ok());
        assert!(
            ok,
            "{} is neither a valid body nor a valid frame",
            p.display()
        );
    }
    assert!(total < 2 << 20, "seeds take {total} bytes");
}

#[test]
fn only_the_canonical_spelling_decodes() {
    let body = Op::NextId { next: 5 }.encode().unwrap();
    assert_eq!(body, [7, 5], "variant index 7, varint 5");
    assert_eq!(Op::decode(&body), Ok(Op::NextId { next: 5 }));
    // The same value as an over-long varint (the u16 marker 251): decodes in bincode, refused.
    let long = Op::decode(&[7, 251, 5, 0]).unwrap_err();
    assert!(long.contains("canonical"), "{long}");
    let trailing = Op::decode(&[7, 5, 0]).unwrap_err();
    assert!(trailing.contains("trailing"), "{trailing}");
    assert!(Op::decode(&[7]).is_err());
    assert!(Op::decode(&[11, 0]).is_err(), "no variant 11");
}

#[test]
fn appended_variants_keep_every_earlier_index() {
    // Format 1's variants keep their indexes (old journals decode unchanged); the later ones
    // follow: 8 Ext, 9 Cancel, 10 Group; Change::Postponed is 7.
    assert_eq!(Op::NextId { next: 5 }.encode().unwrap(), [7, 5]);
    let ext = Op::Ext {
        id: JobId(1),
        ext: JobExt::default(),
    };
    assert_eq!(ext.encode().unwrap(), [8, 1, 0, 0, 0]);
    let cancel = Op::Cancel {
        ids: vec![JobId(2)],
        dedup: Vec::new(),
    };
    assert_eq!(cancel.encode().unwrap(), [9, 1, 2, 0]);
    let group = Op::Group {
        ops: vec![Op::Delete { ids: vec![] }],
    };
    assert_eq!(group.encode().unwrap(), [10, 1, 2, 0]);
    let upd = Op::Update {
        metas: vec![],
        change: Change::Postponed,
    };
    assert_eq!(upd.encode().unwrap(), [1, 0, 7]);
}
