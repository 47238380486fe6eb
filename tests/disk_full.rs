//! A real full disk: a small ext4 image, loop-mounted, filled by a filler file.
//!
//! For each place the disk can run full — an append, a segment roll, a manifest write, a rewrite
//! (base write), the state store — the call that could not be stored gets the typed
//! [`Error::DiskFull`] naming the data directory; reads (`stats`, `jobs`, `get`) keep working;
//! every acknowledged job is still there (also after a reopen); and once the filler is deleted
//! the next write succeeds without a reopen. The last test runs the real `durq serve` binary:
//! HTTP 507 with a JSON error naming the data directory while full, 201 again after.
//!
//! sled 0.34 never recovers from a failed write in-process (and a flush racing one can wait
//! forever), so the store keeps sled off a nearly full disk (`store::WRITE_ROOM`); a watchdog
//! fails a test that hangs anyway. `DURQ_DISK_FULL=0` skips these tests. Needs root and `mount`. Without them each test prints why it is skipped;
//! set `DURQ_REQUIRE_LOOP=1` to make that a failure instead. Tests run one at a time (one loop
//! device each) and always unmount in a drop guard.

mod dur_util;
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::journal::faults::{Faults, WriteFault};
use durq::journal::manifest::Manifest;
use durq::{Error, FsyncPolicy, JobId, NewJob, Queue};

/// One loop-mounted file system at a time (a plain mutex: held for a whole test, awaits
/// included, which is what it is for).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Size of the test file system.
const DISK_BYTES: u64 = 64 << 20;

/// A loop-mounted ext4 image; unmounted on drop.
struct LoopDisk {
    mnt: PathBuf,
    _tmp: tempfile::TempDir,
    done: Arc<std::sync::atomic::AtomicBool>,
}

/// How long one full-disk test may run before the watchdog ends the process: a hang here must
/// fail CI with a message, not stall it.
const WATCHDOG: Duration = Duration::from_secs(240);

/// Ends the process if `done` is not set within [`WATCHDOG`].
fn watchdog(done: Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < WATCHDOG {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "a full-disk test ran for more than {} s: it hangs (FAILED)",
            WATCHDOG.as_secs()
        );
        std::process::exit(101);
    });
}

fn skip(reason: &str) -> Option<LoopDisk> {
    if std::env::var_os("DURQ_REQUIRE_LOOP").is_some() {
        panic!("DURQ_REQUIRE_LOOP is set but the loop-mount test cannot run: {reason}");
    }
    eprintln!("SKIPPED (real full-disk test): {reason}");
    None
}

impl LoopDisk {
    fn new() -> Option<LoopDisk> {
        if std::env::var_os("DURQ_DISK_FULL").is_some_and(|v| v == "0") {
            return skip("DURQ_DISK_FULL=0");
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return skip("not running as root (mount needs it)");
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(DISK_BYTES)
            .unwrap();
        match Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img)
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => return skip(&format!("mkfs.ext4 failed: {s}")),
            Err(e) => return skip(&format!("mkfs.ext4 is unavailable: {e}")),
        }
        match Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return skip(&format!(
                    "mount -o loop failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return skip(&format!("mount is unavailable: {e}")),
        }
        let _ = dur_util::log(); // capture the store's log from the start, for dump_log
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        watchdog(done.clone());
        Some(LoopDisk {
            mnt,
            _tmp: tmp,
            done,
        })
    }

    fn data(&self) -> PathBuf {
        self.mnt.join("data")
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..100 {
            let ok = Command::new("umount")
                .arg(&self.mnt)
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

/// A file that takes every free block of the file system.
struct Filler {
    path: PathBuf,
}

impl Filler {
    fn fill(mnt: &Path) -> Filler {
        let f = Filler {
            path: mnt.join("filler"),
        };
        f.top_up();
        f
    }

    /// Takes whatever became free again (ext4 gives back the blocks it had preallocated for
    /// a file when that file is closed).
    fn top_up(&self) {
        let path = &self.path;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let buf = vec![0xa5u8; chunk];
            loop {
                match f.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if Error::is_disk_full_io(&e) => break,
                    Err(e) => panic!("filler write failed: {e}"),
                }
            }
        }
        f.sync_all().unwrap();
    }

    fn remove(self) {
        std::fs::remove_file(&self.path).unwrap();
        let d = std::fs::File::open(self.path.parent().unwrap()).unwrap();
        d.sync_all().unwrap();
    }
}

/// Where the disk is made to run full: at the first write of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    /// The header of a new segment (a roll).
    Roll,
    /// `MANIFEST.tmp` (a roll's, after its segment was made).
    Manifest,
    /// A base file (a rewrite).
    Base,
}

/// The journal's fault hook used only to *time* a real full disk: when the journal is about to
/// make its first write at the armed site, the hook fills the file system (the write then
/// meets a real ENOSPC from the kernel). It never injects an error itself.
#[derive(Default)]
struct Trigger {
    armed: std::sync::Mutex<Option<(Site, PathBuf)>>,
    filler: std::sync::Mutex<Option<Filler>>,
    seen: std::sync::Mutex<Vec<Site>>,
}

impl Trigger {
    fn arm(&self, site: Site, mnt: &Path) {
        *self.armed.lock().unwrap() = Some((site, mnt.to_path_buf()));
    }
    fn filled(&self) -> bool {
        self.filler.lock().unwrap().is_some()
    }
    fn take_filler(&self) -> Filler {
        self.filler
            .lock()
            .unwrap()
            .take()
            .expect("the disk was filled")
    }
    fn seen(&self, site: Site) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| **s == site)
            .count()
    }
}

impl Faults for Trigger {
    fn on_write(&self, file: &Path, _len: usize) -> WriteFault {
        let name = file.file_name().unwrap().to_string_lossy();
        let site = if name == "MANIFEST.tmp" {
            Some(Site::Manifest)
        } else if name.ends_with(".base") {
            Some(Site::Base)
        } else if name.ends_with(".seg") && !file.exists() {
            Some(Site::Roll)
        } else {
            None
        };
        if let Some(f) = self.filler.lock().unwrap().as_ref() {
            f.top_up();
        }
        if let Some(site) = site {
            self.seen.lock().unwrap().push(site);
            let mut armed = self.armed.lock().unwrap();
            if armed.as_ref().is_some_and(|(s, _)| *s == site) {
                let (_, mnt) = armed.take().unwrap();
                *self.filler.lock().unwrap() = Some(Filler::fill(&mnt));
            }
        }
        WriteFault::None
    }
}

type Acked = Vec<(JobId, Vec<u8>)>;

async fn open(data: &Path, seg: u64, rewrite: u64, watch: Option<Arc<Trigger>>) -> Queue {
    let mut b = Queue::builder(data)
        .fsync(FsyncPolicy::Always)
        .segment_bytes(seg)
        .rewrite_min_bytes(rewrite);
    if let Some(w) = watch {
        b = b.faults(w);
    }
    b.open().await.unwrap()
}

async fn enqueue(q: &Queue, i: usize) -> durq::Result<(JobId, Vec<u8>)> {
    enqueue_sized(q, i, 200).await
}

async fn enqueue_sized(q: &Queue, i: usize, len: usize) -> durq::Result<(JobId, Vec<u8>)> {
    let p = dur_util::payload(i, len);
    q.enqueue(NewJob::new("q", p.clone()))
        .await
        .map(|e| (e.id, p))
}

/// Enqueues until the disk is full; returns what was acknowledged and the error.
async fn enqueue_until_full(q: &Queue, from: usize) -> (Acked, Error) {
    let mut acked = Vec::new();
    for i in from..from + 50_000 {
        // Big payloads: fewer fsyncs to fill what is left.
        match enqueue_sized(q, i, 16 << 10).await {
            Ok(a) => acked.push(a),
            Err(e) => return (acked, e),
        }
    }
    panic!("the disk never ran full");
}

fn assert_disk_full(e: &Error, data: &Path) {
    match e {
        Error::DiskFull { dir, .. } => assert_eq!(dir, data, "{e}"),
        other => panic!("expected DiskFull, got {other:?}"),
    }
    assert!(
        e.to_string().contains(&data.display().to_string()),
        "the message names the data directory: {e}"
    );
}

/// stats, jobs and get see exactly the acknowledged jobs.
async fn check_reads(q: &Queue, acked: &Acked) {
    let want: BTreeMap<JobId, Vec<u8>> = acked.iter().cloned().collect();
    let got: BTreeMap<JobId, Vec<u8>> = match q.list("q", None, usize::MAX).await {
        Ok(v) => v.into_iter().map(|j| (j.id, j.payload)).collect(),
        Err(e) => {
            dump_log();
            panic!("jobs failed: {e}");
        }
    };
    assert_eq!(
        got.len(),
        want.len(),
        "jobs lists exactly the acknowledged jobs"
    );
    assert!(got == want, "jobs returns every acknowledged payload");
    let st = q.stats().await.unwrap();
    let s = &st.queues["q"];
    assert_eq!(
        s.waiting + s.active + s.completed,
        want.len() as u64,
        "stats counts every acknowledged job"
    );
    for (id, p) in acked.iter().step_by(7).chain(acked.last()) {
        let j = q
            .get(*id)
            .await
            .unwrap()
            .expect("get finds an acknowledged job");
        assert_eq!(&j.payload, p);
    }
}

/// Prints what the store logged (on a failure).
fn dump_log() {
    for l in dur_util::log_lines("durq") {
        eprintln!("LOG {}", &l[..l.len().min(400)]);
    }
}

fn seg_count(data: &Path) -> usize {
    dur_util::segments(data).len()
}

fn manifest(data: &Path) -> Manifest {
    Manifest::load(&data.join("journal")).unwrap().unwrap()
}

/// After the filler is gone: the very next write succeeds (no reopen), then reserve/ack work.
async fn heals(q: &Queue, acked: &mut Acked, i: usize) {
    let a = enqueue(q, i)
        .await
        .expect("the first write after space returns succeeds without a reopen");
    acked.push(a);
    let l = q.reserve(&["q"]).await.unwrap().unwrap();
    assert_eq!(l.job.id, acked[0].0, "FIFO order survives the full disk");
    q.ack(&l).await.unwrap();
}

async fn reopened_has_all(data: &Path, acked: &Acked) {
    let q = open(data, 64 << 20, 64 << 20, None).await;
    check_reads(&q, acked).await;
    assert_eq!(
        q.get(acked[0].0).await.unwrap().unwrap().state,
        durq::JobState::Completed
    );
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the serial lock is meant to span the test
async fn full_on_append_then_heals_without_reopen() {
    let _serial = serial();
    let Some(disk) = LoopDisk::new() else { return };
    let _log = dur_util::log();
    let data = disk.data();
    let q = open(&data, 64 << 20, 64 << 20, None).await;
    let mut acked = dur_util::fill(&q, 50, 200).await;

    let filler = Filler::fill(&disk.mnt);
    let (more, err) = enqueue_until_full(&q, 1000).await;
    acked.extend(more);
    assert_disk_full(&err, &data);
    // Not poisoned: later writes are refused the same way, for the same reason (or stored, if
    // space was freed meanwhile, such as the state store's reserve).
    let (more, err) = enqueue_until_full(&q, 90_000).await;
    acked.extend(more);
    assert_disk_full(&err, &data);
    let batch = (0..3)
        .map(|i| NewJob::new("q", dur_util::payload(91_000 + i, 200)))
        .collect();
    assert_disk_full(&q.enqueue_batch(batch).await.unwrap_err(), &data);
    check_reads(&q, &acked).await;

    // A reopen on the still-full disk sees every acknowledged job, and still refuses writes.
    q.shutdown().await.unwrap();
    drop(q);
    let q = open(&data, 64 << 20, 64 << 20, None).await;
    check_reads(&q, &acked).await;
    // (Closing and opening may have freed a few blocks: whatever is acknowledged counts.)
    let (more, err) = enqueue_until_full(&q, 92_000).await;
    acked.extend(more);
    assert_disk_full(&err, &data);
    check_reads(&q, &acked).await;

    filler.remove();
    heals(&q, &mut acked, 150_000).await;
    check_reads(&q, &acked).await;
    // The state store, which could not write either, catches up by itself (reopening sled,
    // whose write errors are sticky, and replaying the journal into it).
    let dir = data.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dur_util::log_lines("state store caught up")
        .iter()
        .any(|l| l.contains(&dir))
    {
        if Instant::now() > deadline {
            for l in dur_util::log_lines("state store") {
                eprintln!("LOG {l}");
            }
            panic!("the state store never caught up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check_reads(&q, &acked).await;
    for l in dur_util::log_lines("state store") {
        eprintln!("LOG {l}");
    }
    q.shutdown().await.unwrap();
    drop(q);
    reopened_has_all(&data, &acked).await;
}

/// Enqueues until the trigger has filled the disk; returns the error of a write that met the
/// full disk meanwhile, if one did.
async fn until_filled(q: &Queue, t: &Trigger, acked: &mut Acked, data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !t.filled() {
        assert!(
            Instant::now() < deadline,
            "the armed site was never reached"
        );
        match enqueue(q, acked.len()).await {
            Ok(a) => acked.push(a),
            Err(e) => {
                assert_disk_full(&e, data);
                break;
            }
        }
    }
}

/// Runs one site: fill at the site, check the full-disk behaviour, free, check healing.
/// Returns the queue (still open) and the acknowledged jobs.
async fn full_at(
    site: Site,
    disk: &LoopDisk,
    seg: u64,
    rewrite: u64,
) -> (Queue, Acked, Arc<Trigger>) {
    let data = disk.data();
    let t = Arc::new(Trigger::default());
    let q = open(&data, seg, rewrite, Some(t.clone())).await;
    let mut acked = Vec::new();
    t.arm(site, &disk.mnt);
    until_filled(&q, &t, &mut acked, &data).await;
    // Not poisoned: appends go on until they need a block too, then get DiskFull.
    let (more, err) = enqueue_until_full(&q, 100_000).await;
    acked.extend(more);
    assert_disk_full(&err, &data);
    let (more, err) = enqueue_until_full(&q, 110_000).await;
    acked.extend(more);
    assert_disk_full(&err, &data);
    check_reads(&q, &acked).await;
    let m = manifest(&data);
    if site != Site::Base {
        assert_eq!(m.segments.len(), 1, "no roll took effect on the full disk");
    }
    if site != Site::Base {
        assert_eq!(m.base, None, "no base was installed on the full disk");
    }
    // A failed roll or rewrite removes the file it made; a retry may be making one right now
    // (they back off), so wait for a listing between two attempts: then the journal holds
    // exactly the files the manifest names.
    let t0 = Instant::now();
    loop {
        let m = manifest(&data);
        let mut named: Vec<String> = m
            .segments
            .iter()
            .map(|s| durq::journal::format::segment_name(s.number))
            .chain(m.base.map(|(n, _)| durq::journal::format::base_name(n)))
            .collect();
        named.sort();
        let mut files: Vec<String> = std::fs::read_dir(data.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".seg") || n.ends_with(".base"))
            .collect();
        files.sort();
        if files == named {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "half-made journal files are left: {files:?}, the manifest names {named:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(!data.join("journal/MANIFEST.tmp").exists());
    // The journal's files still open, and hold every acknowledged job.
    q.shutdown().await.unwrap();
    drop(q);
    let q = open(&data, seg, rewrite, Some(t.clone())).await;
    check_reads(&q, &acked).await;
    let (more, _) = enqueue_until_full(&q, 120_000).await;
    acked.extend(more);

    t.take_filler().remove();
    heals(&q, &mut acked, 150_000).await;
    (q, acked, t)
}

/// Writes (paced past the retry backoff) until `done`.
async fn write_until(q: &Queue, acked: &mut Acked, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 200_000;
    while !done() {
        assert!(Instant::now() < deadline, "{what} was never retried");
        acked.push(enqueue(q, i).await.unwrap());
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await; // pacing writes past the backoff
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the serial lock is meant to span the test
async fn full_during_segment_roll_keeps_appending_and_rolls_later() {
    let _serial = serial();
    let Some(disk) = LoopDisk::new() else { return };
    let data = disk.data();
    let (q, mut acked, t) = full_at(Site::Roll, &disk, 64 << 10, 64 << 20).await;
    assert!(t.seen(Site::Roll) >= 1);
    write_until(&q, &mut acked, "the segment roll", || seg_count(&data) >= 2).await;
    assert_eq!(manifest(&data).segments.len(), seg_count(&data));
    check_reads(&q, &acked).await;
    q.shutdown().await.unwrap();
    drop(q);
    reopened_has_all(&data, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the serial lock is meant to span the test
async fn full_during_manifest_write_undoes_the_roll() {
    let _serial = serial();
    let Some(disk) = LoopDisk::new() else { return };
    let data = disk.data();
    let (q, mut acked, t) = full_at(Site::Manifest, &disk, 64 << 10, 64 << 20).await;
    assert!(
        t.seen(Site::Roll) >= 1,
        "the new segment was made before the manifest write"
    );
    write_until(&q, &mut acked, "the roll", || {
        manifest(&data).segments.len() >= 2
    })
    .await;
    assert_eq!(manifest(&data).segments.len(), seg_count(&data));
    check_reads(&q, &acked).await;
    q.shutdown().await.unwrap();
    drop(q);
    reopened_has_all(&data, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the serial lock is meant to span the test
async fn full_during_rewrite_keeps_old_files_and_retries() {
    let _serial = serial();
    let Some(disk) = LoopDisk::new() else { return };
    let data = disk.data();
    // Segments never roll by size; the rewrite (past 256 KiB of journal) rolls and writes a base.
    let (q, mut acked, _t) = full_at(Site::Base, &disk, 64 << 20, 256 << 10).await;
    write_until(&q, &mut acked, "the rewrite", || {
        manifest(&data).base.is_some()
    })
    .await;
    check_reads(&q, &acked).await;
    q.shutdown().await.unwrap();
    drop(q);
    reopened_has_all(&data, &acked).await;
}

#[test]
fn serve_answers_507_while_full_and_accepts_writes_after() {
    let _serial = serial();
    let Some(disk) = LoopDisk::new() else { return };
    let data = disk.data();
    std::fs::create_dir_all(&data).unwrap();
    let mut s = support::start_serve(&data, &["--fsync", "always"]);
    let a = s.addr.clone();
    let mut ids = Vec::new();
    let post = |n: usize| {
        support::post_json(
            &a,
            "/v1/queues/q/jobs",
            &serde_json::json!({ "payload": { "n": n, "pad": "x".repeat(16 << 10) } }),
        )
    };
    for n in 0..20 {
        let r = post(n);
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let filler = Filler::fill(&disk.mnt);
    let mut n = 100;
    let full = loop {
        let r = post(n);
        n += 1;
        match r.status {
            201 => ids.push(r.json()["id"].as_str().unwrap().to_string()),
            _ => break r,
        }
        assert!(n < 50_000, "the disk never ran full");
    };
    assert_eq!(full.status, 507, "{}", full.text());
    let msg = full.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains(&data.display().to_string()),
        "the error names the data directory: {msg}"
    );
    // Reads keep working.
    let st = support::http(&a, "GET", "/v1/stats", &[], None);
    assert_eq!(st.status, 200);
    assert_eq!(st.json()["queues"]["q"]["waiting"], ids.len());
    for id in ids.iter().step_by(5) {
        let r = support::http(&a, "GET", &format!("/v1/jobs/{id}"), &[], None);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = support::http(&a, "GET", "/v1/queues/q/jobs?limit=100000", &[], None);
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), ids.len());

    filler.remove();
    let r = post(n);
    assert_eq!(
        r.status,
        201,
        "writes resume without a restart: {}",
        r.text()
    );
    ids.push(r.json()["id"].as_str().unwrap().to_string());
    let st = support::http(&a, "GET", "/v1/stats", &[], None);
    assert_eq!(st.json()["queues"]["q"]["waiting"], ids.len());
    assert!(s.proc.term().success());
    drop(s);
    let out = support::run(&data, &["--json", "stats"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["queues"]["q"]["waiting"],
        ids.len(),
        "after a restart too"
    );
}
