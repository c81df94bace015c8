//! Shutdown leaves nothing behind (issue 9, point 5): coffeyd is the
//! subreaper of its tree, and after the services stop, every process
//! still below it (reparented orphans, `setsid` escapees of any depth,
//! double forks that ignore SIGTERM) gets SIGTERM, then SIGKILL at the
//! deadline. The daemon exits only once it has no child left. (A
//! crash-looping service's escapees: tests/background.rs.) Real processes
//! throughout; every wait has a deadline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The processes of these tests. Each appends its pid to `pids` (next to
/// the script), so the test knows them all.
/// - `main`: escapee chains of depth 1..4, three `hide` escapees, one
///   polite double fork, then the main process sleeps;
/// - `esc N`: a chain of N processes, each in a session of its own;
/// - `hide`: an escapee with a `stubborn` one below it, which is never
///   coffeyd's child while `hide` lives, so no service tracks it;
/// - `stubborn`: ignores SIGTERM (SIG_IGN survives the exec of sleep);
/// - `polite`: exits on SIGTERM, noting it in `termed`, and leaves its
///   own child (a plain sleep) behind to be reparented;
/// - `check`: an exec check that starts a `stubborn` and a `polite`
///   escapee and sleeps. coffeyd inherits them only when it cancels the
///   check (the run is over by then), so no run ever owns them: only the
///   sweep ends them;
/// - `wait N`: a main process that exits 0 once N pids are listed.
const TREE: &str = r#"D=${0%/*}
case $1 in
main)
  for n in 1 2 3 4; do setsid sh "$0" esc $n & done
  for n in 1 2 3; do (setsid sh "$0" hide &); done
  (setsid sh "$0" polite &)
  exec sleep 1000 ;;
esc)
  if [ "$2" -gt 1 ]; then setsid sh "$0" esc $(($2 - 1)) & fi
  echo $$ >> "$D/pids"
  exec sleep 1000 ;;
hide)
  setsid sh "$0" stubborn &
  echo $$ >> "$D/pids"
  exec sleep 1000 ;;
stubborn)
  trap "" TERM
  echo $$ >> "$D/pids"
  exec sleep 1000 ;;
polite)
  trap "echo \$\$ >> $D/termed; exit 0" TERM
  echo $$ >> "$D/pids"
  sleep 1000 &
  echo $! >> "$D/pids"
  wait ;;
check)
  setsid sh "$0" stubborn &
  setsid sh "$0" polite &
  exec sleep 100 ;;
wait)
  while [ "$(cat "$D/pids" 2>/dev/null | wc -l)" -lt "$2" ]; do sleep 0.01; done
  exit 0 ;;
esac
"#;

/// What `main` starts: 1+2+3+4 chain members, 3 hide, 3 stubborn, polite
/// and its sleep.
const MAIN_PIDS: usize = 18;

/// The pids in `dir/pids`, one a line.
fn pids_in(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills whatever a failed test left (never a group, never pid <= 1).
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in pids_in(&self.0) {
            if alive(p) {
                signal(p, 9);
            }
        }
    }
}

fn prepare(dir: &Path) {
    std::fs::write(dir.join("tree.sh"), TREE).unwrap();
}

/// A service running `tree.sh ARGS` (`args`: YAML list items).
fn tree_service(name: &str, args: &str, extra: &str) -> String {
    format!("  - name: {name}\n    binary: /bin/sh\n    args: ['$DIR/tree.sh', {args}]\n{extra}")
}

/// Waits until `n` pids are listed and all of them are alive.
fn wait_tree(dir: &Path, n: usize, log: impl Fn() -> String) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids = pids_in(dir);
        if pids.len() >= n && pids.iter().all(|&p| alive(p)) {
            return pids;
        }
        assert!(Instant::now() < deadline, "only {pids:?}\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shutdown_leaves_no_escapee_of_any_depth_and_kills_the_stubborn_at_the_deadline() {
    let services = tree_service("tree", "main", "    stop_timeout: 1s\n");
    let mut d = Daemon::start_with("sweep", "  shutdown_timeout: 3s\n", &services, prepare);
    let _guard = Leftovers(d.dir.clone());
    let pids = wait_tree(&d.dir, MAIN_PIDS, || d.log_text());
    assert_no_alloc(&mut d);
    let t0 = Instant::now();
    let o = ctl(&d, &["shutdown"]);
    assert_eq!(o.code, 0, "{o:?}");
    let child = d.child.as_mut().unwrap();
    let st = wait_for(20.0, "daemon exit", || child.try_wait().unwrap());
    d.child = None;
    let took = t0.elapsed();
    let log = d.log_text();
    assert_eq!(st.code(), Some(0), "{log}");
    let left: Vec<i32> = pids.iter().copied().filter(|&p| exists(p)).collect();
    assert!(left.is_empty(), "outlived the daemon: {left:?}\n{log}");
    // The polite one heard SIGTERM (not only the SIGKILL); the stubborn
    // ones held the daemon until they got SIGKILL: from the service, which
    // tracks the chains it is handed (stop_timeout), or from the sweep.
    let termed = std::fs::read_to_string(d.dir.join("termed")).unwrap_or_default();
    assert_eq!(termed.lines().count(), 1, "termed: {termed:?}\n{log}");
    assert!(took >= Duration::from_millis(900), "{took:?}\n{log}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{log}");
    assert_clean_shutdown(&log);
}

/// The service for the sweep-only cases: its readiness check starts the
/// escapees, its main exits 0 once they are listed.
fn checked_service() -> String {
    tree_service(
        "checked",
        "wait, '3'",
        "    type: oneshot\n    healthcheck:\n      readiness:\n        type: exec\n        command: /bin/sh $DIR/tree.sh check\n        interval: 100ms\n        timeout: 60s\n",
    )
}

/// The PPid of `pid` from /proc/PID/status (0 if gone).
fn ppid(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_sweep_ends_orphans_no_run_owns_and_sigkills_the_stubborn_at_the_deadline() {
    let mut d = Daemon::start_with(
        "sweepchk",
        "  shutdown_timeout: 3s\n",
        &checked_service(),
        prepare,
    );
    let _guard = Leftovers(d.dir.clone());
    let pids = wait_tree(&d.dir, 3, || d.log_text());
    // The run is over and the check cancelled: coffeyd has inherited them.
    let me = d.pid();
    wait_for(10.0, "the escapees to be coffeyd's", || {
        pids.iter()
            .all(|&p| ppid(p) == me || pids.contains(&ppid(p)))
            .then_some(())
    });
    d.wait_log("checked: completed", 10.0);
    let t0 = Instant::now();
    let o = ctl(&d, &["shutdown"]);
    assert_eq!(o.code, 0, "{o:?}");
    let child = d.child.as_mut().unwrap();
    let st = wait_for(20.0, "daemon exit", || child.try_wait().unwrap());
    d.child = None;
    let took = t0.elapsed();
    let log = d.log_text();
    assert_eq!(st.code(), Some(0), "{log}");
    let left: Vec<i32> = pids.iter().copied().filter(|&p| exists(p)).collect();
    assert!(left.is_empty(), "outlived the daemon: {left:?}\n{log}");
    let termed = std::fs::read_to_string(d.dir.join("termed")).unwrap_or_default();
    assert_eq!(termed.lines().count(), 1, "termed: {termed:?}\n{log}");
    assert!(
        log.contains("shutdown: 3 processes left below coffeyd (pid "),
        "{log}"
    );
    assert!(
        log.contains("shutdown: sending SIGKILL to 1 process still below coffeyd at the deadline"),
        "{log}"
    );
    // The sweep keeps to shutdown_timeout, and the daemon waited for it.
    assert!(took >= Duration::from_millis(2500), "{took:?}\n{log}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{log}");
    assert_clean_shutdown(&log);
}

#[test]
fn sigterm_sweeps_orphans_that_handle_sigterm_without_waiting_for_the_deadline() {
    // No stubborn process: once SIGTERM has done its work, the daemon
    // exits at once instead of waiting out `shutdown_timeout`.
    let services = tree_service("chains", "esc, '4'", "") + &tree_service("polite", "polite", "");
    let mut d = Daemon::start_with("sweepq", "  shutdown_timeout: 20s\n", &services, prepare);
    let _guard = Leftovers(d.dir.clone());
    let pids = wait_tree(&d.dir, 6, || d.log_text());
    let t0 = Instant::now();
    assert_eq!(d.stop(30.0), 0, "{}", d.log_text());
    let took = t0.elapsed();
    let log = d.log_text();
    let left: Vec<i32> = pids.iter().copied().filter(|&p| exists(p)).collect();
    assert!(left.is_empty(), "outlived the daemon: {left:?}\n{log}");
    assert!(took < Duration::from_secs(10), "{took:?}\n{log}");
    assert!(!log.contains("sending SIGKILL"), "{log}");
    assert_clean_shutdown(&log);
}

/// `unshare --pid --fork --mount-proc`: coffeyd as PID 1 of a new
/// namespace (container mode). Fails, naming why, if this host cannot.
fn unshare(dir: &Path, config: &Path) -> std::process::Child {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--net"])
        .args([BIN, "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("unshare: {e} (needs util-linux and root)"))
}

#[test]
fn container_mode_sweeps_the_namespace_before_exiting() {
    // As PID 1 the kernel would SIGKILL the rest of the namespace when
    // coffeyd exits; the sweep gives them SIGTERM first and waits.
    let dir = tempdir("sweepns");
    prepare(&dir);
    let log = dir.join("coffey.log");
    let config = dir.join("config.yaml");
    let text = format!(
        "coffey:\n  socket: {}\n  shutdown_timeout: 3s\n  log:\n    path: {}\n    console: false\nservices:\n{}",
        dir.join("s.sock").display(),
        log.display(),
        checked_service(),
    )
    .replace("$DIR", &dir.display().to_string());
    std::fs::write(&config, text).unwrap();
    let mut child = unshare(&dir, &config);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = || std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids_in(&dir).len() < 3 || !read().contains("checked: completed") {
        let ended = child.try_wait().unwrap();
        assert!(
            ended.is_none() && Instant::now() < deadline,
            "{ended:?}\n{}\n{}",
            read(),
            stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(read().contains("started: pid 1,"), "{}", read());
    let init = children(child.id() as i32).into_iter().next().unwrap();
    let below = descendants(init);
    assert!(below.len() >= 3, "{below:?}");
    let t0 = Instant::now();
    signal(init, 15);
    let st = wait_for(20.0, "namespace exit", || child.try_wait().unwrap());
    let took = t0.elapsed();
    let text = read();
    assert_eq!(st.code(), Some(0), "{text}\n{}", stderr());
    let termed = std::fs::read_to_string(dir.join("termed")).unwrap_or_default();
    assert_eq!(termed.lines().count(), 1, "termed: {termed:?}\n{text}");
    assert!(
        text.contains("shutdown: sending SIGKILL to 1 process still below coffeyd"),
        "{text}"
    );
    assert!(took >= Duration::from_millis(2500), "{took:?}\n{text}");
    let left: Vec<i32> = below.iter().copied().filter(|&p| exists(p)).collect();
    assert!(left.is_empty(), "{left:?}");
    assert_clean_shutdown(&text);
}
