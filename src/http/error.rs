//! JSON errors (`{"error": "..."}`) and [`JsonBody`], the body extractor that turns malformed
//! JSON into a 400 naming the problem and an oversized body into a 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::cli::CliError;

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
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            msg: crate::cli::args::inner_msg(&e),
        }
    }
}

impl From<CliError> for ApiError {
    fn from(e: CliError) -> Self {
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

/// A JSON body of any content type: 413 over the limit, 400 naming what is wrong.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError {
                    status: StatusCode::PAYLOAD_TOO_LARGE,
                    msg: format!(
                        "request body is over the limit of {} bytes",
                        super::BODY_LIMIT
                    ),
                }
            } else {
                ApiError {
                    status: r.status(),
                    msg: r.body_text(),
                }
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad("request body is empty; send a JSON object"));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad(format!("request body is not valid: {e}")))
    }
}

/// 404 for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        msg: "no such endpoint; see the README for the /v1 API".into(),
    }
}
