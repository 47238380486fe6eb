//! Access control. With a token set, the API and `/metrics` need `Authorization: Bearer
//! <token>` (the scheme in any case, RFC 7235), and the dashboard a session cookie from the
//! login form ([`super::session`]); everything else gets 401.
//!
//! Invariants:
//! - Tokens are compared as SHA-256 digests with a constant-time equality: the time taken
//!   depends on neither the content nor the length of the guess. The token is never logged.
//! - Wrong bearer tokens and wrong login-form tokens spend the caller's per-IP budget
//!   ([`super::throttle`]); with the budget spent, credentials get 429 without being checked.
//! - A request authenticated by the session cookie that changes something (not `GET`/`HEAD`)
//!   must carry the session's CSRF token in `X-CSRF-Token` (`/logout` checks its form field).

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::session::{cookie_value, COOKIE};
use super::AppState;

/// Shortest token accepted on a non-loopback address, in bytes.
pub const MIN_REMOTE_TOKEN: usize = 16;

/// The configured token (kept only as its digest).
pub struct Auth {
    digest: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(<redacted>)")
    }
}

impl Auth {
    /// From the token (already trimmed, not empty).
    pub fn new(token: &str) -> Auth {
        Auth {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Checks a presented token, in constant time.
    pub fn token_ok(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// Compares two strings in constant time for equal lengths (for random, fixed-size values
/// such as CSRF tokens).
pub fn same_secret(a: &str, b: &str) -> bool {
    let da: [u8; 32] = Sha256::digest(a.as_bytes()).into();
    let db: [u8; 32] = Sha256::digest(b.as_bytes()).into();
    da.ct_eq(&db).into()
}

/// The credentials of `Authorization: Bearer <token>`, scheme case-insensitive.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(|c: char| c.is_ascii_whitespace())?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The caller's address, as the server recorded it.
pub fn peer(req: &Request) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// 429 with `Retry-After`.
pub fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        msg: format!("too many wrong tokens from this address; try again in {secs} s"),
    }
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn unauthorized(msg: &str) -> Response {
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        msg: msg.into(),
    }
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"durq\""),
    );
    r
}

/// Middleware: lets a request through if no token is set or it carries valid credentials.
pub async fn require(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(auth) = &s.auth else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let method = req.method().clone();
    let open = (path == "/login" && method == Method::POST)
        || path.starts_with("/assets/")
        || path == "/health"
        || path == "/ready";
    if open {
        return next.run(req).await;
    }
    let ip = peer(&req);
    let throttle = &s.security.throttle;
    if let Some(t) = bearer(req.headers()) {
        if let Some(ip) = ip {
            if let Err(wait) = throttle.check(ip) {
                return too_many(wait);
            }
        }
        if auth.token_ok(t) {
            return next.run(req).await;
        }
        if let Some(ip) = ip {
            throttle.failed(ip);
        }
        return unauthorized("wrong access token");
    }
    let session = cookie_value(req.headers(), COOKIE).and_then(|id| s.security.sessions.get(id));
    if let Some(session) = session {
        let changes = method != Method::GET && method != Method::HEAD;
        if changes && path != "/logout" {
            let sent = req
                .headers()
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same_secret(sent, &session.csrf) {
                return ApiError {
                    status: StatusCode::FORBIDDEN,
                    msg: "missing or wrong X-CSRF-Token; reload the dashboard".into(),
                }
                .into_response();
            }
        }
        req.extensions_mut().insert(session);
        return next.run(req).await;
    }
    if path == "/" && (method == Method::GET || method == Method::HEAD) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            super::dashboard::login_page(None),
        )
            .into_response();
    }
    unauthorized("this durq needs an access token: send `Authorization: Bearer <token>`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        let a = Auth::new("s3cret-s3cret-s3cret");
        assert!(a.token_ok("s3cret-s3cret-s3cret"));
        assert!(!a.token_ok("s3cret"));
        assert!(!a.token_ok(""));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(same_secret("ab", "ab") && !same_secret("ab", "abc"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (v, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearerabc", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            assert_eq!(bearer(&h), want, "{v}");
        }
    }
}
