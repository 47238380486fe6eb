//! Scale and overflow: a 10,000-file storm, a kernel queue overflow, a full internal channel.

mod watch_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::watch::EventGate;
use serde_json::Value;
use watch_support::H;

fn create_files(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:05}")), format!("content of file {i}")).unwrap();
    }
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits for `n` file_events under `prefix` and checks none is reported twice.
async fn expect_created(h: &H, prefix: &str, n: usize) -> Vec<Value> {
    h.wait_count(n as u64, Duration::from_secs(60)).await;
    let jobs = h
        .wait_for(&format!("{n} events"), Duration::from_secs(60), |j| {
            j.iter()
                .filter(|(k, p)| {
                    k == "file_event" && p["path"].as_str().unwrap().starts_with(prefix)
                })
                .count()
                >= n
        })
        .await;
    let evs: Vec<Value> = jobs
        .into_iter()
        .filter(|(k, p)| k == "file_event" && p["path"].as_str().unwrap().starts_with(prefix))
        .map(|(_, p)| p)
        .collect();
    let paths: HashSet<&str> = evs.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths.len(), evs.len(), "a path was reported twice");
    assert!(evs.iter().all(|e| e["kind"] == "created"));
    evs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_files_at_once_each_reported_once() {
    let mut h = H::new(|_| {}).await;
    let hwm0 = vm_hwm_kib();
    let dir = h.p("untar");
    let t = Instant::now();
    tokio::task::spawn_blocking(move || create_files(&dir, 10_000))
        .await
        .unwrap();
    let written = t.elapsed();
    let evs = expect_created(&h, "untar/", 10_000).await;
    assert_eq!(evs.len(), 10_000);
    // Nothing more arrives after the storm.
    let rest = h.sync().await;
    assert_eq!(
        rest.iter()
            .filter(|e| e["path"].as_str().unwrap().starts_with("untar/"))
            .count(),
        10_000
    );
    let m = h.w.as_ref().unwrap().metrics();
    let hwm = vm_hwm_kib();
    eprintln!(
        "storm: written in {written:?}, all 10,000 jobs after {:?}; metrics {m:?}; peak RSS {} -> {} MiB",
        t.elapsed(),
        hwm0 / 1024,
        hwm / 1024
    );
    assert!(
        hwm - hwm0 < 512 * 1024,
        "memory grew by {} MiB",
        (hwm - hwm0) / 1024
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_queue_overflow_reconciles_exactly_the_real_changes() {
    let gate = Arc::new(EventGate::default());
    let g = gate.clone();
    let mut h = H::new(move |c| c.gate = Some(g)).await;
    h.write("old/keep", b"k");
    h.write("old/gone", b"g");
    std::fs::create_dir(h.p("burst")).unwrap();
    h.sync().await;
    // Stall the event thread; the kernel queue (max_queued_events 16384) overflows.
    gate.pause();
    let dir = h.p("burst");
    tokio::task::spawn_blocking(move || create_files(&dir, 6_000))
        .await
        .unwrap();
    std::fs::remove_file(h.p("old/gone")).unwrap();
    std::fs::create_dir(h.p("burst/later")).unwrap();
    gate.resume();
    expect_created(&h, "burst/", 6_000).await;
    let evs = h.sync().await;
    assert_eq!(
        evs.iter()
            .filter(|e| e["path"].as_str().unwrap().starts_with("burst/"))
            .count(),
        6_000
    );
    let old: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e["path"].as_str().unwrap().starts_with("old/"))
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(old, vec![("deleted".to_string(), "old/gone".to_string())]);
    // A directory created while events were lost is watched after the rescan.
    h.write("burst/later/x", b"x");
    let evs = h.sync().await;
    assert_eq!(evs.len(), 1, "{evs:#?}");
    assert_eq!(evs[0]["path"], "burst/later/x");
    assert!(
        h.w.as_ref().unwrap().metrics().rescans >= 1,
        "{:?}",
        h.w.as_ref().unwrap().metrics()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_internal_channel_triggers_a_rescan_and_loses_nothing() {
    let gate = Arc::new(EventGate::default());
    let g = gate.clone();
    let mut h = H::new(move |c| {
        c.channel_capacity = 32;
        c.gate = Some(g);
    })
    .await;
    // Hold the loop so the 32-slot channel fills up, wait until an event was dropped, go on.
    gate.hold_loop();
    let dir = h.p("many");
    tokio::task::spawn_blocking(move || create_files(&dir, 500))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    while h.w.as_ref().unwrap().metrics().events_dropped == 0 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "no event was dropped: {:?}",
            h.w.as_ref().unwrap().metrics()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    gate.release_loop();
    expect_created(&h, "many/", 500).await;
    let evs = h.sync().await;
    assert_eq!(evs.len(), 500);
    assert!(
        h.w.as_ref().unwrap().metrics().rescans >= 1,
        "{:?}",
        h.w.as_ref().unwrap().metrics()
    );
    drop(gate);
    h.stop().await;
}

#[test]
fn watch_limit_error_names_the_setting_and_the_number_needed() {
    let e = durq::watch::scan::watch_limit_error("/data", 250_000, Some(192_908));
    let msg = e.to_string();
    assert!(msg.contains("fs.inotify.max_user_watches"), "{msg}");
    assert!(msg.contains("250000") && msg.contains("192908"), "{msg}");
}
