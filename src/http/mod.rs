//! The HTTP side of `durq serve` (SPEC §10): the JSON API under `/v1`, `/metrics` in the
//! Prometheus text format, and the dashboard at `/`.
//!
//! Map: [`api`] (enqueue, jobs, stats, dead letters, pause/resume), [`lease`] (reserve with
//! long-poll, ack, fail, heartbeat, release), [`auth`] (bearer token, login cookie),
//! [`metrics`] (`/metrics`, `/v1/metrics`), [`dashboard`] (the page and its assets),
//! [`error`] (JSON errors and the body extractor).
//!
//! Invariants:
//! - Every error is `{"error": "..."}` with a fitting status: 400 bad input or malformed JSON
//!   (the message names the problem), 401 missing token, 404 unknown job, 409 lost lease,
//!   413 body over [`BODY_LIMIT`].
//! - With a token set, no route but the login form and the static assets answers without it;
//!   tokens are compared in constant time and never logged.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod lease;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use crate::queue::Queue;

/// Largest request body (the payload limit, 16 MiB).
pub const BODY_LIMIT: usize = crate::job::DEFAULT_MAX_PAYLOAD;

/// What every handler sees.
#[derive(Clone)]
pub struct AppState {
    /// The queue.
    pub queue: Queue,
    /// The process's metrics (fed by the worker pool or by [`crate::metrics::Metrics::attach`]).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The access token, if one is required.
    pub auth: Option<Arc<auth::Auth>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/stats", get(api::stats))
        .route("/metrics", get(metrics::json))
        .route("/dashboard", get(dashboard::data))
        .route("/queues/{queue}/jobs", post(api::enqueue).get(api::list))
        .route("/queues/{queue}/jobs/batch", post(api::enqueue_batch))
        .route("/queues/{queue}/dlq", get(api::dlq_list))
        .route("/queues/{queue}/dlq/requeue", post(api::dlq_requeue))
        .route("/queues/{queue}/dlq/purge", post(api::dlq_purge))
        .route("/queues/{queue}/pause", post(api::pause))
        .route("/queues/{queue}/resume", post(api::resume))
        .route("/jobs/{id}", get(api::get_job))
        .route("/reserve", post(lease::reserve))
        .route("/jobs/{id}/ack", post(lease::ack))
        .route("/jobs/{id}/fail", post(lease::fail))
        .route("/jobs/{id}/heartbeat", post(lease::heartbeat))
        .route("/jobs/{id}/release", post(lease::release))
        .fallback(error::not_found);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/login", post(dashboard::login))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/metrics", get(metrics::prometheus))
        .nest("/v1", v1)
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Checks that a listen address may be used: loopback, or any address with a token.
pub fn check_listen(addr: &SocketAddr, has_token: bool) -> crate::Result<()> {
    if addr.ip().is_loopback() || has_token {
        Ok(())
    } else {
        Err(crate::Error::invalid(format!(
            "listening on {addr} (not loopback) needs an access token; pass --token-file FILE or listen on 127.0.0.1"
        )))
    }
}
