//! Shared harness of the watcher tests: a real queue, a real temp tree, real inotify.
//! Tests synchronise on jobs appearing in the queue (polled with a deadline) and on cookie files,
//! never on sleeps alone.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durq::watch::{WatchConfig, Watcher};
use durq::Queue;
use serde_json::Value;

pub const Q: &str = "files";

pub struct H {
    pub data: tempfile::TempDir,
    pub tree: tempfile::TempDir,
    pub q: Queue,
    pub w: Option<Watcher>,
    pub cfg: WatchConfig,
    seen: usize,
    cookies: AtomicU64,
}

pub fn cfg_for(root: &Path, state: &Path) -> WatchConfig {
    let mut c = WatchConfig::new(vec![root.to_path_buf()], Q, state.to_path_buf());
    c.debounce = Duration::from_millis(150);
    c.max_wait = Duration::from_secs(3);
    c
}

impl H {
    /// A harness with the config adjusted by `f`; the watcher is started.
    pub async fn new(f: impl FnOnce(&mut WatchConfig)) -> H {
        let data = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        let q = Queue::open(data.path().join("q")).await.unwrap();
        let mut cfg = cfg_for(tree.path(), &data.path().join("watch"));
        f(&mut cfg);
        let w = Watcher::start(q.clone(), cfg.clone()).await.unwrap();
        H {
            data,
            tree,
            q,
            w: Some(w),
            cfg,
            seen: 0,
            cookies: AtomicU64::new(0),
        }
    }

    pub fn root(&self) -> PathBuf {
        std::fs::canonicalize(self.tree.path()).unwrap()
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.tree.path().join(rel)
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.p(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(p, bytes).unwrap();
    }

    pub async fn stop(&mut self) {
        if let Some(w) = self.w.take() {
            w.stop().await.unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.w = Some(
            Watcher::start(self.q.clone(), self.cfg.clone())
                .await
                .unwrap(),
        );
    }

    /// Every job of the queue (payload + kind), in enqueue order.
    pub async fn all_jobs(&self) -> Vec<(String, Value)> {
        let mut v = self.q.list(Q, None, 1_000_000).await.unwrap();
        v.sort_by_key(|j| j.id);
        v.into_iter()
            .map(|j| (j.kind.clone(), j.payload_json()))
            .collect()
    }

    /// Jobs in the queue (any state), from the cheap stats call.
    pub async fn count(&self) -> u64 {
        let st = self.q.stats().await.unwrap();
        st.queues.get(Q).map_or(0, |s| {
            s.waiting + s.delayed + s.active + s.completed + s.dead
        })
    }

    /// Waits (bounded) until `pred` holds for the job list (listed again only when the count
    /// of jobs changed).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[(String, Value)]) -> bool,
    ) -> Vec<(String, Value)> {
        let end = Instant::now() + timeout;
        let mut last = u64::MAX;
        loop {
            let n = self.count().await;
            if n != last {
                last = n;
                let jobs = self.all_jobs().await;
                if pred(&jobs) {
                    return jobs;
                }
            }
            if Instant::now() >= end {
                let jobs = self.all_jobs().await;
                panic!(
                    "timed out waiting for {what}; {} jobs: {:#?}",
                    jobs.len(),
                    &jobs[jobs.len().saturating_sub(20)..]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the queue holds at least `n` jobs.
    pub async fn wait_count(&self, n: u64, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let c = self.count().await;
            if c >= n {
                return;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {n} jobs (have {c})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a cookie file and waits for its job: every change made before it has then been
    /// settled (same debounce, settled in order). Returns the `file_event`s since the last call,
    /// cookies left out.
    pub async fn sync(&mut self) -> Vec<Value> {
        // Two cookies: paths held back once by the settle (found by a directory walk while still
        // fresh) are due before the second cookie is.
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let n = self.cookies.fetch_add(1, Ordering::SeqCst);
            let name = format!("zz-cookie-{n}");
            self.write(&name, name.as_bytes());
            jobs = self
                .wait_for(&name, Duration::from_secs(20), |jobs| {
                    jobs.iter().any(|(_, p)| p["path"] == name.as_str())
                })
                .await;
        }
        let fresh: Vec<Value> = jobs[self.seen..]
            .iter()
            .filter(|(k, p)| {
                k == "file_event" && !p["path"].as_str().unwrap_or("").starts_with("zz-cookie")
            })
            .map(|(_, p)| p.clone())
            .collect();
        self.seen = jobs.len();
        fresh
    }
}

/// (kind, path) pairs, sorted.
pub fn kinds(evs: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

pub fn kp(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}
