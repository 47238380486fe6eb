//! The dashboard: one HTML page with its CSS and JS embedded in the binary (no build step, no
//! CDN). The page polls `GET /v1/dashboard` every second and redraws: depth per queue and
//! state, throughput and failure-rate sparklines, latency percentiles, workers busy/idle,
//! breakers, alerts, and the dead letters with their last error and a requeue button.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::job::{JobState, Timestamp};
use crate::wire::{job_json, stats_json};

use super::auth::{peer, same_secret, too_many};
use super::error::ApiError;
use super::session::{cookie_value, set_cookie, Session, COOKIE};
use super::AppState;

const INDEX: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const LOGIN: &str = include_str!("assets/login.html");

/// Dead letters shown per queue.
const DEAD_SHOWN: usize = 20;
/// Largest login or logout form body.
const FORM_LIMIT: usize = 4096;

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /`: the page, with the session's CSRF token and a sign-out button when signed in.
pub async fn index(session: Option<Extension<Session>>) -> Response {
    let (csrf, logout) = match &session {
        Some(Extension(s)) => (
            s.csrf.as_str(),
            format!(
                r#"<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
                s.csrf
            ),
        ),
        None => ("", String::new()),
    };
    html(
        StatusCode::OK,
        INDEX
            .replace("{{csrf}}", csrf)
            .replace("{{logout}}", &logout),
    )
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

/// The logout form.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// Reads a small urlencoded form (limit, deadline and type already enforced on the way).
async fn form<T: serde::de::DeserializeOwned>(req: Request) -> Result<(HeaderMap, T), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = super::body::read_limited(&parts.headers, body, FORM_LIMIT, |_| Ok(())).await?;
    let headers = parts.headers.clone();
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let Form(f) = Form::<T>::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad(e.body_text()))?;
    Ok((headers, f))
}

/// Whether the session cookie must be `Secure`: asked for, or the browser reached durq over
/// TLS (a terminator in front says so with `X-Forwarded-Proto`, the browser with `Origin`).
fn secure(s: &AppState, h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    s.security.cookie_secure
        || get("x-forwarded-proto").eq_ignore_ascii_case("https")
        || get("origin").starts_with("https://")
}

/// `POST /login`: starts a session (a random id in the cookie) and goes to the dashboard.
pub async fn login(State(s): State<AppState>, req: Request) -> Response {
    let Some(auth) = &s.auth else {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    };
    let ip = peer(&req);
    if let Some(ip) = ip {
        if let Err(wait) = s.security.throttle.check(ip) {
            return too_many(wait);
        }
    }
    let (headers, f) = match form::<LoginForm>(req).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    if !auth.token_ok(f.token.trim()) {
        if let Some(ip) = ip {
            s.security.throttle.failed(ip);
        }
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not right.")),
        );
    }
    let id = s.security.sessions.create();
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (
                header::SET_COOKIE,
                set_cookie(Some(&id), secure(&s, &headers)),
            ),
        ],
    )
        .into_response()
}

/// `POST /logout`: ends the session (its CSRF token, from the form or `X-CSRF-Token`, must
/// match), clears the cookie and goes back to the login page.
pub async fn logout(State(s): State<AppState>, req: Request) -> Response {
    let id = cookie_value(req.headers(), COOKIE).map(str::to_string);
    let session = req.extensions().get::<Session>().cloned();
    let header_csrf = req
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (headers, csrf) =
        if header_csrf.is_some() || req.headers().get(header::CONTENT_TYPE).is_none() {
            (req.headers().clone(), header_csrf.unwrap_or_default())
        } else {
            match form::<LogoutForm>(req).await {
                Ok((h, f)) => (h, f.csrf),
                Err(e) => return e.into_response(),
            }
        };
    if let (Some(id), Some(session)) = (id, session) {
        if !same_secret(&csrf, &session.csrf) {
            return ApiError {
                status: StatusCode::FORBIDDEN,
                msg: "missing or wrong CSRF token; reload the dashboard and sign out again".into(),
            }
            .into_response();
        }
        s.security.sessions.remove(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_string()),
            (header::SET_COOKIE, set_cookie(None, secure(&s, &headers))),
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
