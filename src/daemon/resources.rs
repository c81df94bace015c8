//! A service's `resources:` in kernel units, and how they are written back
//! in config words. Plain data, no syscalls: `compiled.rs` carries it (and
//! so does the config fuzz target, which includes that file by path); the
//! cgroup code in `cgroup.rs` applies it.

use core::fmt;

/// A service's `resources:`, in kernel units; 0 = not set.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_max: u64,
    pub pids_max: u32,
    pub cpu_weight: u32,
}

impl Limits {
    pub fn is_set(&self) -> bool {
        *self != Limits::default()
    }
}

impl fmt::Display for Limits {
    /// `memory_max 64MiB, pids_max 100, cpu_weight 100` (those set).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if self.memory_max > 0 {
            write!(f, "memory_max {}", Size(self.memory_max))?;
            sep = ", ";
        }
        if self.pids_max > 0 {
            write!(f, "{sep}pids_max {}", self.pids_max)?;
            sep = ", ";
        }
        if self.cpu_weight > 0 {
            write!(f, "{sep}cpu_weight {}", self.cpu_weight)?;
        }
        Ok(())
    }
}

/// A byte count as the config writes it: `64MiB`, `1GiB`, `4096`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
            let m = (1u64 << shift) - 1;
            if self.0 > m && self.0 & m == 0 {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}
