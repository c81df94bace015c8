//! Wire codec for the control socket, shared by the daemon and the client.
//!
//! One frame: `version: u8 | tag: u8 | len: u16 LE | payload[len]`.
//! Payload fields are little-endian integers and length-prefixed strings
//! (`u16 LE len | bytes`). Decoding borrows from the input buffer, checks
//! every length against what is there, and never panics or allocates;
//! encoding writes into a caller's buffer and fails with `Full` if it does
//! not fit. Tags are never reused; see docs/PROTOCOL.md.

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Frame header size.
pub const HEADER: usize = 4;
/// Largest payload a peer may send. Requests are much smaller.
pub const MAX_PAYLOAD: usize = 4096;
/// Largest request payload the daemon accepts.
pub const MAX_REQUEST: usize = 1024;
/// Most service names in one start/stop/restart request.
pub const MAX_NAMES: usize = 16;

/// Frame tags: the one table both the decoders and the encoders use.
/// Requests are `0x01..=0x3f`, replies `0x40..=0x7f`; a tag is never
/// reused (docs/PROTOCOL.md).
pub mod tag {
    pub const STATUS: u8 = 0x01;
    pub const START: u8 = 0x02;
    pub const STOP: u8 = 0x03;
    pub const RESTART: u8 = 0x04;
    pub const SIGNAL: u8 = 0x05;
    pub const LOGS: u8 = 0x06;
    pub const EVENTS: u8 = 0x07;
    pub const RELOAD: u8 = 0x08;
    pub const SHUTDOWN: u8 = 0x09;
    pub const VERSION: u8 = 0x0a;
    pub const POWER: u8 = 0x0b;
    pub const REEXEC: u8 = 0x0c;
    pub const METRICS: u8 = 0x0d;
    /// Debug builds only (`DebugPanic`): a release decoder refuses it.
    pub const DEBUG_PANIC: u8 = 0x3f;

    pub const OK: u8 = 0x40;
    pub const ERROR: u8 = 0x41;
    pub const SERVICE: u8 = 0x42;
    pub const DETAIL: u8 = 0x43;
    pub const LOG_LINE: u8 = 0x44;
    pub const EVENT: u8 = 0x45;
    pub const DROPPED: u8 = 0x46;
    pub const END: u8 = 0x47;
    pub const VERSION_REPLY: u8 = 0x48;
    pub const PLAN_ITEM: u8 = 0x49;
    /// `ServiceMetrics` with two checks (readiness, liveness): what a
    /// daemon before the startup check sends. Decoded, never sent.
    pub const SERVICE_METRICS_2: u8 = 0x4a;
    pub const DAEMON_METRICS: u8 = 0x4b;
    /// `ServiceMetrics` with three checks (readiness, liveness, startup).
    pub const SERVICE_METRICS: u8 = 0x4c;

    /// Every request tag, the debug one included.
    pub const REQUESTS: [u8; 14] = [
        STATUS,
        START,
        STOP,
        RESTART,
        SIGNAL,
        LOGS,
        EVENTS,
        RELOAD,
        SHUTDOWN,
        VERSION,
        POWER,
        REEXEC,
        METRICS,
        DEBUG_PANIC,
    ];
    /// Every reply tag a daemon sends.
    pub const REPLIES: [u8; 12] = [
        OK,
        ERROR,
        SERVICE,
        DETAIL,
        LOG_LINE,
        EVENT,
        DROPPED,
        END,
        VERSION_REPLY,
        PLAN_ITEM,
        SERVICE_METRICS,
        DAEMON_METRICS,
    ];
    /// Reply tags still decoded but no longer sent (never reused).
    pub const RETIRED: [u8; 1] = [SERVICE_METRICS_2];
}

/// Whether this build accepts the debug verbs (`DebugPanic`): debug
/// builds only, which is what the test suite runs. A release daemon
/// decodes tag 0x3f as malformed.
pub const DEBUG_VERBS: bool = cfg!(debug_assertions);

/// Service states on the wire; the names are shared by every output.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum WireState {
    Stopped = 0,
    Waiting = 1,
    Starting = 2,
    Running = 3,
    Stopping = 4,
    Backoff = 5,
    Failed = 6,
    Completed = 7,
}

impl WireState {
    pub fn from_u8(v: u8) -> Option<WireState> {
        Some(match v {
            0 => WireState::Stopped,
            1 => WireState::Waiting,
            2 => WireState::Starting,
            3 => WireState::Running,
            4 => WireState::Stopping,
            5 => WireState::Backoff,
            6 => WireState::Failed,
            7 => WireState::Completed,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            WireState::Stopped => "stopped",
            WireState::Waiting => "waiting",
            WireState::Starting => "starting",
            WireState::Running => "running",
            WireState::Stopping => "stopping",
            WireState::Backoff => "backoff",
            WireState::Failed => "failed",
            WireState::Completed => "completed",
        }
    }
}

impl From<crate::service::StateName> for WireState {
    /// The one mapping from the machine's states to their wire numbers.
    fn from(s: crate::service::StateName) -> WireState {
        use crate::service::StateName as S;
        match s {
            S::Stopped => WireState::Stopped,
            S::Waiting => WireState::Waiting,
            S::Starting => WireState::Starting,
            S::Running => WireState::Running,
            S::Stopping => WireState::Stopping,
            S::Backoff => WireState::Backoff,
            S::Failed => WireState::Failed,
            S::Completed => WireState::Completed,
        }
    }
}

/// Error codes in `Reply::Error`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// Malformed or unknown request.
    BadRequest = 1,
    UnknownService = 2,
    /// The caller may not use this verb.
    Denied = 3,
    /// Too many clients.
    Busy = 4,
    /// Unsupported protocol version.
    Version = 5,
    /// Frame larger than allowed.
    TooLarge = 6,
    /// The command was understood but failed (e.g. invalid config on reload).
    Failed = 7,
    /// Reload needs more service slots than were preallocated.
    NoSlots = 8,
}

impl ErrorCode {
    pub fn from_u8(v: u8) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::UnknownService,
            3 => ErrorCode::Denied,
            4 => ErrorCode::Busy,
            5 => ErrorCode::Version,
            6 => ErrorCode::TooLarge,
            7 => ErrorCode::Failed,
            8 => ErrorCode::NoSlots,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad request",
            ErrorCode::UnknownService => "unknown service",
            ErrorCode::Denied => "permission denied",
            ErrorCode::Busy => "busy",
            ErrorCode::Version => "protocol version mismatch",
            ErrorCode::TooLarge => "frame too large",
            ErrorCode::Failed => "failed",
            ErrorCode::NoSlots => "no free service slots",
        }
    }
}

/// How a process last ended: kind 0 = none, 1 = exit code, 2 = signal.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct LastExit {
    pub kind: u8,
    pub value: i32,
}

/// One health check's figures in `Reply::ServiceMetrics`: `verdict` 0 =
/// no such check, 1 unknown, 2 healthy, 3 unhealthy, 4 off (not probing:
/// the service is down); `latency_ms` is the last probe's duration.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckFigures {
    pub verdict: u8,
    pub latency_ms: u32,
}

/// One service's figures in `Reply::ServiceMetrics`. `checks` by role:
/// readiness, liveness, startup. `failures` = crashes in a row.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ServiceFigures {
    pub state: WireState,
    pub pid: i32,
    pub uptime_ms: u64,
    pub restarts: u32,
    pub failures: u32,
    pub last_exit: LastExit,
    pub checks: [CheckFigures; 3],
    pub log_evicted: u64,
    pub log_cut: u64,
    /// Lines not given to its logger service (`log.to`): the pipe was
    /// full.
    pub logger_dropped: u64,
}

/// Event kinds in `Reply::Event`.
pub mod event {
    pub const SPAWNED: u8 = 1;
    pub const READY: u8 = 2;
    pub const EXITED: u8 = 3;
    pub const BACKOFF: u8 = 4;
    pub const FAILED: u8 = 5;
    pub const STOPPED: u8 = 6;
    pub const RELOADED: u8 = 7;
    pub const WAITING: u8 = 8;
    pub const STOPPING: u8 = 9;
    pub const COMPLETED: u8 = 10;
    pub const EXEC_FAILED: u8 = 11;
    pub const GAVE_UP: u8 = 12;
    pub const UNHEALTHY: u8 = 13;
    /// A check's verdict changed (detail: role, verdict, last error).
    pub const HEALTH: u8 = 14;
    /// Crashed `degraded_after` times in a row (detail: the count).
    pub const DEGRADED: u8 = 15;

    pub fn name(k: u8) -> &'static str {
        match k {
            SPAWNED => "spawned",
            READY => "ready",
            EXITED => "exited",
            BACKOFF => "backoff",
            FAILED => "failed",
            STOPPED => "stopped",
            RELOADED => "reloaded",
            WAITING => "waiting",
            STOPPING => "stopping",
            COMPLETED => "completed",
            EXEC_FAILED => "exec-failed",
            GAVE_UP => "gave-up",
            UNHEALTHY => "unhealthy",
            HEALTH => "health",
            DEGRADED => "degraded",
            _ => "unknown",
        }
    }
}

/// Plan actions in `Reply::PlanItem`.
pub mod plan {
    pub const ADD: u8 = 1;
    pub const REMOVE: u8 = 2;
    pub const RESTART: u8 = 3;
    pub const UPDATE: u8 = 4;
    pub const UNCHANGED: u8 = 5;

    pub fn name(k: u8) -> &'static str {
        match k {
            ADD => "add",
            REMOVE => "remove",
            RESTART => "restart",
            UPDATE => "update",
            UNCHANGED => "unchanged",
            _ => "unknown",
        }
    }
}

/// A list of service names, borrowed from the frame.
pub type Names<'a> = heapless::Vec<&'a str, MAX_NAMES>;

/// Client -> daemon. Tags 0x01..=0x3f.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `name` empty = all services. `verbose` 0..=3.
    Status {
        name: &'a str,
        verbose: u8,
    },
    Start {
        names: Names<'a>,
    },
    Stop {
        names: Names<'a>,
    },
    Restart {
        names: Names<'a>,
    },
    Signal {
        name: &'a str,
        signal: i32,
    },
    /// Last `lines` lines, then stream new ones if `follow`.
    Logs {
        name: &'a str,
        lines: u16,
        follow: bool,
    },
    Events,
    Reload {
        dry_run: bool,
    },
    Shutdown,
    Version,
    /// PID 1: stop everything, then 0 poweroff, 1 reboot, 2 halt.
    Power {
        action: u8,
    },
    /// Re-exec the daemon binary, keeping services.
    Reexec,
    /// The figures of `metrics`: `DaemonMetrics`, one `ServiceMetrics`
    /// a service, `End`.
    Metrics,
    /// Debug builds only: panic (to test the emergency path).
    DebugPanic,
}

/// Daemon -> client. Tags 0x40..=0x7f.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Ok {
        message: &'a str,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
    },
    /// One service (status). `pid` 0 = none; `reason` is human text.
    Service {
        name: &'a str,
        state: WireState,
        pid: i32,
        uptime_ms: u64,
        restarts: u32,
        health: &'a str,
        last_exit: LastExit,
        reason: &'a str,
    },
    /// A `key: value` detail line of `status <svc>`.
    Detail {
        key: &'a str,
        value: &'a str,
    },
    /// One output line. `stream` 0 = stdout, 1 = stderr.
    LogLine {
        service: &'a str,
        ts_ms: u64,
        stream: u8,
        cut: bool,
        text: &'a [u8],
    },
    Event {
        ts_ms: u64,
        service: &'a str,
        kind: u8,
        state: WireState,
        pid: i32,
        detail: &'a str,
    },
    /// Lines this reader missed because it was too slow.
    Dropped {
        count: u32,
    },
    /// The end of a multi-frame reply.
    End,
    Version {
        version: &'a str,
        commit: &'a str,
        target: &'a str,
        profile: &'a str,
    },
    PlanItem {
        action: u8,
        name: &'a str,
        detail: &'a str,
    },
    /// One service's figures (`metrics`).
    ServiceMetrics {
        name: &'a str,
        figures: ServiceFigures,
    },
    /// The daemon's own figures (`metrics`).
    DaemonMetrics {
        rss_bytes: u64,
        fds: u32,
        loop_turns: u64,
        allocations: u64,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not enough bytes yet: read more.
    Incomplete,
    /// The version byte is not [`VERSION`].
    Version(u8),
    /// The declared payload is larger than allowed.
    TooLarge(usize),
    /// Unknown tag, bad field, or bytes left over.
    Malformed,
}

/// The output buffer is too small.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Full;

/// The shared reader, reporting [`DecodeError::Malformed`].
type Rd<'a> = crate::bytes::Reader<'a, DecodeError>;

/// The protocol's own shapes on top of the shared reader.
impl<'a> Rd<'a> {
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed),
        }
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes16()?).map_err(|_| DecodeError::Malformed)
    }
    fn state(&mut self) -> Result<WireState, DecodeError> {
        WireState::from_u8(self.u8()?).ok_or(DecodeError::Malformed)
    }
    fn check(&mut self) -> Result<CheckFigures, DecodeError> {
        Ok(CheckFigures {
            verdict: self.u8()?,
            latency_ms: self.u32()?,
        })
    }
    fn names(&mut self) -> Result<Names<'a>, DecodeError> {
        let n = self.u8()?;
        let mut v = Names::new();
        for _ in 0..n {
            v.push(self.str()?).map_err(|_| DecodeError::Malformed)?;
        }
        Ok(v)
    }
}

struct Wr<'a> {
    b: &'a mut [u8],
    pos: usize,
}

impl Wr<'_> {
    fn put(&mut self, s: &[u8]) -> Result<(), Full> {
        let end = self.pos.checked_add(s.len()).ok_or(Full)?;
        self.b
            .get_mut(self.pos..end)
            .ok_or(Full)?
            .copy_from_slice(s);
        self.pos = end;
        Ok(())
    }
    fn u8(&mut self, v: u8) -> Result<(), Full> {
        self.put(&[v])
    }
    fn u16(&mut self, v: u16) -> Result<(), Full> {
        self.put(&v.to_le_bytes())
    }
    fn u32(&mut self, v: u32) -> Result<(), Full> {
        self.put(&v.to_le_bytes())
    }
    fn i32(&mut self, v: i32) -> Result<(), Full> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> Result<(), Full> {
        self.put(&v.to_le_bytes())
    }
    /// A length-prefixed byte string, cut to what a u16 can say.
    fn bytes(&mut self, s: &[u8]) -> Result<(), Full> {
        let s = s.get(..s.len().min(usize::from(u16::MAX))).unwrap_or(&[]);
        self.u16(s.len() as u16)?;
        self.put(s)
    }
    fn str(&mut self, s: &str) -> Result<(), Full> {
        self.bytes(s.as_bytes())
    }
    fn names(&mut self, n: &Names<'_>) -> Result<(), Full> {
        self.u8(n.len() as u8)?;
        for s in n {
            self.str(s)?;
        }
        Ok(())
    }
}

/// Payload bounds: `(payload_start, payload_end)` of the first frame in
/// `buf`, checking the header against `max_payload`.
pub fn frame_bounds(buf: &[u8], max_payload: usize) -> Result<(u8, usize), DecodeError> {
    let (Some(&ver), Some(&tag), Some(&l0), Some(&l1)) =
        (buf.first(), buf.get(1), buf.get(2), buf.get(3))
    else {
        return Err(DecodeError::Incomplete);
    };
    if ver != VERSION {
        return Err(DecodeError::Version(ver));
    }
    let len = usize::from(u16::from_le_bytes([l0, l1]));
    if len > max_payload {
        return Err(DecodeError::TooLarge(len));
    }
    if buf.len() < HEADER + len {
        return Err(DecodeError::Incomplete);
    }
    Ok((tag, HEADER + len))
}

/// Decodes the first request in `buf`. Returns it and the bytes consumed.
pub fn decode_request(buf: &[u8]) -> Result<(Request<'_>, usize), DecodeError> {
    decode_request_in(buf, DEBUG_VERBS)
}

/// [`decode_request`], with the debug verbs accepted or not.
fn decode_request_in(buf: &[u8], debug_verbs: bool) -> Result<(Request<'_>, usize), DecodeError> {
    let (tag, end) = frame_bounds(buf, MAX_REQUEST)?;
    let payload = buf.get(HEADER..end).ok_or(DecodeError::Malformed)?;
    let mut r = Rd::new(payload, DecodeError::Malformed);
    let req = match tag {
        tag::STATUS => Request::Status {
            name: r.str()?,
            verbose: r.u8()?,
        },
        tag::START => Request::Start { names: r.names()? },
        tag::STOP => Request::Stop { names: r.names()? },
        tag::RESTART => Request::Restart { names: r.names()? },
        tag::SIGNAL => Request::Signal {
            name: r.str()?,
            signal: r.i32()?,
        },
        tag::LOGS => Request::Logs {
            name: r.str()?,
            lines: r.u16()?,
            follow: r.bool()?,
        },
        tag::EVENTS => Request::Events,
        tag::RELOAD => Request::Reload { dry_run: r.bool()? },
        tag::SHUTDOWN => Request::Shutdown,
        tag::VERSION => Request::Version,
        tag::POWER => Request::Power { action: r.u8()? },
        tag::REEXEC => Request::Reexec,
        tag::METRICS => Request::Metrics,
        tag::DEBUG_PANIC if debug_verbs => Request::DebugPanic,
        _ => return Err(DecodeError::Malformed),
    };
    r.done()?;
    Ok((req, end))
}

/// A `ServiceMetrics` payload with `checks` check figures: 3 (the frame
/// of today), or 2 in the retired frame, which has no startup check (read
/// as "no such check") and no `logger_dropped` (0).
fn service_metrics<'a>(r: &mut Rd<'a>, checks: usize) -> Result<Reply<'a>, DecodeError> {
    let (name, state, pid, uptime_ms) = (r.str()?, r.state()?, r.i32()?, r.u64()?);
    let (restarts, failures) = (r.u32()?, r.u32()?);
    let last_exit = LastExit {
        kind: r.u8()?,
        value: r.i32()?,
    };
    let mut figures = [CheckFigures::default(); 3];
    for f in figures.iter_mut().take(checks) {
        *f = r.check()?;
    }
    Ok(Reply::ServiceMetrics {
        name,
        figures: ServiceFigures {
            state,
            pid,
            uptime_ms,
            restarts,
            failures,
            last_exit,
            checks: figures,
            log_evicted: r.u64()?,
            log_cut: r.u64()?,
            logger_dropped: if checks == 3 { r.u64()? } else { 0 },
        },
    })
}

/// Decodes the first reply in `buf`. Returns it and the bytes consumed.
pub fn decode_reply(buf: &[u8]) -> Result<(Reply<'_>, usize), DecodeError> {
    let (tag, end) = frame_bounds(buf, MAX_PAYLOAD)?;
    let payload = buf.get(HEADER..end).ok_or(DecodeError::Malformed)?;
    let mut r = Rd::new(payload, DecodeError::Malformed);
    let rep = match tag {
        tag::OK => Reply::Ok { message: r.str()? },
        tag::ERROR => Reply::Error {
            code: ErrorCode::from_u8(r.u8()?).ok_or(DecodeError::Malformed)?,
            message: r.str()?,
        },
        tag::SERVICE => Reply::Service {
            name: r.str()?,
            state: r.state()?,
            pid: r.i32()?,
            uptime_ms: r.u64()?,
            restarts: r.u32()?,
            health: r.str()?,
            last_exit: LastExit {
                kind: r.u8()?,
                value: r.i32()?,
            },
            reason: r.str()?,
        },
        tag::DETAIL => Reply::Detail {
            key: r.str()?,
            value: r.str()?,
        },
        tag::LOG_LINE => Reply::LogLine {
            service: r.str()?,
            ts_ms: r.u64()?,
            stream: r.u8()?,
            cut: r.bool()?,
            text: r.bytes16()?,
        },
        tag::EVENT => Reply::Event {
            ts_ms: r.u64()?,
            service: r.str()?,
            kind: r.u8()?,
            state: r.state()?,
            pid: r.i32()?,
            detail: r.str()?,
        },
        tag::DROPPED => Reply::Dropped { count: r.u32()? },
        tag::END => Reply::End,
        tag::VERSION_REPLY => Reply::Version {
            version: r.str()?,
            commit: r.str()?,
            target: r.str()?,
            profile: r.str()?,
        },
        tag::PLAN_ITEM => Reply::PlanItem {
            action: r.u8()?,
            name: r.str()?,
            detail: r.str()?,
        },
        tag::SERVICE_METRICS_2 => service_metrics(&mut r, 2)?,
        tag::SERVICE_METRICS => service_metrics(&mut r, 3)?,
        tag::DAEMON_METRICS => Reply::DaemonMetrics {
            rss_bytes: r.u64()?,
            fds: r.u32()?,
            loop_turns: r.u64()?,
            allocations: r.u64()?,
        },
        _ => return Err(DecodeError::Malformed),
    };
    r.done()?;
    Ok((rep, end))
}

fn finish(w: &mut Wr<'_>, tag: u8, max: usize) -> Result<usize, Full> {
    let len = w.pos.checked_sub(HEADER).ok_or(Full)?;
    if len > max {
        return Err(Full);
    }
    let hdr = w.b.get_mut(..HEADER).ok_or(Full)?;
    hdr.copy_from_slice(&[VERSION, tag, (len & 0xff) as u8, (len >> 8) as u8]);
    Ok(w.pos)
}

/// Encodes `req` into `buf`; returns the frame length.
pub fn encode_request(req: &Request<'_>, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = Wr {
        b: buf,
        pos: HEADER,
    };
    if w.b.len() < HEADER {
        return Err(Full);
    }
    let tag = match req {
        Request::Status { name, verbose } => {
            w.str(name)?;
            w.u8(*verbose)?;
            tag::STATUS
        }
        Request::Start { names } => {
            w.names(names)?;
            tag::START
        }
        Request::Stop { names } => {
            w.names(names)?;
            tag::STOP
        }
        Request::Restart { names } => {
            w.names(names)?;
            tag::RESTART
        }
        Request::Signal { name, signal } => {
            w.str(name)?;
            w.i32(*signal)?;
            tag::SIGNAL
        }
        Request::Logs {
            name,
            lines,
            follow,
        } => {
            w.str(name)?;
            w.u16(*lines)?;
            w.u8(u8::from(*follow))?;
            tag::LOGS
        }
        Request::Events => tag::EVENTS,
        Request::Reload { dry_run } => {
            w.u8(u8::from(*dry_run))?;
            tag::RELOAD
        }
        Request::Shutdown => tag::SHUTDOWN,
        Request::Version => tag::VERSION,
        Request::Power { action } => {
            w.u8(*action)?;
            tag::POWER
        }
        Request::Reexec => tag::REEXEC,
        Request::Metrics => tag::METRICS,
        Request::DebugPanic => tag::DEBUG_PANIC,
    };
    finish(&mut w, tag, MAX_REQUEST)
}

/// Encodes `rep` into `buf`; returns the frame length.
pub fn encode_reply(rep: &Reply<'_>, buf: &mut [u8]) -> Result<usize, Full> {
    let mut w = Wr {
        b: buf,
        pos: HEADER,
    };
    if w.b.len() < HEADER {
        return Err(Full);
    }
    let tag = match rep {
        Reply::Ok { message } => {
            w.str(message)?;
            tag::OK
        }
        Reply::Error { code, message } => {
            w.u8(*code as u8)?;
            w.str(message)?;
            tag::ERROR
        }
        Reply::Service {
            name,
            state,
            pid,
            uptime_ms,
            restarts,
            health,
            last_exit,
            reason,
        } => {
            w.str(name)?;
            w.u8(*state as u8)?;
            w.i32(*pid)?;
            w.u64(*uptime_ms)?;
            w.u32(*restarts)?;
            w.str(health)?;
            w.u8(last_exit.kind)?;
            w.i32(last_exit.value)?;
            w.str(reason)?;
            tag::SERVICE
        }
        Reply::Detail { key, value } => {
            w.str(key)?;
            w.str(value)?;
            tag::DETAIL
        }
        Reply::LogLine {
            service,
            ts_ms,
            stream,
            cut,
            text,
        } => {
            w.str(service)?;
            w.u64(*ts_ms)?;
            w.u8(*stream)?;
            w.u8(u8::from(*cut))?;
            w.bytes(text)?;
            tag::LOG_LINE
        }
        Reply::Event {
            ts_ms,
            service,
            kind,
            state,
            pid,
            detail,
        } => {
            w.u64(*ts_ms)?;
            w.str(service)?;
            w.u8(*kind)?;
            w.u8(*state as u8)?;
            w.i32(*pid)?;
            w.str(detail)?;
            tag::EVENT
        }
        Reply::Dropped { count } => {
            w.u32(*count)?;
            tag::DROPPED
        }
        Reply::End => tag::END,
        Reply::Version {
            version,
            commit,
            target,
            profile,
        } => {
            w.str(version)?;
            w.str(commit)?;
            w.str(target)?;
            w.str(profile)?;
            tag::VERSION_REPLY
        }
        Reply::PlanItem {
            action,
            name,
            detail,
        } => {
            w.u8(*action)?;
            w.str(name)?;
            w.str(detail)?;
            tag::PLAN_ITEM
        }
        Reply::ServiceMetrics { name, figures: f } => {
            w.str(name)?;
            w.u8(f.state as u8)?;
            w.i32(f.pid)?;
            w.u64(f.uptime_ms)?;
            w.u32(f.restarts)?;
            w.u32(f.failures)?;
            w.u8(f.last_exit.kind)?;
            w.i32(f.last_exit.value)?;
            for c in &f.checks {
                w.u8(c.verdict)?;
                w.u32(c.latency_ms)?;
            }
            w.u64(f.log_evicted)?;
            w.u64(f.log_cut)?;
            w.u64(f.logger_dropped)?;
            tag::SERVICE_METRICS
        }
        Reply::DaemonMetrics {
            rss_bytes,
            fds,
            loop_turns,
            allocations,
        } => {
            w.u64(*rss_bytes)?;
            w.u32(*fds)?;
            w.u64(*loop_turns)?;
            w.u64(*allocations)?;
            tag::DAEMON_METRICS
        }
    };
    finish(&mut w, tag, MAX_PAYLOAD)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn names(v: &[&'static str]) -> Names<'static> {
        let mut n = Names::new();
        for s in v {
            n.push(s).unwrap();
        }
        n
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Status {
                name: "",
                verbose: 2,
            },
            Request::Status {
                name: "api",
                verbose: 0,
            },
            Request::Start {
                names: names(&["a", "b"]),
            },
            Request::Stop {
                names: names(&["a"]),
            },
            Request::Restart { names: names(&[]) },
            Request::Signal {
                name: "x",
                signal: 10,
            },
            Request::Logs {
                name: "x",
                lines: 50,
                follow: true,
            },
            Request::Events,
            Request::Reload { dry_run: true },
            Request::Shutdown,
            Request::Version,
        ];
        let mut buf = [0u8; 256];
        for r in reqs {
            let n = encode_request(&r, &mut buf).unwrap();
            let (d, used) = decode_request(&buf[..n]).unwrap();
            assert_eq!(d, r);
            assert_eq!(used, n);
            // Every strict prefix is incomplete, never an error or a panic.
            for k in 0..n {
                assert_eq!(
                    decode_request(&buf[..k]),
                    Err(DecodeError::Incomplete),
                    "{r:?} at {k}"
                );
            }
        }
    }

    #[test]
    fn replies_round_trip() {
        let reps = [
            Reply::Ok { message: "done" },
            Reply::Error {
                code: ErrorCode::Denied,
                message: "no",
            },
            Reply::Service {
                name: "api",
                state: WireState::Backoff,
                pid: 0,
                uptime_ms: 5,
                restarts: 3,
                health: "-",
                last_exit: LastExit { kind: 1, value: 3 },
                reason: "next try in 4s",
            },
            Reply::Detail {
                key: "binary",
                value: "/bin/sh",
            },
            Reply::LogLine {
                service: "a",
                ts_ms: 9,
                stream: 1,
                cut: true,
                text: b"\xffbytes",
            },
            Reply::Event {
                ts_ms: 1,
                service: "a",
                kind: event::SPAWNED,
                state: WireState::Running,
                pid: 7,
                detail: "",
            },
            Reply::Dropped { count: 12 },
            Reply::End,
            Reply::Version {
                version: "0.1.0",
                commit: "abc",
                target: "x86_64",
                profile: "release",
            },
            Reply::PlanItem {
                action: plan::ADD,
                name: "n",
                detail: "new",
            },
        ];
        let mut buf = [0u8; 256];
        for r in reps {
            let n = encode_reply(&r, &mut buf).unwrap();
            let (d, used) = decode_reply(&buf[..n]).unwrap();
            assert_eq!(d, r);
            assert_eq!(used, n);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(decode_request(&[2, 1, 0, 0]), Err(DecodeError::Version(2)));
        assert_eq!(
            decode_request(&[1, 0x09, 0xff, 0xff]),
            Err(DecodeError::TooLarge(0xffff))
        );
        assert_eq!(
            decode_request(&[1, 0x3e, 0, 0]),
            Err(DecodeError::Malformed)
        );
        // Trailing bytes inside the frame.
        assert_eq!(
            decode_request(&[1, 0x09, 1, 0, 0]),
            Err(DecodeError::Malformed)
        );
        // String longer than the frame.
        assert_eq!(
            decode_request(&[1, 0x01, 3, 0, 9, 0, 0]),
            Err(DecodeError::Malformed)
        );
        // Invalid UTF-8 name.
        assert_eq!(
            decode_request(&[1, 0x01, 4, 0, 1, 0, 0xff, 0]),
            Err(DecodeError::Malformed)
        );
        // Too many names.
        let mut f = std::vec![1u8, 0x02, 0, 0, 17];
        for _ in 0..17 {
            f.extend_from_slice(&[1, 0, b'a']);
        }
        let len = (f.len() - 4) as u16;
        f[2..4].copy_from_slice(&len.to_le_bytes());
        assert_eq!(decode_request(&f), Err(DecodeError::Malformed));
    }

    #[test]
    fn encoding_into_a_small_buffer_fails_cleanly() {
        let mut buf = [0u8; 8];
        assert_eq!(
            encode_reply(
                &Reply::Ok {
                    message: "much too long"
                },
                &mut buf
            ),
            Err(Full)
        );
        assert_eq!(encode_reply(&Reply::End, &mut buf[..3]), Err(Full));
        assert_eq!(encode_reply(&Reply::End, &mut buf), Ok(4));
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut buf = [0u8; 64];
        let a = encode_request(&Request::Version, &mut buf).unwrap();
        let b = encode_request(&Request::Events, &mut buf[a..]).unwrap();
        let (r1, n1) = decode_request(&buf[..a + b]).unwrap();
        assert_eq!((r1, n1), (Request::Version, a));
        let (r2, _) = decode_request(&buf[n1..a + b]).unwrap();
        assert_eq!(r2, Request::Events);
    }

    /// One of every request and reply, by tag.
    fn one_of_each() -> (Vec<Request<'static>>, Vec<Reply<'static>>) {
        let n = names(&["a"]);
        let reqs = vec![
            Request::Status {
                name: "",
                verbose: 0,
            },
            Request::Start { names: n.clone() },
            Request::Stop { names: n.clone() },
            Request::Restart { names: n },
            Request::Signal {
                name: "a",
                signal: 1,
            },
            Request::Logs {
                name: "a",
                lines: 1,
                follow: false,
            },
            Request::Events,
            Request::Reload { dry_run: false },
            Request::Shutdown,
            Request::Version,
            Request::Power { action: 0 },
            Request::Reexec,
            Request::Metrics,
            Request::DebugPanic,
        ];
        let reps = vec![
            Reply::Ok { message: "" },
            Reply::Error {
                code: ErrorCode::Failed,
                message: "",
            },
            Reply::Service {
                name: "a",
                state: WireState::Running,
                pid: 1,
                uptime_ms: 0,
                restarts: 0,
                health: "-",
                last_exit: LastExit::default(),
                reason: "",
            },
            Reply::Detail {
                key: "k",
                value: "v",
            },
            Reply::LogLine {
                service: "a",
                ts_ms: 0,
                stream: 0,
                cut: false,
                text: b"",
            },
            Reply::Event {
                ts_ms: 0,
                service: "a",
                kind: event::READY,
                state: WireState::Running,
                pid: 0,
                detail: "",
            },
            Reply::Dropped { count: 1 },
            Reply::End,
            Reply::Version {
                version: "",
                commit: "",
                target: "",
                profile: "",
            },
            Reply::PlanItem {
                action: plan::ADD,
                name: "a",
                detail: "",
            },
            Reply::ServiceMetrics {
                name: "a",
                figures: ServiceFigures {
                    state: WireState::Running,
                    pid: 1,
                    uptime_ms: 2,
                    restarts: 3,
                    failures: 4,
                    last_exit: LastExit { kind: 1, value: 5 },
                    checks: [
                        CheckFigures {
                            verdict: 2,
                            latency_ms: 6,
                        },
                        CheckFigures::default(),
                        CheckFigures {
                            verdict: 3,
                            latency_ms: 9,
                        },
                    ],
                    log_evicted: 7,
                    log_cut: 8,
                    logger_dropped: 9,
                },
            },
            Reply::DaemonMetrics {
                rss_bytes: 1,
                fds: 2,
                loop_turns: 3,
                allocations: 0,
            },
        ];
        (reqs, reps)
    }

    #[test]
    fn tags_are_unique_and_in_their_ranges() {
        let replies: Vec<u8> = tag::REPLIES.iter().chain(&tag::RETIRED).copied().collect();
        let mut all: Vec<u8> = tag::REQUESTS.iter().chain(&replies).copied().collect();
        assert!(tag::REQUESTS.iter().all(|t| (0x01..=0x3f).contains(t)));
        assert!(replies.iter().all(|t| (0x40..=0x7f).contains(t)));
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            tag::REQUESTS.len() + replies.len(),
            "a tag is reused"
        );
    }

    /// The table is what the encoders write and the decoders read: each
    /// message encodes to its own tag of the table and decodes back.
    #[test]
    fn every_message_uses_its_tag_of_the_table() {
        let (reqs, reps) = one_of_each();
        let mut buf = [0u8; 256];
        let mut seen = Vec::new();
        for r in &reqs {
            let n = encode_request(r, &mut buf).unwrap();
            seen.push(buf[1]);
            assert_eq!(decode_request_in(&buf[..n], true), Ok((r.clone(), n)));
        }
        assert_eq!(seen, tag::REQUESTS);
        seen.clear();
        for r in &reps {
            let n = encode_reply(r, &mut buf).unwrap();
            seen.push(buf[1]);
            assert_eq!(decode_reply(&buf[..n]), Ok((r.clone(), n)));
        }
        assert_eq!(seen, tag::REPLIES);
    }

    /// A daemon from before the startup check sends two check figures
    /// under the old tag: the client reads them, startup as "no check".
    #[test]
    fn two_check_service_metrics_still_decode() {
        let mut rep = one_of_each()
            .1
            .into_iter()
            .find(|r| matches!(r, Reply::ServiceMetrics { .. }))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = encode_reply(&rep, &mut buf).unwrap();
        // The third check's 5 bytes sit before the three trailing u64s,
        // and the old frame ends before the last (logger_dropped).
        let mut old: Vec<u8> = buf[..n - 29]
            .iter()
            .chain(&buf[n - 24..n - 8])
            .copied()
            .collect();
        old[1] = tag::SERVICE_METRICS_2;
        let len = u16::try_from(old.len() - HEADER).unwrap();
        old[2..4].copy_from_slice(&len.to_le_bytes());
        if let Reply::ServiceMetrics { figures, .. } = &mut rep {
            figures.checks[2] = CheckFigures::default();
            figures.logger_dropped = 0;
        }
        assert_eq!(decode_reply(&old), Ok((rep, old.len())));
    }

    /// The fuzz input that found the target's byte-for-byte invariant
    /// wrong for retired tags (CI, 2026-12-01): an old two-check frame is
    /// re-sent under the current tag, and that frame reads the same.
    #[test]
    fn a_retired_tag_re_encodes_under_its_current_tag() {
        let mut input = vec![1u8, 0x4a, 61, 0, 7, 0, 0, 0, 0, 0, 4];
        input.extend([0; 11]);
        input.extend([61, 0, 1, 1, 0, 0, 1, 1, 3, 0, 0, 0, 255, 255, 255, 0]);
        input.extend([255; 78]);
        input.push(0);
        let (rep, n) = decode_reply(&input).unwrap();
        assert_eq!(n, 65);
        let mut buf = [0u8; 256];
        let m = encode_reply(&rep, &mut buf).unwrap();
        assert_eq!(buf[1], tag::SERVICE_METRICS);
        assert_eq!(decode_reply(&buf[..m]), Ok((rep, m)));
    }

    /// A release daemon refuses `DebugPanic` as an unknown request.
    #[test]
    fn debug_panic_is_refused_without_the_debug_verbs() {
        let frame = [VERSION, tag::DEBUG_PANIC, 0, 0];
        assert_eq!(
            decode_request_in(&frame, false),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_request_in(&frame, true),
            Ok((Request::DebugPanic, 4))
        );
        assert_eq!(DEBUG_VERBS, cfg!(debug_assertions));
        assert_eq!(decode_request(&frame).is_ok(), DEBUG_VERBS);
    }

    /// Every machine state goes out as the number docs/PROTOCOL.md gives
    /// its name ("Service states"), and is shown by that name.
    #[test]
    fn every_state_has_its_documented_wire_number() {
        use crate::service::StateName as S;
        let doc = include_str!("../../docs/PROTOCOL.md");
        let table = doc.split("### Service states").nth(1).unwrap();
        let table = table.split("\n#").next().unwrap();
        let mut rows = Vec::new();
        for line in table.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if let (Some(Ok(n)), Some(name)) = (cells.get(1).map(|c| c.parse::<u8>()), cells.get(2))
            {
                rows.push((n, name.trim_matches('`')));
            }
        }
        let states = [
            S::Stopped,
            S::Waiting,
            S::Starting,
            S::Running,
            S::Stopping,
            S::Backoff,
            S::Completed,
            S::Failed,
        ];
        assert_eq!(rows.len(), states.len(), "{rows:?}");
        for s in states {
            let w = WireState::from(s);
            let &(n, _) = rows.iter().find(|r| r.1 == s.as_str()).unwrap();
            assert_eq!(w as u8, n, "{s}");
            assert_eq!(WireState::from_u8(n), Some(w));
            assert_eq!(w.as_str(), s.as_str());
        }
    }
}
