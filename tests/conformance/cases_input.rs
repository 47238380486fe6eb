//! Batches and bad input (G7): invalid values are rejected with `InvalidInput` and change
//! nothing.

use std::time::Duration;

use durq::{JobState, NewJob, ReserveRequest, RetryPolicy, Selection, Stats};

use super::{Harness, Setup};

async fn snapshot(q: &durq::Queue) -> (Stats, Vec<durq::Job>) {
    (
        q.stats().await.unwrap(),
        q.list("q", None, 1_000).await.unwrap(),
    )
}

pub async fn batch_is_atomic_on_invalid_job<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(NewJob::new("q", b"before".to_vec()))
        .await
        .unwrap();
    let before = snapshot(&q).await;
    let batch = vec![
        NewJob::new("q", b"1".to_vec()),
        NewJob::new("q", b"2".to_vec()).dedup("d", Duration::from_secs(60)),
        NewJob::new("bad queue!", b"3".to_vec()),
    ];
    let e = q.enqueue_batch(batch).await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    assert!(e.to_string().contains("job 3"), "says which job: {e}");
    assert_eq!(
        snapshot(&q).await,
        before,
        "nothing of the batch was enqueued"
    );
    // Its dedup key was not claimed either.
    let d = q
        .enqueue(NewJob::new("q", b"2".to_vec()).dedup("d", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(!d.duplicate);
    q.shutdown().await.unwrap();
}

pub async fn batch_keeps_order<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    let jobs = (0..100)
        .map(|i| NewJob::new("q", format!("{i:03}").into_bytes()))
        .collect();
    let out = q.enqueue_batch(jobs).await.unwrap();
    assert_eq!(out.len(), 100);
    assert!(
        out.windows(2).all(|w| w[0].id < w[1].id),
        "ids follow batch order"
    );
    assert!(q.enqueue_batch(Vec::new()).await.unwrap().is_empty());
    for (i, e) in out.iter().enumerate() {
        let l = q.reserve(&["q"]).await.unwrap().unwrap();
        assert_eq!(
            (l.job.id, l.job.payload.clone()),
            (e.id, format!("{i:03}").into_bytes())
        );
        q.ack(&l).await.unwrap();
    }
    q.shutdown().await.unwrap();
}

pub async fn invalid_jobs_rejected_and_nothing_changed<H: Harness>(mut h: H) {
    let setup = Setup {
        max_payload: Some(1024),
        ..Setup::default()
    };
    let q = h.open(&setup).await.unwrap();
    q.enqueue(NewJob::new("q", b"ok".to_vec())).await.unwrap();
    let before = snapshot(&q).await;
    let long_name = "q".repeat(129);
    let bad = vec![
        NewJob::new("", b"x".to_vec()),
        NewJob::new(long_name.as_str(), b"x".to_vec()),
        NewJob::new("with space", b"x".to_vec()),
        NewJob::new("a/b", b"x".to_vec()),
        NewJob::new("q", vec![0u8; 1025]),
        NewJob::new("q", b"x".to_vec()).kind(""),
        NewJob::new("q", b"x".to_vec()).kind("a\nb"),
        NewJob::new("q", b"x".to_vec()).key(""),
        NewJob::new("q", b"x".to_vec()).key("x".repeat(2000)),
        NewJob::new("q", b"x".to_vec()).dedup("d", Duration::ZERO),
        NewJob::new("q", b"x".to_vec()).max_retries(5_000),
        NewJob::new("q", b"x".to_vec()).retry(RetryPolicy {
            factor: 0.5,
            ..RetryPolicy::default()
        }),
        NewJob::new("q", b"x".to_vec()).retry(RetryPolicy {
            jitter: f64::NAN,
            ..RetryPolicy::default()
        }),
    ];
    for j in bad {
        let shown = format!("{j:?}");
        let e = q.enqueue(j).await.unwrap_err();
        assert!(e.is_invalid_input(), "{shown}: {e}");
        assert!(!e.to_string().is_empty());
    }
    assert!(
        q.enqueue(NewJob::new("q", vec![0u8; 1024])).await.is_ok(),
        "the limit itself is fine"
    );
    let after = snapshot(&q).await;
    assert_eq!(
        after.0.queues["q"].waiting,
        before.0.queues["q"].waiting + 1
    );
    assert!(!after.0.queues.contains_key(""), "no queue appeared");
    q.shutdown().await.unwrap();
}

pub async fn invalid_calls_rejected<H: Harness>(mut h: H) {
    let q = h.open(&Setup::default()).await.unwrap();
    q.enqueue(NewJob::new("q", b"ok".to_vec())).await.unwrap();
    let before = snapshot(&q).await;
    let empty: [&str; 0] = [];
    assert!(q.reserve(&empty).await.unwrap_err().is_invalid_input());
    assert!(q
        .reserve(&["no such"])
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(q
        .reserve_with(ReserveRequest::new(["q", "bad/name"]))
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(q
        .list("bad name", Some(JobState::Waiting), 10)
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(q.pause("bad name").await.unwrap_err().is_invalid_input());
    assert!(q
        .requeue_dead("bad name", Selection::All)
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(q
        .purge_dead("bad name", Selection::All)
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(q
        .pause_key("bad name", "k", Duration::from_secs(1))
        .await
        .unwrap_err()
        .is_invalid_input());
    assert_eq!(snapshot(&q).await, before, "nothing changed");
    assert!("12x".parse::<durq::JobId>().unwrap_err().is_invalid_input());
    assert!("zz"
        .parse::<durq::LeaseToken>()
        .unwrap_err()
        .is_invalid_input());
    assert!("urgent"
        .parse::<durq::Priority>()
        .unwrap_err()
        .is_invalid_input());
    assert!("256"
        .parse::<durq::Priority>()
        .unwrap_err()
        .is_invalid_input());
    assert!("sometimes"
        .parse::<durq::FsyncPolicy>()
        .unwrap_err()
        .is_invalid_input());
    assert!(durq::parse_duration("5 parsecs")
        .unwrap_err()
        .is_invalid_input());
    assert!("done".parse::<JobState>().unwrap_err().is_invalid_input());
    q.shutdown().await.unwrap();
}
