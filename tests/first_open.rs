//! A crash at any step of the very first open leaves a directory that opens as new.
//!
//! The first open creates DIR (and its parents), `journal/`, `00000001.seg`, the manifest
//! (temp, fsync, rename, fsync) and `state/`. Two ways to stop at each step:
//! - in process: the `Faults::on_step` hook copies DIR as it is at every step (plus the
//!   states between steps that a kill can leave: a segment file empty or cut inside its
//!   header, a temporary manifest cut short), and each copy must open as a new, empty store
//!   that takes writes and keeps them;
//! - a real SIGKILL: a child process (this test binary, `first_open_child`) opens a fresh DIR
//!   and kills itself at the step; the parent then opens the directory.

mod dur_util;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use dur_util::*;
use durq::journal::faults::Faults;
use durq::NewJob;

const SEG: u64 = 64 << 10;

/// The two tests run one at a time: a child forked by one (between fork and exec) shares the
/// flock of a directory the other has just opened, so the other's reopen could see it held.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The steps of a first open, in order.
const STEPS: &[&str] = &[
    "open:dir-created",
    "open:journal-dir-created",
    "open:segment-created",
    "open:segment-synced",
    "manifest:tmp-written",
    "manifest:renamed",
    "open:manifest-written",
    "open:state-created",
    "recovery:replayed",
];

/// Copies DIR at every step.
struct Snap {
    dir: PathBuf,
    root: PathBuf,
    taken: Mutex<Vec<(String, PathBuf)>>,
}

impl Faults for Snap {
    fn on_step(&self, step: &str) {
        let mut taken = self.taken.lock().unwrap();
        let to = self
            .root
            .join(format!("{:02}-{}", taken.len(), step.replace(':', "_")));
        copy_tree(&self.dir, &to);
        taken.push((step.to_string(), to));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name == "lock" || name == "sock" {
            continue;
        }
        if p.is_dir() {
            copy_tree(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// `dir` opens as a new, empty store; it takes a write, keeps it across a reopen, and `check`
/// finds it clean.
async fn opens_as_new(dir: &Path, what: &str) {
    if dir.join("journal").is_dir() && !dir.join("journal/MANIFEST").exists() {
        // `durq check` agrees: an interrupted first open is not damage.
        let r = durq::journal::check::check(dir).unwrap();
        assert!(r.is_clean(), "{what}: {r}");
        assert!(
            r.notes
                .iter()
                .any(|n| n.contains("first open was interrupted")),
            "{what}: {r}"
        );
    }
    let q = open(dir, SEG)
        .await
        .unwrap_or_else(|e| panic!("{what}: {} does not open: {e}", dir.display()));
    let stats = q.stats().await.unwrap();
    assert!(
        stats
            .queues
            .values()
            .all(|s| s.waiting + s.delayed + s.active + s.dead + s.completed == 0),
        "{what}: not empty: {stats:?}"
    );
    let id = q
        .enqueue(NewJob::new("q", b"after".to_vec()))
        .await
        .unwrap()
        .id;
    q.shutdown().await.unwrap();
    let q = open(dir, SEG)
        .await
        .unwrap_or_else(|e| panic!("{what}: reopen fails: {e}"));
    let got = jobs(&q).await;
    q.shutdown().await.unwrap();
    assert_eq!(got.len(), 1, "{what}");
    assert_eq!(got.get(&id).map(|p| &p[..]), Some(&b"after"[..]), "{what}");
    let report = durq::journal::check::check(dir).unwrap();
    assert!(report.is_clean(), "{what}: {report}");
}

#[tokio::test]
async fn every_step_of_the_first_open_leaves_a_directory_that_opens_as_new() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/data");
    let snap = Arc::new(Snap {
        dir: dir.clone(),
        root: tmp.path().join("snaps"),
        taken: Mutex::new(Vec::new()),
    });
    let q = durq::Queue::builder(&dir)
        .fsync(durq::FsyncPolicy::Always)
        .segment_bytes(SEG)
        .faults(snap.clone())
        .open()
        .await
        .unwrap();
    q.shutdown().await.unwrap();
    let taken = snap.taken.lock().unwrap().clone();
    let names: Vec<&str> = taken.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, STEPS, "the first open's steps");

    let mut states: Vec<(String, PathBuf)> = taken.clone();
    // States between steps: the segment file created but its header not (wholly) written, and
    // the temporary manifest cut short.
    let seg_step = &taken[2].1;
    for cut in [0u64, 17, 39] {
        let to = tmp.path().join(format!("cut-seg-{cut}"));
        copy_tree(seg_step, &to);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(to.join("journal/00000001.seg"))
            .unwrap();
        f.set_len(cut).unwrap();
        states.push((format!("segment cut to {cut} bytes"), to));
    }
    let zeroed = tmp.path().join("zero-tail-seg");
    copy_tree(seg_step, &zeroed);
    {
        let p = zeroed.join("journal/00000001.seg");
        let mut b = std::fs::read(&p).unwrap();
        b.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&p, b).unwrap();
    }
    states.push(("segment with a zero-filled tail".into(), zeroed));
    let tmp_step = &taken[4].1;
    let tmp_manifest = std::fs::read(tmp_step.join("journal/MANIFEST.tmp")).unwrap();
    for cut in [0, tmp_manifest.len() / 2] {
        let to = tmp.path().join(format!("cut-manifest-{cut}"));
        copy_tree(tmp_step, &to);
        std::fs::write(to.join("journal/MANIFEST.tmp"), &tmp_manifest[..cut]).unwrap();
        states.push((format!("temporary manifest cut to {cut} bytes"), to));
    }
    for (what, path) in &states {
        opens_as_new(path, what).await;
    }
}

// ------------------------------------------------------------------ real SIGKILL

struct KillAt(String);

impl Faults for KillAt {
    fn on_step(&self, step: &str) {
        if step == self.0 {
            // SAFETY: sending a signal to our own pid.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }
}

/// The child: opens `DURQ_FIRST_DIR` and kills itself at `DURQ_FIRST_STEP`.
#[test]
fn first_open_child() {
    if std::env::var("DURQ_FIRST_CHILD").as_deref() != Ok("1") {
        return;
    }
    let dir = PathBuf::from(std::env::var("DURQ_FIRST_DIR").unwrap());
    let step = std::env::var("DURQ_FIRST_STEP").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let q = durq::Queue::builder(&dir)
            .fsync(durq::FsyncPolicy::Always)
            .segment_bytes(SEG)
            .faults(Arc::new(KillAt(step.clone())))
            .open()
            .await
            .unwrap();
        q.shutdown().await.unwrap();
    });
    panic!("step {step} was never reached");
}

#[tokio::test]
async fn sigkill_at_every_step_of_the_first_open_leaves_a_directory_that_opens_as_new() {
    let _serial = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    for step in STEPS {
        let dir = tmp.path().join(step.replace(':', "_")).join("x/data");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "first_open_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DURQ_FIRST_CHILD", "1")
            .env("DURQ_FIRST_DIR", &dir)
            .env("DURQ_FIRST_STEP", step)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "the child was not killed at {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        opens_as_new(&dir, &format!("SIGKILL at {step}")).await;
    }
}
