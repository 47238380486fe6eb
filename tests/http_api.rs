//! `durq serve` over real HTTP: every `/v1` endpoint, `/metrics` checked by a parser, the
//! dashboard, auth (bearer, login cookie, refused bind), 413/400, and a curl worker loop.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;
use support::*;

#[test]
fn every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();

    let r = post_json(
        a,
        "/v1/queues/q/jobs",
        &json!({"payload": {"n": 1}, "kind": "k", "priority": "high", "key": "p"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id1 = r.json()["id"].as_str().unwrap().to_string();
    let r = post_json(a, "/v1/queues/q/jobs", &json!({"payload": 2, "dedup": "d"}));
    assert_eq!(r.status, 201);
    let r2 = post_json(a, "/v1/queues/q/jobs", &json!({"payload": 3, "dedup": "d"}));
    assert_eq!(r2.status, 200);
    assert_eq!(r2.json()["duplicate"], true);
    assert_eq!(r2.json()["id"], r.json()["id"]);
    let r = post_json(
        a,
        "/v1/queues/q/jobs/batch",
        &json!({"jobs": [{"payload": "a"}, {"payload": "b", "delay": "1h"}]}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["jobs"].as_array().unwrap().len(), 2);

    let r = http(a, "GET", "/v1/stats", &[], None);
    assert_eq!(r.json()["queues"]["q"]["waiting"], 3);
    assert_eq!(r.json()["queues"]["q"]["delayed"], 1);
    assert_eq!(r.json()["totals"]["waiting"], 3);
    let r = http(
        a,
        "GET",
        "/v1/queues/q/jobs?state=waiting&limit=2",
        &[],
        None,
    );
    let jobs = r.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["id"], id1.as_str());
    assert_eq!(jobs[0]["priority"], 192);
    let r = http(a, "GET", &format!("/v1/jobs/{id1}"), &[], None);
    assert_eq!(r.json()["payload"], json!({"n": 1}));
    assert_eq!(http(a, "GET", "/v1/jobs/12345", &[], None).status, 404);
    assert_eq!(http(a, "GET", "/v1/jobs/abc", &[], None).status, 400);

    // Worker cycle.
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"], "lease": "10s"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let l = r.json();
    assert_eq!(l["job"]["id"], id1.as_str());
    assert_eq!(l["job"]["attempts"], 1);
    let token = l["token"].as_str().unwrap().to_string();
    let r = post_json(
        a,
        &format!("/v1/jobs/{id1}/heartbeat"),
        &json!({"token": token, "lease": "20s"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["expires_at"].is_string());
    let r = post_json(
        a,
        &format!("/v1/jobs/{id1}/ack"),
        &json!({"token": "00000000000000ff"}),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"].is_string());
    let r = post_json(a, &format!("/v1/jobs/{id1}/ack"), &json!({"token": token}));
    assert_eq!(r.status, 200, "{}", r.text());

    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"]}));
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    let r = post_json(
        a,
        &format!("/v1/jobs/{id}/fail"),
        &json!({"token": tok, "error": "nope", "retry_after": "1h"}),
    );
    assert_eq!(r.json()["outcome"], "retrying", "{}", r.text());
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"]}));
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    let r = post_json(a, &format!("/v1/jobs/{id}/release"), &json!({"token": tok}));
    assert_eq!(r.status, 200);
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"]}));
    let (id, tok) = (
        r.json()["job"]["id"].as_str().unwrap().to_string(),
        r.json()["token"].as_str().unwrap().to_string(),
    );
    let r = post_json(
        a,
        &format!("/v1/jobs/{id}/fail"),
        &json!({"token": tok, "error": "fatal", "give_up": true}),
    );
    assert_eq!(r.json()["outcome"], "dead");

    let r = http(a, "GET", "/v1/queues/q/dlq", &[], None);
    let dead = r.json()["jobs"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["errors"][0]["error"], "fatal");
    let r = post_json(a, "/v1/queues/q/dlq/requeue", &json!({"ids": [id]}));
    assert_eq!(r.json()["requeued"], 1);
    // Take everything now ready, then an empty long-poll answers 204.
    while post_json(a, "/v1/reserve", &json!({"queues": ["q"], "lease": "1h"})).status == 200 {}
    let t = std::time::Instant::now();
    let r = post_json(a, "/v1/reserve", &json!({"queues": ["q"], "wait": "300ms"}));
    assert_eq!(r.status, 204);
    assert!(t.elapsed() >= std::time::Duration::from_millis(250));
    let r = post_json(a, "/v1/queues/q/dlq/purge", &json!({"all": true}));
    assert_eq!(r.json()["purged"], 0);
    let r = post_json(a, "/v1/queues/q/pause", &json!({}));
    assert_eq!(r.json()["paused"], true);
    assert_eq!(
        http(a, "GET", "/v1/stats", &[], None).json()["queues"]["q"]["paused"],
        true
    );
    let r = post_json(a, "/v1/queues/q/resume", &json!({}));
    assert_eq!(r.json()["paused"], false);

    let r = http(a, "GET", "/v1/metrics", &[], None);
    assert!(r.json()["series"].is_array(), "{}", r.text());
    let r = http(a, "GET", "/v1/dashboard", &[], None);
    assert!(r.json()["stats"]["queues"]["q"].is_object());
    let r = http(a, "GET", "/", &[], None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/assets/app.js"));
    assert!(
        !r.text().contains("http://") && !r.text().contains("https://"),
        "no external resources"
    );
    assert_eq!(http(a, "GET", "/assets/app.js", &[], None).status, 200);
    assert_eq!(http(a, "GET", "/assets/style.css", &[], None).status, 200);
    assert_eq!(http(a, "GET", "/nope", &[], None).status, 404);
    assert!(http(a, "GET", "/nope", &[], None).json()["error"].is_string());
}

/// Parses the Prometheus text format; checks HELP/TYPE precede every family's samples.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut help = BTreeSet::new();
    let mut typed = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(help.insert(name.to_string()), "two HELP lines for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&ty),
                "{line}"
            );
            typed.insert(name.to_string(), ty.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if let Some(l) = series.strip_prefix(name) {
            if !l.is_empty() {
                assert!(l.starts_with('{') && l.ends_with('}'), "{line}");
            }
        }
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            help.contains(family) && typed.contains_key(family),
            "{family} lacks HELP/TYPE before {line}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

#[test]
fn metrics_and_worker_pool_in_serve() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&run(d, &["enqueue", "w", "{}"]));
    ok(&run(
        d,
        &["enqueue", "w", "{}", "--kind", "bad", "--max-retries", "0"],
    ));
    let s = start_serve(
        d,
        &[
            "--work",
            "w",
            "--exec",
            "cat >/dev/null; [ \"$DURQ_KIND\" != bad ]",
            "--work",
            "v",
            "--exec",
            "cat >/dev/null",
        ],
    );
    ok(&run(d, &["enqueue", "v", "{}"]));
    wait_for("jobs to finish", std::time::Duration::from_secs(20), || {
        let st = http(&s.addr, "GET", "/v1/stats", &[], None).json();
        (st["queues"]["w"]["completed"] == 1
            && st["queues"]["w"]["dead"] == 1
            && st["queues"]["v"]["completed"] == 1)
            .then_some(())
    });
    let r = http(&s.addr, "GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let m = parse_prometheus(&r.text());
    assert_eq!(
        m.get(r#"durq_jobs{queue="w",state="completed"}"#),
        Some(&1.0),
        "{}",
        r.text()
    );
    assert_eq!(m.get(r#"durq_jobs{queue="w",state="dead"}"#), Some(&1.0));
    // Two pools of 5: both report their workers; events are counted once, not per pool.
    let workers = m[r#"durq_workers{state="busy"}"#] + m[r#"durq_workers{state="idle"}"#];
    assert_eq!(workers, 10.0, "{}", r.text());
    assert_eq!(
        m.get(r#"durq_jobs_completed_total{queue="v",kind="default"}"#),
        Some(&1.0),
        "{}",
        r.text()
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("durq_") && k.contains("completed")),
        "{}",
        r.text()
    );
    // The CLI is answered by serve's socket.
    assert_eq!(stats(d)["queues"]["w"]["completed"], 1);
}

#[test]
fn auth_token_cookie_and_refused_bind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let tf = dir.path().join("token");
    std::fs::write(&tf, "  s3cret-token-of-32-bytes-or-so\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let s = start_serve(&d, &["--token-file", tf.to_str().unwrap()]);
    let a = s.addr.as_str();
    for (m, p) in [
        ("GET", "/v1/stats"),
        ("GET", "/metrics"),
        ("POST", "/v1/queues/q/jobs"),
        ("GET", "/v1/dashboard"),
    ] {
        let json = ("Content-Type", "application/json");
        let r = http(a, m, p, &[json], Some(b"{\"payload\":1}"));
        assert_eq!(r.status, 401, "{m} {p}");
        assert!(r.json()["error"].is_string());
        let r = http(
            a,
            m,
            p,
            &[json, ("Authorization", "Bearer wrong")],
            Some(b"{\"payload\":1}"),
        );
        assert_eq!(r.status, 401, "{m} {p}");
    }
    let bearer = [("Authorization", "Bearer s3cret-token-of-32-bytes-or-so")];
    assert_eq!(http(a, "GET", "/v1/stats", &bearer, None).status, 200);
    assert_eq!(http(a, "GET", "/metrics", &bearer, None).status, 200);
    // Dashboard: login page, wrong token, then the cookie.
    let r = http(a, "GET", "/", &[], None);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("<form"), "{}", r.text());
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let r = http(a, "POST", "/login", &form, Some(b"token=bad"));
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = http(
        a,
        "POST",
        "/login",
        &form,
        Some(b"token=s3cret-token-of-32-bytes-or-so"),
    );
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie does not carry the token"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = http(a, "GET", "/", &[("Cookie", &pair)], None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Dead letters"));
    assert_eq!(
        http(a, "GET", "/v1/dashboard", &[("Cookie", &pair)], None).status,
        200
    );
    // The token is never logged.
    drop(s.proc);
    let logged: Vec<String> = s.stderr.try_iter().collect();
    assert!(logged.iter().all(|l| !l.contains("s3cret")), "{logged:?}");

    // Non-loopback without a token: refused, data dir untouched.
    let fresh = dir.path().join("fresh");
    let o = run(&fresh, &["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("token"), "{}", stderr(&o));
    assert!(!fresh.exists());
    // With a token it starts.
    let s = {
        let mut c = durq(&fresh)
            .args([
                "serve",
                "--listen",
                "0.0.0.0:0",
                "--token-file",
                tf.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let rx = line_channel(c.stderr.take().unwrap());
        let line = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap();
        assert!(line.contains("listening on"), "{line}");
        Proc(c)
    };
    drop(s);
}

#[test]
fn bad_bodies_400_and_413() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let cases: Vec<(&str, &[u8], &str)> = vec![
        ("/v1/queues/q/jobs", b"{not json", "not valid"),
        ("/v1/queues/q/jobs", b"", "empty"),
        ("/v1/queues/q/jobs", br#"{"kind":"x"}"#, "payload"),
        (
            "/v1/queues/q/jobs",
            br#"{"payload":1,"colour":2}"#,
            "colour",
        ),
        (
            "/v1/queues/q/jobs",
            br#"{"payload":1,"delay":"soon"}"#,
            "delay",
        ),
        (
            "/v1/queues/q/jobs",
            br#"{"payload":1,"priority":999}"#,
            "priority",
        ),
        (
            "/v1/queues/bad%20name/jobs",
            br#"{"payload":1}"#,
            "queue name",
        ),
        (
            "/v1/queues/q/jobs/batch",
            br#"{"jobs":[{"payload":1},{"nope":1}]}"#,
            "nope",
        ),
        ("/v1/reserve", br#"{"queues":[]}"#, "queues"),
        ("/v1/reserve", br#"{"queues":["q"],"wait":"2h"}"#, "wait"),
        ("/v1/jobs/1/ack", br#"{"token":"zz"}"#, "token"),
        ("/v1/queues/q/dlq/requeue", br#"{}"#, "ids"),
    ];
    for (path, body, word) in cases {
        let r = http(
            a,
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        );
        assert_eq!(
            r.status,
            400,
            "{path} {}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
        let e = r.json()["error"].as_str().unwrap().to_string();
        assert!(e.contains(word), "{path}: `{e}` lacks `{word}`");
    }
    let mut big = br#"{"payload":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 16 << 20));
    big.extend(br#""}"#);
    let r = http(
        a,
        "POST",
        "/v1/queues/q/jobs",
        &[("Content-Type", "application/json")],
        Some(&big),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    assert_eq!(
        http(a, "GET", "/v1/stats", &[], None).json()["totals"]["waiting"],
        0,
        "nothing enqueued"
    );
}

#[test]
fn curl_worker_loop_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    for i in 0..5 {
        let r = post_json(
            &s.addr,
            "/v1/queues/jobs/jobs",
            &json!({"payload": {"n": i}}),
        );
        assert_eq!(r.status, 201);
    }
    let out_file = dir.path().join("seen");
    let script = format!(
        r#"set -e
base=http://{addr}/v1
n=0
while true; do
  r=$(curl -sS -X POST -H 'content-type: application/json' -d '{{"queues":["jobs"],"wait":"200ms"}}' -w '\n%{{http_code}}' $base/reserve)
  code=$(echo "$r" | tail -n1)
  [ "$code" = 204 ] && break
  body=$(echo "$r" | head -n1)
  id=$(echo "$body" | sed -n 's/.*"id":"\([0-9]*\)".*/\1/p')
  token=$(echo "$body" | sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
  echo "$id" >> {out}
  curl -sS -f -X POST -H 'content-type: application/json' -d "{{\"token\":\"$token\"}}" $base/jobs/$id/ack > /dev/null
  n=$((n+1))
done
echo $n"#,
        addr = s.addr,
        out = out_file.display()
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "5");
    let seen = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(seen.lines().collect::<BTreeSet<_>>().len(), 5);
    let st = http(&s.addr, "GET", "/v1/stats", &[], None).json();
    assert_eq!(st["queues"]["jobs"]["completed"], 5);
    assert_eq!(st["queues"]["jobs"]["waiting"], 0);
    let mut s = s;
    assert_eq!(
        s.proc.term().code(),
        Some(0),
        "serve drains and exits 0 on SIGTERM"
    );
}

#[test]
fn serve_runs_watchers_too() {
    let dir = tempfile::tempdir().unwrap();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    std::fs::write(inbox.join("early.txt"), b"before start").unwrap();
    let d = dir.path().join("data");
    let mut s = start_serve(
        &d,
        &["--watch", inbox.to_str().unwrap(), "--queue", "files"],
    );
    wait_for(
        "the start-up scan job",
        std::time::Duration::from_secs(20),
        || {
            let st = http(&s.addr, "GET", "/v1/stats", &[], None).json();
            (st["queues"]["files"]["waiting"] == 1).then_some(())
        },
    );
    assert_eq!(s.proc.term().code(), Some(0));
}
