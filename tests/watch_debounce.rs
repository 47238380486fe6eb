//! Table-driven tests of the debounce state machine over a mock clock (no I/O, no sleeping).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use durq::watch::debounce::{Debouncer, Hint};

#[derive(Clone, Copy)]
enum Step {
    /// An event on a path at a time (ms).
    Ev(u64, &'static str, Hint),
    /// A rename at a time.
    Mv(u64, &'static str, &'static str),
    /// The settle step holds the path again (size still moving): (now, path, burst start).
    Hold(u64, &'static str, u64),
    /// Poll at a time; expect exactly these (path, stable) in path order.
    Poll(u64, &'static [(&'static str, bool)]),
    /// Expect the next deadline at this time (ms), or none.
    Next(Option<u64>),
}

use Hint::{Changed as C, Closed as X, Writing as W};
use Step::*;

struct Case {
    name: &'static str,
    debounce: u64,
    max_wait: u64,
    steps: &'static [Step],
}

const CASES: &[Case] = &[
    Case {
        name: "single event reported after the quiet window",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", C),
            Next(Some(500)),
            Poll(499, &[]),
            Poll(500, &[("a", true)]),
            Next(None),
        ],
    },
    Case {
        name: "burst of ten events 50 ms apart is one report",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", C),
            Ev(50, "a", C),
            Ev(100, "a", C),
            Ev(150, "a", C),
            Ev(200, "a", C),
            Ev(250, "a", C),
            Ev(300, "a", C),
            Ev(350, "a", C),
            Ev(400, "a", C),
            Ev(450, "a", C),
            Poll(900, &[]),
            Poll(949, &[]),
            Poll(950, &[("a", true)]),
            Poll(5000, &[]),
        ],
    },
    Case {
        name: "a path that never goes quiet is reported unstable at the max wait",
        debounce: 500,
        max_wait: 2000,
        steps: &[
            Ev(0, "a", C),
            Ev(400, "a", C),
            Ev(800, "a", C),
            Ev(1200, "a", C),
            Ev(1600, "a", C),
            Poll(1999, &[]),
            Ev(1999, "a", C),
            Poll(2000, &[("a", false)]),
            // The next burst starts fresh and is stable again.
            Ev(2100, "a", C),
            Poll(2599, &[]),
            Poll(2600, &[("a", true)]),
        ],
    },
    Case {
        name: "a file open for writing is held until close-write",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", C),
            Ev(10, "a", W),
            Poll(1000, &[]),
            Poll(3000, &[]),
            Ev(3000, "a", X),
            Poll(3499, &[]),
            Poll(3500, &[("a", true)]),
        ],
    },
    Case {
        name: "a writer that never closes is reported unstable at the max wait",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", W),
            Next(Some(5000)),
            Poll(4999, &[]),
            Poll(5000, &[("a", false)]),
        ],
    },
    Case {
        name: "paths debounce independently",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", C),
            Ev(300, "b", C),
            Poll(500, &[("a", true)]),
            Next(Some(800)),
            Poll(800, &[("b", true)]),
        ],
    },
    Case {
        name: "both ends of a rename are reported together",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Mv(0, "a", "b"),
            Ev(200, "b", C),
            Poll(500, &[("a", true), ("b", true)]),
            Poll(700, &[]),
        ],
    },
    Case {
        name: "delete then recreate inside the window is one report",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a", C),
            Ev(100, "a", C),
            Ev(110, "a", W),
            Ev(120, "a", X),
            Poll(619, &[]),
            Poll(620, &[("a", true)]),
        ],
    },
    Case {
        name: "a held path keeps its burst start, so the max wait still bounds it",
        debounce: 500,
        max_wait: 2000,
        steps: &[
            Ev(0, "a", C),
            Poll(500, &[("a", true)]),
            Hold(600, "a", 0),
            Poll(1100, &[("a", true)]),
            Hold(1800, "a", 0),
            Poll(2000, &[("a", false)]),
        ],
    },
    Case {
        name: "editor save: temp written then renamed over the target",
        debounce: 500,
        max_wait: 5000,
        steps: &[
            Ev(0, "a.swp", C),
            Ev(1, "a.swp", W),
            Ev(2, "a.swp", X),
            Mv(3, "a.swp", "a"),
            Poll(503, &[("a", true), ("a.swp", true)]),
        ],
    },
];

#[test]
fn debounce_table() {
    for case in CASES {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Debouncer::new(
            Duration::from_millis(case.debounce),
            Duration::from_millis(case.max_wait),
        );
        for (i, step) in case.steps.iter().enumerate() {
            match *step {
                Ev(t, p, h) => d.event(PathBuf::from(p), h, at(t)),
                Mv(t, a, b) => d.rename(PathBuf::from(a), PathBuf::from(b), at(t)),
                Hold(t, p, first) => d.hold(PathBuf::from(p), at(first), at(t)),
                Poll(t, want) => {
                    let got: Vec<(String, bool)> = d
                        .poll(at(t))
                        .into_iter()
                        .map(|x| (x.path.display().to_string(), x.stable))
                        .collect();
                    let want: Vec<(String, bool)> =
                        want.iter().map(|(p, s)| (p.to_string(), *s)).collect();
                    assert_eq!(got, want, "case `{}`, step {i}", case.name);
                }
                Next(want) => {
                    assert_eq!(
                        d.next_deadline(),
                        want.map(at),
                        "case `{}`, step {i}",
                        case.name
                    );
                }
            }
        }
    }
}

#[test]
fn flush_reports_everything_pending_once() {
    let t0 = Instant::now();
    let mut d = Debouncer::new(Duration::from_millis(500), Duration::from_secs(5));
    d.event("a".into(), Hint::Changed, t0);
    d.event("b".into(), Hint::Writing, t0);
    let out = d.flush(t0 + Duration::from_millis(600));
    let got: Vec<(String, bool)> = out
        .iter()
        .map(|x| (x.path.display().to_string(), x.stable))
        .collect();
    assert_eq!(got, vec![("a".into(), true), ("b".into(), false)]);
    assert_eq!(d.pending(), 0);
    assert!(d.flush(t0).is_empty());
}
