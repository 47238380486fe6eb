//! `durq check [--repair]`: inspect a data directory's journal, and salvage what can be saved.
//!
//! [`check`] is read-only (apart from taking the directory's lock): it reads the manifest and
//! every file it names and reports torn tails, corruption before the tail (file + offset),
//! missing files, gaps in the record sequence, manifest damage, format-version mismatches and
//! records whose checksum holds but whose body does not decode.
//!
//! [`repair`] rewrites every damaged file into a fresh file of the same name and keeps the
//! original beside it as `NAME.damaged`. Invariants of a repair:
//! - every intact record, before **and** after a bad spot, is kept with its own seq;
//! - seqs lost in a bad spot (or in a missing segment) are filled with no-op records
//!   (`Op::DedupDrop` with no entries), so the sequence stays consecutive and the segments that
//!   follow need not change;
//! - a new manifest is written atomically, and `DIR/state` is removed so the state store is
//!   rebuilt from the journal on the next open;
//! - files written by a newer format version are never touched.

mod rebuild;
mod repair;
mod scan;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Result;
use crate::lock::DirLock;

/// What kind of problem a [`Problem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Unreadable bytes at the end of the last segment (an interrupted write). Opening cuts them.
    TornTail,
    /// Damage before the end of the journal. Opening refuses; repair salvages around it.
    Corrupt,
    /// A record whose checksum holds but whose body does not decode.
    Undecodable,
    /// A file the manifest names is missing.
    MissingFile,
    /// Records are missing between two files (e.g. a truncated segment).
    SeqGap,
    /// The manifest is missing, damaged or inconsistent.
    Manifest,
    /// A file was written by a format version this build does not read.
    UnsupportedVersion,
}

/// One problem found in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The file.
    pub file: PathBuf,
    /// Byte offset of the first bad byte, when it has one.
    pub offset: Option<u64>,
    /// Bytes affected (dropped for a torn tail, skipped for corruption), when known.
    pub bytes: Option<u64>,
    /// What was wrong, in words.
    pub detail: String,
}

/// One journal file as checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    /// File name inside `journal/`.
    pub name: String,
    /// Size in bytes (0 if missing).
    pub bytes: u64,
    /// Intact records read.
    pub records: u64,
}

/// What a repair did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RepairSummary {
    /// Each step, in words.
    pub actions: Vec<String>,
    /// Intact records copied into rewritten files.
    pub records_salvaged: u64,
    /// Seqs that could not be saved (filled with no-op records).
    pub records_lost: u64,
    /// Problems a fresh check still finds after the repair (empty when it worked).
    pub remaining: Vec<Problem>,
}

/// The result of [`check`] or [`repair`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Files named by the manifest, in order.
    pub files: Vec<FileSummary>,
    /// Seq of the last intact record.
    pub last_seq: u64,
    /// Problems found (before any repair).
    pub problems: Vec<Problem>,
    /// Harmless findings (e.g. leftover files an open will remove).
    pub notes: Vec<String>,
    /// Set by [`repair`].
    pub repair: Option<RepairSummary>,
}

impl Report {
    /// True if no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// True if the journal is healthy now: clean, or repaired with nothing remaining.
    pub fn is_healthy(&self) -> bool {
        match &self.repair {
            Some(r) => r.remaining.is_empty(),
            None => self.is_clean(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ProblemKind::TornTail => "torn tail",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Undecodable => "undecodable record",
            ProblemKind::MissingFile => "missing file",
            ProblemKind::SeqGap => "sequence gap",
            ProblemKind::Manifest => "manifest",
            ProblemKind::UnsupportedVersion => "unsupported version",
        };
        write!(f, "{kind}: {}", self.file.display())?;
        if let Some(o) = self.offset {
            write!(f, " at offset {o}")?;
        }
        if let Some(b) = self.bytes {
            write!(f, " ({b} bytes)")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data directory {}", self.data_dir.display())?;
        for file in &self.files {
            writeln!(
                f,
                "  {:<16} {:>12} bytes {:>10} records",
                file.name, file.bytes, file.records
            )?;
        }
        writeln!(f, "  last seq {}", self.last_seq)?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if self.problems.is_empty() {
            writeln!(f, "ok: no problems found")?;
        } else {
            writeln!(f, "{} problem(s):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  {p}")?;
            }
        }
        if let Some(r) = &self.repair {
            for a in &r.actions {
                writeln!(f, "repair: {a}")?;
            }
            writeln!(
                f,
                "repair: {} record(s) salvaged into rewritten files, {} lost",
                r.records_salvaged, r.records_lost
            )?;
            if r.remaining.is_empty() {
                if !self.problems.is_empty() {
                    writeln!(
                        f,
                        "repair: done; the state store is rebuilt on the next open"
                    )?;
                }
            } else {
                writeln!(f, "repair: {} problem(s) remain:", r.remaining.len())?;
                for p in &r.remaining {
                    writeln!(f, "  {p}")?;
                }
            }
        }
        Ok(())
    }
}

/// Checks the journal of `data_dir` without changing it. Refuses with
/// [`crate::Error::Locked`] while another process (or another handle) holds the directory.
pub fn check(data_dir: &Path) -> Result<Report> {
    let _lock = DirLock::acquire(data_dir)?;
    Ok(scan::analyse(data_dir)?.report)
}

/// Checks the journal of `data_dir` and repairs what it can (see the module docs). Refuses with
/// [`crate::Error::Locked`] while the directory is held, and with
/// [`crate::Error::UnsupportedVersion`] if a file is of a newer format.
pub fn repair(data_dir: &Path) -> Result<Report> {
    let _lock = DirLock::acquire(data_dir)?;
    let analysis = scan::analyse(data_dir)?;
    let mut report = analysis.report.clone();
    let summary = if report.is_clean() {
        RepairSummary::default()
    } else {
        let mut s = repair::run(data_dir, &analysis)?;
        s.remaining = scan::analyse(data_dir)?.report.problems;
        s
    };
    report.repair = Some(summary);
    Ok(report)
}
