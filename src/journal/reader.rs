//! Reading journal files: stream every intact record, and classify where reading stopped.
//!
//! A read stops at the first frame that does not decode. What follows decides what it was:
//! - nothing but zeros, or nothing that decodes as a later record: a **torn tail** (an
//!   interrupted write); recovery cuts it off in the last segment.
//! - zeros to a 512-byte sector boundary (a whole sector, or from the bad frame to its
//!   sector's end) before the next valid record: also a **torn tail**. It is the mark of a power cut during write-back of an unsynced write (later
//!   sectors reached the disk, this one did not), which only unsynced bytes can show; a flipped
//!   bit or a garbled sector in durable data never reads as a zero sector.
//! - a valid record further on: **corruption** in the middle; opening refuses, `check --repair`
//!   salvages the records on both sides.
//!
//! Records must carry consecutive seqs; a jump is corruption too.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::journal::format::{
    decode_frame, le_u32, le_u64, FileHeader, FrameError, FRAME_LEN, HEADER_LEN, MAX_RECORD,
};

/// How a scan ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// The file ended after a whole record (or is zero-filled after it).
    Clean,
    /// Unreadable bytes at the end with nothing valid after them.
    TornTail {
        /// Offset of the first bad byte.
        offset: u64,
        /// Bytes from there to the end of the file.
        dropped: u64,
        /// What was wrong there.
        reason: String,
    },
    /// Unreadable bytes followed by valid records.
    Corrupt {
        /// Offset of the first bad byte.
        offset: u64,
        /// What was wrong there.
        reason: String,
        /// Offset of the next valid record.
        resume_at: u64,
    },
}

/// Summary of one scanned file.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: FileHeader,
    /// Where reading stopped and why.
    pub end: ScanEnd,
    /// Bytes up to the end of the last good record.
    pub valid_len: u64,
    /// File length.
    pub file_len: u64,
    /// Seq of the last good record, if any.
    pub last_seq: Option<u64>,
    /// Number of good records.
    pub records: u64,
}

/// Reads the header of `path`.
pub fn read_header(path: &Path) -> Result<FileHeader> {
    let mut f =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let mut h = [0u8; HEADER_LEN];
    let n = read_full(&mut f, &mut h)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    FileHeader::decode(&h[..n], path)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Streams every good record of `path` to `each(seq, body)`, in order. `prev_seq` is the seq the
/// first record must follow (`None`: take the header's). Memory use is one record at a time.
pub fn scan_file(
    path: &Path,
    prev_seq: Option<u64>,
    mut each: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let io = |e| Error::io(format!("cannot read {}", path.display()), e);
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut h = [0u8; HEADER_LEN];
    let n = read_full(&mut r, &mut h).map_err(io)?;
    let header = FileHeader::decode(&h[..n], path)?;
    let mut expect = prev_seq.unwrap_or(header.seq);
    let mut pos = HEADER_LEN as u64;
    let mut records = 0u64;
    let mut last_seq = None;
    let mut body = Vec::new();
    let end = loop {
        let mut fh = [0u8; FRAME_LEN];
        let got = read_full(&mut r, &mut fh).map_err(io)?;
        if got == 0 {
            break ScanEnd::Clean;
        }
        let len = le_u32(&fh[..4]);
        let bad: Option<String> = if got < FRAME_LEN {
            Some(FrameError::Truncated.to_string())
        } else if len == 0 {
            Some(FrameError::ZeroLength.to_string())
        } else if len > MAX_RECORD || pos + FRAME_LEN as u64 + len as u64 > file_len {
            Some(if len > MAX_RECORD {
                FrameError::AbsurdLength(len).to_string()
            } else {
                FrameError::Truncated.to_string()
            })
        } else {
            body.resize(len as usize, 0);
            let got_body = read_full(&mut r, &mut body).map_err(io)?;
            let mut frame = Vec::with_capacity(FRAME_LEN + body.len());
            frame.extend_from_slice(&fh);
            frame.extend_from_slice(&body[..got_body]);
            match decode_frame(&frame, header.number) {
                Ok(f) if f.seq == expect + 1 => None,
                Ok(f) => Some(format!("record seq {} does not follow seq {expect}", f.seq)),
                Err(e) => Some(e.to_string()),
            }
        };
        if let Some(reason) = bad {
            break classify(path, header.number, pos, file_len, expect, reason)?;
        }
        let seq = le_u64(&fh[8..16]);
        each(seq, &body)?;
        expect = seq;
        last_seq = Some(seq);
        records += 1;
        pos += FRAME_LEN as u64 + len as u64;
    };
    Ok(Scan {
        path: path.to_path_buf(),
        header,
        end,
        valid_len: pos,
        file_len,
        last_seq,
        records,
    })
}

/// Decides whether the bytes from `offset` on are a torn tail or corruption.
fn classify(
    path: &Path,
    number: u64,
    offset: u64,
    file_len: u64,
    last_seq: u64,
    reason: String,
) -> Result<ScanEnd> {
    let rest = read_from(path, offset)?;
    if rest.iter().all(|&b| b == 0) {
        return Ok(ScanEnd::TornTail {
            offset,
            dropped: file_len - offset,
            reason: "zero-filled tail".into(),
        });
    }
    match find_next_record(&rest, number, last_seq) {
        // Zeros up to a sector boundary before the next valid record are a write the disk never
        // got: the page cache wrote back later sectors of an unsynced write first, and a power
        // cut lost this one. Only unsynced bytes can be lost that way (a flipped bit or a
        // garbled sector never reads as zeros to a sector's end), so it is a torn tail like any
        // other: what follows it was never durable and is cut off with the tail.
        Some(i) if shows_lost_write(&rest[..i], offset) => Ok(ScanEnd::TornTail {
            offset,
            dropped: file_len - offset,
            reason: format!(
                "{reason}; zeros to a 512-byte sector boundary show an unsynced write that \
                 never reached the disk (the {} bytes after it were not durable either)",
                rest.len() - i
            ),
        }),
        Some(i) => Ok(ScanEnd::Corrupt {
            offset,
            reason,
            resume_at: offset + i as u64,
        }),
        None => Ok(ScanEnd::TornTail {
            offset,
            dropped: file_len - offset,
            reason,
        }),
    }
}

/// Sector size of the zero runs that mark a lost write (the smallest unit a disk writes).
const SECTOR: u64 = 512;

/// Whether `buf` (the file's bytes from `offset`, a bad frame, up to the next valid record) shows
/// a write that never reached the disk. Appends make the durable part of a file a prefix, so a
/// sector the disk lost reads as zeros from the bad frame (or the sector's start) to the
/// sector's end: either a whole aligned sector of zeros, or zeros from `offset` to the end of
/// its sector covering at least a frame's length and checksum (8 bytes; a valid frame never
/// has both zero, and no single damaged bit makes them so).
fn shows_lost_write(buf: &[u8], offset: u64) -> bool {
    let to_boundary = (offset.div_ceil(SECTOR) * SECTOR - offset) as usize;
    let head = &buf[..to_boundary.min(buf.len())];
    if head.len() >= 8 && head.iter().all(|&b| b == 0) {
        return true;
    }
    buf[to_boundary.min(buf.len())..]
        .chunks_exact(SECTOR as usize)
        .any(|s| s.iter().all(|&b| b == 0))
}

/// Reads a file from `offset` to its end.
pub(crate) fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let io = |e| Error::io(format!("cannot read {}", path.display()), e);
    let mut f = File::open(path).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(io)?;
    Ok(v)
}

/// Finds the first offset (> 0) in `buf` where a valid record with a plausible seq
/// (after `last_seq`) starts.
pub(crate) fn find_next_record(buf: &[u8], number: u64, last_seq: u64) -> Option<usize> {
    let max_seq = last_seq.saturating_add(buf.len() as u64 / (FRAME_LEN as u64 + 1) + 1);
    (1..buf.len().saturating_sub(FRAME_LEN - 1)).find(|&i| {
        let b = &buf[i..];
        let seq = le_u64(&b[8..16]);
        seq > last_seq && seq <= max_seq && decode_frame(b, number).is_ok()
    })
}
