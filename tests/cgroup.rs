//! cgroup v2 containment on the host (issue 9, point 5): only the
//! fallback. Tests never create, move or change the host's cgroups (its
//! hybrid layout belongs to the machine); the real cgroup checks run in
//! the qemu guest (tests/vm/cgroup.sh, `just test-vm`), where coffeyd is
//! PID 1 and owns the tree.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;

/// `status SERVICE`'s `key:` line.
fn detail(d: &Daemon, svc: &str, key: &str) -> Option<String> {
    let o = ctl(d, &["status", svc]);
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// Without `coffey.cgroup` (supervisor mode), `resources:` cannot be
/// enforced: the daemon says so once per service, status says so, and
/// the process count comes from the process group.
#[test]
fn without_a_cgroup_resources_are_logged_as_not_enforced() {
    let svc = svc(
        "a",
        "sleep 30 & sleep 30 & wait",
        "    resources: {memory_max: 16MiB, pids_max: 10}\n",
    );
    let mut d = Daemon::start("cg-fallback", "", &svc);
    d.wait_log(
        "a: resources not enforced (memory_max 16MiB, pids_max 10): no coffey.cgroup",
        5.0,
    );
    let procs = wait_for(10.0, "3 processes in a's group", || {
        detail(&d, "a", "processes").filter(|p| p.starts_with("3 (in process group"))
    });
    assert!(procs.ends_with("; no cgroup)"), "{procs}");
    assert_eq!(
        detail(&d, "a", "resources").as_deref(),
        Some("memory_max 16MiB, pids_max 10 (not enforced: no cgroup)")
    );
    assert_eq!(detail(&d, "a", "cgroup"), None);
    assert_eq!(d.stop(20.0), 0);
    let log = d.log_text();
    assert!(log.contains("heap allocations after startup: 0"), "{log}");
}

/// `coffey.cgroup` that is not a cgroup2 directory (here: a plain one
/// under /tmp) is refused with a log line; nothing is created in it and
/// the services run, contained by process group.
#[test]
fn a_coffey_cgroup_that_is_not_cgroup2_is_not_used() {
    let dir = tempdir("cg-notcg2-dir");
    let extra = format!("  cgroup: {}\n", dir.display());
    let svc = svc("a", "exec sleep 30", "    resources: {cpu_weight: 50}\n");
    let mut d = Daemon::start("cg-notcg2", &extra, &svc);
    d.wait_log(
        "is not a cgroup2 directory; services are contained by process group only",
        5.0,
    );
    d.wait_log("a: resources not enforced (cpu_weight 50): no cgroup2", 5.0);
    d.wait_log("a: spawned pid", 5.0);
    assert_eq!(detail(&d, "a", "cgroup"), None);
    assert_eq!(d.stop(20.0), 0);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        left.is_empty(),
        "coffeyd created {left:?} in {}",
        dir.display()
    );
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}
