//! The command line as clap (derive) types: the commands and options the
//! README's "Command line" lists.
//!
//! Values that have a type (durations, priorities, states, fsync policies) are parsed here, so a
//! bad value is a usage error (exit 2) before anything touches the data directory. The client
//! commands are also serde types: a running `work`/`watch`/`serve` receives them over the daemon
//! socket and answers them with the same code.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobState};
use crate::options::FsyncPolicy;
pub use crate::wire::{duration, inner_msg, JobOpts};

fn state(s: &str) -> Result<JobState, String> {
    s.parse::<JobState>().map_err(|e| inner_msg(&e))
}

fn fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse::<FsyncPolicy>().map_err(|e| inner_msg(&e))
}

fn job_id(s: &str) -> Result<JobId, String> {
    s.parse::<JobId>().map_err(|e| inner_msg(&e))
}

fn queue_name(s: &str) -> Result<String, String> {
    crate::job::validate_queue_name(s)
        .map(|()| s.to_string())
        .map_err(|e| inner_msg(&e))
}

/// durq: an embedded, durable job queue that needs no server.
#[derive(Debug, Parser)]
#[command(name = "durq", version, about, long_about = None)]
pub struct Cli {
    /// Data directory (created with its parents if missing).
    #[arg(long, global = true, env = "DURQ_DATA", default_value = "./durq-data")]
    pub data: PathBuf,
    /// When the journal is synced to disk: always, everysec or no.
    #[arg(long, global = true, value_parser = fsync, default_value = "everysec")]
    pub fsync: FsyncPolicy,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep the queues on this Redis server (redis://host:port/db) instead of --data.
    #[cfg(feature = "redis")]
    #[arg(long, global = true, env = "DURQ_REDIS_URL", value_name = "URL")]
    pub redis: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Every command of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enqueue a job (or, with --batch, one job per line of NDJSON on stdin); prints the ids.
    Enqueue(EnqueueArgs),
    /// Run jobs of one or more queues.
    Work(WorkArgs),
    /// Turn file-system changes under DIR into jobs.
    Watch(WatchArgs),
    /// Serve the HTTP API, /metrics and the dashboard (optionally with workers and watchers).
    Serve(ServeArgs),
    /// Show job counts per queue and state.
    Stats(StatsArgs),
    /// List the jobs of a queue in the order they would run.
    Jobs(JobsArgs),
    /// Dead letters: list, requeue or purge.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Stop reserving jobs from a queue.
    Pause(QueueArg),
    /// Resume a paused queue.
    Resume(QueueArg),
    /// Cancel waiting, delayed or dead jobs by id (running ones: when their attempt ends), or
    /// every job of a queue in one state with --queue and --state.
    Cancel(CancelArgs),
    /// Check the journal for damage; --repair salvages every intact record.
    Check(CheckArgs),
    /// Measure enqueue / reserve / ack throughput against a raw append + fdatasync baseline.
    Bench(BenchArgs),
}

/// `durq enqueue`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct EnqueueArgs {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub queue: String,
    /// Payload as JSON; `-` or nothing reads it from stdin.
    pub payload: Option<String>,
    /// Options of the job (defaults of every line with --batch).
    #[command(flatten)]
    #[serde(flatten)]
    pub opts: JobOpts,
    /// Read NDJSON from stdin: one payload per line (or one spec per line with --spec).
    #[arg(long)]
    pub batch: bool,
    /// With --batch: each line is {"payload": …, "kind", "priority", "key", "dedup", …}.
    #[arg(long, requires = "batch")]
    pub spec: bool,
}

/// `durq work`.
#[derive(Debug, Clone, Args)]
pub struct WorkArgs {
    /// Queues to take jobs from.
    #[arg(required = true, value_parser = queue_name)]
    pub queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Run each job as `sh -c CMD` with the payload on stdin (without it: print each job as a JSON line and ack it).
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Lease length (extended by heartbeats while a job runs).
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "30s")]
    pub lease: Duration,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish.
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "30s")]
    pub grace: Duration,
    /// Exit once no job of these queues is waiting, delayed or active.
    #[arg(long)]
    pub until_empty: bool,
    /// Autoscale the workers between MIN and MAX (overrides --concurrency), e.g. 2..16.
    #[arg(long, value_name = "MIN..MAX", value_parser = super::config::autoscale)]
    pub autoscale: Option<(usize, usize)>,
    /// Start at most this many jobs per queue, e.g. 30/s, 100/m.
    #[arg(long, value_name = "RATE", value_parser = super::config::rate)]
    pub rate: Option<f64>,
    /// Start at most this many jobs per partition key, e.g. 1/s.
    #[arg(long, value_name = "RATE", value_parser = super::config::rate)]
    pub key_rate: Option<f64>,
    /// Log lines as text or as JSON objects (one per line, on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Per-attempt execution timeout for jobs without their own: a job still running after
    /// it is stopped (--exec: SIGTERM to its process group, SIGKILL 5 s later) and the attempt
    /// fails with "timed out after DUR" (retried per the job's policy).
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub timeout: Option<Duration>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald, Loki, …).
    Json,
}

/// `durq cancel`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CancelArgs {
    /// Job ids.
    #[arg(value_parser = job_id, required_unless_present = "queue", conflicts_with = "queue")]
    pub ids: Vec<JobId>,
    /// Cancel by filter: every job of this queue in --state.
    #[arg(long, value_parser = queue_name, requires = "state")]
    pub queue: Option<String>,
    /// With --queue: waiting, delayed, active or dead.
    #[arg(long, value_parser = state, requires = "queue")]
    pub state: Option<JobState>,
    /// With --queue: only jobs of this kind.
    #[arg(long, requires = "queue")]
    pub kind: Option<String>,
}

/// `durq watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Directories to watch.
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Queue the file events go to.
    #[arg(long, value_parser = queue_name)]
    pub queue: String,
    /// Quiet time after the last change before a file's job is made.
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "500ms")]
    pub debounce: Duration,
    /// Longest a busy file waits before its job is made anyway.
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "5s")]
    pub max_wait: Duration,
    /// Glob of paths to ignore (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,
    /// One job per debounce window listing every changed file.
    #[arg(long)]
    pub batch: bool,
}

/// `durq serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); flags given here win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, default 127.0.0.1:7878 (a non-loopback address needs --token-file).
    #[arg(long)]
    pub listen: Option<String>,
    /// File holding the access token (its content, trimmed).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// Run workers on this queue (repeatable; pairs with --exec in order).
    #[arg(long = "work", value_name = "QUEUE", value_parser = queue_name)]
    pub work: Vec<String>,
    /// Command for the workers of the matching --work.
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Vec<String>,
    /// Jobs run at once per --work (default 5).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: Option<u32>,
    /// Autoscale the workers of every queue between MIN and MAX (overrides --concurrency).
    #[arg(long, value_name = "MIN..MAX", value_parser = super::config::autoscale)]
    pub autoscale: Option<(usize, usize)>,
    /// Start at most this many jobs per queue, e.g. 30/s, 100/m.
    #[arg(long, value_name = "RATE", value_parser = super::config::rate)]
    pub rate: Option<f64>,
    /// Start at most this many jobs per partition key, e.g. 1/s.
    #[arg(long, value_name = "RATE", value_parser = super::config::rate)]
    pub key_rate: Option<f64>,
    /// Watch this directory (repeatable; pairs with --queue in order).
    #[arg(long = "watch", value_name = "DIR")]
    pub watch: Vec<PathBuf>,
    /// Queue for the matching --watch.
    #[arg(long = "queue", value_name = "Q", value_parser = queue_name)]
    pub queue: Vec<String>,
    /// Lease length of the workers (default 30s).
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub lease: Option<Duration>,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish (default 30s).
    #[arg(long, value_parser = duration, value_name = "DUR")]
    pub grace: Option<Duration>,
    /// Also accept this Host (NAME or NAME:PORT), e.g. behind a TLS terminator (repeatable).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_host: Vec<String>,
    /// Mark the session cookie Secure (set it when a TLS terminator serves durq).
    #[arg(long)]
    pub cookie_secure: bool,
    /// Most open HTTP connections; more are answered 503.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_connections: u32,
    /// Time a connection may take to send a request head (also the keep-alive idle timeout).
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "10s")]
    pub header_timeout: Duration,
    /// Time a request body may take to arrive.
    #[arg(long, value_parser = duration, value_name = "DUR", default_value = "30s")]
    pub body_timeout: Duration,
    /// Do not run the built-in alert rules (dead letters, failure rate, oldest waiting job,
    /// open breaker, fsync stalls).
    #[arg(long)]
    pub no_default_alerts: bool,
    /// POST every raised and cleared alert as JSON to this URL.
    #[arg(long, value_name = "URL")]
    pub alert_webhook: Option<String>,
    /// Log lines as text or as JSON objects (one per line, on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `durq stats`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct StatsArgs {
    /// Only this queue.
    #[arg(value_parser = queue_name)]
    pub queue: Option<String>,
}

/// `durq jobs`.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct JobsArgs {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub queue: String,
    /// Only jobs in this state: waiting, active, delayed, completed or dead.
    #[arg(long, value_parser = state)]
    pub state: Option<JobState>,
    /// At most this many jobs.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// A queue name argument.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct QueueArg {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub queue: String,
}

/// `durq dlq …`.
#[derive(Debug, Clone, Subcommand, Serialize, Deserialize)]
pub enum DlqAction {
    /// List dead letters, most recent first.
    List {
        /// Queue name.
        #[arg(value_parser = queue_name)]
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put dead letters back to waiting.
    Requeue(DlqSelect),
    /// Delete dead letters.
    Purge(DlqSelect),
}

/// Which dead letters.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct DlqSelect {
    /// Queue name.
    #[arg(value_parser = queue_name)]
    pub queue: String,
    /// Job ids.
    #[arg(value_parser = job_id, required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<JobId>,
    /// Every dead letter of the queue.
    #[arg(long)]
    pub all: bool,
}

/// `durq check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Salvage every intact record (damaged files are kept as NAME.damaged).
    #[arg(long)]
    pub repair: bool,
}

/// `durq bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Operations per measurement.
    #[arg(long, default_value_t = 2000)]
    pub ops: usize,
    /// Directory for the scratch data (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// A command another process can answer for us over the daemon socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ClientCmd {
    /// `enqueue`.
    Enqueue(EnqueueArgs),
    /// `stats`.
    Stats(StatsArgs),
    /// `jobs`.
    Jobs(JobsArgs),
    /// `dlq …`.
    Dlq(DlqAction),
    /// `pause`.
    Pause(QueueArg),
    /// `resume`.
    Resume(QueueArg),
    /// `cancel`.
    Cancel(CancelArgs),
}

impl ClientCmd {
    /// True if the command reads stdin.
    pub fn reads_stdin(&self) -> bool {
        match self {
            ClientCmd::Enqueue(a) => a.batch || a.payload.as_deref().is_none_or(|p| p == "-"),
            _ => false,
        }
    }
}
