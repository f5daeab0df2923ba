//! Wall-clock time as walvault records it: milliseconds since the Unix
//! epoch. Logic takes the time as an argument (the retention planner, the
//! catalog writes) so that tests can run on a simulated clock; only the
//! edges read the real one.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// The current wall-clock time.
pub fn now_millis() -> UnixMillis {
    unix_millis(SystemTime::now())
}

/// `t` in Unix milliseconds; times before the epoch read as 0.
pub fn unix_millis(t: SystemTime) -> UnixMillis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `2026-11-27T10:15:00Z`: a time for people and JSON, in UTC, to the second.
pub fn utc_time(millis: UnixMillis) -> String {
    use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
    let seconds = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    DateTime::from_secs(seconds)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_else(|_| format!("{millis} ms after the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_convert_to_unix_milliseconds() {
        assert_eq!(unix_millis(UNIX_EPOCH + Duration::from_millis(1234)), 1234);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_millis() > 1_700_000_000_000);
    }

    #[test]
    fn times_print_in_utc_to_the_second() {
        assert_eq!(utc_time(1_795_774_500_123), "2026-11-27T10:15:00Z");
    }
}
