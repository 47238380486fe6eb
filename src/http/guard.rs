//! Cross-site and DNS-rebinding defence, applied to every request before authentication.
//!
//! `durq serve` listens next to `--exec` workers, so any web page the machine's user opens is
//! a possible attacker. A page can make the browser send requests to `127.0.0.1:7878`, and a
//! DNS-rebinding page can even read the answers (its own origin then resolves to loopback).
//!
//! Invariants (each refusal is a JSON error and changes nothing):
//! - **Host.** The `Host` header (or the URI authority) must name this server: the listen
//!   address, the address the client actually connected to (an IP literal cannot be a
//!   rebinding name), `localhost` / `127.0.0.1` / `[::1]` with the listening port, or an entry
//!   of `--allow-host` (`NAME` for any port, `NAME:PORT` for one). Else 421.
//! - **Origin.** A request that carries `Origin` must come from one of those same authorities
//!   (durq's own pages); `Origin: null` and every other origin get 403.
//! - **Fetch metadata.** `Sec-Fetch-Site: cross-site` or `same-site` gets 403, except a
//!   top-level navigation (`GET` of `/` or `/assets/…`, static pages that hold no data).
//! - **Content type.** A request that is not `GET`/`HEAD` and carries a body or a
//!   `Content-Type` must send `application/json` (the `/login` and `/logout` forms send
//!   `application/x-www-form-urlencoded`). Else 415. Browsers can only send JSON cross-site
//!   after a CORS preflight, which durq never grants (no CORS headers are ever sent).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// The address of the connection's local end, put in the request's extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr(pub SocketAddr);

/// One `--allow-host` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    host: String,
    port: Option<u16>,
}

/// Which `Host` values (and `Origin` authorities) name this server.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    bound: SocketAddr,
    allow: Vec<Allowed>,
}

/// Splits `host[:port]` (with `[v6]` brackets) into a lower-case host without brackets and
/// trailing dot, and the port if any. `None` when it is not a plausible authority.
fn split_authority(a: &str) -> Option<(String, Option<u16>)> {
    let a = a.trim();
    if a.is_empty() || a.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        (h.to_string(), port)
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.parse().ok()?)),
            Some(_) => return None, // bare IPv6 without brackets
            None => (a.to_string(), None),
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some((host, port))
}

impl HostPolicy {
    /// For a server bound to `bound`, with the `--allow-host` entries (`NAME` or `NAME:PORT`).
    pub fn new(bound: SocketAddr, allow: &[String]) -> crate::Result<HostPolicy> {
        let mut out = Vec::new();
        for a in allow {
            let Some((host, port)) = split_authority(a) else {
                return Err(crate::Error::invalid(format!(
                    "--allow-host `{a}` is not a host name; write it like durq.example.com or durq.example.com:443"
                )));
            };
            out.push(Allowed { host, port });
        }
        Ok(HostPolicy { bound, allow: out })
    }

    /// Whether `authority` (a `Host` value, or an `Origin` without its scheme) names this
    /// server, for a connection whose local end is `local`. `default_port` is the port an
    /// authority without one means (80 for `Host` and `http:` origins, 443 for `https:`).
    pub fn names_us(&self, authority: &str, local: Option<SocketAddr>, default_port: u16) -> bool {
        let Some((host, port)) = split_authority(authority) else {
            return false;
        };
        if self
            .allow
            .iter()
            .any(|a| a.host == host && a.port.is_none_or(|p| Some(p) == port))
        {
            return true;
        }
        if port.unwrap_or(default_port) != self.bound.port() {
            return false;
        }
        if host == "localhost" {
            return true;
        }
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        ip.is_loopback()
            || (!self.bound.ip().is_unspecified() && ip == self.bound.ip())
            || local.is_some_and(|l| l.ip() == ip)
    }
}

fn refuse(status: StatusCode, msg: String) -> Response {
    tracing::debug!(status = status.as_u16(), "refused: {msg}");
    ApiError { status, msg }.into_response()
}

/// The request's authority: the `Host` header, else the URI's (HTTP/2, absolute-form).
fn authority(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// Whether `path` is a static page that a cross-site navigation may open.
fn static_page(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && (path == "/" || path.starts_with("/assets/"))
}

/// `application/json`, with optional parameters such as `charset`.
pub fn is_json(h: &HeaderMap) -> bool {
    media_type(h).is_some_and(|m| m == "application/json")
}

/// The media type of `Content-Type`, lower case, without parameters.
pub fn media_type(h: &HeaderMap) -> Option<String> {
    h.get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Middleware: the checks of the module doc, in order Host, Origin, fetch metadata, type.
pub async fn same_origin(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let local = req.extensions().get::<LocalAddr>().map(|l| l.0);
    let policy = &s.security.hosts;
    let Some(host) = authority(&req) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the request has no Host header; send the address you connected to".into(),
        );
    };
    if !policy.names_us(&host, local, 80) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host `{host}` does not name this durq; use the listen address or localhost, \
                 or start serve with --allow-host {host}"
            ),
        );
    }
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN) {
        let o = String::from_utf8_lossy(origin.as_bytes()).into_owned();
        let ok = match o.split_once("://") {
            Some(("http", a)) => policy.names_us(a, local, 80),
            Some(("https", a)) => policy.names_us(a, local, 443),
            _ => false,
        };
        if !ok {
            return refuse(
                StatusCode::FORBIDDEN,
                format!("requests from other sites are refused (Origin `{o}` is not this durq)"),
            );
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let site = h
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if matches!(site.as_deref(), Some("cross-site" | "same-site")) && !static_page(&method, &path) {
        return refuse(
            StatusCode::FORBIDDEN,
            format!(
                "requests from other sites are refused (Sec-Fetch-Site: {})",
                site.unwrap_or_default()
            ),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let has_body = h
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || h.contains_key(header::TRANSFER_ENCODING);
        let ty = media_type(h);
        let form_route = path == "/login" || path == "/logout";
        let ok = match ty.as_deref() {
            None => !has_body,
            Some("application/json") => !form_route || path == "/logout",
            Some("application/x-www-form-urlencoded") => form_route,
            Some(_) => false,
        };
        if !ok {
            let want = if form_route {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            };
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "send the body with `Content-Type: {want}` (got {}); with curl add -H 'Content-Type: {want}'",
                    ty.map_or("no Content-Type".to_string(), |t| format!("`{t}`"))
                ),
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bound: &str, allow: &[&str]) -> HostPolicy {
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(bound.parse().unwrap(), &allow).unwrap()
    }

    #[test]
    fn hosts() {
        let pol = p("127.0.0.1:7878", &["durq.example.com", "proxy.local:8443"]);
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST:7878",
            "[::1]:7878",
            "durq.example.com",
            "durq.example.com:1",
            "proxy.local:8443",
        ] {
            assert!(pol.names_us(ok, None, 80), "{ok}");
        }
        for bad in [
            "rebind.evil.example:7878",
            "localhost:7879",
            "localhost",
            "127.0.0.1",
            "proxy.local:8444",
            "proxy.local",
            "",
            "a@127.0.0.1:7878",
            "::1:7878",
            "10.0.0.1:7878",
        ] {
            assert!(!pol.names_us(bad, None, 80), "{bad}");
        }
        let any = p("0.0.0.0:80", &[]);
        assert!(any.names_us("10.1.2.3", Some("10.1.2.3:80".parse().unwrap()), 80));
        assert!(!any.names_us("10.1.2.4", Some("10.1.2.3:80".parse().unwrap()), 80));
        assert!(!any.names_us("0.0.0.0:80", None, 80));
        assert!(HostPolicy::new("127.0.0.1:1".parse().unwrap(), &["a/b".into()]).is_err());
    }
}
