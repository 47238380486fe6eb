//! `durq work` end to end: shell jobs, retries into dead letters, dead-letter commands, the
//! daemon socket answering other processes, one owner per dir, SIGTERM drain, stale sockets.

mod support;

use std::time::Duration;

use support::*;

fn dead_count(d: &std::path::Path) -> u64 {
    stats(d)["queues"]["q"]["dead"].as_u64().unwrap_or(0)
}

#[test]
fn failing_exec_retries_then_dead_letters_and_requeue() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..3 {
        ok(&run(
            d,
            &[
                "enqueue",
                "q",
                &format!("{{\"n\":{i}}}"),
                "--max-retries",
                "2",
                "--backoff",
                "10ms",
            ],
        ));
    }
    ok(&run(
        d,
        &["enqueue", "q", r#"{"ok":true}"#, "--kind", "good"],
    ));
    let marks = dir.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let cmd = format!(
        "p=$(cat); if [ \"$DURQ_KIND\" = good ]; then echo \"$DURQ_JOB_ID $DURQ_QUEUE $DURQ_ATTEMPT $p\" > {}/$DURQ_JOB_ID; exit 0; fi; echo \"boom $DURQ_ATTEMPT\" >&2; exit 3",
        marks.display()
    );
    let o = run(
        d,
        &[
            "work",
            "q",
            "--exec",
            &cmd,
            "--until-empty",
            "--concurrency",
            "2",
        ],
    );
    ok(&o);
    let s = stats(d);
    assert_eq!(s["queues"]["q"]["dead"], 3, "{s}");
    assert_eq!(s["queues"]["q"]["completed"], 1, "{s}");
    let mark: Vec<_> = std::fs::read_dir(&marks).unwrap().collect();
    assert_eq!(mark.len(), 1);
    let text = std::fs::read_to_string(mark[0].as_ref().unwrap().path()).unwrap();
    assert!(text.contains(" q 1 {\"ok\":true}"), "{text}");

    let dead = json_lines(&ok(&run(d, &["--json", "dlq", "list", "q"])));
    assert_eq!(dead.len(), 3);
    let errs = dead[0]["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 3, "{}", dead[0]);
    assert_eq!(errs[2]["attempt"], 3);
    assert!(
        errs[2]["error"].as_str().unwrap().contains("boom 3"),
        "{}",
        dead[0]
    );
    assert!(errs[0]["at"].is_string());
    assert_eq!(dead[0]["state"], "dead");

    let one = dead[0]["id"].as_str().unwrap().to_string();
    let r = ok(&run(d, &["--json", "dlq", "requeue", "q", &one]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&r).unwrap()["requeued"],
        1
    );
    assert_eq!(dead_count(d), 2);
    assert_eq!(stats(d)["queues"]["q"]["waiting"], 1);
    let r = ok(&run(d, &["dlq", "purge", "q", "--all"]));
    assert!(r.contains("purged 2"), "{r}");
    assert_eq!(dead_count(d), 0);
}

#[test]
fn socket_serves_other_commands_while_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Before any owner: output of a local run, for comparison.
    ok(&run(d, &["enqueue", "other", "{}"]));
    let mut owner = start_owner(d, &["work", "q", "--exec", "cat > /dev/null"]);
    let mode = std::fs::metadata(d.join("sock")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let id = ok(&run(d, &["enqueue", "q", r#"{"via":"socket"}"#]))
        .trim()
        .to_string();
    assert!(id.parse::<u64>().is_ok());
    wait_for("the job to complete", Duration::from_secs(20), || {
        (stats(d)["queues"]["q"]["completed"] == 1).then_some(())
    });
    // Same shapes through the socket.
    let jobs = json_lines(&ok(&run(
        d,
        &["--json", "jobs", "q", "--state", "completed"],
    )));
    assert_eq!(jobs[0]["id"], id);
    assert_eq!(jobs[0]["payload"], serde_json::json!({"via": "socket"}));
    let batch = ok(&run_stdin(d, &["enqueue", "other", "--batch"], b"1\n2\n"));
    assert_eq!(batch.lines().count(), 2);
    let dup1 = run(d, &["enqueue", "other", "3", "--dedup", "x"]);
    let dup2 = run(d, &["enqueue", "other", "3", "--dedup", "x"]);
    assert_eq!(ok(&dup1), ok(&dup2));
    assert!(stderr(&dup2).contains("duplicate"));
    // Bad input through the socket: still exit 2 with the message.
    let bad = run(d, &["enqueue", "q", "{nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not valid JSON"), "{}", stderr(&bad));
    let bad = run_stdin(d, &["enqueue", "q", "--batch"], b"1\n{\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("line 2"));
    ok(&run(d, &["pause", "other"]));
    ok(&run(d, &["resume", "other"]));
    let text = ok(&run(d, &["stats"]));
    assert!(text.contains("other") && text.contains("(total)"), "{text}");

    // A second long-running command exits 1 naming the holder's pid.
    let second = run(d, &["work", "q", "--exec", "true"]);
    assert_eq!(second.status.code(), Some(1));
    let pid = owner.0.id().to_string();
    assert!(
        stderr(&second).contains(&pid),
        "{} lacks {pid}",
        stderr(&second)
    );
    // check needs the directory to itself.
    assert_eq!(run(d, &["check"]).status.code(), Some(1));

    assert_eq!(owner.term().code(), Some(0));
    assert!(!d.join("sock").exists(), "socket removed on exit");
    assert_eq!(stats(d)["queues"]["other"]["waiting"], 4);
}

#[test]
fn sigterm_drains_running_jobs_and_returns_stuck_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let done = d.join("done");
    ok(&run(d, &["enqueue", "slow", "{}"]));
    let cmd = format!("sleep 0.5; touch {}", done.display());
    let mut w = start_owner(d, &["work", "slow", "--exec", &cmd]);
    wait_for("the job to start", Duration::from_secs(20), || {
        (stats(d)["queues"]["slow"]["active"] == 1).then_some(())
    });
    assert_eq!(w.term().code(), Some(0));
    assert!(
        done.exists(),
        "the running job finished within the grace period"
    );
    assert_eq!(stats(d)["queues"]["slow"]["completed"], 1);

    // A job that outlives the grace period goes back to waiting, attempt not counted.
    ok(&run(d, &["enqueue", "stuck", "{}"]));
    let mut w = start_owner(
        d,
        &["work", "stuck", "--exec", "sleep 30", "--grace", "200ms"],
    );
    wait_for("the job to start", Duration::from_secs(20), || {
        (stats(d)["queues"]["stuck"]["active"] == 1).then_some(())
    });
    assert_eq!(w.term().code(), Some(0));
    let jobs = json_lines(&ok(&run(d, &["--json", "jobs", "stuck"])));
    assert_eq!(jobs[0]["state"], "waiting", "{}", jobs[0]);
    assert!(jobs[0]["errors"].as_array().unwrap().is_empty());
}

#[test]
fn stale_socket_and_lock_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run(d, &["enqueue", "q", "{}"]));
    // A socket file nobody listens on, as a SIGKILLed owner leaves behind.
    drop(std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap());
    assert!(d.join("sock").exists());
    assert_eq!(
        stats(d)["queues"]["q"]["waiting"],
        1,
        "a stale socket does not block clients"
    );
    let mut w = start_owner(d, &["work", "q", "--exec", "true"]);
    w.0.kill().unwrap();
    w.0.wait().unwrap();
    assert!(d.join("sock").exists(), "SIGKILL leaves the socket");
    let s = stats(d);
    assert_eq!(
        s["queues"]["q"]["waiting"].as_u64().unwrap()
            + s["queues"]["q"]["completed"].as_u64().unwrap(),
        1
    );
    let mut w = start_owner(d, &["work", "q", "--exec", "true"]);
    assert_eq!(w.term().code(), Some(0));
}

#[test]
fn work_without_exec_prints_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run(d, &["enqueue", "q", r#"{"hello":"world"}"#]));
    let out = ok(&run(d, &["work", "q", "--until-empty"]));
    let jobs = json_lines(&out);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["payload"], serde_json::json!({"hello": "world"}));
    assert_eq!(stats(d)["queues"]["q"]["completed"], 1);
}

#[test]
fn watch_turns_files_into_jobs_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let w = dir.path().join("inbox");
    std::fs::create_dir(&w).unwrap();
    let bad = run(
        &d,
        &[
            "watch",
            w.to_str().unwrap(),
            "--queue",
            "files",
            "--ignore",
            "a[",
            "--debounce",
            "50ms",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(!d.exists(), "a refused watch creates nothing");
    let mut p = start_owner(
        &d,
        &[
            "watch",
            w.to_str().unwrap(),
            "--queue",
            "files",
            "--debounce",
            "50ms",
            "--max-wait",
            "1s",
        ],
    );
    std::fs::write(w.join("a.txt"), b"hello").unwrap();
    wait_for("the file job", Duration::from_secs(20), || {
        (stats(&d)["queues"]["files"]["waiting"] == 1).then_some(())
    });
    assert_eq!(p.term().code(), Some(0));
    let jobs = json_lines(&ok(&run(&d, &["--json", "jobs", "files"])));
    assert!(
        jobs[0]["payload"].to_string().contains("a.txt"),
        "{}",
        jobs[0]
    );
}

#[test]
fn batch_streams_ids_through_the_socket() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut owner = start_owner(d, &["work", "elsewhere", "--exec", "true"]);
    let mut child = durq(d)
        .args(["enqueue", "q", "--batch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    for i in 0..3 {
        writeln!(stdin, "{i}").unwrap();
        stdin.flush().unwrap();
        let id = lines
            .recv_timeout(Duration::from_secs(15))
            .expect("id printed while stdin is open");
        assert!(id.parse::<u64>().is_ok(), "{id}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert_eq!(stats(d)["queues"]["q"]["waiting"], 3);
    assert_eq!(owner.term().code(), Some(0));
}
