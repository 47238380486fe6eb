//! The writing half of `durq check --repair`: rewrite damaged files into fresh ones, keep the
//! originals as `*.damaged`, replace the manifest atomically, drop the state store.
//!
//! Each rewritten file is built as `NAME.repair`, fsynced, the original hard-linked to
//! `NAME.damaged`, then `NAME.repair` renamed over `NAME` and the directory fsynced: at every
//! instant `NAME` is either the whole original or the whole rewrite.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::scan::{salvage, Analysis, FileState};
use super::RepairSummary;
use crate::error::{Error, Result};
use crate::journal::format::{encode_record, FileHeader, FileKind, FORMAT_VERSION};
use crate::journal::fsutil::fsync_dir;
use crate::local::STATE_DIR;
use crate::record::Op;

/// The no-op record written in place of a seq that could not be saved.
pub(crate) fn filler() -> Result<Vec<u8>> {
    Op::DedupDrop {
        entries: Vec::new(),
    }
    .encode()
}

/// Repairs what `a` found. The caller holds the directory lock.
pub(super) fn run(data_dir: &Path, a: &Analysis) -> Result<RepairSummary> {
    if let Some((file, found)) = &a.version_blocked {
        return Err(Error::UnsupportedVersion {
            file: file.clone(),
            found: *found,
            supported: FORMAT_VERSION,
        });
    }
    let mut s = RepairSummary::default();
    let Some(manifest) = &a.manifest else {
        s.actions.push(
            "nothing to rebuild from: no readable manifest and no usable journal files".into(),
        );
        return Ok(s);
    };
    let mut changed = false;
    for f in a.files.iter().filter(|f| f.needs_rewrite) {
        rewrite(f, &mut s)?;
        changed = true;
    }
    if changed {
        fsync_dir(&a.journal_dir)?;
    }
    if a.manifest_bad || changed {
        let mpath = a.journal_dir.join(crate::journal::manifest::MANIFEST);
        if a.manifest_bad && mpath.exists() {
            let aside = aside_name(&mpath);
            fs::rename(&mpath, &aside)
                .map_err(|e| Error::io(format!("cannot rename {}", mpath.display()), e))?;
            s.actions
                .push(format!("kept the damaged manifest as {}", aside.display()));
        }
        manifest.store(&a.journal_dir)?;
        s.actions
            .push(format!("wrote a new manifest {}", mpath.display()));
        changed = true;
    }
    if changed {
        let state = data_dir.join(STATE_DIR);
        if state.exists() {
            fs::remove_dir_all(&state)
                .map_err(|e| Error::io(format!("cannot remove {}", state.display()), e))?;
            fsync_dir(data_dir)?;
            s.actions.push(format!(
                "removed {} (rebuilt from the journal on the next open)",
                state.display()
            ));
        }
    }
    Ok(s)
}

/// `PATH.damaged`, or `PATH.damaged.N` if that exists already.
fn aside_name(path: &Path) -> PathBuf {
    let base = format!("{}.damaged", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

fn rewrite(f: &FileState, s: &mut RepairSummary) -> Result<()> {
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let buf = if f.missing {
        Vec::new()
    } else {
        fs::read(&f.path).map_err(|e| io("cannot read", &f.path, e))?
    };
    let after = if f.kind == FileKind::Segment {
        f.start_seq
    } else {
        0
    };
    let (found, _) = salvage(&buf, f.number, after, f.upper);
    let mut out = FileHeader {
        kind: f.kind,
        number: f.number,
        seq: f.start_seq,
    }
    .encode()
    .to_vec();
    let fill = filler()?;
    let (mut kept, mut lost) = (0u64, 0u64);
    match f.kind {
        FileKind::Segment => {
            let mut expect = f.start_seq;
            for r in &found {
                while expect + 1 < r.seq {
                    expect += 1;
                    encode_record(&mut out, f.number, expect, &fill);
                    lost += 1;
                }
                if r.decodes {
                    encode_record(&mut out, f.number, r.seq, &buf[r.body.clone()]);
                    kept += 1;
                } else {
                    encode_record(&mut out, f.number, r.seq, &fill);
                    lost += 1;
                }
                expect = r.seq;
            }
            if let Some(upper) = f.upper {
                while expect < upper {
                    expect += 1;
                    encode_record(&mut out, f.number, expect, &fill);
                    lost += 1;
                }
            }
        }
        FileKind::Base => {
            let mut seq = 0;
            for r in &found {
                if r.decodes {
                    seq += 1;
                    encode_record(&mut out, f.number, seq, &buf[r.body.clone()]);
                    kept += 1;
                } else {
                    lost += 1;
                }
            }
        }
    }
    let tmp = PathBuf::from(format!("{}.repair", f.path.display()));
    {
        let mut file = crate::perms::create_file(&tmp).map_err(|e| io("cannot create", &tmp, e))?;
        file.write_all(&out)
            .map_err(|e| io("cannot write", &tmp, e))?;
        file.sync_all().map_err(|e| io("cannot fsync", &tmp, e))?;
    }
    if !f.missing {
        let aside = aside_name(&f.path);
        fs::hard_link(&f.path, &aside).map_err(|e| io("cannot keep a copy of", &f.path, e))?;
        s.actions.push(format!(
            "kept the damaged original of {} as {}",
            f.path.display(),
            aside.display()
        ));
    }
    fs::rename(&tmp, &f.path).map_err(|e| io("cannot rename", &tmp, e))?;
    s.actions.push(format!(
        "rewrote {}: {kept} intact record(s) kept, {lost} lost{}",
        f.path.display(),
        if f.kind == FileKind::Segment && lost > 0 {
            " (filled with no-op records)"
        } else {
            ""
        }
    ));
    s.records_salvaged += kept;
    s.records_lost += lost;
    Ok(())
}
