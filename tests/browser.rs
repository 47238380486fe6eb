//! The dashboard in real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
//! fantoccini over WebDriver) against a running `durq serve` with live work: depth numbers,
//! updates without reload, the requeue button. Saves `target/browser-artifacts/dashboard.png`.

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

fn find_binary(names: &[&str]) -> String {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = std::path::Path::new(dir).join(n);
            if p.exists() {
                return p.display().to_string();
            }
        }
    }
    panic!("{names:?} not found; install them with `apt-get install -y chromium chromium-driver`");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let chromium = find_binary(&["chromium", "chromium-browser"]);
    let driver = find_binary(&["chromedriver"]);
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

    let port = free_port();
    let _driver = Proc(
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
    let row = c.find(Locator::Css("#dead tbody tr")).await.unwrap();
    let text = row.text().await.unwrap();
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
    c.find(Locator::Css("#dead button.requeue"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_cell(&c, "dq", "waiting", "1").await;
    wait_cell(&c, "dq", "dead", "0").await;
    let st = http(&a, "GET", "/v1/stats", &[], None).json();
    assert_eq!(st["queues"]["dq"]["waiting"], 1);
    assert_eq!(st["queues"]["dq"]["dead"], 0);
    let no_dead = c.find(Locator::Id("no-dead")).await.unwrap();
    assert!(no_dead.is_displayed().await.unwrap());
    c.close().await.unwrap();
}
