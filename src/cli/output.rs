//! Text and `--json` shapes shared by the CLI and the HTTP API (SPEC §6).
//!
//! - a job: `id` (string), `queue`, `kind`, `priority` (number), `key` (string or null),
//!   `state`, `attempts`, `created_at`, `run_at` (RFC 3339), `payload` (the JSON value itself),
//!   `errors` (array of `{attempt, at, error}`);
//! - stats: `{"queues": {NAME: {waiting, delayed, active, dead, completed, paused,
//!   oldest_waiting_secs}}, "totals": {…}}`.

use serde_json::{json, Value};

use crate::job::Job;
use crate::stats::{QueueStats, Stats};

/// A job as JSON.
pub fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id.to_string(),
        "queue": j.queue,
        "kind": j.kind,
        "priority": j.priority.0,
        "key": j.key,
        "state": j.state.as_str(),
        "attempts": j.attempts,
        "created_at": j.created_at.to_rfc3339(),
        "run_at": j.run_at.to_rfc3339(),
        "payload": j.payload_json(),
        "errors": j.errors.iter().map(|e| json!({
            "attempt": e.attempt,
            "at": e.at.to_rfc3339(),
            "error": e.error,
        })).collect::<Vec<_>>(),
    })
}

fn queue_stats_json(s: &QueueStats) -> Value {
    json!({
        "waiting": s.waiting,
        "delayed": s.delayed,
        "active": s.active,
        "dead": s.dead,
        "completed": s.completed,
        "paused": s.paused,
        "oldest_waiting_secs": s.oldest_waiting_secs,
    })
}

/// Stats as JSON; with `only`, just that queue (all zero if it has no jobs) and its totals.
pub fn stats_json(stats: &Stats, only: Option<&str>) -> Value {
    let s = restrict(stats, only);
    let queues: serde_json::Map<String, Value> = s
        .queues
        .iter()
        .map(|(k, v)| (k.clone(), queue_stats_json(v)))
        .collect();
    json!({"queues": queues, "totals": queue_stats_json(&s.totals)})
}

/// The stats of one queue only (or all of them).
pub fn restrict(stats: &Stats, only: Option<&str>) -> Stats {
    match only {
        None => stats.clone(),
        Some(q) => {
            let mut s = Stats::default();
            s.queues.insert(
                q.to_string(),
                stats.queues.get(q).cloned().unwrap_or_default(),
            );
            s.compute_totals();
            s
        }
    }
}

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
