//! The slice of systemd's D-Bus API we use, as zbus proxies.
//!
//! Only the methods and signals the activator calls are declared, so the
//! surface we depend on is visible at a glance.

use zbus::proxy;
use zbus::zvariant::{OwnedObjectPath, Value};

/// A property of a transient unit, as `StartTransientUnit` takes it (`(sv)`).
pub type Property<'a> = (&'a str, Value<'a>);

/// `org.freedesktop.systemd1.Manager`.
#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub trait Manager {
    /// Enables `UnitNew`/`UnitRemoved`/`JobRemoved` for this client.
    fn subscribe(&self) -> zbus::Result<()>;

    /// Creates and starts a transient unit.
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[Property<'_>],
        aux: &[(&str, &[Property<'_>])],
    ) -> zbus::Result<OwnedObjectPath>;

    /// Starts a unit (template mode: the unit file's own instance).
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `systemctl daemon-reload`: makes systemd see our runtime drop-ins.
    /// Returns once the reload is done.
    fn reload(&self) -> zbus::Result<()>;

    /// Stops a unit.
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// `KillUnit(name, whom, signal)`.
    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    /// Forgets a unit's failed state so it can be garbage-collected.
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    /// Unit files matching `patterns` as (path, enablement state); used to find
    /// an on-disk `NAME@.service` template: systemd refuses to start transient
    /// instances of a template that has a unit file (`UnitExists`).
    fn list_unit_files_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<(String, String)>>;

    /// The unit a process belongs to.
    #[zbus(name = "GetUnitByPID")]
    fn get_unit_by_pid(&self, pid: u32) -> zbus::Result<OwnedObjectPath>;

    /// The object path of a loaded unit (error `NoSuchUnit` otherwise).
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// Loads a unit (from its unit file, if any) and returns its object path.
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// Sent when a unit is unloaded, e.g. a transient unit garbage-collected
    /// after it became inactive or failed.
    #[zbus(signal)]
    fn unit_removed(&self, id: String, unit: OwnedObjectPath) -> zbus::Result<()>;

    /// Sent when a job finishes; `result` is `done`, `failed`, `canceled`, ...
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;

    /// systemd's version string, e.g. `252.38-1~deb12u1`.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.systemd1.Unit`, for the state of one instance.
#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Unit {
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, ...
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;

    /// The unit's pending job: (id, path); id 0 if none.
    #[zbus(property)]
    fn job(&self) -> zbus::Result<(u32, OwnedObjectPath)>;

    /// The unit file it was loaded from (`/run/systemd/transient/…` for ours).
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;

    /// Its drop-in files, in the order systemd applies them.
    #[zbus(property)]
    fn drop_in_paths(&self) -> zbus::Result<Vec<String>>;

    /// The unit's name, e.g. `web@0.service`.
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
}

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
#[cfg(test)]
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

/// systemd's object path for a unit: `/org/freedesktop/systemd1/unit/` plus
/// its name escaped with [`escape_label`] (so `1web@0.service` is
/// `…/unit/_31web_400_2eservice`: a leading digit is escaped too).
pub fn unit_object_path(unit: &str) -> String {
    format!("/org/freedesktop/systemd1/unit/{}", escape_label(unit))
}

/// A `Unit` proxy for `path` that asks systemd on every read: states change
/// under us, and a cached value would be stale (and caching subscribes to
/// every change of that unit).
pub async fn unit_at(
    conn: &zbus::Connection,
    path: OwnedObjectPath,
) -> zbus::Result<UnitProxy<'static>> {
    UnitProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .path(path)?
        .build()
        .await
}

/// The major version from systemd's `Version` property (`252.38-1~deb12u1` → 252).
pub fn major_version(version: &str) -> Option<u32> {
    let digits: String = version
        .trim_start_matches('v')
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// First systemd release whose `ExtraFileDescriptors=` passes fds natively.
pub const EXTRA_FDS_SINCE: u32 = 257;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions() {
        for (input, want) in [
            ("252.38-1~deb12u1", Some(252)),
            ("257", Some(257)),
            ("v258-rc1", Some(258)),
            ("", None),
            ("abc", None),
        ] {
            assert_eq!(major_version(input), want, "{input:?}");
        }
    }
}

/// `org.freedesktop.systemd1.Service`, for the main PID of an instance.
#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Service {
    /// PID of the instance's main process, 0 if none.
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;

    /// `FileDescriptorStoreMax=` (of our own unit: how many sockets we may store).
    #[zbus(property)]
    fn file_descriptor_store_max(&self) -> zbus::Result<u32>;

    /// The instance's cgroup, relative to the cgroup2 mount ("" if none).
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.systemd1.Job`, to tell a stop from a restart of ourselves.
#[proxy(
    interface = "org.freedesktop.systemd1.Job",
    default_service = "org.freedesktop.systemd1",
    gen_blocking = false
)]
pub trait Job {
    /// `start`, `stop`, `restart`, ...
    #[zbus(property)]
    fn job_type(&self) -> zbus::Result<String>;
}

/// systemd's well-known bus name.
pub const SYSTEMD_BUS_NAME: &str = "org.freedesktop.systemd1";
/// The bus driver's name, which dbus-daemon puts in the sender field of its
/// own messages (no client can).
const BUS_DRIVER: &str = "org.freedesktop.DBus";

/// Who may tell us about units: the unique name that currently owns
/// `org.freedesktop.systemd1`.
///
/// Signals can be sent by anyone, also unicast to our unique name, and a
/// match on a well-known sender cannot be checked by the receiver (zbus lets
/// such messages through): without this, any local user could send us an
/// `ActiveState=failed` for an instance and have it given up. The bus fills
/// in the real sender of every message, so comparing it with the owner of
/// the name is enough; the owner is followed through `NameOwnerChanged`
/// (daemon-reexec, a systemd restart in a container).
#[derive(Clone, Default)]
pub struct SystemdOwner(std::rc::Rc<std::cell::RefCell<Option<String>>>);

impl SystemdOwner {
    /// Starts following the owner on `conn` (on the current `LocalSet`).
    pub async fn follow(conn: &zbus::Connection) -> zbus::Result<SystemdOwner> {
        use futures_util::StreamExt;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        // Subscribe first, then ask: no change can slip in between.
        let mut changes = dbus
            .receive_name_owner_changed_with_args(&[(0, SYSTEMD_BUS_NAME)])
            .await?;
        let owner = SystemdOwner::default();
        let name = zbus::names::BusName::try_from(SYSTEMD_BUS_NAME)?;
        match dbus.get_name_owner(name).await {
            Ok(unique) => owner.set(Some(unique.to_string())),
            Err(e) => tracing::warn!("GetNameOwner({SYSTEMD_BUS_NAME}): {e}"),
        }
        let following = owner.clone();
        tokio::task::spawn_local(async move {
            while let Some(signal) = changes.next().await {
                if signal.message().header().sender().map(|s| s.as_str()) != Some(BUS_DRIVER) {
                    continue; // a forged NameOwnerChanged
                }
                if let Ok(args) = signal.args() {
                    if args.name().as_str() == SYSTEMD_BUS_NAME {
                        let new = args.new_owner().as_ref().map(|n| n.to_string());
                        tracing::info!("{SYSTEMD_BUS_NAME} is now owned by {new:?}");
                        following.set(new);
                    }
                }
            }
        });
        Ok(owner)
    }

    fn set(&self, owner: Option<String>) {
        *self.0.borrow_mut() = owner;
    }

    /// Whether the current owner of `org.freedesktop.systemd1` sent `msg`.
    pub fn sent(&self, msg: &zbus::Message) -> bool {
        let header = msg.header();
        let owner = self.0.borrow();
        matches!((header.sender(), owner.as_deref()), (Some(s), Some(o)) if s.as_str() == o)
    }
}
