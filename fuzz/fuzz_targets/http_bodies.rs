//! The HTTP request bodies (enqueue, batch, reserve, fail, ack, dead-letter selection) on
//! arbitrary bytes, through exactly the checks the server runs (`durq::http::body::check_body`):
//! no panic, a batch never yields more than `MAX_BATCH` jobs, and bounded allocation — the
//! peak heap use while checking one body stays within a fixed multiple of its size (plus a
//! constant), measured by a counting global allocator.
//!
//! Input: 1 byte choosing the endpoint, then the body.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use durq::http::batch::MAX_BATCH;
use durq::http::body::{check_body, Endpoint};
use libfuzzer_sys::fuzz_target;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new >= l.size() {
                let now = LIVE.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(l.size() - new, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap allowed per input byte: a JSON value costs at most a few machine words per byte of
/// its text (`[0,0,…]` is 2 bytes per 32-byte `Value`, plus vector growth).
const PER_BYTE: usize = 64;
/// Heap allowed on top (buffers, the error message, the job being built).
const BASE: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let endpoint = match which % 6 {
        0 => Endpoint::Enqueue,
        1 => Endpoint::Batch,
        2 => Endpoint::Reserve,
        3 => Endpoint::Fail,
        4 => Endpoint::Token,
        _ => Endpoint::Select,
    };
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    let out = check_body(endpoint, body);
    let used = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    let bound = BASE + PER_BYTE * body.len();
    assert!(
        used <= bound,
        "{endpoint:?}: {used} bytes of heap for a {}-byte body (bound {bound})",
        body.len()
    );
    match out {
        Ok(n) => {
            assert!(n >= 1);
            assert!(n <= MAX_BATCH, "{n} jobs in one batch");
        }
        Err(e) => {
            assert!(!e.msg.is_empty(), "an error says what was wrong");
            assert!(e.status.is_client_error(), "{:?}: {}", e.status, e.msg);
        }
    }
});
