//! `/metrics` (Prometheus text format 0.0.4, rendered by [`crate::metrics::Metrics`], queue
//! depths from `stats()`, plus the watchers' counters under `durq serve --watch`) and
//! `/v1/metrics` (the same as JSON).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
#[cfg(feature = "watch")]
use axum::Extension;
use axum::Json;
#[cfg(feature = "watch")]
use std::sync::Arc;

use super::error::ApiError;
use super::AppState;

/// The watchers of `durq serve`, for `/metrics` (an axum `Extension`).
#[cfg(feature = "watch")]
#[derive(Debug, Default)]
pub struct Watched(pub Vec<(String, String, Arc<crate::watch::Counters>)>);

#[cfg(feature = "watch")]
impl Watched {
    /// Appends the watcher families (labels `dir` and `queue`), HELP and TYPE first; nothing
    /// without watchers.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        if self.0.is_empty() {
            return;
        }
        let esc = |v: &str| {
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        type Get = fn(&crate::watch::WatchMetrics) -> u64;
        let families: [(&str, &str, Get); 5] = [
            (
                "durq_watch_events_total",
                "File changes settled by the watcher.",
                |m| m.events_settled,
            ),
            (
                "durq_watch_jobs_enqueued_total",
                "Jobs the watcher enqueued.",
                |m| m.jobs_enqueued,
            ),
            (
                "durq_watch_rescans_total",
                "Full rescans (after an event overflow or a watch error).",
                |m| m.rescans,
            ),
            (
                "durq_watch_errors_total",
                "Watcher errors (unreadable files, failed enqueues, OS watcher errors).",
                |m| m.errors,
            ),
            (
                "durq_watch_hashed_bytes_total",
                "Bytes the watcher hashed.",
                |m| m.hashed_bytes,
            ),
        ];
        let snaps: Vec<_> = self
            .0
            .iter()
            .map(|(d, q, c)| (d, q, c.snapshot()))
            .collect();
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (d, q, m) in &snaps {
                let _ = writeln!(
                    out,
                    "{name}{{dir=\"{}\",queue=\"{}\"}} {}",
                    esc(d),
                    esc(q),
                    get(m)
                );
            }
        }
    }
}

/// `GET /metrics`.
pub async fn prometheus(
    State(s): State<AppState>,
    #[cfg(feature = "watch")] watched: Option<Extension<Arc<Watched>>>,
) -> Result<impl IntoResponse, ApiError> {
    let stats = s.queue.stats().await?;
    #[allow(unused_mut)] // only the watchers append
    let mut body = s.metrics.render_prometheus(&stats);
    #[cfg(feature = "watch")]
    if let Some(Extension(w)) = watched {
        w.render(&mut body);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}

/// `GET /v1/metrics`: the metrics snapshot with queue counts.
pub async fn json(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let stats = s.queue.stats().await?;
    Ok(Json(s.metrics.snapshot(Some(&stats))))
}
