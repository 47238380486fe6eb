//! `durq stats`, `jobs`, `dlq list|requeue|purge`, `pause`, `resume`.

use crate::job::{JobState, Selection};

use super::args::{DlqAction, DlqSelect, JobsArgs, StatsArgs};
use super::client::Ctx;
use super::output::{job_json, jobs_table, restrict, stats_json, stats_table};
use super::sink::Io;
use super::CliError;

/// `durq stats [QUEUE]`.
pub async fn stats(a: &StatsArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    let s = ctx.queue().await?.stats().await?;
    if json {
        return io
            .out(&stats_json(&s, a.queue.as_deref()).to_string())
            .await;
    }
    for line in stats_table(&restrict(&s, a.queue.as_deref())) {
        io.out(&line).await?;
    }
    Ok(())
}

async fn print_jobs(jobs: &[crate::Job], json: bool, io: &mut Io) -> Result<(), CliError> {
    if json {
        for j in jobs {
            io.out(&job_json(j).to_string()).await?;
        }
        return Ok(());
    }
    for line in jobs_table(jobs) {
        io.out(&line).await?;
    }
    Ok(())
}

/// `durq jobs QUEUE [--state S] [--limit N]`.
pub async fn jobs(a: &JobsArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    let jobs = ctx.queue().await?.list(&a.queue, a.state, a.limit).await?;
    print_jobs(&jobs, json, io).await
}

fn selection(s: &DlqSelect) -> Selection {
    if s.all {
        Selection::All
    } else {
        Selection::Ids(s.ids.clone())
    }
}

/// `durq dlq list|requeue|purge`.
pub async fn dlq(a: &DlqAction, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    match a {
        DlqAction::List { queue, limit } => {
            let jobs = ctx
                .queue()
                .await?
                .list(queue, Some(JobState::Dead), *limit)
                .await?;
            print_jobs(&jobs, json, io).await
        }
        DlqAction::Requeue(s) => {
            let bar = (!io.is_remote()).then(|| super::check::spinner("requeueing dead letters"));
            let n = ctx
                .queue()
                .await?
                .requeue_dead(&s.queue, selection(s))
                .await;
            if let Some(Some(b)) = bar {
                b.finish_and_clear();
            }
            counted(io, json, "requeued", n?, &s.queue, s).await
        }
        DlqAction::Purge(s) => {
            let bar = (!io.is_remote()).then(|| super::check::spinner("purging dead letters"));
            let n = ctx.queue().await?.purge_dead(&s.queue, selection(s)).await;
            if let Some(Some(b)) = bar {
                b.finish_and_clear();
            }
            counted(io, json, "purged", n?, &s.queue, s).await
        }
    }
}

async fn counted(
    io: &mut Io,
    json: bool,
    verb: &str,
    n: u64,
    queue: &str,
    s: &DlqSelect,
) -> Result<(), CliError> {
    if !s.all && (n as usize) < s.ids.len() {
        io.err(&format!(
            "{} of the {} ids given are not dead letters of queue {queue}",
            s.ids.len() - n as usize,
            s.ids.len()
        ))
        .await?;
    }
    if json {
        let v = serde_json::json!({ "queue": queue, verb: n });
        return io.out(&v.to_string()).await;
    }
    let noun = if n == 1 {
        "dead letter"
    } else {
        "dead letters"
    };
    io.out(&format!("{verb} {n} {noun} of queue {queue}")).await
}

/// `durq pause|resume QUEUE`.
pub async fn set_paused(
    queue: &str,
    paused: bool,
    json: bool,
    ctx: &mut Ctx,
    io: &mut Io,
) -> Result<(), CliError> {
    let q = ctx.queue().await?;
    if paused {
        q.pause(queue).await?;
    } else {
        q.resume(queue).await?;
    }
    if json {
        let v = serde_json::json!({ "queue": queue, "paused": paused });
        return io.out(&v.to_string()).await;
    }
    let word = if paused { "paused" } else { "resumed" };
    io.out(&format!("queue {queue} {word}")).await
}
