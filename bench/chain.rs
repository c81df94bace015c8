//! Propagation cost of the supervisor machine alone (no processes): a
//! chain of N services, each depending on the one before, started and then
//! shut down in reverse dependency order, every stop answered by its exit
//! at once. Prints min/median/max over RUNS runs per N, in ms. The shell's
//! costs (signals, reaping) are not in it: see bench/reload.sh for those.
//! Issue 10's target: shutdown of a 1,000-service chain <= 20 ms.
//!
//! `cargo bench --bench chain` (harness-less; `N=250,500,1000 RUNS=5`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![allow(clippy::disallowed_methods, clippy::disallowed_macros)]

use coffey::pidindex::{PidIndex, PidSlot};
use coffey::service::{Condition, Dep, Event, Policy, Service, StateName};
use coffey::supervisor::Supervisor;
use coffey::sys::{ExitStatus, SpawnError, Sys};
use coffey::time::Instant;

/// Spawns get fresh pids; kills are recorded for the caller to answer.
#[derive(Default)]
struct Fake {
    pid: i32,
    killed: Vec<i32>,
}

impl Sys for Fake {
    fn spawn(&mut self, _idx: usize) -> Result<i32, SpawnError> {
        self.pid += 1;
        Ok(self.pid)
    }
    fn kill_group(&mut self, pgid: i32, _sig: i32) {
        self.killed.push(pgid);
    }
    fn group_alive(&mut self, _pgid: i32) -> bool {
        false
    }
    fn emit(&mut self, _idx: usize, _from: StateName, _to: StateName, _e: &Event) {}
}

/// Slot i depends on slot i + 1: the table lists the chain backwards, the
/// worst case for passes in table order.
fn chain(n: usize) -> Vec<Service> {
    let mut v: Vec<Service> = (0..n)
        .map(|i| Service::new(i as u16, Policy::default()))
        .collect();
    for (i, s) in v.iter_mut().enumerate().take(n.saturating_sub(1)) {
        let dep = Dep {
            idx: (i + 1) as u16,
            condition: Condition::Started,
        };
        s.deps.push(dep).unwrap();
    }
    v
}

/// (start, shutdown) in ms for one run.
fn run(n: usize) -> (f64, f64) {
    let mut v = chain(n);
    let mut pids = vec![PidSlot::EMPTY; PidIndex::capacity_for(n)];
    let mut sup = Supervisor::new(&mut v, &mut pids, n);
    let mut sys = Fake::default();
    let now = Instant::from_millis(1000);
    let t0 = std::time::Instant::now();
    sup.start_all(now, &mut sys);
    let start = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(sys.pid as usize, n, "every service spawned");
    let t1 = std::time::Instant::now();
    sup.shutdown(now, 10_000, &mut sys);
    // A stop may signal a group more than once (TERM, then CONT).
    let mut gone = vec![false; n + 1];
    let (mut seen, mut exits) = (0, 0);
    while seen < sys.killed.len() {
        let pid = sys.killed[seen];
        seen += 1;
        if !std::mem::replace(&mut gone[pid as usize], true) {
            exits += 1;
            sup.on_exit(pid, ExitStatus::Signal(15), now, &mut sys);
        }
    }
    let stop = t1.elapsed().as_secs_f64() * 1e3;
    assert!(sup.finished(), "shutdown finished");
    assert_eq!(exits, n, "each service stopped once");
    (start, stop)
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{:.2} / {:.2} / {:.2}",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1]
    )
}

fn main() {
    let ns = std::env::var("N").unwrap_or_else(|_| "250,500,1000".into());
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    println!("chain of N services, min / median / max ms over {runs} runs");
    for n in ns.split(',').map(|s| s.trim().parse::<usize>().unwrap()) {
        let (s, d): (Vec<f64>, Vec<f64>) = (0..runs).map(|_| run(n)).unzip();
        println!("N={n:5}  start {}  shutdown {}", stats(s), stats(d));
    }
}
