//! Metrics fed by a real pool and store: counters, histograms, the Prometheus text format
//! (parsed line by line: every sample belongs to a family with HELP and TYPE, names and labels
//! are valid), the JSON snapshot, and alert rules raising notices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use durq::metrics::{AlertChange, AlertMeasure, AlertRule, Metrics, Notice};
use durq::worker::{handler_fn, Outcome, Pool};
use durq::{FsyncPolicy, Job, NewJob, Queue, QueueStats, Stats};

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Parses `{a="x",b="y\"z"}` → map; panics on malformed input.
fn parse_labels(s: &str) -> (BTreeMap<String, String>, &str) {
    let mut out = BTreeMap::new();
    let mut rest = s.strip_prefix('{').unwrap();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return (out, r);
        }
        let eq = rest.find('=').unwrap();
        let name = &rest[..eq];
        assert!(valid_name(name) && !name.contains(':'), "label name {name}");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .expect("quoted label value");
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("label value ends");
            match c {
                '\\' => match chars.next().unwrap().1 {
                    'n' => val.push('\n'),
                    '\\' => val.push('\\'),
                    '"' => val.push('"'),
                    other => panic!("bad escape \\{other}"),
                },
                '"' => break i,
                c => val.push(c),
            }
        };
        out.insert(name.to_string(), val);
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

type Samples = HashMap<(String, BTreeMap<String, String>), f64>;

/// Checks the exposition format line by line; returns the samples.
fn parse_prometheus(text: &str) -> Samples {
    let mut help = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(r) = line.strip_prefix("# HELP ") {
            let (name, doc) = r.split_once(' ').unwrap();
            assert!(valid_name(name) && !doc.is_empty(), "{line}");
            assert!(help.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(r) = line.strip_prefix("# TYPE ") {
            let (name, ty) = r.split_once(' ').unwrap();
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(
                ["counter", "gauge", "summary", "histogram", "untyped"].contains(&ty),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line `{line}`"
        );
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        assert!(valid_name(name), "sample name {name}");
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value: f64 = rest
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("value in `{line}`"));
        let family = [
            name,
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
            name.trim_end_matches("_bucket"),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("sample {name} has no HELP/TYPE"));
        let ty = &types[family];
        if family != name {
            assert!(
                ty == "summary" || ty == "histogram",
                "{name} only as part of a summary or histogram"
            );
        }
        if ty == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "{line}");
        }
        if ty == "summary" && family == name {
            assert!(labels.contains_key("quantile"), "{line}");
        }
        if ty == "counter" {
            assert!(name.ends_with("_total") && value >= 0.0, "{line}");
        }
        let key = (name.to_string(), labels);
        assert!(
            samples.insert(key, value).is_none(),
            "duplicate sample {line}"
        );
    }
    samples
}

fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_output_is_well_formed_and_counts_are_right() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::builder(dir.path())
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let feeder = metrics.attach(&q).expect("first attach");
    let weird = "we\"ird\\kind";
    for i in 0..20 {
        q.enqueue(
            NewJob::new("q", format!("{i}"))
                .kind("k")
                .backoff(Duration::from_millis(5))
                .max_retries(1),
        )
        .await
        .unwrap();
    }
    q.enqueue(NewJob::new("q", b"x".to_vec()).kind(weird))
        .await
        .unwrap();
    q.enqueue(
        NewJob::new("q", b"d".to_vec())
            .kind("k")
            .dedup("once", Duration::from_secs(60)),
    )
    .await
    .unwrap();
    q.enqueue(
        NewJob::new("q", b"d".to_vec())
            .kind("k")
            .dedup("once", Duration::from_secs(60)),
    )
    .await
    .unwrap();
    // Payloads 0..3 always fail (1 retry → dead), 4..7 fail once then succeed.
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(3)
        .metrics(metrics.clone())
        .default_handler(handler_fn(|job: Job| async move {
            let n: i64 = String::from_utf8_lossy(&job.payload).parse().unwrap_or(100);
            if n < 4 || (n < 8 && job.attempts == 1) {
                Outcome::Retry(format!("fail {n}"))
            } else {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Outcome::Done
            }
        }))
        .start()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), pool.wait_until_empty())
        .await
        .unwrap()
        .unwrap();
    pool.shutdown().await.unwrap();
    // Wait until the feeder has seen every completion (events are asynchronous).
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let s = metrics.snapshot(None);
            let done: u64 = s.series.iter().map(|x| x.completed + x.dead).sum();
            if done == 22 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("feeder caught up");
    let stats = q.stats().await.unwrap();
    let text = metrics.render_prometheus(&stats);
    let s = parse_prometheus(&text);
    let qk = l(&[("queue", "q"), ("kind", "k")]);
    let get = |name: &str, labels: &BTreeMap<String, String>| {
        *s.get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("{name} {labels:?} in\n{text}"))
    };
    assert_eq!(get("durq_jobs_enqueued_total", &qk), 21.0);
    assert_eq!(get("durq_jobs_completed_total", &qk), 17.0);
    assert_eq!(get("durq_jobs_dead_total", &qk), 4.0);
    assert_eq!(get("durq_jobs_retried_total", &qk), 8.0);
    assert_eq!(get("durq_jobs_failed_total", &qk), 12.0);
    assert_eq!(
        get("durq_jobs_deduplicated_total", &l(&[("queue", "q")])),
        1.0
    );
    assert_eq!(
        get(
            "durq_jobs_completed_total",
            &l(&[("queue", "q"), ("kind", weird)])
        ),
        1.0
    );
    assert_eq!(
        get("durq_jobs", &l(&[("queue", "q"), ("state", "dead")])),
        4.0
    );
    assert_eq!(
        get("durq_jobs", &l(&[("queue", "q"), ("state", "completed")])),
        18.0
    );
    assert_eq!(
        get("durq_jobs", &l(&[("queue", "q"), ("state", "waiting")])),
        0.0
    );
    assert_eq!(get("durq_processing_seconds_count", &qk), 17.0);
    let p50 = get(
        "durq_processing_seconds",
        &l(&[("queue", "q"), ("kind", "k"), ("quantile", "0.5")]),
    );
    let p99 = get(
        "durq_processing_seconds",
        &l(&[("queue", "q"), ("kind", "k"), ("quantile", "0.99")]),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    let rate = get("durq_success_rate", &qk);
    assert!((rate - 17.0 / 29.0).abs() < 1e-9, "success rate {rate}");
    assert_eq!(get("durq_workers", &l(&[("state", "busy")])), 0.0);
    // JSON snapshot.
    let snap = serde_json::to_value(metrics.snapshot(Some(&stats))).unwrap();
    let series = snap["series"].as_array().unwrap();
    let k = series.iter().find(|x| x["kind"] == "k").unwrap();
    assert_eq!(k["completed"], 17);
    assert!(
        k["processing"]["p99_ms"].as_f64().unwrap() >= k["processing"]["p50_ms"].as_f64().unwrap()
    );
    assert_eq!(snap["stats"]["queues"]["q"]["dead"], 4);
    feeder.abort();
    assert!(metrics.attach(&q).is_none(), "attached once only");
    q.shutdown().await.unwrap();
}

#[tokio::test]
async fn alerts_are_raised_once_after_the_hold_time_and_cleared() {
    let m = Metrics::new();
    m.add_alert(AlertRule {
        name: "backlog".into(),
        measure: AlertMeasure::Depth {
            queue: Some("q".into()),
        },
        threshold: 10.0,
        hold: Duration::from_secs(5),
    });
    m.add_alert(AlertRule {
        name: "dead_growth".into(),
        measure: AlertMeasure::DeadGrowth {
            window: Duration::from_secs(60),
        },
        threshold: 2.0,
        hold: Duration::ZERO,
    });
    let mut rx = m.subscribe();
    let stats = |waiting: u64, dead: u64| {
        let mut s = Stats::default();
        s.queues.insert(
            "q".into(),
            QueueStats {
                waiting,
                dead,
                ..QueueStats::default()
            },
        );
        s.compute_totals();
        s
    };
    let secs = Duration::from_secs;
    assert!(m.evaluate_alerts_at(&stats(50, 0), secs(0)).is_empty());
    assert!(m.evaluate_alerts_at(&stats(50, 1), secs(4)).is_empty());
    assert_eq!(
        m.evaluate_alerts_at(&stats(50, 2), secs(5)),
        vec![("backlog".to_string(), AlertChange::Raised)]
    );
    assert!(
        m.evaluate_alerts_at(&stats(60, 2), secs(6)).is_empty(),
        "raised once per crossing"
    );
    assert_eq!(
        m.evaluate_alerts_at(&stats(60, 5), secs(7)),
        vec![("dead_growth".to_string(), AlertChange::Raised)]
    );
    assert_eq!(
        m.snapshot(None).alerts_firing,
        vec!["backlog".to_string(), "dead_growth".to_string()]
    );
    let text = m.render_prometheus(&stats(0, 5));
    let s = parse_prometheus(&text);
    assert_eq!(
        s[&("durq_alert_firing".to_string(), l(&[("rule", "backlog")]))],
        1.0
    );
    assert_eq!(
        m.evaluate_alerts_at(&stats(3, 5), secs(8)),
        vec![("backlog".to_string(), AlertChange::Cleared)]
    );
    // The dead count stops growing: cleared once the growth leaves the window.
    assert_eq!(
        m.evaluate_alerts_at(&stats(3, 5), secs(70)),
        vec![("dead_growth".to_string(), AlertChange::Cleared)]
    );
    let mut seen = Vec::new();
    while let Ok(n) = rx.try_recv() {
        if let Notice::Alert { rule, change, .. } = n {
            seen.push((rule, change));
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}
