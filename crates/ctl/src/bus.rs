//! The client side of `org.distribute1`: proxies and what D-Bus errors mean
//! to an operator.

use serde::Serialize;
use std::fmt;
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::Connection;

/// `org.distribute1.Manager` at `/org/distribute1`.
#[zbus::proxy(
    interface = "org.distribute1.Manager",
    default_service = "org.distribute1",
    default_path = "/org/distribute1"
)]
pub trait Manager {
    /// (name, object path, listen lines, N, running instances, state).
    #[allow(clippy::type_complexity)]
    fn list_sockets(
        &self,
    ) -> zbus::Result<Vec<(String, OwnedObjectPath, Vec<String>, u32, u32, String)>>;
    /// Object path of a socket config.
    fn get_socket(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Re-read every config.
    fn reload(&self) -> zbus::Result<()>;
    /// Version of the daemon.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// `org.distribute1.Socket` at `/org/distribute1/socket/NAME`.
#[zbus::proxy(
    interface = "org.distribute1.Socket",
    default_service = "org.distribute1"
)]
pub trait Socket {
    /// Change N.
    fn set_distribute(&self, n: u32) -> zbus::Result<()>;
    /// Start one instance.
    fn start_instance(&self, index: u32) -> zbus::Result<()>;
    /// Stop one instance.
    fn stop_instance(&self, index: u32) -> zbus::Result<()>;
    /// Restart one instance.
    fn restart_instance(&self, index: u32) -> zbus::Result<()>;
    /// Config name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// Listen lines.
    #[zbus(property)]
    fn listen(&self) -> zbus::Result<Vec<String>>;
    /// N.
    #[zbus(property)]
    fn distribute(&self) -> zbus::Result<u32>;
    /// Template prefix.
    #[zbus(property)]
    fn service(&self) -> zbus::Result<String>;
    /// serving | draining | replacing | failed.
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    /// Why failed/degraded.
    #[zbus(property)]
    fn error(&self) -> zbus::Result<String>;
    /// Source files, in the order applied.
    #[zbus(property)]
    fn sources(&self) -> zbus::Result<Vec<String>>;
    /// transient | template ("" if not served).
    #[zbus(property)]
    fn mode(&self) -> zbus::Result<String>;
    /// Template mode: the template's unit file.
    #[zbus(property)]
    fn unit_file(&self) -> zbus::Result<String>;
    /// The config's [Unit] Description= ("" if none).
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
    /// (index, unit, state, main PID, activations, failures, queue depth, reason).
    #[zbus(property)]
    #[allow(clippy::type_complexity)]
    fn instances(&self) -> zbus::Result<Vec<(u32, String, String, u32, u64, u64, u32, String)>>;
    /// Stuck instances: (index, since µs since the epoch, why).
    #[zbus(property)]
    fn stuck(&self) -> zbus::Result<Vec<(u32, u64, String)>>;
}

/// One row of `ListSockets()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketSummary {
    /// Config name.
    pub name: String,
    /// Object path.
    pub path: String,
    /// Listen lines.
    pub listen: Vec<String>,
    /// N.
    pub distribute: u32,
    /// Running instances.
    pub running: u32,
    /// State.
    pub state: String,
}

/// One instance of a socket, as `Instances` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Index I.
    pub index: u32,
    /// `SERVICE@I.service`.
    pub unit: String,
    /// listening | starting | running | stuck | backoff | failed | draining.
    pub state: String,
    /// Main PID, 0 if none.
    pub main_pid: u32,
    /// Successful starts.
    pub activations: u64,
    /// Failed starts and exits.
    pub failures: u64,
    /// Connections waiting in the accept queue.
    pub queue_depth: u32,
    /// Why backoff/failed/stuck.
    pub reason: String,
    /// Stuck: since when its queue has not drained (µs since the epoch); 0 otherwise.
    pub stuck_since_usec: u64,
}

/// Everything about one socket config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketStatus {
    /// Config name.
    pub name: String,
    /// Object path.
    pub path: String,
    /// Listen lines.
    pub listen: Vec<String>,
    /// N.
    pub distribute: u32,
    /// Template prefix.
    pub service: String,
    /// State.
    pub state: String,
    /// Why failed/degraded.
    pub error: String,
    /// Source files.
    pub sources: Vec<String>,
    /// `transient` or `template` ("" if not served).
    pub mode: String,
    /// Template mode: the template's unit file.
    pub unit_file: String,
    /// The config's `[Unit]` `Description=` ("" if none).
    pub description: String,
    /// Instances by index.
    pub instances: Vec<Instance>,
}

/// What went wrong, as the operator should hear it; decides the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlError {
    /// Nobody owns `org.distribute1`.
    NotRunning,
    /// No socket config of that name (exit 4).
    NoSuchSocket(String),
    /// The bus refused: not root.
    AccessDenied(String),
    /// Anything else.
    Failed(String),
}

impl CtlError {
    /// systemctl's conventions: 4 for "no such unit", 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::NoSuchSocket(_) => 4,
            _ => 1,
        }
    }

    /// Maps a D-Bus error onto what it means here; `context` says what was being done.
    pub fn from_dbus(context: &str, name: &str, description: Option<&str>) -> CtlError {
        let desc = description.unwrap_or("").trim();
        match name {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => CtlError::NotRunning,
            "org.distribute1.Error.NoSuchSocket" | "org.freedesktop.DBus.Error.UnknownObject" => {
                CtlError::NoSuchSocket(if desc.is_empty() {
                    context.to_string()
                } else {
                    format!("{context}: {desc}")
                })
            }
            "org.freedesktop.DBus.Error.AccessDenied"
            | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                CtlError::AccessDenied(format!(
                    "{context}: Access denied (only root may change systemd-distribute)"
                ))
            }
            "org.freedesktop.DBus.Error.InvalidArgs" => {
                CtlError::Failed(format!("{context}: invalid argument: {desc}"))
            }
            _ if desc.is_empty() => CtlError::Failed(format!("{context}: {name}")),
            _ => CtlError::Failed(format!("{context}: {desc}")),
        }
    }

    /// Maps a zbus error.
    pub fn from_zbus(context: &str, e: zbus::Error) -> CtlError {
        match &e {
            zbus::Error::MethodError(name, desc, _) => {
                CtlError::from_dbus(context, name.as_str(), desc.as_deref())
            }
            zbus::Error::FDO(fdo) => {
                use zbus::DBusError;
                CtlError::from_dbus(context, fdo.name().as_str(), fdo.description())
            }
            _ => CtlError::Failed(format!("{context}: {e}")),
        }
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::NotRunning => f.write_str(
                "systemd-distribute is not running (org.distribute1 has no owner on the system bus)",
            ),
            CtlError::NoSuchSocket(m) | CtlError::AccessDenied(m) | CtlError::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A connection to the system bus (honours `DBUS_SYSTEM_BUS_ADDRESS`).
pub struct Client {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl Client {
    /// Connects to the system bus.
    pub async fn connect() -> Result<Client, CtlError> {
        let conn = Connection::system()
            .await
            .map_err(|e| CtlError::Failed(format!("Failed to connect to the system bus: {e}")))?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| CtlError::from_zbus("Failed to create a proxy", e))?;
        Ok(Client { conn, manager })
    }

    /// `ListSockets()`.
    pub async fn list(&self) -> Result<Vec<SocketSummary>, CtlError> {
        let rows = self
            .manager
            .list_sockets()
            .await
            .map_err(|e| CtlError::from_zbus("Failed to list sockets", e))?;
        Ok(rows
            .into_iter()
            .map(
                |(name, path, listen, distribute, running, state)| SocketSummary {
                    name,
                    path: path.to_string(),
                    listen,
                    distribute,
                    running,
                    state,
                },
            )
            .collect())
    }

    /// `Reload()`.
    pub async fn reload(&self) -> Result<(), CtlError> {
        self.manager
            .reload()
            .await
            .map_err(|e| CtlError::from_zbus("Failed to reload", e))
    }

    /// The proxy of socket `name` (`GetSocket(name)`).
    pub async fn socket(&self, name: &str) -> Result<SocketProxy<'static>, CtlError> {
        let path = self.manager.get_socket(name).await.map_err(|e| {
            let mapped = CtlError::from_zbus(&format!("Socket {name}"), e);
            match mapped {
                CtlError::NoSuchSocket(_) => {
                    CtlError::NoSuchSocket(format!("Socket {name} could not be found."))
                }
                other => other,
            }
        })?;
        SocketProxy::builder(&self.conn)
            .path(path)
            .map(|b| b.cache_properties(CacheProperties::No))
            .map_err(|e| CtlError::from_zbus("Failed to create a proxy", e))?
            .build()
            .await
            .map_err(|e| CtlError::from_zbus("Failed to create a proxy", e))
    }

    /// Every property of socket `name`.
    pub async fn status(&self, name: &str) -> Result<SocketStatus, CtlError> {
        let p = self.socket(name).await?;
        let ctx = format!("Failed to read the status of {name}");
        let err = |e| CtlError::from_zbus(&ctx, e);
        Ok(SocketStatus {
            name: p.name().await.map_err(err)?,
            path: p.inner().path().to_string(),
            listen: p.listen().await.map_err(err)?,
            distribute: p.distribute().await.map_err(err)?,
            service: p.service().await.map_err(err)?,
            state: p.state().await.map_err(err)?,
            error: p.error().await.map_err(err)?,
            sources: p.sources().await.map_err(err)?,
            mode: p.mode().await.map_err(err)?,
            unit_file: p.unit_file().await.map_err(err)?,
            // An older daemon has no Description property: show none.
            description: p.description().await.unwrap_or_default(),
            instances: {
                // An older daemon has no `Stuck`: nothing is stuck then.
                let stuck = p.stuck().await.unwrap_or_default();
                let mut v: Vec<Instance> = p
                    .instances()
                    .await
                    .map_err(err)?
                    .into_iter()
                    .map(
                        |(
                            index,
                            unit,
                            state,
                            main_pid,
                            activations,
                            failures,
                            queue_depth,
                            reason,
                        )| {
                            Instance {
                                index,
                                unit,
                                state,
                                main_pid,
                                activations,
                                failures,
                                queue_depth,
                                reason,
                                stuck_since_usec: 0,
                            }
                        },
                    )
                    .collect();
                for (index, since, _) in stuck {
                    if let Some(i) = v.iter_mut().find(|i| i.index == index) {
                        i.stuck_since_usec = since;
                    }
                }
                v
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping_and_exit_codes() {
        let e = CtlError::from_dbus(
            "x",
            "org.freedesktop.DBus.Error.ServiceUnknown",
            Some("The name org.distribute1 was not provided by any .service files"),
        );
        assert_eq!(e, CtlError::NotRunning);
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "systemd-distribute is not running (org.distribute1 has no owner on the system bus)"
        );
        let e = CtlError::from_dbus(
            "Socket web",
            "org.distribute1.Error.NoSuchSocket",
            Some("no socket config named \"web\""),
        );
        assert_eq!(e.exit_code(), 4);
        let e = CtlError::from_dbus(
            "Failed to scale web",
            "org.freedesktop.DBus.Error.AccessDenied",
            Some("Rejected send message"),
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "Failed to scale web: Access denied (only root may change systemd-distribute)"
        );
        let e = CtlError::from_dbus(
            "Failed to scale web",
            "org.freedesktop.DBus.Error.InvalidArgs",
            Some("Distribute must be at least 1"),
        );
        assert_eq!(
            e.to_string(),
            "Failed to scale web: invalid argument: Distribute must be at least 1"
        );
        assert_eq!(e.exit_code(), 1);
        let e = CtlError::from_dbus("Failed", "org.example.Odd", None);
        assert_eq!(e.to_string(), "Failed: org.example.Odd");
    }
}
