//! One health check (`healthcheck.readiness` / `.liveness` / `.startup`):
//! its type, the keys that type uses, and its timing.

use std::path::Path;

use super::super::raw::{RawCheck, RawCheckType, RawCommand};
use super::super::spec::{Check, CheckKind, Millis};
use super::super::units::fmt_ms;
use super::addr::{parse_address, parse_url};
use super::{
    Ctx, DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_RETRIES, DEFAULT_CHECK_SUCCESS_THRESHOLD,
    DEFAULT_CHECK_TIMEOUT, I, K, MAX_HTTP_STATUS, MAX_NOTIFY_FD, MIN_HTTP_STATUS, MIN_NOTIFY_FD,
};

/// The argv of an exec check; None (reported) when unusable.
fn exec_command(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<Vec<String>> {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    let command = match &raw.command {
        None => Vec::new(),
        Some(RawCommand::List(argv)) => argv.clone(),
        Some(RawCommand::Shell(s)) if s.trim().is_empty() => Vec::new(),
        Some(RawCommand::Shell(s)) => {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), s.clone()]
        }
    };
    let prog_path = match &raw.command {
        Some(RawCommand::List(_)) => vec![K("healthcheck"), K(which), K("command"), I(0)],
        _ => at("command").to_vec(),
    };
    let Some(prog) = command.first().filter(|c| !c.is_empty()) else {
        let path = if raw.command.is_some() {
            at("command")
        } else {
            at("type")
        };
        cx.err(
            &path,
            format!("healthcheck.{which}: type exec needs a non-empty command"),
        );
        return None;
    };
    if command.iter().any(|c| c.contains('\0')) {
        cx.err(&at("command"), "command contains a NUL byte".to_owned());
        return None;
    }
    // A bare name is looked up in the service's PATH at each probe (the
    // service's build warns when it is not there now).
    let p = Path::new(prog);
    if prog.contains('/') && !p.is_absolute() {
        cx.err(
            &prog_path,
            format!(
                "healthcheck.{which}: exec check command '{prog}' must be an absolute path or a bare name looked up in PATH"
            ),
        );
        return None;
    }
    let usable = if p.is_absolute() {
        cx.target.executable(p)
    } else {
        Ok(())
    };
    if let Err(why) = usable {
        cx.finding(
            &prog_path,
            &format!("healthcheck.{which}: exec check command {prog} is not executable: {why}"),
        );
    }
    Some(command)
}

/// The notify check's fd and watchdog; None (reported) when unusable.
fn notify_kind(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<CheckKind> {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    if which != "readiness" {
        cx.err(
            &at("type"),
            format!("type notify is a readiness protocol; it cannot be a {which} check"),
        );
        return None;
    }
    let mut ok = true;
    if let Some(fd) = raw.fd {
        if fd < MIN_NOTIFY_FD {
            cx.err(
                &at("fd"),
                format!("healthcheck.{which}.fd must be 3 or more (0-2 are stdin/out/err)"),
            );
            ok = false;
        } else if fd > MAX_NOTIFY_FD {
            cx.err(
                &at("fd"),
                format!("healthcheck.{which}.fd is {fd}; it must be at most {MAX_NOTIFY_FD}"),
            );
            ok = false;
        }
    }
    if let Some(w) = raw.watchdog {
        if raw.fd.is_some() {
            cx.err(
                &at("watchdog"),
                format!(
                    "healthcheck.{which}.watchdog needs sd_notify (type notify without fd); a notification fd only carries the readiness line"
                ),
            );
            ok = false;
        } else if w.0 == 0 {
            cx.err(
                &at("watchdog"),
                format!("healthcheck.{which}.watchdog must be at least 1ms (leave it out for no watchdog)"),
            );
            ok = false;
        }
    }
    ok.then_some(CheckKind::Notify {
        fd: raw.fd,
        watchdog: raw.watchdog.map(|d| d.0),
    })
}

/// One check. None (reported) when it cannot run; every problem is
/// reported even then.
pub(super) fn build_check(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<Check> {
    let Some(kind) = raw.kind else {
        cx.err(
            &[K("healthcheck"), K(which)],
            format!("healthcheck.{which}: missing required key 'type' (http, tcp, exec or notify)"),
        );
        return None;
    };
    let mut ok = unused_keys(cx, raw, kind, which);
    let expect_status = expect_status(cx, raw, kind, which, &mut ok);
    let check_kind = match kind {
        RawCheckType::Http => http_kind(cx, raw, which, expect_status),
        RawCheckType::Tcp => tcp_kind(cx, raw, which),
        RawCheckType::Exec => {
            exec_command(cx, raw, which).map(|command| CheckKind::Exec { command })
        }
        RawCheckType::Notify => notify_kind(cx, raw, which),
    };
    let timing = timing(cx, raw, which, &mut ok);
    let kind = check_kind?;
    ok.then_some(Check {
        kind,
        interval: timing.interval,
        timeout: timing.timeout,
        retries: timing.retries,
        start_period: raw.start_period.map_or(0, |d| d.0),
        success_threshold: timing.success_threshold,
    })
}

/// Keys of another check type are errors; whether there were none.
fn unused_keys(cx: &mut Ctx, raw: &RawCheck, kind: RawCheckType, which: &'static str) -> bool {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    let tname = match kind {
        RawCheckType::Http => "http",
        RawCheckType::Tcp => "tcp",
        RawCheckType::Exec => "exec",
        RawCheckType::Notify => "notify",
    };
    let mut ok = true;
    for (key, present, used_by, hint) in [
        ("url", raw.url.is_some(), RawCheckType::Http, ""),
        ("address", raw.address.is_some(), RawCheckType::Tcp, ""),
        ("command", raw.command.is_some(), RawCheckType::Exec, ""),
        (
            "expect_status",
            raw.expect_status.is_some(),
            RawCheckType::Http,
            " (it is for type http)",
        ),
        (
            "fd",
            raw.fd.is_some(),
            RawCheckType::Notify,
            " (it is for type notify)",
        ),
        (
            "watchdog",
            raw.watchdog.is_some(),
            RawCheckType::Notify,
            " (it is for a readiness check of type notify without fd)",
        ),
    ] {
        if present && kind != used_by {
            cx.err(
                &at(key),
                format!("healthcheck.{which}.{key} is not used by type {tname}{hint}"),
            );
            ok = false;
        }
    }
    ok
}

/// `expect_status`: an HTTP status (reported only for an http check; any
/// other type has already been told the key is unused).
fn expect_status(
    cx: &mut Ctx,
    raw: &RawCheck,
    kind: RawCheckType,
    which: &'static str,
    ok: &mut bool,
) -> Option<u16> {
    let s = raw.expect_status?;
    match u16::try_from(s) {
        Ok(s) if (MIN_HTTP_STATUS..=MAX_HTTP_STATUS).contains(&s) => Some(s),
        _ => {
            if kind == RawCheckType::Http {
                cx.err(
                    &[K("healthcheck"), K(which), K("expect_status")],
                    format!(
                        "healthcheck.{which}.expect_status is {s}; an HTTP status is from {MIN_HTTP_STATUS} to {MAX_HTTP_STATUS}"
                    ),
                );
            }
            *ok = false;
            None
        }
    }
}

/// An http check: its url, resolved.
fn http_kind(
    cx: &mut Ctx,
    raw: &RawCheck,
    which: &'static str,
    expect_status: Option<u16>,
) -> Option<CheckKind> {
    let Some(url) = &raw.url else {
        cx.err(
            &[K("healthcheck"), K(which)],
            format!("healthcheck.{which}: type http needs a url"),
        );
        return None;
    };
    match parse_url(url) {
        Ok((addr, host, path)) => Some(CheckKind::Http {
            url: url.clone(),
            addr,
            host,
            path,
            expect_status,
        }),
        Err(msg) => {
            cx.err(&[K("healthcheck"), K(which), K("url")], msg);
            None
        }
    }
}

/// A tcp check: its address, resolved.
fn tcp_kind(cx: &mut Ctx, raw: &RawCheck, which: &'static str) -> Option<CheckKind> {
    let Some(address) = &raw.address else {
        cx.err(
            &[K("healthcheck"), K(which)],
            format!("healthcheck.{which}: type tcp needs an address"),
        );
        return None;
    };
    match parse_address(address) {
        Ok(addr) => Some(CheckKind::Tcp {
            address: address.clone(),
            addr,
        }),
        Err(msg) => {
            cx.err(&[K("healthcheck"), K(which), K("address")], msg);
            None
        }
    }
}

/// How often, how long and how many times a check runs.
struct Timing {
    interval: Millis,
    timeout: Millis,
    retries: u32,
    success_threshold: u32,
}

/// The timing keys with their defaults: each at least 1, and a timeout
/// longer than the interval is a warning (checks would overlap).
fn timing(cx: &mut Ctx, raw: &RawCheck, which: &'static str, ok: &mut bool) -> Timing {
    let at = |k: &'static str| [K("healthcheck"), K(which), K(k)];
    let interval = raw.interval.map_or(DEFAULT_CHECK_INTERVAL, |d| d.0);
    let t = Timing {
        interval,
        // A probe never outlasts its interval unless the user says so.
        timeout: raw
            .timeout
            .map_or(DEFAULT_CHECK_TIMEOUT.min(interval), |d| d.0),
        retries: raw.retries.unwrap_or(DEFAULT_CHECK_RETRIES),
        success_threshold: raw
            .success_threshold
            .unwrap_or(DEFAULT_CHECK_SUCCESS_THRESHOLD),
    };
    for (key, zero, least) in [
        ("interval", t.interval == 0, "1ms"),
        ("timeout", t.timeout == 0, "1ms"),
        ("retries", t.retries == 0, "1"),
        ("success_threshold", t.success_threshold == 0, "1"),
    ] {
        if zero {
            cx.err(
                &at(key),
                format!("healthcheck.{which}.{key} must be at least {least}"),
            );
            *ok = false;
        }
    }
    if which == "startup" && t.success_threshold != 1 {
        cx.err(
            &at("success_threshold"),
            "healthcheck.startup.success_threshold must be 1: startup passes on its first success (as Kubernetes' startupProbe)".to_owned(),
        );
        *ok = false;
    }
    if t.interval > 0 && t.timeout > t.interval {
        cx.warn(
            &at("timeout"),
            format!(
                "healthcheck.{which}.timeout ({}) is larger than its interval ({}); checks will overlap the next one",
                fmt_ms(t.timeout),
                fmt_ms(t.interval)
            ),
        );
    }
    t
}
