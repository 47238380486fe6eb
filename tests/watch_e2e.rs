//! End-to-end watcher tests on real files with real inotify.

mod watch_support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use durq::watch::{WatchConfig, Watcher};
use watch_support::{kinds, kp, H};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_writes_is_one_event_with_payload() {
    let mut h = H::new(|c| c.debounce = Duration::from_millis(300)).await;
    for i in 0..10 {
        h.write("a.txt", format!("version {i}").as_bytes());
        tokio::time::sleep(Duration::from_millis(50)).await; // the scenario: writes 50 ms apart
    }
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("created", "a.txt")]), "{evs:#?}");
    let e = &evs[0];
    assert_eq!(e["size"], 9);
    assert_eq!(e["stable"], true);
    assert_eq!(e["root"], h.root().display().to_string());
    assert!(e["prev_sha256"].is_null());
    // sha256 of "version 9"
    let want = {
        use sha2::Digest;
        durq::watch::hash::hex(&sha2::Sha256::digest(b"version 9").into())
    };
    assert_eq!(e["sha256"], want.as_str());
    assert!(e["mtime"].as_str().unwrap().starts_with("20"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_chmod_and_identical_rewrite_report_nothing() {
    let mut h = H::new(|_| {}).await;
    h.write("a", b"hello");
    assert_eq!(kinds(&h.sync().await), kp(&[("created", "a")]));
    let f = std::fs::File::options()
        .append(true)
        .open(h.p("a"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap(); // touch
    drop(f);
    std::fs::set_permissions(h.p("a"), std::fs::Permissions::from_mode(0o600)).unwrap();
    h.write("a", b"hello");
    // delete + recreate with identical bytes
    std::fs::remove_file(h.p("a")).unwrap();
    h.write("a", b"hello");
    assert_eq!(kinds(&h.sync().await), kp(&[]));
    // delete + recreate with different bytes inside the window: one modified
    std::fs::remove_file(h.p("a")).unwrap();
    h.write("a", b"world");
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("modified", "a")]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_saves_are_one_modified() {
    let mut h = H::new(|_| {}).await;
    h.write("doc.txt", b"v1");
    h.write("cfg.toml", b"c1");
    h.write("notes.md", b"n1");
    h.sync().await;
    // temp + rename over (many editors)
    h.write(".doc.txt.tmp", b"v2");
    std::fs::rename(h.p(".doc.txt.tmp"), h.p("doc.txt")).unwrap();
    // ... also with a temp name no ignore rule knows (gedit's `.goutputstream-XXXXXX`)
    h.write(".goutputstream-AB12CD", b"n2");
    std::fs::rename(h.p(".goutputstream-AB12CD"), h.p("notes.md")).unwrap();
    // vim's backup dance: 4913 probe, rename to backup, write new, delete backup
    h.write("4913", b"");
    std::fs::remove_file(h.p("4913")).unwrap();
    h.write(".cfg.toml.swp", b"swap");
    std::fs::rename(h.p("cfg.toml"), h.p("cfg.toml~")).unwrap();
    h.write("cfg.toml", b"c2");
    std::fs::remove_file(h.p("cfg.toml~")).unwrap();
    std::fs::remove_file(h.p(".cfg.toml.swp")).unwrap();
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[
            ("modified", "cfg.toml"),
            ("modified", "doc.txt"),
            ("modified", "notes.md")
        ]),
        "{evs:#?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renames_deletes_and_a_b_a() {
    let mut h = H::new(|_| {}).await;
    h.write("a", b"one");
    h.write("d/x", b"x");
    h.write("d/sub/y", b"y");
    h.write("d/z", b"z");
    h.sync().await;
    std::fs::rename(h.p("a"), h.p("b")).unwrap();
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("renamed", "b")]));
    assert_eq!(evs[0]["from"], "a");
    assert_eq!(evs[0]["sha256"], evs[0]["prev_sha256"]);
    // A directory rename: one event per file inside.
    std::fs::rename(h.p("d"), h.p("e")).unwrap();
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[
            ("renamed", "e/sub/y"),
            ("renamed", "e/x"),
            ("renamed", "e/z")
        ]),
        "{evs:#?}"
    );
    // Delete.
    let before = evs.iter().find(|e| e["path"] == "e/x").unwrap()["sha256"].clone();
    std::fs::remove_file(h.p("e/x")).unwrap();
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("deleted", "e/x")]));
    assert!(evs[0]["sha256"].is_null());
    assert_eq!(evs[0]["prev_sha256"], before);
    // A -> B -> A -> B: every step reports (the dedup key carries a change counter).
    for content in [&b"B"[..], b"one", b"B"] {
        h.write("b", content);
        let evs = h.sync().await;
        assert_eq!(kinds(&evs), kp(&[("modified", "b")]));
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignores_defaults_globs_and_gitignore() {
    let mut h = H::new(|c| c.ignore = vec!["*.log".into(), "build/out".into()]).await;
    h.write(".git/HEAD", b"ref");
    h.write(".a.txt.swp", b"s");
    h.write("a.txt~", b"s");
    h.write("#a#", b"s");
    h.write(".#lock", b"s");
    h.write("x.tmp", b"s");
    h.write("app.log", b"s");
    h.write("build/out/bin", b"s");
    h.write("build/keep", b"k");
    h.write(".gitignore", b"secret/\n*.bak\n");
    h.write("secret/key", b"k");
    h.write("c.bak", b"k");
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[("created", ".gitignore"), ("created", "build/keep")]),
        "{evs:#?}"
    );
    // .gitignore edits apply while running.
    h.write(".gitignore", b"*.bak\n");
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[("created", "secret/key"), ("modified", ".gitignore")]),
        "{evs:#?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_directories_are_scanned_and_symlinks_not_followed() {
    let mut h = H::new(|_| {}).await;
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("o"), b"outside").unwrap();
    std::os::unix::fs::symlink(outside.path(), h.p("link")).unwrap();
    std::fs::create_dir_all(h.p("n/m/k")).unwrap();
    for i in 0..20 {
        h.write(&format!("n/m/k/f{i}"), b"x");
    }
    let evs = h.sync().await;
    assert_eq!(evs.len(), 20, "{evs:#?}");
    assert!(evs
        .iter()
        .all(|e| e["kind"] == "created" && e["path"].as_str().unwrap().starts_with("n/m/k/f")));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_quiet_file_is_reported_unstable_at_max_wait() {
    let mut h = H::new(|c| {
        c.debounce = Duration::from_millis(200);
        c.max_wait = Duration::from_millis(800);
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, s) = (h.p("log"), stop.clone());
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(p).unwrap();
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            f.write_all(b"line\n").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let jobs = h
        .wait_for("an unstable event", Duration::from_secs(10), |j| {
            j.iter().any(|(_, p)| p["path"] == "log")
        })
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().unwrap();
    let e = &jobs.iter().find(|(_, p)| p["path"] == "log").unwrap().1;
    assert_eq!(e["stable"], false);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reports_exactly_what_changed_while_stopped() {
    let mut h = H::new(|_| {}).await;
    h.write("keep", b"k");
    h.write("mod", b"m1");
    h.write("del", b"d");
    h.write("mv", b"moving");
    h.sync().await;
    h.stop().await;
    h.write("mod", b"m2");
    std::fs::remove_file(h.p("del")).unwrap();
    std::fs::rename(h.p("mv"), h.p("moved")).unwrap();
    h.write("new", b"n");
    h.restart().await; // the start-up scan's jobs are enqueued when start returns
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[
            ("created", "new"),
            ("deleted", "del"),
            ("modified", "mod"),
            ("renamed", "moved")
        ]),
        "{evs:#?}"
    );
    h.restart().await;
    assert_eq!(kinds(&h.sync().await), kp(&[]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_roots_are_invalid_input_naming_the_directory() {
    let data = tempfile::tempdir().unwrap();
    let q = durq::Queue::open(data.path().join("q")).await.unwrap();
    fn assert_send<T: Send>(t: T) -> T {
        t
    }
    let missing = data.path().join("nope");
    let cfg = WatchConfig::new(vec![missing.clone()], "files", data.path().join("w"));
    // The CLI spawns the watcher: its futures must be Send.
    let err = assert_send(Watcher::start(q.clone(), cfg))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    let file = data.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let cfg = WatchConfig::new(vec![file], "files", data.path().join("w"));
    assert!(Watcher::start(q.clone(), cfg)
        .await
        .unwrap_err()
        .is_invalid_input());
    q.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_file_warns_then_reports_once_readable() {
    if unsafe { libc::geteuid() } == 0 {
        // Root reads any file regardless of its mode, so run this very test again as `nobody`:
        // a copy of the test binary in a fresh world-readable directory (the checkout may sit
        // under a directory `nobody` cannot enter), with its uid and gid set before exec.
        rerun_as_nobody("unreadable_file_warns_then_reports_once_readable");
        return;
    }
    let mut h = H::new(|_| {}).await;
    h.write("secret", b"s");
    std::fs::set_permissions(h.p("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let before = h.w.as_ref().unwrap().metrics().errors;
    assert_eq!(kinds(&h.sync().await), kp(&[]));
    assert!(h.w.as_ref().unwrap().metrics().errors > before);
    std::fs::set_permissions(h.p("secret"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(kinds(&h.sync().await), kp(&[("created", "secret")]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_group_changes_each_exactly_once() {
    let mut h = H::new(|c| {
        c.batch = true;
        c.batch_max = 7;
    })
    .await;
    for i in 0..20 {
        h.write(&format!("f{i}"), b"x");
    }
    h.sync().await;
    h.stop().await; // closes the open batch
    let jobs = h.all_jobs().await;
    let mut in_batches: Vec<String> = jobs
        .iter()
        .filter(|(k, _)| k == "batch_process")
        .flat_map(|(_, p)| {
            p["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["path"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut events: Vec<String> = jobs
        .iter()
        .filter(|(k, _)| k == "file_event")
        .map(|(_, p)| p["path"].as_str().unwrap().to_string())
        .collect();
    in_batches.sort();
    events.sort();
    assert_eq!(events.len(), 22, "20 files and two cookies");
    assert_eq!(in_batches, events);
    assert!(jobs.iter().filter(|(k, _)| k == "batch_process").count() >= 3);
    assert!(
        jobs.iter()
            .filter(|(k, p)| k == "batch_process" && p["changes"].as_array().unwrap().len() > 7)
            .count()
            == 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_file_names_are_reported() {
    let mut h = H::new(|_| {}).await;
    let long = "x".repeat(250);
    let deep = format!("{long}/{long}/{long}/{long}/f");
    h.write("new\nline", b"1");
    h.write(&deep, b"2");
    let evs = h.sync().await;
    assert_eq!(
        kinds(&evs),
        kp(&[("created", &deep), ("created", "new\nline")])
    );
    h.stop().await;
}

/// A handler that reads each reported file and writes into the watched tree does not loop: its
/// reads trigger nothing and its identical rewrites trigger nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_writing_into_the_tree_does_not_loop() {
    let mut h = H::new(|_| {}).await;
    h.write("input", b"data");
    let mut handled = 0;
    for round in 0..4 {
        let evs = h.sync().await;
        // Drain every waiting job like a worker: read the file, write the summary file.
        while let Some(lease) = h.q.reserve(&[watch_support::Q]).await.unwrap() {
            let p = lease.job.payload_json();
            if lease.job.kind == "file_event" && p["kind"] != "deleted" {
                let path = h.root().join(p["path"].as_str().unwrap());
                let _ = std::fs::read(&path).unwrap();
                std::fs::write(h.root().join("summary"), b"processed").unwrap();
                handled += 1;
            }
            h.q.ack(&lease).await.unwrap();
        }
        if round >= 2 {
            assert_eq!(kinds(&evs), kp(&[]), "round {round}: {evs:#?}");
        }
    }
    assert!(handled >= 2, "input and summary were handled");
    h.stop().await;
}

/// A crash between enqueue and the record update re-reports the change on restart; the dedup key
/// (root, path, previous and new hash, change counter) drops it. Simulated by losing the records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_records_do_not_duplicate_jobs() {
    let mut h = H::new(|_| {}).await;
    h.write("a", b"1");
    h.write("b", b"2");
    assert_eq!(
        kinds(&h.sync().await),
        kp(&[("created", "a"), ("created", "b")])
    );
    h.stop().await;
    let before = h.all_jobs().await.len();
    std::fs::remove_dir_all(&h.cfg.state_dir).unwrap();
    h.restart().await;
    assert_eq!(
        h.all_jobs().await.len(),
        before,
        "the re-reported changes were deduplicated"
    );
    // New changes after the lost records still report.
    h.write("a", b"3");
    assert_eq!(kinds(&h.sync().await), kp(&[("modified", "a")]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_into_a_brand_new_directory_is_a_rename() {
    let mut h = H::new(|_| {}).await;
    h.write("a", b"payload");
    h.write("b", b"other");
    h.sync().await;
    std::fs::create_dir(h.p("new")).unwrap();
    std::fs::rename(h.p("a"), h.p("new/a")).unwrap();
    std::fs::create_dir(h.p("later")).unwrap();
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("renamed", "new/a")]), "{evs:#?}");
    assert_eq!(evs[0]["from"], "a");
    // The two ends a debounce window apart still pair (the old path's record is found by inode).
    std::fs::rename(h.p("b"), h.p("later/b")).unwrap();
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("renamed", "later/b")]), "{evs:#?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_flushes_pending_changes() {
    let mut h = H::new(|c| c.debounce = Duration::from_secs(30)).await;
    h.write("a", b"1");
    // Stop long before the 30 s debounce ends: stop must settle what is pending.
    h.stop().await;
    let jobs = h.all_jobs().await;
    let paths: Vec<&str> = jobs
        .iter()
        .map(|(_, p)| p["path"].as_str().unwrap())
        .collect();
    // The write may or may not have reached the watcher before stop; if not, the next start
    // reports it. Either way it is reported exactly once.
    if paths.is_empty() {
        h.restart().await;
        h.stop().await;
    }
    let jobs = h.all_jobs().await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0].1["path"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_mtimes_are_not_held_back() {
    let mut h = H::new(|c| c.max_wait = Duration::from_secs(20)).await;
    std::fs::create_dir(h.p("x")).unwrap();
    let tomorrow = std::time::SystemTime::now() + Duration::from_secs(86_400);
    let f = std::fs::File::create(h.p("x/f")).unwrap();
    f.set_modified(tomorrow).unwrap();
    drop(f);
    let evs = h.sync().await;
    assert_eq!(kinds(&evs), kp(&[("created", "x/f")]), "{evs:#?}");
    assert_eq!(evs[0]["stable"], true);
    h.stop().await;
}

/// Runs the test `name` of this binary as uid/gid 65534 and asserts that it passed.
fn rerun_as_nobody(name: &str) {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::Builder::new()
        .prefix("durq-nobody")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("watch_e2e");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("TMPDIR", "/tmp")
        .env("HOME", "/tmp")
        .current_dir("/tmp")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test as nobody failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
