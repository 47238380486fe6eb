//! `GET /v1/events` (server-sent events), `/health` and `/ready` against the real `durq serve`
//! over loopback: a burst of enqueues read in order with every id, resume with
//! `Last-Event-ID` after a disconnect, the token rules, and `/ready` turning 503 when the
//! journal directory cannot be written.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A streaming SSE client over one HTTP/1.1 connection (chunked body decoded as it arrives).
struct SseClient {
    r: BufReader<TcpStream>,
    left: usize,
    buf: Vec<u8>,
}

impl SseClient {
    fn connect(addr: &str, headers: &[(&str, &str)]) -> Result<SseClient, (u16, String)> {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut req =
            format!("GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut status_line = String::new();
        r.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut chunked = false;
        let mut ty = String::new();
        let mut len = None;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            let l = l.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "transfer-encoding" && v.contains("chunked") {
                chunked = true;
            }
            if k == "content-type" {
                ty = v.clone();
            }
            if k == "content-length" {
                len = v.parse::<usize>().ok();
            }
        }
        if status != 200 {
            let mut body = vec![0; len.unwrap_or(0)];
            r.read_exact(&mut body).unwrap();
            return Err((status, String::from_utf8_lossy(&body).into_owned()));
        }
        assert!(ty.starts_with("text/event-stream"), "content type {ty}");
        assert!(chunked, "an event stream is chunked");
        Ok(SseClient {
            r,
            left: 0,
            buf: Vec::new(),
        })
    }

    /// The next line of the decoded body.
    fn line(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                return String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
            }
            if self.left == 0 {
                let mut size = String::new();
                self.r.read_line(&mut size).unwrap();
                if size.trim().is_empty() {
                    continue; // the CRLF after a chunk
                }
                self.left = usize::from_str_radix(size.trim(), 16).unwrap();
                assert!(self.left > 0, "the stream ended");
            }
            let mut chunk = vec![0; self.left];
            self.r.read_exact(&mut chunk).unwrap();
            self.left = 0;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The next event (comments and keep-alives skipped).
    fn next(&mut self) -> Sse {
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        loop {
            let l = self.line();
            if l.is_empty() {
                if !event.is_empty() || !data.is_empty() {
                    return Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    };
                }
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (k, v) = l.split_once(':').unwrap_or((&l, ""));
            let v = v.strip_prefix(' ').unwrap_or(v);
            match k {
                "id" => id = Some(v.parse().unwrap()),
                "event" => event = v.to_string(),
                "data" => data.push_str(v),
                _ => {}
            }
        }
    }
}

fn enqueue_batch(addr: &str, queue: &str, n: usize) -> Vec<String> {
    let jobs: Vec<Value> = (0..n).map(|i| json!({"payload": {"i": i}})).collect();
    let r = post_json(
        addr,
        &format!("/v1/queues/{queue}/jobs/batch"),
        &json!({ "jobs": jobs }),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn burst_in_order_with_every_id_and_resume_after_disconnect() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    // Subscribed once the head arrives: every later event reaches this client.
    let mut c = SseClient::connect(a, &[]).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.extend(enqueue_batch(a, "burst", 300));
    }
    for i in 0..50 {
        let r = post_json(a, "/v1/queues/single/jobs", &json!({"payload": i}));
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1250);

    // Read the first 700, then drop the connection.
    let mut got: Vec<Sse> = (0..700).map(|_| c.next()).collect();
    drop(c);
    let last = got.last().unwrap().id.unwrap();
    let mut c = SseClient::connect(a, &[("Last-Event-ID", &last.to_string())]).unwrap();
    got.extend((0..550).map(|_| c.next()));

    let seq: Vec<u64> = got
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    let first = seq[0];
    assert_eq!(
        seq,
        (first..first + 1250).collect::<Vec<_>>(),
        "ids are consecutive, in order, none twice"
    );
    assert!(got.iter().all(|e| e.event == "enqueued"), "no lagged event");
    let job_ids: Vec<String> = got
        .iter()
        .map(|e| e.data["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(job_ids, ids, "events in enqueue order");
    assert_eq!(got[0].data["queue"], "burst");
    assert_eq!(got[1249].data["queue"], "single");

    // A worker cycle over HTTP shows up as started then completed.
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["single"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    let r = post_json(a, &format!("/v1/jobs/{id}/ack"), &json!({"token": tok}));
    assert_eq!(r.status, 200);
    let e = c.next();
    assert_eq!(
        (e.event.as_str(), e.data["id"].as_str()),
        ("started", Some(id.as_str()))
    );
    assert_eq!(e.id, Some(first + 1250));
    let e = c.next();
    assert_eq!(e.event, "completed");
}

#[test]
fn resume_past_the_ring_gets_lagged_and_bad_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let c = SseClient::connect(a, &[("Last-Event-ID", "abc")]);
    let (status, body) = c.err().expect("refused");
    assert_eq!(status, 400);
    assert!(body.contains("Last-Event-ID"), "{body}");

    enqueue_batch(a, "q", 20);
    // Resume from 0: all 20 are still in the ring, in order, no lagged.
    let mut c = SseClient::connect(a, &[("Last-Event-ID", "0")]).unwrap();
    let got: Vec<u64> = (0..20).map(|_| c.next().id.unwrap()).collect();
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
    // A resume point beyond the last id just follows live events.
    let mut c = SseClient::connect(a, &[("Last-Event-ID", "999999")]).unwrap();
    enqueue_batch(a, "q", 1);
    assert_eq!(c.next().id, Some(21));
}

#[test]
fn events_need_the_token_health_and_ready_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "0123456789abcdef-token\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let data = dir.path().join("data");
    let s = start_serve(&data, &["--token-file", tok.to_str().unwrap()]);
    let a = s.addr.as_str();
    let (status, _) = SseClient::connect(a, &[])
        .err()
        .expect("refused without a token");
    assert_eq!(status, 401);
    let mut c =
        SseClient::connect(a, &[("Authorization", "Bearer 0123456789abcdef-token")]).unwrap();
    let r = http(
        a,
        "POST",
        "/v1/queues/q/jobs",
        &[
            ("Authorization", "Bearer 0123456789abcdef-token"),
            ("Content-Type", "application/json"),
        ],
        Some(br#"{"payload": 1}"#),
    );
    assert_eq!(r.status, 201);
    assert_eq!(c.next().event, "enqueued");

    let r = http(a, "GET", "/health", &[], None);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = http(a, "GET", "/ready", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "ready");
    assert!(r.json()["fsync_ms"].as_f64().unwrap() >= 0.0);
}

#[test]
fn ready_is_503_with_a_reason_while_the_journal_directory_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    assert_eq!(http(a, "GET", "/ready", &[], None).status, 200);
    // Where the probe file must go, a directory: creating the file fails as on a read-only or
    // broken journal directory (root ignores permission bits, so they cannot be used here).
    let blocker = dir.path().join("journal").join(".ready-probe");
    std::fs::create_dir(&blocker).unwrap();
    let r = http(a, "GET", "/ready", &[], None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["status"], "not_ready");
    let why = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        why.contains("cannot write to") && why.contains(".ready-probe"),
        "{why}"
    );
    assert_eq!(
        http(a, "GET", "/health", &[], None).status,
        200,
        "liveness stays up"
    );
    std::fs::remove_dir(&blocker).unwrap();
    let r = http(a, "GET", "/ready", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        !dir.path().join("journal").join(".ready-probe").exists(),
        "the probe leaves nothing behind"
    );
}

#[test]
fn watcher_counters_are_in_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let watched = dir.path().join("in");
    std::fs::create_dir(&watched).unwrap();
    let data = dir.path().join("data");
    let s = start_serve(
        &data,
        &["--watch", watched.to_str().unwrap(), "--queue", "files"],
    );
    let a = s.addr.as_str();
    std::fs::write(watched.join("a.txt"), b"hello watcher").unwrap();
    let sample = |m: &str, name: &str| -> Option<f64> {
        let prefix = format!("{name}{{dir=\"{}\",queue=\"files\"}} ", watched.display());
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
    };
    let m = wait_for(
        "the watcher's job in /metrics",
        Duration::from_secs(20),
        || {
            let m = http(a, "GET", "/metrics", &[], None).text();
            (sample(&m, "durq_watch_jobs_enqueued_total")? >= 1.0).then_some(m)
        },
    );
    assert!(m.contains("# TYPE durq_watch_events_total counter"));
    // Changes found by the start-up scan are not events: only the family is certain.
    assert!(sample(&m, "durq_watch_events_total").is_some());
    assert!(sample(&m, "durq_watch_hashed_bytes_total").unwrap() >= 13.0);
    assert_eq!(sample(&m, "durq_watch_errors_total"), Some(0.0));
    assert!(sample(&m, "durq_watch_rescans_total").is_some());
}

#[test]
fn sigterm_ends_open_event_streams_and_exits_zero_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_serve(dir.path(), &[]);
    let mut c = SseClient::connect(&s.addr, &[]).unwrap();
    enqueue_batch(&s.addr, "q", 1);
    assert_eq!(c.next().event, "enqueued");
    let t = std::time::Instant::now();
    let status = s.proc.term();
    assert!(status.success(), "{status:?}");
    // The stream was closed by the server, not cut after the 5 s request drain.
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "took {:?}",
        t.elapsed()
    );
    let mut rest = Vec::new();
    let _ = c.r.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).ends_with("0\r\n\r\n"),
        "the chunked stream ended properly: {:?}",
        String::from_utf8_lossy(&rest)
    );
}
