//! The poll token space: every source the loop registers with mio, as one
//! enum, and the one mapping between it and `mio::Token`.
//!
//! Each kind of source owns a range of `SPAN` tokens, indexed by its slot
//! (or client) number; the loop decodes a token once and matches on the
//! variant. The const asserts below check that every range holds the
//! largest table the config loader accepts (`MAX_SERVICES` slots,
//! `MAX_CLIENTS` clients), so no two sources can share a token.

use coffey::limits::{MAX_CLIENTS, MAX_SERVICES};

/// Tokens per range.
const SPAN: usize = 1 << 20;
/// Range starts. The values are those the daemon always used; the order
/// is free (nothing outside this file sees a raw token).
const SIGNAL: usize = 0;
/// Output pipes: `PIPES + 2 * slot + stream` (0 stdout, 1 stderr).
const PIPES: usize = 1;
const LISTEN: usize = SPAN;
const CLIENTS: usize = SPAN + 1;
/// Health probes: `PROBES + 2 * slot + role`.
const PROBES: usize = 2 * SPAN;
const NOTIFY_PIPES: usize = 3 * SPAN;
const NOTIFY_SOCKS: usize = 4 * SPAN;
const RELOAD: usize = 5 * SPAN;
const CGROUPS: usize = 6 * SPAN;

/// One registered source.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// The signalfd.
    Signal,
    /// Slot `slot`'s stdout (`stream` 0) or stderr (1) pipe.
    Pipe { slot: usize, stream: usize },
    /// The control socket.
    Listen,
    /// Control connection `k`.
    Client(usize),
    /// Slot `slot`'s probe `role` (0 readiness, 1 liveness or startup:
    /// see `Role::probe`).
    Probe { slot: usize, role: usize },
    /// Slot's s6/dinit readiness pipe.
    NotifyPipe(usize),
    /// Slot's sd_notify socket.
    NotifySock(usize),
    /// The reload compiler's output pipe.
    Reload,
    /// Slot's `cgroup.events`.
    Cgroup(usize),
}

// Every range holds its largest table; pairs (pipes, probes) hold two
// tokens per slot. The reload and cgroup ranges end below usize's top.
const SERVICES: usize = MAX_SERVICES as usize;
const _: () = assert!(PIPES + 2 * SERVICES <= LISTEN);
const _: () = assert!(CLIENTS + MAX_CLIENTS as usize <= PROBES);
const _: () = assert!(PROBES + 2 * SERVICES <= NOTIFY_PIPES);
const _: () = assert!(NOTIFY_PIPES + SERVICES <= NOTIFY_SOCKS);
const _: () = assert!(NOTIFY_SOCKS + SERVICES <= RELOAD);
const _: () = assert!(RELOAD < CGROUPS);
const _: () = assert!(CGROUPS + SERVICES <= 7 * SPAN);

impl Token {
    /// The mio token. Indices beyond a range's capacity cannot occur (the
    /// asserts above bound every table), so this does not check them.
    pub fn encode(self) -> mio::Token {
        mio::Token(match self {
            Token::Signal => SIGNAL,
            Token::Pipe { slot, stream } => PIPES + 2 * slot + (stream & 1),
            Token::Listen => LISTEN,
            Token::Client(k) => CLIENTS + k,
            Token::Probe { slot, role } => PROBES + 2 * slot + (role & 1),
            Token::NotifyPipe(i) => NOTIFY_PIPES + i,
            Token::NotifySock(i) => NOTIFY_SOCKS + i,
            Token::Reload => RELOAD,
            Token::Cgroup(i) => CGROUPS + i,
        })
    }

    /// The source of a mio token; `None` for a token no source has.
    pub fn decode(t: mio::Token) -> Option<Token> {
        let t = t.0;
        let (range, at) = (t / SPAN, t % SPAN);
        Some(match range {
            0 if t == SIGNAL => Token::Signal,
            0 => Token::Pipe {
                slot: (t - PIPES) / 2,
                stream: (t - PIPES) % 2,
            },
            1 if t == LISTEN => Token::Listen,
            1 => Token::Client(t - CLIENTS),
            2 => Token::Probe {
                slot: at / 2,
                role: at % 2,
            },
            3 => Token::NotifyPipe(at),
            4 => Token::NotifySock(at),
            5 if t == RELOAD => Token::Reload,
            6 => Token::Cgroup(at),
            _ => return None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, clippy::disallowed_macros)]
mod tests {
    use super::*;

    const S: usize = SERVICES - 1;
    const C: usize = MAX_CLIENTS as usize - 1;

    fn every_variant_at_its_edges() -> Vec<Token> {
        let mut v = vec![Token::Signal, Token::Listen, Token::Reload];
        for i in [0, 1, S] {
            for k in [0, 1] {
                v.push(Token::Pipe { slot: i, stream: k });
                v.push(Token::Probe { slot: i, role: k });
            }
            v.push(Token::NotifyPipe(i));
            v.push(Token::NotifySock(i));
            v.push(Token::Cgroup(i));
        }
        v.extend([Token::Client(0), Token::Client(1), Token::Client(C)]);
        v
    }

    #[test]
    fn every_token_round_trips_and_none_collide() {
        let all = every_variant_at_its_edges();
        for t in &all {
            assert_eq!(Token::decode(t.encode()), Some(*t), "{t:?}");
        }
        let mut raw: Vec<usize> = all.iter().map(|t| t.encode().0).collect();
        raw.sort_unstable();
        raw.dedup();
        assert_eq!(raw.len(), all.len(), "two sources share a token");
    }

    #[test]
    fn the_old_token_values_are_kept() {
        assert_eq!(Token::Signal.encode(), mio::Token(0));
        assert_eq!(Token::Pipe { slot: 3, stream: 1 }.encode(), mio::Token(8));
        assert_eq!(Token::Listen.encode(), mio::Token(1 << 20));
        assert_eq!(Token::Client(2).encode(), mio::Token((1 << 20) + 3));
        assert_eq!(
            Token::Probe { slot: 3, role: 1 }.encode(),
            mio::Token((2 << 20) + 7)
        );
        assert_eq!(Token::NotifyPipe(5).encode(), mio::Token((3 << 20) + 5));
        assert_eq!(Token::NotifySock(5).encode(), mio::Token((4 << 20) + 5));
        assert_eq!(Token::Reload.encode(), mio::Token(5 << 20));
        assert_eq!(Token::Cgroup(5).encode(), mio::Token((6 << 20) + 5));
    }

    #[test]
    fn tokens_no_source_has_decode_to_none() {
        for t in [RELOAD + 1, CGROUPS - 1, 7 * SPAN, usize::MAX] {
            assert_eq!(Token::decode(mio::Token(t)), None, "{t}");
        }
    }
}
