//! The client side of `org.distribute1`: proxies and what D-Bus errors mean
//! to an operator.

use distribute_dbus::{ManagerProxy, SocketInfo};
pub use distribute_dbus::{SocketEntry as SocketSummary, SocketProxy};
use serde::Serialize;
use std::fmt;
use std::ops::Deref;
use zbus::proxy::CacheProperties;
use zbus::Connection;

/// Everything about one socket config: its object path and properties.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SocketStatus {
    /// Object path.
    pub path: String,
    /// The properties.
    #[serde(flatten)]
    pub info: SocketInfo,
}

impl Deref for SocketStatus {
    type Target = SocketInfo;
    fn deref(&self) -> &SocketInfo {
        &self.info
    }
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
        let no_such_socket = distribute_dbus::Error::NoSuchSocket(String::new());
        match name {
            "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner" => CtlError::NotRunning,
            n if n == zbus::DBusError::name(&no_such_socket).as_str()
                || n == "org.freedesktop.DBus.Error.UnknownObject" =>
            {
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
        Ok(rows)
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

    /// Every property of socket `name` (`GetAll`).
    pub async fn status(&self, name: &str) -> Result<SocketStatus, CtlError> {
        let p = self.socket(name).await?;
        let info = p
            .properties()
            .await
            .map_err(|e| CtlError::from_zbus(&format!("Failed to read the status of {name}"), e))?;
        Ok(SocketStatus {
            path: p.inner().path().to_string(),
            info,
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
