//! Retries, backoff policies, dead letters, requeue and purge (G5).

use std::time::Duration;

use durq::{
    FailAction, FailOutcome, JobState, NewJob, QueueConfig, RetryPolicy, Selection, Timestamp,
};

use super::{tick, Harness, Setup, T0};

async fn take(q: &durq::Queue, queue: &str) -> durq::Lease {
    q.reserve(&[queue]).await.unwrap().expect("a job is ready")
}

fn now(h: &impl Harness) -> u64 {
    use durq::clock::Clock;
    h.clock().now().0
}

/// Fails the job of `queue` until it dies; returns the retry delays seen (ms).
async fn delays_until_dead<H: Harness>(h: &H, q: &durq::Queue, queue: &str) -> Vec<u64> {
    let mut delays = Vec::new();
    loop {
        let l = take(q, queue).await;
        let t = now(h);
        match q
            .fail(&l, format!("attempt {}", l.job.attempts))
            .await
            .unwrap()
        {
            FailOutcome::Dead => return delays,
            FailOutcome::Cancelled => panic!("nothing was cancelled"),
            FailOutcome::Retrying { run_at } => {
                let d = run_at.0 - t;
                delays.push(d);
                assert!(
                    q.reserve(&[queue]).await.unwrap().is_none(),
                    "not before the retry time"
                );
                h.clock().advance(Duration::from_millis(d));
                tick(q).await;
            }
        }
        assert!(delays.len() < 100, "never died");
    }
}

pub async fn default_retry_schedule_then_dead<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let e = q.enqueue(NewJob::new("q", b"x".to_vec())).await.unwrap();
    let delays = delays_until_dead(&h, &q, "q").await;
    assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000]);
    let j = q.get(e.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Dead, 6, 6)
    );
    assert_eq!(q.stats().await.unwrap().queues["q"].dead, 1);
    q.shutdown().await.unwrap();
}

pub async fn queue_retry_policy_with_cap<H: Harness>(mut h: H) {
    let policy = RetryPolicy {
        max_retries: 4,
        base_ms: 100,
        factor: 3.0,
        cap_ms: 500,
        jitter: 0.0,
    };
    let setup = Setup {
        queues: vec![(
            "custom".into(),
            QueueConfig {
                retry: policy,
                ..QueueConfig::default()
            },
        )],
        retry: Some(RetryPolicy {
            max_retries: 2,
            base_ms: 10,
            ..RetryPolicy::default()
        }),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    q.enqueue(NewJob::new("custom", b"x".to_vec()))
        .await
        .unwrap();
    q.enqueue(NewJob::new("plain", b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        delays_until_dead(&h, &q, "custom").await,
        [100, 300, 500, 500]
    );
    assert_eq!(
        delays_until_dead(&h, &q, "plain").await,
        [10, 20],
        "store-wide default"
    );
    q.shutdown().await.unwrap();
}

pub async fn job_retry_policy_overrides<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let own = RetryPolicy {
        max_retries: 3,
        base_ms: 50,
        factor: 1.0,
        cap_ms: 0,
        jitter: 0.0,
    };
    q.enqueue(NewJob::new("a", b"x".to_vec()).retry(own))
        .await
        .unwrap();
    q.enqueue(
        NewJob::new("b", b"x".to_vec())
            .max_retries(2)
            .backoff(Duration::from_millis(250)),
    )
    .await
    .unwrap();
    q.enqueue(NewJob::new("c", b"x".to_vec()).max_retries(0))
        .await
        .unwrap();
    assert_eq!(delays_until_dead(&h, &q, "a").await, [50, 50, 50]);
    assert_eq!(delays_until_dead(&h, &q, "b").await, [250, 500]);
    assert_eq!(delays_until_dead(&h, &q, "c").await, Vec::<u64>::new());
    q.shutdown().await.unwrap();
}

pub async fn jitter_spreads_within_bounds<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let policy = RetryPolicy {
        max_retries: 1,
        base_ms: 10_000,
        factor: 2.0,
        cap_ms: 0,
        jitter: 0.5,
    };
    let jobs = (0..30)
        .map(|_| NewJob::new("q", b"x".to_vec()).retry(policy.clone()))
        .collect();
    q.enqueue_batch(jobs).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let l = take(&q, "q").await;
        match q.fail(&l, "e").await.unwrap() {
            FailOutcome::Retrying { run_at } => {
                let d = run_at.0 - T0;
                assert!((5_000..=15_000).contains(&d), "delay {d} outside ±50 %");
                seen.insert(d);
            }
            FailOutcome::Dead => panic!("one retry allowed"),
            FailOutcome::Cancelled => panic!("nothing was cancelled"),
        }
    }
    assert!(seen.len() > 5, "jitter spreads delays: {seen:?}");
    q.shutdown().await.unwrap();
}

pub async fn retry_after_and_give_up<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let a = q.enqueue(NewJob::new("q", b"a".to_vec())).await.unwrap();
    let l = take(&q, "q").await;
    let out = q
        .fail_with(&l, "429", FailAction::RetryAfter(Duration::from_secs(42)))
        .await
        .unwrap();
    assert_eq!(
        out,
        FailOutcome::Retrying {
            run_at: Timestamp(T0 + 42_000)
        }
    );
    let j = q.get(a.id).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts),
        (JobState::Delayed, 1),
        "retry-after counts the attempt"
    );
    h.clock().advance(Duration::from_secs(42));
    tick(&q).await;
    let l = take(&q, "q").await;
    assert_eq!(l.job.attempts, 2);
    let out = q
        .fail_with(&l, "bad request", FailAction::GiveUp)
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    let j = q.get(a.id).await.unwrap().unwrap();
    assert_eq!(j.state, JobState::Dead);
    let errs: Vec<_> = j.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errs, ["429", "bad request"]);
    // A retry-after on the last allowed attempt still dead-letters.
    q.enqueue(NewJob::new("q", b"b".to_vec()).max_retries(0))
        .await
        .unwrap();
    let l = take(&q, "q").await;
    let out = q
        .fail_with(&l, "429", FailAction::RetryAfter(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(out, FailOutcome::Dead);
    q.shutdown().await.unwrap();
}

pub async fn lease_expiry_counts_toward_retries<H: Harness>(mut h: H) {
    let setup = Setup {
        lease: Some(Duration::from_secs(1)),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    let e = q
        .enqueue(NewJob::new("q", b"x".to_vec()).max_retries(1))
        .await
        .unwrap();
    for attempt in 1..=2 {
        let l = take(&q, "q").await;
        assert_eq!((l.job.attempts, l.expires_at.0 - now(&h)), (attempt, 1_000));
        h.clock().advance(Duration::from_secs(1));
        tick(&q).await;
    }
    let j = q.get(e.id).await.unwrap().unwrap();
    assert_eq!((j.state, j.errors.len()), (JobState::Dead, 2));
    q.shutdown().await.unwrap();
}

pub async fn dead_letters_keep_every_attempt<H: Harness>(mut h: H) {
    let setup = Setup {
        retry: Some(RetryPolicy {
            max_retries: 2,
            base_ms: 1_000,
            ..RetryPolicy::default()
        }),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    let e = q.enqueue(NewJob::new("q", b"x".to_vec())).await.unwrap();
    delays_until_dead(&h, &q, "q").await;
    let dead = q.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let j = &dead[0];
    assert_eq!(j.id, e.id);
    let hist: Vec<_> = j
        .errors
        .iter()
        .map(|a| (a.attempt, a.at.0, a.error.clone()))
        .collect();
    assert_eq!(
        hist,
        [
            (1, T0, "attempt 1".to_string()),
            (2, T0 + 1_000, "attempt 2".to_string()),
            (3, T0 + 3_000, "attempt 3".to_string()),
        ]
    );
    assert_eq!(j.finished_at, Some(Timestamp(T0 + 3_000)));
    assert_eq!(j.last_error(), Some("attempt 3"));
    q.shutdown().await.unwrap();
    let q = h.open(&setup).await.unwrap();
    let again = q.dead_letters("q", 10).await.unwrap();
    assert_eq!(again[0].errors, j.errors, "history survives a restart");
    q.shutdown().await.unwrap();
}

async fn make_dead(q: &durq::Queue, n: usize) -> Vec<durq::JobId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let e = q
            .enqueue(NewJob::new("q", i.to_string().into_bytes()).max_retries(0))
            .await
            .unwrap();
        ids.push(e.id);
        let l = take(q, "q").await;
        assert_eq!(q.fail(&l, "x").await.unwrap(), FailOutcome::Dead);
    }
    ids
}

pub async fn requeue_one_some_all<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let ids = make_dead(&q, 5).await;
    let listed: Vec<_> = q
        .dead_letters("q", 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let mut rev = ids.clone();
    rev.reverse();
    assert_eq!(listed, rev, "dead letters list most recent first");
    assert_eq!(
        q.requeue_dead("q", Selection::Ids(vec![ids[2]]))
            .await
            .unwrap(),
        1
    );
    let j = q.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (j.state, j.attempts, j.errors.len()),
        (JobState::Waiting, 0, 1),
        "history kept"
    );
    assert_eq!(
        q.requeue_dead("q", Selection::Ids(vec![ids[0], ids[4]]))
            .await
            .unwrap(),
        2
    );
    let s = q.stats().await.unwrap().queues["q"].clone();
    assert_eq!((s.waiting, s.dead), (3, 2));
    let e = q
        .requeue_dead("q", Selection::Ids(vec![ids[2]]))
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "requeue of a non-dead job: {e}");
    assert_eq!(q.requeue_dead("q", Selection::All).await.unwrap(), 2);
    assert_eq!(q.requeue_dead("q", Selection::All).await.unwrap(), 0);
    let l = take(&q, "q").await;
    assert_eq!(l.job.attempts, 1, "attempts restart after requeue");
    q.shutdown().await.unwrap();
}

pub async fn purge_one_and_all<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let ids = make_dead(&q, 4).await;
    assert_eq!(
        q.purge_dead("q", Selection::Ids(vec![ids[1]]))
            .await
            .unwrap(),
        1
    );
    assert!(q.get(ids[1]).await.unwrap().is_none());
    assert_eq!(q.stats().await.unwrap().queues["q"].dead, 3);
    assert_eq!(q.purge_dead("q", Selection::All).await.unwrap(), 3);
    assert_eq!(q.stats().await.unwrap().queues["q"].dead, 0);
    for id in &ids {
        assert!(q.get(*id).await.unwrap().is_none());
    }
    q.shutdown().await.unwrap();
    let q = h.open(&Setup::default()).await.unwrap();
    assert_eq!(
        q.stats()
            .await
            .unwrap()
            .queues
            .get("q")
            .map(|s| s.dead)
            .unwrap_or(0),
        0
    );
    assert!(q.dead_letters("q", 10).await.unwrap().is_empty());
    q.shutdown().await.unwrap();
}
