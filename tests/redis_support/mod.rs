//! A private `redis-server` for tests: a free loopback port, a temporary directory, AOF with
//! `appendfsync always`; killed (SIGKILL) when dropped. It can be killed and started again on
//! the same port and directory to test crashes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or killed) private Redis server.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server with AOF and `appendfsync always`, no RDB snapshots.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// Starts a server with these extra settings.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.boot();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn boot(&mut self) {
        let data: PathBuf = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&data)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server answers PING (and has loaded its AOF).
    fn wait_ready(&mut self) {
        let start = Instant::now();
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200)) {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            if let Some(c) = &mut self.child {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("redis-server exited at start: {st}");
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server on port {} did not come up",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the server (no shutdown, no final fsync).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.boot();
    }

    /// A plain synchronous connection (for inspecting keys).
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-master Redis Cluster on loopback ports (no replicas), each node in its own directory
/// with AOF `always`; killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = RedisCluster { nodes };
        let start = Instant::now();
        while !c.nodes.iter().all(|n| {
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut n.raw())
                .is_ok_and(|s| s.contains("cluster_state:ok"))
        }) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        c
    }

    /// The seed URLs, comma-separated (how durq is told it is a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Empties every node.
    pub fn flush(&self) {
        for n in &self.nodes {
            let _: () = redis::cmd("FLUSHALL").query(&mut n.raw()).unwrap();
        }
    }
}
