//! Execution timeouts: a handler that never returns and an `--exec` command that never returns
//! are cancelled when the timeout passes, the attempt fails with "timed out after D", the job is
//! retried then dead-lettered, its partition key goes to the next job, and the command's whole
//! process group is gone (SIGTERM, then SIGKILL after the grace for one that ignores SIGTERM).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durq::worker::{handler_fn, Outcome, Pool, ShellHandler};
use durq::{FsyncPolicy, Job, JobState, NewJob, Queue};

async fn open(dir: &std::path::Path) -> Queue {
    Queue::builder(dir)
        .fsync(FsyncPolicy::No)
        .open()
        .await
        .unwrap()
}

async fn drained(pool: &Pool) {
    tokio::time::timeout(Duration::from_secs(30), pool.wait_until_empty())
        .await
        .expect("queue drained in time")
        .unwrap();
}

/// Counts drops of the handler's future: a cancelled future is dropped unfinished.
struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_never_returns_times_out_and_frees_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let hung = q
        .enqueue(
            NewJob::new("q", "hang")
                .kind("k")
                .key("chat")
                .max_retries(1)
                .backoff(Duration::from_millis(10)),
        )
        .await
        .unwrap()
        .id;
    let next = q
        .enqueue(NewJob::new("q", "next").kind("k").key("chat"))
        .await
        .unwrap()
        .id;
    // Its own timeout wins over the pool's (which would be far too long for the test).
    let own = q
        .enqueue(
            NewJob::new("q", "hang")
                .kind("k")
                .max_retries(0)
                .timeout(Duration::from_millis(150)),
        )
        .await
        .unwrap()
        .id;
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(2)
        .lease(Duration::from_millis(150))
        .timeout(Duration::from_millis(400))
        .handler(
            "k",
            handler_fn(move |job: Job| {
                let guard = DropCount(d.clone());
                async move {
                    let _guard = guard;
                    if job.payload == b"hang" {
                        if job.id == own {
                            // The pool's 400 ms must not apply to this one.
                            std::future::pending::<()>().await;
                        }
                        std::future::pending::<()>().await;
                    }
                    Outcome::Done
                }
            }),
        )
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    let stats = pool.shutdown().await.unwrap().stats;
    let j = q.get(hung).await.unwrap().unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Dead, 2), "{:?}", j.errors);
    let errs: Vec<&str> = j.errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errs, vec!["timed out after 400ms", "timed out after 400ms"]);
    let o = q.get(own).await.unwrap().unwrap();
    assert_eq!(o.state, JobState::Dead);
    assert_eq!(o.last_error(), Some("timed out after 150ms"));
    assert_eq!(
        q.get(next).await.unwrap().unwrap().state,
        JobState::Completed,
        "the key went to the next job"
    );
    // Three hung attempts were cancelled (their futures dropped) — the lease (150 ms, beaten
    // every 50 ms) never ran out meanwhile: no lost lease, so heartbeats kept it until the
    // timeout and stopped with it.
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        4,
        "3 cancelled + 1 finished"
    );
    assert_eq!(stats.leases_lost, 0);
    assert_eq!(stats.failed, 3);
    q.shutdown().await.unwrap();
}

/// True while the process runs (a zombie waiting for its reaper counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_gone(pid: i32) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while alive(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("process {pid} still alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_command_that_never_returns_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path()).await;
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).unwrap();
    // The command's `sleep` is a grandchild of the pool (a child of `sh`, which waits for
    // it): only signalling the whole process group reaches it. The second job ignores SIGTERM
    // (and so does its sleep): only the SIGKILL after the grace ends it.
    let polite = q
        .enqueue(NewJob::new("q", "").kind("plain").max_retries(1))
        .await
        .unwrap()
        .id;
    let stubborn = q
        .enqueue(NewJob::new("q", "").kind("stubborn").max_retries(0))
        .await
        .unwrap()
        .id;
    let cmd = format!(
        "if [ \"$DURQ_KIND\" = stubborn ]; then trap '' TERM; fi; \
         sleep 1000 & echo $! > {}/$DURQ_JOB_ID.$DURQ_ATTEMPT; wait; true",
        pids.display()
    );
    let pool = Pool::builder(q.clone(), vec!["q".into()])
        .concurrency(2)
        .timeout(Duration::from_millis(500))
        .default_handler(ShellHandler::new(cmd).kill_grace(Duration::from_millis(300)))
        .start()
        .await
        .unwrap();
    drained(&pool).await;
    pool.shutdown().await.unwrap();
    for (id, attempts) in [(polite, 2), (stubborn, 1)] {
        let j = q.get(id).await.unwrap().unwrap();
        assert_eq!(
            (j.state, j.attempts),
            (JobState::Dead, attempts),
            "{:?}",
            j.errors
        );
        assert!(
            j.errors.iter().all(|e| e.error == "timed out after 500ms"),
            "{:?}",
            j.errors
        );
        for a in 1..=attempts {
            let p = pids.join(format!("{id}.{a}"));
            let sleep: i32 = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
                .trim()
                .parse()
                .unwrap();
            wait_gone(sleep).await;
        }
    }
    q.shutdown().await.unwrap();
}

#[test]
fn work_timeout_flag_fails_a_hung_exec_and_exits_when_empty() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let id = support::ok(&support::run(
        d,
        &[
            "enqueue",
            "q",
            "{}",
            "--max-retries",
            "1",
            "--backoff",
            "10ms",
        ],
    ))
    .trim()
    .to_string();
    let out = support::run(
        d,
        &[
            "work",
            "q",
            "--exec",
            "sleep 1000; true",
            "--timeout",
            "300ms",
            "--until-empty",
        ],
    );
    support::ok(&out);
    let dead = support::json_lines(&support::ok(&support::run(
        d,
        &["--json", "jobs", "q", "--state", "dead"],
    )));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], id);
    assert_eq!(dead[0]["attempts"], 2);
    let errs: Vec<&str> = dead[0]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert_eq!(errs, vec!["timed out after 300ms"; 2]);
    let bad = support::run(d, &["work", "q", "--timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", support::stderr(&bad));
}
