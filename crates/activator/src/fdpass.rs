//! Handing a set of listening sockets to an instance on systemd < 257.
//!
//! systemd 252 can pass exactly one fd to a transient service
//! (`StandardInputFileDescriptor`). To give an instance any number of sockets,
//! the activator passes one end of a `SOCK_SEQPACKET` socketpair there, after
//! queueing a single message on it: the fds as `SCM_RIGHTS` and their names,
//! `:`-separated like `$LISTEN_FDNAMES`. The exec shim
//! (`systemd-distribute-exec`) receives that message on fd 0, moves the fds to
//! 3.., sets the sd_listen_fds variables and execs the real program in place,
//! so `$LISTEN_PID` matches and unmodified socket-activated daemons work.
//! The message sits in the socket buffer until the shim reads it, so nothing
//! races with systemd forking the service.
//!
//! The template-unit hand-off (`handoff`) uses the same message on its
//! connections.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The kernel's limit on fds in one `SCM_RIGHTS` message (`SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Largest names payload we send (names are <= 255 bytes each).
const MAX_PAYLOAD: usize = MAX_FDS * 256;

/// Queues `fds` with `names` on a fresh socketpair and returns the end to give
/// to the instance (on its fd 0).
pub fn package(fds: &[BorrowedFd<'_>], names: &[String]) -> io::Result<OwnedFd> {
    if fds.is_empty() || fds.len() > MAX_FDS || fds.len() != names.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot pass {} fds with {} names (1..={MAX_FDS})",
                fds.len(),
                names.len()
            ),
        ));
    }
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    send(ours.as_fd(), fds, names)?;
    // Dropping `ours` is fine: the queued message outlives the sending end.
    Ok(theirs)
}

/// Sends `fds` with `names` as one message on the `SOCK_SEQPACKET` socket `to`.
pub fn send(to: BorrowedFd<'_>, fds: &[BorrowedFd<'_>], names: &[String]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = names.join(":");
    let iov = [IoSlice::new(payload.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    sendmsg::<()>(to.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives what [`package`] queued: the fds (close-on-exec) and their names.
pub fn receive(from: BorrowedFd<'_>) -> io::Result<Vec<(OwnedFd, String)>> {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (fds, len) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            from.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: the kernel just installed these fds for us; we own them.
                fds.extend(r.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::other("fd message truncated (too many fds)"));
        }
        (fds, msg.bytes)
    };
    let names =
        std::str::from_utf8(&buf[..len]).map_err(|_| io::Error::other("fd names are not UTF-8"))?;
    if fds.is_empty() {
        // A message without fds is the sender's explanation (the hand-off's refusals).
        return Err(io::Error::other(format!(
            "no fds; the sender said: {names}"
        )));
    }
    let names: Vec<&str> = names.split(':').collect();
    if names.len() != fds.len() {
        return Err(io::Error::other(format!(
            "expected named fds, got {} fds and {} names",
            fds.len(),
            names.len()
        )));
    }
    Ok(fds
        .into_iter()
        .zip(names.into_iter().map(String::from))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_names() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let end = package(&[a.as_fd(), b.as_fd()], &["web".into(), "dns".into()]).unwrap();
        let got = receive(end.as_fd()).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, "web");
        assert_eq!(got[1].1, "dns");
        let got_listener = std::net::TcpListener::from(got.into_iter().next().unwrap().0);
        assert_eq!(got_listener.local_addr().unwrap(), a.local_addr().unwrap());
    }

    #[test]
    fn rejects_mismatched_names() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(package(&[a.as_fd()], &[]).is_err());
        assert!(package(&[], &[]).is_err());
    }
}
