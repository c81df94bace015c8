//! coffey core: the deterministic state machines of the supervisor.
//!
//! This crate is `no_std` without `alloc`: it cannot allocate, read the clock
//! or make syscalls. The daemon shell (`src/daemon/`) owns the world, lends
//! preallocated storage to these machines and hands them the time. Everything
//! here can be unit-tested with a virtual clock and a fake [`sys::Sys`].
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod bytes;
pub mod control;
pub mod event;
pub mod health;
pub mod limits;
pub mod logring;
pub mod order;
pub mod pidindex;
pub mod recent;
pub mod service;
pub mod stamp;
pub mod supervisor;
pub mod sys;
pub mod time;
pub mod visible;
