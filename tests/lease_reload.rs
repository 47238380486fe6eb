//! A heartbeat-extended lease survives the engine's internal reload (after a failed append).
//!
//! Heartbeats are not journaled, so the state store holds each lease's expiry as reserved. When
//! an append fails (ENOSPC through the fault hook) the engine reloads its indexes from the
//! store; the expiry a heartbeat extended must survive, while a lease nobody extended still
//! runs out on time. Time is a [`ManualClock`]: no sleeping.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::clock::ManualClock;
use durq::journal::faults::{Faults, WriteFault};
use durq::{Error, FsyncPolicy, JobState, NewJob, Queue, ReserveRequest, Timestamp};

#[derive(Default)]
struct Enospc(AtomicBool);

impl Faults for Enospc {
    fn on_write(&self, _file: &Path, _len: usize) -> WriteFault {
        if self.0.load(Ordering::SeqCst) {
            return WriteFault::Fail(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        WriteFault::None
    }
}

async fn enqueue_eventually(q: &Queue, p: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match q.enqueue(NewJob::new("other", p.to_vec())).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                assert!(matches!(e, Error::Io { .. }), "{e}");
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("writes did not resume: {e}"),
        }
    }
}

async fn run(policy: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let fault = Arc::new(Enospc::default());
    let clock = Arc::new(ManualClock::new(Timestamp(1_800_000_000_000)));
    let q = Queue::builder(dir.path())
        .fsync(policy)
        .faults(fault.clone())
        .clock(clock.clone())
        .open()
        .await
        .unwrap();
    q.enqueue(NewJob::new("q", b"beat".to_vec())).await.unwrap();
    q.enqueue(NewJob::new("q", b"idle".to_vec())).await.unwrap();
    let req = || ReserveRequest::new(["q"]).lease(Duration::from_secs(10));
    let beat = q.reserve_with(req()).await.unwrap().unwrap();
    let idle = q.reserve_with(req()).await.unwrap().unwrap();
    assert_eq!(beat.job.payload, b"beat");

    let until = q.heartbeat(&beat, Duration::from_secs(120)).await.unwrap();
    assert_eq!(until, Timestamp(1_800_000_000_000 + 120_000));

    // A failed append: the engine reloads its state from the store.
    fault.0.store(true, Ordering::SeqCst);
    assert!(q
        .enqueue(NewJob::new("other", b"x".to_vec()))
        .await
        .is_err());
    fault.0.store(false, Ordering::SeqCst);
    enqueue_eventually(&q, b"y").await;

    // Past the reserved 10 s, well within the heartbeat's 120 s.
    clock.advance(Duration::from_secs(30));
    let active = q.list("q", Some(JobState::Active), 10).await.unwrap();
    let ids: Vec<_> = active.iter().map(|j| j.id).collect();
    assert_eq!(
        ids,
        vec![beat.job.id],
        "after the reload the extended lease must hold and the idle one must have run out"
    );
    q.ack(&beat)
        .await
        .expect("the heartbeat-extended lease was expired early by the reload");
    // The idle lease ran out: its job is waiting again, attempt counted.
    let again = q.get(idle.job.id).await.unwrap().unwrap();
    assert_eq!(again.state, JobState::Waiting);
    assert_eq!(again.errors.len(), 1);

    // A heartbeat after the reload still extends, and the extension still expires in time.
    let l = q.reserve_with(req()).await.unwrap().unwrap();
    q.heartbeat(&l, Duration::from_secs(60)).await.unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(q
        .list("q", Some(JobState::Active), 10)
        .await
        .unwrap()
        .is_empty());
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_survives_reload_everysec() {
    run(FsyncPolicy::EverySec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_survives_reload_always() {
    run(FsyncPolicy::Always).await;
}
