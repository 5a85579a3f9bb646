//! The seam between the single-threaded daemon core and its control plane
//! (the D-Bus API in [`crate::api`]).
//!
//! The core owns all state (`Rc`, `RefCell`, fds) on one thread. The API side
//! must be `Send + Sync` for zbus, so it never touches that state: it sends a
//! [`Command`] and awaits the reply, and it learns about changes from
//! [`Event`]s. Every read goes through [`Request::Describe`]/[`Request::List`],
//! which answer with fresh data, including the live accept-queue depth.

use tokio::sync::{mpsc, oneshot};

/// What the control plane can ask of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every served (or failed) socket config.
    List,
    /// One socket config by name.
    Describe {
        /// Config name (`NAME` of `NAME.socket`).
        name: String,
    },
    /// Re-read all configs and reconcile (like SIGHUP).
    Reload,
    /// Change N of one config at run time (until the next reload).
    SetDistribute {
        /// Config name.
        name: String,
        /// New N, checked by `distribute_config::check_distribute`.
        n: u32,
    },
    /// Start instance `index` now, even with nothing queued; clears a failed state.
    StartInstance {
        /// Config name.
        name: String,
        /// Instance index.
        index: u32,
    },
    /// Stop instance `index` (its socket stays watched: the next connection starts it again).
    StopInstance {
        /// Config name.
        name: String,
        /// Instance index.
        index: u32,
    },
    /// Stop, then start instance `index`.
    RestartInstance {
        /// Config name.
        name: String,
        /// Instance index.
        index: u32,
    },
}

/// The daemon's answer.
// One at a time, over a channel: the size of `Socket` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// For [`Request::List`].
    Sockets(Vec<SocketInfo>),
    /// For [`Request::Describe`].
    Socket(SocketInfo),
    /// For actions: a one-line human summary of what was done.
    Done(String),
}

/// Why a request failed; maps 1:1 onto D-Bus error names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No config of that name.
    #[error("no such socket: {0}")]
    NoSuchSocket(String),
    /// Argument out of range (index >= N, N = 0, N too large, ...).
    #[error("{0}")]
    InvalidArgs(String),
    /// The request was valid but could not be carried out.
    #[error("{0}")]
    Failed(String),
}

/// A request with its reply channel.
#[derive(Debug)]
pub struct Command {
    /// What is asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Reply, ControlError>>,
}

/// Sends [`Command`]s to the daemon.
pub type CommandSender = mpsc::UnboundedSender<Command>;

/// Asks the daemon and waits for the answer.
pub async fn ask(tx: &CommandSender, request: Request) -> Result<Reply, ControlError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Command { request, reply })
        .map_err(|_| ControlError::Failed("the daemon is shutting down".into()))?;
    rx.await
        .map_err(|_| ControlError::Failed("the daemon dropped the request".into()))?
}

/// Changes the control plane should publish (object added/removed, `PropertiesChanged`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the D-Bus objects they publish
pub enum Event {
    /// A config is now served (or failed to bind): create its object.
    SocketAdded(String),
    /// A config was removed: remove its object.
    SocketRemoved(String),
    /// Something about a config or one of its instances changed.
    SocketChanged(String),
}

/// One socket config as the control plane shows it, and one instance slot:
/// the D-Bus contract's types, so that a new field is one edit there.
pub use distribute_dbus::{Instance, InstanceInfo, SocketInfo};
