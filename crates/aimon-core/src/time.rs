//! Time handling shared by every backend: the valid range and microsecond precision (DESIGN.md rule 7).

use chrono::{DateTime, TimeZone, Utc};

/// The earliest timestamp aimon accepts: the Unix epoch.
pub const MIN_TIMESTAMP_MICROS: i64 = 0;
/// The first instant aimon rejects: 2262-01-01T00:00:00Z (stores that count nanoseconds in an
/// `i64`, such as InfluxDB, end in April 2262).
pub const MAX_TIMESTAMP_MICROS: i64 = 9_214_646_400_000_000;

/// The current time, truncated to the microsecond like everything aimon stores.
pub fn now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// Drops sub-microsecond precision: every backend stores microseconds, so this is the value
/// that reads return.
pub fn truncate(ts: DateTime<Utc>) -> DateTime<Utc> {
    from_micros(ts.timestamp_micros())
}

/// Microseconds since the Unix epoch, the unit stores keep.
pub fn to_micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

/// The inverse of [`to_micros`]. Values outside chrono's range saturate; they cannot come from
/// validated input.
pub fn from_micros(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(if micros < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// Whether `ts` is inside the range aimon accepts.
pub fn in_range(ts: DateTime<Utc>) -> bool {
    (MIN_TIMESTAMP_MICROS..MAX_TIMESTAMP_MICROS).contains(&ts.timestamp_micros())
}

/// Serde helpers for a timestamp as RFC 3339 text with microseconds, the archive's format.
pub fn format(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Microseconds of a query bound, rounded up: a sample stored at microsecond `s` lies in
/// `[start, end)` exactly when `ceil_micros(start) <= s < ceil_micros(end)`, whatever
/// sub-microsecond part the bounds carry.
pub fn ceil_micros(ts: DateTime<Utc>) -> i64 {
    let micros = ts.timestamp_micros();
    if ts.timestamp_subsec_nanos().is_multiple_of(1_000) {
        micros
    } else {
        micros + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_microseconds() {
        let ts = Utc.timestamp_nanos(1_700_000_000_123_456_789);
        assert_eq!(
            truncate(ts).timestamp_nanos_opt(),
            Some(1_700_000_000_123_456_000)
        );
    }

    #[test]
    fn range_is_1970_to_2262() {
        assert!(in_range(from_micros(0)));
        assert!(!in_range(from_micros(-1)));
        assert_eq!(
            format(from_micros(MAX_TIMESTAMP_MICROS)),
            "2262-01-01T00:00:00.000000Z"
        );
        assert!(!in_range(from_micros(MAX_TIMESTAMP_MICROS)));
        assert!(in_range(from_micros(MAX_TIMESTAMP_MICROS - 1)));
    }
}
