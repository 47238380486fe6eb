//! The watcher's open batch survives a SIGKILL: the real `durq watch --batch` binary is killed
//! while a batch is open (a file written every 50 ms keeps the watcher busy, so the batch cannot
//! close), restarted, and stopped with SIGTERM; every change must then be in exactly one
//! `batch_process` job (and have its `file_event` job).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

fn durq(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_durq"));
    c.arg("--data").arg(data).env_remove("DURQ_DATA");
    c
}

/// Starts the watcher and returns once it says it is watching.
fn start_watch(data: &Path, root: &Path) -> Child {
    let mut child = durq(data)
        .args([
            "watch",
            "--queue",
            "files",
            "--batch",
            "--debounce",
            "200ms",
        ])
        .args(["--max-wait", "60s"])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "watch exited early");
        if line.contains("watching") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

/// Every job of queue `files` as (kind, payload), via the running owner's socket or the dir.
fn jobs(data: &Path) -> Vec<(String, Value)> {
    let out = durq(data)
        .args(["jobs", "files", "--json", "--limit", "100000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["kind"].as_str().unwrap().to_string(),
                v["payload"].clone(),
            )
        })
        .collect()
}

fn file_events(jobs: &[(String, Value)]) -> Vec<String> {
    jobs.iter()
        .filter(|(k, _)| k == "file_event")
        .map(|(_, p)| p["path"].as_str().unwrap().to_string())
        .collect()
}

fn signal(child: &Child, sig: i32) {
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

#[test]
fn open_batch_survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let root: PathBuf = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut child = start_watch(&data, &root);

    let stop_noise = Arc::new(AtomicBool::new(false));
    let noise = {
        let (stop, path) = (stop_noise.clone(), root.join("noise"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&path, i.to_string()).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(50)); // the noise itself, not a sync
            }
        })
    };
    let names = ["a.txt", "b.txt", "c.txt"];
    for n in names {
        std::fs::write(root.join(n), format!("content of {n}")).unwrap();
    }
    // Wait (on the jobs themselves) until each change has its file_event job: the records are
    // updated and the changes sit in the open batch.
    let start = Instant::now();
    loop {
        let ev = file_events(&jobs(&data));
        if names.iter().all(|n| ev.iter().any(|e| e == n)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "file events: {ev:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = jobs(&data);
    assert!(
        !before.iter().any(|(k, _)| k == "batch_process"),
        "the batch closed before the kill; the test needs it open"
    );
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();
    stop_noise.store(true, Ordering::Relaxed);
    noise.join().unwrap();

    let mut child = start_watch(&data, &root);
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());

    let all = jobs(&data);
    let mut batched: Vec<String> = all
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
        .filter(|p| p != "noise")
        .collect();
    batched.sort();
    assert_eq!(
        batched, names,
        "each change in exactly one batch after the crash"
    );
    let mut events = file_events(&all);
    events.retain(|p| p != "noise");
    events.sort();
    assert_eq!(events, names, "each change has exactly one file_event job");
}
