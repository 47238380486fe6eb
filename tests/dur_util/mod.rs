//! Helpers shared by the durability tests (corruption, faults, crash, format fixture).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use durq::journal::format::{decode_frame, FileHeader, HEADER_LEN};
use durq::{FsyncPolicy, JobId, NewJob, Queue};

/// Opens `dir` with `always` and the given segment size.
pub async fn open(dir: &Path, segment_bytes: u64) -> durq::Result<Queue> {
    Queue::builder(dir)
        .fsync(FsyncPolicy::Always)
        .segment_bytes(segment_bytes)
        .open()
        .await
}

/// A recognisable payload for job number `i`, `len` bytes long.
pub fn payload(i: usize, len: usize) -> Vec<u8> {
    let mut p = format!("job-{i:06}-").into_bytes();
    while p.len() < len {
        p.push(b'a' + (p.len() % 26) as u8);
    }
    p.truncate(len.max(11));
    p
}

/// Enqueues `n` jobs (one record each) into queue "q" and returns (id, payload) in order.
pub async fn fill(q: &Queue, n: usize, len: usize) -> Vec<(JobId, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = payload(i, len);
        let e = q.enqueue(NewJob::new("q", p.clone())).await.unwrap();
        out.push((e.id, p));
    }
    out
}

/// Segment files of `dir/journal`, sorted.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// A frame found in a journal file.
#[derive(Clone, Debug)]
pub struct Rec {
    pub offset: usize,
    pub seq: u64,
    pub size: usize,
    pub body: Vec<u8>,
}

/// Every record of a journal file, in order (stops at the first bad frame).
pub fn records(path: &Path) -> Vec<Rec> {
    let buf = std::fs::read(path).unwrap();
    let h = FileHeader::decode(&buf, path).unwrap();
    let mut pos = HEADER_LEN;
    let mut v = Vec::new();
    while let Ok(f) = decode_frame(&buf[pos..], h.number) {
        v.push(Rec {
            offset: pos,
            seq: f.seq,
            size: f.size,
            body: f.body.to_vec(),
        });
        pos += f.size;
    }
    v
}

/// Ids of the jobs an `Enqueue` record body holds.
pub fn ids_in(body: &[u8]) -> Vec<JobId> {
    match durq::record::Op::decode(body).unwrap() {
        durq::record::Op::Enqueue { jobs } => jobs.iter().map(|j| j.meta.id).collect(),
        _ => Vec::new(),
    }
}

/// Bytes of every file under `dir/journal`.
pub fn journal_bytes(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Flips one byte of a file.
pub fn flip(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0x5a;
    std::fs::write(path, b).unwrap();
}

/// Captured log output of this test binary (a global subscriber; tests filter by file name).
pub fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Writer(w.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(sub);
        buf
    })
    .clone()
}

/// Log lines that mention `needle`.
pub fn log_lines(needle: &str) -> Vec<String> {
    let b = log();
    let text = String::from_utf8_lossy(&b.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every job of queue "q" as id -> payload.
pub async fn jobs(q: &Queue) -> BTreeMap<JobId, Vec<u8>> {
    q.list("q", None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|j| (j.id, j.payload))
        .collect()
}
