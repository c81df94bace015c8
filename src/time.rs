//! Millisecond instants on CLOCK_MONOTONIC, with saturating arithmetic.
//!
//! Machines never read the clock: the loop reads it once per turn and passes
//! an [`Instant`] in. [`Instant::NEVER`] is the deadline of "nothing to do".

use core::fmt;

/// Milliseconds; every duration in the core is one of these.
pub type Millis = u64;

/// A point in time, in milliseconds since an arbitrary origin.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    pub const ZERO: Instant = Instant(0);
    /// The deadline that never comes.
    pub const NEVER: Instant = Instant(u64::MAX);

    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating at [`Instant::NEVER`].
    pub const fn add(self, d: Millis) -> Instant {
        Instant(self.0.saturating_add(d))
    }
    /// Time elapsed from `earlier` to `self`, 0 if `earlier` is later.
    pub const fn since(self, earlier: Instant) -> Millis {
        self.0.saturating_sub(earlier.0)
    }
    pub fn min(self, other: Instant) -> Instant {
        if other.0 < self.0 {
            other
        } else {
            self
        }
    }
}

/// Formats a duration the way the config spells them: `1m30s`, `250ms`.
pub struct Dur(pub Millis);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms < 1000 {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if sec > 0 || (h == 0 && m == 0) {
            let frac = ms % 1000;
            if h == 0 && m == 0 && frac != 0 {
                return write!(f, "{sec}.{}s", frac / 100);
            }
            write!(f, "{sec}s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn saturates() {
        assert_eq!(Instant::NEVER.add(5), Instant::NEVER);
        assert_eq!(Instant(5).since(Instant(9)), 0);
        assert_eq!(Instant(9).since(Instant(5)), 4);
        assert_eq!(Instant(3).min(Instant::NEVER), Instant(3));
    }

    #[test]
    fn dur_display() {
        assert_eq!(Dur(250).to_string(), "250ms");
        assert_eq!(Dur(1000).to_string(), "1s");
        assert_eq!(Dur(1500).to_string(), "1.5s");
        assert_eq!(Dur(90_000).to_string(), "1m30s");
        assert_eq!(Dur(3_600_000).to_string(), "1h");
    }
}
