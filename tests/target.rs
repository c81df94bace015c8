//! Facts about the target system with the real daemon (issue 8 points 2
//! and 7): a missing binary or user fails only that service, which
//! retries; `user:` gives a login environment and the user's groups.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;

#[test]
fn a_missing_binary_fails_only_its_service_which_starts_once_it_appears() {
    let services = format!(
        "  - name: late\n    binary: $DIR/mnt/late\n    args: ['60']\n    backoff: {{initial: 100ms, max: 300ms}}\n{}",
        svc("normal", "exec sleep 60", "")
    );
    let mut d = Daemon::start("nobin", "", &services);
    d.wait_log("normal: spawned pid", 10.0);
    d.wait_log("late: exec failed: No such file or directory", 10.0);
    d.wait_log("late: restarting in 100ms (failure 1)", 10.0);
    // It keeps retrying with its backoff; the other service is untouched.
    d.wait_log("late: restarting in 300ms", 10.0);
    let late = row(&d, "late");
    assert_eq!(late["state"], "backoff", "{late}");
    let reason = late["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("exec failed: No such file or directory; next try in"),
        "{reason}"
    );
    let normal = row(&d, "normal");
    assert_eq!(normal["state"], "running", "{normal}");
    let stderr = std::fs::read_to_string(d.dir.join("stderr")).unwrap();
    assert!(
        stderr.contains("warning: service 'late': binary ")
            && stderr.contains("is not executable: No such file or directory (on this host"),
        "{stderr}"
    );

    // The "mount" arrives: the next retry starts it.
    std::fs::create_dir_all(d.dir.join("mnt")).unwrap();
    std::fs::copy("/bin/sleep", d.dir.join("mnt/late")).unwrap();
    d.wait_log("late: spawned pid", 10.0);
    let late = row(&d, "late");
    assert_eq!(late["state"], "running", "{late}");
    assert_eq!(
        row(&d, "normal")["pid"],
        normal["pid"],
        "normal never restarted"
    );
    assert_eq!(d.stop(20.0), 0);
    assert!(
        d.log_text().contains("heap allocations after startup: 0"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_missing_user_or_group_fails_only_its_service() {
    let services = [
        svc(
            "who",
            "exec sleep 60",
            "    user: no-such-user-coffey\n    backoff: {initial: 100ms, max: 200ms}\n",
        ),
        svc(
            "grp",
            "exec sleep 60",
            "    group: no-such-group-coffey\n    backoff: {initial: 100ms, max: 200ms}\n",
        ),
        svc("normal", "exec sleep 60", ""),
    ]
    .concat();
    let mut d = Daemon::start("nouser", "", &services);
    d.wait_log("normal: spawned pid", 10.0);
    d.wait_log(
        "who: cannot start: user not found: no-such-user-coffey",
        10.0,
    );
    d.wait_log(
        "grp: cannot start: group not found: no-such-group-coffey",
        10.0,
    );
    d.wait_log("who: restarting in 200ms", 10.0);
    let who = row(&d, "who");
    assert_eq!(who["state"], "backoff", "{who}");
    assert!(
        who["reason"]
            .as_str()
            .unwrap()
            .starts_with("user not found: no-such-user-coffey; next try in"),
        "{who}"
    );
    let detail = ctl(&d, &["status", "grp"]);
    assert!(
        detail
            .stdout
            .contains("exec-failed group not found: no-such-group-coffey"),
        "{detail:?}"
    );
    assert_eq!(row(&d, "normal")["state"], "running");
    assert_eq!(d.stop(20.0), 0);
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}

/// nobody's passwd entry and its groups as /etc/group lists them
/// (initgroups: the primary gid, then every group naming the user).
fn nobody() -> (String, String, u32, Vec<u32>) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let f: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == "nobody")
        .expect("a nobody user in /etc/passwd");
    let gid: u32 = f[3].parse().unwrap();
    let mut groups = vec![gid];
    for l in std::fs::read_to_string("/etc/group").unwrap().lines() {
        let g: Vec<&str> = l.split(':').collect();
        if g.len() >= 4 && g[3].split(',').any(|m| m == "nobody") {
            let n: u32 = g[2].parse().unwrap();
            if !groups.contains(&n) {
                groups.push(n);
            }
        }
    }
    (f[5].to_owned(), f[6].to_owned(), gid, groups)
}

#[test]
fn user_nobody_gets_a_login_environment_and_its_groups() {
    assert_eq!(
        euid(),
        0,
        "this test runs services as nobody: run it as root"
    );
    let (home, shell, gid, groups) = nobody();
    let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
                  echo HOME=$HOME; echo USER=$USER; echo LOGNAME=$LOGNAME; echo SHELL=$SHELL";
    let services = [
        svc("login", script, "    type: oneshot\n    user: nobody\n"),
        svc(
            "custom",
            script,
            "    type: oneshot\n    user: nobody\n    env: [HOME=/custom, SHELL=/bin/false]\n",
        ),
    ]
    .concat();
    let mut d = Daemon::start("login", "", &services);
    d.wait_log("login: completed", 10.0);
    d.wait_log("custom: completed", 10.0);
    let out = |name: &str| {
        let o = ctl(&d, &["logs", name, "--no-follow"]);
        assert_eq!(o.code, 0, "{o:?}");
        o.stdout
    };
    let want_groups: Vec<String> = groups.iter().map(u32::to_string).collect();
    let login = out("login");
    for want in [
        format!("uid=65534 gid={gid} groups={}", want_groups.join(" ")),
        format!("HOME={home}"),
        "USER=nobody".to_owned(),
        "LOGNAME=nobody".to_owned(),
        format!("SHELL={shell}"),
    ] {
        assert!(
            login.lines().any(|l| l.ends_with(&want)),
            "want {want:?} in:\n{login}"
        );
    }
    // `env` wins over the passwd entry.
    let custom = out("custom");
    for want in ["HOME=/custom", "SHELL=/bin/false", "USER=nobody"] {
        assert!(
            custom.lines().any(|l| l.ends_with(want)),
            "want {want:?} in:\n{custom}"
        );
    }
    assert_eq!(d.stop(20.0), 0);
    assert!(d.log_text().contains("heap allocations after startup: 0"));
}
