//! The `org.distribute1` D-Bus contract, shared by the activator
//! (`systemd-distribute`, the server), `distributectl` and the integration
//! tests (clients): names, object paths and their escaping, the wire types
//! with their signatures, the client proxies and the error names. A change of
//! the API is an edit here, and the compiler finds every user.
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
//!   the properties of [`SocketInfo`] (Name, Description, Listen,
//!   Distribute, Service, State, Error, Sources, Mode, UnitFile,
//!   Instances a(ussuttus), Stuck a(uts))
//!   SetDistribute(u n)
//!   StartInstance(u index)
//!   StopInstance(u index)
//!   RestartInstance(u index)
//! ```
//!
//! `NAME` is escaped like systemd's `bus_label_escape()` ([`escape_label`]),
//! the same escaping systemd uses for its unit objects ([`unit_path`]).
//! Changes are announced with the standard `org.freedesktop.DBus.Properties.
//! PropertiesChanged` (only the properties whose values changed) plus the
//! Manager's `Socket*` signals. A change of the queue depth alone is not
//! announced: it is read live on every `Get`.
//!
//! Errors: [`Error`]. Only root may call methods that change anything
//! (`org.freedesktop.DBus.Error.AccessDenied` otherwise); anyone may read
//! properties, list and introspect.

mod error;
mod proxy;
mod types;

pub use error::Error;
pub use proxy::{ManagerProxy, SocketProxy};
pub use types::{Instance, InstanceInfo, SocketEntry, SocketInfo, StuckInstance};

use zbus::zvariant::OwnedObjectPath;

/// Well-known bus name.
pub const BUS_NAME: &str = "org.distribute1";
/// Path of the manager object.
pub const MANAGER_PATH: &str = "/org/distribute1";
/// Manager interface (at [`MANAGER_PATH`]).
pub const MANAGER_INTERFACE: &str = "org.distribute1.Manager";
/// Socket interface (at [`socket_path`]).
pub const SOCKET_INTERFACE: &str = "org.distribute1.Socket";
/// Prefix of socket object paths; the escaped name follows.
pub const SOCKET_PATH_PREFIX: &str = "/org/distribute1/socket/";
/// Prefix of systemd's unit object paths; the escaped unit name follows.
pub const SYSTEMD_UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// Escapes a name (a config's, a unit's) into one object-path label like systemd's
/// `bus_label_escape()`: ASCII letters are kept, digits too except in the first
/// position, every other byte becomes `_xx` (lowercase hex); `""` becomes `_`.
pub fn escape_label(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for (i, b) in s.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The inverse of [`escape_label`]; `None` for a label it cannot produce.
pub fn unescape_label(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = label.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The object path of `name` under `prefix` (which ends in `/`): the one place
/// that builds an object path from a name, ours ([`socket_path`]) and
/// systemd's ([`unit_path`]).
pub fn object_path(prefix: &str, name: &str) -> OwnedObjectPath {
    debug_assert!(prefix.starts_with('/') && prefix.ends_with('/'), "{prefix}");
    OwnedObjectPath::try_from(format!("{prefix}{}", escape_label(name)))
        .expect("an escaped label is a valid object path element")
}

/// Object path of the socket config `name`: `/org/distribute1/socket/` plus
/// its escaped name (`my-app` is `…/socket/my_2dapp`).
pub fn socket_path(name: &str) -> OwnedObjectPath {
    object_path(SOCKET_PATH_PREFIX, name)
}

/// systemd's object path for a unit: `/org/freedesktop/systemd1/unit/` plus
/// its escaped name (so `1web@0.service` is `…/unit/_31web_400_2eservice`: a
/// leading digit is escaped too).
pub fn unit_path(unit: &str) -> OwnedObjectPath {
    object_path(SYSTEMD_UNIT_PATH_PREFIX, unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::ObjectPath;

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
            ("1web@0.service", "_31web_400_2eservice"),
        ];
        for (name, want) in cases {
            assert_eq!(escape_label(name), want, "{name:?}");
            assert_eq!(unescape_label(want).as_deref(), Some(name), "{want:?}");
        }
        assert_eq!(unescape_label("bad_z"), None);
    }

    #[test]
    fn socket_and_unit_paths() {
        assert_eq!(
            socket_path("my-app").as_str(),
            "/org/distribute1/socket/my_2dapp"
        );
        assert_eq!(socket_path("web").as_str(), "/org/distribute1/socket/web");
        assert_eq!(
            unit_path("1web@0.service").as_str(),
            "/org/freedesktop/systemd1/unit/_31web_400_2eservice"
        );
    }

    #[test]
    fn every_label_makes_a_valid_path() {
        for name in ["a", "-", "..", "a b", "x@y", "0", "\u{1f600}", "UPPER"] {
            let p = format!("{SOCKET_PATH_PREFIX}{}", escape_label(name));
            assert!(ObjectPath::try_from(p.as_str()).is_ok(), "{p}");
        }
    }

    #[test]
    fn proxies_name_the_interfaces() {
        use zbus::proxy::Defaults;
        assert_eq!(
            ManagerProxy::INTERFACE.as_ref().unwrap().as_str(),
            MANAGER_INTERFACE
        );
        assert_eq!(
            ManagerProxy::DESTINATION.as_ref().unwrap().as_str(),
            BUS_NAME
        );
        assert_eq!(ManagerProxy::PATH.as_ref().unwrap().as_str(), MANAGER_PATH);
        assert_eq!(
            SocketProxy::INTERFACE.as_ref().unwrap().as_str(),
            SOCKET_INTERFACE
        );
        assert_eq!(
            SocketProxy::DESTINATION.as_ref().unwrap().as_str(),
            BUS_NAME
        );
    }
}
