//! Every duration and time in range, everywhere (issue 8 item 6, issue 9 item 3).
//!
//! Property tests over durations through the library API, the CLI (the real binary) and HTTP
//! (a real `durq serve`): no panic; each value is either accepted (and the queue still lists,
//! with every time formatted) or refused with a clear error naming the field, with nothing
//! changed. A store holding a job whose times are at the very end of `u64` (written through a
//! clock set there) lists without panicking, in the library and in the CLI.
//!
//! Cases per property: `DURQ_PROPTEST_CASES` (default 24; the CLI and HTTP ones spawn
//! processes or make requests per case).

mod support;

use std::sync::Arc;
use std::time::Duration;

use durq::clock::ManualClock;
use durq::duration::MAX_DURATION;
use durq::{
    Error, FailAction, FailOutcome, JobState, NewJob, Queue, ReserveRequest, RetryPolicy, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use support::*;

fn cases() -> u32 {
    std::env::var("DURQ_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Durations from zero to `Duration::MAX`, dense around the 10-year limit.
fn any_duration() -> impl Strategy<Value = Duration> {
    let max = MAX_DURATION.as_secs();
    prop_oneof![
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (
            max - 5..max + 5,
            prop_oneof![Just(0u32), 0u32..1_000_000_000]
        )
            .prop_map(|(s, n)| Duration::new(s, n)),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        Just(MAX_DURATION),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX / 1000)),
    ]
}

/// Duration strings as users type them, valid or not, in range or not.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("h"),
        Just("d"),
        Just("w"),
        Just("y")
    ];
    let max = MAX_DURATION.as_secs();
    prop_oneof![
        (0u64..10_000, unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (any::<u64>(), unit).prop_map(|(n, u)| format!("{n}{u}")),
        (max - 3..max + 3).prop_map(|n| format!("{n}s")),
        Just("18446744073709551615s".to_string()),
        Just("10000y".to_string()),
        Just("99999y".to_string()),
        Just("10y".to_string()),
        Just("3652d".to_string()),
        Just("3653d".to_string()),
        Just("abc".to_string()),
    ]
}

/// What the text should do: `Some(d)` accepted, `None` refused.
fn expected(text: &str) -> Option<Duration> {
    humantime::parse_duration(text)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

fn assert_names(e: &Error, field: &str) {
    assert!(
        matches!(e, Error::InvalidInput(_)),
        "{field}: expected invalid input, got {e:?}"
    );
    let m = e.to_string();
    assert!(m.contains(field), "the error does not name `{field}`: {m}");
}

/// Every time of every job of `queue` formats (and the listing works).
async fn list_formats(q: &Queue, queue: &str) -> usize {
    let jobs = q.list(queue, None, 10_000).await.unwrap();
    for j in &jobs {
        let _ = j.created_at.to_rfc3339();
        let _ = j.run_at.to_rfc3339();
        let _ = j.finished_at.map(|t| t.to_rfc3339());
        for e in &j.errors {
            let _ = e.at.to_rfc3339();
        }
        let _ = durq::cli::output::job_json(j).to_string();
    }
    jobs.len()
}

/// Jobs per queue and state (without the oldest-waiting age, which moves with the clock).
async fn counts(q: &Queue) -> Vec<(String, [u64; 5])> {
    let s = q.stats().await.unwrap();
    s.queues
        .iter()
        .map(|(n, c)| {
            (
                n.clone(),
                [c.waiting, c.delayed, c.active, c.dead, c.completed],
            )
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Field {
    Delay,
    DedupTtl,
    Backoff,
    RetryBase,
    RetryCap,
    Lease,
    Wait,
    Heartbeat,
    RetryAfter,
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Delay),
        Just(Field::DedupTtl),
        Just(Field::Backoff),
        Just(Field::RetryBase),
        Just(Field::RetryCap),
        Just(Field::Lease),
        Just(Field::Wait),
        Just(Field::Heartbeat),
        Just(Field::RetryAfter),
    ]
}

/// One case through the library: accepted and listable, or refused naming the field with
/// nothing changed.
async fn library_case(q: &Queue, n: usize, f: Field, d: Duration) {
    let ok = d <= MAX_DURATION;
    let queue = format!("f{n}");
    match f {
        Field::Delay | Field::DedupTtl | Field::Backoff | Field::RetryBase | Field::RetryCap => {
            let mut job = NewJob::new(queue.clone(), b"{}".to_vec());
            let name = match f {
                Field::Delay => {
                    job = job.delay(d);
                    "delay"
                }
                Field::DedupTtl => {
                    job = job.dedup(format!("k{n}"), d.max(Duration::from_millis(1)));
                    "dedup TTL"
                }
                Field::Backoff => {
                    job = job.backoff(d);
                    "backoff"
                }
                Field::RetryBase | Field::RetryCap => {
                    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                    let mut p = RetryPolicy::default();
                    let name = if matches!(f, Field::RetryBase) {
                        p.base_ms = ms;
                        "retry backoff base"
                    } else {
                        p.cap_ms = ms;
                        "retry backoff cap"
                    };
                    job = job.retry(p);
                    name
                }
                _ => unreachable!(),
            };
            // A policy holds whole milliseconds: the check is on those.
            let ok = match f {
                Field::RetryBase | Field::RetryCap => d.as_millis() <= MAX_DURATION.as_millis(),
                _ => ok,
            };
            let before = counts(q).await;
            match q.enqueue(job).await {
                Ok(e) => {
                    assert!(ok, "{name} {d:?} over the limit was accepted");
                    assert_eq!(list_formats(q, &queue).await, 1);
                    if !matches!(f, Field::Delay) {
                        // Fail it: the retry delay (from this backoff) is computed and stored.
                        let l = q.reserve(&[queue.as_str()]).await.unwrap().unwrap();
                        assert_eq!(l.job.id, e.id);
                        match q.fail(&l, "x").await.unwrap() {
                            FailOutcome::Retrying { run_at } => {
                                let _ = run_at.to_rfc3339();
                            }
                            FailOutcome::Dead => panic!("retries left"),
                            FailOutcome::Cancelled => panic!("nothing was cancelled"),
                        }
                        assert_eq!(list_formats(q, &queue).await, 1);
                    }
                }
                Err(e) => {
                    assert!(!ok, "{name} {d:?} refused: {e}");
                    assert_names(&e, name);
                    assert_eq!(counts(q).await, before, "a refused enqueue changed state");
                }
            }
        }
        Field::Lease | Field::Wait => {
            let e = q
                .enqueue(NewJob::new(queue.clone(), b"1".to_vec()))
                .await
                .unwrap();
            let mut req = ReserveRequest::new([queue.clone()]);
            let name = if matches!(f, Field::Lease) {
                req = req.lease(d);
                "lease"
            } else {
                // A job is ready, so even a long wait answers at once.
                req = req.wait(d);
                "wait"
            };
            match q.reserve_with(req).await {
                Ok(Some(l)) => {
                    assert!(ok, "{name} {d:?} over the limit was accepted");
                    assert_eq!(l.job.id, e.id);
                    let _ = l.expires_at.to_rfc3339();
                    assert_eq!(list_formats(q, &queue).await, 1);
                    q.ack(&l).await.unwrap();
                }
                Ok(None) => panic!("a ready job was not reserved"),
                Err(err) => {
                    assert!(!ok, "{name} {d:?} refused: {err}");
                    assert_names(&err, name);
                    // Nothing was reserved.
                    let j = q.get(e.id).await.unwrap().unwrap();
                    assert_eq!(j.state, JobState::Waiting);
                    assert_eq!(j.attempts, 0);
                    let l = q.reserve(&[queue.as_str()]).await.unwrap().unwrap();
                    q.ack(&l).await.unwrap();
                }
            }
        }
        Field::Heartbeat | Field::RetryAfter => {
            let e = q
                .enqueue(NewJob::new(queue.clone(), b"1".to_vec()))
                .await
                .unwrap();
            let l = q.reserve(&[queue.as_str()]).await.unwrap().unwrap();
            assert_eq!(l.job.id, e.id);
            if matches!(f, Field::Heartbeat) {
                match q.heartbeat(&l, d).await {
                    Ok(t) => {
                        assert!(ok, "heartbeat {d:?} over the limit was accepted");
                        let _ = t.to_rfc3339();
                    }
                    Err(err) => {
                        assert!(!ok, "heartbeat {d:?} refused: {err}");
                        assert_names(&err, "heartbeat lease");
                    }
                }
                assert_eq!(list_formats(q, &queue).await, 1);
                q.ack(&l).await.expect("the lease still holds");
            } else {
                match q.fail_with(&l, "later", FailAction::RetryAfter(d)).await {
                    Ok(FailOutcome::Retrying { run_at }) => {
                        assert!(ok, "retry_after {d:?} over the limit was accepted");
                        let _ = run_at.to_rfc3339();
                        assert_eq!(list_formats(q, &queue).await, 1);
                    }
                    Ok(FailOutcome::Dead) => panic!("retries left"),
                    Ok(FailOutcome::Cancelled) => panic!("nothing was cancelled"),
                    Err(err) => {
                        assert!(!ok, "retry_after {d:?} refused: {err}");
                        assert_names(&err, "retry_after");
                        // Nothing changed: still active under the same lease.
                        let j = q.get(e.id).await.unwrap().unwrap();
                        assert_eq!(j.state, JobState::Active);
                        assert!(j.errors.is_empty());
                        q.ack(&l).await.expect("the lease still holds");
                    }
                }
            }
        }
    }
}

#[test]
fn library_durations_in_range_or_refused() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let q = rt.block_on(Queue::open(dir.path())).unwrap();
    let counter = std::cell::Cell::new(0usize);
    runner()
        .run(&(field(), any_duration()), |(f, d)| {
            let n = counter.get() + 1;
            counter.set(n);
            rt.block_on(library_case(&q, n, f, d));
            Ok(())
        })
        .unwrap();
    // Every edge value explicitly, whatever the random draw.
    for f in [
        Field::Delay,
        Field::DedupTtl,
        Field::Backoff,
        Field::RetryBase,
        Field::RetryCap,
        Field::Lease,
        Field::Wait,
        Field::Heartbeat,
        Field::RetryAfter,
    ] {
        for d in [
            MAX_DURATION,
            MAX_DURATION + Duration::from_millis(1),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            let n = counter.get() + 1;
            counter.set(n);
            rt.block_on(library_case(&q, n, f, d));
        }
    }
    // Still lists after a restart.
    rt.block_on(q.shutdown()).unwrap();
    let q = rt.block_on(Queue::open(dir.path())).unwrap();
    for i in 1..=counter.get() {
        rt.block_on(list_formats(&q, &format!("f{i}")));
    }
    rt.block_on(q.shutdown()).unwrap();
}

/// A job whose times are at the very end of `u64`: written through a clock set there (its
/// run-at, lease, retry and dedup expiry saturate instead of wrapping), then listed after a
/// restart on the wall clock, by the library and by the real binary.
#[test]
fn far_future_times_list_without_panic() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp(u64::MAX - 10)));
    rt.block_on(async {
        let q = Queue::builder(dir.path())
            .clock(clock.clone())
            .open()
            .await
            .unwrap();
        q.enqueue(
            NewJob::new("far", b"{\"a\":1}".to_vec())
                .delay(MAX_DURATION)
                .dedup("k", MAX_DURATION),
        )
        .await
        .unwrap();
        let e = q.enqueue(NewJob::new("far", b"2".to_vec())).await.unwrap();
        let l = q
            .reserve_with(ReserveRequest::new(["far"]).lease(MAX_DURATION))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(l.job.id, e.id);
        assert_eq!(l.expires_at, Timestamp(u64::MAX));
        let t = q.heartbeat(&l, MAX_DURATION).await.unwrap();
        assert_eq!(t, Timestamp(u64::MAX));
        match q.fail(&l, "boom").await.unwrap() {
            FailOutcome::Retrying { run_at } => assert_eq!(run_at, Timestamp(u64::MAX)),
            FailOutcome::Dead => panic!("retries left"),
            FailOutcome::Cancelled => panic!("nothing was cancelled"),
        }
        assert_eq!(list_formats(&q, "far").await, 2);
        let _ = q.stats().await.unwrap();
        q.shutdown().await.unwrap();
        // Reopened on the wall clock: the stored far-future times still list.
        let q = Queue::open(dir.path()).await.unwrap();
        let jobs = q.list("far", None, 10).await.unwrap();
        assert_eq!(jobs.len(), 2);
        for j in &jobs {
            assert_eq!(j.state, JobState::Delayed);
            assert_eq!(j.run_at, Timestamp(u64::MAX));
            assert!(j.run_at.to_rfc3339().starts_with('+'), "{}", j.run_at);
        }
        q.shutdown().await.unwrap();
    });
    let out = ok(&run(dir.path(), &["--json", "jobs", "far"]));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        assert!(l["run_at"].as_str().unwrap().starts_with('+'), "{l}");
    }
    ok(&run(dir.path(), &["jobs", "far"]));
    ok(&run(dir.path(), &["--json", "stats"]));
}

#[derive(Clone, Copy, Debug)]
enum CliField {
    Delay,
    DedupTtl,
    Backoff,
    SpecDelay,
    SpecDedupTtl,
    SpecBackoff,
    WorkLease,
}

#[test]
fn cli_durations_in_range_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    ok(&run(&data, &["enqueue", "seed", "1"]));
    let field = prop_oneof![
        Just(CliField::Delay),
        Just(CliField::DedupTtl),
        Just(CliField::Backoff),
        Just(CliField::SpecDelay),
        Just(CliField::SpecDedupTtl),
        Just(CliField::SpecBackoff),
        Just(CliField::WorkLease),
    ];
    let counter = std::cell::Cell::new(0usize);
    runner()
        .run(&(field, duration_text()), |(f, text)| {
            let n = counter.get() + 1;
            counter.set(n);
            let queue = format!("c{n}");
            let want = expected(&text);
            let before = tree(&data);
            let (out, name) = match f {
                CliField::Delay | CliField::DedupTtl | CliField::Backoff => {
                    let flag = match f {
                        CliField::Delay => "--delay",
                        CliField::DedupTtl => "--dedup-ttl",
                        _ => "--backoff",
                    };
                    let mut args = vec!["enqueue", queue.as_str(), "{}", flag, text.as_str()];
                    if matches!(f, CliField::DedupTtl) {
                        args.extend(["--dedup", "k"]);
                    }
                    (run(&data, &args), flag)
                }
                CliField::SpecDelay | CliField::SpecDedupTtl | CliField::SpecBackoff => {
                    let key = match f {
                        CliField::SpecDelay => "delay",
                        CliField::SpecDedupTtl => "dedup_ttl",
                        _ => "backoff",
                    };
                    let line = json!({"payload": {"n": n}, "dedup": "k", key: text});
                    let input = format!("{line}\n");
                    (
                        run_stdin(
                            &data,
                            &["enqueue", queue.as_str(), "--batch", "--spec"],
                            input.as_bytes(),
                        ),
                        key,
                    )
                }
                CliField::WorkLease => (
                    run(
                        &data,
                        &[
                            "work",
                            queue.as_str(),
                            "--until-empty",
                            "--lease",
                            text.as_str(),
                        ],
                    ),
                    // The worker's lease has its own range (100ms to 24h).
                    "lease",
                ),
            };
            let want = match f {
                CliField::WorkLease => want.filter(|d| {
                    (Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(d)
                }),
                _ => want,
            };
            let zero_ttl = matches!(f, CliField::DedupTtl | CliField::SpecDedupTtl)
                && want == Some(Duration::ZERO);
            match want {
                Some(_) if !zero_ttl => {
                    ok(&out);
                    let listed = ok(&run(&data, &["--json", "jobs", queue.as_str()]));
                    for j in json_lines(&listed) {
                        assert!(j["run_at"].is_string(), "{j}");
                    }
                }
                _ => {
                    assert_eq!(
                        out.status.code(),
                        Some(2),
                        "`{text}` for {name}: {}",
                        stderr(&out)
                    );
                    let err = stderr(&out);
                    assert!(err.contains(name), "the error does not name {name}: {err}");
                    assert!(!err.contains("panicked"), "{err}");
                    assert_eq!(
                        tree(&data),
                        before,
                        "a refused command changed the data dir"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn http_durations_in_range_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.clone();
    let fields = prop_oneof![
        Just("delay"),
        Just("dedup_ttl"),
        Just("backoff"),
        Just("lease"),
        Just("wait"),
        Just("heartbeat"),
        Just("retry_after"),
    ];
    // Counts per queue and state (the oldest-waiting age moves with the clock).
    let stats = |a: &str| {
        let mut v = http(a, "GET", "/v1/stats", &[], None).json();
        for q in v["queues"].as_object_mut().unwrap().values_mut() {
            q.as_object_mut().unwrap().remove("oldest_waiting_secs");
        }
        v["totals"]
            .as_object_mut()
            .unwrap()
            .remove("oldest_waiting_secs");
        v
    };
    let counter = std::cell::Cell::new(0usize);
    runner()
        .run(&(fields, duration_text()), |(f, text)| {
            let n = counter.get() + 1;
            counter.set(n);
            let queue = format!("h{n}");
            let want = expected(&text);
            let jobs_url = format!("/v1/queues/{queue}/jobs");
            let (status, body, field) = match f {
                "delay" | "dedup_ttl" | "backoff" => {
                    let before = stats(&a);
                    let r = post_json(&a, &jobs_url, &json!({"payload": 1, "dedup": "k", f: text}));
                    if r.status == 400 {
                        assert_eq!(stats(&a), before, "a refused enqueue changed state");
                    }
                    (r.status, r.text(), f)
                }
                "lease" | "wait" => {
                    let r = post_json(&a, &jobs_url, &json!({"payload": 1}));
                    assert_eq!(r.status, 201, "{}", r.text());
                    let id = r.json()["id"].as_str().unwrap().to_string();
                    let r = post_json(&a, "/v1/reserve", &json!({"queues": [queue], f: text}));
                    if r.status == 400 {
                        // Nothing was reserved.
                        let j = http(&a, "GET", &format!("/v1/jobs/{id}"), &[], None).json();
                        assert_eq!(j["state"], "waiting", "{j}");
                        assert_eq!(j["attempts"], 0, "{j}");
                    }
                    (r.status, r.text(), f)
                }
                _ => {
                    let r = post_json(&a, &jobs_url, &json!({"payload": 1}));
                    assert_eq!(r.status, 201);
                    let r = post_json(&a, "/v1/reserve", &json!({"queues": [queue]}));
                    assert_eq!(r.status, 200, "{}", r.text());
                    let l = r.json();
                    let id = l["job"]["id"].as_str().unwrap().to_string();
                    let token = l["token"].as_str().unwrap().to_string();
                    let (path, body, field) = if f == "heartbeat" {
                        (
                            format!("/v1/jobs/{id}/heartbeat"),
                            json!({"token": token, "lease": text}),
                            "lease",
                        )
                    } else {
                        (
                            format!("/v1/jobs/{id}/fail"),
                            json!({"token": token, "error": "e", "retry_after": text}),
                            "retry_after",
                        )
                    };
                    let r = post_json(&a, &path, &body);
                    if r.status == 400 {
                        // Nothing changed: still active, the lease still holds.
                        let j = http(&a, "GET", &format!("/v1/jobs/{id}"), &[], None).json();
                        assert_eq!(j["state"], "active", "{j}");
                        let r =
                            post_json(&a, &format!("/v1/jobs/{id}/ack"), &json!({"token": token}));
                        assert_eq!(r.status, 200, "{}", r.text());
                    }
                    (r.status, r.text(), field)
                }
            };
            // Over the long-poll limit is refused too (naming `wait`).
            let long_wait = f == "wait" && want.is_some_and(|d| d > Duration::from_secs(60));
            let zero_ttl = f == "dedup_ttl" && want == Some(Duration::ZERO);
            if want.is_some() && !long_wait && !zero_ttl {
                assert!(
                    (200..300).contains(&status),
                    "{f} `{text}` refused: {status} {body}"
                );
            } else {
                assert_eq!(status, 400, "{f} `{text}`: {body}");
                let e: serde_json::Value = serde_json::from_str(&body).unwrap();
                let msg = e["error"].as_str().unwrap();
                assert!(
                    msg.contains(field),
                    "the error does not name {field}: {msg}"
                );
            }
            let r = http(&a, "GET", &jobs_url, &[], None);
            assert_eq!(r.status, 200, "listing failed: {}", r.text());
            Ok(())
        })
        .unwrap();
    let r = http(&a, "GET", "/v1/stats", &[], None);
    assert_eq!(r.status, 200, "the server died");
}
