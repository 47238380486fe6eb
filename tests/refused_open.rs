//! A refused open changes nothing (SPEC §3 G6, §6): every byte of every file under the data
//! directory (lock and socket files aside) is the same before and after an open that refuses —
//! the journal is verified whole before `state/` is opened or any file is created, deleted or
//! truncated. Cases: a flipped byte mid-segment, a missing segment, overlapping segments, a wrong
//! magic, a newer format version, a record with a valid checksum that does not decode, and
//! journal files holding records with no manifest. Also: the warning line when `state/` is
//! rebuilt says why, how many records were replayed and how long it took.

mod dur_util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dur_util::*;
use durq::journal::format::{encode_record, FileHeader, FORMAT_VERSION, HEADER_LEN};
use durq::Error;

const SEG: u64 = 64 << 10;

/// Every file under `dir`, recursively, with its bytes — and every directory, so a created or
/// removed directory counts too — except the lock and socket files.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("lock") || rel == Path::new("sock") {
                continue;
            }
            if p.is_dir() {
                out.insert(rel, None);
                walk(&p, root, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// A closed data dir with `n` jobs over several segments, a completed job, and a state store.
async fn make(n: usize) -> (tempfile::TempDir, Vec<(durq::JobId, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    let jobs = fill(&q, n, 700).await;
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    q.ack(&l).await.unwrap();
    q.shutdown().await.unwrap();
    assert!(segments(dir.path()).len() >= 3, "want several segments");
    (dir, jobs)
}

/// Opens `dir`, expects a refusal matching `want`, and checks no byte changed.
async fn refuses(dir: &Path, what: &str, want: impl Fn(&Error) -> bool) -> Error {
    let before = snapshot(dir);
    let err = match open(dir, SEG).await {
        Err(e) => e,
        Ok(q) => {
            q.shutdown().await.unwrap();
            panic!("{what}: the open did not refuse");
        }
    };
    assert!(want(&err), "{what}: unexpected error {err:?}");
    let after = snapshot(dir);
    for (k, v) in &before {
        match after.get(k) {
            None => panic!("{what}: {} was removed by a refused open", k.display()),
            Some(w) if w != v => panic!("{what}: {} changed by a refused open", k.display()),
            _ => {}
        }
    }
    for k in after.keys() {
        assert!(
            before.contains_key(k),
            "{what}: {} was created by a refused open",
            k.display()
        );
    }
    // A second attempt refuses the same way (nothing was "half fixed").
    let again = match open(dir, SEG).await {
        Err(e) => e,
        Ok(_) => panic!("{what}: the second open did not refuse"),
    };
    assert_eq!(again.to_string(), err.to_string(), "{what}");
    assert_eq!(snapshot(dir), before, "{what}");
    err
}

fn corrupt_at(file: &Path, offset: usize) -> impl Fn(&Error) -> bool + '_ {
    move |e| matches!(e, Error::Corrupt { file: f, offset: o, .. } if f == file && *o == offset as u64)
}

fn rewrite_manifest(dir: &Path, edit: impl Fn(&str) -> String) {
    let mpath = dir.join("journal/MANIFEST");
    let text = std::fs::read_to_string(&mpath).unwrap();
    let body = edit(&text[..text.rfind("crc ").unwrap()]);
    std::fs::write(
        &mpath,
        format!("{body}crc {:08x}\n", crc32fast::hash(body.as_bytes())),
    )
    .unwrap();
}

fn set_header(seg: &Path, edit: impl Fn(&mut [u8])) {
    let mut b = std::fs::read(seg).unwrap();
    edit(&mut b[..HEADER_LEN]);
    let crc = crc32fast::hash(&b[..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(seg, &b).unwrap();
}

#[tokio::test]
async fn flipped_byte_mid_segment() {
    let (dir, _) = make(250).await;
    let seg = segments(dir.path())[1].clone();
    let recs = records(&seg);
    let victim = recs[recs.len() / 2].clone();
    flip(&seg, victim.offset + 20);
    refuses(dir.path(), "flip", corrupt_at(&seg, victim.offset)).await;
    // With the state store gone too: still nothing is created.
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    refuses(
        dir.path(),
        "flip, no state",
        corrupt_at(&seg, victim.offset),
    )
    .await;
}

#[tokio::test]
async fn flipped_byte_in_the_first_segment_with_a_torn_tail_in_the_last() {
    // The torn tail is the one allowed change, and only once everything else verified: with
    // damage earlier on, the tail is left as it is.
    let (dir, _) = make(250).await;
    let segs = segments(dir.path());
    let last = segs.last().unwrap();
    let mut b = std::fs::read(last).unwrap();
    b.extend_from_slice(&[0x11; 9]);
    std::fs::write(last, &b).unwrap();
    let first = &segs[0];
    let victim = records(first)[2].clone();
    flip(first, victim.offset + 17);
    refuses(dir.path(), "flip + torn", corrupt_at(first, victim.offset)).await;
}

#[tokio::test]
async fn missing_segment() {
    let (dir, _) = make(250).await;
    let seg = segments(dir.path())[1].clone();
    std::fs::remove_file(&seg).unwrap();
    refuses(dir.path(), "missing", corrupt_at(&seg, 0)).await;
}

#[tokio::test]
async fn overlapping_segments() {
    let (dir, _) = make(250).await;
    let segs = segments(dir.path());
    let first_last_seq = records(&segs[0]).last().unwrap().seq;
    // The manifest says segment 2 starts earlier than segment 1 ends (their seqs overlap).
    let n2: u64 = segs[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    rewrite_manifest(dir.path(), |body| {
        body.replace(
            &format!("seg {n2} {first_last_seq}\n"),
            &format!("seg {n2} {}\n", first_last_seq - 3),
        )
    });
    refuses(dir.path(), "overlap", corrupt_at(&segs[1], 0)).await;
}

#[tokio::test]
async fn wrong_magic() {
    let (dir, _) = make(250).await;
    let seg = segments(dir.path())[1].clone();
    set_header(&seg, |h| h[..8].copy_from_slice(b"NOTDURQ\0"));
    refuses(dir.path(), "magic", corrupt_at(&seg, 0)).await;
}

#[tokio::test]
async fn newer_format_version() {
    let (dir, _) = make(250).await;
    let seg = segments(dir.path()).pop().unwrap();
    set_header(&seg, |h| {
        h[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes())
    });
    refuses(dir.path(), "version", |e| {
        matches!(e, Error::UnsupportedVersion { file, found, .. } if *file == seg && *found == FORMAT_VERSION + 1)
    })
    .await;
    // A newer manifest too.
    set_header(&seg, |h| {
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes())
    });
    rewrite_manifest(dir.path(), |b| {
        b.replace(
            "durq-manifest 1",
            &format!("durq-manifest {}", FORMAT_VERSION + 1),
        )
    });
    refuses(dir.path(), "manifest version", |e| {
        matches!(e, Error::UnsupportedVersion { .. })
    })
    .await;
}

#[tokio::test]
async fn valid_checksum_that_does_not_decode() {
    let (dir, _) = make(250).await;
    // In the first segment, so the state store (up to date) would never replay it: only a
    // verification of every record finds it.
    let seg = segments(dir.path())[0].clone();
    let recs = records(&seg);
    let victim = recs[1].clone();
    let number = FileHeader::decode(&std::fs::read(&seg).unwrap(), &seg)
        .unwrap()
        .number;
    let mut b = std::fs::read(&seg).unwrap();
    let mut frame = Vec::new();
    encode_record(
        &mut frame,
        number,
        victim.seq,
        &vec![0xFFu8; victim.body.len()],
    );
    b[victim.offset..victim.offset + victim.size].copy_from_slice(&frame);
    std::fs::write(&seg, &b).unwrap();
    let e = refuses(dir.path(), "undecodable", corrupt_at(&seg, victim.offset)).await;
    assert!(e.to_string().contains("does not decode"), "{e}");
}

#[tokio::test]
async fn journal_files_with_records_but_no_manifest() {
    let (dir, _) = make(250).await;
    std::fs::remove_file(dir.path().join("journal/MANIFEST")).unwrap();
    let e = refuses(dir.path(), "no manifest", |e| {
        matches!(e, Error::Corrupt { .. })
    })
    .await;
    assert!(e.to_string().contains("check --repair"), "{e}");
}

#[tokio::test]
async fn torn_tail_is_the_one_change_and_state_is_caught_up() {
    let (dir, jobs) = make(250).await;
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut b = std::fs::read(&seg).unwrap();
    b.extend_from_slice(&[0x22; 11]);
    std::fs::write(&seg, &b).unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_in(&q).await, jobs.len() - 1);
    q.shutdown().await.unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
}

async fn jobs_in(q: &durq::Queue) -> usize {
    q.list("q", Some(durq::JobState::Waiting), usize::MAX)
        .await
        .unwrap()
        .len()
}

/// The warning when `state/` is rebuilt names why, the records replayed and the time taken.
#[tokio::test]
async fn state_rebuild_warns_why_with_records_and_seconds() {
    log();
    let (dir, jobs) = make(250).await;
    let sdir = dir.path().join("state");
    let records: u64 = segments(dir.path())
        .iter()
        .map(|s| records(s).len() as u64)
        .sum();

    // Missing.
    std::fs::remove_dir_all(&sdir).unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_in(&q).await, jobs.len() - 1);
    q.shutdown().await.unwrap();
    let line = rebuild_line(&sdir, "was missing");
    assert!(line.contains(&format!("records={records}")), "{line}");

    // Damaged: garbage in every sled file.
    for f in files_under(&sdir) {
        std::fs::write(&f, vec![0xA5u8; 4096]).unwrap();
    }
    let q = open(dir.path(), SEG).await.unwrap();
    assert_eq!(jobs_in(&q).await, jobs.len() - 1);
    q.shutdown().await.unwrap();
    rebuild_line(&sdir, "refuses to open");

    // A clean reopen rebuilds nothing and says nothing (counting only lines about this
    // directory: other tests of this file log rebuilds of their own at the same time).
    let ours = || {
        log_lines("rebuilt the state store")
            .iter()
            .filter(|l| l.contains(&sdir.display().to_string()))
            .count()
    };
    let before = ours();
    let q = open(dir.path(), SEG).await.unwrap();
    q.shutdown().await.unwrap();
    assert_eq!(ours(), before);
}

/// The last rebuild warning for `sdir`; checks it names the reason, records and seconds.
fn rebuild_line(sdir: &Path, reason: &str) -> String {
    let lines = log_lines(&sdir.display().to_string());
    let line = lines
        .iter()
        .rev()
        .find(|l| l.contains("rebuilt the state store from the journal"))
        .unwrap_or_else(|| panic!("no rebuild warning for {}: {lines:?}", sdir.display()))
        .clone();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(reason), "want `{reason}` in {line}");
    assert!(line.contains("records="), "{line}");
    let secs = line
        .split("secs=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no secs= in {line}"));
    secs.parse::<f64>()
        .unwrap_or_else(|_| panic!("secs=`{secs}` is not a number: {line}"));
    line
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A state store older than the journal's base (restored from a backup, say) is rebuilt, and
/// the warning says it was behind the base.
#[tokio::test]
async fn state_behind_the_base_is_rebuilt_with_a_warning() {
    log();
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path(), SEG).await.unwrap();
    let mut jobs = fill(&q, 5, 100).await;
    q.shutdown().await.unwrap();
    let sdir = dir.path().join("state");
    let old_state = tempfile::tempdir().unwrap();
    for f in files_under(&sdir) {
        let to = old_state.path().join(f.strip_prefix(&sdir).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    // Enough writes, with a low rewrite threshold, for a base to be written.
    let q = durq::Queue::builder(dir.path())
        .fsync(durq::FsyncPolicy::Always)
        .segment_bytes(SEG)
        .rewrite_min_bytes(SEG)
        .open()
        .await
        .unwrap();
    let manifest = dir.path().join("journal/MANIFEST");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&manifest)
        .unwrap()
        .contains("base ")
    {
        assert!(std::time::Instant::now() < deadline, "no base was written");
        jobs.extend(fill(&q, 50, 700).await);
    }
    q.shutdown().await.unwrap();
    std::fs::remove_dir_all(&sdir).unwrap();
    std::fs::rename(old_state.path(), &sdir).unwrap_or_else(|_| {
        for f in files_under(old_state.path()) {
            let to = sdir.join(f.strip_prefix(old_state.path()).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    });
    let q = open(dir.path(), SEG).await.unwrap();
    let got = jobs_in(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(got, jobs.len());
    rebuild_line(&sdir, "behind the journal's base");
}

/// The same through the binary: commands that open a damaged directory exit 1 with one
/// sentence naming file and offset, and leave every byte as it was.
#[tokio::test]
async fn cli_commands_refuse_and_change_nothing() {
    let (dir, _) = make(250).await;
    let seg = segments(dir.path())[1].clone();
    let victim = records(&seg)[3].clone();
    flip(&seg, victim.offset + 20);
    let before = snapshot(dir.path());
    for args in [
        &["stats"][..],
        &["enqueue", "q", "{\"a\":1}"],
        &["jobs", "q"],
        &["dlq", "purge", "q", "--all"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_durq"))
            .arg("--data")
            .arg(dir.path())
            .args(args)
            .env_remove("DURQ_DATA")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&seg.display().to_string()), "{args:?}: {err}");
        assert!(err.contains(&victim.offset.to_string()), "{args:?}: {err}");
        assert_eq!(snapshot(dir.path()), before, "{args:?} changed DIR");
    }
}
