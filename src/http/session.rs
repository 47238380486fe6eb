//! Dashboard sessions, kept on the server: the login form trades the token for a random
//! session id (256 bits from the OS) in an `HttpOnly; SameSite=Strict` cookie with a
//! `Max-Age`, and `Secure` when asked or behind TLS. `/logout` forgets the session.
//!
//! Invariants:
//! - The cookie holds no function of the token: a stolen cookie dies with its session (logout,
//!   expiry after [`SESSION_TTL`], or a restart of `serve`), and reveals nothing about the token.
//! - Sessions are looked up by the SHA-256 of the cookie value; each has its own random CSRF
//!   token that the dashboard sends back (`X-CSRF-Token` header, or the `csrf` form field) on
//!   every request that changes something.
//! - At most [`MAX_SESSIONS`] live at once; a new login beyond that evicts the oldest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Name of the session cookie.
pub const COOKIE: &str = "durq_session";
/// How long a session lives (the cookie's `Max-Age`).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 1024;

/// A live session, as the handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The CSRF token the dashboard must send back on changes.
    pub csrf: String,
}

#[derive(Debug)]
struct Entry {
    created: Instant,
    csrf: String,
}

/// The session store.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Entry>>,
}

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Starts a session; returns the cookie value.
    pub fn create(&self) -> String {
        let id = random_hex(32);
        let now = Instant::now();
        let mut m = self.map.lock();
        m.retain(|_, e| now.duration_since(e.created) < SESSION_TTL);
        if m.len() >= MAX_SESSIONS {
            if let Some(oldest) = m.iter().min_by_key(|(_, e)| e.created).map(|(k, _)| *k) {
                m.remove(&oldest);
            }
        }
        m.insert(
            key(&id),
            Entry {
                created: now,
                csrf: random_hex(32),
            },
        );
        id
    }

    /// The live session with this cookie value.
    pub fn get(&self, id: &str) -> Option<Session> {
        let k = key(id);
        let mut m = self.map.lock();
        match m.get(&k) {
            Some(e) if e.created.elapsed() < SESSION_TTL => Some(Session {
                csrf: e.csrf.clone(),
            }),
            Some(_) => {
                m.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout). Returns whether it existed.
    pub fn remove(&self, id: &str) -> bool {
        self.map.lock().remove(&key(id)).is_some()
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie_value<'a>(h: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value for a session (`None`: one that deletes the cookie).
pub fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let (v, age) = match id {
        Some(id) => (id, SESSION_TTL.as_secs()),
        None => ("", 0),
    };
    format!(
        "{COOKIE}={v}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_remove() {
        let s = Sessions::default();
        let a = s.create();
        let b = s.create();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let sa = s.get(&a).unwrap();
        assert_ne!(sa.csrf, s.get(&b).unwrap().csrf);
        assert!(s.get("nope").is_none());
        assert!(s.remove(&a));
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
        assert!(set_cookie(Some(&b), true).contains("Secure"));
        assert!(set_cookie(None, false).contains("Max-Age=0"));
    }

    #[test]
    fn bounded() {
        let s = Sessions::default();
        let first = s.create();
        for _ in 0..MAX_SESSIONS {
            s.create();
        }
        assert!(s.get(&first).is_none(), "the oldest was evicted");
        assert_eq!(s.map.lock().len(), MAX_SESSIONS);
    }
}
