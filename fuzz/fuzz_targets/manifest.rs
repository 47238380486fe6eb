//! The manifest parser on arbitrary bytes: no panic, and every accepted manifest re-encodes to
//! exactly its input (one spelling per manifest).
#![no_main]

use std::path::Path;

use durq::journal::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data, Path::new("MANIFEST")) {
        assert!(!m.segments.is_empty());
        assert_eq!(
            m.encode().as_bytes(),
            data,
            "accepted manifest does not re-encode to its bytes"
        );
    }
});
