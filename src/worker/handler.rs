//! Handlers: what the pool runs for a job, and what a run can say about it.
//!
//! A [`Handler`] gets the job (payload included) and returns an [`Outcome`]. [`typed`] wraps an
//! async function of a serde payload type: a payload that does not decode is a permanent failure
//! ([`Outcome::GiveUp`] with the decode error), never a panic. A handler that panics is caught by
//! the pool and counts as a failed attempt whose error is the panic message.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use crate::job::Job;

/// The result of one run of a handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job is finished: ack it.
    Done,
    /// The attempt failed: retry per the job's policy (dead letter after the last retry).
    Retry(String),
    /// The attempt failed and must not run again before this delay (a server's `retry_after`).
    /// The job's partition key (or, for a job without key, its kind) is paused for the delay.
    RetryAfter(Duration, String),
    /// The job can never succeed: straight to the dead letters.
    GiveUp(String),
    /// Not now, and not the job's fault (a server's 429 `retry_after`): run it again after
    /// this delay **without counting an attempt** ([`crate::Queue::postpone`]). Its partition
    /// key waits with it (or, for a job without key, its kind is paused for the delay). Past
    /// the queue's total postponement budget per job (default 1 h) it counts as
    /// [`Outcome::RetryAfter`].
    Postpone(Duration, String),
}

impl Outcome {
    /// `Ok` → [`Outcome::Done`], `Err(e)` → [`Outcome::Retry`] with `e`'s text.
    pub fn from_result<E: Display>(r: Result<(), E>) -> Outcome {
        match r {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
    /// True for [`Outcome::Done`].
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done)
    }
}

/// Runs jobs of one kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one job. The pool heartbeats the lease while this runs.
    async fn handle(&self, job: Job) -> Outcome;
}

/// A shared handler, as the pool stores it.
pub type SharedHandler = Arc<dyn Handler>;

/// A handler made from an async function of the whole [`Job`]; see [`handler_fn`].
pub struct FnHandler<F>(F);

/// Wraps `f(job) -> impl Future<Output = Outcome>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FnHandler(f)
}

#[async_trait]
impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    async fn handle(&self, job: Job) -> Outcome {
        (self.0)(job).await
    }
}

/// A handler of a serde payload type `T`; see [`typed`].
pub struct Typed<T, F> {
    f: F,
    _t: PhantomData<fn() -> T>,
}

/// Wraps `f(payload: T, job) -> impl Future<Output = Outcome>`; the payload is decoded from
/// JSON first, and a payload that does not decode gives up with the decode error.
///
/// ```
/// use durq::worker::{typed, Outcome};
/// #[derive(serde::Deserialize)]
/// struct Mail { to: String }
/// let h = typed(|m: Mail, _job| async move {
///     if m.to.contains('@') { Outcome::Done } else { Outcome::GiveUp(format!("bad address {}", m.to)) }
/// });
/// # let _ = h;
/// ```
pub fn typed<T, F, Fut>(f: F) -> Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    Typed { f, _t: PhantomData }
}

#[async_trait]
impl<T, F, Fut> Handler for Typed<T, F>
where
    T: DeserializeOwned + Send + 'static,
    F: Fn(T, Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    async fn handle(&self, job: Job) -> Outcome {
        match serde_json::from_slice::<T>(&job.payload) {
            Ok(v) => (self.f)(v, job).await,
            Err(e) => Outcome::GiveUp(format!(
                "payload of job {} (kind {}) does not decode as {}: {e}",
                job.id,
                job.kind,
                std::any::type_name::<T>()
            )),
        }
    }
}

/// The text of a panic payload (`&str` or `String`; anything else is named as such).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}
