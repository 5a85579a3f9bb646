//! systemd-distribute: `Distribute=N` for systemd socket units.
//!
//! The flow, module by module:
//! config (`distribute_config`) → [`sockets`] (N reuseport fds per address,
//! kept across restarts by [`fdstore`]) → [`group`] (one config: its slots,
//! rescaling with [`steering`], steering around stuck instances with
//! [`health`]) → [`supervisor`] (watch fd i, start
//! `NAME@i.service` through [`systemd`], wait for the unit to go away) →
//! [`daemon`] (startup, reload, signals, sd_notify) → [`control`] → [`api`]
//! (`org.distribute1`).
//!
//! An instance is started one of two ways ([`template`]): a transient unit with
//! properties from [`unit`] and fds packed by [`fdpass`], or the template unit
//! file's own instance, which fetches its fds over [`handoff`].

pub mod api;
pub mod companion;
pub mod control;
pub mod daemon;
pub mod fdpass;
pub mod fdstore;
pub mod group;
pub mod handoff;
pub mod health;
pub mod load;
pub mod notify;
pub mod sockets;
pub mod steering;
pub mod supervisor;
pub mod systemd;
pub mod template;
pub mod unit;
