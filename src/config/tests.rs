//! Unit tests for the loader: defaults, layouts, every validation error and
//! a few exact positions. Files go to unique directories under temp_dir.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn tmpdir(tag: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "coffey-config-test-{}-{tag}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn load_text(tag: &str, text: &str) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    let dir = tmpdir(tag);
    load(&write(&dir, "config.yaml", text))
}

fn ok(tag: &str, text: &str) -> (Config, Vec<Diag>) {
    match load_text(tag, text) {
        Ok(v) => v,
        Err(d) => panic!("expected OK, got:\n{}", render(&d)),
    }
}

fn errs(tag: &str, text: &str) -> Vec<Diag> {
    match load_text(tag, text) {
        Ok((c, _)) => panic!("expected errors, got OK: {c:?}"),
        Err(d) => d,
    }
}

fn render(d: &[Diag]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}

/// Asserts a diagnostic with this position, service and message part.
#[track_caller]
fn expect(d: &[Diag], sev: Severity, line: usize, col: usize, service: Option<&str>, msg: &str) {
    let found = d.iter().any(|x| {
        x.severity == sev
            && x.line == line
            && x.col == col
            && x.service.as_deref() == service
            && x.message.contains(msg)
    });
    assert!(
        found,
        "no {sev:?} at {line}:{col} service {service:?} containing {msg:?} in:\n{}",
        render(d)
    );
}

#[track_caller]
fn expect_err(d: &[Diag], line: usize, col: usize, service: Option<&str>, msg: &str) {
    expect(d, Severity::Error, line, col, service, msg);
}

fn count(d: &[Diag], sev: Severity) -> usize {
    d.iter().filter(|x| x.severity == sev).count()
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
fn example_loads_with_real_binaries() {
    let text = EXAMPLE
        .replace("/usr/local/bin/api", "/bin/sh")
        .replace("/usr/bin/node", "/bin/sh");
    let (c, warnings) = ok("example", &text);
    assert!(warnings.is_empty(), "{}", render(&warnings));
    assert_eq!(c.socket, PathBuf::from("/run/coffey.sock"));
    assert_eq!(c.pid_file, Some(PathBuf::from("/run/coffey.pid")));
    assert_eq!(c.log.path, Some(PathBuf::from("/data/logs/coffey.log")));
    assert_eq!(c.services.len(), 2);
    let api = &c.services[0];
    assert_eq!(api.env, vec!["PORT=8080".to_owned()]);
    assert_eq!(
        api.healthcheck.readiness,
        Some(Check {
            kind: CheckKind::Http {
                url: "http://127.0.0.1:8080/healthz".to_owned(),
                addr: "127.0.0.1:8080".parse().unwrap(),
                host: "127.0.0.1:8080".to_owned(),
                path: "/healthz".to_owned(),
                expect_status: None,
            },
            interval: 5_000,
            timeout: 5_000,
            retries: 3,
            start_period: 0,
            success_threshold: 1,
        })
    );
    let fe = &c.services[1];
    assert_eq!(fe.args, vec!["/opt/frontend/server.js".to_owned()]);
    assert_eq!(
        fe.depends_on,
        vec![Dep {
            name: "api".to_owned(),
            condition: Condition::Healthy
        }]
    );
    assert_eq!(fe.restart, Restart::OnFailure);
    assert_eq!(fe.backoff.max, 30_000);
    assert_eq!(c.limits.services, 10);
}

#[test]
fn example_unchanged_only_reports_missing_binaries() {
    let d = match load_text("example-raw", EXAMPLE) {
        Ok((_, w)) => w,
        Err(d) => d,
    };
    let mut expected = 0;
    for (bin, line, name) in [
        ("/usr/local/bin/api", 9, "api"),
        ("/usr/bin/node", 19, "frontend"),
    ] {
        if !Path::new(bin).exists() {
            expected += 1;
            expect(
                &d,
                Severity::Warning,
                line,
                13,
                Some(name),
                "not executable: No such file or directory (on this host",
            );
        }
    }
    assert_eq!(count(&d, Severity::Error), 0, "{}", render(&d));
    assert_eq!(count(&d, Severity::Warning), expected, "{}", render(&d));
}

#[test]
fn defaults() {
    let (c, w) = ok("defaults", "services:\n  - name: a\n    binary: /bin/sh\n");
    assert!(w.is_empty());
    assert_eq!(c.pid_file, None);
    assert_eq!(c.services_dir, c.path.parent().unwrap().join("services.d"));
    assert_eq!(
        c.log,
        DaemonLog {
            path: None,
            console: true,
            max_size: 1 << 20,
            keep: 5
        }
    );
    assert_eq!(
        c.service_logs,
        ServiceLogs {
            dir: None,
            max_size: 1 << 20,
            keep: 5,
            buffer: 4096
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            services: 9,
            clients: 8
        }
    );
    assert_eq!(c.shutdown_timeout, 30_000);
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        assert_eq!(c.socket, PathBuf::from("/run/coffey.sock"));
    } else {
        assert!(c.socket.ends_with("coffey.sock") || c.socket.starts_with("/tmp/coffey-"));
    }
    let s = &c.services[0];
    assert_eq!(s.name, "a");
    assert_eq!(s.binary, PathBuf::from("/bin/sh"));
    assert!(s.args.is_empty() && s.env.is_empty());
    assert_eq!(s.working_dir, None);
    assert_eq!(s.user, None);
    assert_eq!(s.group, None);
    assert!(s.supplementary_gids.is_empty());
    assert_eq!(s.umask, None);
    assert_eq!(s.kind, Kind::Service);
    assert_eq!(s.restart, Restart::Always);
    assert_eq!(
        s.backoff,
        Backoff {
            initial: 1_000,
            max: 60_000,
            multiplier: 2.0,
            reset_after: 10_000
        }
    );
    assert_eq!(s.max_restarts, 0);
    assert_eq!(s.stop_signal, 15);
    assert_eq!(s.stop_timeout, 10_000);
    assert!(s.depends_on.is_empty());
    assert_eq!(
        s.log,
        ServiceLog {
            file: None,
            console: true,
            buffer: 4096,
            to: None,
        }
    );
    assert_eq!(s.healthcheck, Healthcheck::default());
    assert_eq!(s.start_timeout, None);
}

#[test]
fn oneshot_defaults_to_restart_never_and_check_defaults() {
    let (c, _) = ok(
        "oneshot",
        "services:
  - name: init
    binary: /bin/sh
    type: oneshot
  - name: b
    binary: /bin/sh
    depends_on:
      - name: init
        condition: completed
      - init2
    healthcheck:
      liveness:
        type: exec
        command: test -e /tmp
  - name: init2
    binary: /bin/sh
",
    );
    assert_eq!(c.services[0].restart, Restart::Never);
    let b = &c.services[1];
    assert_eq!(b.depends_on[0].condition, Condition::Completed);
    assert_eq!(b.depends_on[1].condition, Condition::Started);
    let l = b.healthcheck.liveness.as_ref().unwrap();
    assert_eq!(
        l.kind,
        CheckKind::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), "test -e /tmp".into()]
        }
    );
    assert_eq!(
        (
            l.interval,
            l.timeout,
            l.retries,
            l.start_period,
            l.success_threshold
        ),
        (10_000, 5_000, 3, 0, 1)
    );
    assert_eq!(b.start_timeout, None);
}

#[test]
fn every_key_parses() {
    let (c, w) = ok(
        "allkeys",
        "coffey:
  socket: /tmp/x.sock
  pid_file: run/c.pid
  services_dir: extra
  log: {path: /tmp/c.log, console: false, max_size: 8KiB, keep: 0}
  service_logs:
    dir: logs
    max_size: 64KiB
    keep: 2
    buffer: 1K
  limits: {services: 20, clients: 3}
  shutdown_timeout: 1m
services:
  - name: s
    binary: /bin/sh
    args: ['-c', 'sleep 1', 8080]
    env: [A=1, B=]
    working_dir: /
    umask: 022
    type: service
    restart: never
    backoff: {initial: 500ms, max: 5s, multiplier: 1.5, reset_after: 1m}
    max_restarts: 4
    stop_signal: INT
    stop_timeout: 0
    log: {file: s.out, console: true, buffer: 64KiB}
    healthcheck:
      readiness: {type: tcp, address: '127.0.0.1:80', interval: 1s, timeout: 1s, retries: 1, start_period: 2s}
  - name: t
    binary: /bin/sh
    umask: 27
    stop_signal: 9
    healthcheck:
      readiness: {type: notify}
      liveness: {type: exec, command: [/bin/true, x]}
",
    );
    assert!(w.is_empty(), "{}", render(&w));
    let base = c.path.parent().unwrap().to_path_buf();
    assert_eq!(c.socket, PathBuf::from("/tmp/x.sock"));
    assert_eq!(c.pid_file, Some(base.join("run/c.pid")));
    assert_eq!(c.services_dir, base.join("extra"));
    assert_eq!(
        c.log,
        DaemonLog {
            path: Some("/tmp/c.log".into()),
            console: false,
            max_size: 8192,
            keep: 0
        }
    );
    assert_eq!(
        c.service_logs,
        ServiceLogs {
            dir: Some(base.join("logs")),
            max_size: 65_536,
            keep: 2,
            buffer: 1024
        }
    );
    assert_eq!(
        c.limits,
        Limits {
            services: 20,
            clients: 3
        }
    );
    assert_eq!(c.shutdown_timeout, 60_000);
    let s = &c.services[0];
    assert_eq!(s.args, vec!["-c", "sleep 1", "8080"]);
    assert_eq!(s.env, vec!["A=1", "B="]);
    assert_eq!(s.working_dir, Some(PathBuf::from("/")));
    assert_eq!(s.umask, Some(0o22));
    assert_eq!(s.restart, Restart::Never);
    assert_eq!(
        s.backoff,
        Backoff {
            initial: 500,
            max: 5_000,
            multiplier: 1.5,
            reset_after: 60_000
        }
    );
    assert_eq!(s.max_restarts, 4);
    assert_eq!(s.stop_signal, 2);
    assert_eq!(s.stop_timeout, 0);
    assert_eq!(
        s.log,
        ServiceLog {
            file: Some(base.join("logs/s.out")),
            console: true,
            buffer: 65_536,
            to: None,
        }
    );
    assert_eq!(
        s.healthcheck.readiness,
        Some(Check {
            kind: CheckKind::Tcp {
                address: "127.0.0.1:80".into(),
                addr: "127.0.0.1:80".parse().unwrap(),
            },
            interval: 1_000,
            timeout: 1_000,
            retries: 1,
            start_period: 2_000,
            success_threshold: 1,
        })
    );
    let t = &c.services[1];
    assert_eq!(t.umask, Some(0o27));
    assert_eq!(t.stop_signal, 9);
    // Inherited from service_logs / log.console.
    assert_eq!(
        t.log,
        ServiceLog {
            file: Some(base.join("logs/t.log")),
            console: false,
            buffer: 1024,
            to: None,
        }
    );
    assert_eq!(
        t.healthcheck.readiness.as_ref().unwrap().kind,
        CheckKind::Notify {
            fd: None,
            watchdog: None
        }
    );
    assert_eq!(
        t.healthcheck.liveness.as_ref().unwrap().kind,
        CheckKind::Exec {
            command: vec!["/bin/true".into(), "x".into()]
        }
    );
}

#[test]
fn empty_config_is_valid() {
    for text in [
        "",
        "# nothing\n",
        "coffey:\n",
        "services: []\n",
        "services:\n",
    ] {
        let (c, w) = ok("empty", text);
        assert!(c.services.is_empty() && w.is_empty());
        assert_eq!(c.limits.services, 8);
    }
}

#[test]
fn dropins_only() {
    let dir = tmpdir("dropins");
    let main = write(&dir, "config.yaml", "coffey:\n  limits: {clients: 2}\n");
    write(
        &dir,
        "services.d/20-web.yaml",
        "name: web\nbinary: /bin/sh\ndepends_on: [db]\n",
    );
    write(&dir, "services.d/10-db.yml", "name: db\nbinary: /bin/sh\n");
    write(&dir, "services.d/30-cache.yaml", "binary: /bin/sh\n");
    write(&dir, "services.d/.hidden.yaml", "nonsense: [\n");
    write(&dir, "services.d/README.txt", "not yaml: [\n");
    let (c, w) = load(&main).unwrap();
    assert!(w.is_empty());
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    // Sorted by file name; name defaults to the file stem.
    assert_eq!(names, ["db", "web", "30-cache"]);
}

#[test]
fn mixed_layout_and_relative_services_dir() {
    let dir = tmpdir("mixed");
    let main = write(
        &dir,
        "etc/config.yaml",
        "coffey:\n  services_dir: conf.d\nservices:\n  - name: a\n    binary: /bin/sh\n    depends_on: [b]\n",
    );
    write(&dir, "etc/conf.d/b.yaml", "name: b\nbinary: /bin/sh\n");
    let (c, _) = load(&main).unwrap();
    assert_eq!(c.services.len(), 2);
    assert_eq!(c.services[1].name, "b");
    assert_eq!(c.limits.services, 10);
}

#[test]
fn missing_services_dir_is_fine_but_a_file_is_not() {
    let (c, _) = ok("nodir", "coffey:\n  services_dir: /nonexistent/coffey.d\n");
    assert!(c.services.is_empty());
    let d = errs("filedir", "coffey:\n  services_dir: /etc/passwd\n");
    expect_err(&d, 2, 17, None, "cannot read services_dir");
}

#[test]
fn dropin_errors_have_their_own_positions() {
    let dir = tmpdir("dropin-err");
    let main = write(
        &dir,
        "config.yaml",
        "services:\n  - name: a\n    binary: /bin/sh\n",
    );
    let bad = write(
        &dir,
        "services.d/b.yaml",
        "name: b\nbinary: /bin/sh\nrestart: maybe\n",
    );
    write(&dir, "services.d/c.yaml", "name: a\nbinary: /bin/sh\n");
    write(&dir, "services.d/d.yaml", "");
    let broken = write(&dir, "services.d/e.yaml", "name: e\n  binary: x: y\n");
    let d = load(&main).unwrap_err();
    let at = |f: &Path, line, col, msg: &str| {
        assert!(
            d.iter()
                .any(|x| x.file == f && x.line == line && x.col == col && x.message.contains(msg)),
            "{msg} at {}:{line}:{col} not in\n{}",
            f.display(),
            render(&d)
        )
    };
    at(&bad, 3, 10, "unknown variant `maybe`");
    at(
        &dir.join("services.d/c.yaml"),
        1,
        7,
        "duplicate service name 'a' (first defined at ",
    );
    at(&dir.join("services.d/d.yaml"), 1, 1, "empty drop-in");
    at(&broken, 2, 9, "invalid YAML");
    // Sorted: main file first, then drop-ins in order.
    assert!(d.first().unwrap().file == bad);
}

#[test]
fn syntax_error_position() {
    let d = errs("syntax", "services:\n  - name: a\n    binary: [/bin/sh\n");
    assert_eq!(d.len(), 1, "{}", render(&d));
    assert!(d[0].message.starts_with("invalid YAML"));
    assert_eq!(d[0].line, 4);
    let d = errs("syntax2", "services:\n  - name: a\n   binary: /bin/sh\n");
    assert_eq!((d[0].line, d[0].col), (3, 4), "{}", render(&d));
}

#[test]
fn unknown_keys_bad_types_enums_durations_sizes() {
    let d = errs(
        "types",
        "coffey:
  shutdown_timeout: forever
  service_logs:
    buffer: 12XB
  limits:
    clients: -1
  colour: red
services:
  - name: a
    binary: /bin/sh
    restart: sometimes
    type: daemon
    max_restarts: lots
    stop_signal: SIGFOO
    umask: 0999
    backoff:
      initial: -1s
      jitter: 5
  - name: b
    binary: /bin/sh
    args: {a: 1}
    healthcheck:
      readiness:
        type: grpc
",
    );
    expect_err(&d, 2, 21, None, "invalid duration `forever`");
    expect_err(&d, 4, 13, None, "invalid size `12XB`");
    expect_err(&d, 6, 14, None, "invalid type: integer `-1`, expected u32");
    expect_err(&d, 7, 3, None, "unknown field `colour`");
    expect_err(&d, 11, 14, Some("a"), "unknown variant `sometimes`");
    expect_err(&d, 12, 11, Some("a"), "unknown variant `daemon`");
    expect_err(&d, 13, 19, Some("a"), "invalid type: string \"lots\"");
    expect_err(&d, 14, 18, Some("a"), "unknown signal `SIGFOO`");
    expect_err(&d, 15, 12, Some("a"), "invalid umask `0999`");
    expect_err(&d, 17, 16, Some("a"), "invalid duration `-1s`");
    expect_err(&d, 18, 7, Some("a"), "unknown field `jitter`");
    expect_err(
        &d,
        21,
        11,
        Some("b"),
        "invalid type: map, expected a sequence",
    );
    expect_err(&d, 24, 15, Some("b"), "unknown variant `grpc`");
    assert_eq!(count(&d, Severity::Error), 13, "{}", render(&d));
}

#[test]
fn names() {
    let long = "x".repeat(32);
    let text = format!(
        "services:
  - name: ok_name-1.2
    binary: /bin/sh
  - name: {long}
    binary: /bin/sh
  - name: -dash
    binary: /bin/sh
  - name: 'has space'
    binary: /bin/sh
  - name: ''
    binary: /bin/sh
  - binary: /bin/sh
"
    );
    let d = errs("names", &text);
    expect_err(
        &d,
        4,
        11,
        Some(long.as_str()),
        "too long (32 characters, at most 31)",
    );
    expect_err(&d, 6, 11, Some("-dash"), "must not start with '.' or '-'");
    expect_err(&d, 8, 11, Some("has space"), "invalid characters");
    expect_err(&d, 10, 11, Some(""), "service name is empty");
    expect_err(&d, 12, 5, None, "missing required key 'name'");
    assert_eq!(count(&d, Severity::Error), 5, "{}", render(&d));
}

#[test]
fn duplicates_point_at_the_second() {
    let d = errs(
        "dup",
        "services:\n  - name: a\n    binary: /bin/sh\n  - name: a\n    binary: /bin/sh\n",
    );
    assert_eq!(d.len(), 1);
    let path = d[0].file.display().to_string();
    expect_err(
        &d,
        4,
        11,
        Some("a"),
        &format!("duplicate service name 'a' (first defined at {path}:2:11)"),
    );
}

#[test]
fn dependency_errors() {
    let d = errs(
        "deps",
        "services:
  - name: a
    binary: /bin/sh
    depends_on:
      - nothere
      - a
      - name: b
        condition: completed
  - name: b
    binary: /bin/sh
",
    );
    expect_err(
        &d,
        5,
        9,
        Some("a"),
        "depends on 'nothere', which is not defined",
    );
    expect_err(&d, 6, 9, Some("a"), "depends on itself");
    expect_err(
        &d,
        8,
        20,
        Some("a"),
        "condition completed on 'b', which is not type: oneshot",
    );
    assert_eq!(count(&d, Severity::Error), 3, "{}", render(&d));
}

#[test]
fn dependency_cycle_path() {
    let d = errs(
        "cycle",
        "services:
  - name: c
    binary: /bin/sh
    depends_on: [a]
  - name: a
    binary: /bin/sh
    depends_on:
      - b
  - name: b
    binary: /bin/sh
    depends_on:
      - c
  - name: x
    binary: /bin/sh
    depends_on:
      - y
  - name: y
    binary: /bin/sh
    depends_on:
      - x
",
    );
    expect_err(&d, 4, 17, Some("c"), "dependency cycle: c -> a -> b -> c");
    expect_err(&d, 16, 9, Some("x"), "dependency cycle: x -> y -> x");
    assert_eq!(count(&d, Severity::Error), 2, "{}", render(&d));
}

#[test]
fn binary_checks() {
    let d = errs(
        "binary",
        "services:
  - name: rel
    binary: bin/sh
  - name: missing
    binary: /nonexistent/bin
  - name: noexec
    binary: /etc/hostname
  - name: dir
    binary: /bin
  - name: none
",
    );
    // Structural: errors. Facts about this host: warnings.
    expect_err(&d, 3, 13, Some("rel"), "must be an absolute path");
    let warn = |line, name, msg| expect(&d, Severity::Warning, line, 13, Some(name), msg);
    warn(5, "missing", "not executable: No such file or directory");
    warn(9, "dir", "not executable: not a regular file");
    expect_err(&d, 10, 5, Some("none"), "missing required key 'binary'");
    if !nix::unistd::geteuid().is_root() && Path::new("/etc/hostname").exists() {
        warn(7, "noexec", "not executable: Permission denied");
    }
    assert_eq!(count(&d, Severity::Error), 2, "{}", render(&d));
}

#[test]
fn permission_denied_on_non_executable_file() {
    let dir = tmpdir("noexec");
    let f = write(&dir, "tool", "#!/bin/sh\n");
    let text = format!("services:\n  - name: t\n    binary: {}\n", f.display());
    let (_, d) = load(&write(&dir, "config.yaml", &text)).unwrap();
    expect(
        &d,
        Severity::Warning,
        3,
        13,
        Some("t"),
        "not executable: Permission denied",
    );
}

#[test]
fn users_groups_env() {
    let d = errs(
        "users",
        "services:
  - name: a
    binary: /bin/sh
    user: no-such-user-coffey
    group: no-such-group-coffey
    env:
      - NOEQUALS
      - =value
      - OK=1
      - OK=2
",
    );
    let warn = |line, col, msg| expect(&d, Severity::Warning, line, col, Some("a"), msg);
    warn(4, 11, "user not found: no-such-user-coffey (on this host");
    warn(5, 12, "group not found: no-such-group-coffey (on this host");
    expect_err(&d, 7, 9, Some("a"), "env entry 'NOEQUALS' is not KEY=VALUE");
    expect_err(&d, 8, 9, Some("a"), "env entry '=value' has an empty key");
    expect(
        &d,
        Severity::Warning,
        10,
        9,
        Some("a"),
        "env key 'OK' is set twice",
    );
}

#[test]
fn root_user_resolves() {
    let (c, _) = ok(
        "root",
        "services:\n  - name: a\n    binary: /bin/sh\n    user: root\n    group: '0'\n",
    );
    let s = &c.services[0];
    assert_eq!(s.user, Some(("root".to_owned(), 0, 0)));
    assert_eq!(s.group, Some(("root".to_owned(), 0)));
    assert!(s.supplementary_gids.contains(&0));
}

#[test]
fn capacity_and_limits() {
    let d = errs(
        "cap",
        "coffey:
  limits:
    services: 1
    clients: 300
services:
  - {name: a, binary: /bin/sh}
  - {name: b, binary: /bin/sh}
",
    );
    expect_err(&d, 3, 15, None, "capacity below the number of services");
    expect_err(&d, 4, 14, None, "limits.clients is 300");
    let d = errs("cap2", "coffey:\n  limits:\n    services: 5000\n");
    expect_err(&d, 3, 15, None, "the maximum is 4096");
}

#[test]
fn backoff_and_buffers() {
    let d = errs(
        "backoff",
        "coffey:
  service_logs:
    buffer: 100
    max_size: 1K
services:
  - name: a
    binary: /bin/sh
    backoff:
      initial: 0s
      multiplier: .nan
  - name: b
    binary: /bin/sh
    backoff:
      initial: 2m
      max: 1m
      multiplier: 101
    log:
      buffer: 32MiB
",
    );
    expect_err(&d, 3, 13, None, "service_logs.buffer is 100 bytes");
    expect_err(&d, 4, 15, None, "service_logs.max_size is 1024 bytes");
    expect(
        &d,
        Severity::Warning,
        9,
        16,
        Some("a"),
        "backoff.initial is 0: a service that keeps crashing is restarted at once",
    );
    expect_err(
        &d,
        10,
        19,
        Some("a"),
        "backoff.multiplier must be a finite number >= 1.0",
    );
    expect_err(
        &d,
        15,
        12,
        Some("b"),
        "backoff.initial (2m) is larger than backoff.max (1m)",
    );
    expect_err(
        &d,
        16,
        19,
        Some("b"),
        "backoff.multiplier must be at most 100",
    );
    expect_err(&d, 18, 15, Some("b"), "log.buffer is 33554432 bytes");
}

#[test]
fn healthcheck_validation() {
    let d = errs(
        "health",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      readiness:
        type: http
        url: https://x/
      liveness:
        type: tcp
        address: host
  - name: b
    binary: /bin/sh
    healthcheck:
      readiness:
        type: exec
        command: []
      liveness:
        type: http
        address: x:1
  - name: c
    binary: /bin/sh
    healthcheck:
      readiness:
        interval: 0s
        retries: 0
        type: notify
      liveness:
        type: notify
",
    );
    expect_err(&d, 7, 14, Some("a"), "only http:// is supported");
    expect_err(&d, 10, 18, Some("a"), "must be host:port");
    expect_err(&d, 16, 18, Some("b"), "type exec needs a non-empty command");
    expect_err(
        &d,
        19,
        18,
        Some("b"),
        "healthcheck.liveness.address is not used by type http",
    );
    expect_err(&d, 17, 7, Some("b"), "type http needs a url");
    expect_err(
        &d,
        24,
        19,
        Some("c"),
        "healthcheck.readiness.interval must be at least 1ms",
    );
    expect_err(
        &d,
        25,
        18,
        Some("c"),
        "healthcheck.readiness.retries must be at least 1",
    );
    expect_err(&d, 28, 15, Some("c"), "cannot be a liveness check");
}

#[test]
fn warnings_only_is_ok() {
    let (c, w) = ok(
        "warn",
        "services:
  - name: once
    binary: /bin/sh
    type: oneshot
    restart: always
  - name: web
    binary: /bin/sh
    restart: never
    depends_on:
      - name: once
        condition: healthy
    healthcheck:
      liveness:
        type: tcp
        address: '[::1]:80'
        interval: 1s
        timeout: 2s
",
    );
    assert_eq!(c.services.len(), 2);
    expect(
        &w,
        Severity::Warning,
        5,
        14,
        Some("once"),
        "oneshot with restart: always re-runs forever",
    );
    expect(
        &w,
        Severity::Warning,
        11,
        20,
        Some("web"),
        "condition healthy on 'once': dependency has no readiness check; `healthy` means started",
    );
    expect(
        &w,
        Severity::Warning,
        13,
        7,
        Some("web"),
        "liveness check with restart: never",
    );
    expect(
        &w,
        Severity::Warning,
        17,
        18,
        Some("web"),
        "larger than its interval",
    );
    assert_eq!(w.len(), 4, "{}", render(&w));
}

#[test]
fn errors_in_many_services_are_all_reported() {
    let d = errs(
        "many",
        "services:
  - name: a
    binary: /bin/sh
    restart: bad1
    stop_timeout: bad2
    extra: 1
  - name: b
    binary: /bin/sh
    restart: bad3
  - name: c
    binary: /bin/sh
    depends_on: [a, b]
",
    );
    expect_err(&d, 4, 14, Some("a"), "bad1");
    expect_err(&d, 5, 19, Some("a"), "bad2");
    expect_err(&d, 6, 5, Some("a"), "unknown field `extra`");
    expect_err(&d, 9, 14, Some("b"), "bad3");
    // a and b still exist for c's dependencies.
    assert_eq!(count(&d, Severity::Error), 4, "{}", render(&d));
    // Sorted by position.
    let lines: Vec<usize> = d.iter().map(|x| x.line).collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

#[test]
fn display_format() {
    let mut d = Diag {
        severity: Severity::Error,
        file: "/etc/c.yaml".into(),
        line: 3,
        col: 5,
        service: Some("api".into()),
        message: "boom".into(),
    };
    assert_eq!(d.to_string(), "/etc/c.yaml:3:5: error: service 'api': boom");
    d.service = None;
    d.severity = Severity::Warning;
    assert_eq!(d.to_string(), "/etc/c.yaml:3:5: warning: boom");
    d.line = 0;
    assert_eq!(d.to_string(), "/etc/c.yaml: warning: boom");
}

#[test]
fn run_validate_output_and_codes() {
    let dir = tmpdir("run");
    let good = write(
        &dir,
        "good.yaml",
        "services:\n  - {name: a, binary: /bin/sh, type: oneshot, restart: always}\n",
    );
    let mut out = Vec::new();
    let (code, cfg) = run_validate(&good, &Target::Host, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 0);
    assert!(cfg.is_some());
    assert!(out.contains("warning: service 'a': oneshot"), "{out}");
    assert!(
        out.ends_with("config OK: 1 services (1 warnings)\n"),
        "{out}"
    );

    let bad = write(&dir, "bad.yaml", "services:\n  - {name: a, binary: sh}\n");
    let mut out = Vec::new();
    let (code, cfg) = run_validate(&bad, &Target::Host, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(code, 1);
    assert!(cfg.is_none());
    assert!(out.ends_with("1 error(s), 0 warning(s)\n"), "{out}");

    let mut out = Vec::new();
    let (code, _) = run_validate(&dir.join("missing.yaml"), &Target::Host, &mut out);
    assert_eq!(code, 1);
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("cannot read config"));
}

#[test]
fn load_str_does_not_read_dropins() {
    let r = load_str(
        Path::new("/nonexistent/config.yaml"),
        "services:\n  - {name: a, binary: /bin/sh}\n",
    );
    let (c, _) = r.unwrap();
    assert_eq!(c.services_dir, PathBuf::from("/nonexistent/services.d"));
    assert_eq!(c.services.len(), 1);
}

#[test]
fn odd_inputs_never_panic() {
    let inputs = [
        "-",
        "- - -",
        "[1, 2]",
        "42",
        "services: 5",
        "services: [1, [2], {name: x}]",
        "services:\n  -\n  - ~\n  - name:\n",
        "coffey: []\nservices: {}",
        "coffey:\n  limits: {services: 99999999999}\n",
        "services:\n  - name: a\n    binary: /bin/sh\n    depends_on: [{name: a, condition: x, y: 1}, [1], 7]\n",
        "services:\n  - &a {name: a, binary: /bin/sh}\n  - *a\n",
        "services:\n  - name: a\n    <<: {binary: /bin/sh}\n",
        "services:\n  - name: a\n    env: [\"\\0=1\"]\n    binary: \"/bin/sh\\0\"\n",
        "---\na: 1\n---\nb: 2\n",
        "services:\n\t- name: a\n",
        "services:\r\n  - name: a\r\n    binary: /bin/sh\r\n    restart: x\r\n",
        "services:\u{85}  - name: a\u{2028}    restart: x\n",
        "\u{feff}services: []\n",
        "services:\n  - name: a\n    binary: |\n      /bin/sh\n    restart: x\n",
        "services:\n- name: a\n  healthcheck:\n    readiness: {type: exec, command: [1, [2]]}\n",
        "? [a]\n: b\n",
        "services:\n  - name: a\n    backoff: {multiplier: .inf, initial: 99999999999999999999d}\n",
    ];
    for text in inputs {
        if let Err(d) = load_str(Path::new("/fuzz/config.yaml"), text) {
            for x in &d {
                let _ = x.to_string();
            }
            assert!(d.iter().any(|x| x.severity == Severity::Error), "{text:?}");
        }
    }
}

#[test]
fn healthcheck_new_keys_and_resolution() {
    let (c, w) = ok(
        "health-new",
        "services:
  - name: web
    binary: /bin/sh
    start_timeout: 1m
    healthcheck:
      readiness:
        type: http
        url: http://localhost:8080/healthz?full=1#frag
        success_threshold: 2
        expect_status: 204
      liveness:
        type: tcp
        address: localhost:6379
  - name: v6
    binary: /bin/sh
    healthcheck:
      readiness: {type: http, url: 'http://[::1]'}
      liveness: {type: tcp, address: '[::1]:22'}
  - name: q
    binary: /bin/sh
    healthcheck:
      readiness: {type: http, url: 'http://10.0.0.1?x=1'}
  - name: s6
    binary: /bin/sh
    healthcheck:
      readiness: {type: notify, fd: 3}
  - name: sd
    binary: /bin/sh
    start_timeout: 90s
    healthcheck:
      readiness: {type: notify, watchdog: 30s}
      liveness: {type: exec, command: [/bin/sh, -c, 'true'], success_threshold: 1}
",
    );
    assert!(w.is_empty(), "{}", render(&w));
    let web = &c.services[0];
    assert_eq!(web.start_timeout, Some(60_000));
    let r = web.healthcheck.readiness.as_ref().unwrap();
    assert_eq!(
        r.kind,
        CheckKind::Http {
            url: "http://localhost:8080/healthz?full=1#frag".into(),
            addr: "127.0.0.1:8080".parse().unwrap(),
            host: "localhost:8080".into(),
            path: "/healthz?full=1".into(),
            expect_status: Some(204),
        }
    );
    assert_eq!(r.success_threshold, 2);
    assert_eq!(
        web.healthcheck.liveness.as_ref().unwrap().kind,
        CheckKind::Tcp {
            address: "localhost:6379".into(),
            addr: "127.0.0.1:6379".parse().unwrap(),
        }
    );
    let v6 = &c.services[1];
    assert_eq!(
        v6.healthcheck.readiness.as_ref().unwrap().kind,
        CheckKind::Http {
            url: "http://[::1]".into(),
            addr: "[::1]:80".parse().unwrap(),
            host: "[::1]".into(),
            path: "/".into(),
            expect_status: None,
        }
    );
    assert_eq!(
        v6.healthcheck.liveness.as_ref().unwrap().kind,
        CheckKind::Tcp {
            address: "[::1]:22".into(),
            addr: "[::1]:22".parse().unwrap(),
        }
    );
    assert_eq!(v6.start_timeout, None);
    match &c.services[2].healthcheck.readiness.as_ref().unwrap().kind {
        CheckKind::Http {
            addr, host, path, ..
        } => {
            assert_eq!(*addr, "10.0.0.1:80".parse().unwrap());
            assert_eq!((host.as_str(), path.as_str()), ("10.0.0.1", "/?x=1"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.services[3].healthcheck.readiness.as_ref().unwrap().kind,
        CheckKind::Notify {
            fd: Some(3),
            watchdog: None
        }
    );
    let sd = &c.services[4];
    assert_eq!(sd.start_timeout, Some(90_000));
    let r = sd.healthcheck.readiness.as_ref().unwrap();
    assert_eq!(
        r.kind,
        CheckKind::Notify {
            fd: None,
            watchdog: Some(30_000)
        }
    );
    assert_eq!(r.success_threshold, 1);
    assert_eq!(
        sd.healthcheck.liveness.as_ref().unwrap().kind,
        CheckKind::Exec {
            command: vec!["/bin/sh".into(), "-c".into(), "true".into()]
        }
    );
}

#[test]
fn healthcheck_new_key_errors() {
    let d = errs(
        "health-new-err",
        "services:
  - name: a
    binary: /bin/sh
    start_timeout: 0s
    healthcheck:
      readiness:
        type: http
        url: http://example.com/healthz
        expect_status: 700
        success_threshold: 0
        watchdog: 5s
      liveness:
        type: tcp
        address: db.local:5432
        expect_status: 200
  - name: b
    binary: /bin/sh
    healthcheck:
      readiness:
        type: notify
        fd: 2
      liveness:
        type: exec
        command: [../redis-cli, ping]
        fd: 4
  - name: c
    binary: /bin/sh
    healthcheck:
      readiness:
        type: notify
        fd: 256
        watchdog: 10s
      liveness:
        type: exec
        command:
          - bin/check
  - name: d
    binary: /bin/sh
    healthcheck:
      readiness:
        type: notify
        watchdog: 0s
      liveness:
        type: http
        url: 'http://127.0.0.1:0/'
  - name: e
    binary: /bin/sh
    healthcheck:
      readiness:
        type: tcp
        address: '::1:80'
      liveness:
        type: exec
        command: [/nonexistent/check]
",
    );
    expect_err(&d, 4, 20, Some("a"), "start_timeout must be at least 1ms");
    expect_err(
        &d,
        8,
        14,
        Some("a"),
        "url host 'example.com' must be an IP address or localhost (there is no DNS at boot)",
    );
    expect_err(
        &d,
        9,
        24,
        Some("a"),
        "healthcheck.readiness.expect_status is 700; an HTTP status is from 100 to 599",
    );
    expect_err(
        &d,
        10,
        28,
        Some("a"),
        "healthcheck.readiness.success_threshold must be at least 1",
    );
    expect_err(
        &d,
        11,
        19,
        Some("a"),
        "healthcheck.readiness.watchdog is not used by type http",
    );
    expect_err(
        &d,
        14,
        18,
        Some("a"),
        "address host 'db.local' must be an IP address or localhost (there is no DNS at boot)",
    );
    expect_err(
        &d,
        15,
        24,
        Some("a"),
        "healthcheck.liveness.expect_status is not used by type tcp",
    );
    expect_err(
        &d,
        21,
        13,
        Some("b"),
        "healthcheck.readiness.fd must be 3 or more (0-2 are stdin/out/err)",
    );
    expect_err(
        &d,
        24,
        18,
        Some("b"),
        "exec check command '../redis-cli' must be an absolute path or a bare name",
    );
    expect_err(
        &d,
        25,
        13,
        Some("b"),
        "healthcheck.liveness.fd is not used by type exec",
    );
    expect_err(
        &d,
        31,
        13,
        Some("c"),
        "healthcheck.readiness.fd is 256; it must be at most 255",
    );
    expect_err(
        &d,
        32,
        19,
        Some("c"),
        "watchdog needs sd_notify (type notify without fd)",
    );
    expect_err(
        &d,
        36,
        13,
        Some("c"),
        "exec check command 'bin/check' must be an absolute path or a bare name",
    );
    expect_err(
        &d,
        42,
        19,
        Some("d"),
        "healthcheck.readiness.watchdog must be at least 1ms",
    );
    expect_err(&d, 45, 14, Some("d"), "has an invalid port '0'");
    expect_err(
        &d,
        51,
        18,
        Some("e"),
        "has an IPv6 address without brackets (write it like [::1]:80)",
    );
    expect(
        &d,
        Severity::Warning,
        54,
        18,
        Some("e"),
        "exec check command /nonexistent/check is not executable: No such file or directory",
    );
    assert_eq!(count(&d, Severity::Error), 16, "{}", render(&d));
}

/// One http readiness check with this url: Ok((host, path)) or the error.
fn url_result(url: &str) -> Result<(String, String, String), String> {
    let text = format!(
        "services:\n  - name: a\n    binary: /bin/sh\n    healthcheck:\n      readiness:\n        type: http\n        url: '{url}'\n"
    );
    match load_str(Path::new("/nonexistent/config.yaml"), &text) {
        Ok((c, _)) => match &c.services[0].healthcheck.readiness.as_ref().unwrap().kind {
            CheckKind::Http {
                addr, host, path, ..
            } => Ok((addr.to_string(), host.clone(), path.clone())),
            other => panic!("{other:?}"),
        },
        Err(d) => {
            assert_eq!(d.len(), 1, "{}", render(&d));
            assert_eq!((d[0].line, d[0].col), (7, 14), "{}", render(&d));
            Err(d[0].message.clone())
        }
    }
}

#[test]
fn http_url_forms() {
    let good = |url: &str, addr: &str, host: &str, path: &str| {
        assert_eq!(
            url_result(url),
            Ok((addr.to_owned(), host.to_owned(), path.to_owned())),
            "{url}"
        );
    };
    good("http://127.0.0.1", "127.0.0.1:80", "127.0.0.1", "/");
    good("http://127.0.0.1/", "127.0.0.1:80", "127.0.0.1", "/");
    good(
        "http://LocalHost:81/a/b",
        "127.0.0.1:81",
        "LocalHost:81",
        "/a/b",
    );
    good(
        "http://[::1]:8080/x?y#z",
        "[::1]:8080",
        "[::1]:8080",
        "/x?y",
    );
    good("http://[fe80::1]#top", "[fe80::1]:80", "[fe80::1]", "/");
    good(
        "http://0.0.0.0:65535/",
        "0.0.0.0:65535",
        "0.0.0.0:65535",
        "/",
    );
    let bad = |url: &str, msg: &str| match url_result(url) {
        Err(m) => assert!(m.contains(msg), "{url}: {m:?} lacks {msg:?}"),
        Ok(v) => panic!("{url}: expected an error, got {v:?}"),
    };
    let no_dns = "must be an IP address or localhost (there is no DNS at boot)";
    bad(
        "http://example.com/",
        &format!("url host 'example.com' {no_dns}"),
    );
    bad("http://127.1/", &format!("url host '127.1' {no_dns}"));
    bad(
        "http://[127.0.0.1]/",
        &format!("url host '[127.0.0.1]' {no_dns}"),
    );
    bad(
        "http://[fe80::1%eth0]/",
        &format!("url host '[fe80::1%eth0]' {no_dns}"),
    );
    bad("http://::1/", "IPv6 address without brackets");
    bad("http://[::1/", "unclosed '['");
    bad("http://[::1]x/", "text after the ']'");
    bad("http:///x", "has no host");
    bad("http://:80/", "has no host");
    bad("http://u:p@127.0.0.1/", "user:password@ is not supported");
    bad("http://127.0.0.1:/", "invalid port ''");
    bad("http://127.0.0.1:+80/", "invalid port '+80'");
    bad("http://127.0.0.1:65536/", "invalid port '65536'");
    bad(
        "http://127.0.0.1/a b",
        "space or control character in its path",
    );
    bad("https://127.0.0.1/", "only http:// is supported");
    bad("127.0.0.1:80", "must start with http://");
}

#[test]
fn tcp_address_forms() {
    let d = errs(
        "tcp-forms",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      readiness: {type: tcp, address: 'localhost'}
      liveness: {type: tcp, address: ':80'}
  - name: b
    binary: /bin/sh
    healthcheck:
      readiness: {type: tcp, address: '10.0.0.1:99999'}
      liveness: {type: tcp, address: 'redis:6379'}
",
    );
    let shape = "must be host:port with a port from 1 to 65535";
    expect_err(
        &d,
        5,
        18,
        Some("a"),
        &format!("address 'localhost' {shape}"),
    );
    expect_err(&d, 6, 17, Some("a"), &format!("address ':80' {shape}"));
    expect_err(
        &d,
        10,
        18,
        Some("b"),
        &format!("address '10.0.0.1:99999' {shape}"),
    );
    expect_err(
        &d,
        11,
        17,
        Some("b"),
        "address host 'redis' must be an IP address or localhost",
    );
    assert_eq!(count(&d, Severity::Error), 4, "{}", render(&d));
}

#[test]
fn start_timeout_without_readiness_warns() {
    let (c, w) = ok(
        "start-timeout",
        "services:
  - name: a
    binary: /bin/sh
    start_timeout: 30s
  - name: b
    binary: /bin/sh
    start_timeout: 30s
    healthcheck:
      readiness: {type: notify}
",
    );
    assert_eq!(c.services[0].start_timeout, Some(30_000));
    assert_eq!(c.services[1].start_timeout, Some(30_000));
    expect(
        &w,
        Severity::Warning,
        4,
        20,
        Some("a"),
        "start_timeout has no effect without a readiness check",
    );
    assert_eq!(w.len(), 1, "{}", render(&w));
}

#[test]
fn pid1_keys_defaults() {
    let (c, w) = ok(
        "pid1-defaults",
        "services:\n  - name: a\n    binary: /bin/sh\n",
    );
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(c.hostname, None);
    assert_eq!(c.emergency, PathBuf::from("/bin/sh"));
    assert!(c.early_mounts);
    assert!(c.mounts.is_empty());
    assert_eq!(c.main, None);
    let (c, _) = ok("pid1-empty", "");
    assert_eq!(c.emergency, PathBuf::from("/bin/sh"));
    assert!(c.early_mounts);
}

#[test]
fn pid1_keys_parse() {
    use nix::libc;
    let (c, w) = ok(
        "pid1-keys",
        "coffey:
  hostname: box-1.example.org
  emergency: /does/not/exist/sh
  early_mounts: false
  main: app
  mounts:
    - type: tmpfs
      target: /tmp
      options: nosuid,nodev,mode=1777,size=10%
    - source: /dev/mmcblk0p3
      target: /data
      type: ext4
      options: rw,noatime,nodiratime,sync,errors=remount-ro
    - {source: /data/www, target: /srv/www, type: none, options: 'rbind, ro'}
    - type: proc
      target: /proc
      options: ro,rw,noexec,exec,defaults,relatime
services:
  - name: app
    binary: /bin/sh
",
    );
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(c.hostname.as_deref(), Some("box-1.example.org"));
    assert_eq!(c.emergency, PathBuf::from("/does/not/exist/sh"));
    assert!(!c.early_mounts);
    assert_eq!(c.main.as_deref(), Some("app"));
    #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
    let f = |x: libc::c_ulong| x as u64;
    assert_eq!(
        c.mounts,
        vec![
            Mount {
                source: "tmpfs".into(),
                target: "/tmp".into(),
                fstype: "tmpfs".into(),
                flags: f(libc::MS_NOSUID | libc::MS_NODEV),
                data: "mode=1777,size=10%".into(),
            },
            Mount {
                source: "/dev/mmcblk0p3".into(),
                target: "/data".into(),
                fstype: "ext4".into(),
                flags: f(libc::MS_NOATIME | libc::MS_NODIRATIME | libc::MS_SYNCHRONOUS),
                data: "errors=remount-ro".into(),
            },
            Mount {
                source: "/data/www".into(),
                target: "/srv/www".into(),
                fstype: "none".into(),
                flags: f(libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY),
                data: String::new(),
            },
            Mount {
                source: "proc".into(),
                target: "/proc".into(),
                fstype: "proc".into(),
                flags: f(libc::MS_RELATIME),
                data: String::new(),
            },
        ]
    );
}

#[test]
fn mount_options_words() {
    use nix::libc;
    #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
    let f = |x: libc::c_ulong| x as u64;
    let cases: &[(&str, u64, &str)] = &[
        ("", 0, ""),
        (",,", 0, ""),
        ("ro", f(libc::MS_RDONLY), ""),
        ("ro,rw", 0, ""),
        ("rw,ro", f(libc::MS_RDONLY), ""),
        ("nosuid,suid", 0, ""),
        ("nodev,dev,noexec", f(libc::MS_NOEXEC), ""),
        ("sync,async", 0, ""),
        ("noatime,atime", 0, ""),
        ("remount,ro", f(libc::MS_REMOUNT | libc::MS_RDONLY), ""),
        ("bind", f(libc::MS_BIND), ""),
        ("rbind", f(libc::MS_BIND | libc::MS_REC), ""),
        ("defaults", 0, ""),
        (
            "mode=0755,nosuid,size=10%",
            f(libc::MS_NOSUID),
            "mode=0755,size=10%",
        ),
        (" uid=0 , gid=5 ,", 0, "uid=0,gid=5"),
        ("RO", 0, "RO"),
    ];
    for (opts, flags, data) in cases {
        assert_eq!(
            load::parse_mount_options(opts),
            (*flags, (*data).to_owned()),
            "{opts:?}"
        );
    }
}

#[test]
fn pid1_key_errors() {
    let d = errs(
        "pid1-errors",
        "coffey:
  hostname: -box
  emergency: bin/sh
  main: web
  mounts:
    - type: tmpfs
      target: tmp
    - target: /mnt
    - source: x
      target: /x
      type: ''
    -
    - type: proc
      target: /proc
      flags: ro
services:
  - name: app
    binary: /bin/sh
",
    );
    expect_err(
        &d,
        2,
        13,
        None,
        "hostname '-box' must not start with '.' or '-'",
    );
    expect_err(
        &d,
        3,
        14,
        None,
        "emergency shell 'bin/sh' must be an absolute path",
    );
    expect_err(&d, 4, 9, None, "main service 'web' is not defined");
    expect_err(
        &d,
        7,
        15,
        None,
        "mount target 'tmp' must be an absolute path",
    );
    expect_err(&d, 8, 7, None, "mounts[1]: missing required key 'type'");
    expect_err(&d, 11, 13, None, "mount type must not be empty");
    expect_err(&d, 12, 5, None, "empty mount entry");
    expect_err(&d, 15, 7, None, "unknown field `flags`");
    assert_eq!(count(&d, Severity::Error), 8, "{}", render(&d));
}

#[test]
fn hostname_errors() {
    let long = "h".repeat(65);
    let max = "h".repeat(64);
    let (c, _) = ok("hostname-max", &format!("coffey:\n  hostname: {max}\n"));
    assert_eq!(c.hostname, Some(max));
    for (name, msg) in [
        (long.as_str(), "is too long (65 characters, at most 64)"),
        ("''", "hostname must not be empty"),
        ("a_b", "has invalid characters"),
        ("'a b'", "has invalid characters"),
        ("héllo", "has invalid characters"),
        (".local", "must not start with '.' or '-'"),
    ] {
        let d = errs("hostname", &format!("coffey:\n  hostname: {name}\n"));
        expect_err(&d, 2, 13, None, msg);
        assert_eq!(count(&d, Severity::Error), 1, "{}", render(&d));
    }
}

#[test]
fn main_errors_and_dropins() {
    // `main` may name a drop-in service.
    let dir = tmpdir("main-dropin");
    write(&dir, "services.d/web.yaml", "binary: /bin/sh\n");
    let (c, _) = load(&write(&dir, "config.yaml", "coffey:\n  main: web\n")).unwrap();
    assert_eq!(c.main.as_deref(), Some("web"));
    // An empty or undefined main.
    let d = errs("main-empty", "coffey:\n  main: ''\n");
    expect_err(&d, 2, 9, None, "main must not be empty");
    assert_eq!(count(&d, Severity::Error), 1, "{}", render(&d));
    let d = errs("main-missing", "coffey:\n  main: db\n");
    expect_err(&d, 2, 9, None, "main service 'db' is not defined");
    // A bad type is reported once, not again as undefined.
    let d = errs("main-type", "coffey:\n  main: [a]\n  early_mounts: maybe\n");
    expect_err(&d, 2, 9, None, "invalid type: sequence");
    expect_err(
        &d,
        3,
        17,
        None,
        "invalid type: string \"maybe\", expected a boolean",
    );
    assert_eq!(count(&d, Severity::Error), 2, "{}", render(&d));
    // Mount errors in a tainted entry do not cascade.
    let d = errs(
        "mount-tainted",
        "coffey:\n  mounts:\n    - type: tmpfs\n      target: [1]\n",
    );
    expect_err(&d, 4, 15, None, "invalid type: sequence");
    assert_eq!(count(&d, Severity::Error), 1, "{}", render(&d));
}

// ---- issue 8 point 12: each problem once, and none hidden.

#[test]
fn typo_inside_a_depends_on_item_is_reported_once_at_the_key() {
    let d = errs(
        "dep-typo",
        "services:\n  - name: a\n    binary: /bin/sh\n  - name: b\n    binary: /bin/sh\n    depends_on:\n      - name: a\n        conditon: started\n",
    );
    assert_eq!(count(&d, Severity::Error), 1, "{}", render(&d));
    expect_err(&d, 8, 9, Some("b"), "unknown field `conditon`");
}

#[test]
fn compose_style_services_map_is_one_clear_error() {
    let d = errs(
        "compose",
        "services:\n  web:\n    image: nginx\n    ports: [\"80:80\"]\n  db:\n    image: postgres\n",
    );
    assert_eq!(d.len(), 1, "{}", render(&d));
    expect_err(
        &d,
        1,
        1,
        None,
        "services must be a list (- name: ...); a compose-style map of services is not supported",
    );
}

#[test]
fn a_map_where_a_list_belongs_is_one_error() {
    let d = errs(
        "args-map",
        "services:\n  - name: a\n    binary: /bin/sh\n    args:\n      A: 1\n      B: 2\n",
    );
    assert_eq!(d.len(), 1, "{}", render(&d));
    expect_err(
        &d,
        4,
        5,
        Some("a"),
        "args: invalid type: map, expected a sequence",
    );
}

#[test]
fn unknown_key_does_not_hide_a_missing_binary() {
    let d = errs(
        "typo-binary",
        "services:\n  - name: a\n    bnary: /bin/sh\n    restart: always\n",
    );
    expect_err(&d, 3, 5, Some("a"), "unknown field `bnary`");
    expect_err(&d, 2, 5, Some("a"), "missing required key 'binary'");
    assert_eq!(d.len(), 2, "{}", render(&d));
}

#[test]
fn unknown_key_in_a_dropin_does_not_hide_a_missing_binary() {
    let dir = tmpdir("typo-dropin");
    let main = write(&dir, "config.yaml", "services: []\n");
    write(&dir, "services.d/b.yaml", "name: b\nbinary_path: /bin/sh\n");
    let d = load(&main).unwrap_err();
    expect_err(&d, 2, 1, Some("b"), "unknown field `binary_path`");
    expect_err(&d, 1, 1, Some("b"), "missing required key 'binary'");
    assert_eq!(d.len(), 2, "{}", render(&d));
}

#[test]
fn a_broken_binary_value_is_not_also_missing() {
    let d = errs(
        "bad-binary",
        "services:\n  - name: a\n    binary: [/bin/sh]\n",
    );
    assert_eq!(d.len(), 1, "{}", render(&d));
    expect_err(&d, 3, 13, Some("a"), "binary: invalid type: sequence");
}

#[test]
fn a_document_that_is_a_list_is_one_error() {
    let d = errs(
        "doc-list",
        "- name: a\n  binary: /bin/sh\n- name: b\n  binary: /bin/sh\n",
    );
    assert_eq!(d.len(), 1, "{}", render(&d));
    expect_err(&d, 1, 1, None, "invalid type: sequence, expected a mapping");
}

// ---- issue 8 points 2 and 7: facts about the target system.

/// An image tree: /etc/passwd, /etc/group, a usr-merged /bin and an
/// absolute symlink, as in a Debian or Alpine rootfs.
fn image(tag: &str, extra_groups: &str) -> PathBuf {
    let root = tmpdir(tag);
    write(
        &root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/ash\nbare:x:1001:1001::::\n",
    );
    write(
        &root,
        "etc/group",
        &format!("root:x:0:\napp:x:1000:\nwheel:x:10:root,app\naudio:x:29:app\nother:x:30:root\n{extra_groups}"),
    );
    write(&root, "usr/bin/app", "#!/bin/sh\n");
    write(&root, "usr/bin/data", "not a program\n");
    write(&root, "opt/real/tool", "#!/bin/sh\n");
    use std::os::unix::fs::PermissionsExt;
    for f in ["usr/bin/app", "opt/real/tool"] {
        std::fs::set_permissions(root.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    // Absolute: must resolve inside the image, not on this host.
    std::os::unix::fs::symlink("/opt/real/tool", root.join("usr/bin/tool")).unwrap();
    root
}

fn load_root(root: &Path, text: &str) -> Result<(Config, Vec<Diag>), Vec<Diag>> {
    let dir = tmpdir("root-cfg");
    load_for(
        &write(&dir, "config.yaml", text),
        &Target::Root(root.to_path_buf()),
    )
}

#[test]
fn validate_root_checks_binaries_users_and_groups_in_the_image_as_errors() {
    let root = image("img-errors", "");
    let d = load_root(
        &root,
        "services:
  - name: ok
    binary: /bin/app
    user: app
    group: wheel
  - name: link
    binary: /bin/tool
  - name: nobin
    binary: /bin/sh
  - name: noexec
    binary: /usr/bin/data
  - name: nouser
    binary: /bin/app
    user: nobody
    group: nogroup
",
    )
    .unwrap_err();
    let err = |line, col, name, msg| expect_err(&d, line, col, Some(name), msg);
    // /bin/sh exists on this host but not in the image.
    err(
        9,
        13,
        "nobin",
        "binary /bin/sh is not executable: No such file or directory (in ",
    );
    err(
        11,
        13,
        "noexec",
        "binary /usr/bin/data is not executable: Permission denied (in ",
    );
    err(14, 11, "nouser", "user not found: nobody (in ");
    err(15, 12, "nouser", "group not found: nogroup (in ");
    assert_eq!(d.len(), 4, "{}", render(&d));
}

#[test]
fn user_gets_a_login_environment_and_groups_from_the_image() {
    let root = image("img-login", "");
    let (c, w) = load_root(
        &root,
        "services:
  - name: a
    binary: /bin/app
    user: app
  - name: b
    binary: /bin/app
    user: app
    group: wheel
    env: [HOME=/srv, PATH=/bin]
  - name: c
    binary: /bin/app
    user: bare
  - name: d
    binary: /bin/app
",
    )
    .unwrap();
    assert!(w.is_empty(), "{}", render(&w));
    let s = |i: usize| &c.services[i];
    assert_eq!(
        s(0).login_env,
        [
            "HOME=/home/app",
            "USER=app",
            "LOGNAME=app",
            "SHELL=/bin/ash"
        ]
    );
    // initgroups: the primary gid first, then every group listing the user.
    assert_eq!(s(0).supplementary_gids, [1000, 10, 29]);
    assert_eq!(s(0).user, Some(("app".to_owned(), 1000, 1000)));
    // `env` wins; `group` replaces the primary gid in the list.
    assert_eq!(
        s(1).login_env,
        ["USER=app", "LOGNAME=app", "SHELL=/bin/ash"]
    );
    assert_eq!(s(1).supplementary_gids, [10, 29]);
    // Empty passwd fields: what login(1) uses.
    assert_eq!(
        s(2).login_env,
        ["HOME=/", "USER=bare", "LOGNAME=bare", "SHELL=/bin/sh"]
    );
    assert!(s(3).login_env.is_empty());
    assert!(c.services.iter().all(|s| s.cred_error.is_none()));
}

#[test]
fn a_missing_user_on_this_host_is_kept_and_marked() {
    let (c, w) = ok(
        "cred-mark",
        "services:\n  - name: a\n    binary: /bin/sh\n    user: no-such-user-coffey\n  - name: b\n    binary: /bin/sh\n    group: no-such-group-coffey\n",
    );
    assert_eq!(count(&w, Severity::Warning), 2, "{}", render(&w));
    assert_eq!(
        c.services[0].cred_error.as_deref(),
        Some("user not found: no-such-user-coffey")
    );
    assert_eq!(
        c.services[1].cred_error.as_deref(),
        Some("group not found: no-such-group-coffey")
    );
}

#[test]
fn more_groups_than_the_limit_fails_that_service() {
    let many: String = (0..64)
        .map(|i| format!("g{i}:x:{}:app\n", 2000 + i))
        .collect();
    let root = image("img-groups", &many);
    let d = load_root(
        &root,
        "services:\n  - name: a\n    binary: /bin/app\n    user: app\n",
    )
    .unwrap_err();
    // 1000 (primary), wheel, audio and 64 more.
    expect_err(
        &d,
        4,
        11,
        Some("a"),
        "user 'app' is in 67 groups, the most is 64 (in ",
    );
    let fits: String = (0..61)
        .map(|i| format!("g{i}:x:{}:app\n", 2000 + i))
        .collect();
    let root = image("img-groups-fit", &fits);
    let (c, _) = load_root(
        &root,
        "services:\n  - name: a\n    binary: /bin/app\n    user: app\n",
    )
    .unwrap();
    assert_eq!(c.services[0].supplementary_gids.len(), 64);
}

/// `coffey.log.max_size` and `log.keep` are checked like `service_logs`'
/// keys, and the path leaves room for the rotation suffix.
#[test]
fn daemon_log_rotation_keys() {
    let long = "/l".repeat(260);
    let d = errs(
        "dlog",
        &format!("coffey:\n  log:\n    path: {long}\n    max_size: 1K\n    keep: 1001\n"),
    );
    expect_err(&d, 3, 11, None, "log path /l/l");
    expect_err(
        &d,
        4,
        15,
        None,
        "log.max_size is 1024 bytes; it must be at least 4KiB",
    );
    expect_err(&d, 5, 11, None, "log.keep is 1001; it must be at most 1000");
    let d = errs("dlog2", "coffey:\n  log: {max_size: 1MiB, colour: true}\n");
    assert!(
        d.iter().any(|x| x.message.contains("colour")),
        "{}",
        render(&d)
    );
}

#[test]
fn rlimits_one_value_soft_hard_and_unlimited() {
    let (c, d) = ok(
        "rlimits",
        "services:
  - name: a
    binary: /bin/sh
    rlimits:
      nofile: 1024:4096
      core: 0
      stack: 8MiB
      nproc: {soft: 100, hard: unlimited}
      as: unlimited
      nice: 10
",
    );
    assert!(d.is_empty(), "{}", render(&d));
    let got: Vec<(&str, u64, u64)> = c.services[0]
        .rlimits
        .iter()
        .map(|l| (l.name, l.soft, l.hard))
        .collect();
    let inf = u64::MAX;
    assert_eq!(
        got,
        [
            ("as", inf, inf),
            ("core", 0, 0),
            ("nice", 10, 10),
            ("nofile", 1024, 4096),
            ("nproc", 100, inf),
            ("stack", 8 << 20, 8 << 20),
        ]
    );
    let nofile = c.services[0].rlimits[3];
    assert_eq!(
        nofile.resource,
        u32::try_from(nix::libc::RLIMIT_NOFILE as i64).unwrap()
    );
}

#[test]
fn rlimits_errors_name_the_key() {
    let d = errs(
        "rlimitbad",
        "services:
  - name: a
    binary: /bin/sh
    rlimits:
      nofle: 1024
  - name: b
    binary: /bin/sh
    rlimits:
      nofile: {soft: 4096, hard: 1024}
      core: 2048:1024
      nproc: {soft: 10}
      nice: 41
  - name: c
    binary: /bin/sh
    rlimits:
      stack: lots
      cpu: {soft: 1, hard: 2, max: 3}
",
    );
    expect_err(
        &d,
        5,
        7,
        Some("a"),
        "unknown field `nofle`, expected one of `as`, `core`",
    );
    expect_err(
        &d,
        9,
        15,
        Some("b"),
        "rlimits.nofile: the soft limit 4096 is above the hard limit 1024",
    );
    expect_err(
        &d,
        10,
        13,
        Some("b"),
        "rlimits.core: the soft limit 2048 is above the hard limit 1024",
    );
    expect_err(
        &d,
        11,
        14,
        Some("b"),
        "rlimits.nproc: give both `soft` and `hard`",
    );
    expect_err(
        &d,
        12,
        13,
        Some("b"),
        "rlimits.nice: 41 is out of range (0 to 40",
    );
    expect_err(&d, 16, 14, Some("c"), "invalid limit `lots`");
    expect_err(&d, 17, 31, Some("c"), "unknown field `max`");
    assert_eq!(count(&d, Severity::Error), 7, "{}", render(&d));
}

/// A check's `timeout` defaults to the smaller of its interval and 5 s,
/// for every check kind: a short interval alone is no overlap warning;
/// a timeout set above the interval still is.
#[test]
fn check_timeout_defaults_to_the_smaller_of_interval_and_5s() {
    let (c, w) = ok(
        "timeout-default",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      readiness: {type: tcp, address: 127.0.0.1:1, interval: 200ms}
      liveness: {type: tcp, address: 127.0.0.1:1, interval: 1s}
      startup: {type: tcp, address: 127.0.0.1:1, interval: 300ms}
  - name: b
    binary: /bin/sh
    healthcheck:
      readiness: {type: tcp, address: 127.0.0.1:1, interval: 1m}
      liveness: {type: tcp, address: 127.0.0.1:1, interval: 200ms, timeout: 1s}
",
    );
    let h = &c.services[0].healthcheck;
    assert_eq!(h.readiness.as_ref().unwrap().timeout, 200);
    assert_eq!(h.liveness.as_ref().unwrap().timeout, 1_000);
    assert_eq!(h.startup.as_ref().unwrap().timeout, 300);
    let h = &c.services[1].healthcheck;
    assert_eq!(h.readiness.as_ref().unwrap().timeout, 5_000);
    assert_eq!(h.liveness.as_ref().unwrap().timeout, 1_000);
    expect(
        &w,
        Severity::Warning,
        12,
        17,
        Some("b"),
        "healthcheck.liveness.timeout (1s) is larger than its interval (200ms)",
    );
    assert_eq!(w.len(), 1, "{}", render(&w));
}

/// `healthcheck.startup`: the probe types and timing keys of the other
/// checks; not notify, success_threshold only 1, and not with a notify
/// readiness check.
#[test]
fn startup_check_parses_and_its_errors() {
    let (c, w) = ok(
        "startup-ok",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      startup:
        type: exec
        command: test -e /tmp
        interval: 1s
        retries: 30
        start_period: 5s
",
    );
    assert!(w.is_empty(), "{}", render(&w));
    let s = c.services[0].healthcheck.startup.as_ref().unwrap();
    assert_eq!(
        (
            s.interval,
            s.timeout,
            s.retries,
            s.start_period,
            s.success_threshold
        ),
        (1_000, 1_000, 30, 5_000, 1)
    );
    let d = errs(
        "startup-err",
        "services:
  - name: a
    binary: /bin/sh
    healthcheck:
      startup:
        type: notify
  - name: b
    binary: /bin/sh
    healthcheck:
      startup:
        type: tcp
        address: 127.0.0.1:1
        success_threshold: 2
  - name: c
    binary: /bin/sh
    healthcheck:
      readiness:
        type: notify
      startup:
        type: tcp
        address: 127.0.0.1:1
",
    );
    expect_err(
        &d,
        6,
        15,
        Some("a"),
        "type notify is a readiness protocol; it cannot be a startup check",
    );
    expect_err(
        &d,
        13,
        28,
        Some("b"),
        "healthcheck.startup.success_threshold must be 1",
    );
    expect_err(
        &d,
        19,
        7,
        Some("c"),
        "healthcheck.startup cannot be used with a notify readiness check",
    );
    assert_eq!(d.len(), 3, "{}", render(&d));
}
