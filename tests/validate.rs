//! `coffeyd validate -c FILE` end to end: one test per error class, the
//! README example, warnings-only and valid configs. Each test writes its
//! config into its own temp directory and checks exit code and output
//! (`file:line:col`, service name, message).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_macros,
    clippy::disallowed_methods
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

struct Run {
    code: i32,
    out: String,
    file: PathBuf,
}

/// Runs `cmd -c FILE` (`cmd`: coffeyd and its words before `-c`);
/// stdout then stderr.
fn run_on(mut cmd: Command, file: &Path) -> Run {
    let o = cmd.arg("-c").arg(file).output().expect("run coffeyd");
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    Run {
        code: o.status.code().unwrap_or(-1),
        out,
        file: file.to_path_buf(),
    }
}

fn validate_file(file: &Path) -> Run {
    let mut c = Command::new(common::BIN);
    c.arg("validate");
    run_on(c, file)
}

fn validate(tag: &str, text: &str) -> Run {
    let dir = common::tempdir(tag);
    validate_file(&write(&dir, "config.yaml", text))
}

impl Run {
    /// Asserts a line `FILE:LINE:COL: error: service 'NAME': ...MSG...`.
    #[track_caller]
    fn has(&self, severity: &str, line: usize, col: usize, service: Option<&str>, msg: &str) {
        let mut prefix = format!("{}:{line}:{col}: {severity}: ", self.file.display());
        if let Some(s) = service {
            prefix.push_str(&format!("service '{s}': "));
        }
        assert!(
            self.out
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(msg)),
            "expected `{prefix}...{msg}` in:\n{}",
            self.out
        );
    }

    #[track_caller]
    fn error(&self, line: usize, col: usize, service: Option<&str>, msg: &str) {
        self.has("error", line, col, service, msg);
    }

    #[track_caller]
    fn failed(&self) -> &Self {
        assert_ne!(self.code, 0, "expected failure:\n{}", self.out);
        assert_eq!(self.code, 1, "config errors exit 1:\n{}", self.out);
        self
    }

    fn errors(&self) -> usize {
        self.out.lines().filter(|l| l.contains(": error: ")).count()
    }
}

const EXAMPLE: &str = "\
coffey:
  socket: /run/coffey.sock
  pid_file: /run/coffey.pid
  log:
    path: /data/logs/coffey.log
    console: true
services:
  - name: api
    binary: /usr/local/bin/api
    env:
      - PORT=8080
    restart: always
    healthcheck:
      readiness:
        type: http
        url: http://127.0.0.1:8080/healthz
        interval: 5s
  - name: frontend
    binary: /usr/bin/node
    args: [/opt/frontend/server.js]
    depends_on:
      - name: api
        condition: healthy
    restart: on-failure
    backoff:
      initial: 1s
      max: 30s
      multiplier: 2.0
";

#[test]
fn readme_example_with_real_binaries_is_valid() {
    let text = EXAMPLE
        .replace("/usr/local/bin/api", "/bin/sh")
        .replace("/usr/bin/node", "/bin/sh");
    let r = validate("example", &text);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("config OK: 2 services (0 warnings)"),
        "{}",
        r.out
    );
}

/// On a build host the target's binaries are absent: warnings, exit 0.
#[test]
fn readme_example_unchanged_only_warns_on_missing_binaries() {
    let r = validate("example-raw", EXAMPLE);
    for (bin, line, name) in [
        ("/usr/local/bin/api", 9, "api"),
        ("/usr/bin/node", 19, "frontend"),
    ] {
        if !Path::new(bin).exists() {
            r.has(
                "warning",
                line,
                13,
                Some(name),
                "not executable: No such file or directory (on this host",
            );
        }
    }
    assert_eq!(r.errors(), 0, "{}", r.out);
    assert_eq!(r.code, 0, "{}", r.out);
}

#[test]
fn valid_config_exits_zero() {
    let r = validate(
        "valid",
        "services:\n  - name: a\n    binary: /bin/sh\n    args: ['-c', 'sleep 1']\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("config OK: 1 services (0 warnings)"),
        "{}",
        r.out
    );
}

#[test]
fn warnings_only_exits_zero_and_prints_them() {
    let r = validate(
        "warn",
        "services:\n  - name: once\n    binary: /bin/sh\n    type: oneshot\n    restart: always\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        5,
        14,
        Some("once"),
        "oneshot with restart: always re-runs forever",
    );
    assert!(
        r.out.contains("config OK: 1 services (1 warnings)"),
        "{}",
        r.out
    );
}

#[test]
fn yaml_syntax_error() {
    let r = validate("syntax", "services:\n  - name: a\n   binary: /bin/sh\n");
    r.failed().error(3, 4, None, "invalid YAML");
}

#[test]
fn unknown_key() {
    let r = validate(
        "unknown",
        "services:\n  - name: a\n    binary: /bin/sh\n    colour: red\n",
    );
    r.failed().error(4, 5, Some("a"), "unknown field `colour`");
}

#[test]
fn bad_type() {
    let r = validate(
        "type",
        "services:\n  - name: a\n    binary: /bin/sh\n    max_restarts: lots\n",
    );
    r.failed().error(
        4,
        19,
        Some("a"),
        "invalid type: string \"lots\", expected u32",
    );
}

#[test]
fn bad_duration_and_size() {
    let r = validate(
        "dur",
        "coffey:\n  service_logs:\n    buffer: 4XB\nservices:\n  - name: a\n    binary: /bin/sh\n    stop_timeout: 5 parsecs\n",
    );
    r.failed();
    r.error(3, 13, None, "invalid size `4XB`");
    r.error(7, 19, Some("a"), "invalid duration `5 parsecs`");
}

#[test]
fn bad_enum_value() {
    let r = validate(
        "enum",
        "services:\n  - name: a\n    binary: /bin/sh\n    restart: sometimes\n",
    );
    r.failed().error(
        4,
        14,
        Some("a"),
        "unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`",
    );
}

#[test]
fn duplicate_name() {
    let r = validate(
        "dup",
        "services:\n  - name: a\n    binary: /bin/sh\n  - name: a\n    binary: /bin/sh\n",
    );
    let first = format!("first defined at {}:2:11", r.file.display());
    r.failed().error(4, 11, Some("a"), &first);
}

#[test]
fn invalid_name() {
    let r = validate(
        "name",
        "services:\n  - name: .hidden\n    binary: /bin/sh\n",
    );
    r.failed()
        .error(2, 11, Some(".hidden"), "must not start with '.' or '-'");
}

#[test]
fn missing_dependency() {
    let r = validate(
        "missing-dep",
        "services:\n  - name: a\n    binary: /bin/sh\n    depends_on:\n      - ghost\n",
    );
    r.failed()
        .error(5, 9, Some("a"), "depends on 'ghost', which is not defined");
}

#[test]
fn self_dependency() {
    let r = validate(
        "self-dep",
        "services:\n  - name: a\n    binary: /bin/sh\n    depends_on:\n      - a\n",
    );
    r.failed().error(5, 9, Some("a"), "depends on itself");
}

#[test]
fn dependency_cycle() {
    let r = validate(
        "cycle",
        "services:
  - name: a
    binary: /bin/sh
    depends_on:
      - b
  - name: b
    binary: /bin/sh
    depends_on:
      - c
  - name: c
    binary: /bin/sh
    depends_on:
      - a
",
    );
    r.failed()
        .error(5, 9, Some("a"), "dependency cycle: a -> b -> c -> a");
}

#[test]
fn relative_binary() {
    let r = validate("rel", "services:\n  - name: a\n    binary: bin/api\n");
    r.failed()
        .error(3, 13, Some("a"), "must be an absolute path");
}

/// issue 8 point 2: a missing binary is a fact about the target, not the
/// config: a warning on this host (the service will retry), exit 0.
#[test]
fn missing_binary_is_a_warning_on_this_host() {
    let r = validate(
        "nobin",
        "services:\n  - name: a\n    binary: /nonexistent/api\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        3,
        13,
        Some("a"),
        "binary /nonexistent/api is not executable: No such file or directory (on this host; the service fails to start and is retried until it is fixed)",
    );
}

#[test]
fn non_executable_binary_is_a_warning_on_this_host() {
    let dir = common::tempdir("noexec");
    let tool = write(&dir, "tool", "#!/bin/sh\n");
    let r = validate_file(&write(
        &dir,
        "config.yaml",
        &format!("services:\n  - name: a\n    binary: {}\n", tool.display()),
    ));
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        3,
        13,
        Some("a"),
        "not executable: Permission denied",
    );
}

#[test]
fn unknown_user_and_group_are_warnings_on_this_host() {
    let r = validate(
        "user",
        "services:\n  - name: a\n    binary: /bin/sh\n    user: no-such-user-coffey\n    group: no-such-group-coffey\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        4,
        11,
        Some("a"),
        "user not found: no-such-user-coffey",
    );
    r.has(
        "warning",
        5,
        12,
        Some("a"),
        "group not found: no-such-group-coffey",
    );
}

fn validate_root(file: &Path, root: &Path, json: bool) -> Run {
    let mut c = Command::new(common::BIN);
    if json {
        c.arg("-j");
    }
    c.args(["validate", "--root"]).arg(root);
    run_on(c, file)
}

/// `validate --root DIR`: binaries, users and groups are checked in the
/// image tree, and there a missing one is an error. Symlinks (usr-merge,
/// absolute links) resolve inside the image.
#[test]
fn validate_root_checks_the_image_and_its_findings_are_errors() {
    use std::os::unix::fs::PermissionsExt;
    let root = common::tempdir("image");
    write(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nweb:x:33:33:web:/var/www:/sbin/nologin\n",
    );
    write(&root, "etc/group", "root:x:0:\nweb:x:33:\n");
    let app = write(&root, "opt/web/server", "#!/bin/sh\n");
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::os::unix::fs::symlink("/opt/web/server", root.join("usr/bin/web")).unwrap();
    let dir = common::tempdir("image-cfg");
    let good = write(
        &dir,
        "good.yaml",
        "services:\n  - name: web\n    binary: /bin/web\n    user: web\n    group: web\n",
    );
    let r = validate_root(&good, &root, false);
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("config OK: 1 services (0 warnings)"),
        "{}",
        r.out
    );

    // Valid on this host (warnings at most), errors against the image.
    let bad = write(
        &dir,
        "bad.yaml",
        "services:\n  - name: sh\n    binary: /bin/sh\n    user: root\n  - name: web\n    binary: /bin/web\n    user: www-data\n    group: www-data\n",
    );
    assert_eq!(validate_file(&bad).code, 0);
    let r = validate_root(&bad, &root, false);
    r.failed();
    let img = root.display();
    r.error(
        3,
        13,
        Some("sh"),
        &format!("binary /bin/sh is not executable: No such file or directory (in {img})"),
    );
    r.error(
        7,
        11,
        Some("web"),
        &format!("user not found: www-data (in {img})"),
    );
    r.error(
        8,
        12,
        Some("web"),
        &format!("group not found: www-data (in {img})"),
    );
    assert_eq!(r.errors(), 3, "{}", r.out);
    // The JSON form takes --root too.
    let j = validate_root(&bad, &root, true);
    assert_eq!(j.code, 1, "{}", j.out);
    let v: serde_json::Value = serde_json::from_str(&j.out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 3, "{}", j.out);
}

#[test]
fn bad_env_entries() {
    let r = validate(
        "env",
        "services:\n  - name: a\n    binary: /bin/sh\n    env:\n      - NOVALUE\n      - =x\n",
    );
    r.failed();
    r.error(5, 9, Some("a"), "env entry 'NOVALUE' is not KEY=VALUE");
    r.error(6, 9, Some("a"), "env entry '=x' has an empty key");
}

#[test]
fn capacity_below_service_count() {
    let r = validate(
        "cap",
        "coffey:\n  limits:\n    services: 1\nservices:\n  - {name: a, binary: /bin/sh}\n  - {name: b, binary: /bin/sh}\n",
    );
    r.failed()
        .error(3, 15, None, "capacity below the number of services");
}

#[test]
fn bad_backoff() {
    let r = validate(
        "backoff",
        "services:
  - name: a
    binary: /bin/sh
    backoff:
      multiplier: 0.5
  - name: b
    binary: /bin/sh
    backoff:
      initial: 2m
      max: 1m
      multiplier: 1000
",
    );
    r.failed();
    r.error(
        5,
        19,
        Some("a"),
        "backoff.multiplier must be a finite number >= 1.0",
    );
    r.error(
        10,
        12,
        Some("b"),
        "backoff.initial (2m) is larger than backoff.max (1m)",
    );
    r.error(11, 19, Some("b"), "backoff.multiplier must be at most 100");
}

#[test]
fn completed_on_non_oneshot() {
    let r = validate(
        "completed",
        "services:
  - name: db
    binary: /bin/sh
  - name: web
    binary: /bin/sh
    depends_on:
      - name: db
        condition: completed
",
    );
    r.failed().error(
        8,
        20,
        Some("web"),
        "condition completed on 'db', which is not type: oneshot",
    );
}

#[test]
fn healthy_without_readiness_is_a_warning() {
    let r = validate(
        "healthy",
        "services:
  - name: db
    binary: /bin/sh
  - name: web
    binary: /bin/sh
    depends_on:
      - name: db
        condition: healthy
",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        8,
        20,
        Some("web"),
        "condition healthy on 'db': dependency has no readiness check; `healthy` means started",
    );
}

#[test]
fn bad_healthcheck() {
    let r = validate(
        "health",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      readiness:
        type: http
        url: ftp://x/
      liveness:
        type: tcp
        address: nohost
",
    );
    r.failed();
    r.error(7, 14, Some("a"), "must start with http://");
    r.error(10, 18, Some("a"), "must be host:port");
}

#[test]
fn healthcheck_url_host_must_be_an_ip_address() {
    let r = validate(
        "url-host",
        "services:
  - name: api
    binary: /bin/sh
    healthcheck:
      readiness:
        type: http
        url: http://example.com:8080/healthz
",
    );
    r.failed().error(
        7,
        14,
        Some("api"),
        "url host 'example.com' must be an IP address or localhost (there is no DNS at boot)",
    );
    assert_eq!(r.errors(), 1, "{}", r.out);
}

#[test]
fn notify_fd_below_3() {
    let r = validate(
        "notify-fd",
        "services:
  - name: db
    binary: /bin/sh
    healthcheck:
      readiness:
        type: notify
        fd: 1
",
    );
    r.failed().error(
        7,
        13,
        Some("db"),
        "fd must be 3 or more (0-2 are stdin/out/err)",
    );
    assert_eq!(r.errors(), 1, "{}", r.out);
}

#[test]
fn watchdog_on_a_non_notify_check() {
    let r = validate(
        "watchdog",
        "services:
  - name: cache
    binary: /bin/sh
    healthcheck:
      readiness:
        type: tcp
        address: 127.0.0.1:6379
        watchdog: 30s
",
    );
    r.failed().error(
        8,
        19,
        Some("cache"),
        "healthcheck.readiness.watchdog is not used by type tcp",
    );
    assert_eq!(r.errors(), 1, "{}", r.out);
}

/// A bare name in an exec check's list is looked up in the service's
/// PATH at each probe, as a service's `command` is: a warning when it is
/// not there now. A relative path with a `/` is an error.
#[test]
fn exec_check_with_a_bare_name_or_a_relative_command() {
    let r = validate(
        "exec-rel",
        "services:
  - name: cache
    binary: /bin/sh
    env: {PATH: /nonexistent}
    healthcheck:
      liveness:
        type: exec
        command: [coffey-surely-missing, ping]
      readiness:
        type: exec
        command: [bin/check]
",
    );
    r.has(
        "warning",
        8,
        18,
        Some("cache"),
        "healthcheck.liveness: program 'coffey-surely-missing' is not in PATH /nonexistent",
    );
    r.failed().error(
        11,
        18,
        Some("cache"),
        "exec check command 'bin/check' must be an absolute path or a bare name looked up in PATH",
    );
    assert_eq!(r.errors(), 1, "{}", r.out);
}

#[test]
fn new_healthcheck_keys_are_valid() {
    let r = validate(
        "health-ok",
        "services:
  - name: db
    binary: /bin/sh
    start_timeout: 1m
    healthcheck:
      readiness:
        type: notify
        watchdog: 30s
      liveness:
        type: tcp
        address: localhost:5432
  - name: api
    binary: /bin/sh
    depends_on:
      - name: db
        condition: healthy
    healthcheck:
      readiness:
        type: http
        url: http://[::1]:8080/healthz
        success_threshold: 2
        expect_status: 204
      liveness:
        type: exec
        command: [/bin/sh, -c, 'true']
  - name: s6style
    binary: /bin/sh
    healthcheck:
      readiness: {type: notify, fd: 3}
",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("config OK: 3 services (0 warnings)"),
        "{}",
        r.out
    );
}

#[test]
fn every_problem_is_reported_with_a_summary() {
    let r = validate(
        "many",
        "services:
  - name: a
    binary: relative
    restart: bad
  - name: b
    binary: /bin/sh
    depends_on: [zz]
",
    );
    r.failed();
    r.error(3, 13, Some("a"), "must be an absolute path");
    r.error(4, 14, Some("a"), "unknown variant `bad`");
    r.error(7, 17, Some("b"), "depends on 'zz', which is not defined");
    assert!(r.out.contains("3 error(s), 0 warning(s)"), "{}", r.out);
}

#[test]
fn dropin_errors_name_their_file() {
    let dir = common::tempdir("dropin");
    let main = write(
        &dir,
        "config.yaml",
        "services:\n  - {name: a, binary: /bin/sh}\n",
    );
    let dropin = write(
        &dir,
        "services.d/b.yaml",
        "name: b\nbinary: /bin/sh\nrestart: maybe\n",
    );
    let r = validate_file(&main);
    r.failed();
    assert!(
        r.out.contains(&format!(
            "{}:3:10: error: service 'b': restart: unknown variant `maybe`",
            dropin.display()
        )),
        "{}",
        r.out
    );
}

#[test]
fn missing_file() {
    let r = validate_file(Path::new("/nonexistent/coffey.yaml"));
    r.failed();
    assert!(r.out.contains("cannot read config"), "{}", r.out);
}

#[test]
fn valid_config_prints_the_preallocation_budget() {
    let one = "  - name: a\n    binary: /bin/sh\n    log:\n      buffer: 8KiB\n";
    let r = validate(
        "budget",
        &format!("coffey:\n  limits:\n    services: 10\n    clients: 4\nservices:\n{one}"),
    );
    assert_eq!(r.code, 0, "{}", r.out);
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with("budget:"))
        .expect("budget line");
    assert!(line.contains("10 service slots (1 configured)"), "{line}");
    // One 8 KiB ring plus nine spare slots at the default 4 KiB.
    assert!(line.contains("log rings 44 KiB"), "{line}");
    // 12 for the daemon, 13 per slot (9, 2 for its cgroup and 2 for a
    // logger pipe), 1 per client.
    assert!(line.ends_with("file descriptors: 146"), "{line}");
}

#[test]
fn invalid_config_prints_no_budget() {
    let r = validate("nobudget", "services:\n  - name: a\n    binary: relative\n");
    assert_eq!(r.code, 1);
    assert!(!r.out.contains("budget:"), "{}", r.out);
}

#[test]
fn bad_hostname() {
    let r = validate(
        "hostname",
        "coffey:\n  hostname: my_box\nservices:\n  - name: a\n    binary: /bin/sh\n",
    );
    r.failed()
        .error(2, 13, None, "hostname 'my_box' has invalid characters");
    assert_eq!(r.errors(), 1, "{}", r.out);
}

#[test]
fn relative_mount_target() {
    let r = validate(
        "mount-target",
        "coffey:
  mounts:
    - type: tmpfs
      target: run/lock
      options: nosuid,nodev,mode=0755
    - target: /data
",
    );
    r.failed().error(
        4,
        15,
        None,
        "mount target 'run/lock' must be an absolute path",
    );
    r.error(6, 7, None, "mounts[1]: missing required key 'type'");
    assert_eq!(r.errors(), 2, "{}", r.out);
}

#[test]
fn undefined_main_service() {
    let r = validate(
        "main",
        "coffey:\n  main: ap\n  emergency: /no/such/shell\nservices:\n  - name: app\n    binary: /bin/sh\n",
    );
    r.failed()
        .error(2, 9, None, "main service 'ap' is not defined");
    assert_eq!(r.errors(), 1, "{}", r.out);
}

/// issue 8 point 9: `backoff.initial: 0s` restarts at once; validate says
/// what that means for a crashing service, and the config is valid.
#[test]
fn zero_backoff_is_allowed_with_a_warning() {
    let r = validate(
        "backoff0",
        "services:\n  - name: a\n    binary: /bin/sh\n    backoff:\n      initial: 0s\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    r.has(
        "warning",
        5,
        16,
        Some("a"),
        "backoff.initial is 0: a service that keeps crashing is restarted at once, in a loop without delay",
    );
    assert!(
        r.out.contains("config OK: 1 services (1 warnings)"),
        "{}",
        r.out
    );
}

// ---- issue 8 point 3: validate and the daemon agree on every limit.

/// A config at or past one limit: the whole `services:` body and the
/// daemon log line that shows the daemon ran it (at the limit).
struct LimitCase {
    what: &'static str,
    at: String,
    past: String,
    /// Part of the one error both must print past the limit.
    message: String,
    /// Log line proving the at-limit service really ran.
    ran: &'static str,
}

fn args_yaml(n: usize) -> String {
    // argv[1..] = -c, 'exit 0', then fillers: n entries in all.
    let fill: Vec<String> = (0..n - 2).map(|i| format!("a{i}")).collect();
    format!("[-c, 'exit 0', {}]", fill.join(", "))
}

fn limit_cases(dir: &Path) -> Vec<LimitCase> {
    let oneshot =
        |extra: &str| format!("  - name: t\n    binary: /bin/sh\n    type: oneshot\n{extra}");
    let envs = |n: usize| -> String {
        let list: String = (0..n).map(|i| format!("      - E{i}=v\n")).collect();
        oneshot(&format!("    args: [-c, 'exit 0']\n    env:\n{list}"))
    };
    // /bin/sh\0 + /\0 + -c\0 + exit 0\0 = 20 bytes, then BIG=...\0.
    let big = |n: usize| {
        oneshot(&format!(
            "    args: [-c, 'exit 0']\n    env: [BIG={}]\n",
            "x".repeat(n)
        ))
    };
    let deps = |n: usize| -> String {
        let mut s: String = (0..17)
            .map(|i| format!("  - {{name: d{i}, binary: /bin/true, type: oneshot}}\n"))
            .collect();
        let names: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
        s.push_str(&oneshot(&format!(
            "    args: [-c, 'exit 0']\n    depends_on: [{}]\n",
            names.join(", ")
        )));
        s
    };
    let named = |len: usize| {
        let name = "n".repeat(len);
        format!(
            "  - name: {name}\n    binary: /bin/sh\n    type: oneshot\n    args: [-c, 'exit 0']\n"
        )
    };
    let check = |n: usize| {
        let fill: Vec<String> = (0..n - 3).map(|i| format!("c{i}")).collect();
        format!(
            "  - name: t\n    binary: /bin/sh\n    args: [-c, 'exec sleep 60']\n    healthcheck:\n      readiness:\n        type: exec\n        interval: 100ms\n        command: [/bin/sh, -c, 'exit 0', {}]\n",
            fill.join(", ")
        )
    };
    // A log file path of exactly `len` bytes under `dir`.
    let logged = |len: usize| {
        let base = dir.join("logs").display().to_string();
        let mut p = base.clone();
        while p.len() + 101 < len {
            p.push_str(&format!("/{}", "d".repeat(99)));
        }
        let left = len - p.len() - 1;
        p.push('/');
        p.push_str(&"f".repeat(left));
        std::fs::create_dir_all(Path::new(&p).parent().unwrap()).unwrap();
        assert_eq!(p.len(), len);
        oneshot(&format!(
            "    args: [-c, 'echo hi']\n    log:\n      file: {p}\n"
        ))
    };
    vec![
        LimitCase {
            what: "args",
            at: oneshot(&format!("    args: {}\n", args_yaml(128))),
            past: oneshot(&format!("    args: {}\n", args_yaml(129))),
            message: "args: 129 entries, the most is 128".into(),
            ran: "t: completed",
        },
        LimitCase {
            what: "env count",
            at: envs(64),
            past: envs(65),
            message: "env: 65 entries, the most is 64".into(),
            ran: "t: completed",
        },
        LimitCase {
            what: "exec buffer (one env entry over 8 KiB)",
            at: big(8192 - 20 - 5),
            past: big(8192 - 20 - 4),
            message: "binary, working_dir, args and env take 8193 bytes, the most is 8192 (8 KiB)"
                .into(),
            ran: "t: completed",
        },
        LimitCase {
            what: "depends_on",
            at: deps(16),
            past: deps(17),
            message: "depends_on: 17 entries, the most is 16".into(),
            ran: "t: completed",
        },
        LimitCase {
            what: "name length",
            at: named(31),
            past: named(32),
            message: "is too long (32 characters, at most 31)".into(),
            ran: "completed",
        },
        LimitCase {
            what: "exec check command",
            at: check(129),
            past: check(130),
            message: "healthcheck.readiness.command: 130 entries, the most is 129".into(),
            ran: "t: ready",
        },
        LimitCase {
            what: "log file path",
            at: logged(500),
            past: logged(501),
            message: "bytes, the most is 500".into(),
            ran: "t: completed",
        },
    ]
}

/// The config the daemon runs: private socket, pid file and log.
fn daemon_config(dir: &Path, tag: &str, services: &str) -> PathBuf {
    let text = format!(
        "coffey:\n  socket: {d}/{tag}.sock\n  pid_file: {d}/{tag}.pid\n  log:\n    path: {d}/{tag}.log\n    console: false\nservices:\n{services}",
        d = dir.display()
    );
    write(dir, &format!("{tag}.yaml"), &text)
}

/// The `error:` lines of an output.
fn error_lines(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(": error: "))
        .map(str::to_owned)
        .collect()
}

/// Runs the daemon on `cfg`: Ok(log) once `ran` is logged (then stops
/// it), Err(stderr) when it refuses to start.
fn daemon_verdict(cfg: &Path, ran: &str) -> Result<String, String> {
    let log = cfg.with_extension("log");
    let err = cfg.with_extension("stderr");
    let mut child = Command::new(common::BIN)
        .arg("-c")
        .arg(cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let verdict = common::wait_for(10.0, "the daemon to run or refuse", || {
        if let Some(st) = child.try_wait().unwrap() {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            return Some(Err(format!("{st}\n{text}")));
        }
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains(ran).then_some(Ok(t))
    });
    if verdict.is_ok() {
        stop_daemon(&mut child);
    }
    verdict
}

/// SIGTERM to a daemon started by hand; it must exit 0 within 10 s.
fn stop_daemon(child: &mut std::process::Child) {
    common::signal(child.id() as i32, 15);
    let st = common::wait_for(10.0, "daemon exit", || child.try_wait().unwrap());
    assert!(st.success(), "{st}");
}

#[test]
fn validate_and_the_daemon_agree_at_and_past_every_limit() {
    let dir = common::tempdir("limits");
    for (k, case) in limit_cases(&dir).into_iter().enumerate() {
        let at = daemon_config(&dir, &format!("at{k}"), &case.at);
        let r = validate_file(&at);
        assert_eq!(
            r.code, 0,
            "{}: validate refused the limit:\n{}",
            case.what, r.out
        );
        if let Err(e) = daemon_verdict(&at, case.ran) {
            panic!("{}: the daemon refused the limit:\n{e}", case.what);
        }

        let past = daemon_config(&dir, &format!("past{k}"), &case.past);
        let r = validate_file(&past);
        assert_eq!(
            r.code, 1,
            "{}: validate accepted past the limit:\n{}",
            case.what, r.out
        );
        let errors = error_lines(&r.out);
        assert_eq!(errors.len(), 1, "{}: {}", case.what, r.out);
        assert!(
            errors[0].contains(&case.message)
                && errors[0].starts_with(&format!("{}:", past.display())),
            "{}: {}",
            case.what,
            errors[0]
        );
        // file:line:col, then the same words from the daemon.
        let pos = errors[0].split(": error: ").next().unwrap();
        assert_eq!(
            pos.split(':').count(),
            3,
            "{}: no line:col in {pos}",
            case.what
        );
        match daemon_verdict(&past, case.ran) {
            Ok(log) => panic!("{}: the daemon ran past the limit:\n{log}", case.what),
            Err(stderr) => {
                assert!(
                    stderr.starts_with("exit status: 1"),
                    "{}: {stderr}",
                    case.what
                );
                assert_eq!(error_lines(&stderr), errors, "{}: {stderr}", case.what);
            }
        }
    }
}

/// A reload is judged by the same function: refused with the same words,
/// and the running config stays.
#[test]
fn reload_refuses_past_a_limit_with_validates_words() {
    let dir = common::tempdir("limits-reload");
    let envs = |n: usize| -> String {
        let list: String = (0..n).map(|i| format!("      - E{i}=v\n")).collect();
        format!(
            "  - name: t\n    binary: /bin/sh\n    args: [-c, 'exec sleep 60']\n    env:\n{list}"
        )
    };
    let cfg = daemon_config(&dir, "r", &envs(64));
    let log = dir.join("r.log");
    let mut child = Command::new(common::BIN)
        .arg("-c")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::wait_for(10.0, "t spawned", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("t: spawned").then_some(())
    });
    let past = daemon_config(&dir, "past", &envs(65));
    let errors = error_lines(&validate_file(&past).out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    std::fs::copy(&past, &cfg).unwrap();
    let out = Command::new(common::BIN)
        .arg("-c")
        .arg(&cfg)
        .arg("reload")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = errors[0].replace(&past.display().to_string(), &cfg.display().to_string());
    assert!(text.contains(&want), "want {want:?} in:\n{text}");
    stop_daemon(&mut child);
}

#[test]
fn rlimits_with_an_unknown_name_or_soft_above_hard_are_errors() {
    let r = validate(
        "rlimits",
        "services:
  - name: a
    binary: /bin/sh
    rlimits:
      nofiles: 1024
  - name: b
    binary: /bin/sh
    rlimits:
      nofile: 4096:1024
      core: 0
",
    );
    r.failed();
    r.error(5, 7, Some("a"), "rlimits: unknown field `nofiles`");
    r.error(
        9,
        15,
        Some("b"),
        "rlimits.nofile: the soft limit 4096 is above the hard limit 1024",
    );
    assert_eq!(r.errors(), 2, "{}", r.out);
    let good = validate(
        "rlimitsok",
        "services:\n  - name: a\n    binary: /bin/sh\n    rlimits: {nofile: 1024:4096, core: 0, nproc: {soft: 50, hard: unlimited}}\n",
    );
    assert_eq!(good.code, 0, "{}", good.out);
}

/// Torture case 10 found it: 100,000 levels of flow nesting on one line
/// took the YAML scanner 80 s (quadratic) before its recursion limit
/// refused it. The nesting is counted first: refused at once, with where.
#[test]
fn deep_flow_nesting_is_refused_quickly() {
    for open in ["[", "{a: "] {
        let close = if open == "[" { "]" } else { "}" };
        let text = format!(
            "services:\n  - name: deep\n    binary: /bin/true\n    args: {}{}\n",
            open.repeat(100_000),
            close.repeat(100_000)
        );
        let dir = common::tempdir("deep");
        let file = write(&dir, "config.yaml", &text);
        let t0 = std::time::Instant::now();
        let o = common::cli_with(&["validate", "-c", file.to_str().unwrap()], 10.0, |_| {});
        assert!(t0.elapsed().as_secs() < 5, "took {:?}", t0.elapsed());
        assert_eq!(o.code, 1, "{o:?}");
        let want = format!("{}:4:", file.display());
        assert!(
            o.stdout.contains(&want) || o.stderr.contains(&want),
            "{o:?}"
        );
        assert!(
            (o.stdout.clone() + &o.stderr).contains("nested deeper than 128 levels"),
            "{o:?}"
        );
    }
}

/// A short check interval with the default timeout is no overlap warning:
/// the timeout defaults to the smaller of the interval and 5 s, for every
/// kind of check. A timeout set above the interval still warns.
#[test]
fn a_short_interval_alone_does_not_warn_of_overlap() {
    let checks = "    healthcheck:\n      readiness: {type: tcp, address: '127.0.0.1:1', interval: 200ms}\n      liveness: {type: tcp, address: '127.0.0.1:1', interval: 200ms}\n      startup: {type: tcp, address: '127.0.0.1:1', interval: 200ms}\n";
    let r = validate(
        "nooverlap",
        &format!("services:\n  - name: a\n    binary: /bin/sh\n{checks}"),
    );
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out.contains("config OK: 1 services (0 warnings)"),
        "{}",
        r.out
    );
    let r = validate(
        "overlap",
        "services:\n  - name: a\n    binary: /bin/sh\n    healthcheck:\n      liveness: {type: tcp, address: '127.0.0.1:1', interval: 200ms, timeout: 1s}\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    assert!(
        r.out
            .contains("healthcheck.liveness.timeout (1s) is larger than its interval (200ms)"),
        "{}",
        r.out
    );
}

#[test]
fn log_to_unknown_service() {
    let r = validate(
        "log-to-unknown",
        "services:\n  - name: a\n    binary: /bin/sh\n    log:\n      to: ghost\n",
    );
    r.failed()
        .error(5, 11, Some("a"), "log.to 'ghost': no such service");
}

#[test]
fn log_to_itself() {
    let r = validate(
        "log-to-self",
        "services:\n  - name: a\n    binary: /bin/sh\n    log: {to: a}\n",
    );
    r.failed().error(
        4,
        10,
        Some("a"),
        "log.to 'a': a service cannot log to itself",
    );
}

#[test]
fn logger_cycle() {
    let r = validate(
        "log-cycle",
        "services:
  - name: a
    binary: /bin/sh
    log:
      to: b
  - name: b
    binary: /bin/sh
    log:
      to: c
  - name: c
    binary: /bin/sh
    log:
      to: a
  - name: d
    binary: /bin/sh
    log:
      to: a
",
    );
    r.failed()
        .error(5, 11, Some("a"), "logger cycle: a -> b -> c -> a");
    assert_eq!(r.errors(), 1, "one cycle, one error:\n{}", r.out);
}

#[test]
fn loggers_chain_and_share() {
    let r = validate(
        "log-chain",
        "services:
  - name: a
    binary: /bin/sh
    log: {to: b}
  - name: c
    binary: /bin/sh
    log: {to: b}
  - name: b
    binary: /bin/sh
    log: {to: d}
  - name: d
    binary: /bin/sh
",
    );
    assert_eq!(r.code, 0, "{}", r.out);
}

/// A config with the top-level `fds:` table below and one service `a`
/// whose `fds:` mapping is `items` (each line `      N: REF`).
fn fds_config(items: &str, extra: &str) -> String {
    format!(
        "fds:\n  web:\n    listen: tcp://127.0.0.1:8080\n  key:\n    file: /etc/hostname\n  \
         p:\n    pipe: {{}}\nservices:\n  - name: a\n    binary: /bin/true\n    fds:\n{items}{extra}"
    )
}

#[test]
fn fds_references_are_checked_with_their_positions() {
    let r = validate(
        "fdsref",
        &fds_config(
            "      3: web\n      4: nope\n      5: p\n      6: key.read\n      7: p.write\n",
            "",
        ),
    );
    r.failed();
    r.error(
        13,
        10,
        Some("a"),
        "'nope' is not an entry of the top-level fds table",
    );
    r.error(
        14,
        10,
        Some("a"),
        "'p' is a pipe: use 'p.read' or 'p.write'",
    );
    r.error(
        15,
        10,
        Some("a"),
        "'key' is not a pipe, so it has no '.read' or '.write'",
    );
    assert_eq!(r.errors(), 3, "{}", r.out);
}

#[test]
fn fds_numbers_are_checked() {
    let r = validate(
        "fdsnum",
        &fds_config(
            "      3: web\n      2: key\n      32: p.read\n      x: p.write\n      5: p.write\n",
            "    healthcheck:\n      readiness:\n        type: notify\n        fd: 5\n",
        ),
    );
    r.failed();
    r.error(
        13,
        10,
        Some("a"),
        "fds: 2 is stdin, stdout or stderr; use 3 to 31",
    );
    r.error(14, 11, Some("a"), "fds: 32 is above the highest number, 31");
    r.error(
        15,
        10,
        Some("a"),
        "fds: 'x' is not a descriptor number (3 to 31)",
    );
    r.error(
        16,
        10,
        Some("a"),
        "fds: descriptor 5 is the readiness check's notify fd",
    );
    assert_eq!(r.errors(), 4, "{}", r.out);
    let dup = validate("fdsdup", &fds_config("      3: web\n      3: key\n", ""));
    dup.failed()
        .error(12, 7, None, "duplicate entry with key 3");
}

#[test]
fn fds_entries_are_checked() {
    let r = validate(
        "fdsent",
        "fds:\n  a:\n    listen: tcp://127.0.0.1:99999\n  b:\n    listen: http://x\n  \
         c:\n    listen: unix:/run/c.sock\n    mode: \"0999\"\n  d:\n    file: /etc/hostname\n    \
         mode: x\n  e:\n    pipe: {}\n    file: /etc/hostname\n  f:\n    listen: udp://[::1]:53\n    \
         backlog: 5\nservices:\n  - name: s\n    binary: /bin/true\n",
    );
    r.failed();
    r.error(
        3,
        13,
        None,
        "fds entry 'a': listen address '127.0.0.1:99999' must be host:port",
    );
    r.error(
        5,
        13,
        None,
        "listen 'http://x' must be tcp://HOST:PORT, udp://HOST:PORT or unix:PATH",
    );
    r.error(8, 11, None, "fds entry 'c': mode '0999' must be octal");
    r.error(
        11,
        11,
        None,
        "fds entry 'd': file mode 'x' must be r, w or a",
    );
    r.error(
        12,
        3,
        None,
        "fds entry 'e' needs exactly one of `listen`, `file` or `pipe`",
    );
    r.error(17, 14, None, "fds entry 'f': `backlog` does not apply");
    assert_eq!(r.errors(), 6, "{}", r.out);
}

#[test]
fn fds_warn_about_unused_entries_and_gaps() {
    let r = validate("fdswarn", &fds_config("      3: web\n      5: key\n", ""));
    assert_eq!(r.code, 0, "{}", r.out);
    r.has("warning", 6, 3, None, "fds entry 'p' is used by no service");
    r.has(
        "warning",
        11,
        5,
        Some("a"),
        "do not run from 3 without gaps",
    );
    assert!(!r.out.contains("'web' is used by no service"), "{}", r.out);
}

/// The budget's descriptors count the `fds:` table (two for a pipe) and
/// the numbers the spawn holds for the largest per-service `fds:`.
#[test]
fn the_budget_counts_the_fds_table() {
    let r = validate(
        "budgetfds",
        "coffey:\n  limits:\n    services: 10\n    clients: 4\nfds:\n  web:\n    listen: tcp://127.0.0.1:8080\n  p:\n    pipe: {}\nservices:\n  - name: a\n    binary: /bin/sh\n    fds:\n      3: web\n      4: p.read\n",
    );
    assert_eq!(r.code, 0, "{}", r.out);
    let line = r
        .out
        .lines()
        .find(|l| l.starts_with("budget:"))
        .expect("budget line");
    // 146 as above, 2 + 2 for the table's two entries, 2 held numbers.
    assert!(line.ends_with("file descriptors: 152"), "{line}");
}
