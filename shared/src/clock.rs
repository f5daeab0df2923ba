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
}
