//! Where raised and cleared alerts go besides the log (the log line is written by
//! [`super::Metrics::evaluate_alerts`] itself): a webhook receiving one JSON POST per change,
//! and the periodic evaluation that makes `durq serve` raise alerts with or without a pool.
//!
//! Webhook body (`Content-Type: application/json`):
//! `{"source":"alert","rule":"failure_rate","change":"raised","value":0.8,"threshold":0.5,
//! "text":"durq alert failure_rate raised: value 0.8 is over the threshold 0.5"}` — `text`
//! makes it readable as is by chat webhooks that show a `text` field.
//!
//! Invariants:
//! - Each change is POSTed once, in the order the changes happened (one delivery task); a 2xx
//!   answer is success; other answers and network errors are retried up to [`ATTEMPTS`] times
//!   with 1 s, 2 s, … between, then logged as lost. A slow receiver delays later alerts, never
//!   the evaluation.
//! - `http://` URLs are served by a minimal HTTP/1.1 client here; `https://` needs the
//!   `telegram` feature (its reqwest client with rustls) and is refused otherwise.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{AlertChange, Metrics, Notice};
use crate::queue::Queue;

/// Deliveries tried per alert change.
pub const ATTEMPTS: u32 = 3;
/// Time allowed for one delivery.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook URL, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    url: String,
    /// `host:port` and path for `http://` URLs.
    plain: Option<(String, String)>,
}

impl Webhook {
    /// Checks `url` (`http://HOST[:PORT]/PATH`, or `https://…` with feature `telegram`).
    pub fn new(url: &str) -> Result<Webhook, String> {
        if let Some(rest) = url.strip_prefix("http://") {
            let (host, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            if host.is_empty() || host.contains('@') || path.contains(char::is_whitespace) {
                return Err(format!(
                    "webhook `{url}` is not a valid URL; write it like http://127.0.0.1:9000/alerts"
                ));
            }
            let host = if host
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                host.to_string()
            } else {
                format!("{host}:80")
            };
            return Ok(Webhook {
                url: url.into(),
                plain: Some((host, path.into())),
            });
        }
        if url.starts_with("https://") {
            if cfg!(feature = "telegram") {
                return Ok(Webhook {
                    url: url.into(),
                    plain: None,
                });
            }
            return Err(format!(
                "webhook `{url}`: https needs a durq built with `--features telegram` (its TLS client); use an http:// relay otherwise"
            ));
        }
        Err(format!(
            "webhook `{url}` must start with http:// or https://"
        ))
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` once; Ok on a 2xx answer.
    pub async fn post(&self, body: &str) -> Result<(), String> {
        let r = tokio::time::timeout(TIMEOUT, async {
            match &self.plain {
                Some((host, path)) => post_plain(host, path, body).await,
                None => post_tls(&self.url, body).await,
            }
        })
        .await;
        match r {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("answered HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        }
    }
}

async fn post_plain(host: &str, path: &str, body: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: durq/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("sending to {host} failed: {e}"))?;
    // Only the status line matters.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer of {host} failed: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("{host} did not answer HTTP"))
}

#[cfg(feature = "telegram")]
async fn post_tls(url: &str, body: &str) -> Result<u16, String> {
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST failed: {}", e.without_url()))?;
    Ok(r.status().as_u16())
}

#[cfg(not(feature = "telegram"))]
async fn post_tls(_url: &str, _body: &str) -> Result<u16, String> {
    Err("https webhooks need the telegram feature".into())
}

/// The JSON body for one alert notice (`None` for other notices).
pub fn alert_body(n: &Notice) -> Option<String> {
    let Notice::Alert {
        rule,
        change,
        value,
        threshold,
    } = n
    else {
        return None;
    };
    let text = match change {
        AlertChange::Raised => {
            format!("durq alert {rule} raised: value {value} is over the threshold {threshold}")
        }
        AlertChange::Cleared => {
            format!(
                "durq alert {rule} cleared: value {value} is back within the threshold {threshold}"
            )
        }
    };
    let mut v = serde_json::to_value(n).ok()?;
    v["text"] = text.into();
    Some(v.to_string())
}

/// Delivers every alert change of `metrics` to `hook` until the metrics are dropped or the
/// task is aborted.
pub fn deliver(metrics: &Arc<Metrics>, hook: Webhook) -> JoinHandle<()> {
    let mut rx = metrics.subscribe();
    tokio::spawn(async move {
        loop {
            let n = match rx.recv().await {
                Ok(n) => n,
                Err(broadcast::error::RecvError::Lagged(k)) => {
                    tracing::warn!(
                        missed = k,
                        "the alert webhook fell behind; some changes may not be sent"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let Some(body) = alert_body(&n) else { continue };
            let mut last = String::new();
            let mut sent = false;
            for attempt in 1..=ATTEMPTS {
                match hook.post(&body).await {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(e) => last = e,
                }
                if attempt < ATTEMPTS {
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                }
            }
            if !sent {
                tracing::error!(url = hook.url(), error = %last, "an alert could not be delivered to the webhook after {ATTEMPTS} attempts");
            }
        }
    })
}

/// Evaluates `metrics`' alert rules against `queue`'s stats every `interval` until aborted.
pub fn evaluate_every(metrics: &Arc<Metrics>, queue: &Queue, interval: Duration) -> JoinHandle<()> {
    let (metrics, queue) = (metrics.clone(), queue.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match queue.stats().await {
                Ok(stats) => {
                    metrics.evaluate_alerts(&stats);
                }
                Err(crate::Error::Closed) => break,
                Err(e) => tracing::warn!("alert evaluation could not read the stats: {e}"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let w = Webhook::new("http://127.0.0.1:9000/a/b?c=1").unwrap();
        assert_eq!(w.plain, Some(("127.0.0.1:9000".into(), "/a/b?c=1".into())));
        let w = Webhook::new("http://example.org").unwrap();
        assert_eq!(w.plain, Some(("example.org:80".into(), "/".into())));
        for bad in ["ftp://x", "127.0.0.1:9000", "http://", "http://u@h/"] {
            assert!(Webhook::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn body_names_the_rule_and_the_change() {
        let n = Notice::Alert {
            rule: "failure_rate".into(),
            change: AlertChange::Raised,
            value: 0.8,
            threshold: 0.5,
        };
        let v: serde_json::Value = serde_json::from_str(&alert_body(&n).unwrap()).unwrap();
        assert_eq!(v["rule"], "failure_rate");
        assert_eq!(v["change"], "raised");
        assert_eq!(v["source"], "alert");
        assert!(v["text"]
            .as_str()
            .unwrap()
            .contains("over the threshold 0.5"));
    }
}
