//! `durq serve --config FILE`: the TOML configuration file, and the parsers of the knobs that
//! are also flags (`--autoscale 2..16`, `--rate 30/s`, `--key-rate 1/s`).
//!
//! Every key, its meaning and its default are listed in the README ("Configuration file").
//! Parsing is strict: an unknown key, a value of the wrong type or out of range is refused
//! with one sentence naming the file, the line and the key (exit 2), before anything is
//! opened, bound or started. Flags given on the command line win over the file.
//!
//! Invariants: [`load`] either returns a configuration whose every value has been checked
//! (queue names, rates, autoscale bounds, retry policy, breaker, alert rules, handler
//! secrets readable) or an error; it reads only the file itself and the secrets it names.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::CliError;
use crate::job::RetryPolicy;
use crate::metrics::{AlertMeasure, AlertRule};
use crate::options::FsyncPolicy;
use crate::worker::{AutoscaleConfig, BreakerConfig};

// ---------------------------------------------------------------------------------------------
// Value parsers shared with the flags.

/// Parses a rate: `30/s`, `100/m`, `500/h`, `2.5/s`, or a bare number (per second).
pub fn rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, u)) => {
            let secs = match u.trim() {
                "s" | "sec" | "second" => 1.0,
                "m" | "min" | "minute" => 60.0,
                "h" | "hour" => 3600.0,
                other => {
                    return Err(format!(
                    "rate `{s}` has an unknown unit `{other}`; write it like 30/s, 100/m or 500/h"
                ))
                }
            };
            (n.trim(), secs)
        }
        None => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n / per),
        _ => Err(format!(
            "rate `{s}` is not valid; write a positive number of jobs per unit, like 30/s, 100/m or 500/h"
        )),
    }
}

/// Parses autoscaling bounds `MIN..MAX` (1 <= MIN <= MAX <= 10000).
pub fn autoscale(s: &str) -> Result<(usize, usize), String> {
    let bad = || {
        format!("autoscale `{s}` is not valid; write MIN..MAX with 1 <= MIN <= MAX <= 10000, like 2..16")
    };
    let (a, b) = s.trim().split_once("..").ok_or_else(bad)?;
    let (min, max) = (
        a.trim().parse::<usize>().map_err(|_| bad())?,
        b.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if min == 0 || min > max || max > 10_000 {
        return Err(bad());
    }
    Ok((min, max))
}

// ---------------------------------------------------------------------------------------------
// Typed values that check themselves while the file is parsed (so errors carry a line).

/// A duration written like `500ms`, `30s`, `5m`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        crate::job::parse_duration(&s)
            .map(Dur)
            .map_err(|e| de::Error::custom(super::args::inner_msg(&e)))
    }
}

/// A rate in jobs per second, written `30/s` or as a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(pub f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate like \"30/s\" or a number per second")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                rate(v).map(Rate).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

/// Autoscale bounds written `"2..16"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds(pub usize, pub usize);

impl<'de> Deserialize<'de> for Bounds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        autoscale(&s)
            .map(|(a, b)| Bounds(a, b))
            .map_err(de::Error::custom)
    }
}

/// The fsync policy by name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fsync(pub FsyncPolicy);

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<FsyncPolicy>()
            .map(Fsync)
            .map_err(|e| de::Error::custom(super::args::inner_msg(&e)))
    }
}

// ---------------------------------------------------------------------------------------------
// The file.

/// The whole file. Absent keys take the defaults listed in the README.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory (default `./durq-data`; `--data` and `DURQ_DATA` win).
    pub data: Option<PathBuf>,
    /// Fsync policy (default `everysec`).
    pub fsync: Option<Fsync>,
    /// Listen address (default `127.0.0.1:7878`).
    pub listen: Option<String>,
    /// Token file (default none: loopback only).
    pub token_file: Option<PathBuf>,
    /// Shutdown grace for running jobs (default 30 s).
    pub grace: Option<Dur>,
    /// Per queue.
    #[serde(default)]
    pub queues: BTreeMap<String, Spanned<QueueSection>>,
    /// Alerting.
    #[serde(default)]
    pub alerts: AlertsSection,
}

/// `[queues.NAME]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    /// Jobs at once (default 5); ignored when `autoscale` is set.
    pub concurrency: Option<u32>,
    /// Autoscaling bounds `"MIN..MAX"` (default off).
    pub autoscale: Option<Bounds>,
    /// Lease of the workers (default 30 s).
    pub lease: Option<Dur>,
    /// Jobs started per second for the queue (default unlimited).
    pub rate: Option<Rate>,
    /// Jobs started per second per partition key (default unlimited).
    pub key_rate: Option<Rate>,
    /// Retry policy of jobs that bring none.
    pub retry: Option<RetrySection>,
    /// Circuit breaker per kind (default off).
    pub breaker: Option<BreakerSection>,
    /// `sh -c CMD` per job (the default handler).
    pub exec: Option<String>,
    /// The `telegram_message` handler.
    pub telegram: Option<TelegramSection>,
}

/// `[queues.NAME.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// Retries after the first attempt (default 5).
    pub max_retries: Option<u32>,
    /// First retry delay (default 1 s).
    pub backoff: Option<Dur>,
    /// Growth per retry (default 2.0).
    pub factor: Option<f64>,
    /// Longest delay (default none).
    pub max_backoff: Option<Dur>,
    /// Random spread, 0.0–1.0 (default 0).
    pub jitter: Option<f64>,
}

/// `[queues.NAME.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    /// Failures within `window` that open it (default 5).
    pub failures: Option<u32>,
    /// Sliding window (default 10 s).
    pub window: Option<Dur>,
    /// Failure fraction that opens it once `min_calls` ran (default 0.5).
    pub failure_rate: Option<f64>,
    /// Attempts before `failure_rate` applies (default 20).
    pub min_calls: Option<u32>,
    /// Time open before a probe (default 30 s).
    pub cooldown: Option<Dur>,
}

/// `[queues.NAME.telegram]`: where the bot token comes from (never inline).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelegramSection {
    /// Environment variable holding the token.
    pub token_env: Option<String>,
    /// File holding the token (mode 0600).
    pub token_file: Option<PathBuf>,
    /// Bot API base URL (default `https://api.telegram.org`).
    pub base_url: Option<String>,
}

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// The built-in rules (default true).
    #[serde(default = "yes")]
    pub defaults: bool,
    /// How often the rules are evaluated (default 5 s).
    pub interval: Option<Dur>,
    /// POST each raise and clear as JSON to this `http://` URL (default none).
    pub webhook: Option<String>,
    /// More rules (a rule named like a built-in one replaces it).
    #[serde(default)]
    pub rules: Vec<Spanned<RuleSection>>,
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            defaults: true,
            interval: None,
            webhook: None,
            rules: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What a rule measures, by name.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasureName {
    /// Waiting + delayed jobs (of `queue`, or all).
    Depth,
    /// Failed / all attempts over the last 60 s.
    FailureRate,
    /// New dead letters within `window`.
    DeadGrowth,
    /// Age in seconds of the oldest waiting job.
    OldestWaiting,
    /// Kinds whose breaker is open.
    BreakerOpen,
    /// Delayed journal fsyncs within `window`.
    FsyncStalls,
}

/// `[[alerts.rules]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    /// Name.
    pub name: String,
    /// What it measures.
    pub measure: MeasureName,
    /// Raised when the measure stays above this...
    pub threshold: f64,
    /// ...for this long (default 0 s).
    pub hold: Option<Dur>,
    /// Window of `dead_growth` and `fsync_stalls` (default 5 m).
    pub window: Option<Dur>,
    /// Queue of `depth` (default all queues).
    pub queue: Option<String>,
}

impl RuleSection {
    fn rule(&self) -> Result<AlertRule, String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "alert rule name `{}` is not valid; use letters, digits and _",
                self.name
            ));
        }
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            return Err(format!(
                "threshold {} is not valid; use a number of at least 0",
                self.threshold
            ));
        }
        let window = self.window.map_or(Duration::from_secs(300), |d| d.0);
        if self.window.is_some()
            && !matches!(
                self.measure,
                MeasureName::DeadGrowth | MeasureName::FsyncStalls
            )
        {
            return Err("`window` applies only to dead_growth and fsync_stalls".into());
        }
        if self.queue.is_some() && self.measure != MeasureName::Depth {
            return Err("`queue` applies only to depth".into());
        }
        if let Some(q) = &self.queue {
            crate::job::validate_queue_name(q).map_err(|e| super::args::inner_msg(&e))?;
        }
        let measure = match self.measure {
            MeasureName::Depth => AlertMeasure::Depth {
                queue: self.queue.clone(),
            },
            MeasureName::FailureRate => AlertMeasure::FailureRate,
            MeasureName::DeadGrowth => AlertMeasure::DeadGrowth { window },
            MeasureName::OldestWaiting => AlertMeasure::OldestWaiting,
            MeasureName::BreakerOpen => AlertMeasure::BreakerOpen,
            MeasureName::FsyncStalls => AlertMeasure::FsyncStalls { window },
        };
        Ok(AlertRule {
            name: self.name.clone(),
            measure,
            threshold: self.threshold,
            hold: self.hold.map_or(Duration::ZERO, |d| d.0),
        })
    }
}

/// A queue's settings, checked.
#[derive(Clone, Debug)]
pub struct QueuePlan {
    /// The section as written.
    pub section: QueueSection,
    /// Retry policy, if the section sets one.
    pub retry: Option<RetryPolicy>,
    /// Breaker, if set.
    pub breaker: Option<BreakerConfig>,
    /// Autoscaling, if set.
    pub autoscale: Option<AutoscaleConfig>,
    /// The Telegram bot token, read from its env var or file.
    pub telegram_token: Option<String>,
}

/// The file, checked.
#[derive(Debug)]
pub struct Loaded {
    /// The file's top-level values.
    pub file: Config,
    /// Queues.
    pub queues: BTreeMap<String, QueuePlan>,
    /// User rules (built-ins are added by the caller unless `alerts.defaults = false`).
    pub rules: Vec<AlertRule>,
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The key written on the line holding `at`: `key = …` or a `[table]` header.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[start..end].trim();
    if let Some(h) = line.strip_prefix('[') {
        return Some(h.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    }
    let (k, _) = line.split_once('=')?;
    Some(k.trim().trim_matches('"').to_string())
}

fn at(path: &Path, text: &str, span: Option<Range<usize>>, msg: &str) -> CliError {
    let file = path.display();
    let Some(span) = span else {
        return CliError::usage(format!("{file}: {msg}"));
    };
    let line = line_of(text, span.start);
    let msg = msg.trim_end_matches('\n').replace('\n', " ");
    match key_at(text, span.start) {
        Some(k) if !msg.contains(&format!("`{k}`")) => {
            CliError::usage(format!("{file} line {line}, key `{k}`: {msg}"))
        }
        _ => CliError::usage(format!("{file} line {line}: {msg}")),
    }
}

/// Reads and checks the configuration file.
pub fn load(path: &Path) -> Result<Loaded, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    parse(path, &text)
}

/// Checks the configuration `text` read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, CliError> {
    let file: Config = toml::from_str(text).map_err(|e| at(path, text, e.span(), e.message()))?;
    if let Some(l) = &file.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            let span = text.find("listen").map(|i| i..i + 1);
            return Err(at(
                path,
                text,
                span,
                &format!("`{l}` is not an address; write it like 127.0.0.1:7878"),
            ));
        }
    }
    if let Some(w) = &file.alerts.webhook {
        if let Err(e) = crate::metrics::sinks::Webhook::new(w) {
            let span = text.find("webhook").map(|i| i..i + 1);
            return Err(at(path, text, span, &e));
        }
    }
    let mut queues = BTreeMap::new();
    for (name, sec) in &file.queues {
        let from = sec.span().start;
        let err = |key: Option<&str>, m: String| {
            let span = key.and_then(|k| find_key(text, from, k)).unwrap_or(from);
            at(
                path,
                text,
                Some(span..span + 1),
                &format!("queue `{name}`: {m}"),
            )
        };
        crate::job::validate_queue_name(name).map_err(|e| err(None, super::args::inner_msg(&e)))?;
        let plan = plan_queue(sec.get_ref()).map_err(|(k, m)| err(k, m))?;
        queues.insert(name.clone(), plan);
    }
    let mut rules = Vec::new();
    for r in &file.alerts.rules {
        let rule = r
            .get_ref()
            .rule()
            .map_err(|m| at(path, text, Some(r.span()), &format!("alert rule: {m}")))?;
        if rules.iter().any(|x: &AlertRule| x.name == rule.name) {
            return Err(at(
                path,
                text,
                Some(r.span()),
                &format!("alert rule `{}` is defined twice", rule.name),
            ));
        }
        rules.push(rule);
    }
    Ok(Loaded {
        file,
        queues,
        rules,
    })
}

/// Where the first `key = …` line at or after `from` starts.
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    let mut pos = text[..from.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    for line in text[pos..].split_inclusive('\n') {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(pos + (line.len() - t.len()));
            }
        }
        pos += line.len();
    }
    None
}

/// A check that failed: the key to point at (if known) and the message.
type Refusal = (Option<&'static str>, String);

fn plan_queue(s: &QueueSection) -> Result<QueuePlan, Refusal> {
    if let Some(c) = s.concurrency {
        if c == 0 || c > 10_000 {
            return Err((
                Some("concurrency"),
                format!("concurrency {c} is out of range; use 1 to 10000"),
            ));
        }
    }
    if let Some(l) = s.lease {
        if l.0 < Duration::from_millis(100) {
            return Err((Some("lease"), "lease must be at least 100ms".into()));
        }
    }
    let retry = s
        .retry
        .as_ref()
        .map(|r| {
            let d = RetryPolicy::default();
            let p = RetryPolicy {
                max_retries: r.max_retries.unwrap_or(d.max_retries),
                base_ms: r.backoff.map_or(d.base_ms, |b| b.0.as_millis() as u64),
                factor: r.factor.unwrap_or(d.factor),
                cap_ms: r.max_backoff.map_or(d.cap_ms, |b| b.0.as_millis() as u64),
                jitter: r.jitter.unwrap_or(d.jitter),
            };
            p.validate().map(|()| p)
        })
        .transpose()
        .map_err(|e| {
            let m = super::args::inner_msg(&e);
            let key = ["factor", "jitter", "max_retries", "max_backoff", "backoff"]
                .into_iter()
                .find(|k| {
                    m.contains(&k.replace('_', " ")) || (*k == "backoff" && m.contains("backoff"))
                });
            (key, m)
        })?;
    let breaker = s
        .breaker
        .as_ref()
        .map(|b| {
            let d = BreakerConfig::default();
            let c = BreakerConfig {
                failures: b.failures.unwrap_or(d.failures),
                window: b.window.map_or(d.window, |w| w.0),
                failure_rate: b.failure_rate.unwrap_or(d.failure_rate),
                min_calls: b.min_calls.unwrap_or(d.min_calls),
                cooldown: b.cooldown.map_or(d.cooldown, |w| w.0),
            };
            c.validate().map(|()| c)
        })
        .transpose()
        .map_err(|e| {
            let m = super::args::inner_msg(&e);
            let key = m.contains("failure rate").then_some("failure_rate");
            (key.or(Some("failures")), m)
        })?;
    let autoscale = s.autoscale.map(|b| AutoscaleConfig::new(b.0, b.1));
    let telegram_token = match &s.telegram {
        None => None,
        Some(t) => Some(telegram_token(t).map_err(|m| (Some("token_env"), m))?),
    };
    if let Some(cmd) = &s.exec {
        if cmd.trim().is_empty() {
            return Err((
                Some("exec"),
                "exec is empty; give the command to run for each job".into(),
            ));
        }
    }
    Ok(QueuePlan {
        section: s.clone(),
        retry,
        breaker,
        autoscale,
        telegram_token,
    })
}

fn telegram_token(t: &TelegramSection) -> Result<String, String> {
    if !cfg!(feature = "telegram") {
        return Err("the telegram handler needs a durq built with `--features telegram`".into());
    }
    let token = match (&t.token_env, &t.token_file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            format!("telegram: the environment variable {var} (token_env) is not set")
        })?,
        (None, Some(p)) => super::serve::read_secret(p, "telegram token file")
            .map_err(|e| format!("telegram: {}", e.msg))?,
        _ => {
            return Err(
                "telegram: give exactly one of token_env or token_file (the token is never written inline)"
                    .into(),
            )
        }
    };
    let token = token.trim().to_string();
    if token.is_empty() {
        return Err("telegram: the bot token is empty".into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_bounds() {
        assert_eq!(rate("30/s"), Ok(30.0));
        assert_eq!(rate("120/m"), Ok(2.0));
        assert_eq!(rate("3600/h"), Ok(1.0));
        assert_eq!(rate("2.5"), Ok(2.5));
        for bad in ["", "0/s", "-1/s", "x/s", "3/d", "nan", "inf/s"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert_eq!(autoscale("2..16"), Ok((2, 16)));
        assert_eq!(autoscale(" 1 .. 1 "), Ok((1, 1)));
        for bad in ["", "0..4", "5..4", "2-16", "2..", "1..10001", "a..b"] {
            assert!(autoscale(bad).is_err(), "{bad}");
        }
    }

    /// The README's example file is valid and names every key of the file.
    #[test]
    fn readme_example_parses_and_documents_every_key() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("### Configuration file")
            .and_then(|i| readme[i..].find("```toml").map(|j| i + j + 7))
            .expect("README has the configuration example");
        let end = start + readme[start..].find("```").unwrap();
        let mut text = readme[start..end].to_string();
        if cfg!(feature = "telegram") {
            std::env::set_var("BOT_TOKEN", "123:abc");
        } else {
            // Without the feature the telegram section is refused (tested elsewhere).
            let a = text.find("[queues.bot.telegram]").unwrap();
            let b = text.find("[alerts]").unwrap();
            text.replace_range(a..b, "");
        }
        let l = parse(Path::new("README.md"), &text).unwrap_or_else(|e| panic!("{}", e.msg));
        let q = &l.queues["emails"];
        assert_eq!(q.autoscale.as_ref().map(|a| (a.min, a.max)), Some((2, 16)));
        assert_eq!(q.section.rate, Some(Rate(30.0)));
        assert_eq!(q.retry.as_ref().unwrap().max_retries, 5);
        assert_eq!(l.rules[0].name, "emails_backlog");
        // Every key of every section appears in the example (commented or not).
        for key in [
            "data",
            "fsync",
            "listen",
            "token_file",
            "grace",
            "exec",
            "concurrency",
            "autoscale",
            "lease",
            "rate",
            "key_rate",
            "max_retries",
            "backoff",
            "factor",
            "max_backoff",
            "jitter",
            "failures",
            "window",
            "failure_rate",
            "min_calls",
            "cooldown",
            "token_env",
            "base_url",
            "defaults",
            "interval",
            "webhook",
            "name",
            "measure",
            "queue",
            "threshold",
            "hold",
        ] {
            let written = readme[start..end].lines().any(|l| {
                l.trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))
            });
            assert!(written, "README documents `{key}`");
        }
    }
}
