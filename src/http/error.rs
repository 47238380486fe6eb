//! JSON errors (`{"error": "..."}`), the fallback for unknown routes, and [`json_errors`], the
//! outermost middleware that guarantees the invariant below and adds the security headers.
//!
//! Invariant: every answer with a 4xx/5xx status is JSON `{"error": "..."}` — axum's own
//! rejections (405, query strings, path parameters, forms) included — except the HTML login
//! page the dashboard shows (401 at `/`, and wrong tokens at `/login`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::wire::WireError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// One sentence.
    pub msg: String,
}

impl ApiError {
    /// 400 with a message.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            msg: msg.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({ "error": self.msg }))).into_response()
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        use crate::Error as E;
        let status = match &e {
            E::InvalidInput(_) => StatusCode::BAD_REQUEST,
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::LeaseLost { .. } => StatusCode::CONFLICT,
            E::Closed => StatusCode::SERVICE_UNAVAILABLE,
            E::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            E::Cancelled { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            msg: crate::wire::inner_msg(&e),
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        ApiError {
            status: if e.code == 2 {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            },
            msg: e.msg,
        }
    }
}

/// 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        msg: "no such endpoint; see the README for the /v1 API".into(),
    }
}

/// Largest non-JSON error body that [`json_errors`] quotes (axum's rejections are short).
const QUOTE_LIMIT: usize = 4096;

fn default_message(status: StatusCode, method: &str, path: &str) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("{method} is not allowed on {path}; see the README for the /v1 API")
        }
        StatusCode::NOT_FOUND => "no such endpoint; see the README for the /v1 API".into(),
        s => s
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_string(),
    }
}

/// Outermost middleware: turns any non-JSON error answer into `{"error": …}` (keeping its
/// status and headers such as `Allow`), and sets the security headers on every answer.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut res = next.run(req).await;
    let status = res.status();
    let ty = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if (status.is_client_error() || status.is_server_error())
        && !ty.starts_with("application/json")
        && !ty.starts_with("text/html")
    {
        let (mut parts, body) = res.into_parts();
        let text = axum::body::to_bytes(body, QUOTE_LIMIT)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let msg = if text.is_empty() {
            default_message(status, &method, &path)
        } else {
            text
        };
        let body = serde_json::json!({ "error": msg }).to_string();
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res = Response::from_parts(parts, Body::from(body));
    }
    let h = res.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
