//! `/v1` worker endpoints, so a program in any language can consume jobs: reserve (with
//! long-poll), then ack / fail / heartbeat / release with the lease token it got.
//!
//! A lost lease (expired, or the job already finished) answers 409.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::backend::ReserveRequest;
use crate::job::{validate_queue_name, FailAction, FailOutcome, JobId, LeaseToken};
use crate::wire::duration;
use crate::wire::job_json;

use super::body::JsonBody;
use super::error::ApiError;
use super::query::P;
use super::AppState;

/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

fn dur(field: &str, v: Option<&str>) -> Result<Option<Duration>, ApiError> {
    v.map(|s| duration(s).map_err(|e| ApiError::bad(format!("{field}: {e}"))))
        .transpose()
}

/// Body of `POST /v1/reserve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    queues: Vec<String>,
    wait: Option<String>,
    lease: Option<String>,
}

/// Validates a reserve body into the request it asks for.
pub fn check_reserve(b: ReserveBody) -> Result<ReserveRequest, ApiError> {
    if b.queues.is_empty() {
        return Err(ApiError::bad("\"queues\" must name at least one queue"));
    }
    for q in &b.queues {
        validate_queue_name(q)?;
    }
    let wait = dur("wait", b.wait.as_deref())?.unwrap_or_default();
    if wait > MAX_WAIT {
        return Err(ApiError::bad(format!(
            "wait is at most {}s",
            MAX_WAIT.as_secs()
        )));
    }
    let mut req = ReserveRequest::new(b.queues).wait(wait);
    if let Some(l) = dur("lease", b.lease.as_deref())? {
        req = req.lease(l);
    }
    Ok(req)
}

/// `POST /v1/reserve` `{"queues": [...], "wait": "10s", "lease": "30s"}` → 200
/// `{"job", "token", "expires_at"}`, or 204 when nothing was ready within `wait`.
pub async fn reserve(
    State(s): State<AppState>,
    JsonBody(b): JsonBody<ReserveBody>,
) -> Result<Response, ApiError> {
    let req = check_reserve(b)?;
    match s.queue.reserve_with(req).await? {
        Some(lease) => Ok(Json(json!({
            "job": job_json(&lease.job),
            "token": lease.token.to_string(),
            "expires_at": lease.expires_at.to_rfc3339(),
        }))
        .into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Body of ack / release.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    token: String,
}

/// Validates an ack / release body.
pub fn check_token(b: TokenBody) -> Result<LeaseToken, ApiError> {
    Ok(b.token.parse()?)
}

fn parse(id: &str, token: &str) -> Result<(JobId, LeaseToken), ApiError> {
    Ok((id.parse()?, token.parse()?))
}

/// `POST /v1/jobs/{id}/ack` `{"token"}`.
pub async fn ack(
    State(s): State<AppState>,
    P(id): P<String>,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, token) = parse(&id, &b.token)?;
    s.queue.backend().ack(id, token).await?;
    Ok(Json(json!({"id": id.to_string(), "state": "completed"})))
}

/// `POST /v1/jobs/{id}/release` `{"token"}`: back to waiting, attempt not counted.
pub async fn release(
    State(s): State<AppState>,
    P(id): P<String>,
    JsonBody(b): JsonBody<TokenBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, token) = parse(&id, &b.token)?;
    s.queue.backend().release(id, token).await?;
    Ok(Json(json!({"id": id.to_string(), "state": "waiting"})))
}

/// Body of fail.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailBody {
    token: String,
    error: String,
    retry_after: Option<String>,
    #[serde(default)]
    give_up: bool,
}

/// Validates a fail body into (token, error, action).
pub fn check_fail(b: FailBody) -> Result<(LeaseToken, String, FailAction), ApiError> {
    let token: LeaseToken = b.token.parse()?;
    let action = match (b.give_up, dur("retry_after", b.retry_after.as_deref())?) {
        (true, None) => FailAction::GiveUp,
        (false, Some(d)) => FailAction::RetryAfter(d),
        (false, None) => FailAction::Retry,
        (true, Some(_)) => {
            return Err(ApiError::bad(
                "give either \"give_up\" or \"retry_after\", not both",
            ))
        }
    };
    Ok((token, b.error, action))
}

/// `POST /v1/jobs/{id}/fail` `{"token", "error", "retry_after"?, "give_up"?}` →
/// `{"outcome": "retrying", "run_at"}` or `{"outcome": "dead"}`.
pub async fn fail(
    State(s): State<AppState>,
    P(id): P<String>,
    JsonBody(b): JsonBody<FailBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: JobId = id.parse()?;
    let (token, error, action) = check_fail(b)?;
    let out = s.queue.backend().fail(id, token, error, action).await?;
    Ok(Json(match out {
        FailOutcome::Retrying { run_at } => {
            json!({"id": id.to_string(), "outcome": "retrying", "run_at": run_at.to_rfc3339()})
        }
        FailOutcome::Dead => json!({"id": id.to_string(), "outcome": "dead"}),
        FailOutcome::Cancelled => json!({"id": id.to_string(), "outcome": "cancelled"}),
    }))
}

/// Body of heartbeat.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    token: String,
    lease: Option<String>,
}

/// `POST /v1/jobs/{id}/heartbeat` `{"token", "lease"?: "30s"}` → `{"expires_at"}`.
pub async fn heartbeat(
    State(s): State<AppState>,
    P(id): P<String>,
    JsonBody(b): JsonBody<HeartbeatBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, token) = parse(&id, &b.token)?;
    let extend = dur("lease", b.lease.as_deref())?.unwrap_or(Duration::from_secs(30));
    let at = s.queue.backend().heartbeat(id, token, extend).await?;
    Ok(Json(
        json!({"id": id.to_string(), "expires_at": at.to_rfc3339()}),
    ))
}
