//! Alerts of the real `durq serve` reaching a person: the built-in rules are on by default,
//! every raise and clear is POSTed once to a webhook the test runs on loopback (a refused
//! delivery is retried), logged as JSON with `--log-format json`, and published on
//! `/metrics`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// One POST the receiver got, and the status it answered.
#[derive(Debug)]
struct Got {
    status: u16,
    path: String,
    body: Value,
}

/// A webhook receiver on loopback answering 500 to the first `fail_first` requests.
fn receiver(fail_first: usize) -> (String, mpsc::Receiver<Got>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/durq", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
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
            let status = if n < fail_first { 500 } else { 200 };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let body = serde_json::from_slice(&body).unwrap();
            if tx.send(Got { status, path, body }).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

fn next(rx: &mpsc::Receiver<Got>, what: &str) -> Got {
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no webhook POST for {what}"))
}

#[test]
fn raised_and_cleared_once_each_to_the_webhook_and_the_json_log() {
    let (url, hooks) = receiver(1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("durq.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[alerts]
interval = "100ms"
webhook = "{url}"

[[alerts.rules]]
name = "q_depth"
measure = "depth"
queue = "q"
threshold = 2
"#
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = start_serve(
        &data,
        &["--config", cfg.to_str().unwrap(), "--log-format", "json"],
    );
    let a = s.addr.as_str();

    // Every built-in rule is loaded next to the file's.
    let m = http(a, "GET", "/metrics", &[], None).text();
    for rule in [
        "dead_letters",
        "failure_rate",
        "oldest_waiting",
        "breaker_open",
        "fsync_stalls",
        "q_depth",
    ] {
        assert!(
            m.contains(&format!("durq_alert_firing{{rule=\"{rule}\"}} 0")),
            "{rule} in /metrics:\n{m}"
        );
    }

    // Depth 3 > 2: raised. The first delivery is answered 500 and retried.
    for i in 0..3 {
        assert_eq!(
            post_json(a, "/v1/queues/q/jobs", &json!({"payload": i})).status,
            201
        );
    }
    let first = next(&hooks, "the raise");
    assert_eq!(first.status, 500);
    let raised = next(&hooks, "the retried raise");
    assert_eq!(raised.status, 200);
    assert_eq!(raised.body, first.body, "the retry sends the same alert");
    assert_eq!(raised.path, "/hooks/durq");
    assert_eq!(raised.body["rule"], "q_depth");
    assert_eq!(raised.body["change"], "raised");
    assert_eq!(raised.body["value"], 3.0);
    assert_eq!(raised.body["threshold"], 2.0);
    assert!(raised.body["text"]
        .as_str()
        .unwrap()
        .contains("q_depth raised"));
    let m = http(a, "GET", "/metrics", &[], None).text();
    assert!(m.contains("durq_alert_firing{rule=\"q_depth\"} 1"), "{m}");

    // Depth back to 2: cleared.
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"]}));
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        post_json(a, &format!("/v1/jobs/{id}/ack"), &json!({"token": tok})).status,
        200
    );
    let cleared = next(&hooks, "the clear");
    assert_eq!(
        (
            cleared.status,
            &cleared.body["rule"],
            &cleared.body["change"]
        ),
        (200, &json!("q_depth"), &json!("cleared"))
    );

    // A dead letter raises the built-in dead_letters rule. Deliveries are in order, so any
    // repeat of q_depth would have come before it.
    let r = post_json(a, "/v1/queues/d/jobs", &json!({"payload": 1}));
    assert_eq!(r.status, 201);
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["d"]}));
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    let r = post_json(
        a,
        &format!("/v1/jobs/{id}/fail"),
        &json!({"token": tok, "error": "boom", "give_up": true}),
    );
    assert_eq!(r.json()["outcome"], "dead");
    let dead = next(&hooks, "the dead-letter alert");
    assert_eq!(
        (dead.status, &dead.body["rule"], &dead.body["change"]),
        (200, &json!("dead_letters"), &json!("raised")),
        "no second q_depth POST before it: {:?}",
        dead.body
    );

    // The log sink, as JSON lines on stderr.
    let mut seen = Vec::new();
    wait_for(
        "the JSON log lines of both changes",
        Duration::from_secs(20),
        || {
            while let Ok(l) = s.stderr.try_recv() {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    if v["fields"]["rule"] == "q_depth" {
                        seen.push(v["fields"]["message"].as_str().unwrap_or("").to_string());
                    }
                }
            }
            (seen.len() >= 2).then_some(())
        },
    );
    assert_eq!(seen, vec!["alert raised", "alert cleared"]);
}

#[test]
fn built_in_rules_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &["--no-default-alerts"]);
    let m = http(&s.addr, "GET", "/metrics", &[], None).text();
    assert!(!m.contains("durq_alert_firing{"), "{m}");
}
