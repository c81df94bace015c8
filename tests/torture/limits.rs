//! Running out: file descriptors (case 4), processes (case 5), disk
//! (case 9). The daemon degrades (a spawn backs off, a client waits, a
//! line is dropped and counted) and recovers when the resource is back.

use crate::common::*;
use crate::*;
use nix::sys::resource::{setrlimit, Resource};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// Sets the soft RLIMIT_NOFILE of `pid` (the hard one stays).
fn prlimit_nofile(pid: i32, n: u64) {
    let st = Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={n}:"))
        .status()
        .unwrap();
    assert!(st.success(), "prlimit --nofile={n} failed");
}

fn nofile_soft(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let l = s.lines().find(|l| l.starts_with("Max open files")).unwrap();
    l.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Case 4a: the daemon started with RLIMIT_NOFILE far below its fd
/// budget refuses cleanly (exit 3, "out of descriptors"-style message, no
/// panic) or runs; it never crashes or hangs.
#[test]
#[ignore = "torture: run with just torture"]
fn fd_exhaustion_at_startup() {
    for n in [4u64, 8, 16, 24] {
        let dir = tempdir("t-fdstart");
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, config_text(&dir, "", &svc("one", "sleep 600", ""))).unwrap();
        let t0 = Instant::now();
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(&cfg)
            .env("CFY_TORTURE", dir.file_name().unwrap());
        // SAFETY: setrlimit only.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let sock = dir.join("s.sock");
        let exited = wait_until(10.0, || {
            child.try_wait().unwrap().is_some() || operator(&sock, 1.0).is_ok()
        });
        let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        let log = std::fs::read_to_string(dir.join("coffey.log")).unwrap_or_default();
        assert!(
            exited,
            "nofile={n}: neither refused nor served within 10 s\n{stderr}{log}"
        );
        assert!(
            !stderr.contains("panicked") && !log.contains("panicked"),
            "nofile={n}: {stderr}{log}"
        );
        match child.try_wait().unwrap() {
            Some(st) => {
                println!(
                    "FIGURE fd_exhaustion_at_startup nofile={n} exit={:?} ms={} msg={:?}",
                    st.code(),
                    t0.elapsed().as_millis(),
                    (stderr.clone() + &log).lines().last().unwrap_or("")
                );
                assert_eq!(
                    st.code(),
                    Some(3),
                    "nofile={n}: refused, but not with exit 3 (could not start)\n{stderr}{log}"
                );
                assert!(
                    !(stderr.clone() + &log).trim().is_empty(),
                    "nofile={n}: refused without a word"
                );
            }
            None => {
                println!("FIGURE fd_exhaustion_at_startup nofile={n} runs");
                signal(child.id() as i32, 15);
                let st = child.wait().unwrap();
                assert_eq!(st.code(), Some(0), "nofile={n}");
            }
        }
        assert!(
            wait_until(5.0, || tagged(
                &dir.file_name().unwrap().to_string_lossy(),
                None
            )
            .is_empty()),
            "nofile={n}: processes left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Case 4b: at run time the daemon's RLIMIT_NOFILE drops to what it holds
/// (prlimit), while services restart and clients connect: spawns back off,
/// and a client that connected while fds were out is served as soon as
/// they are back, with no other client needed to wake the loop. Then
/// everything recovers.
#[test]
#[ignore = "torture: run with just torture"]
fn fd_exhaustion_at_run_time() {
    let services: String = (0..10)
        .map(|i| {
            svc(
                &format!("churn-{i}"),
                "sleep 0.2",
                "    backoff:\n      initial: 100ms\n    log:\n      console: false\n",
            )
        })
        .collect();
    let names: Vec<String> = (0..10).map(|i| format!("churn-{i}")).collect();
    let mut t = Torture::start("fd_exhaustion_at_run_time", "", &services);
    t.rss_bound_kib = 256;
    t.quiet_baseline(&names);
    let pid = t.d.pid();
    let soft = nofile_soft(pid);
    let r0 = restarts(&t.d);
    let held = fds(pid) as u64;
    prlimit_nofile(pid, held);
    let hold = scale(10, 3);
    // Clients that connect while the daemon has no fd to accept them.
    let mut queued = Vec::new();
    for _ in 0..4 {
        let mut c = UnixStream::connect(&t.d.socket).unwrap();
        c.write_all(&[1, 0x0a, 0, 0]).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        queued.push(c);
    }
    std::thread::sleep(Duration::from_secs(hold));
    assert!(
        alive(pid),
        "fd_exhaustion_at_run_time: the daemon died without fds\n{}",
        tail(&t.d.log_text())
    );
    let t0 = Instant::now();
    prlimit_nofile(pid, soft);
    // Issue 9 point 2: accept is retried on a short deadline after EMFILE.
    let mut late = Vec::new();
    for (i, c) in queued.iter_mut().enumerate() {
        let mut b = [0u8; 64];
        match c.read(&mut b) {
            Ok(n) if n > 0 => {}
            r => late.push(format!("client {i}: {r:?} after {:?}", t0.elapsed())),
        }
    }
    t.figure("queued_served_ms", t0.elapsed().as_millis());
    drop(queued);
    assert!(
        late.is_empty(),
        "fd_exhaustion_at_run_time: clients queued during EMFILE not served: {late:?}"
    );
    let recovered = wait_until(10.0, || restarts(&t.d) > r0 + 20);
    t.figure("hold_secs", hold);
    t.figure("restarts_during_and_after", restarts(&t.d) - r0);
    assert!(
        recovered,
        "fd_exhaustion_at_run_time: services did not restart again once fds were back"
    );
    assert!(t.operator(OPERATOR_DEADLINE).is_ok());
    ctl_all(&t.d, "stop", &names, 30.0);
    t.finish();
}

/// Processes of `uid` alive now.
fn procs_of(uid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<i32>().is_ok())
        })
        .filter(|e| {
            let s = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .is_some_and(|u| u == uid.to_string())
                && !s.contains("State:\tZ")
        })
        .count()
}

const NPROC_UID: u32 = 61_234;
const NPROC: u64 = 30;

/// Case 5: services run as a dedicated uid (61234) whose RLIMIT_NPROC is
/// 30, and each tries to start 40 children: forks and execs fail with
/// EAGAIN. The daemon (root) is not limited: it keeps supervising,
/// serving, and nothing of the uid is left after shutdown.
#[test]
#[ignore = "torture: run with just torture"]
fn nproc_exhaustion() {
    assert_eq!(
        euid(),
        0,
        "nproc_exhaustion runs as root (it starts services as uid {NPROC_UID})"
    );
    assert_eq!(
        procs_of(NPROC_UID),
        0,
        "uid {NPROC_UID} is not dedicated: it has processes"
    );
    let names: Vec<String> = (0..5).map(|i| format!("bomb-{i}")).collect();
    let services: String = names
        .iter()
        .map(|n| svc(n, "for i in $(seq 40); do sleep 600 & done; sleep 1; exit 1", &format!("    user: '{NPROC_UID}'\n    backoff:\n      initial: 100ms\n      max: 100ms\n    log:\n      console: false\n")))
        .collect();
    let mut t = Torture::start_with(
        "nproc_exhaustion",
        "",
        &services,
        |_| {},
        || setrlimit(Resource::RLIMIT_NPROC, NPROC, NPROC).map_err(std::io::Error::from),
    );
    t.rss_bound_kib = 256;
    t.quiet_baseline(&names);
    let secs = scale(30, 8);
    let mut peak = 0;
    let ((), worst, fails, zmax) = t.under_load(100, || {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            peak = peak.max(procs_of(NPROC_UID));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let log = t.d.log_text();
    t.figure("uid_procs_peak", peak);
    t.figure("spawn_failures", log.matches(": cannot start: ").count());
    t.figure("restarts", restarts(&t.d));
    t.figure("zombies_max", zmax);
    t.figure("operator_worst_ms", worst.as_millis());
    assert_served("nproc_exhaustion", &fails, "sampled every 100 ms");
    assert!(
        peak as u64 <= NPROC + 1,
        "nproc_exhaustion: {peak} processes of the uid, limit {NPROC}"
    );
    assert!(
        peak >= 10,
        "nproc_exhaustion: only {peak} processes of the uid: the bomb did not run"
    );
    ctl_all(&t.d, "stop", &names, 30.0);
    assert!(
        wait_until(10.0, || procs_of(NPROC_UID) == 0),
        "nproc_exhaustion: {} processes of uid {NPROC_UID} outlive `stop`",
        procs_of(NPROC_UID)
    );
    t.finish();
    assert_eq!(procs_of(NPROC_UID), 0);
}

/// Case 9: `service_logs.dir` on a 256 KiB tmpfs that fills up. The daemon
/// stays up and served, the ring keeps the latest lines (`logs` shows
/// them), and the disk errors are reported, not repeated per line.
#[test]
#[ignore = "torture: run with just torture"]
fn disk_full() {
    assert_eq!(euid(), 0, "disk_full mounts a tmpfs: run as root");
    let names: Vec<String> = (0..3).map(|i| format!("writer-{i}")).collect();
    let services: String = names
        .iter()
        .map(|n| svc(n, "i=0; while :; do i=$((i+1)); echo line-$i-0123456789012345678901234567890123456789; done", "    log:\n      console: false\n"))
        .collect();
    let extra = "  service_logs:\n    dir: $DIR/logs\n    max_size: 64KiB\n    keep: 5\n";
    let mut mounted = None;
    let mut t = Torture::start_with(
        "disk_full",
        extra,
        &services,
        |d| {
            let m = d.join("logs");
            std::fs::create_dir_all(&m).unwrap();
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
                .arg(&m)
                .status()
                .unwrap();
            assert!(st.success(), "mount tmpfs");
            mounted = Some(m);
        },
        || Ok(()),
    );
    let mnt = mounted.clone().unwrap();
    let _unmount = Unmount(mnt.clone());
    t.rss_bound_kib = 256;
    t.quiet_baseline(&names);
    let secs = scale(30, 8);
    let d = &t.d;
    let (full, worst, fails, _) = t.under_load(100, || {
        let full = wait_until(secs as f64, || {
            let o = Command::new("df")
                .arg("--output=avail")
                .arg(&mnt)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .is_some_and(|a| a.trim() == "0")
        });
        std::thread::sleep(Duration::from_secs(secs / 2));
        full
    });
    assert!(full, "disk_full: the tmpfs never filled");
    // The ring still has the newest lines.
    let o = ok(ctl(d, &["logs", "writer-0", "-n", "5", "--no-follow"]));
    let n1 = last_line_no(&o.stdout);
    std::thread::sleep(Duration::from_millis(500));
    let o = ok(ctl(d, &["logs", "writer-0", "-n", "5", "--no-follow"]));
    let n2 = last_line_no(&o.stdout);
    let log = t.d.log_text();
    let errs = log
        .lines()
        .filter(|l| l.contains("No space left") || l.contains("ENOSPC") || l.contains("disk full"))
        .count();
    t.figure("ring_advanced_lines", n2.saturating_sub(n1));
    t.figure("enospc_log_lines", errs);
    t.figure("operator_worst_ms", worst.as_millis());
    assert_served("disk_full", &fails, "sampled every 100 ms");
    assert!(
        n2 > n1,
        "disk_full: the ring stopped while the disk was full ({n1} -> {n2})"
    );
    assert!(
        errs <= 3 * 2 + 5,
        "disk_full: {errs} lines about the full disk: not drop-and-count"
    );
    ctl_all(&t.d, "stop", &names, 30.0);
    t.finish();
}

fn last_line_no(logs: &str) -> u64 {
    logs.lines()
        .filter_map(|l| l.split("line-").nth(1))
        .filter_map(|r| r.split('-').next())
        .filter_map(|n| n.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Unmounts the test's tmpfs (lazily if still busy) when the case ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}
