//! `/v1` queue endpoints: enqueue (single, batch), job list and lookup, stats, dead letters,
//! pause / resume. Shapes are those of the CLI's `--json` ([`crate::wire`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::job::{validate_queue_name, JobId, JobState, Selection};
use crate::wire::JobOpts;
use crate::wire::{job_json, stats_json};
use crate::wire::{spec_job, JobSpec};

use super::batch::MAX_BATCH;
use super::body::{BatchJson, JsonBody};
use super::error::ApiError;
use super::query::{P, Q};
use super::AppState;

fn queue_name(q: &str) -> Result<(), ApiError> {
    validate_queue_name(q).map_err(ApiError::from)
}

/// `POST /v1/queues/{queue}/jobs` with a job spec → 201 `{"id", "duplicate"}`.
pub async fn enqueue(
    State(s): State<AppState>,
    P(queue): P<String>,
    JsonBody(spec): JsonBody<JobSpec>,
) -> Result<impl IntoResponse, ApiError> {
    queue_name(&queue)?;
    let job = spec_job(&queue, spec, &JobOpts::default())?;
    let e = s.queue.enqueue(job).await?;
    let status = if e.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({"id": e.id.to_string(), "duplicate": e.duplicate})),
    ))
}

/// `POST /v1/queues/{queue}/jobs/batch` with `{"jobs": [spec…]}`: all or nothing.
pub async fn enqueue_batch(
    State(s): State<AppState>,
    P(queue): P<String>,
    BatchJson(body): BatchJson,
) -> Result<impl IntoResponse, ApiError> {
    queue_name(&queue)?;
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::bad(format!(
            "a batch holds 1 to {MAX_BATCH} jobs (got {})",
            body.jobs.len()
        )));
    }
    let mut jobs = Vec::with_capacity(body.jobs.len());
    for (i, spec) in body.jobs.into_iter().enumerate() {
        let job = spec_job(&queue, spec, &JobOpts::default())
            .map_err(|e| ApiError::bad(format!("jobs[{i}]: {}", e.msg)))?;
        jobs.push(job);
    }
    let done = s.queue.enqueue_batch(jobs).await?;
    let out: Vec<Value> = done
        .iter()
        .map(|e| json!({"id": e.id.to_string(), "duplicate": e.duplicate}))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "jobs": out }))))
}

/// Query of the list endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/queues/{queue}/jobs?state=S&limit=N` → `{"jobs": [...]}` in run order.
pub async fn list(
    State(s): State<AppState>,
    P(queue): P<String>,
    Q(q): Q<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    let state = q.state.as_deref().map(str::parse::<JobState>).transpose()?;
    let jobs = s
        .queue
        .list(&queue, state, q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(Json(
        json!({ "jobs": jobs.iter().map(job_json).collect::<Vec<_>>() }),
    ))
}

/// `GET /v1/jobs/{id}` → the job, or 404.
pub async fn get_job(State(s): State<AppState>, P(id): P<String>) -> Result<Json<Value>, ApiError> {
    let id: JobId = id.parse()?;
    match s.queue.get(id).await? {
        Some(j) => Ok(Json(job_json(&j))),
        None => Err(crate::Error::NotFound { id: id.to_string() }.into()),
    }
}

/// `DELETE /v1/jobs/{id}` cancels a job → 200 `{"id", "outcome": "cancelled"}` (waiting,
/// delayed or dead: gone) or `"will_cancel"` (running: dropped when its attempt ends); 404 for
/// an unknown id, 409 for a completed job.
pub async fn cancel_job(
    State(s): State<AppState>,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    let id: JobId = id.parse()?;
    let o = s.queue.cancel(id).await?;
    match o {
        crate::CancelOutcome::NotFound => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            msg: format!("no job with id {id} (unknown, or cancelled or dropped already)"),
        }),
        crate::CancelOutcome::AlreadyFinished => Err(ApiError {
            status: StatusCode::CONFLICT,
            msg: format!("job {id} already completed; there is nothing to cancel"),
        }),
        o => Ok(Json(json!({"id": id.to_string(), "outcome": o.as_str()}))),
    }
}

/// `GET /v1/stats` → `{"queues": {...}, "totals": {...}}`.
pub async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(stats_json(&s.queue.stats().await?, None)))
}

/// `GET /v1/queues/{queue}/dlq?limit=N` → `{"jobs": [...]}`, most recent first.
pub async fn dlq_list(
    State(s): State<AppState>,
    P(queue): P<String>,
    Q(q): Q<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    let jobs = s
        .queue
        .list(
            &queue,
            Some(JobState::Dead),
            q.limit.unwrap_or(100).min(10_000),
        )
        .await?;
    Ok(Json(
        json!({ "jobs": jobs.iter().map(job_json).collect::<Vec<_>>() }),
    ))
}

/// Checks a dead-letter selection body (for the fuzz target).
pub fn check_select(b: SelectBody) -> Result<Selection, ApiError> {
    b.selection()
}

/// Which dead letters: `{"ids": ["…"]}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectBody {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

impl SelectBody {
    fn selection(&self) -> Result<Selection, ApiError> {
        match (self.all, self.ids.is_empty()) {
            (true, true) => Ok(Selection::All),
            (false, false) => Ok(Selection::Ids(
                self.ids
                    .iter()
                    .map(|i| i.parse::<JobId>())
                    .collect::<Result<_, _>>()?,
            )),
            (true, false) => Err(ApiError::bad(
                "give either \"ids\" or \"all\": true, not both",
            )),
            (false, true) => Err(ApiError::bad(
                "say which dead letters: {\"ids\": [\"…\"]} or {\"all\": true}",
            )),
        }
    }
}

/// `POST /v1/queues/{queue}/dlq/requeue` → `{"queue", "requeued": n}`.
pub async fn dlq_requeue(
    State(s): State<AppState>,
    P(queue): P<String>,
    JsonBody(b): JsonBody<SelectBody>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    let n = s.queue.requeue_dead(&queue, b.selection()?).await?;
    Ok(Json(json!({"queue": queue, "requeued": n})))
}

/// `POST /v1/queues/{queue}/dlq/purge` → `{"queue", "purged": n}`.
pub async fn dlq_purge(
    State(s): State<AppState>,
    P(queue): P<String>,
    JsonBody(b): JsonBody<SelectBody>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    let n = s.queue.purge_dead(&queue, b.selection()?).await?;
    Ok(Json(json!({"queue": queue, "purged": n})))
}

/// `POST /v1/queues/{queue}/pause`.
pub async fn pause(
    State(s): State<AppState>,
    P(queue): P<String>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    s.queue.pause(&queue).await?;
    Ok(Json(json!({"queue": queue, "paused": true})))
}

/// `POST /v1/queues/{queue}/resume`.
pub async fn resume(
    State(s): State<AppState>,
    P(queue): P<String>,
) -> Result<Json<Value>, ApiError> {
    queue_name(&queue)?;
    s.queue.resume(&queue).await?;
    Ok(Json(json!({"queue": queue, "paused": false})))
}
