//! `durq serve`: the HTTP API, `/metrics`, the dashboard, `/v1/events`, `/health` and
//! `/ready`, plus optional workers (`--work QUEUE --exec CMD`, repeatable, or `[queues.*]` in
//! `--config FILE`) and watchers (`--watch DIR --queue Q`, repeatable) in one process that owns
//! the data directory (and answers other durq commands through its socket). Alert rules (the
//! built-in ones unless turned off, and the file's) are evaluated every `alerts.interval`
//! whether or not a pool runs; changes go to the log and, if set, a webhook.
//!
//! Settings come from the flags, then the config file ([`super::config`]), then the defaults.
//! Order of start, so that a refused start changes nothing: read and check the config file,
//! validate every option, read the token (refused when group or others may read or write its
//! file, or when it is shorter than 16 bytes on a non-loopback address), bind the TCP port,
//! and only then open the data directory. On SIGINT/SIGTERM: close the event streams, stop
//! accepting (in-flight requests get 5 s), drain the workers (`grace`), stop the watchers,
//! flush the queue, exit 0. The address actually bound is printed on stderr as
//! `durq: listening on http://ADDR/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;

use crate::http::health::Readiness;
use crate::http::{auth::Auth, check_listen, events, router, AppState, Limits, Security};
use crate::metrics::alerts::default_rules;
use crate::metrics::sinks::{self, Webhook};
use crate::metrics::{AlertRule, Metrics};
use crate::worker::Pool;

use super::args::ServeArgs;
use super::config;
use super::daemon::as_owner_with;
use super::work::shutdown_signal;
use super::{CliError, Globals};

/// How long in-flight requests (long-polls) may run after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// Default address.
const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
/// Default lease and grace.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How often the alert rules are evaluated unless `alerts.interval` says otherwise.
const ALERT_INTERVAL: Duration = Duration::from_secs(5);

/// Reads a secret from a file that only its owner may read; trimmed, not empty.
pub fn read_secret(path: &Path, what: &str) -> Result<String, CliError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CliError::usage(format!(
                "the {what} {p} is open to other users (mode {mode:04o}); run `chmod 600 {p}`",
                p = path.display()
            )));
        }
    }
    let raw = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("cannot read the {what} {}: {e}", path.display())))?;
    let token = raw.trim().to_string();
    if token.is_empty() {
        return Err(CliError::usage(format!(
            "the {what} {} is empty; put a secret in it",
            path.display()
        )));
    }
    Ok(token)
}

/// Whether `--NAME` was given on the command line (flags win over the config file).
fn flag_given(name: &str) -> bool {
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    std::env::args_os().any(|a| a.to_str().is_some_and(|a| a == long || a.starts_with(&eq)))
}

/// One worker pool to start.
#[derive(Debug, Clone)]
struct PoolPlan {
    queue: String,
    exec: Option<String>,
    /// Bot token and API base URL.
    #[cfg_attr(not(feature = "telegram"), allow(dead_code))]
    telegram: Option<(String, Option<String>)>,
    concurrency: usize,
    autoscale: Option<crate::worker::AutoscaleConfig>,
    rate: Option<f64>,
    key_rate: Option<f64>,
    breaker: Option<crate::worker::BreakerConfig>,
    lease: Duration,
}

/// Everything `serve` will do, from the flags over the config file over the defaults.
#[derive(Debug)]
struct Plan {
    g: Globals,
    listen: String,
    token_file: Option<PathBuf>,
    grace: Duration,
    lease: Duration,
    pools: Vec<PoolPlan>,
    store_queues: Vec<(String, crate::QueueConfig)>,
    rules: Vec<AlertRule>,
    webhook: Option<Webhook>,
    interval: Duration,
}

fn plan(g: &Globals, a: &ServeArgs) -> Result<Plan, CliError> {
    let loaded = match &a.config {
        Some(p) => Some(config::load(p)?),
        None => None,
    };
    let mut g = g.clone();
    let (file, queues, user_rules) = match loaded {
        Some(l) => (l.file, l.queues, l.rules),
        None => (config::Config::default(), Default::default(), Vec::new()),
    };
    if let Some(d) = &file.data {
        if !flag_given("data") && std::env::var_os("DURQ_DATA").is_none() {
            g.data = d.clone();
        }
    }
    if let Some(f) = file.fsync {
        if !flag_given("fsync") {
            g.fsync = f.0;
        }
    }
    let listen = a
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let token_file = a.token_file.clone().or(file.token_file.clone());
    let grace = a.grace.or(file.grace.map(|d| d.0)).unwrap_or(DEFAULT_LEASE);
    let lease = a.lease.unwrap_or(DEFAULT_LEASE);
    if a.work.len() != a.exec.len() {
        return Err(CliError::usage(format!(
            "each --work QUEUE needs its --exec CMD (got {} --work and {} --exec)",
            a.work.len(),
            a.exec.len()
        )));
    }
    type Section = (String, Option<config::QueuePlan>, Option<String>);
    let mut sections: Vec<Section> = queues
        .iter()
        .map(|(q, p)| (q.clone(), Some(p.clone()), p.section.exec.clone()))
        .collect();
    for (q, cmd) in a.work.iter().zip(&a.exec) {
        match sections.iter_mut().find(|(n, _, _)| n == q) {
            Some(s) => s.2 = Some(cmd.clone()),
            None => sections.push((q.clone(), None, Some(cmd.clone()))),
        }
    }
    let mut pools = Vec::new();
    let mut store_queues = Vec::new();
    for (queue, p, exec) in sections {
        let sec = p.as_ref().map(|p| p.section.clone()).unwrap_or_default();
        if let Some(r) = p.as_ref().and_then(|p| p.retry.clone()) {
            store_queues.push((
                queue.clone(),
                crate::QueueConfig {
                    retry: r,
                    ..Default::default()
                },
            ));
        }
        let telegram = p.as_ref().and_then(|p| {
            p.telegram_token.clone().map(|t| {
                let base = sec.telegram.as_ref().and_then(|t| t.base_url.clone());
                (t, base)
            })
        });
        if exec.is_none() && telegram.is_none() {
            // Settings only (retry policy): no workers here.
            continue;
        }
        let mut autoscale = p.as_ref().and_then(|p| p.autoscale.clone());
        let mut concurrency = sec.concurrency.unwrap_or(5) as usize;
        if let Some(c) = a.concurrency {
            concurrency = c as usize;
            autoscale = None;
        }
        if let Some((min, max)) = a.autoscale {
            autoscale = Some(crate::worker::AutoscaleConfig::new(min, max));
        }
        pools.push(PoolPlan {
            queue,
            exec,
            telegram,
            concurrency,
            autoscale,
            rate: a.rate.or(sec.rate.map(|r| r.0)),
            key_rate: a.key_rate.or(sec.key_rate.map(|r| r.0)),
            breaker: p.as_ref().and_then(|p| p.breaker.clone()),
            lease: a.lease.or(sec.lease.map(|d| d.0)).unwrap_or(lease),
        });
    }
    let mut rules = if file.alerts.defaults && !a.no_default_alerts {
        default_rules()
    } else {
        Vec::new()
    };
    for r in user_rules {
        rules.retain(|x| x.name != r.name);
        rules.push(r);
    }
    let webhook = match (&a.alert_webhook, &file.alerts.webhook) {
        (Some(u), _) => {
            Some(Webhook::new(u).map_err(|e| CliError::usage(format!("--alert-webhook: {e}")))?)
        }
        // Checked when the file was read.
        (None, Some(u)) => Some(Webhook::new(u).map_err(CliError::usage)?),
        (None, None) => None,
    };
    Ok(Plan {
        g,
        listen,
        token_file,
        grace,
        lease,
        pools,
        store_queues,
        rules,
        webhook,
        interval: file.alerts.interval.map_or(ALERT_INTERVAL, |d| d.0),
    })
}

/// Runs `durq serve`.
pub async fn run(g: &Globals, a: ServeArgs) -> Result<(), CliError> {
    let p = plan(g, &a)?;
    let addr: SocketAddr = p.listen.parse().map_err(|_| {
        CliError::usage(format!(
            "--listen `{}` is not an address; write it like 127.0.0.1:7878",
            p.listen
        ))
    })?;
    let token = match &p.token_file {
        Some(f) => Some(read_secret(f, "token file")?),
        None => None,
    };
    check_listen(&addr, token.as_deref())?;
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
    let (g, p, a) = (&p.g, &p, &a);
    as_owner_with(g, Some(p.lease), &p.store_queues, |queue| async move {
        let metrics = Arc::new(Metrics::new());
        serve(
            g, a, p, &queue, metrics, listener, bound, token, security, stop,
        )
        .await
    })
    .await
}

fn builder(
    queue: &crate::Queue,
    p: &PoolPlan,
    grace: Duration,
    metrics: &Arc<Metrics>,
) -> Result<crate::worker::PoolBuilder, CliError> {
    let mut b = Pool::builder(queue.clone(), vec![p.queue.clone()])
        .concurrency(p.concurrency)
        .lease(p.lease)
        .grace(grace)
        .metrics(metrics.clone());
    if let Some(cmd) = &p.exec {
        b = b.shell(cmd.clone());
    }
    #[cfg(feature = "telegram")]
    if let Some((token, base)) = &p.telegram {
        let mut cfg = crate::worker::telegram::TelegramConfig::new(token.clone());
        if let Some(u) = base {
            cfg.base_url = u.clone();
        }
        b = crate::worker::telegram::configure(b, cfg)?;
    }
    if let Some(a) = &p.autoscale {
        b = b.autoscale(a.clone());
    }
    if let Some(r) = p.rate {
        b = b.rate_limit_queue(r);
    }
    if let Some(r) = p.key_rate {
        b = b.rate_limit_key(r);
    }
    if let Some(br) = &p.breaker {
        b = b.breaker(br.clone());
    }
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    g: &Globals,
    a: &ServeArgs,
    p: &Plan,
    queue: &crate::Queue,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
    token: Option<String>,
    security: Arc<Security>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), CliError> {
    for r in &p.rules {
        metrics.add_alert(r.clone());
    }
    let mut pools = Vec::new();
    for plan in &p.pools {
        // Every pool reports its workers to the shared metrics; only the first one to start
        // follows the queue's event stream (`Metrics::attach` attaches once).
        let started = match builder(queue, plan, p.grace, &metrics) {
            Ok(b) => b.start().await.map_err(CliError::from),
            Err(e) => Err(e),
        };
        match started {
            Ok(p) => pools.push(p),
            Err(e) => {
                for p in pools {
                    let _ = p.shutdown().await;
                }
                return Err(e);
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
    let evaluator =
        (!p.rules.is_empty()).then(|| sinks::evaluate_every(&metrics, queue, p.interval));
    let delivery = p.webhook.clone().map(|w| sinks::deliver(&metrics, w));
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
    let watched = crate::http::metrics::Watched(
        watchers
            .iter()
            .zip(a.watch.iter().zip(&a.queue))
            .map(|(w, (d, q))| (d.display().to_string(), q.clone(), w.counters()))
            .collect(),
    );
    let app = router(state)
        .layer(Extension(Arc::new(watched)))
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
    for t in [feeder, evaluator, delivery].into_iter().flatten() {
        t.abort();
    }
    first_err.map_or(Ok(()), Err)
}
