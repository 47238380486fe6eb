//! The dashboard in real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
//! fantoccini over WebDriver) against a running `durq serve` with live work: depth numbers,
//! updates without reload, the requeue button. Saves `target/browser-artifacts/dashboard.png`.
//! With a token: the login form, a requeue (which needs the session's CSRF token), sign out.
//! And a hostile page on another origin that attacks durq from the same browser: its
//! requests reach durq and are refused.

mod require;
mod support;

use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;
use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The live dashboard re-renders its tables: an element found a moment ago may be replaced
/// (stale) before it is read, so find it again until one read goes through.
async fn text_of(c: &fantoccini::Client, css: &str) -> String {
    let mut last = None;
    for _ in 0..100 {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.text().await {
                Ok(t) => return t,
                Err(err) => last = Some(err),
            },
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot read {css}: {last:?}");
}

/// Clicks the element `css` names, finding it again if a re-render replaced it.
async fn click(c: &fantoccini::Client, css: &str) {
    let mut last = None;
    for _ in 0..100 {
        match c.find(Locator::Css(css)).await {
            Ok(e) => match e.click().await {
                Ok(_) => return,
                Err(err) => last = Some(err),
            },
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("cannot click {css}: {last:?}");
}

async fn cell(c: &fantoccini::Client, queue: &str, state: &str) -> Option<String> {
    let sel = format!("#queues tr[data-queue=\"{queue}\"] td[data-state=\"{state}\"]");
    match c.find(Locator::Css(&sel)).await {
        Ok(e) => e.text().await.ok(),
        Err(_) => None,
    }
}

async fn wait_cell(c: &fantoccini::Client, queue: &str, state: &str, want: &str) {
    let start = std::time::Instant::now();
    loop {
        let got = cell(c, queue, state).await;
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "dashboard shows {queue}/{state} = {got:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebDriver session on headless Chromium; keep the returned guards alive while using it.
async fn browser() -> (fantoccini::Client, Proc, tempfile::TempDir) {
    let chromium = require::binary(&["chromium", "chromium-browser"], "chromium");
    let driver = require::binary(&["chromedriver"], "chromium-driver");
    let port = free_port();
    let driver = Proc(
        std::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let conn = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = ClientBuilder::new(conn)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    (c, driver, profile)
}

async fn wait_gone(c: &fantoccini::Client, css: &str) {
    let start = std::time::Instant::now();
    while c.find(Locator::Css(css)).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{css} still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    // Three waiting jobs nobody works on; one dead letter; live work on queue "live".
    for i in 0..3 {
        ok(&run(&d, &["enqueue", "depth", &format!("{i}")]));
    }
    ok(&run(
        &d,
        &["enqueue", "dq", r#"{"doomed":true}"#, "--max-retries", "0"],
    ));
    let server = start_serve(
        &d,
        &[
            "--work",
            "live",
            "--exec",
            "cat > /dev/null",
            "--work",
            "dq",
            "--exec",
            "echo 'upstream said 500' >&2; exit 1",
        ],
    );
    let a = server.addr.clone();
    wait_for("the dead letter", Duration::from_secs(20), || {
        (http(&a, "GET", "/v1/stats", &[], None).json()["queues"]["dq"]["dead"] == 1).then_some(())
    });
    ok(&run(&d, &["pause", "dq"])); // a requeued job must stay waiting

    let (c, _driver, _profile) = browser().await;

    c.goto(&format!("http://{a}/")).await.unwrap();
    wait_cell(&c, "depth", "waiting", "3").await;
    wait_cell(&c, "dq", "dead", "1").await;
    c.execute("window.__durq_marker = 42;", vec![])
        .await
        .unwrap();

    // Live work completes while the page is open: it updates without a reload.
    for i in 0..4 {
        let r = post_json(&a, "/v1/queues/live/jobs", &json!({"payload": {"i": i}}));
        assert_eq!(r.status, 201);
    }
    wait_cell(&c, "live", "completed", "4").await;
    ok(&run(&d, &["enqueue", "depth", "4"]));
    wait_cell(&c, "depth", "waiting", "4").await;
    let marker = c
        .execute("return window.__durq_marker;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, json!(42), "the page was not reloaded");

    // The dead letter shows its last error and a requeue button that works.
    let text = text_of(&c, "#dead tbody tr").await;
    assert!(text.contains("upstream said 500"), "{text}");
    std::fs::create_dir_all(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/browser-artifacts"
    ))
    .unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/browser-artifacts/dashboard.png"
        ),
        &png,
    )
    .unwrap();
    click(&c, "#dead button.requeue").await;
    wait_cell(&c, "dq", "waiting", "1").await;
    wait_cell(&c, "dq", "dead", "0").await;
    let st = http(&a, "GET", "/v1/stats", &[], None).json();
    assert_eq!(st["queues"]["dq"]["waiting"], 1);
    assert_eq!(st["queues"]["dq"]["dead"], 0);
    let no_dead = c.find(Locator::Id("no-dead")).await.unwrap();
    assert!(no_dead.is_displayed().await.unwrap());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_csrf_requeue_and_sign_out() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let tf = dir.path().join("token");
    let token = "a-long-enough-browser-token-123";
    std::fs::write(&tf, token).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&run(&d, &["enqueue", "dq", "{}", "--max-retries", "0"]));
    let server = start_serve(
        &d,
        &[
            "--token-file",
            tf.to_str().unwrap(),
            "--work",
            "dq",
            "--exec",
            "exit 1",
        ],
    );
    let a = server.addr.clone();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];
    wait_for("the dead letter", Duration::from_secs(20), || {
        (http(&a, "GET", "/v1/stats", &auth, None).json()["queues"]["dq"]["dead"] == 1)
            .then_some(())
    });
    ok(&run(&d, &["pause", "dq"]));

    let (c, _driver, _profile) = browser().await;
    c.goto(&format!("http://{a}/")).await.unwrap();
    let field = c.find(Locator::Css("input[name=token]")).await.unwrap();
    field.send_keys("wrong").await.unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::XPath("//*[contains(text(), 'not right')]"))
        .await
        .unwrap();
    let field = c.find(Locator::Css("input[name=token]")).await.unwrap();
    field.send_keys(token).await.unwrap();
    c.find(Locator::Css("form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_cell(&c, "dq", "dead", "1").await;
    // The requeue button's POST carries the session's CSRF token.
    c.wait()
        .for_element(Locator::Css("#dead button.requeue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_cell(&c, "dq", "waiting", "1").await;
    let st = http(&a, "GET", "/v1/stats", &auth, None).json();
    assert_eq!(st["queues"]["dq"]["dead"], 0);
    // Sign out: back to the login form, and the old session no longer reads anything.
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=token]"))
        .await
        .unwrap();
    c.goto(&format!("http://{a}/v1/dashboard")).await.unwrap();
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("access token"), "{body}");
    c.close().await.unwrap();
}

/// Serves one fixed HTML page on a free port (a hostile site on another origin).
fn hostile_site(html: String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                html.len(),
                html
            );
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_page_cannot_enqueue_pause_or_read() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    ok(&run(&d, &["enqueue", "q", r#"{"secret":"s3"}"#]));
    let server = start_serve(&d, &[]);
    let a = server.addr.clone();
    let target = format!("http://{a}");
    // Everything a page can do without CORS: a no-cors text/plain POST, a body-less POST, a
    // read, and a text/plain form submission.
    let html = format!(
        r#"<!doctype html><html><body>
<form id="f" method="post" action="{target}/v1/queues/evil/jobs" enctype="text/plain">
<input name='{{"payload":1,"x":"' value='"}}'><button type="submit">go</button></form>
<script>
(async () => {{
  const out = [];
  const go = async (what, p) => {{ try {{ const r = await p; out.push(what + ":" + r.type + ":" + r.status); }} catch (e) {{ out.push(what + ":error"); }} }};
  await go("enqueue", fetch("{target}/v1/queues/evil/jobs", {{method: "POST", mode: "no-cors", headers: {{"content-type": "text/plain"}}, body: '{{"payload":2}}'}}));
  await go("pause", fetch("{target}/v1/queues/q/pause", {{method: "POST", mode: "no-cors"}}));
  await go("json", fetch("{target}/v1/queues/evil/jobs", {{method: "POST", headers: {{"content-type": "application/json"}}, body: '{{"payload":3}}'}}));
  await go("read", fetch("{target}/v1/queues/q/jobs"));
  document.title = "done " + out.join(" ");
}})();
</script></body></html>"#
    );
    let evil = hostile_site(html);
    let (c, _driver, _profile) = browser().await;
    c.goto(&format!("http://localhost:{evil}/")).await.unwrap();
    let start = std::time::Instant::now();
    let title = loop {
        let t = c.title().await.unwrap();
        if t.starts_with("done") {
            break t;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "title {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The reads failed in the page (no CORS), so the secret never reached it.
    assert!(title.contains("read:error"), "{title}");
    assert!(title.contains("json:error"), "{title}");
    c.find(Locator::Css("#f button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_gone(&c, "#f").await;
    c.close().await.unwrap();

    let st = http(&a, "GET", "/v1/stats", &[], None).json();
    assert!(st["queues"]["evil"].is_null(), "nothing enqueued: {st}");
    assert_ne!(st["queues"]["q"]["paused"], true, "not paused: {st}");
    // The attacks did reach durq, and were refused there.
    let mut s = server;
    s.proc.term();
    let logged: Vec<String> = s.stderr.try_iter().collect();
    let refused = logged.iter().filter(|l| l.contains("refused:")).count();
    eprintln!("hostile page: {title}; durq logged {refused} refusals");
    assert!(refused >= 4, "{refused} refusals logged: {logged:#?}");
}
