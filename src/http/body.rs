//! Reading request bodies within bounds: size ([`super::BODY_LIMIT`], checked against
//! `Content-Length` before anything is read and again while reading), time (a deadline for the
//! whole body, [`DeadlineBody`], on top of tower-http's per-frame inactivity timeout), type
//! (`application/json`, else 415) and, for batches, count ([`super::batch::Precount`] while
//! the bytes arrive).
//!
//! Invariants: a refused body changes nothing; memory held for a body never exceeds the bytes
//! accepted so far (at most the limit); every refusal is a JSON error naming what was wrong.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use serde::de::DeserializeOwned;
use tokio::time::Sleep;

use super::batch::{BatchBody, Precount};
use super::error::ApiError;
use super::AppState;

/// The error a body gives when its deadline passes.
#[derive(Debug)]
pub struct BodyDeadline(pub Duration);

impl std::fmt::Display for BodyDeadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for BodyDeadline {}

/// A body that fails with [`BodyDeadline`] once its deadline has passed.
pub struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    /// `inner`, which must be read completely within `limit` from now.
    pub fn new(inner: Body, limit: Duration) -> Self {
        DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(f) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyDeadline(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: every request body gets the `--body-timeout` deadline.
pub async fn deadline(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let limit = s.security.limits.body_timeout;
    next.run(req.map(|b| Body::new(DeadlineBody::new(b, limit))))
        .await
}

fn read_error(e: axum::Error) -> ApiError {
    let inner = e.into_inner();
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(err) = src {
        if let Some(d) = err.downcast_ref::<BodyDeadline>() {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                msg: format!("{d}; send it faster or raise --body-timeout"),
            };
        }
        if err.is::<tower_http::timeout::TimeoutError>() {
            return ApiError {
                status: StatusCode::REQUEST_TIMEOUT,
                msg: "the request body stalled; send it without pauses".into(),
            };
        }
        src = err.source();
    }
    ApiError::bad(format!("could not read the request body: {inner}"))
}

/// 413 for a body over `limit`.
pub fn too_large(limit: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        msg: format!("request body is over the limit of {limit} bytes"),
    }
}

/// Reads a whole body of at most `limit` bytes, showing each chunk to `inspect` as it
/// arrives (an `Err` from it stops reading at once).
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    mut inspect: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(64 << 10) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(read_error)?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        inspect(&chunk)?;
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn unsupported(h: &HeaderMap) -> ApiError {
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        msg: format!(
            "send the body as JSON with `Content-Type: application/json` (got {}); with curl add -H 'Content-Type: application/json'",
            super::guard::media_type(h).map_or("no Content-Type".to_string(), |t| format!("`{t}`"))
        ),
    }
}

/// Parses a JSON body the way every endpoint does (empty and malformed bodies are 400).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("request body is empty; send a JSON object"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad(format!("request body is not valid: {e}")))
}

async fn json_request(
    req: Request,
    inspect: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    if !super::guard::is_json(req.headers()) {
        return Err(unsupported(req.headers()));
    }
    let (parts, body) = req.into_parts();
    read_limited(&parts.headers, body, super::BODY_LIMIT, inspect).await
}

/// A JSON body (`Content-Type: application/json`): 415 otherwise, 413 over the limit, 408 when
/// it is too slow, 400 naming what is wrong.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = json_request(req, |_| Ok(())).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A batch body: like [`JsonBody`], and refused as soon as it holds more than
/// [`super::batch::MAX_BATCH`] jobs, before the rest of it is read.
#[derive(Debug)]
pub struct BatchJson(pub BatchBody);

impl FromRequest<AppState> for BatchJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        let mut count = Precount::default();
        let bytes = json_request(req, |c| count.feed(c).map_err(ApiError::bad)).await?;
        parse_json(&bytes).map(BatchJson)
    }
}

/// The bodies [`check_body`] knows, one per endpoint that takes a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/queues/{q}/jobs`.
    Enqueue,
    /// `POST /v1/queues/{q}/jobs/batch`.
    Batch,
    /// `POST /v1/reserve`.
    Reserve,
    /// `POST /v1/jobs/{id}/fail`.
    Fail,
    /// `POST /v1/jobs/{id}/ack`, `release`.
    Token,
    /// `POST /v1/queues/{q}/dlq/requeue`, `purge`.
    Select,
}

/// Runs `bytes` through the same checks and conversions the server applies to the body of
/// `endpoint` (everything short of touching the queue); for the fuzz target. Returns how
/// many jobs a successful enqueue body holds (1 for the others).
pub fn check_body(endpoint: Endpoint, bytes: &[u8]) -> Result<usize, ApiError> {
    if bytes.len() > super::BODY_LIMIT {
        return Err(too_large(super::BODY_LIMIT));
    }
    use crate::wire::JobOpts;
    use crate::wire::{spec_job, JobSpec};
    match endpoint {
        Endpoint::Enqueue => {
            let spec: JobSpec = parse_json(bytes)?;
            spec_job("q", spec, &JobOpts::default())?;
            Ok(1)
        }
        Endpoint::Batch => {
            let mut count = Precount::default();
            count.feed(bytes).map_err(ApiError::bad)?;
            let b: BatchBody = parse_json(bytes)?;
            let n = b.jobs.len();
            if n == 0 {
                return Err(ApiError::bad(format!(
                    "a batch holds 1 to {} jobs (got 0)",
                    super::batch::MAX_BATCH
                )));
            }
            for spec in b.jobs {
                spec_job("q", spec, &JobOpts::default())?;
            }
            Ok(n)
        }
        Endpoint::Reserve => super::lease::check_reserve(parse_json(bytes)?).map(|_| 1),
        Endpoint::Fail => super::lease::check_fail(parse_json(bytes)?).map(|_| 1),
        Endpoint::Token => super::lease::check_token(parse_json(bytes)?).map(|_| 1),
        Endpoint::Select => super::api::check_select(parse_json(bytes)?).map(|_| 1),
    }
}
