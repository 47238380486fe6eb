//! The ready `telegram_message` handler (feature `telegram`): sends the job's payload with the
//! Telegram Bot API `sendMessage` over HTTPS (reqwest with rustls).
//!
//! Payload: the `sendMessage` body as JSON, at least `chat_id` and `text`; other fields
//! (`parse_mode`, `reply_markup`, …) are passed through. Enqueue with [`new_job`] so the
//! partition key is the chat id (messages of one chat go out one at a time, in order).
//!
//! Answers: 200 with `ok: true` → done; 429 → postponed by the server's
//! `parameters.retry_after` without counting an attempt ([`Outcome::Postpone`]: the chat's key
//! waits that long; only past the queue's postponement budget does it count); 5xx and network errors →
//! retry with the job's backoff; 400, 403 and other 4xx → give up with the API's description.
//! The bot token never appears in errors or logs.
//!
//! Limits: Telegram allows about 30 messages/s per bot, 1/s per chat and 20 a minute per group
//! (negative chat ids); [`configure`] sets those as the pool's per-queue limit, per-key limit
//! and a limit on the keys that are group ids.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::handler::{Handler, Outcome};
use super::pool::PoolBuilder;
use crate::error::{Error, Result};
use crate::job::{Job, NewJob};

/// The job kind this handler serves.
pub const KIND: &str = "telegram_message";
/// Default messages per second per bot (per queue).
pub const DEFAULT_RATE: f64 = 30.0;
/// Default messages per second per chat (per partition key).
pub const DEFAULT_CHAT_RATE: f64 = 1.0;
/// Default messages per minute per group (partition keys that are negative chat ids).
pub const DEFAULT_GROUP_PER_MINUTE: f64 = 20.0;

/// True for a chat id of a group or supergroup (a negative number), which Telegram limits to
/// about 20 messages a minute.
pub fn is_group_chat(key: &str) -> bool {
    key.strip_prefix('-')
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Where and how to reach the Bot API.
#[derive(Clone, Debug)]
pub struct TelegramConfig {
    /// API base URL (default `https://api.telegram.org`; tests point it at a fake server).
    pub base_url: String,
    /// The bot token.
    pub token: String,
    /// Per-request timeout (default 30 s).
    pub timeout: Duration,
}

impl TelegramConfig {
    /// The official API with this token.
    pub fn new(token: impl Into<String>) -> Self {
        TelegramConfig {
            base_url: "https://api.telegram.org".into(),
            token: token.into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A `sendMessage` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TelegramMessage {
    /// Chat id (a number, or `@channelname`).
    pub chat_id: serde_json::Value,
    /// Message text.
    pub text: String,
    /// Any other `sendMessage` field, passed through.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TelegramMessage {
    /// The partition key: the chat id as text.
    pub fn chat_key(&self) -> String {
        match &self.chat_id {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// A job of kind `telegram_message` for `queue`, keyed by the chat id.
pub fn new_job(queue: impl Into<String>, msg: &TelegramMessage) -> Result<NewJob> {
    Ok(NewJob::json(queue, msg)?.kind(KIND).key(msg.chat_key()))
}

/// Registers the handler for [`KIND`] and the default limits (30/s per queue, 1/s per chat,
/// 20/min per group chat).
pub fn configure(b: PoolBuilder, cfg: TelegramConfig) -> Result<PoolBuilder> {
    Ok(b.handler(KIND, TelegramHandler::new(cfg)?)
        .rate_limit_queue(DEFAULT_RATE)
        .rate_limit_key(DEFAULT_CHAT_RATE)
        .rate_limit_keys_where(is_group_chat, DEFAULT_GROUP_PER_MINUTE / 60.0))
}

/// Sends `telegram_message` jobs.
#[derive(Clone, Debug)]
pub struct TelegramHandler {
    client: reqwest::Client,
    url: String,
}

#[derive(Deserialize)]
struct ApiAnswer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ApiParameters>,
}

#[derive(Deserialize)]
struct ApiParameters {
    #[serde(default)]
    retry_after: Option<u64>,
}

impl TelegramHandler {
    /// A handler for this API endpoint and token.
    pub fn new(cfg: TelegramConfig) -> Result<Self> {
        if cfg.token.is_empty() || cfg.token.contains('/') {
            return Err(Error::invalid(
                "the Telegram bot token is empty or contains `/`",
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the HTTPS client: {e}")))?;
        let url = format!(
            "{}/bot{}/sendMessage",
            cfg.base_url.trim_end_matches('/'),
            cfg.token
        );
        Ok(TelegramHandler { client, url })
    }
}

#[async_trait]
impl Handler for TelegramHandler {
    async fn handle(&self, job: Job) -> Outcome {
        let msg: TelegramMessage = match serde_json::from_slice(&job.payload) {
            Ok(m) => m,
            Err(e) => {
                return Outcome::GiveUp(format!(
                    "payload of job {} is not a sendMessage body (chat_id and text): {e}",
                    job.id
                ))
            }
        };
        let resp = match self.client.post(&self.url).json(&msg).send().await {
            Ok(r) => r,
            // `without_url`: the URL holds the bot token.
            Err(e) => {
                return Outcome::Retry(format!("Telegram request failed: {}", e.without_url()))
            }
        };
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        let answer: Option<ApiAnswer> = serde_json::from_slice(&body).ok();
        let description = answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let code = status.as_u16();
        if status.is_success() {
            return match answer {
                Some(a) if a.ok => Outcome::Done,
                _ => Outcome::Retry(format!(
                    "Telegram answered {code} without ok: {description}"
                )),
            };
        }
        if code == 429 {
            let secs = answer
                .and_then(|a| a.parameters)
                .and_then(|p| p.retry_after)
                .unwrap_or(1);
            return Outcome::Postpone(
                Duration::from_secs(secs),
                format!("Telegram 429 (retry after {secs} s): {description}"),
            );
        }
        if status.is_server_error() {
            return Outcome::Retry(format!("Telegram {code}: {description}"));
        }
        Outcome::GiveUp(format!("Telegram {code}: {description}"))
    }
}
