//! The sandbox's own unit files.
//!
//! The sandboxed systemd's unit path is ONLY the harness directory. It must never
//! include `/lib/systemd/system`: stock units with default dependencies pull in
//! `sysinit.target`, whose `systemd-tmpfiles-setup.service` once wiped the host's
//! /tmp and whose siblings set host sysctls. So every target that something may
//! reference is a stub here, with `DefaultDependencies=no`.

/// Stub targets that units with default dependencies (e.g. transient services)
/// order themselves against.
pub const STUB_TARGETS: &[&str] = &[
    "sysinit",
    "basic",
    "sockets",
    "shutdown",
    "network",
    "network-online",
    "multi-user",
    "timers",
    "paths",
    "slices",
    "local-fs",
    "remote-fs",
    "nss-user-lookup",
];

/// The unit systemd is booted into: the bus and the journal, nothing else.
pub const HARNESS_TARGET: &str = "[Unit]
Description=systemd-distribute test sandbox
DefaultDependencies=no
Wants=dbus.socket systemd-journald.socket
After=dbus.socket systemd-journald.socket
";

/// The system bus socket, activated like on a real system.
pub const DBUS_SOCKET: &str = "[Unit]
Description=D-Bus System Message Bus Socket (sandbox)
DefaultDependencies=no

[Socket]
ListenStream=/run/dbus/system_bus_socket
";

/// dbus-daemon with a config file that the harness writes (system config plus
/// the project's policy files).
pub fn dbus_service(config_file: &str) -> String {
    format!(
        "[Unit]
Description=D-Bus System Message Bus (sandbox)
DefaultDependencies=no
Requires=dbus.socket

[Service]
ExecStart=/usr/bin/dbus-daemon --config-file={config_file} --address=systemd: --nofork --nopidfile --systemd-activation --syslog-only
ExecReload=/usr/bin/dbus-send --print-reply --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig
"
    )
}

/// dbus-daemon configuration: the distribution's system bus config plus the
/// project's policy files.
pub fn dbus_config(policies: &[String]) -> String {
    let mut s = String::from(
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n  \
         <include>/usr/share/dbus-1/system.conf</include>\n",
    );
    for p in policies {
        s.push_str(&format!("  <include ignore_missing=\"no\">{p}</include>\n"));
    }
    s.push_str("</busconfig>\n");
    s
}

/// journald's sockets, so `journalctl -u` works inside the sandbox.
pub const JOURNALD_SOCKET: &str = "[Unit]
Description=Journal Socket (sandbox)
DefaultDependencies=no

[Socket]
ListenStream=/run/systemd/journal/stdout
ListenDatagram=/run/systemd/journal/socket
SocketMode=0666
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
Service=systemd-journald.service
";

/// journald itself. Storage is forced to volatile (see `JOURNALD_CONF`) and
/// /var/log/journal is a tmpfs in the sandbox, so the host journal is never
/// written.
pub const JOURNALD_SERVICE: &str = "[Unit]
Description=Journal Service (sandbox)
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket

[Service]
Type=notify
Sockets=systemd-journald.socket
ExecStart=/lib/systemd/systemd-journald
Restart=always
# As upstream's unit: journald (257 at least) keeps its stream connections in
# its fd store, and complains on every one without it.
FileDescriptorStoreMax=4224
";

/// Drop-in written to the sandbox's /run/systemd/journald.conf.d/.
/// `ReadKMsg=no`: /dev/kmsg is the host's (257 reads it, and every other
/// sandbox's journald writes there), so the sandbox's journal would fill up
/// with the host's kernel log.
pub const JOURNALD_CONF: &str = "[Journal]\nStorage=volatile\nRuntimeMaxUse=32M\nReadKMsg=no\n";
