//! Opening a journal after a clean stop or a crash, and bringing the state store up to date.
//!
//! Opening runs in three phases, and only the last two write anything:
//! 1. [`verify`] reads everything and changes nothing: the manifest, the header of every file
//!    it names, then every record of the base and of every segment (frame, checksum, seq
//!    order, and the body decodes). Damage anywhere — a flipped byte before the tail, a missing
//!    or overlapping segment, a wrong magic, a newer format version, a record whose checksum
//!    holds but whose body does not decode — refuses to open with an error naming file and
//!    offset, **before** any file is created, deleted or truncated and before `state/` is
//!    opened. So a refused open leaves the data directory byte-identical (lock file aside).
//! 2. [`settle`] makes the journal ready: it removes files the manifest does not name (left by
//!    a crash mid-rotation or mid-rewrite), cuts a torn tail off the last segment with a warning
//!    naming file, offset and bytes dropped (the one change a damaged journal gets), or, for a
//!    new directory, writes the first segment and then the manifest.
//! 3. [`replay`] opens nothing itself: given the state store, it decides whether the store can
//!    be caught up (its `applied_seq` lies between the base's seq and the journal's end) or must
//!    be rebuilt from base + segments, and replays, saying why when it rebuilds.
//!
//! First open: a directory with no manifest is new if its journal files hold no record (a crash
//! during a first open left a segment header or a temporary manifest, nothing more); those files
//! are removed and the journal starts afresh. Journal files that hold records without a manifest
//! are damage: opening refuses and `durq check --repair` rebuilds the manifest from them. The
//! first open writes, in order: `journal/` (then fsyncs DIR), `00000001.seg` with its header
//! (fsynced), fsyncs `journal/`, then the manifest (temp, fsync, rename, fsync `journal/`).
//! A kill after any of those steps leaves a directory that opens as new.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::journal::faults::Faults;
use crate::journal::format::{base_name, segment_name, FileKind, FRAME_LEN, HEADER_LEN};
use crate::journal::fsutil::{create_dir_durable, fsync_dir};
use crate::journal::manifest::{Manifest, SegEntry, MANIFEST, MANIFEST_TMP};
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
    /// Why the state store was rebuilt, when it was.
    pub rebuild_reason: Option<String>,
}

/// A torn tail found by [`verify`], cut by [`settle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment.
    pub path: PathBuf,
    /// Offset of the first bad byte (the file's new length).
    pub offset: u64,
    /// Bytes cut off.
    pub dropped: u64,
    /// What was wrong there.
    pub reason: String,
}

/// The outcome of [`verify`]: everything an open needs, found without changing anything.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The manifest; `None` for a new directory.
    pub manifest: Option<Manifest>,
    /// Seq of the last intact record.
    pub last_seq: u64,
    /// Intact records in the journal (base included).
    pub records: u64,
    /// A torn tail of the last segment, to cut off.
    pub torn: Option<TornTail>,
    /// Files to remove: journal files the manifest does not name, a temporary manifest, and,
    /// in a new directory, the record-less leftovers of an interrupted first open.
    pub stray: Vec<PathBuf>,
}

/// Verifies and settles the journal in `dir`: [`verify`], then [`settle`].
pub fn prepare(dir: &Path) -> Result<Manifest> {
    let v = verify(dir)?;
    settle(dir, &v, None)
}

/// Reads the whole journal in `dir` and checks it, changing nothing (see the module docs).
pub fn verify(dir: &Path) -> Result<Verified> {
    let mut v = Verified {
        manifest: None,
        last_seq: 0,
        records: 0,
        torn: None,
        stray: Vec::new(),
    };
    if !dir.exists() {
        return Ok(v);
    }
    if dir.join(MANIFEST_TMP).exists() {
        v.stray.push(dir.join(MANIFEST_TMP));
    }
    let Some(manifest) = Manifest::load(dir)? else {
        // No manifest: new, or a first open that was interrupted — unless records exist.
        let files = journal_files(dir)?;
        let full: Vec<&String> = files
            .iter()
            .filter_map(|name| match holds_records(&dir.join(name)) {
                Ok(false) => None,
                Ok(true) => Some(Ok(name)),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_>>()?;
        if !full.is_empty() {
            return Err(Error::Corrupt {
                file: dir.join(MANIFEST),
                offset: 0,
                reason: format!(
                    "the manifest is missing but {} journal file(s) hold records ({}); \
                     run `durq check --repair` to rebuild it from them",
                    full.len(),
                    full.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        v.stray.extend(files.iter().map(|n| dir.join(n)));
        return Ok(v);
    };
    let named = named_files(&manifest);
    for name in journal_files(dir)? {
        if !named.contains(&name) {
            v.stray.push(dir.join(name));
        }
    }
    for name in &named {
        check_header(&dir.join(name), name)?;
    }
    if let Some((n, _)) = manifest.base {
        let path = dir.join(base_name(n));
        let mut at = HEADER_LEN as u64;
        let scan = scan_file(&path, Some(0), |_, body| {
            decode(&path, at, body)?;
            at += (FRAME_LEN + body.len()) as u64;
            Ok(())
        })?;
        if let Some((offset, reason)) = damage(&scan.end) {
            return Err(Error::Corrupt {
                file: path,
                offset,
                reason: format!("the base snapshot is damaged: {reason}"),
            });
        }
        v.records += scan.records;
    }
    let mut last_seq = manifest.segments.first().map(|s| s.start_seq).unwrap_or(0);
    let count = manifest.segments.len();
    for (i, seg) in manifest.segments.iter().enumerate() {
        let path = dir.join(segment_name(seg.number));
        check_start(&path, seg, last_seq)?;
        let mut at = HEADER_LEN as u64;
        let scan = scan_file(&path, Some(last_seq), |_, body| {
            decode(&path, at, body)?;
            at += (FRAME_LEN + body.len()) as u64;
            Ok(())
        })?;
        v.records += scan.records;
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
                v.torn = Some(TornTail {
                    path,
                    offset,
                    dropped,
                    reason,
                });
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
    v.last_seq = last_seq;
    v.manifest = Some(manifest);
    Ok(v)
}

/// Applies what [`verify`] found: removes stray files, cuts the torn tail, or starts a new
/// journal. The only step of an open that changes `journal/`.
pub fn settle(dir: &Path, v: &Verified, faults: Option<&dyn Faults>) -> Result<Manifest> {
    let step = |name: &str| {
        if let Some(f) = faults {
            f.on_step(name);
        }
    };
    if create_dir_durable(dir)? {
        step("open:journal-dir-created");
    }
    crate::perms::private_dir(dir)?;
    for path in &v.stray {
        tracing::info!(file = %path.display(), "removing journal file not named in the manifest (left by an interrupted rotation, rewrite or first open)");
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
    }
    if !v.stray.is_empty() {
        fsync_dir(dir)?;
    }
    if let Some(t) = &v.torn {
        tracing::warn!(
            file = %t.path.display(),
            offset = t.offset,
            bytes_dropped = t.dropped,
            reason = %t.reason,
            "journal has a torn tail (an interrupted write); cutting it off"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(&t.path)
            .map_err(|e| Error::io(format!("cannot open {}", t.path.display()), e))?;
        f.set_len(t.offset)
            .map_err(|e| Error::io(format!("cannot truncate {}", t.path.display()), e))?;
        f.sync_all()
            .map_err(|e| Error::io(format!("cannot fsync {}", t.path.display()), e))?;
    }
    if let Some(m) = &v.manifest {
        return Ok(m.clone());
    }
    // A new journal: the first segment, then the manifest naming it.
    let m = Manifest {
        base: None,
        segments: vec![SegEntry {
            number: 1,
            start_seq: 0,
        }],
    };
    create_journal_file(&dir.join(segment_name(1)), FileKind::Segment, 1, 0)?;
    step("open:segment-created");
    fsync_dir(dir)?;
    step("open:segment-synced");
    m.store_with(dir, faults)?;
    step("open:manifest-written");
    Ok(m)
}

/// Names of the files `manifest` names.
fn named_files(manifest: &Manifest) -> Vec<String> {
    manifest
        .base
        .iter()
        .map(|(n, _)| base_name(*n))
        .chain(manifest.segments.iter().map(|s| segment_name(s.number)))
        .collect()
}

/// Checks that a named file exists and that its header matches its name.
fn check_header(path: &Path, name: &str) -> Result<()> {
    if !path.exists() {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: "the manifest names this file but it is missing".into(),
        });
    }
    let h = read_header(path)?;
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
            file: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "header says {:?} {} but the file name says {:?} {}",
                h.kind, h.number, kind, number
            ),
        });
    }
    Ok(())
}

/// Checks that segment `seg` starts where the journal before it ends.
fn check_start(path: &Path, seg: &SegEntry, last_seq: u64) -> Result<()> {
    if seg.start_seq != last_seq {
        return Err(Error::Corrupt {
            file: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "segment starts after seq {} but the journal before it ends at seq {last_seq}",
                seg.start_seq
            ),
        });
    }
    Ok(())
}

/// Where and why a scan did not end cleanly.
fn damage(end: &ScanEnd) -> Option<(u64, String)> {
    match end {
        ScanEnd::Clean => None,
        ScanEnd::TornTail { offset, reason, .. } | ScanEnd::Corrupt { offset, reason, .. } => {
            Some((*offset, reason.clone()))
        }
    }
}

/// Whether a journal file could hold a record: anything but nothing, a header alone (or part of
/// one), or a header followed by zeros.
pub(crate) fn holds_records(path: &Path) -> Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut f = fs::File::open(path).map_err(io)?;
    if f.metadata().map_err(io)?.len() <= HEADER_LEN as u64 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(HEADER_LEN as u64)).map_err(io)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) if buf[..n].iter().any(|&b| b != 0) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
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

/// Replays the journal into `store`, rebuilding it when it cannot be caught up. The journal
/// must have passed [`verify`] and [`settle`].
pub fn replay(dir: &Path, manifest: &Manifest, store: &Store) -> Result<Recovered> {
    let base_seq = manifest.base.map(|(_, s)| s).unwrap_or(0);
    let applied = store.applied_seq()?;
    let mut reason = if !store.version_ok()? {
        Some("the state store was written by another format version".to_string())
    } else if applied < base_seq {
        Some(format!(
            "the state store is behind the journal's base (applied seq {applied}, the base \
             covers seq {base_seq})"
        ))
    } else {
        None
    };
    loop {
        let rebuild = reason.is_some();
        let (from, base_records) = if rebuild {
            store.clear()?;
            (base_seq, load_base(dir, manifest, store)?)
        } else {
            (applied, 0)
        };
        let (last_seq, replayed) = replay_segments(dir, manifest, store, from)?;
        let replayed = replayed + base_records;
        if !rebuild && applied > last_seq {
            reason = Some(format!(
                "the state store is ahead of the journal (applied seq {applied}, the journal \
                 ends at seq {last_seq}: a power loss under everysec or no)"
            ));
            continue;
        }
        return Ok(Recovered {
            manifest: manifest.clone(),
            last_seq,
            rebuilt: rebuild,
            replayed,
            rebuild_reason: reason,
        });
    }
}

/// Loads the base snapshot into a cleared store; returns its record count.
fn load_base(dir: &Path, manifest: &Manifest, store: &Store) -> Result<u64> {
    let Some((n, seq)) = manifest.base else {
        store.apply_ops(&[], 0)?;
        return Ok(0);
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
    if let Some((offset, reason)) = damage(&scan.end) {
        return Err(Error::Corrupt {
            file: path,
            offset,
            reason: format!("the base snapshot is damaged: {reason}"),
        });
    }
    store.apply_ops(&ops, seq)?;
    Ok(scan.records)
}

/// Decodes the body of the record at byte `offset` of `path`.
fn decode(path: &Path, offset: u64, body: &[u8]) -> Result<Op> {
    Op::decode(body).map_err(|e| Error::Corrupt {
        file: path.to_path_buf(),
        offset,
        reason: format!("a record with a valid checksum does not decode: {e}"),
    })
}

/// Scans every segment and applies records with seq > `from`. [`verify`] has read them all and
/// [`settle`] has cut any torn tail, so any damage now means the files changed under us.
fn replay_segments(
    dir: &Path,
    manifest: &Manifest,
    store: &Store,
    from: u64,
) -> Result<(u64, u64)> {
    let mut last_seq = manifest.segments.first().map(|s| s.start_seq).unwrap_or(0);
    let mut replayed = 0u64;
    for seg in &manifest.segments {
        let path = dir.join(segment_name(seg.number));
        check_start(&path, seg, last_seq)?;
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
        if let Some((offset, reason)) = damage(&scan.end) {
            return Err(Error::Corrupt {
                file: path,
                offset,
                reason,
            });
        }
    }
    Ok((last_seq, replayed))
}
