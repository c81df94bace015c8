//! Real programs from Debian's packages under the real daemon (issue 8,
//! point 13): nginx in the foreground with an http readiness check,
//! `redis-server --supervised systemd` (sd_notify), `systemd-notify
//! --ready` from a `set -e` script, and busybox httpd.
//!
//! Each test asserts the same four things a user checks first:
//! - gating: a dependent with `condition: healthy` waits for readiness;
//! - restart: after `kill -9` of the main process a new one becomes ready;
//! - logs: `logs --no-follow` shows the program's own output;
//! - shutdown: the daemon exits 0 and no process of the tree is left.
//!
//! `.ci/run` installs the packages (nginx, redis-server, busybox, systemd).
//! A missing program fails the test with the package to install: a
//! compatibility test that silently passed without its program would
//! prove nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    clippy::disallowed_macros
)]

mod common;

use common::{
    alive, assert_no_alloc, ctl, descendants, free_port, need, row, signal, svc, wait_for,
    wait_row, Daemon,
};

/// Waits until `name` is running with a pid other than `not`; returns
/// the pid.
fn wait_running(d: &Daemon, name: &str, not: i64, secs: f64) -> i64 {
    let r = wait_row(
        d,
        &format!("{name} running, pid != {not}"),
        secs,
        || row(d, name),
        |r| r["state"] == "running" && r["pid"].as_i64().unwrap_or(0) != not,
    );
    r["pid"].as_i64().unwrap_or(0)
}

/// The checks every compat test ends with: `name` restarts after
/// `kill -9`, `logs` shows `log_pat`, and shutdown leaves nothing behind.
fn restart_logs_shutdown(mut d: Daemon, name: &str, log_pat: &str) {
    let pid = wait_running(&d, name, 0, 30.0);
    signal(pid as i32, 9);
    let again = wait_running(&d, name, pid, 30.0);
    assert_ne!(again, pid);
    let want = log_pat.to_string();
    let logs = wait_for(20.0, "program output in logs", || {
        let o = ctl(&d, &["logs", name, "--no-follow"]);
        o.stdout.contains(&want).then_some(o.stdout)
    });
    assert!(logs.contains(&want), "{logs}");
    let tree = descendants(d.pid());
    assert!(!tree.is_empty(), "nothing runs below the daemon");
    assert_no_alloc(&mut d);
    assert_eq!(d.stop(60.0), 0, "{}", d.log_text());
    let left: Vec<i32> = tree.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{}", d.log_text());
}

/// A dependent that must wait until `dep` is healthy.
fn waiter(dep: &str) -> String {
    svc(
        "after",
        "exec sleep 600",
        &format!("    depends_on:\n      - name: {dep}\n        condition: healthy\n"),
    )
}

/// Asserts `after` was spawned only once `name` was ready (from the order
/// of the daemon's log lines), and that both then run.
fn gated(d: &Daemon, name: &str) {
    wait_running(d, "after", 0, 30.0);
    assert_eq!(row(d, name)["state"], "running");
    let log = d.log_text();
    let ready = log.find(&format!("{name}: ready (pid"));
    let spawned = log.find("after: spawned pid");
    assert!(
        matches!((ready, spawned), (Some(r), Some(s)) if r < s),
        "after must start only once {name} is ready:\n{log}"
    );
}

#[test]
fn nginx_in_the_foreground_with_http_readiness() {
    let nginx = need("/usr/sbin/nginx", "nginx");
    let port = free_port();
    let services = format!(
        "  - name: web\n    binary: {nginx}\n    args: [-c, $DIR/nginx.conf, -p, $DIR, -e, stderr]\n    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{port}/healthz\n        interval: 200ms\n{}",
        waiter("web")
    );
    let d = Daemon::start_with("nginx", "", &services, |dir| {
        let conf = format!(
            "daemon off;\nworker_processes 2;\npid {0}/nginx.pid;\nerror_log stderr notice;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {0}/body;\n  proxy_temp_path {0}/proxy;\n  fastcgi_temp_path {0}/fcgi;\n  uwsgi_temp_path {0}/uwsgi;\n  scgi_temp_path {0}/scgi;\n  server {{\n    listen 127.0.0.1:{port};\n    location /healthz {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    });
    gated(&d, "web");
    restart_logs_shutdown(d, "web", "start worker process");
}

#[test]
fn redis_supervised_systemd_is_ready_by_sd_notify() {
    let redis = need("/usr/bin/redis-server", "redis-server");
    let port = free_port();
    let services = format!(
        "  - name: redis\n    binary: {redis}\n    args: [--port, '{port}', --bind, 127.0.0.1, --save, '', --appendonly, 'no', --supervised, systemd, --dir, $DIR]\n    healthcheck:\n      readiness:\n        type: notify\n{}",
        waiter("redis")
    );
    let d = Daemon::start("redis", "", &services);
    gated(&d, "redis");
    restart_logs_shutdown(d, "redis", "Ready to accept connections");
}

#[test]
fn systemd_notify_ready_in_a_set_e_script() {
    let notify = need("/usr/bin/systemd-notify", "systemd");
    let script =
        format!("set -e; echo before-notify; {notify} --ready; echo notified; exec sleep 600");
    let services = format!(
        "{}    healthcheck:\n      readiness:\n        type: notify\n{}",
        svc("app", &script, ""),
        waiter("app")
    );
    let d = Daemon::start("sdnotify", "", &services);
    gated(&d, "app");
    // `systemd-notify` returned 0 at once: the script went on.
    let r = row(&d, "app");
    assert_eq!(r["restarts"], 0, "{r}\n{}", d.log_text());
    restart_logs_shutdown(d, "app", "notified");
}

#[test]
fn busybox_httpd_with_http_readiness() {
    let bb = need("/bin/busybox", "busybox");
    let port = free_port();
    let services = format!(
        "  - name: httpd\n    binary: {bb}\n    args: [httpd, -f, -vv, -p, '127.0.0.1:{port}', -h, $DIR/www]\n    healthcheck:\n      readiness:\n        type: http\n        url: http://127.0.0.1:{port}/index.html\n        interval: 200ms\n{}",
        waiter("httpd")
    );
    let d = Daemon::start_with("bbhttpd", "", &services, |dir| {
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/index.html"), "ok\n").unwrap();
    });
    gated(&d, "httpd");
    // -vv logs each request to stderr: the readiness probes appear.
    restart_logs_shutdown(d, "httpd", "url:/index.html");
}
