//! `durq serve`: the HTTP API, `/metrics` and the dashboard, plus optional workers
//! (`--work QUEUE --exec CMD`, repeatable) and watchers (`--watch DIR --queue Q`, repeatable)
//! in one process that owns the data directory (and answers other durq commands through its
//! socket).
//!
//! Order of start, so that a refused start changes nothing: validate every option, read the
//! token (refused when group or others may read or write its file, or when it is shorter than
//! 16 bytes on a non-loopback address), bind the TCP port, and only then open the data
//! directory. On SIGINT/SIGTERM: stop
//! accepting (in-flight requests get 5 s), drain the workers (`--grace`), stop the watchers,
//! flush the queue, exit 0. The address actually bound is printed on stderr as
//! `durq: listening on http://ADDR/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;

use crate::http::health::Readiness;
use crate::http::{auth::Auth, check_listen, events, router, AppState, Limits, Security};
use crate::metrics::Metrics;
use crate::worker::Pool;

use super::args::ServeArgs;
use super::daemon::as_owner;
use super::work::shutdown_signal;
use super::{CliError, Globals};

/// How long in-flight requests (long-polls) may run after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

fn read_token(a: &ServeArgs) -> Result<Option<String>, CliError> {
    let Some(path) = &a.token_file else {
        return Ok(None);
    };
    let meta = std::fs::metadata(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::usage(format!(
                "the token file {p} is open to other users (mode {mode:04o}); run `chmod 600 {p}`",
                p = path.display()
            )));
        }
    }
    let raw = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the token file {}: {e}",
            path.display()
        ))
    })?;
    let token = raw.trim().to_string();
    if token.is_empty() {
        return Err(CliError::usage(format!(
            "the token file {} is empty; put a secret in it",
            path.display()
        )));
    }
    Ok(Some(token))
}

/// Runs `durq serve`.
pub async fn run(g: &Globals, a: ServeArgs) -> Result<(), CliError> {
    let addr: SocketAddr = a.listen.parse().map_err(|_| {
        CliError::usage(format!(
            "--listen `{}` is not an address; write it like 127.0.0.1:7878",
            a.listen
        ))
    })?;
    let token = read_token(&a)?;
    check_listen(&addr, token.as_deref())?;
    if a.work.len() != a.exec.len() {
        return Err(CliError::usage(format!(
            "each --work QUEUE needs its --exec CMD (got {} --work and {} --exec)",
            a.work.len(),
            a.exec.len()
        )));
    }
    if a.watch.len() != a.queue.len() {
        return Err(CliError::usage(format!(
            "each --watch DIR needs its --queue Q (got {} --watch and {} --queue)",
            a.watch.len(),
            a.queue.len()
        )));
    }
    super::watch::validate_dirs(&a.watch)?;
    let stop = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::other(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::other(format!("cannot read the listening address: {e}")))?;
    let limits = Limits {
        max_connections: a.max_connections as usize,
        header_timeout: a.header_timeout,
        body_timeout: a.body_timeout,
    };
    let security = Arc::new(Security::new(
        bound,
        &a.allow_host,
        a.cookie_secure,
        limits,
    )?);
    as_owner(g, Some(a.lease), |queue| async move {
        let metrics = Arc::new(Metrics::new());
        serve(
            g, &a, &queue, metrics, listener, bound, token, security, stop,
        )
        .await
    })
    .await
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    g: &Globals,
    a: &ServeArgs,
    queue: &crate::Queue,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    token: Option<String>,
    security: Arc<Security>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    let mut pools = Vec::new();
    for (q, cmd) in a.work.iter().zip(&a.exec) {
        // Every pool reports its workers to the shared metrics; only the first one to start
        // follows the queue's event stream (`Metrics::attach` attaches once).
        let b = Pool::builder(queue.clone(), vec![q.clone()])
            .concurrency(a.concurrency as usize)
            .lease(a.lease)
            .grace(a.grace)
            .shell(cmd.clone())
            .metrics(metrics.clone());
        match b.start().await {
            Ok(p) => pools.push(p),
            Err(e) => {
                for p in pools {
                    let _ = p.shutdown().await;
                }
                return Err(e.into());
            }
        }
    }
    let feeder = if pools.is_empty() {
        metrics.attach(queue)
    } else {
        None
    };
    let watchers = super::watch::start_all(g, queue, &a.watch, &a.queue).await?;
    let hub = events::Hub::start(queue, &metrics);
    let journal = g.data.join(crate::local::JOURNAL_DIR);
    let readiness = Readiness::new(if journal.is_dir() {
        journal
    } else {
        g.data.clone()
    });
    let state = AppState {
        queue: queue.clone(),
        metrics,
        auth: token.map(|t| Arc::new(Auth::new(&t))),
        security: security.clone(),
    };
    let app = router(state)
        .layer(Extension(hub.clone()))
        .layer(Extension(readiness));
    eprintln!("durq: listening on http://{bound}/");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = security.limits;
    let server = tokio::spawn(async move {
        crate::http::server::serve(listener, app, limits, async move {
            let _ = rx.await;
        })
        .await
    });
    stop.await;
    tracing::info!("stopping: draining requests, workers and watchers");
    let _ = tx.send(());
    hub.close();
    let mut first_err = None;
    for p in pools {
        if let Err(e) = p.shutdown().await {
            first_err.get_or_insert(CliError::from(e));
        }
    }
    if let Err(e) = super::watch::stop_all(watchers).await {
        first_err.get_or_insert(e);
    }
    let abort = server.abort_handle();
    match tokio::time::timeout(HTTP_DRAIN, server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            first_err.get_or_insert(CliError::other(format!("the HTTP server failed: {e}")));
        }
        Err(_) => {
            abort.abort();
            tracing::warn!("requests still running after {HTTP_DRAIN:?} were cut off")
        }
    }
    if let Some(f) = feeder {
        f.abort();
    }
    first_err.map_or(Ok(()), Err)
}
