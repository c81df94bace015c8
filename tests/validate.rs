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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn tmpdir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("coffey-validate-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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

fn validate_file(file: &Path) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_coffeyd"))
        .arg("validate")
        .arg("-c")
        .arg(file)
        .output()
        .expect("run coffeyd");
    let mut out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&o.stderr));
    Run {
        code: o.status.code().unwrap_or(-1),
        out,
        file: file.to_path_buf(),
    }
}

fn validate(tag: &str, text: &str) -> Run {
    let dir = tmpdir(tag);
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

#[test]
fn readme_example_unchanged_only_fails_on_missing_binaries() {
    let r = validate("example-raw", EXAMPLE);
    let mut expected = 0;
    for (bin, line, name) in [
        ("/usr/local/bin/api", 9, "api"),
        ("/usr/bin/node", 19, "frontend"),
    ] {
        if !Path::new(bin).exists() {
            expected += 1;
            r.error(
                line,
                13,
                Some(name),
                "not executable: No such file or directory",
            );
        }
    }
    assert_eq!(r.errors(), expected, "{}", r.out);
    assert_eq!(r.code, if expected > 0 { 1 } else { 0 }, "{}", r.out);
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

#[test]
fn missing_binary() {
    let r = validate(
        "nobin",
        "services:\n  - name: a\n    binary: /nonexistent/api\n",
    );
    r.failed().error(
        3,
        13,
        Some("a"),
        "not executable: No such file or directory",
    );
}

#[test]
fn non_executable_binary() {
    let dir = tmpdir("noexec");
    let tool = write(&dir, "tool", "#!/bin/sh\n");
    let r = validate_file(&write(
        &dir,
        "config.yaml",
        &format!("services:\n  - name: a\n    binary: {}\n", tool.display()),
    ));
    r.failed()
        .error(3, 13, Some("a"), "not executable: Permission denied");
}

#[test]
fn unknown_user_and_group() {
    let r = validate(
        "user",
        "services:\n  - name: a\n    binary: /bin/sh\n    user: no-such-user-coffey\n    group: no-such-group-coffey\n",
    );
    r.failed();
    r.error(4, 11, Some("a"), "unknown user 'no-such-user-coffey'");
    r.error(5, 12, Some("a"), "unknown group 'no-such-group-coffey'");
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

#[test]
fn exec_check_with_a_relative_command() {
    let r = validate(
        "exec-rel",
        "services:
  - name: cache
    binary: /bin/sh
    healthcheck:
      liveness:
        type: exec
        command: [redis-cli, ping]
",
    );
    r.failed().error(
        7,
        18,
        Some("cache"),
        "exec check command must be an absolute path",
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
    let dir = tmpdir("dropin");
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
    // 12 for the daemon, 9 per slot, 1 per client.
    assert!(line.ends_with("file descriptors: 106"), "{line}");
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
