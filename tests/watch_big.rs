//! A big file: one event, bounded memory, small files not held back. Its own test binary, so
//! the peak-RSS check sees only this test.

mod watch_support;

use std::time::Duration;

use watch_support::H;

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A big file (1 GiB with `DURQ_LONG=1`, else 80 MiB) is one event, hashed in bounded memory,
/// and a small file written after it is reported first (the big hash runs in the background).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_file_is_one_event_and_does_not_delay_small_ones() {
    let long = std::env::var("DURQ_LONG").is_ok_and(|v| v != "0");
    let mib: usize = if long { 1024 } else { 80 };
    let mut h = H::new(|_| {}).await;
    let hwm0 = vm_hwm_kib();
    let p = h.p("big.bin");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(p).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..mib {
            f.write_all(&chunk).unwrap();
        }
    })
    .await
    .unwrap();
    h.write("small", b"s");
    let jobs = h
        .wait_for("the big file's event", Duration::from_secs(120), |j| {
            j.iter().any(|(_, p)| p["path"] == "big.bin")
        })
        .await;
    let order: Vec<&str> = jobs
        .iter()
        .map(|(_, p)| p["path"].as_str().unwrap())
        .collect();
    let (small, big) = (
        order
            .iter()
            .position(|p| *p == "small")
            .expect("small reported"),
        order.iter().position(|p| *p == "big.bin").unwrap(),
    );
    assert!(
        small < big,
        "the small file waited for the big hash: {order:?}"
    );
    let evs = h.sync().await;
    assert_eq!(
        evs.iter().filter(|e| e["path"] == "big.bin").count(),
        1,
        "{evs:#?}"
    );
    let e = &evs.iter().find(|e| e["path"] == "big.bin").unwrap();
    assert_eq!(e["size"], (mib as u64) << 20);
    let grew = (vm_hwm_kib() - hwm0) / 1024;
    eprintln!("big file {mib} MiB: peak RSS grew {grew} MiB");
    assert!(grew < 64, "hashing grew memory by {grew} MiB");
    h.stop().await;
}
