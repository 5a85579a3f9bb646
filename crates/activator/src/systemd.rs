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
