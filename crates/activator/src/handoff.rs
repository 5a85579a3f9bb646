//! Template mode, the socket hand-off: how a real `NAME@I.service` from a
//! unit file gets slot I's sockets with nothing in front of its `ExecStart=`.
//!
//! systemd cannot be told "start this unit file's instance with these fds", but
//! it gives a service's fd store (`FDSTORE=1`) to its main process as
//! `$LISTEN_FDS`/`$LISTEN_FDNAMES`, with the right `$LISTEN_PID`, and it empties
//! the store when the unit stops. So our runtime drop-in (see [`crate::template`])
//! adds `ExecStartPre=+systemd-distribute-handoff %n`: that helper runs as root
//! inside the instance's cgroup while the instance is starting, asks the
//! activator for the sockets over [`SOCKET_NAME`], and pushes them into the fd
//! store.
//!
//! The activator answers one request per connection, and only when
//! - the peer is root (the socket's directory is 0700 too),
//! - systemd says the peer process belongs to exactly the unit it asks for,
//! - that unit is an instance of a template-mode config we serve, and
//! - that unit is `activating` (whoever started it: the activator, the unit's
//!   own `Restart=`, or an admin's `systemctl start`; the slot then counts as
//!   running, its sockets unwatched).
//!
//! Everything else is refused, logged, and answered with the reason.
//!
//! Wire format (`SOCK_SEQPACKET`, one message each way): the request is the
//! unit name; the reply is the fds as `SCM_RIGHTS` with their names
//! `:`-separated ([`crate::fdpass`]), or no fds and `error: REASON`.

use crate::fdpass;
use crate::supervisor::{SystemdLink, UnitEvent};
use crate::systemd::{unit_at, unit_object_path};
use crate::template::Mode;
use nix::sys::socket::{
    accept4, bind, getsockopt, listen, recv, socket, sockopt, AddressFamily, Backlog, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Name of the helper, installed next to the daemon.
pub const HELPER_NAME: &str = "systemd-distribute-handoff";
/// The listening socket's name in the runtime directory.
pub const SOCKET_NAME: &str = "handoff";
/// Default runtime directory (the unit's `RuntimeDirectory=systemd-distribute`).
pub const DEFAULT_RUNTIME_DIR: &str = "/run/systemd-distribute";
/// A request must arrive this soon after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request (a unit name is at most 255 bytes).
const MAX_REQUEST: usize = 512;
/// Prefix of a refusal.
pub const ERROR_PREFIX: &str = "error: ";

/// The runtime directory: `$RUNTIME_DIRECTORY` (set by systemd from
/// `RuntimeDirectory=`), else [`DEFAULT_RUNTIME_DIR`].
pub fn runtime_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .map(|v| {
            // Several directories are `:`-separated; ours is the first.
            let s = v.to_string_lossy().into_owned();
            PathBuf::from(s.split(':').next().unwrap_or(DEFAULT_RUNTIME_DIR))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIME_DIR))
}

/// Binds the hand-off socket at `dir/`[`SOCKET_NAME`]: the directory 0700 and
/// the socket 0600, so only root can connect at all.
pub fn bind_socket(dir: &Path) -> io::Result<(OwnedFd, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join(SOCKET_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(&path)?;
    bind(fd.as_raw_fd(), &addr)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listen(&fd, Backlog::new(64).unwrap_or(Backlog::MAXCONN))?;
    Ok((fd, path))
}

/// Registration-only wrapper so an `OwnedFd` can live in an `AsyncFd`.
struct Conn(OwnedFd);

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Accepts hand-off requests forever (one task per connection).
pub async fn serve(listener: OwnedFd, shared: Rc<SystemdLink>) {
    // SAFETY: `Conn` owns the fd, so it stays open and the same for the
    // `AsyncFd`'s whole life.
    let listener =
        match unsafe { AsyncFd::register_with_interest(Conn(listener), Interest::READABLE) } {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "cannot watch the hand-off socket: {}; template units get no sockets",
                    e
                );
                return;
            }
        };
    loop {
        let mut guard = match listener.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("hand-off socket: {e}");
                return;
            }
        };
        match accept4(
            listener.get_ref().as_raw_fd(),
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        ) {
            Ok(raw) => {
                // SAFETY: accept4 just returned this fd; we own it.
                let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                let shared = shared.clone();
                tokio::task::spawn_local(async move { answer(conn, &shared).await });
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => {
                tracing::warn!("hand-off socket: accept: {e}");
                guard.clear_ready();
            }
        }
    }
}

/// Who asked, as the kernel and systemd see it.
struct Peer {
    pid: i32,
    uid: u32,
}

async fn answer(conn: OwnedFd, shared: &SystemdLink) {
    let peer = match getsockopt(&conn, sockopt::PeerCredentials) {
        Ok(c) => Peer {
            pid: c.pid(),
            uid: c.uid(),
        },
        Err(e) => {
            tracing::warn!("hand-off request: cannot read the peer's credentials: {e}");
            return;
        }
    };
    // SAFETY: as for the listener, `Conn` owns the fd.
    let conn = match unsafe { AsyncFd::register_with_interest(Conn(conn), Interest::READABLE) } {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("hand-off request: {e}");
            return;
        }
    };
    let request = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!("hand-off request of PID {}: {e}", peer.pid);
            return;
        }
        Err(_) => {
            tracing::warn!(
                "hand-off request of PID {}: nothing asked within {REQUEST_TIMEOUT:?}",
                peer.pid
            );
            return;
        }
    };
    let fd = conn.get_ref().0.as_fd();
    match decide(shared, &peer, &request).await {
        Ok(grant) => {
            // Its own sockets and the shared companions, in config order.
            let companions = match crate::supervisor::companion_fds(&grant.slot) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{request}: dup: {e}");
                    return;
                }
            };
            let fds: Vec<BorrowedFd<'_>> =
                crate::supervisor::instance_fds(&grant.spec, &grant.slot, &companions);
            let names = vec![grant.fd_name.clone(); fds.len()];
            match fdpass::send(fd, &fds, &names) {
                Ok(()) => {
                    tracing::info!(
                        "{request}: handed {} socket(s) to PID {} for the fd store",
                        fds.len(),
                        peer.pid
                    );
                    shared.route(&request, UnitEvent::HandedOff);
                }
                Err(e) => tracing::warn!("{request}: sending the sockets to PID {}: {e}", peer.pid),
            }
        }
        Err(reason) => {
            tracing::warn!(
                "refused the socket request of PID {} (uid {}) for {request:?}: {reason}",
                peer.pid,
                peer.uid
            );
            let msg = format!("{ERROR_PREFIX}{reason}");
            let _ = nix::sys::socket::send(fd.as_raw_fd(), msg.as_bytes(), MsgFlags::empty());
        }
    }
}

async fn read_request(conn: &AsyncFd<Conn>) -> io::Result<String> {
    let mut buf = [0u8; MAX_REQUEST];
    loop {
        let mut guard = conn.readable().await?;
        match recv(conn.get_ref().as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return Err(io::Error::other("closed before asking")),
            Ok(n) => {
                let text = std::str::from_utf8(&buf[..n])
                    .map_err(|_| io::Error::other("request is not UTF-8"))?;
                return Ok(text.trim().to_string());
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a granted request gets.
struct Grant {
    slot: Rc<crate::supervisor::Slot>,
    spec: Rc<distribute_config::SocketSpec>,
    fd_name: String,
}

/// The checks of the module docs, in order; the first that fails is the reason.
async fn decide(shared: &SystemdLink, peer: &Peer, unit: &str) -> Result<Grant, String> {
    if peer.uid != 0 {
        return Err(format!(
            "the requesting process runs as uid {}, and only root may ask",
            peer.uid
        ));
    }
    let Some((slot, spec)) = shared.instance(unit) else {
        return Err(format!(
            "{unit} is not an instance of any config served by systemd-distribute"
        ));
    };
    if !matches!(*slot.common.mode.borrow(), Mode::Template { .. }) {
        return Err(format!(
            "{unit} is a transient instance; it gets its sockets when the activator starts it"
        ));
    }
    let manager = shared.manager();
    let conn = manager.inner().connection().clone();
    let path = manager
        .get_unit_by_pid(peer.pid as u32)
        .await
        .map_err(|e| format!("systemd does not know PID {}: {e}", peer.pid))?;
    // Object paths are the escaped unit names: equal paths, same unit, and
    // the name is only asked for to say whose process it is.
    let ours = path.as_str() == unit_object_path(unit);
    let proxy = unit_at(&conn, path).await.map_err(|e| e.to_string())?;
    if !ours {
        let actual = proxy.id().await.map_err(|e| e.to_string())?;
        return Err(format!(
            "PID {} belongs to {actual}, not to {unit}: only a process of the instance itself \
             may ask for its sockets",
            peer.pid
        ));
    }
    let state = proxy.active_state().await.map_err(|e| e.to_string())?;
    if state != "activating" {
        return Err(format!(
            "{unit} is {state}, not starting: sockets are handed over only while an instance \
             starts (ExecStartPre=)"
        ));
    }
    let spec = spec.borrow().clone();
    let fd_name = spec.fd_name();
    Ok(Grant {
        slot,
        spec,
        fd_name,
    })
}

/// The helper's side: asks the activator at `socket` for the sockets of
/// `unit`; returns them with their names, or the activator's refusal.
pub fn request(socket: &Path, unit: &str) -> Result<Vec<(OwnedFd, String)>, String> {
    let fd = socket_client().map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    nix::sys::socket::connect(fd.as_raw_fd(), &addr).map_err(|e| {
        format!(
            "cannot reach systemd-distribute at {} ({e}); is systemd-distribute.service running?",
            socket.display()
        )
    })?;
    nix::sys::socket::send(fd.as_raw_fd(), unit.as_bytes(), MsgFlags::empty())
        .map_err(|e| format!("sending the request: {e}"))?;
    match fdpass::receive(fd.as_fd()) {
        Ok(fds) => Ok(fds),
        Err(e) => Err(refusal(&e.to_string())),
    }
}

fn socket_client() -> nix::Result<OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// A reply without fds carries the refusal's text; `fdpass::receive` reports it
/// as an error message, which this turns back into the activator's words.
fn refusal(err: &str) -> String {
    err.split_once(ERROR_PREFIX)
        .map(|(_, r)| r.to_string())
        .unwrap_or_else(|| format!("no sockets in the reply: {err}"))
}
