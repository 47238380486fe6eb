//! # durq — an embedded, durable job queue that needs no server
//!
//! Map of the crate (the pipeline, front to back):
//! - [`queue`]: [`Queue`], the typed async handle, and its builder.
//! - [`backend`]: the [`Backend`] trait every store implements (local; Redis with `redis`).
//! - [`local`]: the embedded backend: lock, recovery, engine and journal threads.
//! - `engine`: the single owner of all mutations and its in-memory indexes.
//! - `journal`: the append-only journal (format, writer with group commit, recovery, check).
//! - `record`: journal record bodies; `store`: the sled state materialised from them.
//! - [`job`], [`options`], [`stats`], [`error`], [`clock`], [`duration`]: the vocabulary.
//! - [`worker`]: the worker pool; [`metrics`]: its counters and histograms; [`pool_event`]: what
//!   a pool reports (plain data below both).
//! - `watch` (feature `watch`): the file watcher; `wire` (feature `http`): the job options, specs
//!   and JSON shapes the CLI and the HTTP API share; `http` (feature `http`): the HTTP API and
//!   dashboard; `cli` (feature `cli`): the `durq` binary's command line.
//!
//! Layers, lowest first; a module imports only from its own layer or below (see
//! `docs/architecture.md`): vocabulary → journal, store → engine → local → queue → metrics,
//! worker → watch → wire → http → cli.
//!
//! `engine`, `journal`, `record`, `store`, `wire`, `http` and `cli` are internals, public only for
//! durq's own tests and binary (hidden from the docs, not covered by semver).
//!
//! Cargo features: `default-features = false` is the embedded queue and the worker pool only;
//! `watch`, `http`, `cli` (the binary; implies both), `redis`, `telegram` add the rest (the
//! default is `cli`). `testing` exposes test hooks that are not a stable API.
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
#[doc(hidden)]
pub mod cli;
pub mod clock;
pub mod duration;
#[doc(hidden)]
pub mod engine;
pub mod error;
#[cfg(feature = "http")]
#[doc(hidden)]
pub mod http;
pub mod job;
#[doc(hidden)]
pub mod journal;
pub mod local;
pub mod lock;
pub mod metrics;
pub mod options;
pub mod perms;
pub mod pool_event;
pub mod queue;
#[doc(hidden)]
pub mod record;
#[cfg(feature = "redis")]
pub mod redis;
pub mod stats;
#[doc(hidden)]
pub mod store;
#[cfg(feature = "watch")]
pub mod watch;
#[cfg(feature = "http")]
#[doc(hidden)]
pub mod wire;
pub mod worker;

pub use backend::{Backend, ReserveRequest};
pub use error::{Error, Result};
pub use job::{
    parse_duration, CancelOutcome, Enqueued, FailAction, FailOutcome, Job, JobId, JobState, Lease,
    LeaseToken, NewJob, Priority, RetryPolicy, Selection, Timestamp,
};
pub use options::{FsyncPolicy, Options, QueueConfig};
pub use queue::{Queue, QueueBuilder};
pub use stats::{Event, QueueStats, Stats};

/// The README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
