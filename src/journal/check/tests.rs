//! Property tests of the salvage walk: never panics on any bytes, and finds every intact record
//! around any set of damaged bytes.

use super::scan::salvage;
use crate::journal::format::{encode_record, FileHeader, FileKind, HEADER_LEN};

fn segment(number: u64, start: u64, bodies: &[Vec<u8>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut buf = FileHeader {
        kind: FileKind::Segment,
        number,
        seq: start,
    }
    .encode()
    .to_vec();
    let mut spans = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let at = buf.len();
        encode_record(&mut buf, number, start + 1 + i as u64, b);
        spans.push((at, buf.len()));
    }
    (buf, spans)
}

#[test]
fn salvage_never_panics_on_random_bytes() {
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3000 {
        let len = rng.usize(0..300);
        let buf: Vec<u8> = (0..len)
            .map(|_| if rng.bool() { 0 } else { rng.u8(..) })
            .collect();
        let (found, damage) = salvage(&buf, rng.u64(0..3), rng.u64(0..5), None);
        for f in &found {
            assert!(f.body.end <= buf.len());
        }
        for d in &damage {
            assert!(d.offset + d.len <= buf.len());
        }
    }
}

#[test]
fn salvage_keeps_every_record_untouched_by_damage() {
    let mut rng = fastrand::Rng::with_seed(11);
    for round in 0..300 {
        let bodies: Vec<Vec<u8>> = (0..rng.usize(1..30))
            .map(|_| (0..rng.usize(1..60)).map(|_| rng.u8(..)).collect())
            .collect();
        let (mut buf, spans) = segment(5, 100, &bodies);
        let mut hit = vec![false; spans.len()];
        for _ in 0..rng.usize(1..4) {
            let at = rng.usize(HEADER_LEN..buf.len());
            buf[at] ^= 1 << rng.u8(0..8);
            let i = spans
                .iter()
                .position(|(a, b)| (*a..*b).contains(&at))
                .unwrap();
            hit[i] = true;
        }
        let (found, _) = salvage(&buf, 5, 100, None);
        let seqs: Vec<u64> = found.iter().map(|f| f.seq).collect();
        for (i, h) in hit.iter().enumerate() {
            let seq = 101 + i as u64;
            if !h {
                assert!(
                    seqs.contains(&seq),
                    "round {round}: intact record {seq} not salvaged"
                );
            } else {
                assert!(
                    !seqs.contains(&seq),
                    "round {round}: damaged record {seq} salvaged"
                );
            }
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    }
}

#[test]
fn op_decode_bounds_claims_and_keeps_valid_records() {
    use crate::record::Op;
    // A tiny body claiming a 240 MiB queue name is refused (not allocated).
    let mut body = vec![5u8, 0xFC];
    body.extend_from_slice(&0x0F00_0000u32.to_le_bytes());
    body.extend_from_slice(b"abc");
    assert!(Op::decode(&body).is_err());
    // Valid records of every size class still decode, whatever their strings and bytes.
    for n in [0usize, 4000, 4090, 5000, 70_000, 1 << 20, 2_000_000] {
        let op = Op::DedupDrop {
            entries: vec![
                ("q".repeat(n / 2), "k".repeat(n - n / 2)),
                (String::new(), String::new()),
            ],
        };
        let bytes = op.encode().unwrap();
        assert_eq!(Op::decode(&bytes).unwrap(), op, "size {n}");
    }
}
