//! Per-IP budget of wrong credentials (login form and bearer tokens): a token bucket of
//! [`BURST`] guesses that refills at [`PER_SEC`] per second. Only wrong guesses spend it; while
//! it is empty every credential from that IP (right or wrong) gets 429 with `Retry-After`, so
//! an attacker learns nothing from the answers and guesses at most about one per second.
//!
//! Invariant: the table holds at most [`MAX_IPS`] addresses; to make room, buckets that have
//! refilled are dropped first (they carry no information), then the fullest one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Wrong guesses allowed at once.
pub const BURST: f64 = 10.0;
/// Refill rate, guesses per second.
pub const PER_SEC: f64 = 1.0;
/// Most addresses tracked.
pub const MAX_IPS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * PER_SEC).min(BURST);
        self.at = now;
    }
}

/// The per-IP table.
#[derive(Debug, Default)]
pub struct Throttle {
    map: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Throttle {
    /// `Err(wait)` when `ip` has no guess left.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut m = self.map.lock();
        let Some(b) = m.get_mut(&ip) else {
            return Ok(());
        };
        b.refill(now);
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / PER_SEC))
        }
    }

    /// Spends one guess of `ip` (a wrong credential).
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut m = self.map.lock();
        if m.len() >= MAX_IPS && !m.contains_key(&ip) {
            m.retain(|_, b| {
                b.refill(now);
                b.tokens < BURST
            });
            if m.len() >= MAX_IPS {
                // Still full: forget the entry closest to full.
                if let Some(k) = m
                    .iter()
                    .max_by(|a, b| a.1.tokens.total_cmp(&b.1.tokens))
                    .map(|(k, _)| *k)
                {
                    m.remove(&k);
                }
            }
        }
        let b = m.entry(ip).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        b.refill(now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_then_refill() {
        let t = Throttle::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..BURST as usize {
            assert!(t.check(ip).is_ok());
            t.failed(ip);
        }
        let wait = t.check(ip).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(t.check(other).is_ok(), "per IP");
        std::thread::sleep(wait + Duration::from_millis(20));
        assert!(t.check(ip).is_ok(), "refilled");
    }
}
