//! Access control. With a token set, the API and `/metrics` need
//! `Authorization: Bearer <token>`, and the dashboard a session cookie set by the login form
//! (`HttpOnly; SameSite=Strict`, so other sites cannot ride on it). The cookie holds a SHA-256
//! of the token, not the token. Comparisons are constant-time; the token is never logged.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

/// Name of the session cookie.
pub const COOKIE: &str = "durq_session";

/// The configured token and the session value derived from it.
pub struct Auth {
    token: String,
    session: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(<redacted>)")
    }
}

impl Auth {
    /// From the token (already trimmed, not empty).
    pub fn new(token: String) -> Auth {
        let digest = Sha256::digest(format!("durq-session\0{token}").as_bytes());
        let session = digest.iter().map(|b| format!("{b:02x}")).collect();
        Auth { token, session }
    }

    /// Checks a presented token.
    pub fn token_ok(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.token.as_bytes())
    }

    /// The session cookie value.
    pub fn session(&self) -> &str {
        &self.session
    }

    fn allows(&self, req: &Request) -> bool {
        let h = req.headers();
        let bearer = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.token_ok(t.trim()));
        bearer
            || h.get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .any(|(k, v)| {
                    k == COOKIE && constant_time_eq(v.as_bytes(), self.session.as_bytes())
                })
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Middleware: lets a request through if no token is set or it carries the token.
pub async fn require(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(auth) = &s.auth else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let open = (path == "/login" && req.method() == Method::POST) || path.starts_with("/assets/");
    if open || auth.allows(&req) {
        return next.run(req).await;
    }
    if path == "/" && req.method() == Method::GET {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            super::dashboard::login_page(None),
        )
            .into_response();
    }
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        msg: "this durq needs an access token: send `Authorization: Bearer <token>`".into(),
    }
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"durq\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn session_is_not_the_token() {
        let a = Auth::new("s3cret".into());
        assert_ne!(a.session(), "s3cret");
        assert_eq!(a.session().len(), 64);
        assert!(a.token_ok("s3cret") && !a.token_ok("s3cre"));
    }
}
