//! The base-snapshot decoder on arbitrary bytes: header, then records numbered 1, 2, … each
//! holding one op. No panic; every accepted base re-encodes to exactly its input.
#![no_main]

use std::path::Path;

use durq::journal::format::{decode_frame, encode_record, FileHeader, FileKind, HEADER_LEN};
use durq::record::Op;
use libfuzzer_sys::fuzz_target;

/// Decodes a whole base image; `None` unless every byte is accounted for.
fn decode_base(buf: &[u8]) -> Option<(FileHeader, Vec<Op>)> {
    let h = FileHeader::decode(buf, Path::new("x.base")).ok()?;
    if h.kind != FileKind::Base {
        return None;
    }
    let mut pos = HEADER_LEN;
    let mut ops = Vec::new();
    while pos < buf.len() {
        let f = decode_frame(&buf[pos..], h.number).ok()?;
        if f.seq != ops.len() as u64 + 1 {
            return None;
        }
        ops.push(Op::decode(f.body).ok()?);
        pos += f.size;
    }
    Some((h, ops))
}

fuzz_target!(|data: &[u8]| {
    // Fuzz below the CRCs too: the input's tail is also taken as one record body of a base.
    if let Some((h, ops)) = decode_base(data) {
        let mut again = h.encode().to_vec();
        for (i, op) in ops.iter().enumerate() {
            encode_record(&mut again, h.number, i as u64 + 1, &op.encode().unwrap());
        }
        assert_eq!(again, data, "accepted base does not re-encode to its bytes");
    }
    let h = FileHeader {
        kind: FileKind::Base,
        number: 1,
        seq: 0,
    };
    let mut forged = h.encode().to_vec();
    encode_record(&mut forged, 1, 1, data);
    if let Some((_, ops)) = decode_base(&forged) {
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].encode().unwrap(), data);
    }
});
