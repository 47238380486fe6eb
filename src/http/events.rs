//! `GET /v1/events`: the queue's events as server-sent events, with ids and resume.
//!
//! A [`Hub`] follows the backend's event stream ([`crate::Queue::subscribe`]: enqueued,
//! started, completed, retrying, dead, requeued, …) and the metrics' pool and alert notices
//! (breaker changed, scaled, worker restarted, alert raised / cleared). It numbers every event
//! (`id:` 1, 2, 3, … per server run), keeps the last [`RING`] in memory and fans them out to
//! every connected client. The SSE `event:` name is the event's own name (`enqueued`,
//! `completed`, `retrying`, `dead`, `breaker_changed`, `alert_raised`, …) and `data:` its JSON
//! (job ids as strings, as everywhere in the API).
//!
//! Invariants:
//! - Ids are strictly increasing and are sent in order; a client never gets an id twice.
//! - A client that sends `Last-Event-ID: N` first gets every event after N still in the ring,
//!   then the live ones. A client that falls behind the fan-out channel is refilled from the
//!   ring. Whenever events the client should have had are gone (older than the ring, or lost
//!   by the hub itself when the backend's channel overflowed) it gets one `lagged` event
//!   saying how many, never a silent gap. The backend's channel holds 4,096 events: one batch
//!   enqueue larger than that can overflow it (measured: a 10,000-job batch in a debug build
//!   lost about half, each loss announced by a `lagged` event with `"source":"queue"`). Pool and
//!   alert notices come through the metrics' channel, whose lags are only logged (it mostly
//!   carries job events this hub takes from the backend).
//! - [`Hub::close`] ends every open stream (shutdown does not wait for SSE clients).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::Extension;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use crate::metrics::{AlertChange, Metrics, Notice};
use crate::queue::Queue;
use crate::worker::PoolEvent;

/// Events kept in memory for `Last-Event-ID` resume.
pub const RING: usize = 16_384;
/// Capacity of the live fan-out channel (a client further behind is refilled from the ring).
const FANOUT: usize = 1024;

/// One numbered event.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its id.
    pub id: u64,
    /// The SSE event name.
    pub name: String,
    /// JSON text.
    pub data: String,
}

#[derive(Debug)]
struct Inner {
    ring: VecDeque<Arc<Entry>>,
    next: u64,
}

/// The numbered event log and its fan-out. Share as `Arc<Hub>`.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Entry>>,
    closed: watch::Sender<bool>,
    capacity: usize,
}

impl Hub {
    /// An empty hub keeping the last `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(FANOUT);
        let (closed, _) = watch::channel(false);
        Arc::new(Hub {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                next: 1,
            }),
            tx,
            closed,
            capacity: capacity.max(1),
        })
    }

    /// A hub of [`RING`] events following `queue`'s events and `metrics`' pool and alert
    /// notices until [`Hub::close`].
    pub fn start(queue: &Queue, metrics: &Arc<Metrics>) -> Arc<Hub> {
        let hub = Hub::new(RING);
        let mut jobs = queue.subscribe();
        let mut notices = metrics.subscribe();
        let mut closed = hub.closed.subscribe();
        let h = hub.clone();
        tokio::spawn(async move {
            let mut notices_open = true;
            loop {
                tokio::select! {
                    _ = closed.changed() => break,
                    r = jobs.recv() => match r {
                        Ok(ev) => {
                            let mut data = serde_json::to_value(&ev).unwrap_or_default();
                            // Ids as strings, as in the rest of the API (u64 does not fit a
                            // JavaScript number).
                            if let Some(id) = data.get("id").and_then(|v| v.as_u64()) {
                                data["id"] = id.to_string().into();
                            }
                            let name = data["event"].as_str().unwrap_or("job").to_string();
                            h.push(&name, data.to_string());
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "the event stream fell behind the queue");
                            h.push("lagged", json!({"missed": n, "source": "queue"}).to_string());
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    r = notices.recv(), if notices_open => match r {
                        Ok(Notice::Job(_)) => {}
                        Ok(Notice::Pool(ev)) => {
                            let name = match &ev {
                                PoolEvent::BreakerChanged { .. } => "breaker_changed",
                                PoolEvent::Scaled(_) => "scaled",
                                PoolEvent::WorkerRestarted { .. } => "worker_restarted",
                            };
                            h.push(name, serde_json::to_string(&ev).unwrap_or_default());
                        }
                        Ok(n @ Notice::Alert { change, .. }) => {
                            let name = match change {
                                AlertChange::Raised => "alert_raised",
                                AlertChange::Cleared => "alert_cleared",
                            };
                            h.push(name, serde_json::to_string(&n).unwrap_or_default());
                        }
                        // The metrics' channel also carries every job event (ignored here), so
                        // a lag on it almost always lost only those: not worth a `lagged`.
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(missed = n, "the event stream fell behind the metrics' notices");
                        }
                        Err(broadcast::error::RecvError::Closed) => notices_open = false,
                    },
                }
            }
        });
        hub
    }

    /// Numbers an event, keeps it and sends it to every client. Returns its id.
    pub fn push(&self, name: &str, data: String) -> u64 {
        let mut st = self.inner.lock();
        let id = st.next;
        st.next += 1;
        let e = Arc::new(Entry {
            id,
            name: name.to_string(),
            data,
        });
        if st.ring.len() == self.capacity {
            st.ring.pop_front();
        }
        st.ring.push_back(e.clone());
        // Sent under the lock, so the channel's order is the id order.
        let _ = self.tx.send(e);
        id
    }

    /// Ends every open stream and stops following the queue.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }

    /// The last id given out (0 before any).
    pub fn last_id(&self) -> u64 {
        self.inner.lock().next - 1
    }

    /// Events after `after` still in the ring, with how many after it are gone.
    fn since(&self, after: u64) -> (u64, Vec<Arc<Entry>>) {
        let st = self.inner.lock();
        let oldest = st.ring.front().map_or(st.next, |e| e.id);
        let missed = oldest.saturating_sub(after + 1);
        let kept = st.ring.iter().filter(|e| e.id > after).cloned().collect();
        (missed, kept)
    }

    /// A subscription starting after `after` (`None`: only events from now on).
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Subscription {
        // Subscribe before reading the ring (under the same lock that orders pushes), so no
        // event falls between the two; duplicates are dropped by id.
        let st = self.inner.lock();
        let rx = self.tx.subscribe();
        let now = st.next - 1;
        drop(st);
        let mut pending = VecDeque::new();
        let last = match after {
            Some(a) => {
                let a = a.min(now);
                let (missed, kept) = self.since(a);
                if missed > 0 {
                    pending.push_back(lagged(missed, a));
                }
                pending.extend(kept);
                a
            }
            None => now,
        };
        Subscription {
            hub: self.clone(),
            rx,
            pending,
            last,
            closed: self.closed.subscribe(),
        }
    }
}

fn lagged(missed: u64, after: u64) -> Arc<Entry> {
    Arc::new(Entry {
        id: 0,
        name: "lagged".into(),
        data: json!({"missed": missed, "after": after}).to_string(),
    })
}

/// One client's position in the event log.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    rx: broadcast::Receiver<Arc<Entry>>,
    pending: VecDeque<Arc<Entry>>,
    last: u64,
    closed: watch::Receiver<bool>,
}

impl Subscription {
    /// The next event in order (a `lagged` entry has id 0), or `None` once the hub closed.
    pub async fn next(&mut self) -> Option<Arc<Entry>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                if e.id != 0 {
                    self.last = e.id;
                }
                return Some(e);
            }
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                _ = self.closed.changed() => return None,
                r = self.rx.recv() => match r {
                    Ok(e) if e.id > self.last => {
                        self.last = e.id;
                        return Some(e);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (missed, kept) = self.hub.since(self.last);
                        if missed > 0 {
                            self.pending.push_back(lagged(missed, self.last));
                        }
                        self.pending.extend(kept);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<SseEvent, Infallible>> {
        futures::stream::unfold(self, |mut s| async move {
            let e = s.next().await?;
            let mut ev = SseEvent::default().event(&e.name).data(&e.data);
            if e.id != 0 {
                ev = ev.id(e.id.to_string());
            }
            Some((Ok(ev), s))
        })
    }
}

/// `GET /v1/events` (optionally with `Last-Event-ID`).
pub async fn stream(hub: Option<Extension<Arc<Hub>>>, headers: HeaderMap) -> Response {
    let Some(Extension(hub)) = hub else {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            msg: "this server does not publish events".into(),
        }
        .into_response();
    };
    let after = match headers.get("last-event-id") {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return ApiError::bad(
                    "Last-Event-ID must be the number of an event this server sent",
                )
                .into_response()
            }
        },
    };
    let sub = hub.subscribe(after);
    Sse::new(sub.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ids(s: &mut Subscription, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let e = s.next().await.unwrap();
            out.push((e.id, e.name.clone()));
        }
        out
    }

    #[tokio::test]
    async fn resume_from_ring_and_lagged_when_gone() {
        let hub = Hub::new(4);
        for i in 0..6 {
            hub.push("x", i.to_string());
        }
        // Ring holds 3..=6; resuming after 1 lost id 2.
        let mut s = hub.subscribe(Some(1));
        let got = ids(&mut s, 5).await;
        assert_eq!(got[0], (0, "lagged".to_string()));
        assert_eq!(
            got[1..].iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        // Resume within the ring: no lagged event.
        let mut s = hub.subscribe(Some(4));
        hub.push("x", "7".into());
        assert_eq!(
            ids(&mut s, 3).await.iter().map(|g| g.0).collect::<Vec<_>>(),
            vec![5, 6, 7]
        );
        hub.close();
        assert!(s.next().await.is_none());
    }

    #[tokio::test]
    async fn slow_reader_is_refilled_from_the_ring_in_order() {
        let hub = Hub::new(10_000);
        let mut s = hub.subscribe(None);
        for i in 0..(FANOUT * 3) {
            hub.push("x", i.to_string());
        }
        let got = ids(&mut s, FANOUT * 3).await;
        let want: Vec<u64> = (1..=(FANOUT as u64 * 3)).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), want);
    }

    #[tokio::test]
    async fn slow_reader_past_the_ring_gets_lagged() {
        let hub = Hub::new(FANOUT);
        let mut s = hub.subscribe(None);
        for i in 0..(FANOUT * 3) {
            hub.push("x", i.to_string());
        }
        let first = s.next().await.unwrap();
        assert_eq!(first.name, "lagged");
        let missed: serde_json::Value = serde_json::from_str(&first.data).unwrap();
        assert_eq!(missed["missed"], (FANOUT * 2) as u64);
        let next = s.next().await.unwrap();
        assert_eq!(next.id, FANOUT as u64 * 2 + 1);
    }
}
