//! `durq serve --config FILE` through the real binary: every error case is one sentence naming
//! the file line and the key, exit 2, and nothing is created; a full file starts a server
//! whose workers, retry policy and listen address come from it, with flags winning.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::*;

/// Runs `serve --config` on `text` with a data dir that must stay absent; returns stderr.
fn refused(text: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("durq.toml");
    std::fs::write(&cfg, text).unwrap();
    let data = dir.path().join("data");
    let out = durq(&data)
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "exit 2 for {text:?}: {err}");
    assert!(!data.exists(), "nothing was created for {text:?}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("durq.toml"), "names the file: {err}");
    err
}

#[test]
fn every_error_names_the_line_and_the_key_and_starts_nothing() {
    let cases: &[(&str, &[&str])] = &[
        // (file, words the message must hold)
        (
            "listen = \"127.0.0.1:0\"\n\ncolour = 1\n",
            &["line 3", "colour"],
        ),
        (
            "fsync = \"sometimes\"\n",
            &["line 1", "fsync", "always, everysec or no"],
        ),
        (
            "listen = \"nowhere\"\n",
            &["line 1", "listen", "127.0.0.1:7878"],
        ),
        ("grace = 30\n", &["line 1", "grace"]),
        (
            "[queues.mail]\nexec = \"true\"\nconcurrency = \"five\"\n",
            &["line 3", "concurrency"],
        ),
        (
            "[queues.mail]\nconcurrence = 3\n",
            &["line 2", "concurrence"],
        ),
        (
            "[queues.mail]\nconcurrency = 0\n",
            &["line 2", "`concurrency`", "mail", "concurrency 0"],
        ),
        (
            "[queues.mail]\nrate = \"30/d\"\n",
            &["line 2", "rate", "unknown unit"],
        ),
        (
            "[queues.mail]\nkey_rate = \"-1/s\"\n",
            &["line 2", "key_rate"],
        ),
        (
            "[queues.mail]\nautoscale = \"16..2\"\n",
            &["line 2", "autoscale", "MIN..MAX"],
        ),
        (
            "[queues.mail]\nlease = \"5 parsecs\"\n",
            &["line 2", "lease"],
        ),
        (
            "[queues.mail]\nlease = \"10ms\"\n",
            &["line 2", "`lease`", "100ms"],
        ),
        (
            "[queues.mail]\n[queues.mail.retry]\nfactor = 0.5\n",
            &["line 3", "`factor`", "mail", "retry factor"],
        ),
        (
            "[queues.mail]\n[queues.mail.retry]\nbackof = \"1s\"\n",
            &["line 3", "backof"],
        ),
        (
            "[queues.mail.breaker]\nfailure_rate = 2.0\n",
            &["line 2", "`failure_rate`", "mail", "failure rate"],
        ),
        (
            "[queues.\"no spaces\"]\nexec = \"true\"\n",
            &["line 1", "no spaces"],
        ),
        ("[queues.bot.telegram]\n", &["line 1", "bot", "telegram"]),
        (
            "[alerts]\nwebhook = \"ftp://x\"\n",
            &["line 2", "webhook", "http://"],
        ),
        ("[alerts]\ninterval = \"soon\"\n", &["line 2", "interval"]),
        (
            "[[alerts.rules]]\nname = \"x\"\nmeasure = \"cpu\"\nthreshold = 1\n",
            &["line 3", "measure", "cpu"],
        ),
        (
            "[[alerts.rules]]\nname = \"x\"\nmeasure = \"depth\"\nthreshold = 1\nwindow = \"1m\"\n",
            &["line 1", "window"],
        ),
        (
            "[[alerts.rules]]\nname = \"x\"\nmeasure = \"depth\"\n",
            &["line 1", "threshold"],
        ),
        (
            "[[alerts.rules]]\nname = \"bad name\"\nmeasure = \"depth\"\nthreshold = 1\n",
            &["line 1", "bad name"],
        ),
        ("listen = \n", &["line 1"]),
    ];
    for (text, words) in cases {
        let err = refused(text, &[]);
        for w in *words {
            assert!(err.contains(w), "{text:?}: message lacks {w:?}: {err}");
        }
    }
}

#[test]
fn a_missing_file_and_bad_flags_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run(&data, &["serve", "--config", "/nonexistent/durq.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read the config file /nonexistent/durq.toml"));
    for (flag, value, words) in [
        ("--rate", "30/d", "unknown unit"),
        ("--key-rate", "0/s", "positive number"),
        ("--autoscale", "5..2", "MIN..MAX"),
        ("--log-format", "xml", "text, json"),
    ] {
        for cmd in ["serve", "work"] {
            let mut args = vec![cmd, flag, value];
            if cmd == "work" {
                args.push("q");
            }
            let out = run(&data, &args);
            assert_eq!(out.status.code(), Some(2), "{cmd} {flag} {value}");
            let err = stderr(&out);
            assert!(err.contains(words), "{cmd} {flag} {value}: {err}");
        }
    }
    assert!(!data.exists());
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("durq.toml");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn a_full_file_runs_its_workers_with_its_retry_policy_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            r#"# every top-level key
data = "{data}"
fsync = "always"
listen = "127.0.0.1:1"
grace = "5s"

[queues.echo]
concurrency = 2
lease = "10s"
rate = "1000/s"
key_rate = "100/s"
exec = "cat > {out}/$DURQ_JOB_ID"

[queues.echo.retry]
max_retries = 7
backoff = "2s"
factor = 3.0
max_backoff = "1m"
jitter = 0.1

[queues.echo.breaker]
failures = 3
window = "10s"
failure_rate = 0.5
min_calls = 10
cooldown = "5s"

[queues.auto]
autoscale = "1..4"
exec = "exit 1"

[queues.auto.retry]
max_retries = 0

[alerts]
defaults = true
interval = "1s"

[[alerts.rules]]
name = "echo_backlog"
measure = "depth"
queue = "echo"
threshold = 100
hold = "30s"
"#,
            data = data.display(),
            out = out.display()
        ),
    );
    // --listen wins over the file's unusable port 1; --data is not given, so the file's wins.
    let s =
        start_serve_without_data(&["--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let a = s.addr.as_str();
    let r = post_json(a, "/v1/queues/echo/jobs", &json!({"payload": {"hi": 1}}));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let file = out.join(&id);
    let body = wait_for("the exec handler's output", Duration::from_secs(20), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|s| !s.is_empty())
    });
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"hi": 1})
    );
    // The queue's retry policy reached the store: a failing job of `auto` goes dead at once.
    let r = post_json(a, "/v1/queues/auto/jobs", &json!({"payload": 1}));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let dead = wait_for(
        "the failing job to be dead",
        Duration::from_secs(20),
        || {
            let j = http(a, "GET", &format!("/v1/jobs/{id}"), &[], None).json();
            (j["state"] == "dead").then_some(j)
        },
    );
    assert_eq!(dead["attempts"], 1, "max_retries = 0 from the file: {dead}");
    let j = http(a, "GET", "/v1/queues/echo/jobs?state=completed", &[], None).json();
    assert_eq!(j["jobs"].as_array().unwrap().len(), 1, "{j}");
    assert!(
        data.join("journal").is_dir(),
        "the data dir comes from the file"
    );
    drop(s);
}

/// `start_serve` without `--data` (the config file decides).
fn start_serve_without_data(extra: &[&str]) -> Server {
    use std::process::Stdio;
    let mut child = std::process::Command::new(BIN)
        .env_remove("DURQ_DATA")
        .env("RUST_LOG", "debug")
        .arg("serve")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = line_channel(child.stderr.take().unwrap());
    let proc = Proc(child);
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("serve prints its address");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim_end_matches('/').to_string();
        }
    };
    Server {
        proc,
        addr,
        stderr: rx,
    }
}

#[test]
fn work_logs_json_with_a_span_per_attempt_and_takes_the_pool_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&run(
        &data,
        &["enqueue", "q", "{\"n\":1}", "--key", "k1", "--kind", "mail"],
    ));
    let out = durq(&data)
        .env("RUST_LOG", "durq=debug")
        .args([
            "work",
            "q",
            "--exec",
            "cat >/dev/null",
            "--until-empty",
            "--log-format",
            "json",
            "--autoscale",
            "1..3",
            "--rate",
            "100/s",
            "--key-rate",
            "10/s",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|v| v["fields"]["message"] == "attempt finished")
        .unwrap_or_else(|| panic!("no attempt line in {lines:#?}"));
    let span = &done["span"];
    assert_eq!(span["name"], "job");
    assert_eq!(span["queue"], "q");
    assert_eq!(span["kind"], "mail");
    assert_eq!(span["key"], "k1");
    assert_eq!(span["attempt"], 1);
    assert!(
        span["id"]
            .as_str()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{span}"
    );
    assert_eq!(done["level"], "DEBUG");
}

/// The `telegram` handler from the file: the token comes from a 0600 file, messages reach a
/// fake Bot API the test runs on loopback, and the token is in no log line.
#[cfg(feature = "telegram")]
#[test]
fn a_telegram_queue_from_the_file_sends_through_the_bot_api() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::fs::PermissionsExt;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let answer = r#"{"ok":true,"result":{"message_id":1}}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let _ = tx.send((
                path,
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            ));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("bot");
    std::fs::write(&token, "123:SECRET-bot-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[queues.bot.telegram]\ntoken_file = \"{}\"\nbase_url = \"{api}\"\n",
            token.display()
        ),
    );
    let mut s = start_serve(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let r = post_json(
        &s.addr,
        "/v1/queues/bot/jobs",
        &json!({"payload": {"chat_id": 42, "text": "hello from durq"}, "kind": "telegram_message", "key": "42"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (path, body) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a sendMessage call");
    assert_eq!(path, "/bot123:SECRET-bot-token/sendMessage");
    assert_eq!(body["chat_id"], 42);
    assert_eq!(body["text"], "hello from durq");
    let id = r.json()["id"].as_str().unwrap().to_string();
    wait_for(
        "the message job to complete",
        Duration::from_secs(20),
        || {
            let j = http(&s.addr, "GET", &format!("/v1/jobs/{id}"), &[], None).json();
            (j["state"] == "completed").then_some(())
        },
    );
    s.proc.term();
    let log: Vec<String> = s.stderr.iter().collect();
    assert!(
        log.iter().all(|l| !l.contains("SECRET-bot-token")),
        "the token is in the log"
    );
}
