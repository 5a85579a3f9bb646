//! systemd-distribute: `Distribute=N` for systemd socket units.
//!
//! The flow, module by module:
//! config (`distribute_config`) → [`sockets`] (N reuseport fds per address,
//! kept across restarts by [`fdstore`]) → [`group`] (one config: its slots,
//! rescaling with [`steering`]) → [`supervisor`] (watch fd i, start
//! `NAME@i.service` through [`systemd`] with properties from [`unit`] and fds
//! packed by [`fdpass`], wait for the unit to go away) → [`daemon`] (startup,
//! reload, signals, sd_notify) → [`control`] → [`api`] (`org.distribute1`).

pub mod api;
pub mod control;
pub mod daemon;
pub mod fdpass;
pub mod fdstore;
pub mod group;
pub mod sockets;
pub mod steering;
pub mod supervisor;
pub mod systemd;
pub mod unit;
