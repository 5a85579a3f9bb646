//! systemd-distribute: `Distribute=N` for systemd socket units.
//!
//! The flow, module by module:
//! config (`distribute_config`) → [`sockets`] (N reuseport fds per address) →
//! [`supervisor`] (watch fd i, start `NAME@i.service` through [`systemd`] with
//! properties from [`unit`] and fds packed by [`fdpass`], wait for the unit to
//! go away) → [`daemon`] (startup, signals, sd_notify).

pub mod control;
pub mod daemon;
pub mod fdpass;
pub mod sockets;
pub mod supervisor;
pub mod systemd;
pub mod unit;
