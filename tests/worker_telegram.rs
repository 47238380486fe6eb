//! The `telegram_message` handler against a fake Bot API server on loopback (axum): it answers
//! 200, 429 with retry_after, 500 and 400 on cue (by message text) and records what it got.
#![cfg(feature = "telegram")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use durq::worker::telegram::{self, TelegramConfig, TelegramMessage};
use durq::worker::Pool;
use durq::{FsyncPolicy, JobState, NewJob, Queue};
use parking_lot::Mutex;
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    got: Mutex<Vec<(String, Value, Instant)>>,
    seen: Mutex<HashMap<String, u32>>,
}

async fn send(
    State(f): State<Arc<Fake>>,
    Path(bot): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let text = body["text"].as_str().unwrap_or_default().to_string();
    f.got.lock().push((bot, body.clone(), Instant::now()));
    let n = {
        let mut s = f.seen.lock();
        let n = s.entry(text.clone()).or_default();
        *n += 1;
        *n
    };
    match (text.as_str(), n) {
        ("slow down", 1) => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(
                json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}}),
            ),
        ),
        ("flaky", 1) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"ok": false, "error_code": 500, "description": "Internal Server Error"})),
        ),
        ("unknown chat", _) => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
            ),
        ),
        _ => (
            StatusCode::OK,
            Json(json!({"ok": true, "result": {"message_id": n}})),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_handler_honours_the_bot_api_answers() {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/{bot}/sendMessage", post(send))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    let msg = |chat: i64, text: &str| TelegramMessage {
        chat_id: json!(chat),
        text: text.into(),
        extra: serde_json::Map::from_iter([("parse_mode".to_string(), json!("HTML"))]),
    };
    let mut ids = HashMap::new();
    for (chat, text) in [
        (1, "hello"),
        (2, "slow down"),
        (2, "after the pause"),
        (3, "flaky"),
        (4, "unknown chat"),
    ] {
        let job = telegram::new_job("tg", &msg(chat, text))
            .unwrap()
            .backoff(Duration::from_millis(20));
        ids.insert(text, q.enqueue(job).await.unwrap().id);
    }
    let bad = q
        .enqueue(NewJob::new("tg", br#"{"text":"no chat"}"#.to_vec()).kind(telegram::KIND))
        .await
        .unwrap();
    let mut cfg = TelegramConfig::new("123:SECRET");
    cfg.base_url = format!("http://{addr}");
    let pool = telegram::configure(Pool::builder(q.clone(), vec!["tg".into()]), cfg)
        .unwrap()
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), pool.wait_until_empty())
        .await
        .unwrap()
        .unwrap();
    pool.shutdown().await.unwrap();
    server.abort();

    let state = |t: &str| ids[t];
    for t in ["hello", "slow down", "after the pause", "flaky"] {
        let j = q.get(state(t)).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Completed, "{t}: {:?}", j.errors);
    }
    let hello = q.get(state("hello")).await.unwrap().unwrap();
    assert_eq!(
        hello.key.as_deref(),
        Some("1"),
        "the partition key is the chat id"
    );
    // A 429 postpones without burning a retry: one counted attempt, no failed attempt.
    let slow = q.get(state("slow down")).await.unwrap().unwrap();
    assert_eq!(slow.attempts, 1, "{:?}", slow.errors);
    assert!(slow.errors.is_empty(), "{:?}", slow.errors);
    let flaky = q.get(state("flaky")).await.unwrap().unwrap();
    assert_eq!(flaky.attempts, 2);
    assert_eq!(flaky.errors[0].error, "Telegram 500: Internal Server Error");
    let unknown = q.get(state("unknown chat")).await.unwrap().unwrap();
    assert_eq!((unknown.state, unknown.attempts), (JobState::Dead, 1));
    assert_eq!(
        unknown.last_error(),
        Some("Telegram 400: Bad Request: chat not found")
    );
    let b = q.get(bad.id).await.unwrap().unwrap();
    assert_eq!(b.state, JobState::Dead);
    assert!(b.last_error().unwrap().contains("not a sendMessage body"));

    let got = fake.got.lock().clone();
    assert!(got.iter().all(|(bot, _, _)| bot == "bot123:SECRET"));
    assert!(
        got.iter().all(|(_, body, _)| body["parse_mode"] == "HTML"),
        "extra fields passed through"
    );
    // Chat 2: the 429 held the chat back ≥ 1 s, and its order was kept.
    let chat2: Vec<(&str, Instant)> = got
        .iter()
        .filter(|(_, b, _)| b["chat_id"] == 2)
        .map(|(_, b, t)| (b["text"].as_str().unwrap(), *t))
        .collect();
    assert_eq!(
        chat2.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec!["slow down", "slow down", "after the pause"]
    );
    assert!(
        chat2[1].1 - chat2[0].1 >= Duration::from_millis(990),
        "retry_after honoured"
    );
    // No error mentions the token.
    for id in ids.values() {
        let j = q.get(*id).await.unwrap().unwrap();
        assert!(j.errors.iter().all(|e| !e.error.contains("SECRET")));
    }
    q.shutdown().await.unwrap();
}
