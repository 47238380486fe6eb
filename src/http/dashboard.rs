//! The dashboard: one HTML page with its CSS and JS embedded in the binary (no build step, no
//! CDN). The page polls `GET /v1/dashboard` every second and redraws: depth per queue and
//! state, throughput and failure-rate sparklines, latency percentiles, workers busy/idle,
//! breakers, alerts, and the dead letters with their last error and a requeue button.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::cli::output::{job_json, stats_json};
use crate::job::{JobState, Timestamp};

use super::auth::COOKIE;
use super::error::ApiError;
use super::AppState;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const LOGIN: &str = include_str!("assets/login.html");

/// Dead letters shown per queue.
const DEAD_SHOWN: usize = 20;

/// `GET /`.
pub async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// `GET /assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    let (body, ty) = match name.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return super::error::not_found().await.into_response(),
    };
    ([(header::CONTENT_TYPE, ty)], body).into_response()
}

/// The login page, with an optional message.
pub fn login_page(msg: Option<&str>) -> String {
    LOGIN.replace("{{message}}", msg.unwrap_or(""))
}

/// The login form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
}

/// `POST /login`: sets the session cookie and goes to the dashboard.
pub async fn login(State(s): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let Some(auth) = &s.auth else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    if !auth.token_ok(f.token.trim()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            login_page(Some("That token is not right.")),
        )
            .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        auth.session()
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// `GET /v1/dashboard`: everything the page draws, in one answer.
pub async fn data(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let stats = s.queue.stats().await?;
    let mut dead = Map::new();
    for (name, q) in &stats.queues {
        if q.dead > 0 {
            let jobs = s.queue.list(name, Some(JobState::Dead), DEAD_SHOWN).await?;
            dead.insert(
                name.clone(),
                Value::Array(jobs.iter().map(job_json).collect()),
            );
        }
    }
    let snapshot = serde_json::to_value(s.metrics.snapshot(None))
        .map_err(|e| ApiError::bad(format!("cannot encode the metrics: {e}")))?;
    Ok(Json(json!({
        "now": Timestamp::now().to_rfc3339(),
        "stats": stats_json(&stats, None),
        "metrics": snapshot,
        "dead": dead,
    })))
}
