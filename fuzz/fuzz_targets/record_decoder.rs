//! The record/segment decoder on arbitrary bytes: no panic, nothing read past the input, and
//! every accepted frame or op re-encodes to exactly the bytes it was decoded from.
//!
//! Input: 8 bytes of file number (LE), then the bytes under test. They are fed to
//! `decode_frame` (with the CRC check), to `Op::decode` directly (below the CRC, which a fuzzer
//! rarely forges), and, as a whole segment file, to the streaming reader.
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use durq::journal::format::{decode_frame, encode_record, FileHeader, FileKind, HEADER_LEN};
use durq::journal::reader::{scan_file, ScanEnd};
use durq::record::Op;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| std::env::temp_dir().join(format!("durq-fuzz-{}.seg", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let number = u64::from_le_bytes(data[..8].try_into().unwrap()) % 4;
    let rest = &data[8..];

    // 1. One frame, CRC checked.
    if let Ok(f) = decode_frame(rest, number) {
        assert!(f.size <= rest.len() && f.size == 16 + f.body.len());
        let mut again = Vec::new();
        encode_record(&mut again, number, f.seq, f.body);
        assert_eq!(again, &rest[..f.size]);
    }

    // 2. A record body, below the CRC.
    if let Ok(op) = Op::decode(rest) {
        assert_eq!(
            op.encode().unwrap(),
            rest,
            "accepted op does not re-encode to its bytes"
        );
    }

    // 3. The streaming reader over a whole segment: a valid header, then the bytes.
    let mut file = FileHeader {
        kind: FileKind::Segment,
        number,
        seq: 0,
    }
    .encode()
    .to_vec();
    file.extend_from_slice(rest);
    let path = scratch();
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    if f.write_all(&file).is_err() {
        return;
    }
    drop(f);
    let mut records = 0u64;
    let mut rebuilt = file[..HEADER_LEN].to_vec();
    if let Ok(scan) = scan_file(path, None, |seq, body| {
        records += 1;
        encode_record(&mut rebuilt, number, seq, body);
        Ok(())
    }) {
        assert_eq!(scan.records, records);
        assert!(scan.valid_len <= scan.file_len);
        assert_eq!(rebuilt.len() as u64, scan.valid_len);
        assert_eq!(&rebuilt[..], &file[..scan.valid_len as usize]);
        match scan.end {
            ScanEnd::Clean => assert_eq!(scan.valid_len, scan.file_len),
            ScanEnd::TornTail {
                offset, dropped, ..
            } => assert_eq!(offset + dropped, scan.file_len),
            ScanEnd::Corrupt {
                offset, resume_at, ..
            } => assert!(offset < resume_at && resume_at < scan.file_len),
        }
    }
});
