//! The control plane's core: the wire codec shared by daemon and client,
//! and the per-connection machine. No syscalls, no allocation.

pub mod conn;
pub mod eventline;
pub mod proto;
