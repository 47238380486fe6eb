//! # durq — an embedded, durable job queue that needs no server
//!
//! Map of the crate (the pipeline, front to back):
//! - [`queue`]: [`Queue`], the typed async handle, and its builder.
//! - [`backend`]: the [`Backend`] trait every store implements (local; Redis with `redis`).
//! - [`local`]: the embedded backend: lock, recovery, engine and journal threads.
//! - [`engine`]: the single owner of all mutations and its in-memory indexes.
//! - [`journal`]: the append-only journal (format, writer with group commit, recovery, check).
//! - [`record`]: journal record bodies; [`store`]: the sled state materialised from them.
//! - [`job`], [`options`], [`stats`], [`error`], [`clock`], [`duration`]: the vocabulary.
//! - [`worker`]: the worker pool; [`watch`]: the file watcher; [`cli`], [`http`]: the binary's
//!   command line and HTTP API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), durq::Error> {
//! use durq::{NewJob, Priority, Queue};
//! let dir = tempfile::tempdir().unwrap();
//! let q = Queue::open(dir.path()).await?;
//! q.enqueue(NewJob::new("mail", br#"{"to":"x"}"#.to_vec()).priority(Priority::HIGH)).await?;
//! if let Some(lease) = q.reserve(&["mail"]).await? {
//!     // ... do the work ...
//!     q.ack(&lease).await?;
//! }
//! q.shutdown().await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backend;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod duration;
#[doc(hidden)]
pub mod engine;
pub mod error;
#[cfg(feature = "http")]
pub mod http;
pub mod job;
pub mod journal;
pub mod local;
pub mod lock;
pub mod metrics;
pub mod options;
pub mod perms;
pub mod pool_event;
pub mod queue;
pub mod record;
pub mod stats;
pub mod store;
#[cfg(feature = "watch")]
pub mod watch;
#[cfg(feature = "http")]
pub mod wire;
pub mod worker;

pub use backend::{Backend, ReserveRequest};
pub use error::{Error, Result};
pub use job::{
    parse_duration, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease, LeaseToken,
    NewJob, Priority, RetryPolicy, Selection, Timestamp,
};
pub use options::{FsyncPolicy, Options, QueueConfig};
pub use queue::{Queue, QueueBuilder};
pub use stats::{Event, QueueStats, Stats};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
