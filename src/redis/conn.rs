//! The connection to Redis: one multiplexed connection manager with bounded connect and
//! response times, and the mapping of Redis errors to durq's.
//!
//! Invariants:
//! - No call waits longer than the configured timeout: each is wrapped in
//!   `tokio::time::timeout` (the manager alone can stall for seconds while reconnecting).
//! - An unreachable server, a dropped connection, a missing answer and a cluster that is down
//!   become [`Error::Unavailable`] naming the URL (password removed).
//! - After three timeouts in a row the manager is replaced (a half-open socket never heals on
//!   its own); otherwise the manager reconnects by itself in the background.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError, ScriptInvocation};

use crate::error::{Error, Result};

/// Consecutive timeouts after which the connection is rebuilt.
const REBUILD_AFTER: u32 = 3;

/// A shared connection to one Redis server.
pub struct Conn {
    url: String,
    client: redis::Client,
    timeout: Duration,
    mgr: Mutex<ConnectionManager>,
    timeouts: AtomicU32,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for messages.
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(timeout)
}

impl Conn {
    /// Connects to `url`, waiting at most `timeout`.
    pub async fn open(url: &str, timeout: Duration) -> Result<Conn> {
        let shown = shown_url(url);
        let client = redis::Client::open(url).map_err(|e| {
            Error::invalid(format!(
                "Redis URL `{shown}` is not valid ({e}); use redis://host:port/db"
            ))
        })?;
        let unavailable = |detail: String| Error::Unavailable {
            url: shown.clone(),
            detail,
        };
        let mgr = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), config(timeout)),
        )
        .await
        .map_err(|_| unavailable(format!("no connection within {timeout:?}")))?
        .map_err(|e| unavailable(e.to_string()))?;
        Ok(Conn {
            url: shown,
            client,
            timeout,
            mgr: Mutex::new(mgr),
            timeouts: AtomicU32::new(0),
        })
    }

    /// The URL (password removed).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unavailable(&self, detail: impl Into<String>) -> Error {
        Error::Unavailable {
            url: self.url.clone(),
            detail: detail.into(),
        }
    }

    /// Maps a Redis error: unreachable, dropped or down is [`Error::Unavailable`], anything
    /// else (a script error, a wrong type) is [`Error::Backend`].
    pub fn map_err(&self, e: RedisError) -> Error {
        use redis::{ErrorKind, ServerErrorKind};
        let down = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || matches!(
                e.kind(),
                ErrorKind::Server(ServerErrorKind::ClusterDown)
                    | ErrorKind::Server(ServerErrorKind::TryAgain)
                    | ErrorKind::Server(ServerErrorKind::BusyLoading)
                    | ErrorKind::Server(ServerErrorKind::MasterDown)
                    | ErrorKind::ClusterConnectionNotFound
            );
        if down {
            self.unavailable(e.to_string())
        } else {
            Error::Backend(format!("Redis at {}: {e}", self.url))
        }
    }

    fn manager(&self) -> ConnectionManager {
        self.mgr.lock().clone()
    }

    fn timed_out(&self) -> Error {
        if self.timeouts.fetch_add(1, Ordering::AcqRel) + 1 >= REBUILD_AFTER {
            self.timeouts.store(0, Ordering::Release);
            match ConnectionManager::new_lazy_with_config(self.client.clone(), config(self.timeout))
            {
                Ok(m) => {
                    tracing::warn!(url = %self.url, "Redis did not answer {REBUILD_AFTER} times in a row; reconnecting");
                    *self.mgr.lock() = m;
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, "cannot rebuild the Redis connection")
                }
            }
        }
        self.unavailable(format!("no answer within {:?}", self.timeout))
    }

    fn settle<T>(&self, r: Option<redis::RedisResult<T>>) -> Result<T> {
        match r {
            None => Err(self.timed_out()),
            Some(r) => {
                self.timeouts.store(0, Ordering::Release);
                r.map_err(|e| self.map_err(e))
            }
        }
    }

    /// Runs a script (EVALSHA, loading it on NOSCRIPT).
    pub async fn script<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T> {
        let mut con = self.manager();
        let r = tokio::time::timeout(self.timeout, inv.invoke_async(&mut con))
            .await
            .ok();
        self.settle(r)
    }

    /// Runs one command.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut con = self.manager();
        let r = tokio::time::timeout(self.timeout, cmd.query_async(&mut con))
            .await
            .ok();
        self.settle(r)
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown_url("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            shown_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
