//! The worker pool: supervised workers running typed handlers per job kind.
//!
//! Map:
//! - [`pool`]: [`Pool`], [`PoolBuilder`], [`ShutdownReport`], [`PoolStats`], [`PoolEvent`].
//! - [`handler`]: the [`Handler`] trait, [`Outcome`], [`typed`] serde handlers, [`handler_fn`].
//! - [`shell`]: [`ShellHandler`], `sh -c CMD` per job.
//! - [`adapters`]: `file_event` / `batch_process` payloads (from the watcher) to a callback.
//! - [`batch`]: [`BatchHandler`] fed by size-or-time windows.
//! - [`breaker`], [`ratelimit`], [`autoscale`]: pure state machines over an injected clock.
//! - `supervise` (worker loop, supervisor, [`RestartBackoff`]), `run` (one job), `shared`.
//! - `telegram` (feature `telegram`): the ready `telegram_message` handler.
//!
//! ```no_run
//! # async fn demo(queue: durq::Queue) -> durq::Result<()> {
//! use durq::worker::{typed, Outcome, Pool};
//! #[derive(serde::Deserialize)]
//! struct Mail { to: String }
//! let pool = Pool::builder(queue, vec!["mail".into()])
//!     .concurrency(8)
//!     .handler("send_mail", typed(|m: Mail, _job| async move {
//!         if m.to.is_empty() { Outcome::GiveUp("no recipient".into()) } else { Outcome::Done }
//!     }))
//!     .start()
//!     .await?;
//! let report = pool.shutdown().await?;
//! # let _ = report; Ok(()) }
//! ```

pub mod adapters;
pub mod autoscale;
pub mod batch;
pub mod breaker;
pub mod handler;
pub mod pool;
pub mod ratelimit;
mod run;
mod shared;
pub mod shell;
mod supervise;
#[cfg(feature = "telegram")]
pub mod telegram;

pub use autoscale::{AutoscaleConfig, Autoscaler, Decision, Signals};
pub use batch::{BatchConfig, BatchHandler};
pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use handler::{handler_fn, typed, Handler, Outcome, Typed};
pub use pool::{Pool, PoolBuilder, PoolEvent, PoolStats, ShutdownReport};
pub use ratelimit::{KeyedLimiter, TokenBucket};
pub use shell::ShellHandler;
pub use supervise::RestartBackoff;

pub(crate) use shared::Shared;
