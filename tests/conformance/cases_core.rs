//! Order, leases, delays, keys, dedup, pause and stats (G2–G4).

use std::time::Duration;

use durq::{JobState, NewJob, Priority, ReserveRequest};

use super::{tick, Harness, Setup, T0};

fn job(q: &str, p: &str) -> NewJob {
    NewJob::new(q, p.as_bytes().to_vec())
}

async fn take(q: &durq::Queue, queue: &str) -> durq::Lease {
    q.reserve(&[queue]).await.unwrap().expect("a job is ready")
}

async fn payload_order(q: &durq::Queue, queues: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(l) = q.reserve(queues).await.unwrap() {
        out.push(String::from_utf8(l.job.payload.clone()).unwrap());
        q.ack(&l).await.unwrap();
    }
    out
}

pub async fn priority_then_fifo<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let plan = [
        ("n1", Priority::NORMAL),
        ("l1", Priority::LOW),
        ("c1", Priority::CRITICAL),
        ("n2", Priority::NORMAL),
        ("h1", Priority::HIGH),
        ("z1", Priority(0)),
        ("l2", Priority::LOW),
        ("c2", Priority::CRITICAL),
        ("n3", Priority::NORMAL),
    ];
    for (p, prio) in plan {
        q.enqueue(job("q", p).priority(prio)).await.unwrap();
    }
    // list shows the run order before anything runs.
    let listed: Vec<String> = q
        .list("q", Some(JobState::Waiting), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| String::from_utf8(j.payload).unwrap())
        .collect();
    let expect = ["c1", "c2", "h1", "n1", "n2", "n3", "l1", "l2", "z1"];
    assert_eq!(listed, expect);
    assert_eq!(payload_order(&q, &["q"]).await, expect);
    q.shutdown().await.unwrap();
}

pub async fn fifo_within_priority_across_queues<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    for i in 0..20 {
        let queue = if i % 3 == 0 { "a" } else { "b" };
        q.enqueue(job(queue, &format!("{i:02}"))).await.unwrap();
    }
    let got = payload_order(&q, &["a", "b"]).await;
    let expect: Vec<String> = (0..20).map(|i| format!("{i:02}")).collect();
    assert_eq!(got, expect, "equal priority is FIFO by enqueue order");
    q.shutdown().await.unwrap();
}

pub async fn delayed_jobs_wait_for_their_time<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let late = q
        .enqueue(job("q", "late").delay(Duration::from_secs(10)))
        .await
        .unwrap();
    let soon = q
        .enqueue(job("q", "soon").delay(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    let s = q.stats().await.unwrap().queues["q"].clone();
    assert_eq!((s.waiting, s.delayed), (0, 2));
    assert_eq!(
        q.get(late.id).await.unwrap().unwrap().state,
        JobState::Delayed
    );
    clock.advance(Duration::from_millis(4_999));
    tick(&q).await;
    assert!(
        q.reserve(&["q"]).await.unwrap().is_none(),
        "not before its time"
    );
    clock.advance(Duration::from_millis(1));
    tick(&q).await;
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, soon.id);
    assert_eq!(l.job.run_at.0, T0 + 5_000);
    q.ack(&l).await.unwrap();
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    clock.advance(Duration::from_secs(5));
    tick(&q).await;
    assert_eq!(take(&q, "q").await.job.id, late.id);
    q.shutdown().await.unwrap();
}

pub async fn lease_expiry_returns_the_job<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let e = q.enqueue(job("q", "x")).await.unwrap();
    let req = ReserveRequest::new(["q"]).lease(Duration::from_secs(2));
    let l = q.reserve_with(req.clone()).await.unwrap().unwrap();
    assert_eq!((l.job.attempts, l.expires_at.0), (1, T0 + 2_000));
    assert!(q.reserve(&["q"]).await.unwrap().is_none(), "leased once");
    clock.advance(Duration::from_millis(1_999));
    tick(&q).await;
    assert_eq!(q.stats().await.unwrap().queues["q"].active, 1);
    clock.advance(Duration::from_millis(1));
    tick(&q).await;
    let s = q.stats().await.unwrap().queues["q"].clone();
    assert_eq!((s.active, s.waiting), (0, 1), "{s:?}");
    let j = q.get(e.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Waiting, 1, 1)
    );
    assert!(j.errors[0].error.contains("lease"), "{:?}", j.errors);
    let err = q.ack(&l).await.unwrap_err();
    assert!(matches!(err, durq::Error::LeaseLost { .. }), "{err}");
    assert!(q.heartbeat(&l, Duration::from_secs(5)).await.is_err());
    let l2 = q.reserve_with(req).await.unwrap().unwrap();
    assert_eq!((l2.job.id, l2.job.attempts), (e.id, 2));
    assert_ne!(l2.token, l.token);
    q.ack(&l2).await.unwrap();
    q.shutdown().await.unwrap();
}

pub async fn heartbeat_extends_the_lease<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("q", "x")).await.unwrap();
    let req = ReserveRequest::new(["q"]).lease(Duration::from_secs(1));
    let l = q.reserve_with(req).await.unwrap().unwrap();
    for _ in 0..5 {
        clock.advance(Duration::from_millis(800));
        let until = q.heartbeat(&l, Duration::from_secs(1)).await.unwrap();
        assert_eq!(until, clock_now(&clock).after(Duration::from_secs(1)));
        tick(&q).await;
    }
    assert_eq!(q.stats().await.unwrap().queues["q"].active, 1);
    assert_eq!(
        q.list("q", Some(JobState::Active), 10).await.unwrap().len(),
        1
    );
    q.ack(&l).await.unwrap();
    assert_eq!(q.stats().await.unwrap().queues["q"].completed, 1);
    q.shutdown().await.unwrap();
}

fn clock_now(c: &durq::clock::ManualClock) -> durq::Timestamp {
    use durq::clock::Clock;
    c.now()
}

pub async fn ack_completes_and_stale_token_is_rejected<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let e = q.enqueue(job("q", "x")).await.unwrap();
    let l = take(&q, "q").await;
    let mut forged = l.clone();
    forged.token = durq::LeaseToken(l.token.0 ^ 1);
    assert!(matches!(
        q.ack(&forged).await,
        Err(durq::Error::LeaseLost { .. })
    ));
    q.ack(&l).await.unwrap();
    assert!(matches!(
        q.ack(&l).await,
        Err(durq::Error::LeaseLost { .. })
    ));
    assert!(q.fail(&l, "late").await.is_err());
    let j = q.get(e.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.finished_at.map(|t| t.0)),
        (JobState::Completed, Some(T0))
    );
    q.shutdown().await.unwrap();
}

pub async fn release_does_not_count_the_attempt<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let e = q.enqueue(job("q", "x")).await.unwrap();
    let l = take(&q, "q").await;
    assert_eq!(l.job.attempts, 1);
    q.release(&l).await.unwrap();
    let j = q.get(e.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Waiting, 0, 0)
    );
    let l = take(&q, "q").await;
    assert_eq!(l.job.attempts, 1);
    q.ack(&l).await.unwrap();
    q.shutdown().await.unwrap();
}

pub async fn completed_history_is_bounded<H: Harness>(mut h: H) {
    let setup = Setup {
        keep_completed: Some(3),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(q.enqueue(job("q", &i.to_string())).await.unwrap().id);
        let l = take(&q, "q").await;
        q.ack(&l).await.unwrap();
    }
    assert_eq!(q.stats().await.unwrap().queues["q"].completed, 3);
    let kept: Vec<_> = q
        .list("q", Some(JobState::Completed), 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(kept, vec![ids[5], ids[4], ids[3]], "most recent first");
    assert!(
        q.get(ids[0]).await.unwrap().is_none(),
        "dropped from history"
    );
    q.shutdown().await.unwrap();
    let q = h.open(&setup).await.unwrap();
    assert_eq!(q.stats().await.unwrap().queues["q"].completed, 3);
    q.shutdown().await.unwrap();
}

pub async fn pause_and_resume<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("a", "a")).await.unwrap();
    q.enqueue(job("b", "b")).await.unwrap();
    q.pause("a").await.unwrap();
    let s = q.stats().await.unwrap();
    assert!(s.queues["a"].paused && !s.queues["b"].paused);
    assert!(q.reserve(&["a"]).await.unwrap().is_none());
    let l = q.reserve(&["a", "b"]).await.unwrap().unwrap();
    assert_eq!(l.job.queue, "b");
    q.ack(&l).await.unwrap();
    q.enqueue(job("a", "a2")).await.unwrap();
    assert_eq!(
        q.stats().await.unwrap().queues["a"].waiting,
        2,
        "enqueue works while paused"
    );
    q.resume("a").await.unwrap();
    assert!(!q.stats().await.unwrap().queues["a"].paused);
    assert_eq!(payload_order(&q, &["a"]).await, ["a", "a2"]);
    q.shutdown().await.unwrap();
}

pub async fn stats_count_every_state<H: Harness>(mut h: H) {
    let clock = h.clock();
    let setup = Setup {
        retry: Some(durq::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        }),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    for i in 0..4 {
        q.enqueue(job("q", &i.to_string())).await.unwrap();
    }
    q.enqueue(job("q", "d").delay(Duration::from_secs(60)))
        .await
        .unwrap();
    q.enqueue(job("other", "o")).await.unwrap();
    let l1 = take(&q, "q").await;
    q.ack(&l1).await.unwrap();
    let l2 = take(&q, "q").await;
    q.fail(&l2, "boom").await.unwrap();
    let _l3 = take(&q, "q").await;
    clock.advance(Duration::from_secs(3));
    let s = q.stats().await.unwrap();
    let qs = &s.queues["q"];
    assert_eq!(
        (qs.waiting, qs.delayed, qs.active, qs.completed, qs.dead),
        (1, 1, 1, 1, 1),
        "{qs:?}"
    );
    assert_eq!(qs.oldest_waiting_secs, Some(3.0));
    assert_eq!(s.totals.waiting, 2);
    assert_eq!(s.queues["other"].oldest_waiting_secs, Some(3.0));
    q.shutdown().await.unwrap();
}

pub async fn long_poll_wakes_on_enqueue<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let waiter = q.reserve_with(ReserveRequest::new(["q"]).wait(Duration::from_secs(3600)));
    let mut waiter = std::pin::pin!(waiter);
    // The first poll sends the request; with no job it must park, not answer.
    assert!(futures::poll!(waiter.as_mut()).is_pending());
    tick(&q).await;
    assert!(futures::poll!(waiter.as_mut()).is_pending());
    let e = q.enqueue(job("q", "x")).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("long poll woke up")
        .unwrap()
        .expect("a lease");
    assert_eq!(got.job.id, e.id);
    q.ack(&got).await.unwrap();
    q.shutdown().await.unwrap();
}

pub async fn long_poll_times_out<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let waiter = q.reserve_with(ReserveRequest::new(["q"]).wait(Duration::from_secs(30)));
    let mut waiter = std::pin::pin!(waiter);
    assert!(futures::poll!(waiter.as_mut()).is_pending());
    tick(&q).await;
    clock.advance(Duration::from_millis(29_999));
    tick(&q).await;
    assert!(
        futures::poll!(waiter.as_mut()).is_pending(),
        "not before its deadline"
    );
    clock.advance(Duration::from_millis(1));
    tick(&q).await;
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("long poll ended at its deadline")
        .unwrap();
    assert!(got.is_none());
    q.shutdown().await.unwrap();
}

pub async fn exclude_kinds_skips_those_kinds<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("q", "a").kind("mail").priority(Priority::CRITICAL))
        .await
        .unwrap();
    q.enqueue(job("q", "b").kind("sms")).await.unwrap();
    let req = ReserveRequest::new(["q"]).exclude_kinds(["mail"]);
    let l = q.reserve_with(req.clone()).await.unwrap().unwrap();
    assert_eq!(l.job.kind, "sms");
    q.ack(&l).await.unwrap();
    assert!(q.reserve_with(req).await.unwrap().is_none());
    assert_eq!(take(&q, "q").await.job.kind, "mail");
    q.shutdown().await.unwrap();
}

pub async fn pause_key_holds_back_one_key<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("q", "k1-a").key("k1").priority(Priority::HIGH))
        .await
        .unwrap();
    q.enqueue(job("q", "k2-a").key("k2")).await.unwrap();
    q.pause_key("q", "k1", Duration::from_secs(10))
        .await
        .unwrap();
    q.enqueue(job("q", "k1-b").key("k1").priority(Priority::CRITICAL))
        .await
        .unwrap();
    assert_eq!(payload_order(&q, &["q"]).await, ["k2-a"]);
    clock.advance(Duration::from_secs(10));
    tick(&q).await;
    assert_eq!(payload_order(&q, &["q"]).await, ["k1-a", "k1-b"]);
    q.shutdown().await.unwrap();
}

pub async fn dedup_returns_first_id_until_ttl<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let ttl = Duration::from_secs(60);
    let a = q.enqueue(job("q", "1").dedup("k", ttl)).await.unwrap();
    assert!(!a.duplicate);
    let b = q.enqueue(job("q", "2").dedup("k", ttl)).await.unwrap();
    assert_eq!((b.id, b.duplicate), (a.id, true));
    let other = q.enqueue(job("r", "3").dedup("k", ttl)).await.unwrap();
    assert!(!other.duplicate, "dedup keys are per queue");
    // Still a duplicate after the job completed, while the key lives.
    let l = take(&q, "q").await;
    q.ack(&l).await.unwrap();
    clock.advance(Duration::from_millis(59_999));
    assert!(
        q.enqueue(job("q", "4").dedup("k", ttl))
            .await
            .unwrap()
            .duplicate
    );
    clock.advance(Duration::from_millis(1));
    tick(&q).await;
    let c = q.enqueue(job("q", "5").dedup("k", ttl)).await.unwrap();
    assert!(!c.duplicate);
    assert_ne!(c.id, a.id);
    assert_eq!(q.stats().await.unwrap().queues["q"].waiting, 1);
    q.shutdown().await.unwrap();
}

pub async fn dedup_survives_reopen_and_expires<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let ttl = Duration::from_secs(100);
    let a = q.enqueue(job("q", "1").dedup("k", ttl)).await.unwrap();
    q.enqueue(job("q", "x").dedup("short", Duration::from_secs(1)))
        .await
        .unwrap();
    q.shutdown().await.unwrap();
    clock.advance(Duration::from_secs(50));
    let q = h.open(&Setup::default()).await.unwrap();
    let b = q.enqueue(job("q", "2").dedup("k", ttl)).await.unwrap();
    assert_eq!((b.id, b.duplicate), (a.id, true), "key survives a restart");
    assert!(
        !q.enqueue(job("q", "y").dedup("short", ttl))
            .await
            .unwrap()
            .duplicate
    );
    q.shutdown().await.unwrap();
    clock.advance(Duration::from_secs(50));
    let q = h.open(&Setup::default()).await.unwrap();
    let c = q.enqueue(job("q", "3").dedup("k", ttl)).await.unwrap();
    assert!(!c.duplicate, "expired key is gone after a restart");
    q.shutdown().await.unwrap();
    let q = h.open(&Setup::default()).await.unwrap();
    let d = q.enqueue(job("q", "4").dedup("k", ttl)).await.unwrap();
    assert_eq!(
        (d.id, d.duplicate),
        (c.id, true),
        "the new key is the live one"
    );
    q.shutdown().await.unwrap();
}

pub async fn dedup_within_one_batch<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let ttl = Duration::from_secs(60);
    let out = q
        .enqueue_batch(vec![
            job("q", "1").dedup("k", ttl),
            job("q", "2"),
            job("q", "3").dedup("k", ttl),
        ])
        .await
        .unwrap();
    assert!(!out[0].duplicate && !out[1].duplicate);
    assert_eq!((out[2].id, out[2].duplicate), (out[0].id, true));
    assert_eq!(q.stats().await.unwrap().queues["q"].waiting, 2);
    q.shutdown().await.unwrap();
}

pub async fn key_runs_one_at_a_time_in_order<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("q", "a1").key("a")).await.unwrap();
    q.enqueue(job("q", "a2").key("a").priority(Priority::CRITICAL))
        .await
        .unwrap();
    q.enqueue(job("q", "b1").key("b")).await.unwrap();
    q.enqueue(job("q", "n1")).await.unwrap();
    let l1 = take(&q, "q").await;
    let l2 = take(&q, "q").await;
    let l3 = take(&q, "q").await;
    let firsts: Vec<_> = [&l1, &l2, &l3]
        .iter()
        .map(|l| String::from_utf8(l.job.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        firsts,
        ["a1", "b1", "n1"],
        "a2 waits behind a1 despite its priority"
    );
    assert!(q.reserve(&["q"]).await.unwrap().is_none());
    let waiting = q.list("q", Some(JobState::Waiting), 10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(q.stats().await.unwrap().queues["q"].waiting, 1);
    q.ack(&l1).await.unwrap();
    assert_eq!(take(&q, "q").await.job.payload, b"a2");
    q.shutdown().await.unwrap();
}

pub async fn key_order_holds_across_retries<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let a = q.enqueue(job("q", "a1").key("k")).await.unwrap();
    q.enqueue(job("q", "a2").key("k").priority(Priority::CRITICAL))
        .await
        .unwrap();
    let l = take(&q, "q").await;
    assert_eq!(l.job.id, a.id);
    let out = q.fail(&l, "try later").await.unwrap();
    assert_eq!(
        out,
        durq::FailOutcome::Retrying {
            run_at: durq::Timestamp(T0 + 1_000)
        }
    );
    assert!(
        q.reserve(&["q"]).await.unwrap().is_none(),
        "a2 must not overtake a1"
    );
    // Lease expiry of the head holds the key too.
    clock.advance(Duration::from_secs(1));
    tick(&q).await;
    let l = q
        .reserve_with(ReserveRequest::new(["q"]).lease(Duration::from_secs(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((l.job.id, l.job.attempts), (a.id, 2));
    clock.advance(Duration::from_secs(1));
    tick(&q).await;
    let l = take(&q, "q").await;
    assert_eq!((l.job.id, l.job.attempts), (a.id, 3), "a1 again, not a2");
    q.ack(&l).await.unwrap();
    assert_eq!(take(&q, "q").await.job.payload, b"a2");
    q.shutdown().await.unwrap();
}

pub async fn key_released_when_head_dies<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(job("q", "a1").key("k").max_retries(0))
        .await
        .unwrap();
    q.enqueue(job("q", "a2").key("k")).await.unwrap();
    let l = take(&q, "q").await;
    assert_eq!(q.fail(&l, "fatal").await.unwrap(), durq::FailOutcome::Dead);
    assert_eq!(take(&q, "q").await.job.payload, b"a2");
    q.shutdown().await.unwrap();
}

pub async fn state_survives_reopen<H: Harness>(mut h: H) {
    let clock = h.clock();
    let q = h.open(&Setup::default()).await.unwrap();
    let mut ids = Vec::new();
    for (i, p) in [
        Priority::LOW,
        Priority::HIGH,
        Priority::NORMAL,
        Priority::HIGH,
    ]
    .into_iter()
    .enumerate()
    {
        ids.push(
            q.enqueue(job("q", &i.to_string()).priority(p))
                .await
                .unwrap()
                .id,
        );
    }
    q.enqueue(job("q", "k1").key("k")).await.unwrap();
    q.enqueue(job("q", "k2").key("k")).await.unwrap();
    let l = take(&q, "q").await; // "1" (HIGH), left active across the restart
    assert_eq!(l.job.id, ids[1]);
    q.shutdown().await.unwrap();
    clock.advance(Duration::from_secs(1));
    let q = h.open(&Setup::default()).await.unwrap();
    assert!(
        q.ack(&l).await.is_err(),
        "a lease does not survive a restart"
    );
    let j = q.get(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Waiting, 1, 1)
    );
    // "1" is ready again since the restart (T0 + 1 s), after "3" (ready since T0): within a
    // priority, the earliest ready time runs first.
    let order = payload_order(&q, &["q"]).await;
    assert_eq!(order, ["3", "1", "2", "k1", "k2", "0"]);
    q.shutdown().await.unwrap();
}
