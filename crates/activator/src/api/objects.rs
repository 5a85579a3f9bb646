//! The two interfaces: `org.distribute1.Manager` at `/org/distribute1` and
//! `org.distribute1.Socket` at `/org/distribute1/socket/<escaped NAME>`.
//! Their names, wire types and errors are [`distribute_dbus`]'s.

use crate::control::{self, CommandSender, ControlError, Reply, Request, SocketInfo};
use distribute_dbus::{socket_path, Error as ApiError, Instance, SocketEntry, StuckInstance};
use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::zvariant::{ObjectPath, OwnedObjectPath};

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

pub(crate) async fn list(commands: &CommandSender) -> Result<Vec<SocketInfo>, ControlError> {
    match control::ask(commands, Request::List).await? {
        Reply::Sockets(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

pub(crate) async fn describe(
    commands: &CommandSender,
    name: &str,
) -> Result<SocketInfo, ControlError> {
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

/// `org.distribute1.Manager` at `/org/distribute1`.
pub struct Manager {
    commands: CommandSender,
}

impl Manager {
    /// The manager, answering from the daemon core at `commands`.
    pub fn new(commands: CommandSender) -> Self {
        Manager { commands }
    }
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
        Ok(sockets.iter().map(SocketInfo::entry).collect())
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
    pub(crate) async fn socket_added(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A socket config was removed.
    #[zbus(signal)]
    pub(crate) async fn socket_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A socket config or one of its instances changed state.
    #[zbus(signal)]
    pub(crate) async fn socket_changed(
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
    /// Its properties, fresh from the daemon core.
    async fn info(&self) -> fdo::Result<SocketInfo> {
        describe(&self.commands, &self.name)
            .await
            .map_err(fdo_error)
    }
}

#[zbus::interface(name = "org.distribute1.Socket")]
impl Socket {
    /// Changes N until the next reload: instances are added, or the highest
    /// ones drain (finish what is queued) and go away. N in the range of
    /// `distribute_config::check_distribute` (an error names it).
    async fn set_distribute(
        &self,
        n: u32,
        #[zbus(header)] call: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(), ApiError> {
        require_root(conn, &call).await?;
        // The range is checked once, by the daemon (config crate's check_distribute).
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
    async fn instances(&self) -> fdo::Result<Vec<Instance>> {
        Ok(self
            .info()
            .await?
            .instances
            .into_iter()
            .map(|i| i.instance)
            .collect())
    }

    /// The instances that are running but not accepting, whose new
    /// connections go to the others: (index, since µs since the epoch, why).
    #[zbus(property)]
    async fn stuck(&self) -> fdo::Result<Vec<StuckInstance>> {
        Ok(self.info().await?.stuck())
    }
}

/// Serves the object of `name` unless it is served; true if it is new.
pub(crate) async fn add_object(
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
pub(crate) async fn remove_object(server: &ObjectServer, name: &str) -> zbus::Result<bool> {
    match server.remove::<Socket, _>(socket_path(name)).await {
        Ok(_) => Ok(true),
        Err(zbus::Error::InterfaceNotFound) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::object_server::Interface;
    use zbus::DBusError;

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

    #[test]
    fn interfaces_have_the_contract_names() {
        assert_eq!(
            <Manager as Interface>::name().as_str(),
            distribute_dbus::MANAGER_INTERFACE
        );
        assert_eq!(
            <Socket as Interface>::name().as_str(),
            distribute_dbus::SOCKET_INTERFACE
        );
    }
}
