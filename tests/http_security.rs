//! Issue 9, "Nobody gets in", over real HTTP against the real `durq serve`: every attack of the
//! report is reproduced and must be refused (and change nothing): cross-site requests
//! (text/plain bodies, foreign `Origin`, `Sec-Fetch-Site`), DNS rebinding (foreign `Host`),
//! weak token files, an oversized batch (refused before the body is read, memory measured),
//! slow-loris heads and bodies, too many connections, login guessing; and the session rules
//! (lowercase bearer, JSON errors everywhere, CSRF, logout).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const TOKEN: &str = "correct-horse-battery-staple-42";

/// Writes a token file with `mode`.
fn token_file(dir: &Path, token: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("token-{mode:o}"));
    std::fs::write(&p, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// Sends raw request bytes (any `Host`), returns the parsed answer.
fn raw(addr: &str, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse(&out)
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn get_with_host(addr: &str, path: &str, host: &str) -> Resp {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Asserts a JSON error with `status` whose message contains `word`.
fn json_error(r: &Resp, status: u16, word: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.headers
    );
    let e = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(e.contains(word), "`{e}` lacks `{word}`");
}

fn waiting(addr: &str) -> serde_json::Value {
    http(addr, "GET", "/v1/stats", &[], None).json()["totals"]["waiting"].clone()
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

#[test]
fn text_plain_and_form_posts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let body = br#"{"payload":{"rm":"-rf"}}"#;
    // What a <form enctype="text/plain"> or a no-cors fetch() of any web page sends.
    for ct in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let h: Vec<(&str, &str)> = ct.map(|c| ("Content-Type", c)).into_iter().collect();
        let r = http(a, "POST", "/v1/queues/q/jobs", &h, Some(body));
        json_error(&r, 415, "application/json");
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    json_error(
        &http(a, "POST", "/v1/queues/q/pause", &form, Some(b"x=1")),
        415,
        "Content-Type",
    );
    json_error(
        &http(
            a,
            "POST",
            "/v1/queues/q/dlq/purge",
            &form,
            Some(b"all=true"),
        ),
        415,
        "Content-Type",
    );
    assert_eq!(waiting(a), 0, "nothing was enqueued");
    let st = http(a, "GET", "/v1/stats", &[], None).json();
    assert!(st["queues"]["q"]["paused"] != true, "not paused: {st}");
    // The same request with the JSON type works, and body-less POSTs need none.
    let json_ct = [("Content-Type", "application/json; charset=utf-8")];
    assert_eq!(
        http(a, "POST", "/v1/queues/q/jobs", &json_ct, Some(body)).status,
        201
    );
    assert_eq!(http(a, "POST", "/v1/queues/q/pause", &[], None).status, 200);
}

#[test]
fn cross_site_origin_and_fetch_metadata_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let p = port(a);
    let body = br#"{"payload":1}"#;
    let json_ct = ("Content-Type", "application/json");
    for origin in [
        "http://evil.example",
        "https://evil.example",
        "null",
        &format!("http://localhost:{}", p.parse::<u16>().unwrap() + 1),
        &format!("http://rebind.evil.example:{p}"),
    ] {
        let o = ("Origin", origin);
        json_error(
            &http(a, "POST", "/v1/queues/q/jobs", &[json_ct, o], Some(body)),
            403,
            "other sites",
        );
        json_error(&http(a, "GET", "/v1/stats", &[o], None), 403, "other sites");
        json_error(
            &http(a, "POST", "/v1/queues/q/pause", &[o], None),
            403,
            "other sites",
        );
    }
    for site in ["cross-site", "same-site"] {
        let f = ("Sec-Fetch-Site", site);
        json_error(&http(a, "GET", "/v1/stats", &[f], None), 403, site);
        json_error(&http(a, "GET", "/v1/queues/q/jobs", &[f], None), 403, site);
        json_error(&http(a, "GET", "/metrics", &[f], None), 403, site);
        json_error(
            &http(a, "POST", "/v1/queues/q/jobs", &[json_ct, f], Some(body)),
            403,
            site,
        );
    }
    assert_eq!(waiting(a), 0, "nothing was enqueued");
    // durq's own pages (same origin, by any of its names) and plain clients are served.
    for origin in [format!("http://{a}"), format!("http://localhost:{p}")] {
        let h = [
            json_ct,
            ("Origin", origin.as_str()),
            ("Sec-Fetch-Site", "same-origin"),
        ];
        assert_eq!(
            http(a, "POST", "/v1/queues/q/jobs", &h, Some(body)).status,
            201
        );
    }
    // A link from another site may open the (static) page, not the data.
    let nav = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
    ];
    assert_eq!(http(a, "GET", "/", &nav, None).status, 200);
    assert_eq!(waiting(a), 2);
}

#[test]
fn dns_rebinding_host_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &["--allow-host", "durq.internal.example"]);
    let a = s.addr.as_str();
    let p = port(a);
    assert_eq!(
        post_json(a, "/v1/queues/q/jobs", &json!({"payload": {"secret": 1}})).status,
        201
    );
    for host in [
        format!("rebind.evil.example:{p}"),
        "rebind.evil.example".to_string(),
        format!("localhost.evil.example:{p}"),
        format!("127.0.0.1.nip.io:{p}"),
        format!("10.9.8.7:{p}"),
    ] {
        for path in [
            "/v1/stats",
            "/v1/queues/q/jobs",
            "/metrics",
            "/v1/dashboard",
            "/",
        ] {
            let r = get_with_host(a, path, &host);
            json_error(&r, 421, "does not name this durq");
            assert!(!r.text().contains("secret"), "{}", r.text());
        }
    }
    // No Host at all (HTTP/1.0 style).
    let r = raw(a, b"GET /v1/stats HTTP/1.0\r\n\r\n");
    json_error(&r, 400, "Host");
    for host in [
        a.to_string(),
        format!("localhost:{p}"),
        format!("LocalHost:{p}"),
        format!("[::1]:{p}"),
        "durq.internal.example".to_string(),
        "durq.internal.example:443".to_string(),
    ] {
        let r = get_with_host(a, "/v1/stats", &host);
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
}

#[test]
fn weak_token_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let tf = token_file(dir.path(), TOKEN, mode);
        let data = dir.path().join(format!("data-{mode:o}"));
        let o = run(
            &data,
            &["serve", "--listen", "127.0.0.1:0", "--token-file", &tf],
        );
        assert_eq!(o.status.code(), Some(2), "{mode:o}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("chmod 600 {tf}")),
            "{}",
            stderr(&o)
        );
        assert!(!data.exists(), "a refused start creates nothing");
    }
    // A short token: fine on loopback, refused on every other address.
    let short = token_file(dir.path(), "a", 0o600);
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let data = dir.path().join("data-short");
        let o = run(
            &data,
            &["serve", "--listen", listen, "--token-file", &short],
        );
        assert_eq!(o.status.code(), Some(2), "{listen}: {}", stderr(&o));
        assert!(stderr(&o).contains("at least 16 bytes"), "{}", stderr(&o));
        assert!(!data.exists());
    }
    let s = start_serve(&dir.path().join("data-ok"), &["--token-file", &short]);
    let bearer = [("Authorization", "Bearer a")];
    assert_eq!(http(&s.addr, "GET", "/v1/stats", &bearer, None).status, 200);
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn oversized_batch_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.clone();
    let pid = s.proc.0.id();
    // Warm up the allocator and the stats path, then take the high-water mark.
    assert_eq!(waiting(&a), 0);
    let before = vm_hwm_kib(pid);

    // 1,000,000 tiny specs: 14 MB, under the 16 MiB body limit.
    let n = 1_000_000;
    let one = br#"{"payload":0},"#;
    let mut body = Vec::with_capacity(n * one.len() + 16);
    body.extend_from_slice(br#"{"jobs":["#);
    for _ in 0..n {
        body.extend_from_slice(one);
    }
    body.pop();
    body.extend_from_slice(b"]}");
    let total = body.len();
    let mut stream = TcpStream::connect(&a).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!(
        "POST /v1/queues/q/jobs/batch HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sent = std::thread::spawn(move || {
        let mut sent = 0;
        for chunk in body.chunks(16 << 10) {
            if writer.write_all(chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the answer (the server closes after it).
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let sent = sent.join().unwrap();
    let r = parse(&out);
    json_error(&r, 400, "at most 10000 jobs");
    let after = vm_hwm_kib(pid);
    let grown_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "batch of {n}: refused after the client wrote {sent} of {total} bytes; server peak RSS grew {grown_mib:.1} MiB"
    );
    assert!(
        sent < total,
        "the server read the whole body ({sent} of {total} bytes) before refusing"
    );
    assert!(
        grown_mib < 16.0,
        "peak RSS grew {grown_mib:.1} MiB for a refused batch"
    );
    assert_eq!(waiting(&a), 0, "nothing was enqueued");

    // Exactly the limit is accepted.
    let specs: Vec<_> = (0..10_000).map(|i| json!({"payload": i})).collect();
    let r = post_json(&a, "/v1/queues/q/jobs/batch", &json!({ "jobs": specs }));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(waiting(&a), 10_000);
}

/// Reads until the server closes the connection; returns how long that took.
fn time_to_close(s: &mut TcpStream, start: Instant, limit: Duration) -> Option<Duration> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn slow_loris_heads_idle_connections_and_slow_bodies_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(
        dir.path(),
        &["--header-timeout", "1s", "--body-timeout", "1500ms"],
    );
    let a = s.addr.clone();

    // A head that never ends: one byte every 100 ms.
    let mut loris = TcpStream::connect(&a).unwrap();
    let start = Instant::now();
    let head = format!("GET /v1/stats HTTP/1.1\r\nHost: {a}\r\nX-Slow: ");
    loris.write_all(head.as_bytes()).unwrap();
    let mut w = loris.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if w.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let closed = time_to_close(&mut loris, start, Duration::from_secs(8))
        .expect("the slow-loris connection was never closed");
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?}, before the header timeout"
    );
    trickle.join().unwrap();

    // A connection that sends nothing at all.
    let mut idle = TcpStream::connect(&a).unwrap();
    let start = Instant::now();
    let closed = time_to_close(&mut idle, start, Duration::from_secs(8))
        .expect("the idle connection was never closed");
    assert!(closed >= Duration::from_millis(900), "{closed:?}");

    // A keep-alive connection that goes quiet after its first answer.
    let mut ka = TcpStream::connect(&a).unwrap();
    ka.write_all(format!("GET /v1/stats HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
        .unwrap();
    let start = Instant::now();
    assert!(
        time_to_close(&mut ka, start, Duration::from_secs(8)).is_some(),
        "the idle keep-alive connection was never closed"
    );

    // A body that trickles in: 408 once the body deadline passes.
    let mut slow = TcpStream::connect(&a).unwrap();
    slow.write_all(
        format!(
            "POST /v1/queues/q/jobs HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"payload\":\""
        )
        .as_bytes(),
    )
    .unwrap();
    let mut w = slow.try_clone().unwrap();
    let start = Instant::now();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if w.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !(out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}")) {
        match slow.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
    let took = start.elapsed();
    let _ = slow.shutdown(std::net::Shutdown::Both);
    trickle.join().unwrap();
    json_error(&parse(&out), 408, "did not arrive within");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(waiting(&a), 0);
    // A long-poll longer than the header timeout is not cut off: the timer only runs while
    // the server waits for a request head.
    let t = Instant::now();
    let r = post_json(
        &a,
        "/v1/reserve",
        &json!({"queues": ["q"], "wait": "2500ms"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        t.elapsed()
    );
    // The server still answers.
    assert_eq!(http(&a, "GET", "/v1/stats", &[], None).status, 200);
}

#[test]
fn connections_past_the_cap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(
        dir.path(),
        &["--max-connections", "3", "--header-timeout", "60s"],
    );
    let a = s.addr.clone();
    // Three connections that hold their slot (the accept queue is FIFO, so the server has
    // taken all three before it looks at the fourth).
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&a).unwrap()).collect();
    let r = http(&a, "GET", "/v1/stats", &[], None);
    json_error(&r, 503, "too many connections");
    assert_eq!(r.header("retry-after"), Some("1"));
    // 50 more at once: all refused, none hangs, the server stays up.
    let refused: Vec<u16> = (0..50)
        .map(|_| http(&a, "GET", "/v1/stats", &[], None).status)
        .collect();
    assert!(refused.iter().all(|&s| s == 503), "{refused:?}");
    // Free one slot: requests are served again.
    drop(held.pop());
    wait_for("a free slot", Duration::from_secs(10), || {
        (http(&a, "GET", "/v1/stats", &[], None).status == 200).then_some(())
    });
    drop(held);
}

fn login(a: &str, token: &str) -> Resp {
    http(
        a,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(format!("token={token}").as_bytes()),
    )
}

#[test]
fn token_guesses_are_throttled_per_ip() {
    let dir = tempfile::tempdir().unwrap();
    let tf = token_file(dir.path(), TOKEN, 0o600);
    let s = start_serve(&dir.path().join("data"), &["--token-file", &tf]);
    let a = s.addr.as_str();
    let mut n = 0;
    let limited = loop {
        let r = login(a, &format!("guess-{n}"));
        n += 1;
        if r.status == 429 {
            break r;
        }
        assert_eq!(r.status, 401, "{}", r.text());
        assert!(n < 40, "{n} wrong guesses and no 429");
    };
    assert!(n > 10, "the first 10 guesses are answered ({n})");
    json_error(&limited, 429, "too many wrong tokens");
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // While the budget is spent, even the right token (and any bearer) gets 429: the answers
    // reveal nothing.
    assert_eq!(login(a, TOKEN).status, 429);
    let bearer = format!("Bearer {TOKEN}");
    let r = http(a, "GET", "/v1/stats", &[("Authorization", &bearer)], None);
    assert_eq!(r.status, 429);
    let t0 = Instant::now();
    let r = wait_for("the budget to refill", Duration::from_secs(10), || {
        let r = login(a, TOKEN);
        (r.status != 429).then_some(r)
    });
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let tf = token_file(dir.path(), TOKEN, 0o600);
    let s = start_serve(&dir.path().join("data"), &["--token-file", &tf]);
    let a = s.addr.as_str();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let h = format!("{scheme} {TOKEN}");
        let r = http(a, "GET", "/v1/stats", &[("Authorization", &h)], None);
        assert_eq!(r.status, 200, "{scheme}: {}", r.text());
    }
    for bad in [
        format!("Basic {TOKEN}"),
        TOKEN.to_string(),
        format!("Bearer {TOKEN}x"),
    ] {
        let r = http(a, "GET", "/v1/stats", &[("Authorization", &bad)], None);
        json_error(&r, 401, "token");
    }
}

#[test]
fn every_error_is_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let json_ct = [("Content-Type", "application/json")];
    json_error(&http(a, "GET", "/nope", &[], None), 404, "no such endpoint");
    json_error(
        &http(a, "GET", "/v1/nope", &[], None),
        404,
        "no such endpoint",
    );
    json_error(
        &http(a, "GET", "/assets/nope.js", &[], None),
        404,
        "no such",
    );
    let r = http(a, "GET", "/v1/reserve", &[], None);
    json_error(&r, 405, "GET is not allowed on /v1/reserve");
    assert!(r.header("allow").is_some_and(|v| v.contains("POST")));
    json_error(
        &http(a, "DELETE", "/v1/stats", &[], None),
        405,
        "not allowed",
    );
    json_error(
        &http(a, "OPTIONS", "/v1/queues/q/jobs", &[], None),
        405,
        "not allowed",
    );
    json_error(
        &http(a, "PUT", "/v1/queues/q/jobs", &json_ct, Some(b"{}")),
        405,
        "not allowed",
    );
    json_error(
        &http(
            a,
            "POST",
            "/v1/queues/q/jobs",
            &[("Content-Type", "text/plain")],
            Some(b"{}"),
        ),
        415,
        "application/json",
    );
    json_error(
        &http(a, "GET", "/v1/queues/q/jobs?limit=lots", &[], None),
        400,
        "query string",
    );
    json_error(
        &http(a, "GET", "/v1/queues/q/jobs?colour=red", &[], None),
        400,
        "colour",
    );
    json_error(&http(a, "GET", "/v1/jobs/%FF%FE", &[], None), 400, "");
    // 413 from the declared length alone: the body is never sent.
    let r = raw(
        a,
        format!(
            "POST /v1/queues/q/jobs HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            17 << 20
        )
        .as_bytes(),
    );
    json_error(&r, 413, "limit");
    // And the security headers on every answer.
    let r = http(a, "GET", "/", &[], None);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r
        .header("content-security-policy")
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    assert!(r.header("access-control-allow-origin").is_none());
}

fn cookie_pair(r: &Resp) -> String {
    r.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

fn csrf_of(page: &str) -> String {
    let i = page
        .find(r#"name="csrf-token" content=""#)
        .expect("a CSRF meta tag")
        + 27;
    page[i..i + page[i..].find('"').unwrap()].to_string()
}

#[test]
fn sessions_csrf_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let tf = token_file(dir.path(), TOKEN, 0o600);
    let d = dir.path().join("data");
    ok(&run(&d, &["enqueue", "dq", "{}", "--max-retries", "0"]));
    let s = start_serve(&d, &["--token-file", &tf]);
    let a = s.addr.as_str();

    let r = login(a, TOKEN);
    assert_eq!(r.status, 303, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    assert!(!set.contains("Secure"), "{set}");
    assert!(!set.contains(TOKEN));
    let c1 = cookie_pair(&r);
    // A second login gets a different session: the cookie is random, not a hash of the token.
    let c2 = cookie_pair(&login(a, TOKEN));
    assert_ne!(c1, c2);

    let page = http(a, "GET", "/", &[("Cookie", &c1)], None);
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.text());
    assert_eq!(csrf.len(), 64, "{csrf}");
    assert!(page.text().contains(r#"action="/logout""#));

    // Changes with the cookie need the session's CSRF token.
    let json_ct = ("Content-Type", "application/json");
    let body = br#"{"all":true}"#;
    let path = "/v1/queues/dq/dlq/requeue";
    json_error(
        &http(a, "POST", path, &[json_ct, ("Cookie", &c1)], Some(body)),
        403,
        "CSRF",
    );
    let other = csrf_of(&http(a, "GET", "/", &[("Cookie", &c2)], None).text());
    json_error(
        &http(
            a,
            "POST",
            path,
            &[json_ct, ("Cookie", &c1), ("X-CSRF-Token", &other)],
            Some(body),
        ),
        403,
        "CSRF",
    );
    let r = http(
        a,
        "POST",
        path,
        &[json_ct, ("Cookie", &c1), ("X-CSRF-Token", &csrf)],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Reads need no CSRF token.
    assert_eq!(
        http(a, "GET", "/v1/dashboard", &[("Cookie", &c1)], None).status,
        200
    );

    // Logout needs the CSRF token too, then the cookie is dead; the other session lives on.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    json_error(
        &http(
            a,
            "POST",
            "/logout",
            &[form, ("Cookie", &c1)],
            Some(b"csrf=wrong"),
        ),
        403,
        "CSRF",
    );
    let r = http(
        a,
        "POST",
        "/logout",
        &[form, ("Cookie", &c1)],
        Some(format!("csrf={csrf}").as_bytes()),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = http(a, "GET", "/v1/dashboard", &[("Cookie", &c1)], None);
    json_error(&r, 401, "token");
    let r = http(a, "GET", "/", &[("Cookie", &c1)], None);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("<form"), "the login page again");
    assert_eq!(
        http(a, "GET", "/v1/dashboard", &[("Cookie", &c2)], None).status,
        200
    );

    // Secure when served behind TLS.
    let r = http(
        a,
        "POST",
        "/login",
        &[form, ("X-Forwarded-Proto", "https")],
        Some(format!("token={TOKEN}").as_bytes()),
    );
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
    drop(s);
    let s = start_serve(&d, &["--token-file", &tf, "--cookie-secure"]);
    let r = login(&s.addr, TOKEN);
    assert!(r.header("set-cookie").unwrap().contains("; Secure"));
    // A restart forgot the old sessions.
    assert_eq!(
        http(&s.addr, "GET", "/v1/dashboard", &[("Cookie", &c2)], None).status,
        401
    );
}
