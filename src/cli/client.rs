//! Short commands (`enqueue`, `stats`, `jobs`, `dlq`, `pause`, `resume`): answered by the
//! daemon of a running `work`/`watch`/`serve` when there is one, else by this process, which
//! opens the data directory itself — lazily, only once every input has been validated.

use crate::queue::Queue;

use super::args::ClientCmd;
use super::sink::Io;
use super::{cancel, daemon, enqueue, inspect, CliError, Globals};

/// The queue a command works on: already open (the daemon), or opened on first use.
pub struct Ctx {
    queue: Option<Queue>,
    lazy: Option<Globals>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("open", &self.queue.is_some())
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A context around an open queue (owned by someone else).
    pub fn open(queue: Queue) -> Ctx {
        Ctx {
            queue: Some(queue),
            lazy: None,
        }
    }

    /// A context that opens the data directory on first use and closes it in [`Ctx::finish`].
    pub fn lazy(g: &Globals) -> Ctx {
        Ctx {
            queue: None,
            lazy: Some(g.clone()),
        }
    }

    /// The queue, opening the data directory if this is the first use.
    pub async fn queue(&mut self) -> Result<Queue, CliError> {
        if let Some(q) = &self.queue {
            return Ok(q.clone());
        }
        let g = self
            .lazy
            .as_ref()
            .ok_or_else(|| CliError::other("no queue to work on"))?;
        let q = g.builder().open().await?;
        self.queue = Some(q.clone());
        Ok(q)
    }

    /// Flushes and closes the queue if this context opened it.
    pub async fn finish(self) -> Result<(), CliError> {
        if let (Some(q), Some(_)) = (self.queue, self.lazy) {
            q.shutdown().await?;
        }
        Ok(())
    }
}

/// Runs a short command, through the daemon if one holds the data directory.
pub async fn run(g: &Globals, cmd: ClientCmd) -> Result<u8, CliError> {
    if g.redis.is_none() {
        if let Some(stream) = daemon::connect(&g.data).await? {
            return daemon::run_remote(stream, g.json, &cmd).await;
        }
    }
    let mut ctx = Ctx::lazy(g);
    let mut io = Io::local();
    let r = execute(&cmd, g.json, &mut ctx, &mut io).await;
    let f = ctx.finish().await;
    r?;
    f?;
    Ok(0)
}

/// Runs a short command against `ctx`, writing to `io` (shared by both paths).
pub async fn execute(
    cmd: &ClientCmd,
    json: bool,
    ctx: &mut Ctx,
    io: &mut Io,
) -> Result<(), CliError> {
    match cmd {
        ClientCmd::Enqueue(a) => enqueue::run(a, json, ctx, io).await,
        ClientCmd::Stats(a) => inspect::stats(a, json, ctx, io).await,
        ClientCmd::Jobs(a) => inspect::jobs(a, json, ctx, io).await,
        ClientCmd::Dlq(a) => inspect::dlq(a, json, ctx, io).await,
        ClientCmd::Pause(a) => inspect::set_paused(&a.queue, true, json, ctx, io).await,
        ClientCmd::Resume(a) => inspect::set_paused(&a.queue, false, json, ctx, io).await,
        ClientCmd::Cancel(a) => cancel::run(a, json, ctx, io).await,
    }
}
