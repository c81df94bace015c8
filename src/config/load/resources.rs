//! What the kernel bounds for a service: `resources:` (cgroup v2) and
//! `rlimits:`.

use super::super::raw::{RawResources, RawRlimits};
use super::super::spec::{Resources, Rlimit};
use super::super::units::RLIM_UNLIMITED;
use super::{Ctx, K};

/// Smallest `memory_max`: below it a service is OOM-killed at once.
const MIN_MEMORY_MAX: u64 = 1 << 20;
/// `cpu.weight` range (cgroup v2).
const MAX_CPU_WEIGHT: u64 = 10_000;

/// A service's `resources:`. Outside system mode they need `coffey.cgroup`:
/// without it they are not enforced, which is worth a warning.
pub(super) fn build_resources(cx: &mut Ctx, raw: Option<&RawResources>, cgroup: bool) -> Resources {
    let Some(r) = raw else {
        return Resources::default();
    };
    let at = |k: &'static str| [K("resources"), K(k)];
    let mut out = Resources::default();
    if let Some(m) = r.memory_max {
        if m.0 < MIN_MEMORY_MAX {
            cx.err(
                &at("memory_max"),
                format!(
                    "memory_max is {} bytes; it must be at least 1MiB (less kills the service at once)",
                    m.0
                ),
            );
        } else {
            out.memory_max = Some(m.0);
        }
    }
    if let Some(p) = r.pids_max {
        match u32::try_from(p) {
            Ok(n) if n >= 1 => out.pids_max = Some(n),
            _ => cx.err(
                &at("pids_max"),
                format!("pids_max is {p}; it must be between 1 and {}", u32::MAX),
            ),
        }
    }
    if let Some(w) = r.cpu_weight {
        if (1..=MAX_CPU_WEIGHT).contains(&w) {
            out.cpu_weight = u32::try_from(w).ok();
        } else {
            cx.err(
                &at("cpu_weight"),
                format!(
                    "cpu_weight is {w}; it must be between 1 and {MAX_CPU_WEIGHT} (default 100)"
                ),
            );
        }
    }
    if out.is_set() && !cgroup {
        cx.warn(
            &[K("resources")],
            "resources are enforced through cgroup v2 only: when coffeyd is PID 1 of a machine, or with `coffey.cgroup` set; otherwise they are ignored (the daemon logs it)"
                .to_owned(),
        );
    }
    out
}

/// The `RLIMIT_*` number of a name `RawRlimits` accepts.
fn rlimit_resource(name: &str) -> Option<u32> {
    use nix::libc;
    let r = match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    };
    #[allow(clippy::unnecessary_cast)] // c_int with musl, c_uint with glibc
    u32::try_from(r as i64).ok()
}

/// Validates `rlimits:` (the names were checked by serde): both halves
/// given, soft at most hard, and the ranges the kernel gives a meaning.
pub(super) fn rlimits(cx: &mut Ctx<'_>, raw: Option<&RawRlimits>) -> Vec<Rlimit> {
    let mut out = Vec::new();
    let Some(raw) = raw else {
        return out;
    };
    for (name, v) in raw.each() {
        let Some(v) = v else { continue };
        let at = [K("rlimits"), K(name)];
        let (Some(soft), Some(hard)) = (v.soft, v.hard) else {
            cx.err(
                &at,
                format!("rlimits.{name}: give both `soft` and `hard` (or one value for both)"),
            );
            continue;
        };
        let shown = |v: u64| {
            if v == RLIM_UNLIMITED {
                "unlimited".to_owned()
            } else {
                v.to_string()
            }
        };
        if soft > hard {
            cx.err(
                &at,
                format!(
                    "rlimits.{name}: the soft limit {} is above the hard limit {}",
                    shown(soft),
                    shown(hard)
                ),
            );
            continue;
        }
        // nice is a ceiling written as 20 - N (0..40); rtprio a priority.
        let max = match name {
            "nice" => 40,
            "rtprio" => 99,
            _ => RLIM_UNLIMITED,
        };
        if hard != RLIM_UNLIMITED && hard > max {
            cx.err(
                &at,
                format!(
                    "rlimits.{name}: {} is out of range (0 to {max}, or unlimited)",
                    shown(hard)
                ),
            );
            continue;
        }
        if let Some(resource) = rlimit_resource(name) {
            out.push(Rlimit {
                name,
                resource,
                soft,
                hard,
            });
        }
    }
    out
}
