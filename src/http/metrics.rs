//! `/metrics` (Prometheus text format 0.0.4, rendered by [`crate::metrics::Metrics`], queue
//! depths from `stats()`) and `/v1/metrics` (the same as JSON).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::error::ApiError;
use super::AppState;

/// `GET /metrics`.
pub async fn prometheus(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let stats = s.queue.stats().await?;
    let body = s.metrics.render_prometheus(&stats);
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
