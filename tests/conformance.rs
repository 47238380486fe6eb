//! Conformance tests of the [`durq::Backend`] contract (SPEC §3, G2–G5, G7, G9).
//!
//! Every case in `conformance/cases_*.rs` is generic over a [`Harness`]: something that opens a
//! store (fresh for each test, the same data when opened again) whose time is driven by an
//! injected [`ManualClock`]. The `conformance!` macro instantiates every case for one harness;
//! the local backend (`local::*`) and the Redis backend (`redis::*`, feature `redis`, each test
//! on its own private `redis-server`) run the very same tests.
//!
//! Time: backends must take "now" from the injected clock. After `clock.advance(..)`, tests call
//! [`tick`] so the backend processes what became due (delayed jobs, leases, dedup expiry).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use durq::clock::ManualClock;
use durq::{FsyncPolicy, Queue, QueueConfig, RetryPolicy, Timestamp};

#[path = "conformance/cases_core.rs"]
mod cases_core;
#[path = "conformance/cases_input.rs"]
mod cases_input;
#[path = "conformance/cases_retry.rs"]
mod cases_retry;

/// The clock every test starts at (2027-01-15, a whole second).
pub const T0: u64 = 1_800_000_000_000;

/// Settings a test asks of the store it opens.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub lease: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub keep_completed: Option<usize>,
    pub queues: Vec<(String, QueueConfig)>,
    pub max_payload: Option<usize>,
}

/// Opens stores for the conformance cases.
pub trait Harness: Send {
    /// The clock the stores opened by this harness use.
    fn clock(&self) -> Arc<ManualClock>;
    /// Opens the store: empty the first time, the same data after a shutdown.
    fn open(&mut self, setup: &Setup) -> impl Future<Output = durq::Result<Queue>> + Send;
}

/// The embedded backend in a temporary directory.
pub struct LocalHarness {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
}

impl Default for LocalHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalHarness {
    pub fn new() -> Self {
        LocalHarness {
            dir: tempfile::tempdir().unwrap(),
            clock: Arc::new(ManualClock::new(Timestamp(T0))),
        }
    }
}

impl Harness for LocalHarness {
    fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
    fn open(&mut self, s: &Setup) -> impl Future<Output = durq::Result<Queue>> + Send {
        let mut b = Queue::builder(self.dir.path())
            .fsync(FsyncPolicy::EverySec)
            .clock(self.clock.clone());
        if let Some(l) = s.lease {
            b = b.lease(l);
        }
        if let Some(r) = &s.retry {
            b = b.retry(r.clone());
        }
        if let Some(k) = s.keep_completed {
            b = b.keep_completed(k);
        }
        if let Some(m) = s.max_payload {
            b = b.max_payload(m);
        }
        for (name, cfg) in &s.queues {
            b = b.queue(name.clone(), cfg.clone());
        }
        b.open()
    }
}

/// Lets the backend process what became due after the clock moved.
pub async fn tick(q: &Queue) {
    q.stats().await.unwrap();
}

/// Calls `$m! { PREFIX case, case, … }` with every conformance case: the one list that every
/// harness runs.
#[macro_export]
macro_rules! all_cases {
    ($m:ident { $($pre:tt)* }) => {
        $m! { $($pre)*
            cases_core::priority_then_fifo,
            cases_core::fifo_within_priority_across_queues,
            cases_core::delayed_jobs_wait_for_their_time,
            cases_core::lease_expiry_returns_the_job,
            cases_core::heartbeat_extends_the_lease,
            cases_core::ack_completes_and_stale_token_is_rejected,
            cases_core::release_does_not_count_the_attempt,
            cases_core::completed_history_is_bounded,
            cases_core::pause_and_resume,
            cases_core::stats_count_every_state,
            cases_core::long_poll_wakes_on_enqueue,
            cases_core::long_poll_times_out,
            cases_core::exclude_kinds_skips_those_kinds,
            cases_core::pause_key_holds_back_one_key,
            cases_core::dedup_returns_first_id_until_ttl,
            cases_core::dedup_survives_reopen_and_expires,
            cases_core::dedup_within_one_batch,
            cases_core::key_runs_one_at_a_time_in_order,
            cases_core::key_order_holds_across_retries,
            cases_core::key_released_when_head_dies,
            cases_core::state_survives_reopen,
            cases_retry::default_retry_schedule_then_dead,
            cases_retry::queue_retry_policy_with_cap,
            cases_retry::job_retry_policy_overrides,
            cases_retry::jitter_spreads_within_bounds,
            cases_retry::retry_after_and_give_up,
            cases_retry::lease_expiry_counts_toward_retries,
            cases_retry::dead_letters_keep_every_attempt,
            cases_retry::requeue_one_some_all,
            cases_retry::purge_one_and_all,
            cases_input::batch_is_atomic_on_invalid_job,
            cases_input::batch_keeps_order,
            cases_input::invalid_jobs_rejected_and_nothing_changed,
            cases_input::invalid_calls_rejected,
        }
    };
}

/// Instantiates every conformance case for one harness: `conformance!(module, harness_expr)`.
/// The expression is evaluated inside each (async) test, so it may `.await`.
#[macro_export]
macro_rules! conformance {
    ($module:ident, $make:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::all_cases!(conformance { @cases $make; });
        }
    };
    (@cases $make:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let h = $make;
                super::$module::$case(h).await;
            }
        )*
    };
}

conformance!(local, LocalHarness::new());

#[cfg(feature = "redis")]
#[path = "redis_support/mod.rs"]
mod redis_support;

/// The Redis backend on a private `redis-server` (one per test, AOF `always`); "reopen" is a
/// new backend on the same server.
#[cfg(feature = "redis")]
pub struct RedisHarness {
    pub server: redis_support::RedisServer,
    pub clock: Arc<ManualClock>,
}

#[cfg(feature = "redis")]
impl Default for RedisHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "redis")]
impl RedisHarness {
    pub fn new() -> Self {
        RedisHarness {
            server: redis_support::RedisServer::start(),
            clock: Arc::new(ManualClock::new(Timestamp(T0))),
        }
    }
}

#[cfg(feature = "redis")]
impl Harness for RedisHarness {
    fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
    fn open(&mut self, s: &Setup) -> impl Future<Output = durq::Result<Queue>> + Send {
        let mut b = Queue::builder(self.server.path())
            .redis(self.server.url())
            .clock(self.clock.clone());
        if let Some(l) = s.lease {
            b = b.lease(l);
        }
        if let Some(r) = &s.retry {
            b = b.retry(r.clone());
        }
        if let Some(k) = s.keep_completed {
            b = b.keep_completed(k);
        }
        if let Some(m) = s.max_payload {
            b = b.max_payload(m);
        }
        for (name, cfg) in &s.queues {
            b = b.queue(name.clone(), cfg.clone());
        }
        b.open()
    }
}

#[cfg(feature = "redis")]
conformance!(redis, RedisHarness::new());

/// The Redis backend on a 3-master Redis Cluster shared by the cases (emptied before each).
#[cfg(feature = "redis")]
pub struct ClusterHarness {
    pub cluster: Arc<redis_support::RedisCluster>,
    pub clock: Arc<ManualClock>,
}

#[cfg(feature = "redis")]
impl Harness for ClusterHarness {
    fn clock(&self) -> Arc<ManualClock> {
        self.clock.clone()
    }
    fn open(&mut self, s: &Setup) -> impl Future<Output = durq::Result<Queue>> + Send {
        let mut b = Queue::builder(self.cluster.nodes[0].path())
            .redis(self.cluster.url())
            .clock(self.clock.clone());
        if let Some(l) = s.lease {
            b = b.lease(l);
        }
        if let Some(r) = &s.retry {
            b = b.retry(r.clone());
        }
        if let Some(k) = s.keep_completed {
            b = b.keep_completed(k);
        }
        if let Some(m) = s.max_payload {
            b = b.max_payload(m);
        }
        for (name, cfg) in &s.queues {
            b = b.queue(name.clone(), cfg.clone());
        }
        b.open()
    }
}

/// Every conformance case, one after the other, on one 3-master Redis Cluster (starting a
/// cluster per case would take minutes); queues `a` and `b` of the cross-queue cases live on
/// different nodes.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_runs_every_case() {
    let cluster = Arc::new(redis_support::RedisCluster::start());
    macro_rules! cases {
        ($($module:ident :: $case:ident),* $(,)?) => {
            $(
                cluster.flush();
                eprintln!("cluster: {}", stringify!($case));
                $module::$case(ClusterHarness {
                    cluster: cluster.clone(),
                    clock: Arc::new(ManualClock::new(Timestamp(T0))),
                })
                .await;
            )*
        };
    }
    all_cases!(cases {});
    // The cross-queue cases mean something only if `a` and `b` are on different nodes.
    let slot = |q: &str| -> u16 {
        let mut c = cluster.nodes[0].raw();
        ::redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("durq:{{{q}}}:meta"))
            .query(&mut c)
            .unwrap()
    };
    // redis-cli --cluster create gives the masters slots 0-5460, 5461-10922, 10923-16383.
    let owner = |s: u16| u8::from(s > 5460) + u8::from(s > 10922);
    assert_ne!(
        owner(slot("a")),
        owner(slot("b")),
        "queues a and b share a node"
    );
}

/// Local-only: one process per data directory (G9), invalid options leave no trace.
mod local_only {
    use super::*;

    #[tokio::test]
    async fn second_open_is_locked_with_holder_pid() {
        let mut h = LocalHarness::new();
        let q = h.open(&Setup::default()).await.unwrap();
        match h.open(&Setup::default()).await {
            Err(durq::Error::Locked { pid, path }) => {
                assert_eq!(pid, std::process::id());
                assert_eq!(path, h.dir.path());
            }
            other => panic!("second open must be Locked, got {other:?}"),
        }
        let msg = h.open(&Setup::default()).await.unwrap_err().to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        q.shutdown().await.unwrap();
        let q = h.open(&Setup::default()).await.unwrap();
        q.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn invalid_options_change_nothing() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("never");
        let bad: Vec<durq::QueueBuilder> = vec![
            Queue::builder(&dir).lease(Duration::from_millis(1)),
            Queue::builder(&dir).lease(Duration::from_secs(90_000)),
            Queue::builder(&dir).retry(RetryPolicy {
                factor: 0.5,
                ..RetryPolicy::default()
            }),
            Queue::builder(&dir).retry(RetryPolicy {
                jitter: 1.5,
                ..RetryPolicy::default()
            }),
            Queue::builder(&dir).queue("bad name", QueueConfig::default()),
            Queue::builder(&dir).cache_bytes(10),
            Queue::builder(&dir).max_payload(0),
            Queue::builder(&dir).segment_bytes(100),
        ];
        for b in bad {
            let e = b.open().await.unwrap_err();
            assert!(e.is_invalid_input(), "{e}");
            assert!(!dir.exists(), "an invalid option created {}", dir.display());
        }
    }

    /// A requeued dead job joins the BACK of its partition key's FIFO; on reopen the FIFOs are
    /// rebuilt in that run-time order (holder first), not by id, so the older requeued job
    /// does not run beside the job that held the key at shutdown.
    #[tokio::test]
    async fn requeued_keyed_job_then_reopen_keeps_one_in_flight() {
        use durq::{NewJob, Selection};
        let mut h = LocalHarness::new();
        let q = h.open(&Setup::default()).await.unwrap();
        let a = q
            .enqueue(NewJob::new("q", b"a".to_vec()).key("k").max_retries(0))
            .await
            .unwrap();
        let l = q.reserve(&["q"]).await.unwrap().unwrap();
        q.fail(&l, "dies").await.unwrap();
        q.enqueue(NewJob::new("q", b"b".to_vec()).key("k"))
            .await
            .unwrap();
        let lb = q.reserve(&["q"]).await.unwrap().unwrap();
        assert_eq!(lb.job.payload, b"b");
        assert_eq!(
            q.requeue_dead("q", Selection::Ids(vec![a.id]))
                .await
                .unwrap(),
            1
        );
        assert!(
            q.reserve(&["q"]).await.unwrap().is_none(),
            "a waits behind the active b"
        );
        q.shutdown().await.unwrap();
        let q = h.open(&Setup::default()).await.unwrap();
        let first = q
            .reserve(&["q"])
            .await
            .unwrap()
            .expect("one job of the key runs");
        let second = q.reserve(&["q"]).await.unwrap();
        assert!(
            second.is_none(),
            "two jobs of key k in flight at once: {:?} and {:?}",
            String::from_utf8_lossy(&first.job.payload),
            second.map(|l| String::from_utf8_lossy(&l.job.payload).into_owned())
        );
        q.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn paused_queue_stays_paused_after_reopen() {
        let mut h = LocalHarness::new();
        let q = h.open(&Setup::default()).await.unwrap();
        q.enqueue(durq::NewJob::new("p", b"x".to_vec()))
            .await
            .unwrap();
        q.pause("p").await.unwrap();
        q.shutdown().await.unwrap();
        let q = h.open(&Setup::default()).await.unwrap();
        assert!(q.stats().await.unwrap().queues["p"].paused);
        assert!(q.reserve(&["p"]).await.unwrap().is_none());
        q.resume("p").await.unwrap();
        assert!(q.reserve(&["p"]).await.unwrap().is_some());
        q.shutdown().await.unwrap();
    }
}
