//! The `durq` binary on Redis: `--redis URL` / `DURQ_REDIS_URL` for the short commands and
//! `work`, two worker processes sharing one queue, the data directory left alone.
#![cfg(feature = "redis")]

mod redis_support;
mod support;

use std::process::Stdio;

use redis_support::RedisServer;
use support::*;

#[test]
fn commands_and_two_workers_share_one_redis_queue() {
    let server = RedisServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    // Two "hosts": separate data directories, one Redis.
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for i in 0..20 {
        let mut c = durq(if i % 2 == 0 { &a } else { &b });
        c.args(["--redis", &url, "enqueue", "q", &format!("{{\"n\":{i}}}")]);
        ok(&c.stdin(Stdio::null()).output().unwrap());
    }
    // The env variable works as well as the flag.
    let stats = |d: &std::path::Path| -> serde_json::Value {
        let o = durq(d)
            .env("DURQ_REDIS_URL", &url)
            .args(["--json", "stats"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        serde_json::from_str(&ok(&o)).unwrap()
    };
    assert_eq!(stats(&a)["queues"]["q"]["waiting"], 20);
    assert_eq!(
        stats(&b)["queues"]["q"]["waiting"],
        20,
        "both hosts see one queue"
    );
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let cmd = format!("cat > {}/$DURQ_JOB_ID", marks.display());
    let workers: Vec<_> = [&a, &b]
        .iter()
        .map(|d| {
            durq(d)
                .args([
                    "--redis",
                    &url,
                    "work",
                    "q",
                    "--exec",
                    &cmd,
                    "--until-empty",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        ok(&w.wait_with_output().unwrap());
    }
    assert_eq!(
        std::fs::read_dir(&marks).unwrap().count(),
        20,
        "each job ran once"
    );
    let s = stats(&a);
    assert_eq!(s["queues"]["q"]["completed"], 20, "{s}");
    assert_eq!(s["queues"]["q"]["waiting"], 0, "{s}");
    ok(&durq(&a)
        .args(["--redis", &url, "pause", "q"])
        .stdin(Stdio::null())
        .output()
        .unwrap());
    assert_eq!(stats(&b)["queues"]["q"]["paused"], true);
    assert!(
        !a.join("journal").exists() && !b.join("journal").exists(),
        "no local store was made"
    );
}

#[test]
fn unreachable_redis_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{}/", redis_support::free_port());
    let o = durq(dir.path())
        .args(["--redis", &url, "stats"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&url) && err.contains("unavailable"), "{err}");
}
