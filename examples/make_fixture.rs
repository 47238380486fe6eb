//! Writes the checked-in fixture data dir `tests/fixtures/v1` (journal only: the state store is
//! rebuilt from it on open) and the fuzz seeds under `fuzz/seeds/`. Deterministic content under
//! a fixed manual clock; `tests/format_fixture.rs` checks the exact jobs.
//!
//! Run: `cargo run --example make_fixture` (from the repository root). Only needed when the
//! format version changes: then keep the old fixture and add `tests/fixtures/vN`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durq::clock::ManualClock;
use durq::{FailAction, FsyncPolicy, NewJob, Priority, Queue, Timestamp};

/// The fixed time of the fixture (2027-01-15T08:00:00Z).
const T0: u64 = 1_800_000_000_000;
const JOBS: usize = 200;

fn priority(i: usize) -> Priority {
    [Priority::LOW, Priority::NORMAL, Priority::HIGH][i % 3]
}

fn key(i: usize) -> Option<String> {
    (i % 10 == 0).then(|| format!("k{}", (i / 10) % 4))
}

fn payload(i: usize) -> Vec<u8> {
    let mut p = format!("fixture-{i:03}-").into_bytes();
    p.resize(600, b'p');
    p
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> durq::Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "tests/fixtures/v1".into()),
    );
    let work = tempfile::tempdir().map_err(|e| durq::Error::io("tempdir", e))?;
    let dir = work.path();
    let q = Queue::builder(dir)
        .fsync(FsyncPolicy::Always)
        .segment_bytes(64 << 10)
        .rewrite_min_bytes(96 << 10)
        .keep_completed(1000)
        .clock(Arc::new(ManualClock::new(Timestamp(T0))))
        .open()
        .await?;
    for i in 0..JOBS {
        let mut j = NewJob::new("q", payload(i))
            .priority(priority(i))
            .kind("fixture");
        if let Some(k) = key(i) {
            j = j.key(k);
        }
        q.enqueue(j).await?;
    }
    for _ in 0..10 {
        let l = q.reserve(&["q"]).await?.expect("a job");
        q.ack(&l).await?;
    }
    let l = q.reserve(&["q"]).await?.expect("a job");
    q.fail_with(&l, "poison", FailAction::GiveUp).await?;
    let l = q.reserve(&["q"]).await?.expect("a job");
    q.fail(&l, "transient").await?;
    for i in 0..5 {
        let j = NewJob::new(
            "mail",
            format!("{{\"to\":\"user{i}@example.com\"}}").into_bytes(),
        )
        .dedup(format!("d{i}"), Duration::from_secs(3600));
        q.enqueue(j).await?;
    }
    q.pause("mail").await?;
    // The rewrite runs in the background: wait for its base before the last records.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !has_base(dir) {
        assert!(Instant::now() < deadline, "no rewrite happened");
        q.enqueue(NewJob::new("filler", b"x".to_vec()))
            .await
            .map(|_| ())?;
        let l = q.reserve(&["filler"]).await?.expect("a filler");
        q.ack(&l).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..5 {
        q.enqueue(NewJob::new("q", format!("tail-{i}").into_bytes()))
            .await?;
    }
    q.shutdown().await?;
    drop(q);

    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(out.join("journal")).map_err(|e| durq::Error::io("mkdir", e))?;
    for e in std::fs::read_dir(dir.join("journal")).map_err(|e| durq::Error::io("ls", e))? {
        let p = e.map_err(|e| durq::Error::io("ls", e))?.path();
        std::fs::copy(&p, out.join("journal").join(p.file_name().expect("name")))
            .map_err(|e| durq::Error::io("copy", e))?;
    }
    write_seeds(&out.join("journal"))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn has_base(dir: &Path) -> bool {
    let m = std::fs::read_to_string(dir.join("journal/MANIFEST")).unwrap_or_default();
    m.lines().any(|l| l.starts_with("base "))
}

/// Seeds for the fuzz targets, cut from the fixture's files.
fn write_seeds(journal: &Path) -> durq::Result<()> {
    let io = |e| durq::Error::io("fuzz seeds", e);
    let seeds = Path::new("fuzz/seeds");
    for t in ["record_decoder", "manifest", "base_snapshot"] {
        std::fs::create_dir_all(seeds.join(t)).map_err(io)?;
    }
    std::fs::copy(journal.join("MANIFEST"), seeds.join("manifest/fixture")).map_err(io)?;
    for e in std::fs::read_dir(journal).map_err(io)? {
        let p = e.map_err(io)?.path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(&p).map_err(io)?;
        if name.ends_with(".base") {
            // Keep the seed small: the header and the first records.
            let cut = cut_after_records(&bytes, 6);
            std::fs::write(seeds.join("base_snapshot").join(&name), &bytes[..cut]).map_err(io)?;
        } else if name.ends_with(".seg") {
            let h = durq::journal::format::FileHeader::decode(&bytes, &p)?;
            let mut pos = durq::journal::format::HEADER_LEN;
            let mut n = 0;
            while let Ok(f) = durq::journal::format::decode_frame(&bytes[pos..], h.number) {
                if n < 8 {
                    let mut seed = h.number.to_le_bytes().to_vec();
                    seed.extend_from_slice(&bytes[pos..pos + f.size]);
                    std::fs::write(
                        seeds.join("record_decoder").join(format!("{name}-{n}")),
                        seed,
                    )
                    .map_err(io)?;
                    let mut body = (h.number % 4).to_le_bytes().to_vec();
                    body.extend_from_slice(f.body);
                    std::fs::write(
                        seeds
                            .join("record_decoder")
                            .join(format!("{name}-{n}-body")),
                        body,
                    )
                    .map_err(io)?;
                }
                n += 1;
                pos += f.size;
            }
        }
    }
    Ok(())
}

fn cut_after_records(bytes: &[u8], n: usize) -> usize {
    let Ok(h) = durq::journal::format::FileHeader::decode(bytes, Path::new("x")) else {
        return bytes.len();
    };
    let mut pos = durq::journal::format::HEADER_LEN;
    for _ in 0..n {
        match durq::journal::format::decode_frame(&bytes[pos..], h.number) {
            Ok(f) => pos += f.size,
            Err(_) => break,
        }
    }
    pos
}
