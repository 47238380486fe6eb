//! `durq check [--repair]`: report journal damage; with `--repair`, salvage every intact record.
//!
//! Exit 0 when the journal is clean (or repaired with nothing remaining), 1 when damage was found
//! and not repaired. Checking needs the directory to itself: while a `work`/`serve` holds it,
//! the command says so and exits 1.

use super::args::CheckArgs;
use super::{CliError, Globals};

/// Runs `durq check`; returns the exit code.
pub async fn run(g: &Globals, a: CheckArgs) -> Result<u8, CliError> {
    if !g.data.join("journal").is_dir() {
        return Err(CliError::usage(format!(
            "{} is not a durq data directory (it has no journal/); pass the right --data",
            g.data.display()
        )));
    }
    let dir = g.data.clone();
    let repair = a.repair;
    let spinner = spinner(if repair { "repairing" } else { "checking" });
    let report = tokio::task::spawn_blocking(move || {
        if repair {
            crate::journal::check::repair(&dir)
        } else {
            crate::journal::check::check(&dir)
        }
    })
    .await
    .map_err(|e| CliError::other(format!("the check failed: {e}")))?;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    let report = report?;
    if g.json {
        let v = serde_json::json!({
            "clean": report.is_clean(),
            "healthy": report.is_healthy(),
            "report": report,
        });
        println!("{v}");
    } else {
        print!("{report}");
    }
    Ok(if report.is_healthy() { 0 } else { 1 })
}

/// A spinner on stderr when it is a terminal.
pub fn spinner(msg: &'static str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let p = indicatif::ProgressBar::new_spinner();
    p.set_message(msg);
    p.enable_steady_tick(std::time::Duration::from_millis(100));
    Some(p)
}
