//! Durations and times, validated once and used everywhere (CLI, HTTP, library, engine).
//!
//! Invariants:
//! - Every duration a caller can give (delay, lease, heartbeat, retry_after, dedup TTL, backoff
//!   base and cap, long-poll wait, key pause) is at most [`MAX_DURATION`] (10 years). A longer
//!   one is refused with [`Error::InvalidInput`] naming the field, before anything changes.
//! - A time is computed as `now + d` only through [`after`], which saturates: no arithmetic on
//!   times can panic or wrap, whatever is stored or whatever the clock says.
//! - Any `u64` of milliseconds formats as a date ([`format_rfc3339_millis`]); formatting never
//!   panics (years past 9999 use the ISO 8601 expanded form `+YYYYY-…`).

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest duration accepted anywhere: 10 years of 365.25 days (`10y`).
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// Checks that `d` (the value of `field`) is at most [`MAX_DURATION`].
pub fn check(field: &str, d: Duration) -> Result<Duration> {
    if d > MAX_DURATION {
        return Err(Error::invalid(format!(
            "{field} `{}` is too long; the longest accepted is 10y (10 years)",
            describe(d)
        )));
    }
    Ok(d)
}

/// Parses a duration such as `500ms`, `5s`, `2m`, `1h30m`, `7d` and checks its range; errors
/// name `field`.
pub fn parse(field: &str, s: &str) -> Result<Duration> {
    let d = parse_unchecked(s).map_err(|e| match e {
        Error::InvalidInput(m) => Error::InvalidInput(format!("{field}: {m}")),
        e => e,
    })?;
    check(field, d)
}

/// Parses a duration (syntax only) and checks it is at most [`MAX_DURATION`].
pub fn parse_any(s: &str) -> Result<Duration> {
    let d = parse_unchecked(s)?;
    if d > MAX_DURATION {
        return Err(Error::invalid(format!(
            "duration `{}` is too long; the longest accepted is 10y (10 years)",
            s.trim()
        )));
    }
    Ok(d)
}

fn parse_unchecked(s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        Error::invalid(format!(
            "duration `{s}` is not valid ({e}); write it like 500ms, 5s, 2m or 1h"
        ))
    })
}

/// `d` in whole milliseconds, saturating at `u64::MAX` (never wraps).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The time `d` after `now` (milliseconds since the epoch), saturating.
pub fn after(now: u64, d: Duration) -> u64 {
    now.saturating_add(millis(d))
}

/// A short human form of a duration (`humantime`'s), for messages.
fn describe(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// RFC 3339 with milliseconds, UTC (`2026-11-28T04:13:45.123Z`), for any `u64` of milliseconds
/// since the Unix epoch. Years past 9999 are written in the ISO 8601 expanded form
/// (`+20000-01-01T00:00:00.000Z`); this never panics.
pub fn format_rfc3339_millis(ms: u64) -> String {
    let millis = ms % 1000;
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days);
    let year = if y > 9999 {
        format!("+{y}")
    } else {
        format!("{y:04}")
    };
    format!("{year}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// (year, month, day) of the day `days` after 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm, in u64 since the input is never before the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, which starts a 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_humantime_in_range() {
        for ms in [
            0u64,
            1,
            999,
            86_399_999,
            951_782_400_000,   // 2000-02-29
            1_764_300_825_123, // 2025-11-28
            4_107_542_400_000, // 2100-03-01
            253_402_300_799_999,
        ] {
            let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(
                format_rfc3339_millis(ms),
                humantime::format_rfc3339_millis(t).to_string(),
                "{ms}"
            );
        }
    }

    #[test]
    fn formats_every_u64() {
        assert_eq!(
            format_rfc3339_millis(253_402_300_800_000),
            "+10000-01-01T00:00:00.000Z"
        );
        let s = format_rfc3339_millis(u64::MAX);
        assert!(s.starts_with('+') && s.ends_with(".615Z"), "{s}");
    }

    #[test]
    fn range_and_arithmetic() {
        assert!(check("delay", MAX_DURATION).is_ok());
        let e = check("delay", MAX_DURATION + Duration::from_millis(1)).unwrap_err();
        assert!(e.to_string().contains("delay"), "{e}");
        assert_eq!(parse("lease", "10y").unwrap(), MAX_DURATION);
        let e = parse("lease", "18446744073709551615s").unwrap_err();
        assert!(e.to_string().contains("lease"), "{e}");
        let e = parse("lease", "abc").unwrap_err();
        assert!(e.to_string().contains("lease"), "{e}");
        assert_eq!(after(u64::MAX - 5, Duration::from_secs(1)), u64::MAX);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
