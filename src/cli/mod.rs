//! The command line of the `durq` binary (README "Command line").
//!
//! Map: [`args`] (clap types), [`client`] (who answers a short command: the daemon of a running
//! `work`/`watch`/`serve`, or this process), [`daemon`] (the Unix socket in the data dir),
//! [`enqueue`], [`inspect`] (stats, jobs, dlq, pause/resume), [`output`] (text and `--json`
//! shapes), [`work`], [`watch`], [`serve`], [`check`], [`bench`], [`sink`] (line output).
//!
//! Invariants:
//! - Exit codes: 0 ok, 2 bad usage or input, 1 anything else; an error is one sentence on
//!   stderr.
//! - Every input is validated before the data directory is opened (opening creates files), so
//!   a refused command leaves the directory byte-identical (lock and socket files aside).

pub mod args;
pub mod bench;
pub mod cancel;
pub mod check;
pub mod client;
pub mod config;
pub mod daemon;
pub mod enqueue;
pub mod inspect;
pub mod output;
pub mod serve;
pub mod sink;
pub mod watch;
pub mod work;

use std::process::ExitCode;

use clap::Parser;

pub use crate::wire::WireError as CliError;
use args::{Cli, ClientCmd, Command};

/// Prints an error the way every durq command does.
pub fn print_error(msg: &str) {
    eprintln!("error: {msg}");
}

/// Runs the binary; returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let json_logs = match &cli.command {
        Command::Serve(a) => a.log_format == args::LogFormat::Json,
        Command::Work(a) => a.log_format == args::LogFormat::Json,
        _ => false,
    };
    init_tracing(json_logs);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            print_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(run(cli));
    // A blocking stdin read may still be pending (a client streaming stdin to a daemon): do not
    // wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            print_error(&e.msg);
            ExitCode::from(e.code)
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().with_current_span(true).try_init()
    } else {
        b.try_init()
    };
}

/// Global options every command sees.
#[derive(Debug, Clone)]
pub struct Globals {
    /// The data directory.
    pub data: std::path::PathBuf,
    /// The fsync policy when this process opens the directory.
    pub fsync: crate::FsyncPolicy,
    /// JSON output.
    pub json: bool,
    /// The Redis server holding the queues (`--redis`), instead of the data directory.
    pub redis: Option<String>,
}

impl Globals {
    /// A builder for the store these options name: the Redis server when `--redis` is given
    /// (the data directory is then not used), the data directory otherwise.
    #[allow(clippy::let_and_return)] // without the `redis` feature
    pub fn builder(&self) -> crate::QueueBuilder {
        let b = crate::Queue::builder(&self.data).fsync(self.fsync);
        #[cfg(feature = "redis")]
        let b = match &self.redis {
            Some(url) => b.redis(url.clone()),
            None => b,
        };
        b
    }
}

async fn run(cli: Cli) -> Result<u8, CliError> {
    let g = Globals {
        data: cli.data,
        fsync: cli.fsync,
        json: cli.json,
        #[cfg(feature = "redis")]
        redis: cli.redis,
        #[cfg(not(feature = "redis"))]
        redis: None,
    };
    match cli.command {
        Command::Enqueue(a) => client::run(&g, ClientCmd::Enqueue(a)).await,
        Command::Stats(a) => client::run(&g, ClientCmd::Stats(a)).await,
        Command::Jobs(a) => client::run(&g, ClientCmd::Jobs(a)).await,
        Command::Dlq { action } => client::run(&g, ClientCmd::Dlq(action)).await,
        Command::Pause(a) => client::run(&g, ClientCmd::Pause(a)).await,
        Command::Resume(a) => client::run(&g, ClientCmd::Resume(a)).await,
        Command::Cancel(a) => client::run(&g, ClientCmd::Cancel(a)).await,
        Command::Work(a) => work::run(&g, a).await.map(|()| 0),
        Command::Watch(a) => watch::run(&g, a).await.map(|()| 0),
        Command::Serve(a) => serve::run(&g, a).await.map(|()| 0),
        Command::Check(a) => check::run(&g, a).await,
        Command::Bench(a) => bench::run(&g, a).await.map(|()| 0),
    }
}
