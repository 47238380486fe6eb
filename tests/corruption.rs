//! Damaged journals: torn tails are cut with a warning; damage before the tail refuses to open
//! (naming file + offset, changing nothing); `check` reports it and `repair` salvages every
//! intact record; missing segments, newer versions and a lost state store.

mod dur_util;

use dur_util::*;
use durq::journal::check::{check, repair, ProblemKind};
use durq::journal::format::{FileHeader, FORMAT_VERSION, HEADER_LEN};
use durq::Error;

const SEG: u64 = 64 << 10;

/// A data dir with `n` jobs of `len` bytes, closed cleanly.
async fn make(n: usize, len: usize) -> (tempfile::TempDir, Vec<(durq::JobId, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    let jobs = fill(&q, n, len).await;
    q.shutdown().await.unwrap();
    (dir, jobs)
}

#[tokio::test]
async fn flipped_byte_in_last_record_is_cut_off_with_a_warning() {
    log();
    let (dir, jobs) = make(20, 100).await;
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let last = recs.last().unwrap().clone();
    let lost = ids_in(&last.body);
    flip(&seg, last.offset + 20);
    let report = check(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].kind, ProblemKind::TornTail);
    assert_eq!(report.problems[0].offset, Some(last.offset as u64));
    assert_eq!(report.problems[0].bytes, Some(last.size as u64));

    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), last.offset as u64);
    for (id, p) in &jobs {
        if lost.contains(id) {
            assert!(!got.contains_key(id));
        } else {
            assert_eq!(got.get(id), Some(p));
        }
    }
    let name = seg.display().to_string();
    let lines = log_lines(&name);
    let warn = lines
        .iter()
        .find(|l| l.contains("torn tail"))
        .unwrap_or_else(|| panic!("no warning naming {name}: {lines:?}"));
    assert!(warn.contains(&format!("offset={}", last.offset)), "{warn}");
    assert!(
        warn.contains(&format!("bytes_dropped={}", last.size)),
        "{warn}"
    );
    assert!(check(dir.path()).unwrap().is_clean());
}

async fn jobs_of(q: &durq::Queue) -> std::collections::BTreeMap<durq::JobId, Vec<u8>> {
    jobs(q).await
}

#[tokio::test]
async fn middle_corruption_refuses_changes_nothing_and_repair_salvages_the_rest() {
    let (dir, jobs) = make(120, 2000).await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    // A record in the middle of the second segment.
    let seg = segs[1].clone();
    let recs = records(&seg);
    let victim = recs[recs.len() / 2].clone();
    let lost = ids_in(&victim.body);
    flip(&seg, victim.offset + 30);
    let before = journal_bytes(dir.path());

    match open(dir.path(), SEG).await {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, victim.offset as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        journal_bytes(dir.path()),
        before,
        "a refused open must not change the journal"
    );

    let report = check(dir.path()).unwrap();
    assert!(!report.is_clean());
    let p = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Corrupt)
        .unwrap();
    assert_eq!(
        (p.file.clone(), p.offset),
        (seg.clone(), Some(victim.offset as u64))
    );
    assert!(
        report
            .to_string()
            .contains(&format!("offset {}", victim.offset)),
        "{report}"
    );
    assert_eq!(
        journal_bytes(dir.path()),
        before,
        "check must not change the journal"
    );

    let fixed = repair(dir.path()).unwrap();
    assert!(fixed.is_healthy(), "{fixed}");
    let summary = fixed.repair.as_ref().unwrap();
    assert_eq!(summary.records_lost, 1, "{fixed}");
    assert!(seg.with_extension("seg.damaged").exists());
    assert!(!dir.path().join("state").exists());
    serde_json::to_string(&fixed).unwrap();

    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    for (id, p) in &jobs {
        if lost.contains(id) {
            assert!(!got.contains_key(id));
        } else {
            assert_eq!(got.get(id), Some(p), "job {id} lost by repair");
        }
    }
    // The repaired journal takes new writes and survives another reopen.
    let more = fill(&q, 3, 10).await;
    q.shutdown().await.unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    assert_eq!(got.len(), jobs.len() - lost.len() + more.len());
    q.shutdown().await.unwrap();
    assert!(check(dir.path()).unwrap().is_clean());
}

#[tokio::test]
async fn zero_filled_tail_is_a_torn_tail() {
    let (dir, jobs) = make(10, 50).await;
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut b = std::fs::read(&seg).unwrap();
    b.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, b).unwrap();
    let report = check(dir.path()).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::TornTail, "{report}");
    assert_eq!(report.problems[0].bytes, Some(4096));
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_of(&q).await.len(), jobs.len());
    q.shutdown().await.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}

#[tokio::test]
async fn absurd_length_at_the_tail_is_cut_and_in_the_middle_refuses() {
    let (dir, jobs) = make(10, 50).await;
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    // Middle first: refuses.
    let mut b = std::fs::read(&seg).unwrap();
    let mid = recs[4].offset;
    let saved = b[mid..mid + 4].to_vec();
    b[mid..mid + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&seg, &b).unwrap();
    match open(dir.path(), SEG).await {
        Err(Error::Corrupt { offset, reason, .. }) => {
            assert_eq!(offset, mid as u64);
            assert!(reason.contains("absurd"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Tail: cut off.
    b[mid..mid + 4].copy_from_slice(&saved);
    let last = recs.last().unwrap().offset;
    b[last..last + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&seg, &b).unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_of(&q).await.len(), jobs.len() - 1);
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_middle_segment_refuses_and_repair_keeps_the_others() {
    let (dir, jobs) = make(120, 2000).await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let gone: Vec<durq::JobId> = records(&segs[1])
        .iter()
        .flat_map(|r| ids_in(&r.body))
        .collect();
    std::fs::remove_file(&segs[1]).unwrap();
    match open(dir.path(), SEG).await {
        Err(Error::Corrupt { file, .. }) => assert_eq!(file, segs[1]),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let report = check(dir.path()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingFile && p.file == segs[1]),
        "{report}"
    );
    let fixed = repair(dir.path()).unwrap();
    assert!(fixed.is_healthy(), "{fixed}");
    assert_eq!(
        fixed.repair.as_ref().unwrap().records_lost,
        gone.len() as u64
    );
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    for (id, p) in &jobs {
        if !gone.contains(id) {
            assert_eq!(got.get(id), Some(p));
        }
    }
    assert_eq!(got.len(), jobs.len() - gone.len());
}

#[tokio::test]
async fn newer_format_version_is_refused_and_never_repaired() {
    let (dir, _) = make(3, 10).await;
    let seg = segments(dir.path()).pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32fast::hash(&b[..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &b).unwrap();
    assert!(FileHeader::decode(&b[..HEADER_LEN], &seg).is_err());
    match open(dir.path(), SEG).await {
        Err(Error::UnsupportedVersion {
            file,
            found,
            supported,
        }) => {
            assert_eq!(
                (file, found, supported),
                (seg.clone(), FORMAT_VERSION + 1, FORMAT_VERSION)
            );
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    let report = check(dir.path()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::UnsupportedVersion),
        "{report}"
    );
    let before = journal_bytes(dir.path());
    assert!(matches!(
        repair(dir.path()),
        Err(Error::UnsupportedVersion { .. })
    ));
    assert_eq!(journal_bytes(dir.path()), before);

    // A newer manifest is refused the same way.
    std::fs::write(&seg, {
        let mut c = b.clone();
        c[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&c[..32]);
        c[32..36].copy_from_slice(&crc.to_le_bytes());
        c
    })
    .unwrap();
    let mpath = dir.path().join("journal/MANIFEST");
    let text = std::fs::read_to_string(&mpath).unwrap();
    let body = text[..text.rfind("crc ").unwrap()].replace("durq-manifest 1", "durq-manifest 2");
    std::fs::write(
        &mpath,
        format!("{body}crc {:08x}\n", crc32fast::hash(body.as_bytes())),
    )
    .unwrap();
    assert!(matches!(
        open(dir.path(), SEG).await,
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
}

#[tokio::test]
async fn deleted_or_damaged_state_store_is_rebuilt() {
    let (dir, jobs) = make(30, 100).await;
    {
        let q = open(dir.path(), SEG).await.unwrap();
        let l = q.reserve(&["q"]).await.unwrap().unwrap();
        q.ack(&l).await.unwrap();
        q.shutdown().await.unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    let stats = q.stats().await.unwrap();
    q.shutdown().await.unwrap();
    assert_eq!(got.len(), jobs.len());
    for (id, p) in &jobs {
        assert_eq!(got.get(id), Some(p));
    }
    assert_eq!(stats.queues["q"].completed, 1);
    assert_eq!(stats.queues["q"].waiting, jobs.len() as u64 - 1);

    // Garbage in every sled file: rebuilt too.
    for e in walk(&dir.path().join("state")) {
        std::fs::write(&e, vec![0xA5u8; 4096]).unwrap();
    }
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(got.len(), jobs.len());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn check_and_repair_refuse_while_the_directory_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    assert!(matches!(check(dir.path()), Err(Error::Locked { .. })));
    assert!(matches!(repair(dir.path()), Err(Error::Locked { .. })));
    q.shutdown().await.unwrap();
    assert!(check(dir.path()).unwrap().is_clean());
}

#[tokio::test]
async fn undecodable_record_with_a_valid_checksum_is_reported_and_repaired() {
    let (dir, jobs) = make(10, 50).await;
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    let victim = recs[3].clone();
    let lost = ids_in(&victim.body);
    let number = FileHeader::decode(&std::fs::read(&seg).unwrap(), &seg)
        .unwrap()
        .number;
    // Re-frame the same seq with a body of the same length that does not decode.
    let mut b = std::fs::read(&seg).unwrap();
    let body = vec![0xFFu8; victim.body.len()];
    let mut frame = Vec::new();
    durq::journal::format::encode_record(&mut frame, number, victim.seq, &body);
    b[victim.offset..victim.offset + victim.size].copy_from_slice(&frame);
    std::fs::write(&seg, &b).unwrap();
    // The state store is up to date, so an open does not decode old records; a rebuild does.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    match open(dir.path(), SEG).await {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (seg.clone(), victim.offset as u64));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let report = check(dir.path()).unwrap();
    let p = &report.problems[0];
    assert_eq!(
        (p.kind, p.offset),
        (ProblemKind::Undecodable, Some(victim.offset as u64)),
        "{report}"
    );
    assert!(repair(dir.path()).unwrap().is_healthy());
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(got.len(), jobs.len() - lost.len());
}

#[tokio::test]
async fn damaged_manifest_is_rebuilt_from_file_headers() {
    let (dir, jobs) = make(120, 2000).await;
    let mpath = dir.path().join("journal/MANIFEST");
    flip(&mpath, 3);
    assert!(matches!(
        open(dir.path(), SEG).await,
        Err(Error::Corrupt { .. })
    ));
    let report = check(dir.path()).unwrap();
    assert_eq!(report.problems[0].kind, ProblemKind::Manifest, "{report}");
    let fixed = repair(dir.path()).unwrap();
    assert!(fixed.is_healthy(), "{fixed}");
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_of(&q).await.len(), jobs.len());
    q.shutdown().await.unwrap();
}

/// A power cut during write-back of an unsynced write can lose one sector while later sectors
/// of the same write reached the disk: the last segment then reads as a zero sector followed by
/// intact records. That is a torn tail (nothing after the lost sector was durable), cut off with
/// a warning; a flipped byte at the same place still refuses (tested above).
#[tokio::test]
async fn lost_sector_before_intact_records_in_the_last_segment_is_a_torn_tail() {
    log();
    let (dir, jobs) = make(40, 300).await;
    let seg = segments(dir.path()).pop().unwrap();
    let recs = records(&seg);
    assert!(
        recs.len() >= 10,
        "want records after the gap: {}",
        recs.len()
    );
    // The first whole sector inside the record two thirds of the way in.
    let victim = recs[recs.len() * 2 / 3].clone();
    let sector = (victim.offset as u64).div_ceil(512) * 512;
    let end = (recs.last().unwrap().offset + recs.last().unwrap().size) as u64;
    assert!(
        sector + 512 < end,
        "a whole sector must lie before the last record"
    );
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[sector as usize..sector as usize + 512].fill(0);
    std::fs::write(&seg, &bytes).unwrap();
    // The first record the zero sector touches is where the tail starts.
    let cut = recs
        .iter()
        .find(|r| (r.offset + r.size) as u64 > sector)
        .unwrap()
        .clone();
    let lost: Vec<durq::JobId> = recs
        .iter()
        .filter(|r| r.offset >= cut.offset)
        .flat_map(|r| ids_in(&r.body))
        .collect();
    assert!(lost.len() >= 2, "the gap must hide intact records after it");

    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), cut.offset as u64);
    for (id, p) in &jobs {
        if lost.contains(id) {
            assert!(!got.contains_key(id), "{id} was after the lost sector");
        } else {
            assert_eq!(got.get(id), Some(p), "{id} was before the lost sector");
        }
    }
    let name = seg.display().to_string();
    let lines = log_lines(&name);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("torn tail") && l.contains("never reached the disk")),
        "no torn-tail warning naming the lost sector: {lines:?}"
    );
    assert!(check(dir.path()).unwrap().is_clean());
}

/// sled 0.34 panics on some damaged files (seen in the kill soak: "cannot find pid … in
/// view_for_key") instead of returning an error. A panic while the state store is opened,
/// replayed or loaded rebuilds it from the journal (the truth), once, with a warning.
#[tokio::test]
async fn a_panic_in_the_state_store_rebuilds_it_from_the_journal() {
    struct PanicOnce(std::sync::atomic::AtomicBool);
    impl durq::journal::faults::Faults for PanicOnce {
        fn on_step(&self, step: &str) {
            if step == "open:state-created"
                && !self.0.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("cannot find pid 3 in view_for_key (simulated sled panic)");
            }
        }
    }
    log();
    let (dir, jobs) = make(30, 200).await;
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let hook = std::sync::Arc::new(PanicOnce(Default::default()));
    let q = durq::Queue::builder(dir.path())
        .segment_bytes(SEG)
        .faults(hook.clone())
        .open()
        .await
        .expect("a panicking state store is rebuilt, not a refused open");
    assert!(
        hook.0.load(std::sync::atomic::Ordering::SeqCst),
        "the hook never fired"
    );
    let got = jobs_of(&q).await;
    q.shutdown().await.unwrap();
    for (id, p) in &jobs {
        assert_eq!(got.get(id), Some(p));
    }
    let lines = log_lines("the state store panicked");
    assert!(!lines.is_empty(), "no warning about the panic");
}
