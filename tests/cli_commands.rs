//! The `durq` binary end to end on temp dirs: every short command, exit codes, `--json`
//! shapes, bad input rejected with exit 2 and the data dir unchanged, `--batch` streaming.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use support::*;

#[test]
fn enqueue_stats_jobs_json_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("nested/data");
    let id = ok(&run(
        &d,
        &[
            "enqueue",
            "mail",
            r#"{"to":"a"}"#,
            "--kind",
            "send",
            "--priority",
            "high",
            "--key",
            "u1",
        ],
    ));
    let id = id.trim().to_string();
    assert!(id.parse::<u64>().is_ok(), "{id}");
    let id2 = ok(&run_stdin(&d, &["enqueue", "mail", "-"], b"[1,2]\n"))
        .trim()
        .to_string();
    let id3 = ok(&run_stdin(&d, &["--json", "enqueue", "mail"], b"\"low\""))
        .trim()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&id3).unwrap();
    assert_eq!(v["duplicate"], false);
    assert!(v["id"].is_string());

    let jobs = json_lines(&ok(&run(&d, &["--json", "jobs", "mail"])));
    assert_eq!(jobs.len(), 3);
    let j = &jobs[0];
    assert_eq!(j["id"], id, "high priority runs first");
    assert_eq!(j["queue"], "mail");
    assert_eq!(j["kind"], "send");
    assert_eq!(j["priority"], 192);
    assert_eq!(j["key"], "u1");
    assert_eq!(j["state"], "waiting");
    assert_eq!(j["attempts"], 0);
    assert_eq!(j["payload"], serde_json::json!({"to": "a"}));
    assert_eq!(j["errors"], serde_json::json!([]));
    for f in ["created_at", "run_at"] {
        let s = j[f].as_str().unwrap();
        assert!(humantime::parse_rfc3339(s).is_ok(), "{f} = {s}");
    }
    assert_eq!(jobs[1]["id"], id2);
    assert_eq!(jobs[1]["key"], serde_json::Value::Null);
    assert_eq!(jobs[1]["payload"], serde_json::json!([1, 2]));

    let limited = json_lines(&ok(&run(
        &d,
        &[
            "--json", "jobs", "mail", "--limit", "1", "--state", "waiting",
        ],
    )));
    assert_eq!(limited.len(), 1);
    assert!(json_lines(&ok(&run(
        &d,
        &["--json", "jobs", "mail", "--state", "dead"]
    )))
    .is_empty());

    let s = stats(&d);
    assert_eq!(s["queues"]["mail"]["waiting"], 3);
    assert_eq!(s["totals"]["waiting"], 3);
    for k in [
        "waiting",
        "delayed",
        "active",
        "dead",
        "completed",
        "paused",
        "oldest_waiting_secs",
    ] {
        assert!(s["queues"]["mail"].get(k).is_some(), "missing {k}");
    }
    let text = ok(&run(&d, &["stats", "mail"]));
    assert!(text.starts_with("QUEUE"), "{text}");
    assert!(text.contains("mail"));
    let text = ok(&run(&d, &["jobs", "mail"]));
    assert_eq!(text.lines().count(), 4, "{text}");
}

#[test]
fn delay_dedup_pause_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run(
        d,
        &[
            "enqueue",
            "q",
            "{}",
            "--delay",
            "1h",
            "--max-retries",
            "3",
            "--backoff",
            "10ms",
        ],
    ));
    assert_eq!(stats(d)["queues"]["q"]["delayed"], 1);
    let a = run(
        d,
        &["enqueue", "q", "1", "--dedup", "k", "--dedup-ttl", "1m"],
    );
    let b = run(d, &["enqueue", "q", "2", "--dedup", "k"]);
    assert_eq!(ok(&a), ok(&b), "a duplicate prints the existing id");
    assert!(stderr(&b).contains("duplicate"), "{}", stderr(&b));
    assert!(!stderr(&a).contains("duplicate"));
    ok(&run(d, &["pause", "q"]));
    assert_eq!(stats(d)["queues"]["q"]["paused"], true);
    let r = ok(&run(d, &["--json", "resume", "q"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r).unwrap()["paused"],
        false
    );
    assert_eq!(stats(d)["queues"]["q"]["paused"], false);
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run(d, &["enqueue", "q", r#"{"keep":1}"#]));
    let before = tree(d);
    assert!(!before.is_empty());
    let big = vec![b'"'; 1]
        .into_iter()
        .chain(std::iter::repeat_n(b'a', 16 << 20))
        .chain([b'"'])
        .collect::<Vec<u8>>();
    let cases: Vec<(Vec<&str>, Option<&[u8]>)> = vec![
        (vec!["enqueue", "bad name", "{}"], None),
        (vec!["enqueue", "", "{}"], None),
        (vec!["enqueue", "q", "{not json"], None),
        (vec!["enqueue", "q"], Some(b"{\"a\":")),
        (vec!["enqueue", "q"], Some(&big)),
        (vec!["enqueue", "q", "{}", "--delay", "5parsecs"], None),
        (
            vec!["enqueue", "q", "{}", "--dedup-ttl", "1x", "--dedup", "k"],
            None,
        ),
        (vec!["enqueue", "q", "{}", "--priority", "urgent"], None),
        (vec!["enqueue", "q", "{}", "--frobnicate"], None),
        (vec!["--fsync", "sometimes", "stats"], None),
        (vec!["jobs", "q", "--state", "zombie"], None),
        (vec!["jobs", "q/x"], None),
        (vec!["dlq", "requeue", "q"], None),
        (vec!["dlq", "purge", "q", "not-an-id"], None),
        (vec!["work", "q", "--lease", "forever"], None),
        (vec!["pause", "a b"], None),
        (vec!["nosuchcommand"], None),
        (vec!["serve", "--listen", "0.0.0.0:0"], None),
    ];
    for (args, input) in cases {
        let o = match input {
            Some(i) => run_stdin(d, &args, i),
            None => run(d, &args),
        };
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("error"), "{args:?}: {err}");
        assert!(tree(d) == before, "{args:?} changed the data dir");
    }
    // A bad batch line: earlier lines stay, the line number is named.
    let o = run_stdin(d, &["enqueue", "q", "--batch"], b"1\n2\n{oops\n3\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    assert_eq!(stats(d)["queues"]["q"]["waiting"], 3);
}

#[test]
fn batch_spec_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = br#"{"payload": {"a": 1}, "kind": "k1", "priority": 10}
{"payload": "x", "priority": "critical", "key": "p", "delay": "1h"}

{"payload": 3, "dedup": "d", "dedup_ttl": "5m", "max_retries": 1, "backoff": "10ms"}
"#;
    let out = ok(&run_stdin(d, &["enqueue", "q", "--batch", "--spec"], input));
    assert_eq!(out.lines().count(), 3);
    let s = stats(d);
    assert_eq!(s["queues"]["q"]["waiting"], 2);
    assert_eq!(s["queues"]["q"]["delayed"], 1);
    let o = run_stdin(
        d,
        &["enqueue", "q", "--batch", "--spec"],
        b"{\"payload\":1}\n{\"payload\":1,\"colour\":\"red\"}\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 2") && stderr(&o).contains("colour"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn batch_prints_each_id_before_stdin_closes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut child = durq(d)
        .args(["enqueue", "q", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    let mut ids = Vec::new();
    for i in 0..3 {
        writeln!(stdin, "{{\"n\":{i}}}").unwrap();
        stdin.flush().unwrap();
        let id = lines
            .recv_timeout(Duration::from_secs(15))
            .expect("id printed while stdin is open");
        ids.push(id.parse::<u64>().unwrap());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let jobs = json_lines(&ok(&run(d, &["--json", "jobs", "q"])));
    let order: Vec<u64> = jobs
        .iter()
        .map(|j| j["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(order, ids);
}

#[test]
fn env_data_dir_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(BIN)
        .args(["enqueue", "q", "{}"])
        .env("DURQ_DATA", dir.path())
        .output()
        .unwrap();
    ok(&o);
    assert!(dir.path().join("journal").is_dir());
    let h = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let text = ok(&h);
    for c in [
        "enqueue", "work", "watch", "serve", "stats", "jobs", "dlq", "pause", "resume", "check",
        "bench",
    ] {
        assert!(text.contains(c), "help lacks {c}");
    }
}

#[test]
fn bench_prints_json_rows_with_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &dir.path().join("unused"),
        &[
            "--json",
            "bench",
            "--ops",
            "40",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
    );
    let rows = json_lines(&ok(&o));
    assert_eq!(rows.len(), 10);
    assert_eq!(rows[0]["bench"], "raw_append_fdatasync");
    assert_eq!(rows[0]["ratio_vs_raw"], 1.0);
    for r in &rows {
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert!(rows
        .iter()
        .any(|r| r["bench"] == "cycle_16" && r["policy"] == "everysec"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "scratch data removed"
    );
    assert_eq!(
        run(dir.path(), &["bench", "--ops", "0"]).status.code(),
        Some(2)
    );
}
