//! Opens the checked-in fixture data dir written by format version 1 (`tests/fixtures/v1`,
//! made by `examples/make_fixture.rs`: journal only, so the state store is rebuilt from its
//! base + segment) and checks the exact jobs in it. A format change that breaks old data dirs
//! fails here.

mod dur_util;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use durq::clock::ManualClock;
use durq::journal::format::FORMAT_VERSION;
use durq::{JobState, NewJob, Priority, Queue, Timestamp};

const T0: u64 = 1_800_000_000_000;
const JOBS: usize = 200;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

#[tokio::test]
async fn fixture_v1_opens_with_the_exact_jobs() {
    assert_eq!(
        FORMAT_VERSION, 1,
        "a new format version needs a new fixture dir; keep v1's test"
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&src, tmp.path());
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".base")) && names.iter().any(|n| n.ends_with(".seg")),
        "{names:?}"
    );
    assert!(durq::journal::check::check(tmp.path()).unwrap().is_clean());

    let q = Queue::builder(tmp.path())
        .clock(Arc::new(ManualClock::new(Timestamp(T0))))
        .open()
        .await
        .unwrap();
    let stats = q.stats().await.unwrap();
    let s = &stats.queues["q"];
    assert_eq!(
        (s.waiting, s.active, s.delayed, s.completed, s.dead),
        (JOBS as u64 - 12 + 5, 0, 1, 10, 1),
        "{s:?}"
    );
    let mail = &stats.queues["mail"];
    assert_eq!(mail.waiting, 5);
    assert!(mail.paused);

    let all = q.list("q", None, usize::MAX).await.unwrap();
    assert_eq!(all.len(), JOBS + 5);
    // The first twelve HIGH jobs were reserved: ten acked, one given up, one failed for retry.
    let highs: Vec<usize> = (0..JOBS).filter(|i| i % 3 == 2).take(12).collect();
    for i in 0..JOBS {
        let mut want = format!("fixture-{i:03}-").into_bytes();
        want.resize(600, b'p');
        let j = all
            .iter()
            .find(|j| j.payload == want)
            .unwrap_or_else(|| panic!("job {i} missing"));
        assert_eq!(
            j.priority,
            [Priority::LOW, Priority::NORMAL, Priority::HIGH][i % 3],
            "job {i}"
        );
        assert_eq!(
            j.key,
            (i % 10 == 0).then(|| format!("k{}", (i / 10) % 4)),
            "job {i}"
        );
        assert_eq!(j.kind, "fixture");
        assert_eq!(j.created_at, Timestamp(T0));
        let (state, attempts, errors): (JobState, u32, &[&str]) =
            match highs.iter().position(|h| *h == i) {
                Some(0..=9) => (JobState::Completed, 1, &[]),
                Some(10) => (JobState::Dead, 1, &["poison"]),
                Some(11) => (JobState::Delayed, 1, &["transient"]),
                _ => (JobState::Waiting, 0, &[]),
            };
        assert_eq!((j.state, j.attempts), (state, attempts), "job {i}");
        let got: Vec<&str> = j.errors.iter().map(|e| e.error.as_str()).collect();
        assert_eq!(got, errors, "job {i}");
    }
    for i in 0..5 {
        let t = format!("tail-{i}").into_bytes();
        assert!(
            all.iter()
                .any(|j| j.payload == t && j.state == JobState::Waiting),
            "tail-{i}"
        );
    }
    // Dedup keys survived: the same key is still a duplicate.
    let first = q.list("mail", None, usize::MAX).await.unwrap();
    let d0 = first
        .iter()
        .find(|j| j.dedup.as_deref() == Some("d0"))
        .unwrap()
        .id;
    let again = q
        .enqueue(NewJob::new("mail", b"{}".to_vec()).dedup("d0", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(again.duplicate && again.id == d0);
    // New ids do not collide with the fixture's.
    let new = q.enqueue(NewJob::new("q", b"new".to_vec())).await.unwrap();
    assert!(all.iter().all(|j| j.id != new.id));
    q.shutdown().await.unwrap();
}
