//! The D-Bus API: bus name `org.distribute1` on the system bus.
//!
//! Objects and interfaces (all names versioned with the `1`):
//!
//! ```text
//! /org/distribute1                       org.distribute1.Manager
//!   ListSockets() -> a(soasuus) sockets  (name, object path, listen lines, N, running, state)
//!   GetSocket(s name) -> o path
//!   Reload()
//!   Version   s   (const)
//!   Sockets   ao  (PropertiesChanged on add/remove)
//!   signal SocketAdded(s name, o path)
//!   signal SocketRemoved(s name, o path)
//!   signal SocketChanged(s name, o path)  (the socket or one of its instances changed)
//!
//! /org/distribute1/socket/<escaped NAME> org.distribute1.Socket
//!   Name        s
//!   Description s    the config's [Unit] Description=, "" if none
//!   Listen      as   "ListenStream=127.0.0.1:8080"-style lines, config order
//!   Distribute  u    current N
//!   Service     s    template prefix: instances are SERVICE@I.service
//!   State       s    serving | draining | replacing | failed
//!   Error       s    why failed/degraded, "" if fine
//!   Sources     as   files the effective config came from, in the order applied
//!   Instances   a(ussuttus)
//!                    index, unit, state, main PID (0 = none), activations,
//!                    failures, accept-queue depth (read live), reason ("" = none);
//!                    state `stuck`: running but not accepting, new
//!                    connections go to the others (reason says why)
//!   Stuck       a(uts)  the stuck instances: index, since (µs since the epoch,
//!                    CLOCK_REALTIME), why
//!   SetDistribute(u n)
//!   StartInstance(u index)
//!   StopInstance(u index)
//!   RestartInstance(u index)
//! ```
//!
//! `NAME` is escaped like systemd's `bus_label_escape()` ([`escape_label`]).
//! Changes are announced with the standard `org.freedesktop.DBus.Properties.
//! PropertiesChanged` (one signal per change, carrying only the properties
//! whose values changed) plus the Manager's `Socket*` signals. A change of the
//! queue depth alone is not announced: it is read live on every `Get`.
//!
//! Errors: [`ApiError`]: `org.distribute1.Error.NoSuchSocket`,
//! `org.freedesktop.DBus.Error.InvalidArgs`, `org.freedesktop.DBus.Error.Failed`.
//! `org.freedesktop.DBus.Error.AccessDenied`: only root may call methods that
//! change anything; anyone may read properties, list and introspect. The bus
//! policy (`units/org.distribute1.conf`) says so, and every mutating method
//! checks the caller's UID again ([`require_root`]), so a missing or edited
//! policy file does not open them up.
//!
//! The interface structs hold only a [`CommandSender`]: every read and action
//! goes to the single-threaded daemon core through [`control::ask`].

use crate::control::{
    self, CommandSender, ControlError, Event, InstanceInfo, Reply, Request, SocketInfo,
};
use std::borrow::Cow;
use std::collections::HashMap;
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::message::Header;
use zbus::names::{ErrorName, InterfaceName};
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};
use zbus::{fdo, Connection};

/// Well-known bus name.
pub const BUS_NAME: &str = "org.distribute1";
/// Path of the manager object.
pub const MANAGER_PATH: &str = "/org/distribute1";
/// Prefix of socket object paths; the escaped name follows.
pub const SOCKET_PATH_PREFIX: &str = "/org/distribute1/socket/";
/// Socket interface.
pub const SOCKET_INTERFACE: &str = "org.distribute1.Socket";
/// Error name: no socket config of that name.
pub const ERROR_NO_SUCH_SOCKET: &str = "org.distribute1.Error.NoSuchSocket";
/// Error name: an argument is out of range (standard D-Bus name).
pub const ERROR_INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
/// Error name: the request was valid but could not be carried out (standard D-Bus name).
pub const ERROR_FAILED: &str = "org.freedesktop.DBus.Error.Failed";
/// Error name: the caller may not do this (standard D-Bus name).
pub const ERROR_ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// One entry of `ListSockets()`: `(name, path, listen, distribute, running, state)`, `(soasuus)`.
pub type SocketEntry = (String, OwnedObjectPath, Vec<String>, u32, u32, String);

/// One entry of the `Instances` property: `(index, unit, state, main_pid,
/// activations, failures, queue_depth, reason)`, `(ussuttus)`.
pub type InstanceEntry = (u32, String, String, u32, u64, u64, u32, String);

/// One entry of the `Stuck` property: `(index, since_usec, why)`, `(uts)`.
pub type StuckEntry = (u32, u64, String);

/// Errors of our methods.
///
/// Written by hand rather than with `#[derive(zbus::DBusError)]`: the derive
/// names every variant `PREFIX.VARIANT` with one prefix (and its
/// `#[zbus(error)]` variant always answers `org.freedesktop.zbus.Error`), but
/// bad arguments must be the standard `org.freedesktop.DBus.Error.InvalidArgs`
/// that `busctl` and every D-Bus binding recognise, next to our own
/// `org.distribute1.Error.NoSuchSocket`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `org.distribute1.Error.NoSuchSocket`
    #[error("{0}")]
    NoSuchSocket(String),
    /// `org.freedesktop.DBus.Error.InvalidArgs`
    #[error("{0}")]
    InvalidArgs(String),
    /// `org.freedesktop.DBus.Error.Failed`
    #[error("{0}")]
    Failed(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`
    #[error("{0}")]
    AccessDenied(String),
}

impl zbus::DBusError for ApiError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::Message> {
        zbus::Message::error(call, self.name())?.build(&(self.to_string(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(match self {
            ApiError::NoSuchSocket(_) => ERROR_NO_SUCH_SOCKET,
            ApiError::InvalidArgs(_) => ERROR_INVALID_ARGS,
            ApiError::Failed(_) => ERROR_FAILED,
            ApiError::AccessDenied(_) => ERROR_ACCESS_DENIED,
        })
    }

    fn description(&self) -> Option<&str> {
        match self {
            ApiError::NoSuchSocket(s)
            | ApiError::InvalidArgs(s)
            | ApiError::Failed(s)
            | ApiError::AccessDenied(s) => Some(s),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NoSuchSocket(name) => {
                ApiError::NoSuchSocket(format!("no socket config named {name:?}"))
            }
            ControlError::InvalidArgs(m) => ApiError::InvalidArgs(m),
            ControlError::Failed(m) => ApiError::Failed(m),
        }
    }
}

/// For property getters, which zbus makes answer with `fdo::Error`.
fn fdo_error(e: ControlError) -> fdo::Error {
    match e {
        ControlError::NoSuchSocket(name) => {
            fdo::Error::UnknownObject(format!("no socket config named {name:?}"))
        }
        ControlError::InvalidArgs(m) => fdo::Error::InvalidArgs(m),
        ControlError::Failed(m) => fdo::Error::Failed(m),
    }
}

fn unexpected(reply: Reply) -> ControlError {
    ControlError::Failed(format!("unexpected answer from the daemon core: {reply:?}"))
}

async fn list(commands: &CommandSender) -> Result<Vec<SocketInfo>, ControlError> {
    match control::ask(commands, Request::List).await? {
        Reply::Sockets(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

async fn describe(commands: &CommandSender, name: &str) -> Result<SocketInfo, ControlError> {
    match control::ask(
        commands,
        Request::Describe {
            name: name.to_string(),
        },
    )
    .await?
    {
        Reply::Socket(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

/// Lets only root through: asks the bus for the caller's UID (the bus knows
/// it from the connection's credentials; nothing the caller says counts).
pub async fn require_root(conn: &zbus::Connection, call: &Header<'_>) -> Result<(), ApiError> {
    let Some(sender) = call.sender() else {
        return Err(ApiError::AccessDenied("a call without a sender".into()));
    };
    let dbus = fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| ApiError::Failed(format!("asking the bus who called: {e}")))?;
    let uid = dbus
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| ApiError::Failed(format!("asking the bus who called: {e}")))?;
    if uid != 0 {
        tracing::warn!(
            "refused a {} call from {sender} (uid {uid}): only root may change anything",
            call.member().map(|m| m.as_str()).unwrap_or("?")
        );
        return Err(ApiError::AccessDenied(format!(
            "only root may change systemd-distribute; the caller runs as uid {uid}"
        )));
    }
    Ok(())
}

async fn act(commands: &CommandSender, request: Request) -> Result<(), ApiError> {
    match control::ask(commands, request.clone()).await? {
        Reply::Done(summary) => {
            tracing::info!("D-Bus {request:?}: {summary}");
            Ok(())
        }
        other => Err(unexpected(other).into()),
    }
}

pub use crate::systemd::escape_label;
#[cfg(test)]
use crate::systemd::unescape_label;

/// Object path of the socket config `name`.
pub fn socket_path(name: &str) -> OwnedObjectPath {
    let path = format!("{SOCKET_PATH_PREFIX}{}", escape_label(name));
    OwnedObjectPath::try_from(path).expect("an escaped label is a valid object path element")
}

fn instance_entry(i: &InstanceInfo) -> InstanceEntry {
    (
        i.index,
        i.unit.clone(),
        i.state.clone(),
        i.main_pid,
        i.activations,
        i.failures,
        i.queue_depth,
        i.reason.clone(),
    )
}

fn stuck_entries(s: &SocketInfo) -> Vec<StuckEntry> {
    s.instances
        .iter()
        .filter(|i| i.stuck_since_usec != 0)
        .map(|i| (i.index, i.stuck_since_usec, i.reason.clone()))
        .collect()
}

fn socket_entry(s: &SocketInfo) -> SocketEntry {
    (
        s.name.clone(),
        socket_path(&s.name),
        s.listen.clone(),
        s.distribute,
        s.running() as u32,
        s.state.clone(),
    )
}

/// `org.distribute1.Manager` at `/org/distribute1`.
pub struct Manager {
    commands: CommandSender,
}

#[zbus::interface(name = "org.distribute1.Manager")]
impl Manager {
    /// Every socket config: (name, object path, listen lines, N, running instances, state).
    #[zbus(out_args("sockets"))]
    async fn list_sockets(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<Vec<SocketEntry>, ApiError> {
        let sockets = list(&self.commands).await?;
        for s in &sockets {
            // Paths that are returned must work (see GetSocket).
            add_object(server, &self.commands, &s.name)
                .await
                .map_err(|e| ApiError::Failed(format!("serving the object of {}: {e}", s.name)))?;
        }
        Ok(sockets.iter().map(socket_entry).collect())
    }

    /// The object path of the socket config `name`.
    #[zbus(out_args("path"))]
    async fn get_socket(
        &self,
        name: &str,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, ApiError> {
        let info = describe(&self.commands, name).await?;
        // The object may not be served yet in the moment after a config
        // appeared; a path that is returned must work.
        add_object(server, &self.commands, &info.name)
            .await
            .map_err(|e| ApiError::Failed(format!("serving the object of {name}: {e}")))?;
        Ok(socket_path(&info.name))
    }

    /// Re-reads every config and reconciles, like SIGHUP.
    async fn reload(
        &self,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        act(&self.commands, Request::Reload).await
    }

    /// The version of systemd-distribute.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// Object paths of every socket config.
    #[zbus(property)]
    async fn sockets(&self) -> fdo::Result<Vec<OwnedObjectPath>> {
        let sockets = list(&self.commands).await.map_err(fdo_error)?;
        Ok(sockets.iter().map(|s| socket_path(&s.name)).collect())
    }

    /// A socket config appeared (or was re-created by a reload).
    #[zbus(signal)]
    async fn socket_added(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A socket config was removed.
    #[zbus(signal)]
    async fn socket_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A socket config or one of its instances changed state.
    #[zbus(signal)]
    async fn socket_changed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;
}

/// `org.distribute1.Socket` at `/org/distribute1/socket/<escaped NAME>`.
pub struct Socket {
    name: String,
    commands: CommandSender,
}

impl Socket {
    async fn info(&self) -> fdo::Result<SocketInfo> {
        describe(&self.commands, &self.name)
            .await
            .map_err(fdo_error)
    }
}

#[zbus::interface(name = "org.distribute1.Socket")]
impl Socket {
    /// Changes N until the next reload: instances are added, or the highest
    /// ones drain (finish what is queued) and go away. 1..=1024.
    async fn set_distribute(
        &self,
        n: u32,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        if n == 0 {
            return Err(ApiError::InvalidArgs(
                "Distribute must be at least 1".to_string(),
            ));
        }
        act(
            &self.commands,
            Request::SetDistribute {
                name: self.name.clone(),
                n,
            },
        )
        .await
    }

    /// Starts instance `index` now, even with nothing queued; clears a failed state.
    async fn start_instance(
        &self,
        index: u32,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        act(
            &self.commands,
            Request::StartInstance {
                name: self.name.clone(),
                index,
            },
        )
        .await
    }

    /// Stops instance `index`; its socket stays watched, so the next connection starts it again.
    async fn stop_instance(
        &self,
        index: u32,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        act(
            &self.commands,
            Request::StopInstance {
                name: self.name.clone(),
                index,
            },
        )
        .await
    }

    /// Stops, then starts instance `index`.
    async fn restart_instance(
        &self,
        index: u32,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        act(
            &self.commands,
            Request::RestartInstance {
                name: self.name.clone(),
                index,
            },
        )
        .await
    }

    /// Config name (`NAME` of `NAME.socket`).
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The config's `[Unit]` `Description=`; empty if it has none.
    #[zbus(property)]
    async fn description(&self) -> fdo::Result<String> {
        Ok(self.info().await?.description)
    }

    /// `ListenStream=…`/`ListenDatagram=…` lines, in config order.
    #[zbus(property)]
    async fn listen(&self) -> fdo::Result<Vec<String>> {
        Ok(self.info().await?.listen)
    }

    /// Current N.
    #[zbus(property)]
    async fn distribute(&self) -> fdo::Result<u32> {
        Ok(self.info().await?.distribute)
    }

    /// Template prefix: instances are `SERVICE@I.service`.
    #[zbus(property)]
    async fn service(&self) -> fdo::Result<String> {
        Ok(self.info().await?.service)
    }

    /// `serving`, `draining`, `replacing` or `failed`.
    #[zbus(property)]
    async fn state(&self) -> fdo::Result<String> {
        Ok(self.info().await?.state)
    }

    /// Why the config is failed or degraded; empty if fine.
    #[zbus(property)]
    async fn error(&self) -> fdo::Result<String> {
        Ok(self.info().await?.error)
    }

    /// Files the effective config came from, in the order applied.
    #[zbus(property)]
    async fn sources(&self) -> fdo::Result<Vec<String>> {
        Ok(self.info().await?.sources)
    }

    /// How instances start: `transient` (built from the config's `[Service]`)
    /// or `template` (the template unit file's own instances); empty for a
    /// config that is not served.
    #[zbus(property)]
    async fn mode(&self) -> fdo::Result<String> {
        Ok(self.info().await?.mode)
    }

    /// Template mode: the template's unit file (systemd's `FragmentPath`);
    /// empty otherwise.
    #[zbus(property)]
    async fn unit_file(&self) -> fdo::Result<String> {
        Ok(self.info().await?.unit_file)
    }

    /// Per instance: (index, unit, state, main PID, activations, failures,
    /// accept-queue depth, reason). The queue depth is read live.
    #[zbus(property)]
    async fn instances(&self) -> fdo::Result<Vec<InstanceEntry>> {
        Ok(self
            .info()
            .await?
            .instances
            .iter()
            .map(instance_entry)
            .collect())
    }

    /// The instances that are running but not accepting, whose new
    /// connections go to the others: (index, since µs since the epoch, why).
    #[zbus(property)]
    async fn stuck(&self) -> fdo::Result<Vec<StuckEntry>> {
        Ok(stuck_entries(&self.info().await?))
    }
}

/// What was last announced for a socket, to put only real changes into
/// `PropertiesChanged`.
#[derive(Debug, Clone, PartialEq)]
struct Announced {
    description: String,
    listen: Vec<String>,
    distribute: u32,
    service: String,
    state: String,
    error: String,
    sources: Vec<String>,
    mode: String,
    unit_file: String,
    /// Without the queue depth, which changes all the time and is read live.
    instances: Vec<InstanceEntry>,
    stuck: Vec<StuckEntry>,
}

impl Announced {
    fn of(info: &SocketInfo) -> Self {
        Announced {
            description: info.description.clone(),
            listen: info.listen.clone(),
            distribute: info.distribute,
            service: info.service.clone(),
            state: info.state.clone(),
            error: info.error.clone(),
            sources: info.sources.clone(),
            mode: info.mode.clone(),
            unit_file: info.unit_file.clone(),
            instances: info
                .instances
                .iter()
                .map(|i| {
                    let mut e = instance_entry(i);
                    e.6 = 0;
                    e
                })
                .collect(),
            stuck: stuck_entries(info),
        }
    }

    /// The `PropertiesChanged` payload from `old` to `info`.
    fn changes<'a>(old: &Announced, info: &'a SocketInfo) -> HashMap<&'static str, Value<'a>> {
        let new = Announced::of(info);
        let mut changed = HashMap::new();
        if old.description != new.description {
            changed.insert("Description", Value::from(info.description.as_str()));
        }
        if old.listen != new.listen {
            changed.insert("Listen", Value::from(&info.listen));
        }
        if old.distribute != new.distribute {
            changed.insert("Distribute", Value::from(info.distribute));
        }
        if old.service != new.service {
            changed.insert("Service", Value::from(info.service.as_str()));
        }
        if old.state != new.state {
            changed.insert("State", Value::from(info.state.as_str()));
        }
        if old.error != new.error {
            changed.insert("Error", Value::from(info.error.as_str()));
        }
        if old.sources != new.sources {
            changed.insert("Sources", Value::from(&info.sources));
        }
        if old.mode != new.mode {
            changed.insert("Mode", Value::from(info.mode.as_str()));
        }
        if old.unit_file != new.unit_file {
            changed.insert("UnitFile", Value::from(info.unit_file.as_str()));
        }
        if old.instances != new.instances {
            let entries: Vec<InstanceEntry> = info.instances.iter().map(instance_entry).collect();
            changed.insert("Instances", Value::from(entries));
        }
        if old.stuck != new.stuck {
            changed.insert("Stuck", Value::from(new.stuck));
        }
        changed
    }
}

/// Publishes the API on `conn` and takes the name `org.distribute1`.
///
/// Serves `/org/distribute1`, then one object per socket config for every
/// [`Event::SocketAdded`] already queued on `events`, then requests the name.
/// It never waits for the daemon core, which may not be answering commands
/// yet. A spawned task then follows `events`: for each batch it first adds and
/// removes objects (no round trip to the core, so the objects of configs bound
/// during startup exist by the time the daemon reports READY=1), then emits
/// the Manager's signals and `PropertiesChanged`. After the first batch it
/// reconciles the objects once against `Request::List`. `GetSocket` and
/// `ListSockets` also serve any missing object before returning its path.
pub async fn serve(
    conn: &Connection,
    commands: CommandSender,
    mut events: UnboundedReceiver<Event>,
) -> zbus::Result<()> {
    let server = conn.object_server();
    server
        .at(
            MANAGER_PATH,
            Manager {
                commands: commands.clone(),
            },
        )
        .await?;
    let mut publisher = Publisher {
        conn: conn.clone(),
        commands,
        announced: HashMap::new(),
    };
    // Events queued before we were called: objects only; the reconcile below
    // takes care of their properties.
    while let Ok(event) = events.try_recv() {
        match &event {
            Event::SocketAdded(name) => {
                publisher.add_object(name).await?;
                publisher
                    .announced
                    .insert(name.clone(), Announced::unknown());
            }
            Event::SocketRemoved(name) => {
                publisher.remove_object(name).await?;
            }
            Event::SocketChanged(_) => {}
        }
    }
    conn.request_name(BUS_NAME).await?;
    tracing::info!("serving {BUS_NAME} on the system bus");
    tokio::spawn(async move {
        let mut reconciled = false;
        while let Some(first) = events.recv().await {
            let mut batch = vec![first];
            while let Ok(e) = events.try_recv() {
                batch.push(e);
            }
            if let Err(e) = publisher.handle(batch).await {
                tracing::warn!("D-Bus: publishing a change failed: {e}");
            }
            if !reconciled {
                // After the first batch, whose objects are up before the
                // daemon reports READY=1: the daemon answers List only once
                // its main loop runs.
                publisher.reconcile().await;
                reconciled = true;
            }
        }
        tracing::debug!("D-Bus: the event channel closed");
    });
    Ok(())
}

/// Serves the object of `name` unless it is served; true if it is new.
async fn add_object(
    server: &ObjectServer,
    commands: &CommandSender,
    name: &str,
) -> zbus::Result<bool> {
    server
        .at(
            socket_path(name),
            Socket {
                name: name.to_string(),
                commands: commands.clone(),
            },
        )
        .await
}

/// Drops the object of `name`; true if it was served.
async fn remove_object(server: &ObjectServer, name: &str) -> zbus::Result<bool> {
    match server.remove::<Socket, _>(socket_path(name)).await {
        Ok(_) => Ok(true),
        Err(zbus::Error::InterfaceNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Follows the daemon's events and keeps the bus in step. The object server
/// is the record of which objects exist; `announced` only remembers property
/// values for `PropertiesChanged`.
struct Publisher {
    conn: Connection,
    commands: CommandSender,
    /// What was last announced about each socket.
    announced: HashMap<String, Announced>,
}

impl Publisher {
    fn manager_emitter(&self) -> zbus::Result<SignalEmitter<'static>> {
        SignalEmitter::new(&self.conn, MANAGER_PATH)
    }

    async fn add_object(&mut self, name: &str) -> zbus::Result<bool> {
        add_object(self.conn.object_server(), &self.commands, name).await
    }

    async fn remove_object(&mut self, name: &str) -> zbus::Result<bool> {
        self.announced.remove(name);
        remove_object(self.conn.object_server(), name).await
    }

    /// Objects first, for the whole batch (no round trip to the daemon core,
    /// so they exist as soon as possible), then the signals, which need
    /// `Describe`/`List` answers.
    async fn handle(&mut self, batch: Vec<Event>) -> zbus::Result<()> {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut changed: Vec<String> = Vec::new();
        for event in batch {
            match event {
                Event::SocketAdded(name) | Event::SocketChanged(name) => {
                    if self.add_object(&name).await? {
                        removed.retain(|n| n != &name);
                        added.push(name.clone());
                    }
                    if !changed.contains(&name) {
                        changed.push(name);
                    }
                }
                Event::SocketRemoved(name) => {
                    if self.remove_object(&name).await? {
                        added.retain(|n| n != &name);
                        changed.retain(|n| n != &name);
                        removed.push(name);
                    }
                }
            }
        }
        let emitter = self.manager_emitter()?;
        for name in &removed {
            Manager::socket_removed(&emitter, name, socket_path(name).as_ref()).await?;
        }
        for name in &added {
            Manager::socket_added(&emitter, name, socket_path(name).as_ref()).await?;
        }
        if !added.is_empty() || !removed.is_empty() {
            self.sockets_changed().await?;
        }
        for name in &changed {
            self.announce_changed(name).await?;
        }
        Ok(())
    }

    /// `PropertiesChanged` of the Manager's `Sockets`.
    async fn sockets_changed(&self) -> zbus::Result<()> {
        let iface = self
            .conn
            .object_server()
            .interface::<_, Manager>(MANAGER_PATH)
            .await?;
        let manager = iface.get().await;
        let result = manager.sockets_changed(iface.signal_emitter()).await;
        drop(manager);
        result
    }

    /// `PropertiesChanged` (only what changed) and `SocketChanged`.
    async fn announce_changed(&mut self, name: &str) -> zbus::Result<()> {
        let info = match describe(&self.commands, name).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("D-Bus: describing {name} failed: {e}");
                return Ok(());
            }
        };
        let path = socket_path(name);
        let changed = match self.announced.get(name) {
            Some(old) => Announced::changes(old, &info),
            // Nothing was announced yet, so every value is news.
            None => Announced::changes(&Announced::unknown(), &info),
        };
        self.announced
            .insert(name.to_string(), Announced::of(&info));
        let emitter = SignalEmitter::new(&self.conn, path.clone())?;
        if !changed.is_empty() {
            fdo::Properties::properties_changed(
                &emitter,
                InterfaceName::from_static_str_unchecked(SOCKET_INTERFACE),
                changed,
                Cow::Borrowed(&[]),
            )
            .await?;
        }
        let manager = self.manager_emitter()?;
        Manager::socket_changed(&manager, name, path.as_ref()).await
    }

    /// Makes the served objects match the daemon's list, once the core answers.
    async fn reconcile(&mut self) {
        let sockets = match list(&self.commands).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("D-Bus: listing sockets failed: {e}");
                return;
            }
        };
        let mut changed = false;
        for s in &sockets {
            match self.add_object(&s.name).await {
                Ok(true) => {
                    changed = true;
                    if let Ok(emitter) = self.manager_emitter() {
                        let path = socket_path(&s.name);
                        let _ = Manager::socket_added(&emitter, &s.name, path.as_ref()).await;
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("D-Bus: serving {}: {e}", s.name),
            }
            self.announced.insert(s.name.clone(), Announced::of(s));
        }
        let stale: Vec<String> = self
            .announced
            .keys()
            .filter(|k| !sockets.iter().any(|s| &s.name == *k))
            .cloned()
            .collect();
        for name in stale {
            if let Ok(true) = self.remove_object(&name).await {
                changed = true;
            }
        }
        if changed {
            let _ = self.sockets_changed().await;
        }
    }
}

impl Announced {
    /// Differs from anything real in every field.
    fn unknown() -> Self {
        Announced {
            description: "\0".into(),
            listen: vec![String::from("\0")],
            distribute: u32::MAX,
            service: "\0".into(),
            state: "\0".into(),
            error: "\0".into(),
            sources: vec![String::from("\0")],
            mode: "\0".into(),
            unit_file: "\0".into(),
            instances: vec![(
                u32::MAX,
                String::new(),
                String::new(),
                0,
                0,
                0,
                0,
                String::new(),
            )],
            stuck: vec![(u32::MAX, 0, String::new())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn escapes_like_systemd() {
        let cases = [
            ("web", "web"),
            ("", "_"),
            ("web-2", "web_2d2"),
            ("a.b", "a_2eb"),
            ("1web", "_31web"),
            ("web1", "web1"),
            ("Web_X", "Web_5fX"),
            ("é", "_c3_a9"),
        ];
        for (name, want) in cases {
            assert_eq!(escape_label(name), want, "{name:?}");
            assert_eq!(unescape_label(want).as_deref(), Some(name), "{want:?}");
        }
        assert_eq!(
            socket_path("my-app").as_str(),
            "/org/distribute1/socket/my_2dapp"
        );
        assert_eq!(unescape_label("bad_z"), None);
    }

    #[test]
    fn every_label_makes_a_valid_path() {
        for name in ["a", "-", "..", "a b", "x@y", "0", "\u{1f600}", "UPPER"] {
            let p = format!("{SOCKET_PATH_PREFIX}{}", escape_label(name));
            assert!(ObjectPath::try_from(p.as_str()).is_ok(), "{p}");
        }
    }

    #[test]
    fn error_names() {
        let e = ApiError::from(ControlError::NoSuchSocket("web".into()));
        assert_eq!(e.name().as_str(), "org.distribute1.Error.NoSuchSocket");
        assert_eq!(e.description(), Some("no socket config named \"web\""));
        let e = ApiError::from(ControlError::InvalidArgs("index 9 >= N=4".into()));
        assert_eq!(e.name().as_str(), "org.freedesktop.DBus.Error.InvalidArgs");
        let e = ApiError::from(ControlError::Failed("boom".into()));
        assert_eq!(e.name().as_str(), "org.freedesktop.DBus.Error.Failed");
        assert_eq!(e.description(), Some("boom"));
    }

    fn fixture() -> SocketInfo {
        SocketInfo {
            name: "web".into(),
            listen: vec!["ListenStream=127.0.0.1:8080".into()],
            distribute: 2,
            service: "web".into(),
            state: "serving".into(),
            error: String::new(),
            sources: vec!["/etc/systemd/distribute/web.socket".into()],
            mode: "transient".into(),
            unit_file: String::new(),
            description: String::new(),
            instances: (0..2)
                .map(|i| InstanceInfo {
                    index: i,
                    unit: format!("web@{i}.service"),
                    state: "listening".into(),
                    main_pid: 0,
                    activations: 0,
                    failures: 0,
                    queue_depth: 0,
                    reason: String::new(),
                    stuck_since_usec: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn properties_changed_carries_only_changes() {
        let mut info = fixture();
        let all = Announced::changes(&Announced::unknown(), &info);
        let mut keys: Vec<_> = all.keys().copied().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "Description",
                "Distribute",
                "Error",
                "Instances",
                "Listen",
                "Mode",
                "Service",
                "Sources",
                "State",
                "Stuck",
                "UnitFile"
            ]
        );
        let old = Announced::of(&info);
        assert!(Announced::changes(&old, &info).is_empty());
        // Queue depth alone is not a change worth a signal.
        info.instances[0].queue_depth = 5;
        assert!(Announced::changes(&old, &info).is_empty());
        info.instances[1].state = "running".into();
        info.instances[1].main_pid = 42;
        let c = Announced::changes(&old, &info);
        assert_eq!(c.keys().copied().collect::<Vec<_>>(), ["Instances"]);
        assert_eq!(c["Instances"].value_signature().to_string(), "a(ussuttus)");
        info.instances[1].state = "stuck".into();
        info.instances[1].reason = "accept queue 9 has not drained".into();
        info.instances[1].stuck_since_usec = 1_700_000_000_000_000;
        let c = Announced::changes(&Announced::of(&fixture()), &info);
        let mut keys: Vec<_> = c.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, ["Instances", "Stuck"]);
        assert_eq!(c["Stuck"].value_signature().to_string(), "a(uts)");
    }

    #[test]
    fn entries_have_documented_signatures() {
        use zbus::zvariant::Type;
        assert_eq!(SocketEntry::SIGNATURE.to_string(), "(soasuus)");
        assert_eq!(InstanceEntry::SIGNATURE.to_string(), "(ussuttus)");
        let e = socket_entry(&fixture());
        assert_eq!(e.1.as_str(), "/org/distribute1/socket/web");
        assert_eq!((e.3, e.4), (2, 0));
    }
}
