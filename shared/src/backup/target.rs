//! Where a recovery should stop, as the operator says it and as
//! PostgreSQL's settings write it.

use std::fmt;

use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};

use crate::clock::UnixMillis;
use crate::wal::Lsn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The end of the archive.
    Latest,
    /// A moment (UTC milliseconds): every transaction committed before it.
    Time(UnixMillis),
    /// A WAL position.
    Lsn(Lsn),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a time walvault reads: RFC 3339, like 2026-11-27T10:15:00Z or 2026-11-27 12:15:00+02:00")]
pub struct BadTime(pub String);

/// Parses an RFC 3339 time (a space may replace the `T`), with `Z` or a
/// numeric offset.
pub fn parse_time(text: &str) -> Result<UnixMillis, BadTime> {
    let bad = || BadTime(text.to_owned());
    let normalised = text.trim().replacen(' ', "T", 1);
    // The offset, if numeric: the time is read as UTC, then moved.
    let (utc, offset_minutes) = match normalised.len().checked_sub(6) {
        Some(at)
            if normalised.is_char_boundary(at) && matches!(&normalised[at..at + 1], "+" | "-") =>
        {
            let (time, offset) = normalised.split_at(at);
            let (hours, minutes) = offset[1..].split_once(':').ok_or_else(bad)?;
            let hours: i64 = hours.parse().map_err(|_| bad())?;
            let minutes: i64 = minutes.parse().map_err(|_| bad())?;
            if hours > 23 || minutes > 59 {
                return Err(bad());
            }
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            (format!("{time}Z"), sign * (hours * 60 + minutes))
        }
        _ => (normalised, 0),
    };
    let parsed = DateTime::from_str(&utc, DateTimeFormat::DateTime).map_err(|_| bad())?;
    let millis = parsed.to_millis().map_err(|_| bad())? - offset_minutes * 60_000;
    u64::try_from(millis).map_err(|_| bad())
}

/// A time as PostgreSQL's `recovery_target_time` reads it, in UTC.
pub fn postgres_time(millis: UnixMillis) -> String {
    let seconds = i64::try_from(millis / 1000).unwrap_or(i64::MAX);
    let iso = DateTime::from_secs(seconds)
        .fmt(DateTimeFormat::DateTime)
        .unwrap_or_default();
    // 2026-11-27T10:15:00Z → 2026-11-27 10:15:00.123+00
    let base = iso.trim_end_matches('Z').replacen('T', " ", 1);
    format!("{base}.{:03}+00", millis % 1000)
}

impl Target {
    /// The recovery settings that say it, in `postgresql.conf` syntax.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            Target::Latest => Vec::new(),
            Target::Time(millis) => vec![("recovery_target_time", postgres_time(*millis))],
            Target::Lsn(lsn) => vec![("recovery_target_lsn", lsn.to_string())],
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => f.write_str("the end of the archive"),
            Target::Time(millis) => write!(f, "time {}", postgres_time(*millis)),
            Target::Lsn(lsn) => write!(f, "LSN {lsn}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_from_rfc3339_and_print_for_postgres() {
        let t = parse_time("2026-11-27T10:15:00Z").unwrap();
        assert_eq!(t, 1_795_774_500_000);
        assert_eq!(parse_time("2026-11-27 12:15:00+02:00").unwrap(), t);
        assert_eq!(parse_time("2026-11-27T10:15:00.250Z").unwrap(), t + 250);
        assert_eq!(postgres_time(t + 250), "2026-11-27 10:15:00.250+00");
        for bad in ["", "yesterday", "2026-11-27", "2026-13-01T00:00:00Z"] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Target::Lsn("0/3000028".parse().unwrap()).settings(),
            [("recovery_target_lsn", "0/3000028".to_owned())]
        );
    }
}
