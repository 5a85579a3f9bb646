//! Copied systemd socket units: a `.socket` file as a distribution ships it
//! (`[Unit]`, `[Install]`, a TCP port next to an AF_UNIX socket, systemd's
//! per-socket options), copied into the config directory with `Distribute=`
//! added. Ports: `port(110)` to `port(119)`.

use distribute_tests::{addr, fire, parse_hello, port, tally, Activator, Hello};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The copied unit: `@PORT@` and `@BIN@` are filled in.
const COPIED: &str = "# web.socket as a package ships it, plus Distribute=4 and [Service]
[Unit]
Description=Copied web front end
Documentation=man:distribute-hello(1)
Before=sockets.target
After=network.target
Wants=network.target

[Socket]
ListenStream=127.0.0.1:@PORT@
ListenStream=/run/copied/web.sock
SocketUser=nobody
SocketGroup=nogroup
SocketMode=0660
DirectoryMode=0750
RemoveOnStop=yes
Symlinks=/run/copied-web.sock
FileDescriptorName=web
ReusePort=yes
Distribute=4
NoDelay=yes
KeepAlive=yes
KeepAliveTimeSec=77
KeepAliveIntervalSec=11
KeepAliveProbes=4
IPTOS=low-delay
IPTTL=42
Mark=7
Priority=3
TCPCongestion=reno
#DeferAcceptSec=5

[Service]
ExecStart=@BIN@/distribute-hello --idle-timeout 30s --show-env LISTEN_FDNAMES
DynamicUser=yes

[Install]
WantedBy=sockets.target
";

/// `GET /` over the AF_UNIX socket at `path` (a host path into the sandbox).
fn get_hello_unix(path: &Path) -> anyhow::Result<(Hello, String)> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok((parse_hello(&resp)?, resp))
}

/// An int socket option of fd `fd` of process `pid` (host PIDs), read through
/// a copy of the fd (pidfd_getfd, as root).
fn remote_sockopt(pid: i32, fd: i32, level: i32, name: i32) -> i32 {
    // SAFETY: plain syscalls; the returned fds are closed below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        assert!(
            copy >= 0,
            "pidfd_getfd({pid}, {fd}): {}",
            std::io::Error::last_os_error()
        );
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = libc::getsockopt(
            copy,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        );
        assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
        libc::close(copy);
        libc::close(pidfd);
        v
    }
}

#[test]
fn copied_unit_with_tcp_and_unix_listeners_serves_both() {
    let p = port(110);
    let text = COPIED.replace("@PORT@", &p.to_string());
    let Some(a) = Activator::start("copied-unit", &[]) else {
        return;
    };
    a.write_config("web", &text);
    a.reload();
    let sock = a.sb.host_path("/run/copied/web.sock");
    println!("systemd {}", a.sb.systemd_version());

    // Owner, mode and directory as configured, and the symlink.
    let meta = std::fs::metadata(&sock).unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert_eq!(meta.mode() & 0o7777, 0o660, "SocketMode=");
    assert_eq!(meta.uid(), 65534, "SocketUser=nobody");
    assert_eq!(meta.gid(), 65534, "SocketGroup=nogroup");
    let dir = std::fs::metadata(a.sb.host_path("/run/copied")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750, "DirectoryMode=");
    assert_eq!(
        std::fs::read_link(a.sb.host_path("/run/copied-web.sock")).unwrap(),
        Path::new("/run/copied/web.sock"),
        "Symlinks="
    );
    // The [Unit] section's notices, once.
    a.assert_logged("Before=, After=, Wants= ignored: a config is not a unit");
    a.assert_logged("WantedBy= ignored: configs are not enabled one by one");

    // Nothing runs: a connection on the unix socket starts instance 0.
    assert!(
        a.instances("web@*").is_empty(),
        "{:?}",
        a.instances("web@*")
    );
    let (first, resp) =
        get_hello_unix(&sock).unwrap_or_else(|e| panic!("unix: {e:#}\n{}", a.log()));
    println!("over the unix socket: {first:?}");
    assert_eq!(first.instance, "0", "{resp}");
    // Its own TCP socket and the shared unix one, in config order, one name.
    assert!(resp.contains("LISTEN_FDNAMES=web:web"), "{resp}");
    assert_eq!(
        a.unit_property("web@0.service", "Description"),
        "Copied web front end, instance 0 (systemd-distribute)"
    );

    // TCP spreads over the four instances.
    let (hellos, failures) = fire(addr(p), 8, 50, Duration::ZERO);
    let t = tally(&hellos);
    println!("400 TCP connections: {failures}; {t:?}");
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert_eq!(t.keys().cloned().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    // With every instance running, the unix socket still reaches one.
    for _ in 0..8 {
        let (h, _) = get_hello_unix(&sock).expect("unix while all run");
        assert!(["0", "1", "2", "3"].contains(&h.instance.as_str()), "{h:?}");
    }

    // The socket options, as ss and getsockopt see them (shared network
    // namespace: the host's ss sees the sandbox's sockets).
    let ss = std::process::Command::new("ss")
        .args(["-tlnpOie", "--tos", &format!("sport = :{p}")])
        .output()
        .expect("ss");
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    println!("{ss}");
    let listeners: Vec<&str> = ss.lines().filter(|l| l.starts_with("LISTEN")).collect();
    assert_eq!(
        listeners.len(),
        4,
        "one listening socket per instance:\n{ss}"
    );
    for l in &listeners {
        for want in ["fwmark:0x7", "reno", "tos:0x10"] {
            assert!(l.contains(want), "{want} missing in {l}");
        }
    }
    let (pid, fd) = {
        let l = listeners[0];
        let pid = l
            .split("pid=")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap();
        let fd = l
            .split("fd=")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .unwrap();
        (pid.parse::<i32>().unwrap(), fd.parse::<i32>().unwrap())
    };
    for (level, name, want, what) in [
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            77,
            "KeepAliveTimeSec=",
        ),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            11,
            "KeepAliveIntervalSec=",
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4, "KeepAliveProbes="),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1, "NoDelay="),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1, "KeepAlive="),
        (libc::IPPROTO_IP, libc::IP_TTL, 42, "IPTTL="),
        (libc::SOL_SOCKET, libc::SO_PRIORITY, 3, "Priority="),
        (libc::SOL_SOCKET, libc::SO_MARK, 7, "Mark="),
    ] {
        assert_eq!(remote_sockopt(pid, fd, level, name), want, "{what}");
    }

    // distributectl shows the description and both listeners.
    let status = a.ctl(&["status", "web"]).ok().stdout;
    assert!(
        status
            .lines()
            .next()
            .unwrap()
            .ends_with("web - Copied web front end"),
        "{status}"
    );
    assert!(
        status.contains(&format!("ListenStream=127.0.0.1:{p}")),
        "{status}"
    );
    assert!(
        status.contains("ListenStream=/run/copied/web.sock"),
        "{status}"
    );

    // verify, on the same file, says what is used and ignored.
    let file = a.sb.inside("config/web.socket");
    let v = a.ctl(&["verify", &file]).ok();
    let want = format!(
        "{file}: transient mode: web@0.service, … are built from [Service]
  used: Description=Copied web front end
  used: Documentation=man:distribute-hello(1)
  used: ListenStream=127.0.0.1:{p}: distributed, one SO_REUSEPORT socket per instance (4 instances)
  used: ListenStream=/run/copied/web.sock: companion, bound once and shared by every instance (the kernel cannot distribute it)
  note: {file}:5: Before=, After=, Wants= ignored: a config is not a unit: systemd-distribute binds the sockets of every config when it starts, so order or pull in systemd-distribute.service instead, and put what the instances need in their own unit (a drop-in NAME@.service.d/*.conf)
  note: {file}:38: WantedBy= ignored: configs are not enabled one by one: systemd-distribute serves every config in its directories once systemd-distribute.service is enabled
"
    );
    assert_eq!(v.stdout, want);
    assert_eq!(v.stderr, "");

    // RemoveOnStop=: the files go with the daemon's stop.
    a.stop();
    assert!(!sock.exists(), "RemoveOnStop=yes");
    assert!(std::fs::symlink_metadata(a.sb.host_path("/run/copied-web.sock")).is_err());
}

#[test]
fn a_config_with_only_unix_listeners_is_refused() {
    let p = port(111);
    let unix_only = "[Unit]\nDescription=Docker API\n[Socket]\nListenStream=/run/docker-copy.sock\nSocketMode=0660\nDistribute=4\n[Service]\nExecStart=/bin/true\n";
    let good = format!("[Socket]\nListenStream=127.0.0.1:{p}\n[Service]\nExecStart=/bin/true\n");
    let Some(a) = Activator::start("unix-only", &[("docker", unix_only), ("good", &good)]) else {
        return;
    };
    a.assert_logged("ListenStream=/run/docker-copy.sock: no TCP or UDP listener to distribute");
    a.assert_logged("use a plain systemd socket unit");
    let status = a.ctl(&["status", "docker"]);
    assert!(status.output().contains("failed"), "{status:?}");
    assert!(a
        .sb
        .host_path("/run/docker-copy.sock")
        .symlink_metadata()
        .is_err());
}

#[test]
fn template_mode_instances_get_the_companion_through_the_hand_off() {
    let p = port(112);
    let Some(a) = Activator::start("copied-template", &[]) else {
        return;
    };
    let unit = "[Unit]\nDescription=companion template %i\n[Service]\nType=notify\n\
                ExecStart=@BIN@/distribute-hello --notify --idle-timeout 30s --show-env LISTEN_FDNAMES\n\
                Environment=DISTRIBUTE_INSTANCE=%i\nDynamicUser=yes\n"
        .replace("@BIN@", &a.bin);
    a.sb.install_unit("tplc@.service", &unit).unwrap();
    a.write_config(
        "tplc",
        &format!(
            "[Unit]\nDescription=copied, template mode\n[Socket]\nListenStream=/run/tplc/app.sock\n\
             ListenStream=127.0.0.1:{p}\nDistribute=2\nService=tplc@.service\n[Install]\nWantedBy=sockets.target\n"
        ),
    );
    a.reload();
    let dropin = std::fs::read_to_string(
        a.sb.host_path("/run/systemd/system/tplc@.service.d/99-systemd-distribute.conf"),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", a.log()));
    assert!(dropin.contains("\nFileDescriptorStoreMax=2\n"), "{dropin}");

    // The unix socket first: instance 0 starts and gets both sockets, the
    // shared one first (config order).
    let sock = a.sb.host_path("/run/tplc/app.sock");
    let (h, resp) = get_hello_unix(&sock).unwrap_or_else(|e| panic!("unix: {e:#}\n{}", a.log()));
    assert_eq!(h.instance, "0", "{resp}");
    assert!(
        resp.contains("LISTEN_FDNAMES=tplc.socket:tplc.socket"),
        "{resp}"
    );
    let (hellos, failures) = fire(addr(p), 4, 25, Duration::ZERO);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    let t = tally(&hellos);
    assert_eq!(t.keys().cloned().collect::<Vec<_>>(), ["0", "1"], "{t:?}");
    let (h, _) = get_hello_unix(&sock).expect("unix with both running");
    assert!(["0", "1"].contains(&h.instance.as_str()), "{h:?}");
}
