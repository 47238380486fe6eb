//! Success rate over a sliding window of one-second buckets, over an injected clock.

use std::collections::VecDeque;
use std::time::Duration;

/// Counts successes and failures per second for the last `window`.
#[derive(Clone, Debug)]
pub struct SuccessWindow {
    window_secs: u64,
    buckets: VecDeque<(u64, u64, u64)>,
}

impl SuccessWindow {
    /// A window of `window` (at least one second).
    pub fn new(window: Duration) -> Self {
        SuccessWindow {
            window_secs: window.as_secs().max(1),
            buckets: VecDeque::new(),
        }
    }

    fn trim(&mut self, sec: u64) {
        while let Some(&(s, _, _)) = self.buckets.front() {
            if s + self.window_secs <= sec {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    /// Records one attempt's result at `now`.
    pub fn record(&mut self, now: Duration, success: bool) {
        let sec = now.as_secs();
        self.trim(sec);
        match self.buckets.back_mut() {
            Some((s, ok, fail)) if *s == sec => {
                if success {
                    *ok += 1
                } else {
                    *fail += 1
                }
            }
            _ => self
                .buckets
                .push_back((sec, u64::from(success), u64::from(!success))),
        }
    }

    /// (successes, failures) within the window ending at `now`.
    pub fn counts(&mut self, now: Duration) -> (u64, u64) {
        self.trim(now.as_secs());
        self.buckets
            .iter()
            .fold((0, 0), |(a, b), (_, ok, f)| (a + ok, b + f))
    }

    /// Successes / attempts within the window; `None` when nothing ran.
    pub fn rate(&mut self, now: Duration) -> Option<f64> {
        let (ok, fail) = self.counts(now);
        let n = ok + fail;
        (n > 0).then(|| ok as f64 / n as f64)
    }
}
