//! `durq cancel ID...` and `durq cancel --queue Q --state S [--kind K]` (SPEC §6 operations).
//!
//! By id: one line per id (`--json`: `{"id", "outcome"}`); an unknown or completed id makes the
//! command exit 1 after every id was tried (the others are cancelled all the same).

use crate::job::CancelOutcome;

use super::args::CancelArgs;
use super::client::Ctx;
use super::sink::Io;
use super::CliError;

/// Runs `durq cancel`.
pub async fn run(a: &CancelArgs, json: bool, ctx: &mut Ctx, io: &mut Io) -> Result<(), CliError> {
    if let Some(queue) = &a.queue {
        let state = a.state.ok_or_else(|| {
            CliError::usage("--queue needs --state (waiting, delayed, active or dead)")
        })?;
        let q = ctx.queue().await?;
        let n = q.cancel_where(queue, state, a.kind.as_deref()).await?;
        if json {
            let v = serde_json::json!({ "queue": queue, "state": state.as_str(), "cancelled": n });
            return io.out(&v.to_string()).await;
        }
        return io
            .out(&format!(
                "cancelled {n} {} jobs of queue {queue}",
                state.as_str()
            ))
            .await;
    }
    let q = ctx.queue().await?;
    let out = q.cancel_many(a.ids.clone()).await?;
    let mut missed = 0;
    for (id, o) in a.ids.iter().zip(&out) {
        if !o.is_cancelled() {
            missed += 1;
        }
        let line = if json {
            serde_json::json!({ "id": id.to_string(), "outcome": o.as_str() }).to_string()
        } else {
            match o {
                CancelOutcome::Cancelled => format!("{id} cancelled"),
                CancelOutcome::WillCancel => {
                    format!("{id} is running; it will be dropped when its attempt ends")
                }
                CancelOutcome::NotFound => {
                    format!("{id}: no such job (unknown, or cancelled or dropped already)")
                }
                CancelOutcome::AlreadyFinished => {
                    format!("{id} already completed; nothing to cancel")
                }
            }
        };
        io.out(&line).await?;
    }
    if missed > 0 {
        return Err(CliError::other(format!(
            "{missed} of the {} ids given were not cancelled: unknown or already finished",
            a.ids.len()
        )));
    }
    Ok(())
}
