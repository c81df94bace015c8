//! Loader tests for `coffey.cgroup` and `resources:` (issue 9): the values,
//! their bounds, and the warning when they cannot be enforced.

use super::*;

fn load_yaml(tag: &str, text: &str) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    let dir = std::env::temp_dir().join(format!("coffey-config-cg-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("config.yaml");
    std::fs::write(&p, text).unwrap();
    load(&p)
}

fn messages(d: &[Diag]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}

const SVC: &str = "services:\n  - name: a\n    binary: /bin/sh\n";

#[test]
fn resources_parse_into_the_spec() {
    let text = format!(
        "coffey:\n  cgroup: /sys/fs/cgroup/coffey\n{SVC}    resources: {{memory_max: 64MiB, pids_max: 100, cpu_weight: 50}}\n"
    );
    let (cfg, warnings) = load_yaml("parse", &text).unwrap_or_else(|d| panic!("{}", messages(&d)));
    assert!(warnings.is_empty(), "{}", messages(&warnings));
    assert_eq!(
        cfg.cgroup.as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup/coffey"))
    );
    let r = cfg.services[0].resources;
    assert_eq!(r.memory_max, Some(64 << 20));
    assert_eq!(r.pids_max, Some(100));
    assert_eq!(r.cpu_weight, Some(50));
    // Not written: none set, no cgroup.
    let (cfg, _) = load_yaml("none", SVC).unwrap_or_else(|d| panic!("{}", messages(&d)));
    assert!(!cfg.services[0].resources.is_set());
    assert_eq!(cfg.cgroup, None);
}

#[test]
fn resources_without_a_cgroup_warn_that_they_may_not_be_enforced() {
    let text = format!("{SVC}    resources:\n      pids_max: 10\n");
    let (cfg, warnings) = load_yaml("warn", &text).unwrap_or_else(|d| panic!("{}", messages(&d)));
    assert_eq!(cfg.services[0].resources.pids_max, Some(10));
    let w = messages(&warnings);
    assert!(
        w.contains(":4:5: warning: service 'a': resources are enforced through cgroup v2 only"),
        "{w}"
    );
}

#[test]
fn resource_bounds_and_cgroup_path_are_checked() {
    let text = "coffey:\n  cgroup: relative/dir\nservices:\n  - name: a\n    binary: /bin/sh\n    resources:\n      memory_max: 4KiB\n      pids_max: 0\n      cpu_weight: 10001\n";
    let d = load_yaml("bounds", text).err().unwrap_or_default();
    let m = messages(&d);
    for want in [
        ":2:11: error: cgroup 'relative/dir' must be an absolute path",
        ":7:19: error: service 'a': memory_max is 4096 bytes; it must be at least 1MiB",
        ":8:17: error: service 'a': pids_max is 0; it must be between 1 and",
        ":9:19: error: service 'a': cpu_weight is 10001; it must be between 1 and 10000",
    ] {
        assert!(m.contains(want), "missing {want:?} in:\n{m}");
    }
    let d = load_yaml(
        "unknown",
        &format!("{SVC}    resources: {{memory_high: 1MiB}}\n"),
    )
    .err()
    .unwrap_or_default();
    assert!(
        messages(&d).contains("unknown field `memory_high`"),
        "{}",
        messages(&d)
    );
}
