//! The HTTP side of `durq serve` (README "HTTP API"): the JSON API under `/v1`, `/metrics` in the
//! Prometheus text format, and the dashboard at `/`.
//!
//! Map: [`api`] (enqueue, jobs, stats, dead letters, pause/resume), [`lease`] (reserve with
//! long-poll, ack, fail, heartbeat, release), [`metrics`] (`/metrics`, `/v1/metrics`),
//! [`dashboard`] (the page, its assets, login and logout), [`events`] (`/v1/events`, server-sent
//! events with resume), [`health`] (`/health`, `/ready`). Defences: [`server`] (connection
//! cap, header timeout), [`guard`] (Host, Origin, fetch metadata, content type), [`auth`]
//! (bearer token, session cookie, CSRF), [`session`], [`throttle`] (wrong-token budget per
//! IP), [`body`] (bounded body reading), [`batch`] (batch count bounded while reading).
//! [`error`] and [`query`] make every error JSON.
//!
//! Invariants:
//! - Every error is `{"error": "..."}` with a fitting status: 400 bad input or malformed JSON
//!   (the message names the problem), 401 missing token, 403 cross-site, 404 unknown job or
//!   route, 405 wrong method, 408 body too slow, 409 lost lease, 413 body over
//!   [`BODY_LIMIT`], 415 not JSON, 421 foreign `Host`, 429 too many wrong tokens, 503 too
//!   many connections. The only exception is the dashboard's HTML login page.
//! - Every request passes, in order: the connection cap and header timeout ([`server`]), the
//!   security headers and JSON errors ([`error::json_errors`]), [`guard::same_origin`], the
//!   body deadline, then [`auth::require`] — with or without a token.
//! - With a token set, no route but the login form, the static assets, `/health` and `/ready`
//!   answers without it;
//!   tokens are compared in constant time and never logged.

pub mod api;
pub mod auth;
pub mod batch;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod guard;
pub mod health;
pub mod lease;
pub mod metrics;
pub mod query;
pub mod server;
pub mod session;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
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
    /// Host policy, sessions, throttle, limits.
    pub security: Arc<Security>,
}

/// Connection and body limits of `durq serve`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time for a request head to arrive, counted from when the connection starts waiting
    /// for one (so it is also the keep-alive idle timeout).
    pub header_timeout: Duration,
    /// Time for a whole request body to arrive, from its head; also the longest pause
    /// between two of its chunks.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The security settings and state shared by every request.
#[derive(Debug)]
pub struct Security {
    /// Which `Host` / `Origin` values name this server.
    pub hosts: guard::HostPolicy,
    /// Dashboard sessions.
    pub sessions: session::Sessions,
    /// Wrong-token budget per IP.
    pub throttle: throttle::Throttle,
    /// Always mark the session cookie `Secure`.
    pub cookie_secure: bool,
    /// Connection and body limits.
    pub limits: Limits,
}

impl Security {
    /// For a server bound to `bound`, with `--allow-host` entries.
    pub fn new(
        bound: SocketAddr,
        allow_hosts: &[String],
        cookie_secure: bool,
        limits: Limits,
    ) -> crate::Result<Security> {
        Ok(Security {
            hosts: guard::HostPolicy::new(bound, allow_hosts)?,
            sessions: session::Sessions::default(),
            throttle: throttle::Throttle::default(),
            cookie_secure,
            limits,
        })
    }
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
        .route("/events", get(events::stream))
        .route("/metrics", get(metrics::json))
        .route("/dashboard", get(dashboard::data))
        .route("/queues/{queue}/jobs", post(api::enqueue).get(api::list))
        .route("/queues/{queue}/jobs/batch", post(api::enqueue_batch))
        .route("/queues/{queue}/dlq", get(api::dlq_list))
        .route("/queues/{queue}/dlq/requeue", post(api::dlq_requeue))
        .route("/queues/{queue}/dlq/purge", post(api::dlq_purge))
        .route("/queues/{queue}/pause", post(api::pause))
        .route("/queues/{queue}/resume", post(api::resume))
        .route("/jobs/{id}", get(api::get_job).delete(api::cancel_job))
        .route("/reserve", post(lease::reserve))
        .route("/jobs/{id}/ack", post(lease::ack))
        .route("/jobs/{id}/fail", post(lease::fail))
        .route("/jobs/{id}/heartbeat", post(lease::heartbeat))
        .route("/jobs/{id}/release", post(lease::release))
        .fallback(error::not_found);
    // Layers run outermost (last added) first.
    Router::new()
        .route("/", get(dashboard::index))
        .route("/login", post(dashboard::login))
        .route("/logout", post(dashboard::logout))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/metrics", get(metrics::prometheus))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .nest("/v1", v1)
        .fallback(error::not_found)
        .layer(from_fn_with_state(state.clone(), auth::require))
        .layer(from_fn_with_state(state.clone(), body::deadline))
        .layer(from_fn_with_state(state.clone(), guard::same_origin))
        .layer(from_fn(error::json_errors))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Checks that a listen address may be used: loopback, or any address with a token of at
/// least [`auth::MIN_REMOTE_TOKEN`] bytes.
pub fn check_listen(addr: &SocketAddr, token: Option<&str>) -> crate::Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    match token {
        None => Err(crate::Error::invalid(format!(
            "listening on {addr} (not loopback) needs an access token; pass --token-file FILE or listen on 127.0.0.1"
        ))),
        Some(t) if t.len() < auth::MIN_REMOTE_TOKEN => Err(crate::Error::invalid(format!(
            "listening on {addr} (not loopback) needs a token of at least {} bytes (this one has {}); \
             generate one with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`",
            auth::MIN_REMOTE_TOKEN,
            t.len()
        ))),
        Some(_) => Ok(()),
    }
}
