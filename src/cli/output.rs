//! Text and `--json` output of the CLI; the JSON shapes it shares with the HTTP API are built in
//! [`crate::wire`]:
//!
//! - a job: `id` (string), `queue`, `kind`, `priority` (number), `key` (string or null),
//!   `state`, `attempts`, `created_at`, `run_at` (RFC 3339), `payload` (the JSON value itself),
//!   `errors` (array of `{attempt, at, error}`);
//! - stats: `{"queues": {NAME: {waiting, delayed, active, dead, completed, paused,
//!   oldest_waiting_secs}}, "totals": {…}}`.

use crate::job::Job;
use crate::stats::{QueueStats, Stats};
pub use crate::wire::{job_json, restrict, stats_json};

/// Stats as an aligned text table, one row per queue plus a total row.
pub fn stats_table(stats: &Stats) -> Vec<String> {
    let mut rows = vec![[
        "QUEUE",
        "WAITING",
        "DELAYED",
        "ACTIVE",
        "DEAD",
        "COMPLETED",
        "PAUSED",
        "OLDEST",
    ]
    .map(String::from)
    .to_vec()];
    let row = |name: &str, s: &QueueStats| {
        vec![
            name.to_string(),
            s.waiting.to_string(),
            s.delayed.to_string(),
            s.active.to_string(),
            s.dead.to_string(),
            s.completed.to_string(),
            if s.paused { "yes" } else { "no" }.to_string(),
            s.oldest_waiting_secs
                .map_or("-".to_string(), |x| format!("{x:.1}s")),
        ]
    };
    for (name, s) in &stats.queues {
        rows.push(row(name, s));
    }
    if stats.queues.len() != 1 {
        rows.push(row("(total)", &stats.totals));
    }
    table(&rows)
}

/// One text line per job: id, state, priority, kind, key, attempts, run-at, payload, last error.
pub fn jobs_table(jobs: &[Job]) -> Vec<String> {
    let mut rows = vec![[
        "ID",
        "STATE",
        "PRIO",
        "KIND",
        "KEY",
        "ATTEMPTS",
        "RUN_AT",
        "PAYLOAD",
        "LAST_ERROR",
    ]
    .map(String::from)
    .to_vec()];
    for j in jobs {
        rows.push(vec![
            j.id.to_string(),
            j.state.to_string(),
            j.priority.0.to_string(),
            j.kind.clone(),
            j.key.clone().unwrap_or_else(|| "-".into()),
            j.attempts.to_string(),
            j.run_at.to_rfc3339(),
            clip(&j.payload_json().to_string(), 40),
            clip(j.last_error().unwrap_or("-"), 60),
        ]);
    }
    table(&rows)
}

/// Shortens `s` to `n` characters (on one line).
pub fn clip(s: &str, n: usize) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut t: String = one_line.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn table(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (i, cell) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line
        })
        .collect()
}
