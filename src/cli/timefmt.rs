//! Time text for the client: RFC 3339 UTC timestamps with milliseconds
//! (`2026-11-22T03:50:00.123Z`) from the daemon's epoch milliseconds, and
//! short human durations (`3m12s`) for uptimes.
//!
//! Pure arithmetic, no clock reads and no time-zone database: the client
//! prints UTC, like the daemon's log.

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    coffey::stamp::Stamp(ms).to_string()
}

/// The wall clock in ms since the epoch (0 if it is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A short duration: `850ms`, `42s`, `5m12s`, `3h04m`, `2d03h`.
pub fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s == 0 {
        format!("{ms}ms")
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s / 60) % 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s / 3600) % 24)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coffey::stamp::civil_from_days;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_000_000_000_123), "2001-09-09T01:46:40.123Z");
        // 2000 is a leap year (divisible by 400), 1900 and 2100 are not.
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_798_516_800_005), "2026-12-29T04:00:00.005Z");
        assert_eq!(rfc3339_ms(1_795_319_400_123), "2026-11-22T03:50:00.123Z");
    }

    #[test]
    fn every_day_for_three_centuries_is_consecutive() {
        let mut prev = civil_from_days(-1);
        assert_eq!(prev, (1969, 12, 31));
        for days in 0..(300 * 366) {
            let cur = civil_from_days(days);
            let (py, pm, pd) = prev;
            let leap = (py % 4 == 0 && py % 100 != 0) || py % 400 == 0;
            let dim = match pm {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            let next_day = cur == (py, pm, pd + 1) && pd < dim;
            let next_month = cur == (py, pm + 1, 1) && pm < 12 && pd == dim;
            let next_year = cur == (py + 1, 1, 1) && pm == 12 && pd == 31;
            assert!(next_day || next_month || next_year, "{prev:?} -> {cur:?}");
            prev = cur;
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0ms");
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(42_000), "42s");
        assert_eq!(human_duration(312_000), "5m12s");
        assert_eq!(human_duration(3 * 3_600_000 + 4 * 60_000), "3h04m");
        assert_eq!(human_duration(2 * 86_400_000 + 3 * 3_600_000), "2d03h");
    }
}
