//! Messages to systemd's `$NOTIFY_SOCKET` that never block the event loop.
//!
//! `sd_notify::notify()` sends on a blocking datagram socket: when systemd's
//! notify socket queue is full (PID 1 busy, thousands of units notifying), the
//! send blocks, and with it the activator's single thread: no instance starts,
//! no D-Bus call is answered. Here every message goes through one queue, in
//! order (an `FDSTOREREMOVE=1` must not overtake the `FDSTORE=1` it undoes,
//! nor a `BARRIER=1` the messages it waits for), on a non-blocking socket
//! connected to systemd's, so `poll()` reports when systemd's queue has room
//! again. A message that systemd does not take within [`SEND_TIMEOUT`] is
//! dropped and logged, naming the fd it carried.
//!
//! `sd-notify`'s [`NotifyState`] still formats the lines.

use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use sd_notify::NotifyState;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// How long one message may wait for room in systemd's notify socket queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Where `$NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A path in the file system.
    Path(PathBuf),
    /// An abstract socket: `@name` in the variable, the name without `@`.
    Abstract(Vec<u8>),
}

impl Address {
    /// Parses `$NOTIFY_SOCKET` as systemd sets it (`/run/systemd/notify`, or
    /// `@name` for an abstract socket). `None` for anything else (empty,
    /// relative: `sd_notify(3)` ignores those too).
    pub fn parse(value: &OsStr) -> Option<Address> {
        let bytes = value.as_bytes();
        match bytes.first()? {
            b'/' => Some(Address::Path(PathBuf::from(value))),
            b'@' if bytes.len() > 1 => Some(Address::Abstract(bytes[1..].to_vec())),
            _ => None,
        }
    }

    fn to_unix_addr(&self) -> nix::Result<UnixAddr> {
        match self {
            Address::Path(p) => UnixAddr::new(p.as_path()),
            Address::Abstract(name) => UnixAddr::new_abstract(name),
        }
    }
}

/// The message for `states`, one `KEY=value` line each.
pub fn format(states: &[NotifyState<'_>]) -> String {
    let mut msg = String::new();
    for s in states {
        msg.push_str(&s.to_string());
        msg.push('\n');
    }
    msg
}

/// What a message is, for the log: its lines joined, `FDNAME=` included.
pub fn describe(msg: &str) -> String {
    msg.lines().collect::<Vec<_>>().join(" ")
}

struct Pending {
    msg: String,
    fds: Vec<OwnedFd>,
}

#[derive(Default)]
struct Notifier {
    /// Connected, non-blocking; made on first use, again after an error.
    socket: Option<OwnedFd>,
    queue: VecDeque<Pending>,
    /// A task is waiting for room in systemd's queue and sends the rest.
    flushing: bool,
}

thread_local! {
    static NOTIFIER: RefCell<Notifier> = RefCell::new(Notifier::default());
}

fn connect_socket() -> std::io::Result<Option<OwnedFd>> {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(None);
    };
    let Some(addr) = Address::parse(&value) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("$NOTIFY_SOCKET={value:?} is neither an absolute path nor @abstract"),
        ));
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    connect(fd.as_raw_fd(), &addr.to_unix_addr()?)?;
    Ok(Some(fd))
}

/// One non-blocking send. `Ok(true)`: sent; `Ok(false)`: systemd's queue is full.
fn try_send(fd: BorrowedFd<'_>, p: &Pending) -> std::io::Result<bool> {
    let raw: Vec<i32> = p.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(p.msg.as_bytes())];
    match sendmsg::<()>(
        fd.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(n) if n == p.msg.len() => Ok(true),
        Ok(n) => Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("sent {n} of {} bytes", p.msg.len()),
        )),
        Err(nix::errno::Errno::EAGAIN) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sends what is queued, in order, without waiting. Returns the socket to
/// wait on if systemd's queue is full and something is left.
fn send_queued(n: &mut Notifier) -> Option<OwnedFd> {
    while let Some(p) = n.queue.front() {
        if n.socket.is_none() {
            match connect_socket() {
                Ok(Some(fd)) => n.socket = Some(fd),
                Ok(None) => {
                    n.queue.clear();
                    return None;
                }
                Err(e) => {
                    tracing::warn!("{} not sent: $NOTIFY_SOCKET: {e}", describe(&p.msg));
                    n.queue.pop_front();
                    continue;
                }
            }
        }
        let fd = n.socket.as_ref().expect("connected above");
        match try_send(fd.as_fd(), p) {
            Ok(true) => {
                n.queue.pop_front();
            }
            Ok(false) => return fd.try_clone().ok(),
            Err(e) => {
                // systemd re-executed (the peer is gone): connect again next
                // time. This message is lost, and said so.
                tracing::warn!("{} not sent to $NOTIFY_SOCKET: {e}", describe(&p.msg));
                n.socket = None;
                n.queue.pop_front();
            }
        }
    }
    None
}

/// Queues `states` (with `fds` attached, duplicated) for `$NOTIFY_SOCKET` and
/// sends what it can now. Never blocks; a no-op without `$NOTIFY_SOCKET`.
pub fn send(states: &[NotifyState<'_>], fds: &[BorrowedFd<'_>]) {
    send_owned(
        states,
        fds.iter().filter_map(|fd| {
            fd.try_clone_to_owned()
                .map_err(|e| tracing::warn!("duplicating an fd for $NOTIFY_SOCKET: {e}"))
                .ok()
        }),
    )
}

/// [`send`] with fds whose ownership moves into the message (closed once sent).
pub fn send_owned(states: &[NotifyState<'_>], fds: impl IntoIterator<Item = OwnedFd>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let wait_on = NOTIFIER.with_borrow_mut(|n| {
        n.queue.push_back(Pending {
            msg: format(states),
            fds: fds.into_iter().collect(),
        });
        if n.flushing {
            return None;
        }
        let fd = send_queued(n)?;
        n.flushing = true;
        Some(fd)
    });
    if let Some(fd) = wait_on {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::task::spawn_local(flush(fd));
        } else {
            NOTIFIER.with_borrow_mut(|n| {
                n.flushing = false;
                for p in n.queue.drain(..) {
                    tracing::warn!(
                        "{} not sent: systemd's notify socket queue is full",
                        describe(&p.msg)
                    );
                }
            });
        }
    }
}

/// Waits for room in systemd's queue and sends the rest, each message at
/// most [`SEND_TIMEOUT`].
async fn flush(fd: OwnedFd) {
    // SAFETY: the AsyncFd owns `fd` (a duplicate of the notifier's socket)
    // for its whole life.
    let watch = match unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE)
    } {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("cannot watch $NOTIFY_SOCKET: {e}");
            None
        }
    };
    loop {
        if let Some(w) = &watch {
            match tokio::time::timeout(SEND_TIMEOUT, w.writable()).await {
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(_)) | Err(_) => {
                    // Nothing moved for SEND_TIMEOUT: drop the head, so one
                    // stuck message cannot hold back the rest forever.
                    NOTIFIER.with_borrow_mut(|n| {
                        if let Some(p) = n.queue.pop_front() {
                            tracing::error!(
                                "{} not sent: systemd's notify socket took nothing for {SEND_TIMEOUT:?}{}",
                                describe(&p.msg),
                                if p.fds.is_empty() {
                                    ""
                                } else {
                                    " (the fd is not in systemd's fd store: it will not survive a restart of the activator)"
                                }
                            );
                        }
                    });
                }
            }
        }
        let done = NOTIFIER.with_borrow_mut(|n| {
            if send_queued(n).is_none() {
                n.flushing = false;
                true
            } else {
                false
            }
        });
        if done {
            return;
        }
        if watch.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Waits (at most `limit`) until every queued message is sent: before the
/// daemon exits, so the fd store is complete for the next start.
pub async fn flushed(limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while NOTIFIER.with_borrow(|n| !n.queue.is_empty()) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("exiting with messages to systemd still unsent");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse(&OsString::from("/run/systemd/notify")),
            Some(Address::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            Address::parse(&OsString::from("@/org/systemd/notify")),
            Some(Address::Abstract(b"/org/systemd/notify".to_vec()))
        );
        for bad in ["", "@", "relative/path"] {
            assert_eq!(Address::parse(&OsString::from(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn messages() {
        let msg = format(&[NotifyState::FdStore, NotifyState::FdName("web/0/1")]);
        assert_eq!(msg, "FDSTORE=1\nFDNAME=web/0/1\n");
        assert_eq!(describe(&msg), "FDSTORE=1 FDNAME=web/0/1");
        assert_eq!(format(&[NotifyState::Status("1/2 up")]), "STATUS=1/2 up\n");
    }

    /// A full receiver queue: `send` returns at once, the message waits and
    /// goes out in order once there is room (abstract address, as systemd
    /// may use).
    #[tokio::test(flavor = "current_thread")]
    async fn never_blocks_and_keeps_order() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let name = format!("distribute-notify-test-{}", std::process::id());
                use std::os::linux::net::SocketAddrExt;
                use std::os::unix::net::{SocketAddr, UnixDatagram};
                let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
                let rx = UnixDatagram::bind_addr(&addr).unwrap();
                std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
                let started = std::time::Instant::now();
                // Far more than a datagram queue holds (net.unix.max_dgram_qlen: 10 to 512).
                let total = 3000;
                for i in 0..total {
                    send(&[NotifyState::Custom(&format!("X={i}"))], &[]);
                }
                assert!(started.elapsed() < Duration::from_secs(1));
                assert!(NOTIFIER.with_borrow(|n| n.flushing && !n.queue.is_empty()));
                rx.set_nonblocking(true).unwrap();
                let mut next = 0;
                let mut buf = [0u8; 64];
                while next < total {
                    match rx.recv(&mut buf) {
                        Ok(len) => {
                            assert_eq!(&buf[..len], format!("X={next}\n").as_bytes());
                            next += 1;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                flushed(Duration::from_secs(1)).await;
                std::env::remove_var("NOTIFY_SOCKET");
            })
            .await;
    }
}
