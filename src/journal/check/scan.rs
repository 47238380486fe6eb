//! The read-only half of `durq check`: analyse the manifest and every file it names, and find
//! every intact record around bad spots (used by both the report and the repair).

use std::fs;
use std::path::{Path, PathBuf};

use super::{FileSummary, Problem, ProblemKind, Report};
use crate::error::{Error, Result};
use crate::journal::format::{
    base_name, decode_frame, le_u64, segment_name, FileHeader, FileKind, HEADER_LEN,
};
use crate::journal::manifest::{Manifest, MANIFEST};
use crate::journal::reader::{find_next_record, scan_file, ScanEnd};
use crate::journal::recovery::journal_files;
use crate::local::JOURNAL_DIR;
use crate::record::Op;

/// A named file as analysed.
#[derive(Clone, Debug)]
pub(super) struct FileState {
    pub path: PathBuf,
    pub kind: FileKind,
    pub number: u64,
    /// Segment: seq before its first record. Base: the seq it covers.
    pub start_seq: u64,
    /// Segment: the next segment's start seq (records beyond it are not this file's).
    pub upper: Option<u64>,
    pub missing: bool,
    pub needs_rewrite: bool,
}

/// Everything `repair` needs to know.
#[derive(Clone, Debug)]
pub(super) struct Analysis {
    pub report: Report,
    pub journal_dir: PathBuf,
    /// The manifest in force (loaded, or rebuilt from file headers).
    pub manifest: Option<Manifest>,
    /// True if the manifest on disk must be replaced.
    pub manifest_bad: bool,
    pub files: Vec<FileState>,
    /// A file of a newer format (file, version found): repair must not touch anything.
    pub version_blocked: Option<(PathBuf, u32)>,
}

/// One record found by [`salvage`].
#[derive(Clone, Debug)]
pub(super) struct Found {
    pub offset: usize,
    pub seq: u64,
    pub body: std::ops::Range<usize>,
    pub decodes: bool,
}

/// One bad spot found by [`salvage`].
#[derive(Clone, Debug)]
pub(super) struct Damage {
    pub offset: usize,
    pub len: usize,
    pub reason: String,
    /// Nothing readable follows it in the file.
    pub tail: bool,
}

/// Walks a whole file image: every record whose frame checks out and whose seq lies in
/// `(after, upper]` and rises, and the bad spots between them. Never panics on any input.
pub(super) fn salvage(
    buf: &[u8],
    number: u64,
    after: u64,
    upper: Option<u64>,
) -> (Vec<Found>, Vec<Damage>) {
    let mut found = Vec::new();
    let mut damage = Vec::new();
    let mut pos = HEADER_LEN.min(buf.len());
    let mut last = after;
    while pos < buf.len() {
        let within = |seq: u64, last: u64| seq > last && upper.is_none_or(|u| seq <= u);
        let rest = &buf[pos..];
        let reason = match decode_frame(rest, number) {
            Ok(f) if within(f.seq, last) => {
                let body = pos + 16..pos + f.size;
                let decodes = Op::decode(&buf[body.clone()]).is_ok();
                found.push(Found {
                    offset: pos,
                    seq: f.seq,
                    body,
                    decodes,
                });
                last = f.seq;
                pos += f.size;
                continue;
            }
            Ok(f) => format!("record seq {} does not follow seq {last}", f.seq),
            Err(e) => e.to_string(),
        };
        if rest.iter().all(|&b| b == 0) {
            damage.push(Damage {
                offset: pos,
                len: rest.len(),
                reason: "zero-filled tail".into(),
                tail: true,
            });
            break;
        }
        let mut from = 0usize;
        let next = loop {
            match find_next_record(&rest[from..], number, last) {
                Some(i) => {
                    let j = from + i;
                    if within(le_u64(&rest[j + 8..j + 16]), last) {
                        break Some(j);
                    }
                    from = j;
                }
                None => break None,
            }
        };
        match next {
            Some(j) => {
                damage.push(Damage {
                    offset: pos,
                    len: j,
                    reason,
                    tail: false,
                });
                pos += j;
            }
            None => {
                damage.push(Damage {
                    offset: pos,
                    len: rest.len(),
                    reason,
                    tail: true,
                });
                break;
            }
        }
    }
    (found, damage)
}

fn problem(
    kind: ProblemKind,
    file: &Path,
    offset: Option<u64>,
    bytes: Option<u64>,
    detail: impl Into<String>,
) -> Problem {
    Problem {
        kind,
        file: file.to_path_buf(),
        offset,
        bytes,
        detail: detail.into(),
    }
}

/// Analyses the journal of `data_dir`.
pub(super) fn analyse(data_dir: &Path) -> Result<Analysis> {
    let jdir = data_dir.join(JOURNAL_DIR);
    let mut a = Analysis {
        report: Report {
            data_dir: data_dir.to_path_buf(),
            files: Vec::new(),
            last_seq: 0,
            problems: Vec::new(),
            notes: Vec::new(),
            repair: None,
        },
        journal_dir: jdir.clone(),
        manifest: None,
        manifest_bad: false,
        files: Vec::new(),
        version_blocked: None,
    };
    if !jdir.is_dir() {
        a.report.problems.push(problem(
            ProblemKind::Manifest,
            &jdir,
            None,
            None,
            "no journal directory: this is not a durq data directory (or nothing was ever written)",
        ));
        return Ok(a);
    }
    let mpath = jdir.join(MANIFEST);
    let manifest = match Manifest::load(&jdir) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            if !any_records(&jdir)? {
                a.report.notes.push(
                    "no manifest, and the journal files hold no record: a first open was \
                     interrupted; the next open starts a new journal"
                        .into(),
                );
                return Ok(a);
            }
            a.report.problems.push(problem(
                ProblemKind::Manifest,
                &mpath,
                None,
                None,
                "the manifest is missing but journal files exist",
            ));
            a.manifest_bad = true;
            super::rebuild::rebuild_manifest(&jdir, &mut a.report)
        }
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => {
            a.report.problems.push(problem(
                ProblemKind::UnsupportedVersion,
                &mpath,
                Some(0),
                None,
                format!("format version {found}; this durq reads version {supported}"),
            ));
            a.version_blocked = Some((mpath, found));
            return Ok(a);
        }
        Err(Error::Corrupt { offset, reason, .. }) => {
            a.report.problems.push(problem(
                ProblemKind::Manifest,
                &mpath,
                Some(offset),
                None,
                reason,
            ));
            a.manifest_bad = true;
            super::rebuild::rebuild_manifest(&jdir, &mut a.report)
        }
        Err(e) => return Err(e),
    };
    let Some(m) = manifest else {
        return Ok(a);
    };
    let named: Vec<String> = m
        .base
        .iter()
        .map(|(n, _)| base_name(*n))
        .chain(m.segments.iter().map(|s| segment_name(s.number)))
        .collect();
    for name in journal_files(&jdir)? {
        if !named.contains(&name) {
            a.report.notes.push(format!("{name} is not named in the manifest (left by an interrupted rotation or rewrite); an open removes it"));
        }
    }
    if let Some((n, seq)) = m.base {
        let st = FileState {
            path: jdir.join(base_name(n)),
            kind: FileKind::Base,
            number: n,
            start_seq: seq,
            upper: None,
            missing: false,
            needs_rewrite: false,
        };
        inspect(&mut a, st, 0);
    }
    let mut last = m.segments.first().map(|s| s.start_seq).unwrap_or(0);
    for (i, seg) in m.segments.iter().enumerate() {
        let upper = m.segments.get(i + 1).map(|s| s.start_seq);
        let st = FileState {
            path: jdir.join(segment_name(seg.number)),
            kind: FileKind::Segment,
            number: seg.number,
            start_seq: seg.start_seq,
            upper,
            missing: false,
            needs_rewrite: false,
        };
        let path = st.path.clone();
        let end = inspect(&mut a, st, seg.start_seq);
        let missing = a.files.last().is_some_and(|f| f.missing);
        if let Some(next) = upper {
            if end < next && !missing {
                a.report.problems.push(problem(
                    ProblemKind::SeqGap,
                    &path,
                    None,
                    None,
                    format!("the segment ends at seq {end} but the next one starts after seq {next}: {} record(s) are missing", next - end),
                ));
                if let Some(f) = a.files.last_mut() {
                    f.needs_rewrite = true;
                }
            }
        }
        last = end;
    }
    a.report.last_seq = last;
    a.manifest = Some(m);
    Ok(a)
}

/// Inspects one named file, adds its summary and problems; returns the last intact seq
/// (`after` if it has none).
fn inspect(a: &mut Analysis, mut st: FileState, after: u64) -> u64 {
    let name = st
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_last_segment = st.kind == FileKind::Segment && st.upper.is_none();
    let buf = match fs::read(&st.path) {
        Ok(b) => b,
        Err(e) => {
            let detail = if e.kind() == std::io::ErrorKind::NotFound {
                "the manifest names this file but it is missing".to_string()
            } else {
                format!("cannot read the file: {e}")
            };
            a.report.problems.push(problem(
                ProblemKind::MissingFile,
                &st.path,
                None,
                None,
                detail,
            ));
            a.report.files.push(FileSummary {
                name,
                bytes: 0,
                records: 0,
            });
            st.missing = true;
            st.needs_rewrite = true;
            a.files.push(st);
            return after;
        }
    };
    let mut problems = Vec::new();
    match FileHeader::decode(&buf, &st.path) {
        Ok(h) if h.kind != st.kind || h.number != st.number => problems.push(problem(
            ProblemKind::Corrupt,
            &st.path,
            Some(0),
            None,
            format!(
                "header says {:?} {} but the manifest names {:?} {}",
                h.kind, h.number, st.kind, st.number
            ),
        )),
        Ok(_) => {}
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => {
            a.report.problems.push(problem(
                ProblemKind::UnsupportedVersion,
                &st.path,
                Some(8),
                None,
                format!("format version {found}; this durq reads version {supported}"),
            ));
            a.version_blocked = Some((st.path.clone(), found));
            a.report.files.push(FileSummary {
                name,
                bytes: buf.len() as u64,
                records: 0,
            });
            a.files.push(st);
            return after;
        }
        Err(e) => problems.push(problem(
            ProblemKind::Corrupt,
            &st.path,
            Some(0),
            Some(HEADER_LEN as u64),
            e.to_string(),
        )),
    }
    // Quick path: a streaming scan; fall back to the full salvage walk only for damaged files.
    let mut decodes = true;
    let quick = if problems.is_empty() {
        scan_file(&st.path, Some(after), |_, body| {
            decodes &= Op::decode(body).is_ok();
            Ok(())
        })
        .ok()
    } else {
        None
    };
    let clean_scan = quick
        .as_ref()
        .filter(|s| s.end == ScanEnd::Clean && decodes && within_upper(s.last_seq, st.upper));
    let (records, last) = if let Some(s) = clean_scan {
        (s.records, s.last_seq.unwrap_or(after))
    } else {
        let (found, damage) = salvage(&buf, st.number, after, st.upper);
        for d in &damage {
            let (kind, detail) = if d.tail && is_last_segment {
                (
                    ProblemKind::TornTail,
                    format!("{}; an open cuts it off", d.reason),
                )
            } else if d.tail {
                (
                    ProblemKind::Corrupt,
                    format!("{}; nothing readable follows in this file", d.reason),
                )
            } else {
                (
                    ProblemKind::Corrupt,
                    format!(
                        "{}; intact records resume at offset {}",
                        d.reason,
                        d.offset + d.len
                    ),
                )
            };
            problems.push(problem(
                kind,
                &st.path,
                Some(d.offset as u64),
                Some(d.len as u64),
                detail,
            ));
        }
        for f in found.iter().filter(|f| !f.decodes) {
            problems.push(problem(
                ProblemKind::Undecodable,
                &st.path,
                Some(f.offset as u64),
                Some((f.body.end - f.offset) as u64),
                format!(
                    "record seq {} has a valid checksum but its body does not decode",
                    f.seq
                ),
            ));
        }
        (
            found.len() as u64,
            found.last().map(|f| f.seq).unwrap_or(after),
        )
    };
    st.needs_rewrite = !problems.is_empty();
    a.report.problems.extend(problems);
    a.report.files.push(FileSummary {
        name,
        bytes: buf.len() as u64,
        records,
    });
    a.files.push(st);
    last
}

fn within_upper(last: Option<u64>, upper: Option<u64>) -> bool {
    match (last, upper) {
        (Some(l), Some(u)) => l <= u,
        _ => true,
    }
}

/// Whether any journal file in `jdir` holds a record (see `recovery::holds_records`).
fn any_records(jdir: &Path) -> Result<bool> {
    for name in journal_files(jdir)? {
        if crate::journal::recovery::holds_records(&jdir.join(name))? {
            return Ok(true);
        }
    }
    Ok(false)
}
