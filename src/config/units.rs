//! Scalar value formats: durations, sizes, signals and umasks.
//!
//! Pure string parsers with human error messages. They never panic and use
//! checked arithmetic, because they see fuzzed input.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// Milliseconds per duration unit.
const UNITS_MS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parse a duration into milliseconds.
///
/// Accepts one or more `<integer><unit>` parts (`500ms`, `5s`, `1m30s`,
/// `1h2m3s4ms`) with units `ms`, `s`, `m`, `h`, `d`, or a bare integer, which
/// means seconds (as in systemd's `TimeoutStopSec=`). Rejects empty strings,
/// negative values, fractions, unknown units and overflow.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".to_owned());
    }
    if t.starts_with('-') {
        return Err("durations cannot be negative".to_owned());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = t.parse().map_err(|_| "number too large".to_owned())?;
        return n
            .checked_mul(1_000)
            .ok_or_else(|| "duration too large".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, after) = rest.split_at(digits_len);
        if digits.is_empty() {
            return Err(format!(
                "expected a number at `{rest}` (write e.g. 500ms, 5s, 1m30s)"
            ));
        }
        let n: u64 = digits.parse().map_err(|_| "number too large".to_owned())?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            if after.starts_with('.') {
                return Err("fractions are not supported; use a smaller unit (1500ms)".to_owned());
            }
            return Err(format!(
                "missing unit after `{digits}` (use ms, s, m, h or d)"
            ));
        }
        let mult = UNITS_MS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| format!("unknown unit `{unit}` (use ms, s, m, h or d)"))?;
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_owned())?;
        rest = after;
    }
    Ok(total)
}

/// Parse a byte size.
///
/// A bare integer is bytes. Units (case-insensitive): `B`; `K`/`KiB`,
/// `M`/`MiB`, `G`/`GiB` are powers of 1024; `KB`, `MB`, `GB` are powers of
/// 1000. A space between number and unit is allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty size".to_owned());
    }
    if t.starts_with('-') {
        return Err("sizes cannot be negative".to_owned());
    }
    let digits_len = t.bytes().take_while(u8::is_ascii_digit).count();
    let (digits, unit) = t.split_at(digits_len);
    if digits.is_empty() {
        return Err("expected a number (write e.g. 4096, 64KiB, 1MiB)".to_owned());
    }
    let n: u64 = digits.parse().map_err(|_| "number too large".to_owned())?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit `{}` (use B, KiB, MiB, GiB, KB, MB or GB)",
                unit
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_owned())
}

/// RLIM_INFINITY on Linux (rlim_t is 64 bits with glibc and musl alike).
pub const RLIM_UNLIMITED: u64 = u64::MAX;

/// Parse one resource limit value: `unlimited` (or systemd's `infinity`),
/// or a number, which may carry a size unit (`64MiB`, for the byte limits).
pub fn parse_rlimit_value(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinity") {
        return Ok(RLIM_UNLIMITED);
    }
    parse_size(t).map_err(|e| format!("invalid limit `{t}`: {e}, or `unlimited`"))
}

/// Parse a resource limit: one value for both the soft and the hard
/// limit, or `SOFT:HARD` as systemd's `LimitNOFILE=1024:4096`.
pub fn parse_rlimit(s: &str) -> Result<(u64, u64), String> {
    match s.split_once(':') {
        Some((soft, hard)) => Ok((parse_rlimit_value(soft)?, parse_rlimit_value(hard)?)),
        None => parse_rlimit_value(s).map(|v| (v, v)),
    }
}

/// Parse a signal: `SIGTERM`, `TERM` (any case) or a number like `15`.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty signal".to_owned());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t.parse().map_err(|_| format!("unknown signal `{t}`"))?;
        return Signal::try_from(n)
            .map(|sig| sig as i32)
            .map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name)
        .map(|sig| sig as i32)
        .map_err(|_| format!("unknown signal `{t}` (write e.g. SIGTERM, TERM or 15)"))
}

/// Octal digits, `0o` allowed before them (`660`, `0660`, `0o660`), at
/// most `most` of them. None if there are none, more, or a non-octal one.
pub fn octal(t: &str, most: usize) -> Option<u32> {
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let ok = !digits.is_empty() && digits.len() <= most;
    if !ok || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Parse a umask. The text is always read as octal: `"022"`, `"0022"`,
/// `"0o22"`, and also a YAML integer `22` (its digits are octal) all give
/// 0o022 (18).
pub fn parse_umask(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let Some(v) = octal(t, 4) else {
        return Err(format!(
            "invalid umask `{t}`: expected up to 4 octal digits like 022"
        ));
    };
    if v > 0o777 {
        return Err(format!("invalid umask `{t}`: must be at most 0777"));
    }
    Ok(v)
}

/// Render milliseconds back in the config's own format, for messages.
pub(super) fn fmt_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, mult) in [("h", 3_600_000u64), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        let n = rest / mult;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            rest %= mult;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The octal digits a umask and an fds entry's `mode` are read from.
    #[test]
    fn octal_digits() {
        assert_eq!(octal("660", 4), Some(0o660));
        assert_eq!(octal("0o0660", 4), Some(0o660));
        assert_eq!(octal("7777", 4), Some(0o7777));
        assert_eq!(octal("00660", 4), None);
        assert_eq!(octal("0999", 4), None);
        assert_eq!(octal("0o", 4), None);
        assert_eq!(octal("", 4), None);
        assert_eq!(octal("-1", 4), None);
        assert_eq!(parse_umask(" 0o22 "), Ok(0o22));
        assert!(parse_umask("1777").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("5s"), Ok(5_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(3_723_004));
        assert_eq!(parse_duration("1d"), Ok(86_400_000));
        assert_eq!(parse_duration("10"), Ok(10_000));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration(" 5s "), Ok(5_000));
        for bad in [
            "",
            " ",
            "-5s",
            "5x",
            "s",
            "1.5s",
            "5 s",
            "99999999999999999999",
            "18446744073709551615s",
            "18446744073709551615",
            "1m30",
            "5S",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_duration("1.5s").unwrap_err().contains("fractions"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4_096));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4096"), Ok(4_096));
        assert_eq!(parse_size("4 kib"), Ok(4_096));
        for bad in [
            "",
            "-1",
            "KiB",
            "4T",
            "4.5K",
            "99999999999999999999G",
            "17179869184G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("term"), Ok(15));
        assert_eq!(parse_signal("15"), Ok(15));
        assert_eq!(parse_signal("SIGKILL"), Ok(9));
        assert_eq!(parse_signal("HUP"), Ok(1));
        for bad in ["", "SIGFOO", "0", "999", "-15", "99999999999"] {
            assert!(parse_signal(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn rlimits() {
        assert_eq!(parse_rlimit("1024"), Ok((1024, 1024)));
        assert_eq!(parse_rlimit("1024:4096"), Ok((1024, 4096)));
        assert_eq!(parse_rlimit("0:unlimited"), Ok((0, RLIM_UNLIMITED)));
        assert_eq!(
            parse_rlimit("infinity"),
            Ok((RLIM_UNLIMITED, RLIM_UNLIMITED))
        );
        assert_eq!(parse_rlimit("64MiB"), Ok((64 << 20, 64 << 20)));
        for bad in ["", "-1", "lots", "1:", ":2", "1:2:3", "1.5"] {
            assert!(parse_rlimit(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn umasks() {
        assert_eq!(parse_umask("022"), Ok(0o22));
        assert_eq!(parse_umask("0022"), Ok(0o22));
        assert_eq!(parse_umask("22"), Ok(0o22));
        assert_eq!(parse_umask("0o27"), Ok(0o27));
        assert_eq!(parse_umask("0777"), Ok(0o777));
        for bad in ["", "8", "0o", "01777", "12345", "abc"] {
            assert!(parse_umask(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn fmt_ms_roundtrips() {
        for ms in [0, 1, 999, 1_000, 90_000, 3_723_004] {
            assert_eq!(parse_duration(&fmt_ms(ms)), Ok(ms));
        }
    }
}
