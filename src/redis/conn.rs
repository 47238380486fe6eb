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
//! - Several URLs separated by commas name the seed nodes of a Redis Cluster: the cluster
//!   client routes each script by its first key (every key of a script shares its queue's hash
//!   tag, so each script runs on the one node owning that slot).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError, ScriptInvocation};

use crate::error::{Error, Result};

/// Consecutive timeouts after which the connection is rebuilt.
const REBUILD_AFTER: u32 = 3;

/// A shared connection to one Redis server or one Redis Cluster.
pub struct Conn {
    url: String,
    link: Link,
    timeout: Duration,
    timeouts: AtomicU32,
}

enum Link {
    Single {
        client: redis::Client,
        mgr: Mutex<ConnectionManager>,
    },
    Cluster(ClusterConnection),
}

/// A clone of the connection for one call.
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.url)
            .field("cluster", &self.is_cluster())
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
    /// Connects to `url` (several, comma-separated: a Redis Cluster), waiting at most
    /// `timeout`.
    pub async fn open(url: &str, timeout: Duration) -> Result<Conn> {
        if url.contains(',') {
            return Conn::open_cluster(url, timeout).await;
        }
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
            link: Link::Single {
                client,
                mgr: Mutex::new(mgr),
            },
            timeout,
            timeouts: AtomicU32::new(0),
        })
    }

    async fn open_cluster(urls: &str, timeout: Duration) -> Result<Conn> {
        let nodes: Vec<&str> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let shown = nodes
            .iter()
            .map(|u| shown_url(u))
            .collect::<Vec<_>>()
            .join(",");
        let client = ClusterClient::builder(nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| {
                Error::invalid(format!(
                    "Redis Cluster URLs `{shown}` are not valid ({e}); use redis://host:port,redis://host:port"
                ))
            })?;
        let con = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| Error::Unavailable {
                url: shown.clone(),
                detail: format!("no connection within {timeout:?}"),
            })?
            .map_err(|e| Error::Unavailable {
                url: shown.clone(),
                detail: e.to_string(),
            })?;
        Ok(Conn {
            url: shown,
            link: Link::Cluster(con),
            timeout,
            timeouts: AtomicU32::new(0),
        })
    }

    /// True on a Redis Cluster (scripts must not span queues there).
    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
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

    fn handle(&self) -> Handle {
        match &self.link {
            Link::Single { mgr, .. } => Handle::Single(mgr.lock().clone()),
            Link::Cluster(c) => Handle::Cluster(c.clone()),
        }
    }

    fn timed_out(&self) -> Error {
        if self.timeouts.fetch_add(1, Ordering::AcqRel) + 1 >= REBUILD_AFTER {
            self.timeouts.store(0, Ordering::Release);
            if let Link::Single { client, mgr } = &self.link {
                match ConnectionManager::new_lazy_with_config(client.clone(), config(self.timeout))
                {
                    Ok(m) => {
                        tracing::warn!(url = %self.url, "Redis did not answer {REBUILD_AFTER} times in a row; reconnecting");
                        *mgr.lock() = m;
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url, error = %e, "cannot rebuild the Redis connection")
                    }
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
        let r = match self.handle() {
            Handle::Single(mut c) => tokio::time::timeout(self.timeout, inv.invoke_async(&mut c))
                .await
                .ok(),
            Handle::Cluster(mut c) => tokio::time::timeout(self.timeout, inv.invoke_async(&mut c))
                .await
                .ok(),
        };
        self.settle(r)
    }

    /// Runs one command.
    pub async fn cmd<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let r = match self.handle() {
            Handle::Single(mut c) => tokio::time::timeout(self.timeout, cmd.query_async(&mut c))
                .await
                .ok(),
            Handle::Cluster(mut c) => tokio::time::timeout(self.timeout, cmd.query_async(&mut c))
                .await
                .ok(),
        };
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
