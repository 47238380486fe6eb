//! The batch body `{"jobs": [spec…]}`, bounded while it is read and while it is parsed.
//!
//! Invariants:
//! - [`Precount`] scans the body bytes as they arrive (strings and escapes aware, no
//!   allocation) and counts the elements of the arrays one level inside the top object; the
//!   request is refused as soon as the count passes [`MAX_BATCH`], before the rest is read.
//! - [`BatchBody`]'s `jobs` are parsed by a `serde` visitor that stops at element
//!   `MAX_BATCH + 1`, so even a body that bypassed the scan never holds more specs.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::wire::JobSpec;

/// Most jobs in one batch request.
pub const MAX_BATCH: usize = 10_000;

/// The message for a batch over the limit.
pub fn too_many() -> String {
    format!("a batch holds at most {MAX_BATCH} jobs; split it into several requests")
}

/// Body of a batch enqueue.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The specs, at most [`MAX_BATCH`].
    #[serde(deserialize_with = "bounded_jobs")]
    pub jobs: Vec<JobSpec>,
}

fn bounded_jobs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<JobSpec>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<JobSpec>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "an array of at most {MAX_BATCH} job specs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(spec) = seq.next_element::<JobSpec>()? {
                if out.len() == MAX_BATCH {
                    return Err(de::Error::custom(too_many()));
                }
                out.push(spec);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

/// Incremental element counter over raw JSON bytes (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct Precount {
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Whether the container at depth 2 is an array.
    array2: bool,
    /// Whether the current depth-2 array has seen a value since its `[` or last `,`.
    pending: bool,
    count: usize,
}

impl Precount {
    /// Feeds the next bytes; `Err` once more than [`MAX_BATCH`] elements were seen.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        for &b in bytes {
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            if b.is_ascii_whitespace() {
                continue;
            }
            if self.depth == 2 && self.array2 && !matches!(b, b',' | b']') && !self.pending {
                self.pending = true;
                self.count += 1;
                if self.count > MAX_BATCH {
                    return Err(too_many());
                }
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth = self.depth.saturating_add(1);
                    if self.depth == 2 {
                        self.array2 = b == b'[';
                        self.pending = false;
                    }
                }
                b'}' | b']' => self.depth = self.depth.saturating_sub(1),
                b',' if self.depth == 2 => self.pending = false,
                _ => {}
            }
        }
        Ok(())
    }

    /// Elements seen so far.
    pub fn count(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str) -> usize {
        let mut p = Precount::default();
        // Byte by byte, to prove chunk boundaries do not matter.
        for b in s.as_bytes() {
            p.feed(std::slice::from_ref(b)).unwrap();
        }
        p.count()
    }

    #[test]
    fn counts_top_level_elements_only() {
        assert_eq!(count(r#"{"jobs":[]}"#), 0);
        assert_eq!(count(r#"{"jobs":[{"payload":1}]}"#), 1);
        assert_eq!(
            count(r#" { "jobs" : [ {"payload":[1,2,3]} , {"payload":"a,]\"[,b"}, 3 ] } "#),
            3
        );
        assert_eq!(count(r#"{"jobs":[{"payload":{"x":[[],[]]}}]}"#), 1);
    }

    #[test]
    fn refuses_early() {
        let mut p = Precount::default();
        p.feed(b"{\"jobs\":[").unwrap();
        let one = b"{\"payload\":0},";
        for _ in 0..MAX_BATCH {
            p.feed(one).unwrap();
        }
        assert!(p.feed(one).is_err());
    }

    #[test]
    fn visitor_stops_at_the_limit() {
        let mut s = String::from(r#"{"jobs":["#);
        for i in 0..=MAX_BATCH {
            if i > 0 {
                s.push(',');
            }
            s.push_str(r#"{"payload":0}"#);
        }
        s.push_str("]}");
        let e = serde_json::from_str::<BatchBody>(&s).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let ok = serde_json::from_str::<BatchBody>(r#"{"jobs":[{"payload":1}]}"#).unwrap();
        assert_eq!(ok.jobs.len(), 1);
    }
}
