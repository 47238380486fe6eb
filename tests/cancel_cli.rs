//! `durq cancel` (direct and through a running worker's daemon socket) and
//! `DELETE /v1/jobs/{id}` on `durq serve`: outcomes, exit codes, 404/409, bad input.

mod support;

use std::time::Duration;

use support::*;

fn enqueue(d: &std::path::Path, args: &[&str]) -> String {
    ok(&run(d, args)).trim().to_string()
}

#[test]
fn cancel_by_id_and_by_filter() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = enqueue(d, &["enqueue", "q", "1"]);
    let b = enqueue(d, &["enqueue", "q", "2", "--delay", "1h"]);
    let c = enqueue(d, &["enqueue", "q", "3", "--kind", "x"]);
    let e = enqueue(d, &["enqueue", "q", "4", "--kind", "x"]);
    let out = ok(&run(d, &["--json", "cancel", &a, &b]));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], a);
    assert_eq!(lines[0]["outcome"], "cancelled");
    assert_eq!(lines[1]["outcome"], "cancelled");
    let s = stats(d);
    assert_eq!(s["queues"]["q"]["waiting"], 2);
    assert_eq!(s["queues"]["q"]["delayed"], 0);

    // An unknown id (or one cancelled already): exit 1 after trying every id.
    let o = run(d, &["cancel", &a, &c]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("{a}: no such job")), "{text}");
    assert!(text.contains(&format!("{c} cancelled")), "{text}");
    assert!(stderr(&o).contains("1 of the 2 ids given were not cancelled"));

    // Bad input: exit 2, nothing changed.
    let before = tree(d);
    for args in [
        vec!["cancel"],
        vec!["cancel", "not-an-id"],
        vec!["cancel", "--queue", "q"],
        vec!["cancel", "--queue", "q", "--state", "finished"],
    ] {
        let o = run(d, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(tree(d), before, "a refused command changes nothing");
    let o = run(d, &["cancel", "--queue", "q", "--state", "completed"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // By filter.
    let out = ok(&run(
        d,
        &[
            "--json", "cancel", "--queue", "q", "--state", "waiting", "--kind", "x",
        ],
    ));
    assert_eq!(json_lines(&out)[0]["cancelled"], 1);
    // Nothing is left (a queue without jobs may not be listed at all after a reopen).
    assert_eq!(stats(d)["queues"]["q"]["waiting"].as_u64().unwrap_or(0), 0);
    let o = run(d, &["cancel", &e]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn cancel_through_a_running_worker_drops_the_running_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let marker = d.join("started");
    let id = enqueue(d, &["enqueue", "q", "{}", "--max-retries", "3"]);
    // The job runs until the test cancels it and then fails: it must not be retried.
    let cmd = format!(
        "touch {m}; while [ ! -e {m}.go ]; do sleep 0.05; done; exit 1",
        m = marker.display()
    );
    let mut worker = start_owner(d, &["work", "q", "--exec", &cmd, "--until-empty"]);
    wait_for("the job started", Duration::from_secs(20), || {
        marker.exists().then_some(())
    });
    let out = ok(&run(d, &["cancel", &id]));
    assert!(out.contains("is running; it will be dropped"), "{out}");
    std::fs::write(marker.with_extension("go"), b"").unwrap();
    let status = wait_for("the worker to exit", Duration::from_secs(20), || {
        worker.0.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
    let jobs = json_lines(&ok(&run(d, &["--json", "jobs", "q"])));
    assert!(jobs.is_empty(), "the cancelled job is gone: {jobs:?}");
}

#[test]
fn http_delete_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_serve(dir.path(), &[]);
    let a = s.addr.as_str();
    let r = post_json(a, "/v1/queues/q/jobs", &serde_json::json!({"payload": 1}));
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = http(a, "DELETE", &format!("/v1/jobs/{id}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["outcome"], "cancelled");
    let r = http(a, "GET", &format!("/v1/jobs/{id}"), &[], None);
    assert_eq!(r.status, 404);
    let r = http(a, "DELETE", &format!("/v1/jobs/{id}"), &[], None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("no job with id"));
    let r = http(a, "DELETE", "/v1/jobs/banana", &[], None);
    assert_eq!(r.status, 400, "{}", r.text());
    // A completed job: 409.
    let r = post_json(a, "/v1/queues/q/jobs", &serde_json::json!({"payload": 2}));
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = post_json(a, "/v1/reserve", &serde_json::json!({"queues": ["q"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_string();
    let r = post_json(
        a,
        &format!("/v1/jobs/{id}/ack"),
        &serde_json::json!({"token": token}),
    );
    assert!(r.status < 300, "{}", r.text());
    let r = http(a, "DELETE", &format!("/v1/jobs/{id}"), &[], None);
    assert_eq!(r.status, 409, "{}", r.text());
}
