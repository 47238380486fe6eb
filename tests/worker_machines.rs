//! Table-driven tests of the pure state machines: breaker, token bucket, autoscaler, alert
//! rules, restart backoff, success window. Time is injected as a `Duration` since an origin.

use std::time::Duration;

use durq::metrics::{AlertChange, AlertMeasure, AlertRule, AlertTracker, SuccessWindow};
use durq::worker::{
    AutoscaleConfig, Autoscaler, Breaker, BreakerConfig, BreakerState, KeyedLimiter,
    RestartBackoff, Signals, TokenBucket,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Ok(u64),
    Fail(u64),
    /// Ask whether a job may start at t; expect the answer.
    Start(u64, bool),
}

#[test]
fn breaker_table() {
    use BreakerState::*;
    use Step::*;
    let cfg = BreakerConfig {
        failures: 3,
        window: ms(1000),
        failure_rate: 0.5,
        min_calls: 6,
        cooldown: ms(500),
    };
    // (name, steps, expected state after each step)
    let cases: Vec<(&str, Vec<Step>, Vec<BreakerState>)> = vec![
        (
            "three failures in the window open it",
            vec![Fail(0), Fail(100), Fail(200)],
            vec![Closed, Closed, Open],
        ),
        (
            "failures spread beyond the window do not",
            vec![Fail(0), Fail(600), Fail(1200), Fail(1700)],
            vec![Closed, Closed, Closed, Closed],
        ),
        (
            "rate opens it once min_calls ran",
            vec![Ok(0), Ok(1), Fail(2), Ok(3), Fail(4), Ok(5), Ok(6), Fail(7)],
            vec![Closed, Closed, Closed, Closed, Closed, Closed, Closed, Open],
        ),
        (
            "open refuses, half-open takes one probe, success closes",
            vec![
                Fail(0),
                Fail(1),
                Fail(2),
                Start(100, false),
                Start(502, true),
                Start(503, false),
                Ok(600),
                Start(601, true),
            ],
            vec![
                Closed, Closed, Open, Open, HalfOpen, HalfOpen, Closed, Closed,
            ],
        ),
        (
            "a failed probe opens it again for another cooldown",
            vec![
                Fail(0),
                Fail(1),
                Fail(2),
                Start(502, true),
                Fail(510),
                Start(900, false),
                Start(1010, true),
            ],
            vec![Closed, Closed, Open, HalfOpen, Open, Open, HalfOpen],
        ),
        (
            "success resets nothing but the window counts only recent calls",
            vec![Fail(0), Fail(10), Ok(20), Fail(1005)],
            vec![Closed, Closed, Closed, Closed],
        ),
    ];
    for (name, steps, expect) in cases {
        let mut b = Breaker::new(cfg.clone());
        for (i, (step, want)) in steps.iter().zip(expect.iter()).enumerate() {
            match *step {
                Ok(t) => {
                    b.record(ms(t), true);
                }
                Fail(t) => {
                    b.record(ms(t), false);
                }
                Start(t, allowed) => {
                    assert_eq!(b.on_start(ms(t)), allowed, "{name}: step {i} {step:?}")
                }
            }
            assert_eq!(b.state(), *want, "{name}: state after step {i} {step:?}");
        }
    }
    assert!(BreakerConfig {
        failure_rate: 1.5,
        ..cfg.clone()
    }
    .validate()
    .is_err());
    assert!(BreakerConfig { failures: 0, ..cfg }.validate().is_err());
}

#[test]
fn token_bucket_table() {
    // rate 10/s, burst 2: (time ms, expected result)
    let cases: Vec<(u64, Result<(), u64>)> = vec![
        (0, Ok(())),
        (0, Ok(())),
        (0, Err(100)),
        (50, Err(50)),
        (100, Ok(())),
        (100, Err(100)),
        (1000, Ok(())),
        (1000, Ok(())),
        (1000, Err(100)),
    ];
    let mut b = TokenBucket::new(10.0, 2.0, ms(0));
    for (i, (t, want)) in cases.into_iter().enumerate() {
        assert_eq!(b.take(ms(t)), want.map_err(ms), "step {i} at {t} ms");
    }
    // A slow rate (1 per second) waits up to a second.
    let mut slow = TokenBucket::new(1.0, 1.0, ms(0));
    assert_eq!(slow.take(ms(0)), Ok(()));
    assert_eq!(slow.take(ms(250)), Err(ms(750)));
    // Keys are independent.
    let mut k = KeyedLimiter::new(1.0, 1.0);
    assert_eq!(k.take("a", ms(0)), Ok(()));
    assert_eq!(k.take("b", ms(0)), Ok(()));
    assert!(k.take("a", ms(10)).is_err());
    assert_eq!(k.len(), 2);
}

#[test]
fn autoscaler_table() {
    let cfg = AutoscaleConfig {
        min: 2,
        max: 8,
        up_after: ms(1000),
        down_after: ms(5000),
        max_age: ms(3000),
        cooldown: ms(2000),
    };
    let sig = |waiting: u64, age_ms: Option<u64>, busy: usize| Signals {
        waiting,
        oldest_waiting: age_ms.map(ms),
        busy,
    };
    // (time ms, signals, expected new count or None); `current` follows the decisions.
    type Steps = Vec<(u64, Signals, Option<usize>)>;
    let cases: Vec<(&str, Steps)> = vec![
        (
            "sustained backlog doubles, cooldown holds, idle halves",
            vec![
                (0, sig(10, None, 2), None),
                (500, sig(10, None, 2), None),
                (1000, sig(10, None, 2), Some(4)),
                (1500, sig(10, None, 4), None),
                (2500, sig(10, None, 4), None),
                (3000, sig(10, None, 4), Some(8)),
                (6000, sig(100, None, 8), None), // at max
                (7000, sig(0, None, 1), None),
                (12000, sig(0, None, 1), Some(4)),
                (14000, sig(0, None, 0), None),
                (19000, sig(0, None, 0), Some(2)),
                (30000, sig(0, None, 0), None), // at min
            ],
        ),
        (
            "a flickering backlog never holds long enough (no flapping)",
            vec![
                (0, sig(10, None, 2), None),
                (600, sig(0, None, 2), None),
                (900, sig(10, None, 2), None),
                (1500, sig(1, None, 2), None),
                (1800, sig(10, None, 2), None),
                (2700, sig(10, None, 2), None),
                (2800, sig(10, None, 2), Some(4)),
            ],
        ),
        (
            "an old waiting job counts as backlog even when few wait",
            vec![
                (0, sig(1, Some(3500), 2), None),
                (1000, sig(1, Some(4500), 2), Some(4)),
            ],
        ),
        (
            "half busy is not idle",
            vec![(0, sig(0, None, 1), None), (6000, sig(0, None, 1), None)],
        ),
    ];
    for (name, steps) in cases {
        let mut a = Autoscaler::new(cfg.clone());
        let mut current = 2;
        for (i, (t, s, want)) in steps.into_iter().enumerate() {
            let got = a.decide(ms(t), current, s).map(|d| d.to);
            assert_eq!(
                got, want,
                "{name}: step {i} at {t} ms with {current} workers"
            );
            if let Some(n) = got {
                current = n;
            }
        }
    }
}

#[test]
fn alert_rule_table() {
    let rule = AlertRule {
        name: "depth".into(),
        measure: AlertMeasure::Depth { queue: None },
        threshold: 100.0,
        hold: ms(1000),
    };
    // (time ms, value, expected change)
    let steps: Vec<(u64, f64, Option<AlertChange>)> = vec![
        (0, 150.0, None),
        (500, 150.0, None),
        (900, 90.0, None), // dipped: hold restarts
        (1000, 150.0, None),
        (1999, 150.0, None),
        (2000, 150.0, Some(AlertChange::Raised)),
        (3000, 500.0, None), // raised once per crossing
        (4000, 100.0, Some(AlertChange::Cleared)),
        (4500, 100.0, None),
        (5000, 101.0, None),
        (6000, 101.0, Some(AlertChange::Raised)),
    ];
    let mut a = AlertTracker::new(rule);
    for (i, (t, v, want)) in steps.into_iter().enumerate() {
        assert_eq!(a.step(ms(t), v), want, "step {i} at {t} ms value {v}");
    }
    assert!(a.firing());
}

#[test]
fn restart_backoff_table() {
    let mut b = RestartBackoff::new(ms(100), ms(1000), ms(60_000));
    let steps = [
        (0, 100),
        (10, 200),
        (20, 400),
        (30, 800),
        (40, 1000),
        (50, 1000),
        (70_000, 100),
        (70_001, 200),
    ];
    for (t, want) in steps {
        assert_eq!(b.on_death(ms(t)), ms(want), "death at {t} ms");
    }
}

#[test]
fn success_window_table() {
    let mut w = SuccessWindow::new(Duration::from_secs(10));
    assert_eq!(w.rate(ms(0)), None);
    w.record(ms(0), true);
    w.record(ms(100), false);
    w.record(ms(5_000), true);
    w.record(ms(5_100), true);
    assert_eq!(w.rate(ms(5_200)), Some(0.75));
    // The first second's bucket leaves the window at 10 s.
    assert_eq!(w.rate(ms(10_000)), Some(1.0));
    assert_eq!(w.rate(ms(16_000)), None);
}
