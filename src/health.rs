//! The HEALTH-CHECK machine: one per configured check (readiness,
//! liveness or startup) of a service.
//!
//! A startup check (Kubernetes' startupProbe) runs first and only until
//! its verdict: once it is healthy or unhealthy it probes no more (its
//! state stays `Waiting` at `NEVER` until the service goes down), and the
//! supervisor starts the other checks only after it has passed.
//!
//! States: `Off` (the service has no process: no probe may exist),
//! `Waiting { next_at }` (next probe due), `Probing { deadline }` (one probe
//! in flight; the shell owns its socket or pid), and `Passive { expires }`
//! for notify checks, which never probe but wait for the service to say
//! it is ready (and, with a watchdog, to keep saying it). The machine
//! never reads the clock and never touches a socket: it tells the caller
//! to start or cancel a probe, and is told the result.

use crate::time::{Instant, Millis};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Readiness,
    Liveness,
    Startup,
}

/// How many checks a service can have (one per role).
pub const ROLES: usize = 3;

impl Role {
    /// Position in a service's `checks` array.
    pub fn index(self) -> usize {
        match self {
            Role::Readiness => 0,
            Role::Liveness => 1,
            Role::Startup => 2,
        }
    }
    pub fn from_index(i: usize) -> Role {
        match i {
            0 => Role::Readiness,
            1 => Role::Liveness,
            _ => Role::Startup,
        }
    }
    /// Which of the shell's two probes runs this check. The startup check
    /// borrows the liveness probe: liveness runs only once startup is over.
    pub fn probe(self) -> usize {
        match self {
            Role::Readiness => 0,
            Role::Liveness | Role::Startup => 1,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Readiness => "readiness",
            Role::Liveness => "liveness",
            Role::Startup => "startup",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// http, tcp, exec: probe every `interval`.
    Probe,
    /// notify: wait for the service; `watchdog` (if any) after ready.
    Passive { watchdog: Option<Millis> },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CheckPolicy {
    pub mode: Mode,
    pub interval: Millis,
    pub timeout: Millis,
    pub start_period: Millis,
    pub retries: u32,
    pub success_threshold: u32,
}

/// Why a probe failed, for status and events. Small and `Copy`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// connect(2) or another socket call failed with this errno.
    Connect(i32),
    Timeout,
    /// HTTP status outside 2xx/3xx (or not `expect_status`).
    HttpStatus(u16),
    /// Not a parsable HTTP response (or the status line did not fit).
    HttpGarbage,
    /// The peer closed before a status line arrived.
    Closed,
    /// exec check exited with this code / was killed by this signal.
    Exit(i32),
    Signal(i32),
    /// exec check could not be started (errno).
    Spawn(i32),
    /// notify: the watchdog expired.
    Watchdog,
    /// notify: the service sent `WATCHDOG=trigger`.
    WatchdogTrigger,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckState {
    Off,
    Waiting { next_at: Instant },
    Probing { deadline: Instant },
    Passive { expires: Instant },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Healthy,
    Unhealthy,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Healthy => "healthy",
            Verdict::Unhealthy => "unhealthy",
        }
    }
}

/// What the caller must do after a step.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Actions {
    pub start_probe: bool,
    pub cancel_probe: bool,
    /// The verdict changed to this.
    pub verdict: Option<Verdict>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CheckInput {
    /// The service has a process now (spawned).
    ServiceUp,
    /// The service's process is gone (or stopping): drop any probe.
    ServiceDown,
    Tick,
    /// The in-flight probe finished.
    Result(Result<(), ProbeError>),
    /// notify: READY=1 or a newline on the readiness fd.
    Notified,
    /// notify: WATCHDOG=1.
    Ping,
    /// notify: WATCHDOG=trigger, a watchdog failure now (as systemd, with
    /// or without a configured watchdog).
    Trigger,
    /// notify: EXTEND_TIMEOUT_USEC=; a running watchdog expires no
    /// sooner than this from now.
    Extend(Millis),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub role: Role,
    pub policy: CheckPolicy,
    pub state: CheckState,
    pub verdict: Verdict,
    pub successes: u32,
    pub failures: u32,
    pub last_error: Option<ProbeError>,
    /// When the service came up (start_period counts from here).
    up_at: Instant,
    pub probes: u64,
    /// When the probe in flight (or the last one) began.
    probe_at: Instant,
    /// How long the last finished probe took (a timeout counts as its
    /// timeout): the latency `metrics` shows.
    pub last_probe_ms: u64,
    /// Unexpected (state, input) pairs seen.
    pub unexpected: u32,
}

impl Check {
    pub fn new(role: Role, policy: CheckPolicy) -> Check {
        Check {
            role,
            policy,
            state: CheckState::Off,
            verdict: Verdict::Unknown,
            successes: 0,
            failures: 0,
            last_error: None,
            up_at: Instant::ZERO,
            probes: 0,
            probe_at: Instant::ZERO,
            last_probe_ms: 0,
            unexpected: 0,
        }
    }

    pub fn poll_at(&self) -> Instant {
        match self.state {
            CheckState::Off => Instant::NEVER,
            CheckState::Waiting { next_at } => next_at,
            CheckState::Probing { deadline } => deadline,
            CheckState::Passive { expires } => expires,
        }
    }

    fn set_verdict(&mut self, v: Verdict, out: &mut Actions) {
        if self.verdict != v {
            self.verdict = v;
            out.verdict = Some(v);
        }
    }

    fn record(&mut self, r: Result<(), ProbeError>, now: Instant, out: &mut Actions) {
        match r {
            Ok(()) => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                self.last_error = None;
                if self.successes >= self.policy.success_threshold.max(1) {
                    self.set_verdict(Verdict::Healthy, out);
                }
            }
            Err(e) => {
                self.last_error = Some(e);
                self.successes = 0;
                // Failures in the start period do not count.
                if now < self.up_at.add(self.policy.start_period) {
                    return;
                }
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.policy.retries.max(1) {
                    self.set_verdict(Verdict::Unhealthy, out);
                }
            }
        }
    }

    /// When the next probe is due after one ended at `now`: an interval
    /// on, except for a startup check that has its verdict (it is over).
    fn next_probe(&self, now: Instant) -> Instant {
        if self.role == Role::Startup && self.verdict != Verdict::Unknown {
            Instant::NEVER
        } else {
            now.add(self.policy.interval)
        }
    }

    /// Whether the other checks may run: there is no startup check, or it
    /// has passed in this run of the service.
    pub fn started(startup: Option<&Check>) -> bool {
        startup.is_none_or(|c| c.verdict == Verdict::Healthy && c.state != CheckState::Off)
    }

    /// The transition function.
    pub fn step(&mut self, input: CheckInput, now: Instant) -> Actions {
        let mut out = Actions::default();
        match (self.state, input) {
            (CheckState::Off, CheckInput::ServiceUp) => {
                self.up_at = now;
                self.successes = 0;
                self.failures = 0;
                self.verdict = Verdict::Unknown;
                self.last_error = None;
                self.state = match self.policy.mode {
                    // First probe at once: readiness should not wait an
                    // interval to notice a fast service.
                    Mode::Probe => CheckState::Waiting { next_at: now },
                    Mode::Passive { .. } => CheckState::Passive {
                        expires: Instant::NEVER,
                    },
                };
            }
            (CheckState::Off, _) => {}
            (_, CheckInput::ServiceUp) => {}
            (CheckState::Probing { .. }, CheckInput::ServiceDown) => {
                out.cancel_probe = true;
                self.state = CheckState::Off;
            }
            (_, CheckInput::ServiceDown) => self.state = CheckState::Off,

            (CheckState::Waiting { next_at }, CheckInput::Tick) if now >= next_at => {
                self.probes = self.probes.saturating_add(1);
                self.probe_at = now;
                out.start_probe = true;
                self.state = CheckState::Probing {
                    deadline: now.add(self.policy.timeout),
                };
            }
            (CheckState::Probing { deadline }, CheckInput::Tick) if now >= deadline => {
                out.cancel_probe = true;
                self.last_probe_ms = now.since(self.probe_at);
                self.record(Err(ProbeError::Timeout), now, &mut out);
                self.state = CheckState::Waiting {
                    next_at: self.next_probe(now),
                };
            }
            (CheckState::Passive { expires }, CheckInput::Tick) if now >= expires => {
                self.last_error = Some(ProbeError::Watchdog);
                self.failures = self.failures.saturating_add(1);
                self.set_verdict(Verdict::Unhealthy, &mut out);
                self.state = CheckState::Passive {
                    expires: Instant::NEVER,
                };
            }
            (_, CheckInput::Tick) => {}

            (CheckState::Probing { .. }, CheckInput::Result(r)) => {
                self.last_probe_ms = now.since(self.probe_at);
                self.record(r, now, &mut out);
                self.state = CheckState::Waiting {
                    next_at: self.next_probe(now),
                };
            }
            (CheckState::Passive { .. }, CheckInput::Notified) => {
                self.record(Ok(()), now, &mut out);
                self.successes = self.successes.max(self.policy.success_threshold);
                self.set_verdict(Verdict::Healthy, &mut out);
                if let Mode::Passive { watchdog: Some(w) } = self.policy.mode {
                    self.state = CheckState::Passive {
                        expires: now.add(w),
                    };
                }
            }
            (CheckState::Passive { expires }, CheckInput::Ping) => {
                if let Mode::Passive { watchdog: Some(w) } = self.policy.mode {
                    if expires != Instant::NEVER || self.verdict == Verdict::Healthy {
                        self.state = CheckState::Passive {
                            expires: now.add(w),
                        };
                    }
                }
            }
            (CheckState::Passive { .. }, CheckInput::Trigger) => {
                self.last_error = Some(ProbeError::WatchdogTrigger);
                self.failures = self.failures.saturating_add(1);
                self.set_verdict(Verdict::Unhealthy, &mut out);
                self.state = CheckState::Passive {
                    expires: Instant::NEVER,
                };
            }
            (CheckState::Passive { expires }, CheckInput::Extend(by)) => {
                if expires != Instant::NEVER {
                    self.state = CheckState::Passive {
                        expires: expires.max(now.add(by)),
                    };
                }
            }
            (CheckState::Waiting { .. } | CheckState::Passive { .. }, CheckInput::Result(_))
            | (
                CheckState::Waiting { .. } | CheckState::Probing { .. },
                CheckInput::Notified
                | CheckInput::Ping
                | CheckInput::Trigger
                | CheckInput::Extend(_),
            ) => {
                // A late result after a timeout, or a notify for a probing
                // check: harmless, counted.
                self.unexpected = self.unexpected.saturating_add(1);
            }
        }
        out
    }
}

/// Judges an HTTP response from its first bytes: `Some` once the status
/// line decides it (2xx/3xx, or exactly `expect`), `Some(Err(garbage))`
/// for bytes that are not HTTP or a status line longer than `max`, `None`
/// when more bytes are needed. No allocation (httparse).
pub fn http_verdict(buf: &[u8], expect: Option<u16>, max: usize) -> Option<Result<(), ProbeError>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(buf);
    let verdict = |code: u16| {
        let ok = match expect {
            Some(e) => code == e,
            None => (200..400).contains(&code),
        };
        if ok {
            Ok(())
        } else {
            Err(ProbeError::HttpStatus(code))
        }
    };
    match (parsed, resp.code) {
        (_, Some(code)) => Some(verdict(code)),
        (Ok(_), None) if buf.len() >= max => Some(Err(ProbeError::HttpGarbage)),
        (Ok(_), None) => None,
        (Err(_), None) => Some(Err(ProbeError::HttpGarbage)),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    fn probe(retries: u32, start_period: Millis) -> Check {
        Check::new(
            Role::Readiness,
            CheckPolicy {
                mode: Mode::Probe,
                interval: 1000,
                timeout: 300,
                start_period,
                retries,
                success_threshold: 1,
            },
        )
    }
    fn t(ms: u64) -> Instant {
        Instant(ms)
    }

    #[test]
    fn probes_on_schedule_and_times_out() {
        let mut c = probe(2, 0);
        assert_eq!(
            c.step(CheckInput::Tick, t(0)),
            Actions::default(),
            "off: nothing"
        );
        c.step(CheckInput::ServiceUp, t(0));
        let a = c.step(CheckInput::Tick, t(0));
        assert!(a.start_probe);
        assert_eq!(c.poll_at(), t(300));
        assert!(!c.step(CheckInput::Tick, t(299)).cancel_probe);
        let a = c.step(CheckInput::Tick, t(300));
        assert!(a.cancel_probe);
        assert_eq!(c.last_error, Some(ProbeError::Timeout));
        assert_eq!(c.last_probe_ms, 300, "a timeout takes its timeout");
        assert_eq!(c.verdict, Verdict::Unknown, "one failure of two");
        assert_eq!(c.poll_at(), t(1300));
        c.step(CheckInput::Tick, t(1300));
        let a = c.step(
            CheckInput::Result(Err(ProbeError::HttpStatus(503))),
            t(1310),
        );
        assert_eq!(a.verdict, Some(Verdict::Unhealthy));
        assert_eq!(c.last_probe_ms, 10, "the probe's own duration");
        c.step(CheckInput::Tick, t(2310));
        let a = c.step(CheckInput::Result(Ok(())), t(2327));
        assert_eq!(a.verdict, Some(Verdict::Healthy));
        assert_eq!(c.last_probe_ms, 17);
        assert_eq!(c.failures, 0);
    }

    #[test]
    fn start_period_failures_do_not_count() {
        let mut c = probe(1, 5000);
        c.step(CheckInput::ServiceUp, t(0));
        c.step(CheckInput::Tick, t(0));
        let a = c.step(CheckInput::Result(Err(ProbeError::Connect(111))), t(10));
        assert_eq!(a.verdict, None);
        assert_eq!(c.failures, 0);
        c.step(CheckInput::Tick, t(5010));
        let a = c.step(CheckInput::Result(Err(ProbeError::Connect(111))), t(5020));
        assert_eq!(a.verdict, Some(Verdict::Unhealthy));
    }

    #[test]
    fn service_down_cancels_the_probe() {
        let mut c = probe(1, 0);
        c.step(CheckInput::ServiceUp, t(0));
        c.step(CheckInput::Tick, t(0));
        let a = c.step(CheckInput::ServiceDown, t(5));
        assert!(a.cancel_probe);
        assert_eq!(c.state, CheckState::Off);
        assert_eq!(c.poll_at(), Instant::NEVER);
        // A late result is ignored.
        assert_eq!(c.step(CheckInput::Result(Ok(())), t(6)), Actions::default());
    }

    #[test]
    fn http_verdicts() {
        let v = |b: &[u8], e| http_verdict(b, e, 512);
        assert_eq!(v(b"HTTP/1.1 200 OK\r\n", None), Some(Ok(())));
        assert_eq!(
            v(b"HTTP/1.0 302 Found\r\nLocation: /\r\n\r\n", None),
            Some(Ok(()))
        );
        assert_eq!(
            v(b"HTTP/1.1 503 Unavailable\r\n", None),
            Some(Err(ProbeError::HttpStatus(503)))
        );
        assert_eq!(
            v(b"HTTP/1.1 200 OK\r\n", Some(204)),
            Some(Err(ProbeError::HttpStatus(200)))
        );
        assert_eq!(v(b"HTTP/1.1 20", None), None, "partial: need more");
        assert_eq!(v(b"", None), None);
        assert_eq!(
            v(b"\x00\xffgarbage\r\n", None),
            Some(Err(ProbeError::HttpGarbage))
        );
        assert_eq!(
            v(b"SSH-2.0-OpenSSH\r\n", None),
            Some(Err(ProbeError::HttpGarbage))
        );
        let long = [b'H'; 600];
        assert_eq!(
            http_verdict(&long[..512], None, 512),
            Some(Err(ProbeError::HttpGarbage))
        );
    }

    #[test]
    fn success_threshold() {
        let mut c = probe(1, 0);
        c.policy.success_threshold = 2;
        c.step(CheckInput::ServiceUp, t(0));
        c.step(CheckInput::Tick, t(0));
        assert_eq!(c.step(CheckInput::Result(Ok(())), t(1)).verdict, None);
        c.step(CheckInput::Tick, t(1001));
        assert_eq!(
            c.step(CheckInput::Result(Ok(())), t(1002)).verdict,
            Some(Verdict::Healthy)
        );
    }

    #[test]
    fn notify_and_watchdog() {
        let mut c = Check::new(
            Role::Readiness,
            CheckPolicy {
                mode: Mode::Passive {
                    watchdog: Some(500),
                },
                interval: 1000,
                timeout: 300,
                start_period: 0,
                retries: 1,
                success_threshold: 1,
            },
        );
        c.step(CheckInput::ServiceUp, t(0));
        assert_eq!(
            c.poll_at(),
            Instant::NEVER,
            "no probes, no timer before ready"
        );
        let a = c.step(CheckInput::Notified, t(100));
        assert_eq!(a.verdict, Some(Verdict::Healthy));
        assert_eq!(c.poll_at(), t(600));
        c.step(CheckInput::Ping, t(400));
        assert_eq!(c.poll_at(), t(900));
        let a = c.step(CheckInput::Tick, t(900));
        assert_eq!(a.verdict, Some(Verdict::Unhealthy));
        assert_eq!(c.last_error, Some(ProbeError::Watchdog));
    }

    fn passive(watchdog: Option<Millis>) -> Check {
        Check::new(
            Role::Readiness,
            CheckPolicy {
                mode: Mode::Passive { watchdog },
                interval: 1000,
                timeout: 300,
                start_period: 0,
                retries: 1,
                success_threshold: 1,
            },
        )
    }

    /// WATCHDOG=trigger fails at once, ready or not, watchdog or not.
    #[test]
    fn watchdog_trigger_fails_at_once() {
        for wd in [Some(60_000), None] {
            let mut c = passive(wd);
            c.step(CheckInput::ServiceUp, t(0));
            c.step(CheckInput::Notified, t(10));
            let a = c.step(CheckInput::Trigger, t(20));
            assert_eq!(a.verdict, Some(Verdict::Unhealthy), "{wd:?}");
            assert_eq!(c.last_error, Some(ProbeError::WatchdogTrigger));
            assert_eq!(c.poll_at(), Instant::NEVER);
            // Still starting (never said READY=1): the same.
            let mut c = passive(wd);
            c.step(CheckInput::ServiceUp, t(0));
            assert_eq!(
                c.step(CheckInput::Trigger, t(5)).verdict,
                Some(Verdict::Unhealthy)
            );
        }
        // A probing check has no notify socket: counted, nothing else.
        let mut c = probe(1, 0);
        c.step(CheckInput::ServiceUp, t(0));
        assert_eq!(c.step(CheckInput::Trigger, t(1)), Actions::default());
        assert_eq!(c.unexpected, 1);
    }

    /// EXTEND_TIMEOUT_USEC= pushes a running watchdog out, never in.
    #[test]
    fn extend_delays_the_watchdog() {
        let mut c = passive(Some(500));
        c.step(CheckInput::ServiceUp, t(0));
        c.step(CheckInput::Extend(5000), t(1));
        assert_eq!(c.poll_at(), Instant::NEVER, "no watchdog before ready");
        c.step(CheckInput::Notified, t(100));
        assert_eq!(c.poll_at(), t(600));
        c.step(CheckInput::Extend(2000), t(200));
        assert_eq!(c.poll_at(), t(2200));
        c.step(CheckInput::Extend(10), t(300));
        assert_eq!(c.poll_at(), t(2200));
        assert_eq!(c.step(CheckInput::Tick, t(2199)).verdict, None);
        assert_eq!(
            c.step(CheckInput::Tick, t(2200)).verdict,
            Some(Verdict::Unhealthy)
        );
    }

    /// A startup check probes until its verdict and then no more: healthy
    /// on the first success, unhealthy after `retries` failures past
    /// `start_period`.
    #[test]
    fn startup_probes_until_its_verdict() {
        let mut c = probe(2, 1500);
        c.role = Role::Startup;
        c.step(CheckInput::ServiceUp, t(0));
        c.step(CheckInput::Tick, t(0));
        c.step(CheckInput::Result(Err(ProbeError::Connect(111))), t(10));
        assert_eq!(c.failures, 0, "in the start period");
        assert_eq!(c.poll_at(), t(1010));
        c.step(CheckInput::Tick, t(1010));
        let a = c.step(CheckInput::Result(Ok(())), t(1020));
        assert_eq!(a.verdict, Some(Verdict::Healthy));
        assert_eq!(c.poll_at(), Instant::NEVER, "passed: no more probes");
        assert!(Check::started(Some(&c)));
        // The next run starts over; failures past the start period count.
        c.step(CheckInput::ServiceDown, t(2000));
        assert!(!Check::started(Some(&c)), "off: not started");
        c.step(CheckInput::ServiceUp, t(3000));
        assert!(!Check::started(Some(&c)));
        for at in [3000, 4010, 5020, 6030] {
            assert!(c.step(CheckInput::Tick, t(at)).start_probe, "{at}");
            c.step(CheckInput::Result(Err(ProbeError::Exit(1))), t(at + 10));
        }
        assert_eq!(c.verdict, Verdict::Unhealthy);
        assert_eq!(c.failures, 2);
        assert_eq!(c.poll_at(), Instant::NEVER, "failed: no more probes");
        assert!(!Check::started(Some(&c)));
        assert!(Check::started(None), "no startup check");
    }
}
