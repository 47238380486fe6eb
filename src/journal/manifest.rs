//! The manifest names the live journal files: an optional base and the segments after it.
//!
//! Text, one item per line, ending with a CRC line over everything before it:
//! ```text
//! durq-manifest 1
//! base 5 1200        <- optional: base number, seq it covers
//! seg 5 1200         <- segment number, seq of the last record before it
//! seg 6 5000
//! crc 9a3c61f2       <- crc32 (hex) of all bytes above this line
//! ```
//! Written as `MANIFEST.tmp`, fsynced, renamed over `MANIFEST`, then the directory is fsynced,
//! so a crash leaves either the old or the new manifest, never a mix.
//! Invariants: segment numbers are consecutive; a base's number equals the first segment's.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::journal::format::FORMAT_VERSION;
use crate::journal::fsutil::fsync_dir;

/// File name of the manifest inside `journal/`.
pub const MANIFEST: &str = "MANIFEST";

/// A segment entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegEntry {
    /// Segment number.
    pub number: u64,
    /// Seq of the last record before the segment.
    pub start_seq: u64,
}

/// The live files of a journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The base: (number, covered seq).
    pub base: Option<(u64, u64)>,
    /// Segments in order.
    pub segments: Vec<SegEntry>,
}

impl Manifest {
    /// Renders the manifest text.
    pub fn encode(&self) -> String {
        let mut s = format!("durq-manifest {FORMAT_VERSION}\n");
        if let Some((n, seq)) = self.base {
            s.push_str(&format!("base {n} {seq}\n"));
        }
        for seg in &self.segments {
            s.push_str(&format!("seg {} {}\n", seg.number, seg.start_seq));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc {crc:08x}\n"));
        s
    }

    /// Parses and checks manifest text. `file` names it in errors.
    pub fn decode(text: &[u8], file: &Path) -> Result<Manifest> {
        let bad = |offset: usize, reason: String| Error::Corrupt {
            file: file.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        let text = std::str::from_utf8(text)
            .map_err(|e| bad(e.valid_up_to(), "manifest is not UTF-8".into()))?;
        let crc_pos = text
            .rfind("crc ")
            .ok_or_else(|| bad(text.len(), "manifest has no crc line".into()))?;
        let (body, crc_line) = text.split_at(crc_pos);
        let want = crc_line
            .trim_end_matches('\n')
            .strip_prefix("crc ")
            .and_then(|h| {
                // One spelling only: 8 lowercase hex digits.
                let canonical =
                    h.len() == 8 && h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                if canonical {
                    u32::from_str_radix(h, 16).ok()
                } else {
                    None
                }
            })
            .ok_or_else(|| bad(crc_pos, "manifest crc line is malformed".into()))?;
        if !crc_line.ends_with('\n') || crc_line.matches('\n').count() != 1 {
            return Err(bad(crc_pos, "manifest crc line is malformed".into()));
        }
        if crc32fast::hash(body.as_bytes()) != want {
            return Err(bad(crc_pos, "manifest checksum mismatch".into()));
        }
        let mut m = Manifest::default();
        let mut offset = 0usize;
        for (i, line) in body.split_terminator('\n').enumerate() {
            let fields: Vec<&str> = line.split(' ').collect();
            // Plain decimal: no sign, no leading zeros (one spelling per manifest).
            let num = |s: &str| {
                let plain = !s.is_empty()
                    && s.bytes().all(|c| c.is_ascii_digit())
                    && (s == "0" || !s.starts_with('0'));
                s.parse::<u64>().ok().filter(|_| plain)
            };
            match (i, fields.as_slice()) {
                (0, ["durq-manifest", v]) => {
                    let v: u32 = num(v)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| bad(offset, "bad manifest version".into()))?;
                    if v != FORMAT_VERSION {
                        return Err(Error::UnsupportedVersion {
                            file: file.to_path_buf(),
                            found: v,
                            supported: FORMAT_VERSION,
                        });
                    }
                }
                (0, _) => return Err(bad(0, "not a durq manifest".into())),
                (1, ["base", n, seq]) => {
                    let (n, seq) = num(n)
                        .zip(num(seq))
                        .ok_or_else(|| bad(offset, format!("bad base line `{line}`")))?;
                    m.base = Some((n, seq));
                }
                (_, ["seg", n, seq]) => {
                    let (number, start_seq) = num(n)
                        .zip(num(seq))
                        .ok_or_else(|| bad(offset, format!("bad segment line `{line}`")))?;
                    if let Some(prev) = m.segments.last() {
                        if number != prev.number + 1 || start_seq < prev.start_seq {
                            return Err(bad(
                                offset,
                                format!("segment {number} does not follow segment {}", prev.number),
                            ));
                        }
                    } else if let Some((b, bseq)) = m.base {
                        if number != b || start_seq != bseq {
                            return Err(bad(
                                offset,
                                format!("segment {number} does not follow base {b}"),
                            ));
                        }
                    }
                    m.segments.push(SegEntry { number, start_seq });
                }
                _ => return Err(bad(offset, format!("unexpected manifest line `{line}`"))),
            }
            offset += line.len() + 1;
        }
        if m.segments.is_empty() {
            return Err(bad(offset, "manifest names no segment".into()));
        }
        Ok(m)
    }

    /// Writes the manifest atomically into `dir` (temp, fsync, rename, fsync dir).
    pub fn store(&self, dir: &Path) -> Result<()> {
        self.store_with(dir, &|_| {})
    }

    /// [`Manifest::store`], calling `step` after the temp file is synced (`manifest:tmp-written`)
    /// and after the rename (`manifest:renamed`), so crash tests can kill at each point.
    pub fn store_with(&self, dir: &Path, step: &dyn Fn(&str)) -> Result<()> {
        let tmp = dir.join("MANIFEST.tmp");
        let path = dir.join(MANIFEST);
        let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
        let mut f = fs::File::create(&tmp).map_err(|e| io("cannot create", e))?;
        f.write_all(self.encode().as_bytes())
            .map_err(|e| io("cannot write", e))?;
        f.sync_all().map_err(|e| io("cannot fsync", e))?;
        drop(f);
        step("manifest:tmp-written");
        fs::rename(&tmp, &path).map_err(|e| io("cannot rename", e))?;
        step("manifest:renamed");
        fsync_dir(dir)
    }

    /// Reads `dir/MANIFEST`, `None` if absent.
    pub fn load(dir: &Path) -> Result<Option<Manifest>> {
        let path = dir.join(MANIFEST);
        match fs::read(&path) {
            Ok(b) => Manifest::decode(&b, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checks() {
        let m = Manifest {
            base: Some((4, 100)),
            segments: vec![
                SegEntry {
                    number: 4,
                    start_seq: 100,
                },
                SegEntry {
                    number: 5,
                    start_seq: 180,
                },
            ],
        };
        let text = m.encode();
        assert_eq!(
            Manifest::decode(text.as_bytes(), Path::new("M")).unwrap(),
            m
        );
        let flipped = text.replace("seg 5", "seg 6");
        assert!(Manifest::decode(flipped.as_bytes(), Path::new("M")).is_err());
        let gap = Manifest {
            base: None,
            segments: vec![
                SegEntry {
                    number: 1,
                    start_seq: 0,
                },
                SegEntry {
                    number: 3,
                    start_seq: 9,
                },
            ],
        };
        assert!(Manifest::decode(gap.encode().as_bytes(), Path::new("M")).is_err());
    }
}
