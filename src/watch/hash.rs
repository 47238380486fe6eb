//! Streamed SHA-256 of files on a bounded pool, off the event path.
//!
//! Invariants:
//! - Memory per hash is one fixed buffer ([`BUF`]), whatever the file size.
//! - At most `workers` hashes run at once (a semaphore in front of `spawn_blocking`), so an event
//!   storm cannot start thousands of blocking threads.
//! - `sha2` picks its CPU-accelerated backend (SHA-NI) at run time.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Read buffer size of one hash.
pub const BUF: usize = 256 * 1024;

/// A SHA-256 digest.
pub type Sha = [u8; 32];

/// Hex of a digest.
pub fn hex(d: &Sha) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in d {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Hashes `path` with a caller-provided buffer; returns the digest and the bytes read.
pub fn hash_file_with(path: &Path, buf: &mut [u8]) -> io::Result<(Sha, u64)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match f.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((h.finalize().into(), n))
}

/// Hashes `path` streaming through a [`BUF`]-sized buffer.
pub fn hash_file(path: &Path) -> io::Result<(Sha, u64)> {
    let mut buf = vec![0u8; BUF];
    hash_file_with(path, &mut buf)
}

/// A bounded pool of hashing threads.
#[derive(Clone, Debug)]
pub struct HashPool {
    permits: Arc<Semaphore>,
}

impl HashPool {
    /// A pool running at most `workers` hashes at once (at least one).
    pub fn new(workers: usize) -> Self {
        HashPool {
            permits: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    /// A pool sized to the machine's cores.
    pub fn default_size() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    }

    /// Hashes every `(path, expected size)` in chunks of small files (a big file gets a task of its
    /// own, so it does not hold small ones back); results in input order.
    pub async fn hash_all(&self, paths: Vec<(PathBuf, u64)>) -> Vec<io::Result<(Sha, u64)>> {
        const CHUNK_FILES: usize = 64;
        const CHUNK_BYTES: u64 = 4 << 20;
        let mut chunks: Vec<Vec<PathBuf>> = Vec::new();
        let mut cur: Vec<PathBuf> = Vec::new();
        let mut cur_bytes = 0u64;
        for (p, size) in paths {
            if !cur.is_empty() && (cur.len() >= CHUNK_FILES || cur_bytes + size > CHUNK_BYTES) {
                chunks.push(std::mem::take(&mut cur));
                cur_bytes = 0;
            }
            cur_bytes += size;
            cur.push(p);
        }
        if !cur.is_empty() {
            chunks.push(cur);
        }
        let mut tasks = Vec::new();
        for chunk in chunks {
            let permits = self.permits.clone();
            let len = chunk.len();
            let handle = tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; BUF];
                    chunk
                        .iter()
                        .map(|p| hash_file_with(p, &mut buf))
                        .collect::<Vec<_>>()
                })
                .await
            });
            tasks.push((len, handle));
        }
        let mut out = Vec::new();
        for (len, t) in tasks {
            match t.await {
                Ok(Ok(v)) => out.extend(v),
                Ok(Err(e)) => out.extend(
                    (0..len).map(|_| Err(io::Error::other(format!("hash task failed: {e}")))),
                ),
                Err(e) => out.extend(
                    (0..len).map(|_| Err(io::Error::other(format!("hash task failed: {e}")))),
                ),
            }
        }
        out
    }
}
