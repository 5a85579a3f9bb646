//! systemd-distribute: `Distribute=N` for systemd socket units.
//!
//! The flow, module by module:
//! config (`distribute_config`) → [`sockets`] (N reuseport fds per address,
//! kept across restarts by [`fdstore`]) → [`served`] (one config: its slots,
//! rescaling with [`steering`], steering around stuck instances with
//! [`health`]) → [`supervisor`] (watch fd i, start
//! `NAME@i.service` through [`systemd`], wait for the unit to go away) →
//! [`daemon`] (startup, reload, signals, sd_notify) → [`control`] → [`api`]
//! (`org.distribute1`).
//!
//! An instance is started one of two ways ([`template`]): a transient unit with
//! properties from [`unit`] and fds packed by [`fdpass`], or the template unit
//! file's own instance, which fetches its fds over [`handoff`].

pub(crate) mod api;
pub(crate) mod companion;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod fdpass;
pub(crate) mod fdstore;
pub(crate) mod handoff;
pub(crate) mod health;
pub(crate) mod load;
pub(crate) mod notify;
pub(crate) mod served;
pub(crate) mod sockets;
pub(crate) mod steering;
pub(crate) mod supervisor;
pub(crate) mod systemd;
pub(crate) mod template;
pub(crate) mod unit;

/// What the `systemd-distribute` binary (main.rs) uses.
pub use daemon::{run, Options};

/// What `systemd-distribute-exec` uses: the instance side of [`fdpass`].
pub mod exec_side {
    pub use crate::fdpass::receive;
}

/// What `systemd-distribute-handoff` uses: the instance side of [`handoff`]
/// and the fd store barrier.
pub mod handoff_side {
    pub use crate::fdstore::{send_barrier, BARRIER_TIMEOUT};
    pub use crate::handoff::{request, runtime_dir, SOCKET_NAME};
}
