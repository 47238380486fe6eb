//! Opening a journal after a clean stop or a crash, and bringing the state store up to date.
//!
//! Steps: load (or create) the manifest; delete files the manifest does not name (left by a
//! crash mid-rotation or mid-rewrite); check every named file's header; open the state store
//! and decide whether it can be caught up (its `applied_seq` lies between the base's seq and
//! the journal's end) or must be rebuilt from base + segments; replay; cut a torn tail off the
//! last segment with a warning naming file, offset and bytes dropped. Damage anywhere else
//! refuses to open with an error naming file and offset.

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};
use crate::journal::format::{base_name, segment_name, FileKind, FRAME_LEN, HEADER_LEN};
use crate::journal::fsutil::fsync_dir;
use crate::journal::manifest::{Manifest, SegEntry, MANIFEST};
use crate::journal::reader::{read_header, scan_file, ScanEnd};
use crate::journal::writer::create_journal_file;
use crate::record::Op;
use crate::store::Store;

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The manifest in force.
    pub manifest: Manifest,
    /// Seq of the last record in the journal.
    pub last_seq: u64,
    /// Whether the state store was rebuilt from the journal.
    pub rebuilt: bool,
    /// Records replayed into the state store.
    pub replayed: u64,
}

/// Loads the manifest, creating a fresh journal if the directory holds none.
pub fn prepare(dir: &Path) -> Result<Manifest> {
    crate::perms::private_dir(dir)?;
    let manifest = match Manifest::load(dir)? {
        Some(m) => m,
        None => {
            let stray = journal_files(dir)?;
            if !stray.is_empty() {
                return Err(Error::Corrupt {
                    file: dir.join(MANIFEST),
                    offset: 0,
                    reason: format!(
                        "the manifest is missing but {} journal files exist",
                        stray.len()
                    ),
                });
            }
            let m = Manifest {
                base: None,
                segments: vec![SegEntry {
                    number: 1,
                    start_seq: 0,
                }],
            };
            create_journal_file(&dir.join(segment_name(1)), FileKind::Segment, 1, 0)?;
            fsync_dir(dir)?;
            m.store(dir)?;
            m
        }
    };
    // Files the manifest does not name are leftovers of an interrupted rotation or rewrite.
    let named: Vec<String> = manifest
        .base
        .iter()
        .map(|(n, _)| base_name(*n))
        .chain(manifest.segments.iter().map(|s| segment_name(s.number)))
        .collect();
    let mut removed = false;
    for name in journal_files(dir)? {
        if !named.contains(&name) {
            tracing::info!(file = %dir.join(&name).display(), "removing journal file not named in the manifest");
            fs::remove_file(dir.join(&name)).map_err(|e| {
                Error::io(format!("cannot remove {}", dir.join(&name).display()), e)
            })?;
            removed = true;
        }
    }
    let _ = fs::remove_file(dir.join("MANIFEST.tmp"));
    if removed {
        fsync_dir(dir)?;
    }
    for name in &named {
        let path = dir.join(name);
        if !path.exists() {
            return Err(Error::Corrupt {
                file: path,
                offset: 0,
                reason: "the manifest names this file but it is missing".into(),
            });
        }
        let h = read_header(&path)?;
        let (kind, number) = if let Some(n) = name.strip_suffix(".seg") {
            (FileKind::Segment, n.parse::<u64>().unwrap_or(u64::MAX))
        } else {
            (
                FileKind::Base,
                name.trim_end_matches(".base")
                    .parse::<u64>()
                    .unwrap_or(u64::MAX),
            )
        };
        if h.kind != kind || h.number != number {
            return Err(Error::Corrupt {
                file: path,
                offset: 0,
                reason: format!(
                    "header says {:?} {} but the file name says {:?} {}",
                    h.kind, h.number, kind, number
                ),
            });
        }
    }
    Ok(manifest)
}

/// Names of `*.seg` and `*.base` files in `dir`, sorted.
pub fn journal_files(dir: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in
        fs::read_dir(dir).map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?
    {
        let e = e.map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".seg") || name.ends_with(".base") {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

const CHUNK: usize = 2048;

/// Replays the journal into `store`, rebuilding it when it cannot be caught up.
pub fn replay(dir: &Path, manifest: &Manifest, store: &Store) -> Result<Recovered> {
    let base_seq = manifest.base.map(|(_, s)| s).unwrap_or(0);
    let applied = store.applied_seq()?;
    let mut rebuild = !store.version_ok()? || applied < base_seq;
    if rebuild && applied > 0 {
        tracing::warn!(applied, base_seq, "state store is behind the journal base or of another version; rebuilding it from the journal");
    }
    loop {
        let from = if rebuild {
            store.clear()?;
            load_base(dir, manifest, store)?;
            base_seq
        } else {
            applied
        };
        let (last_seq, replayed) = replay_segments(dir, manifest, store, from)?;
        if !rebuild && applied > last_seq {
            tracing::warn!(applied, last_seq, "state store is ahead of the journal (a power loss under everysec or no); rebuilding it from the journal");
            rebuild = true;
            continue;
        }
        return Ok(Recovered {
            manifest: manifest.clone(),
            last_seq,
            rebuilt: rebuild,
            replayed,
        });
    }
}

fn load_base(dir: &Path, manifest: &Manifest, store: &Store) -> Result<()> {
    let Some((n, seq)) = manifest.base else {
        return store.apply_ops(&[], 0);
    };
    let path = dir.join(base_name(n));
    let mut ops = Vec::with_capacity(CHUNK);
    let mut at = HEADER_LEN as u64;
    let scan = scan_file(&path, Some(0), |_, body| {
        ops.push(decode(&path, at, body)?);
        at += (FRAME_LEN + body.len()) as u64;
        if ops.len() >= CHUNK {
            store.apply_ops(&ops, 0)?;
            ops.clear();
        }
        Ok(())
    })?;
    if scan.end != ScanEnd::Clean {
        let offset = match &scan.end {
            ScanEnd::TornTail { offset, .. } | ScanEnd::Corrupt { offset, .. } => *offset,
            ScanEnd::Clean => 0,
        };
        return Err(Error::Corrupt {
            file: path,
            offset,
            reason: "the base snapshot is damaged".into(),
        });
    }
    store.apply_ops(&ops, seq)
}

/// Decodes the body of the record at byte `offset` of `path`.
fn decode(path: &Path, offset: u64, body: &[u8]) -> Result<Op> {
    Op::decode(body).map_err(|e| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason: format!("a record with a valid checksum does not decode: {e}"),
    })
}

/// Scans every segment; applies records with seq > `from`; cuts a torn tail off the last one.
fn replay_segments(
    dir: &Path,
    manifest: &Manifest,
    store: &Store,
    from: u64,
) -> Result<(u64, u64)> {
    let mut last_seq = manifest.segments.first().map(|s| s.start_seq).unwrap_or(0);
    let mut replayed = 0u64;
    let count = manifest.segments.len();
    for (i, seg) in manifest.segments.iter().enumerate() {
        let path = dir.join(segment_name(seg.number));
        if seg.start_seq != last_seq {
            return Err(Error::Corrupt {
                file: path,
                offset: 0,
                reason: format!(
                    "segment starts after seq {} but the journal before it ends at seq {last_seq}",
                    seg.start_seq
                ),
            });
        }
        let mut ops: Vec<Op> = Vec::new();
        let mut chunk_last = 0;
        let mut at = HEADER_LEN as u64;
        let scan = scan_file(&path, Some(last_seq), |seq, body| {
            let offset = at;
            at += (FRAME_LEN + body.len()) as u64;
            if seq > from {
                ops.push(decode(&path, offset, body)?);
                chunk_last = seq;
                replayed += 1;
                if ops.len() >= CHUNK {
                    store.apply_ops(&ops, seq)?;
                    ops.clear();
                }
            }
            Ok(())
        })?;
        if !ops.is_empty() {
            store.apply_ops(&ops, chunk_last)?;
        }
        if let Some(s) = scan.last_seq {
            last_seq = s;
        }
        match scan.end {
            ScanEnd::Clean => {}
            ScanEnd::TornTail {
                offset,
                dropped,
                reason,
            } if i + 1 == count => {
                tracing::warn!(
                    file = %path.display(),
                    offset,
                    bytes_dropped = dropped,
                    %reason,
                    "journal has a torn tail (an interrupted write); cutting it off"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
                f.set_len(offset)
                    .map_err(|e| Error::io(format!("cannot truncate {}", path.display()), e))?;
                f.sync_all()
                    .map_err(|e| Error::io(format!("cannot fsync {}", path.display()), e))?;
            }
            ScanEnd::TornTail { offset, reason, .. } | ScanEnd::Corrupt { offset, reason, .. } => {
                return Err(Error::Corrupt {
                    file: path,
                    offset,
                    reason,
                });
            }
        }
    }
    Ok((last_seq, replayed))
}
