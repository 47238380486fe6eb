//! Byte layout of journal files (segments and bases). `docs/format.md` describes the same.
//!
//! ```text
//! file header (40 bytes, little-endian):
//!   magic    [u8; 8]   "DURQSEG\0" (segment) or "DURQBAS\0" (base)
//!   version  u32       FORMAT_VERSION
//!   kind     u32       0 = segment, 1 = base
//!   number   u64       segment number (a base takes the number of the first segment after it)
//!   seq      u64       segment: seq of the last record before this file; base: seq it covers
//!   hcrc     u32       crc32 of the 32 bytes above
//!   reserved u32       0
//! record (16-byte frame header + body):
//!   len      u32       body length, 1..=MAX_RECORD
//!   crc      u32       crc32(number as u64 LE ‖ len LE ‖ seq LE ‖ body)  — salted with the
//!                      file number, so stale bytes of another file never validate
//!   seq      u64       record sequence number; +1 per record across all segments
//!   body     [u8; len] bincode 2 (standard config) of `record::Op`
//! ```
//! A length of 0 (zero-filled tail) or over `MAX_RECORD` ends the readable part of a file.

use crate::error::{Error, Result};
use std::path::Path;

/// Current on-disk format version.
pub const FORMAT_VERSION: u32 = 1;
/// Magic of a segment file.
pub const MAGIC_SEGMENT: &[u8; 8] = b"DURQSEG\0";
/// Magic of a base file.
pub const MAGIC_BASE: &[u8; 8] = b"DURQBAS\0";
/// Length of the file header.
pub const HEADER_LEN: usize = 40;
/// Length of a record's frame header.
pub const FRAME_LEN: usize = 16;
/// Largest record body accepted (anything larger is treated as damage).
pub const MAX_RECORD: u32 = 256 << 20;

/// Kind of journal file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Incremental segment.
    Segment,
    /// Base snapshot.
    Base,
}

/// A decoded file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Segment or base.
    pub kind: FileKind,
    /// File number.
    pub number: u64,
    /// For segments, seq of the last record before the file; for bases, the seq covered.
    pub seq: u64,
}

impl FileHeader {
    /// Encodes the 40-byte header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(match self.kind {
            FileKind::Segment => MAGIC_SEGMENT,
            FileKind::Base => MAGIC_BASE,
        });
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let kind: u32 = match self.kind {
            FileKind::Segment => 0,
            FileKind::Base => 1,
        };
        h[12..16].copy_from_slice(&kind.to_le_bytes());
        h[16..24].copy_from_slice(&self.number.to_le_bytes());
        h[24..32].copy_from_slice(&self.seq.to_le_bytes());
        let crc = crc32fast::hash(&h[..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header; `file` names the file in errors.
    pub fn decode(buf: &[u8], file: &Path) -> Result<FileHeader> {
        let corrupt = |reason: &str| Error::Corrupt {
            file: file.to_path_buf(),
            offset: 0,
            reason: reason.to_string(),
        };
        if buf.len() < HEADER_LEN {
            return Err(corrupt("file is shorter than its 40-byte header"));
        }
        let kind = match &buf[..8] {
            m if m == MAGIC_SEGMENT => FileKind::Segment,
            m if m == MAGIC_BASE => FileKind::Base,
            _ => return Err(corrupt("not a durq journal file (bad magic)")),
        };
        let version = le_u32(&buf[8..12]);
        let crc = le_u32(&buf[32..36]);
        if crc != crc32fast::hash(&buf[..32]) {
            return Err(corrupt("header checksum mismatch"));
        }
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                file: file.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if le_u32(&buf[36..40]) != 0 {
            return Err(corrupt("reserved header bytes are not zero"));
        }
        let kind_field = le_u32(&buf[12..16]);
        let expected = match kind {
            FileKind::Segment => 0,
            FileKind::Base => 1,
        };
        if kind_field != expected {
            return Err(corrupt("header kind does not match its magic"));
        }
        Ok(FileHeader {
            kind,
            number: le_u64(&buf[16..24]),
            seq: le_u64(&buf[24..32]),
        })
    }
}

/// The CRC of one record, salted with the file number.
pub fn record_crc(number: u64, len: u32, seq: u64, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&number.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&seq.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Appends one framed record to `out`.
pub fn encode_record(out: &mut Vec<u8>, number: u64, seq: u64, body: &[u8]) {
    let len = body.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(number, len, seq, body).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(body);
}

/// Why a frame could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends inside the frame (`needed` more bytes were claimed).
    Truncated,
    /// Length field 0: a zero-filled or never-written area.
    ZeroLength,
    /// Length field above `MAX_RECORD`.
    AbsurdLength(u32),
    /// Checksum mismatch.
    BadCrc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => f.write_str("record is cut short"),
            FrameError::ZeroLength => f.write_str("record length is zero"),
            FrameError::AbsurdLength(n) => write!(f, "record length {n} is absurd"),
            FrameError::BadCrc => f.write_str("record checksum mismatch"),
        }
    }
}

/// A frame read from a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Record seq.
    pub seq: u64,
    /// Record body.
    pub body: &'a [u8],
    /// Total bytes taken (header + body).
    pub size: usize,
}

/// Decodes the frame at the start of `buf`. Never allocates; never reads past `buf`.
pub fn decode_frame(buf: &[u8], number: u64) -> std::result::Result<Frame<'_>, FrameError> {
    if buf.len() < FRAME_LEN {
        if buf.iter().all(|&b| b == 0) {
            return Err(FrameError::ZeroLength);
        }
        return Err(FrameError::Truncated);
    }
    let len = le_u32(&buf[0..4]);
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    if len > MAX_RECORD {
        return Err(FrameError::AbsurdLength(len));
    }
    let crc = le_u32(&buf[4..8]);
    let seq = le_u64(&buf[8..16]);
    let end = FRAME_LEN + len as usize;
    if buf.len() < end {
        return Err(FrameError::Truncated);
    }
    let body = &buf[FRAME_LEN..end];
    if record_crc(number, len, seq, body) != crc {
        return Err(FrameError::BadCrc);
    }
    Ok(Frame {
        seq,
        body,
        size: end,
    })
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// File name of segment `n`.
pub fn segment_name(n: u64) -> String {
    format!("{n:08}.seg")
}

/// File name of base `n`.
pub fn base_name(n: u64) -> String {
    format!("{n:08}.base")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_salt() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 42, b"hello");
        let f = decode_frame(&buf, 7).unwrap();
        assert_eq!((f.seq, f.body, f.size), (42, &b"hello"[..], buf.len()));
        assert_eq!(decode_frame(&buf, 8), Err(FrameError::BadCrc));
        assert_eq!(
            decode_frame(&buf[..buf.len() - 1], 7),
            Err(FrameError::Truncated)
        );
        assert_eq!(decode_frame(&[0u8; 40], 7), Err(FrameError::ZeroLength));
        let mut absurd = buf.clone();
        absurd[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&absurd, 7),
            Err(FrameError::AbsurdLength(u32::MAX))
        );
    }

    #[test]
    fn header_round_trip_and_version() {
        let h = FileHeader {
            kind: FileKind::Base,
            number: 3,
            seq: 99,
        };
        let mut b = h.encode();
        assert_eq!(FileHeader::decode(&b, Path::new("x")).unwrap(), h);
        b[8] = 2;
        let crc = crc32fast::hash(&b[..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            FileHeader::decode(&b, Path::new("x")),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
    }
}
