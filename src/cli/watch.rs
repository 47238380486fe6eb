//! `durq watch DIR… --queue Q`: the file watcher as a long-running command, and the
//! helpers `durq serve --watch DIR --queue Q` uses.
//!
//! Every option (directories, globs, durations) is checked before the data directory is
//! opened. The watcher keeps its state (known file hashes) under `DIR/watch` (`DIR/watch-N`
//! for the N-th extra `--watch` of `serve`). On SIGINT/SIGTERM it settles pending changes,
//! enqueues their jobs, flushes the queue and exits 0.

use std::path::PathBuf;

use crate::watch::{WatchConfig, Watcher};

use super::args::WatchArgs;
use super::daemon::as_owner;
use super::work::shutdown_signal;
use super::{CliError, Globals};

/// Running watchers.
pub type Watchers = Vec<Watcher>;

/// Checks that every directory to watch exists.
pub fn validate_dirs(dirs: &[PathBuf]) -> Result<(), CliError> {
    for d in dirs {
        if !d.is_dir() {
            return Err(CliError::usage(format!(
                "{} is not a directory; watch an existing directory",
                d.display()
            )));
        }
    }
    Ok(())
}

fn validate_globs(globs: &[String]) -> Result<(), CliError> {
    for g in globs {
        globset::Glob::new(g)
            .map_err(|e| CliError::usage(format!("--ignore `{g}` is not a valid glob: {e}")))?;
    }
    Ok(())
}

/// Starts one watcher per (dir, queue).
pub async fn start_all(
    g: &Globals,
    queue: &crate::Queue,
    dirs: &[PathBuf],
    queues: &[String],
) -> Result<Watchers, CliError> {
    let mut out = Vec::new();
    for (i, (dir, q)) in dirs.iter().zip(queues).enumerate() {
        let state = if i == 0 {
            g.data.join("watch")
        } else {
            g.data.join(format!("watch-{i}"))
        };
        match Watcher::start(queue.clone(), WatchConfig::new(vec![dir.clone()], q, state)).await {
            Ok(w) => out.push(w),
            Err(e) => {
                let _ = stop_all(out).await;
                return Err(e.into());
            }
        }
    }
    Ok(out)
}

/// Stops the watchers (each enqueues its pending changes first).
pub async fn stop_all(w: Watchers) -> Result<(), CliError> {
    let mut first = None;
    for w in w {
        if let Err(e) = w.stop().await {
            first.get_or_insert(CliError::from(e));
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs `durq watch`.
pub async fn run(g: &Globals, a: WatchArgs) -> Result<(), CliError> {
    validate_dirs(&a.dirs)?;
    validate_globs(&a.ignore)?;
    if a.debounce.is_zero() {
        return Err(CliError::usage("--debounce must be longer than zero"));
    }
    let stop = shutdown_signal()?;
    as_owner(g, None, |queue| async move {
        let mut cfg = WatchConfig::new(a.dirs.clone(), a.queue.clone(), g.data.join("watch"));
        cfg.debounce = a.debounce;
        cfg.max_wait = a.max_wait;
        cfg.ignore = a.ignore.clone();
        cfg.batch = a.batch;
        let w = Watcher::start(queue.clone(), cfg).await?;
        eprintln!(
            "durq: watching {} directories into queue {}",
            a.dirs.len(),
            a.queue
        );
        stop.await;
        w.stop().await?;
        Ok::<_, CliError>(())
    })
    .await
}
