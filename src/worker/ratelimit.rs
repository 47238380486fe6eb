//! Token buckets for the per-queue and per-partition-key rate limits, over an injected clock.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` per second. [`TokenBucket::take`]
//! either takes a token or says how long until one is there; it never reorders anything by
//! itself: the pool waits (per queue) or pauses the key in the store and gives the job back
//! (per key), so jobs of one key still run in enqueue order.

use std::collections::HashMap;
use std::time::Duration;

/// One token bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket: `rate` tokens per second, at most `burst` stored (at least 1).
    pub fn new(rate: f64, burst: f64, now: Duration) -> Self {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(f64::MIN_POSITIVE),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Duration) {
        if now > self.last {
            let dt = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Takes a token, or returns how long until one is available (nothing is taken then).
    pub fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            // Round up to the next millisecond so a wait of that length always suffices.
            let ms = (missing / self.rate * 1000.0).ceil().max(1.0);
            Err(Duration::from_millis(ms as u64))
        }
    }

    /// True when the bucket is full (nothing to remember).
    pub fn is_full(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// A bucket per key (queue name or partition key), created full on first use.
#[derive(Clone, Debug)]
pub struct KeyedLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, TokenBucket>,
    takes: u64,
}

impl KeyedLimiter {
    /// `rate` per second per key, burst `burst`.
    pub fn new(rate: f64, burst: f64) -> Self {
        KeyedLimiter {
            rate,
            burst,
            buckets: HashMap::new(),
            takes: 0,
        }
    }

    /// Takes a token for `key`, or says how long to wait.
    pub fn take(&mut self, key: &str, now: Duration) -> Result<(), Duration> {
        self.takes += 1;
        if self.takes % 4096 == 0 {
            // Forget full buckets so memory follows the active keys, not all keys ever seen.
            self.buckets.retain(|_, b| !b.is_full(now));
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key.to_string())
            .or_insert_with(|| TokenBucket::new(rate, burst, now))
            .take(now)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
