//! Rebuilding a missing or damaged manifest from the journal files' own headers.

use std::path::Path;

use super::Report;
use crate::journal::format::FileKind;
use crate::journal::manifest::{Manifest, SegEntry};
use crate::journal::recovery::journal_files;

/// Builds a manifest from the files' headers when the manifest is missing or damaged: the
/// newest base whose header reads, and the run of consecutive segments from its number on.
pub(super) fn rebuild_manifest(jdir: &Path, report: &mut Report) -> Option<Manifest> {
    let mut bases = Vec::new();
    let mut segs = Vec::new();
    for name in journal_files(jdir).ok()? {
        let path = jdir.join(&name);
        let Ok(h) = crate::journal::reader::read_header(&path) else {
            report.notes.push(format!(
                "{name}: header unreadable; left out of the rebuilt manifest"
            ));
            continue;
        };
        match h.kind {
            FileKind::Base => bases.push((h.number, h.seq)),
            FileKind::Segment => segs.push(SegEntry {
                number: h.number,
                start_seq: h.seq,
            }),
        }
    }
    segs.sort_by_key(|s| s.number);
    bases.sort();
    // A base is usable only if the segment it starts with exists.
    let base = bases
        .iter()
        .rev()
        .find(|(n, seq)| segs.iter().any(|s| s.number == *n && s.start_seq == *seq))
        .copied();
    let first = base.map(|(n, _)| n).or(segs.first().map(|s| s.number))?;
    let mut chain: Vec<SegEntry> = Vec::new();
    for s in segs.into_iter().filter(|s| s.number >= first) {
        match chain.last() {
            Some(p) if s.number != p.number + 1 || s.start_seq < p.start_seq => break,
            _ => chain.push(s),
        }
    }
    if chain.is_empty() {
        return None;
    }
    report.notes.push(format!(
        "manifest rebuilt from file headers: {}segments {}..={}",
        base.map(|(n, s)| format!("base {n} (seq {s}), "))
            .unwrap_or_default(),
        chain[0].number,
        chain[chain.len() - 1].number
    ));
    Some(Manifest {
        base,
        segments: chain,
    })
}
