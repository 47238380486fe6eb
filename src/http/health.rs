//! `GET /health` (liveness) and `GET /ready` (readiness), for systemd, load balancers and
//! container probes. Both answer without a token (they reveal only "ok" or which check failed).
//!
//! - `/health` is 200 `{"status":"ok"}` whenever the process serves HTTP.
//! - `/ready` is 200 `{"status":"ready", "fsync_ms": …}` when all of these hold, else 503
//!   `{"status":"not_ready","error": "<which check failed and why>"}`:
//!   1. the store answers `stats()` within [`STORE_TIMEOUT`] (it is open);
//!   2. a probe file in the journal directory can be created, written, fdatasync'ed and
//!      removed (the disk is writable and not full), and that fdatasync took at most
//!      [`Readiness::fsync_bound`] (default [`crate::metrics::fsync::SLOW_FSYNC`], 2 s);
//!   3. no journal fsync was delayed (slower than 2 s, or an append waited for one) within
//!      the last [`STALL_MEMORY`].
//!
//! Invariant: a probe leaves nothing behind (the file is removed even when a step fails), and
//! probes run one at a time (a burst of `/ready` calls does not become a burst of fsyncs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde_json::json;

use super::AppState;
use crate::metrics::fsync;

/// Longest `/ready` waits for the store's `stats()`.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a delayed journal fsync keeps `/ready` at 503.
pub const STALL_MEMORY: Duration = Duration::from_secs(30);
/// Name of the probe file (inside the journal directory).
pub const PROBE: &str = ".ready-probe";

/// What `/ready` checks against. Share as `Arc<Readiness>` (an axum `Extension`).
#[derive(Debug)]
pub struct Readiness {
    dir: PathBuf,
    /// Largest acceptable probe fdatasync.
    pub fsync_bound: Duration,
    stalls: Mutex<(u64, Option<Instant>)>,
    probing: tokio::sync::Mutex<()>,
}

impl Readiness {
    /// Probes in `dir` (the journal directory, or the data directory before it exists).
    pub fn new(dir: PathBuf) -> Arc<Readiness> {
        let (slow, waited) = fsync::delayed();
        Arc::new(Readiness {
            dir,
            fsync_bound: fsync::SLOW_FSYNC,
            stalls: Mutex::new((slow + waited, None)),
            probing: tokio::sync::Mutex::new(()),
        })
    }

    /// When a delayed fsync was last noticed (sampled on every call).
    pub fn last_stall(&self) -> Option<Instant> {
        let (slow, waited) = fsync::delayed();
        let mut st = self.stalls.lock();
        if slow + waited != st.0 {
            *st = (slow + waited, Some(Instant::now()));
        }
        st.1
    }

    /// Creates, writes, fdatasyncs and removes the probe file; returns the fdatasync time.
    async fn probe(&self) -> Result<Duration, String> {
        let _one = self.probing.lock().await;
        let path = self.dir.join(PROBE);
        let bound = self.fsync_bound;
        let task = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let run = || -> std::io::Result<Duration> {
                let mut f = std::fs::File::create(&path)?;
                f.write_all(b"durq ready probe\n")?;
                let t = Instant::now();
                f.sync_data()?;
                Ok(t.elapsed())
            };
            let r = run();
            let _ = std::fs::remove_file(&path);
            r.map_err(|e| format!("cannot write to {}: {e}", path.display()))
        });
        // The bound plus slack: a probe stuck in fsync answers "not ready" in time.
        match tokio::time::timeout(bound + Duration::from_secs(1), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(format!("the write probe failed: {e}")),
            Err(_) => Err(format!(
                "a probe fdatasync in {} has not finished after {:.1} s",
                self.dir.display(),
                (bound + Duration::from_secs(1)).as_secs_f64()
            )),
        }
    }

    async fn check(&self, s: &AppState) -> Result<Duration, String> {
        match tokio::time::timeout(STORE_TIMEOUT, s.queue.stats()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("the store does not answer: {e}")),
            Err(_) => {
                return Err(format!(
                    "the store did not answer within {} s",
                    STORE_TIMEOUT.as_secs()
                ))
            }
        }
        let took = self.probe().await?;
        if took > self.fsync_bound {
            return Err(format!(
                "a probe fdatasync took {:.2} s (bound {:.2} s): the disk is stalling",
                took.as_secs_f64(),
                self.fsync_bound.as_secs_f64()
            ));
        }
        if let Some(at) = self.last_stall() {
            let ago = at.elapsed();
            if ago < STALL_MEMORY {
                return Err(format!(
                    "a journal fsync was delayed over {} s, {} s ago",
                    fsync::SLOW_FSYNC.as_secs(),
                    ago.as_secs()
                ));
            }
        }
        Ok(took)
    }
}

/// `GET /health`.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`.
pub async fn ready(State(s): State<AppState>, r: Option<Extension<Arc<Readiness>>>) -> Response {
    let Some(Extension(r)) = r else {
        // No probe configured (an embedding app's router): the store check only.
        return match tokio::time::timeout(STORE_TIMEOUT, s.queue.stats()).await {
            Ok(Ok(_)) => Json(json!({"status": "ready"})).into_response(),
            _ => not_ready("the store does not answer".into()),
        };
    };
    match r.check(&s).await {
        Ok(took) => Json(json!({
            "status": "ready",
            "fsync_ms": took.as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(e) => not_ready(e),
    }
}

fn not_ready(error: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "not_ready", "error": error})),
    )
        .into_response()
}
