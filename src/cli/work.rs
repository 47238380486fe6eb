//! `durq work QUEUE…`: run jobs with the worker pool until SIGINT/SIGTERM (or, with
//! `--until-empty`, until no job of those queues is waiting, delayed or active).
//!
//! With `--exec CMD` each job runs `sh -c CMD` ([`crate::worker::ShellHandler`]); without it
//! each job is printed as one JSON line on stdout and acked. While it runs, the data directory's
//! daemon socket answers other durq commands. On a signal: no new jobs, running ones get
//! `--grace` to finish, the rest are killed and returned to waiting (attempt not counted),
//! the queue is flushed, exit 0.

use std::sync::Arc;

use crate::worker::{handler_fn, Outcome, Pool};

use super::args::WorkArgs;
use super::daemon::as_owner;
use super::output::job_json;
use super::{CliError, Globals};

/// Starts listening for SIGINT and SIGTERM now; the future resolves on the first of them.
pub fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| CliError::other(format!("cannot listen for SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| CliError::other(format!("cannot listen for SIGINT: {e}")))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Runs `durq work`.
pub async fn run(g: &Globals, a: WorkArgs) -> Result<(), CliError> {
    if a.lease < std::time::Duration::from_millis(100) {
        return Err(CliError::usage("--lease must be at least 100ms"));
    }
    let stop = shutdown_signal()?;
    as_owner(g, Some(a.lease), |queue| async move {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let builder = Pool::builder(queue.clone(), a.queues.clone())
            .concurrency(a.concurrency as usize)
            .lease(a.lease)
            .grace(a.grace)
            .metrics(metrics);
        let builder = match a.autoscale {
            Some((min, max)) => builder.min_max(min, max),
            None => builder,
        };
        let builder = match a.rate {
            Some(r) => builder.rate_limit_queue(r),
            None => builder,
        };
        let builder = match a.key_rate {
            Some(r) => builder.rate_limit_key(r),
            None => builder,
        };
        let builder = match a.timeout {
            Some(t) => builder.timeout(t),
            None => builder,
        };
        let builder = match &a.exec {
            Some(cmd) => builder.shell(cmd.clone()),
            None => builder.default_handler(handler_fn(|job| async move {
                println!("{}", job_json(&job));
                Outcome::Done
            })),
        };
        let pool = builder.start().await?;
        tracing::info!(queues = ?a.queues, concurrency = a.concurrency, "working");
        let signalled = tokio::select! {
            () = stop => true,
            r = pool.wait_until_empty(), if a.until_empty => { r?; false }
        };
        if signalled {
            tracing::info!(grace = ?a.grace, "stopping: running jobs get the grace period");
        }
        let report = pool.shutdown().await?;
        if !report.returned.is_empty() {
            tracing::warn!(
                returned = report.returned.len(),
                "jobs still running after the grace period were stopped and returned to waiting"
            );
        }
        Ok::<_, CliError>(())
    })
    .await
}
