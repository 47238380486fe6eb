//! A journal fsync that stalls (an injected 3 s fdatasync) raises the built-in `fsync_stalls`
//! alert once and turns `/ready` to 503 naming the delay, while `/health` stays 200.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durq::journal::faults::Faults;
use durq::metrics::{alerts::default_rules, AlertChange, Metrics};
use durq::{FsyncPolicy, NewJob, Queue};

#[derive(Debug, Default)]
struct SlowSync {
    slow: AtomicBool,
}

impl Faults for SlowSync {
    fn on_sync(&self, _file: &Path) -> std::io::Result<()> {
        if self.slow.swap(false, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_secs(3));
        }
        Ok(())
    }
}

/// GET `path`; returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fsync_raises_the_alert_and_fails_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let f = Arc::new(SlowSync::default());
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::Always)
        .faults(f.clone())
        .open()
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    for r in default_rules() {
        metrics.add_alert(r);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = durq::http::AppState {
        queue: q.clone(),
        metrics: metrics.clone(),
        auth: None,
        security: Arc::new(
            durq::http::Security::new(addr, &[], false, durq::http::Limits::default()).unwrap(),
        ),
    };
    let readiness = durq::http::health::Readiness::new(dir.path().join("journal"));
    let app = durq::http::router(state).layer(axum::Extension(readiness));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, body) = get(addr, "/ready").await;
    assert_eq!(status, 200, "{body}");
    assert!(metrics
        .evaluate_alerts(&q.stats().await.unwrap())
        .is_empty());

    f.slow.store(true, Ordering::SeqCst);
    q.enqueue(NewJob::new("q", b"slow".to_vec())).await.unwrap();

    let changes = metrics.evaluate_alerts(&q.stats().await.unwrap());
    assert_eq!(
        changes,
        vec![("fsync_stalls".to_string(), AlertChange::Raised)]
    );
    assert!(
        metrics
            .evaluate_alerts(&q.stats().await.unwrap())
            .is_empty(),
        "raised once"
    );
    let (status, body) = get(addr, "/ready").await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "not_ready");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("journal fsync was delayed"),
        "{v}"
    );
    assert_eq!(get(addr, "/health").await.0, 200);
    server.abort();
    q.shutdown().await.unwrap();
}
