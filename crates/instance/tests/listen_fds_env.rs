//! `listen_fds()` against the real process environment.
//!
//! Environment changes affect the whole process, so this file holds a single test,
//! and that test does its work in a child process: it re-runs this test binary
//! with a TCP listener at fd 3 and a UDP socket at fd 4 (and `CHILD_MARKER` set), so
//! the descriptor numbers are guaranteed to be ours.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use distribute_instance::{listen_fds, Error, SocketKind, LISTEN_FDNAMES, LISTEN_FDS, LISTEN_PID};

const CHILD_MARKER: &str = "DISTRIBUTE_INSTANCE_TEST_CHILD";

fn set(k: &str, v: &str) {
    std::env::set_var(k, v);
}

fn cloexec(fd: i32) -> bool {
    // SAFETY: plain fcntl.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags >= 0, "fd {fd} is not open");
    flags & libc::FD_CLOEXEC != 0
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: plain fcntl.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn local_port(fd: i32) -> u16 {
    // SAFETY: getsockname into a zeroed sockaddr_in of the right size.
    unsafe {
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len),
            0
        );
        u16::from_be(sa.sin_port)
    }
}

fn child() {
    let me = std::process::id().to_string();
    let tcp_port: u16 = std::env::var("TEST_TCP_PORT").unwrap().parse().unwrap();
    let udp_port: u16 = std::env::var("TEST_UDP_PORT").unwrap().parse().unwrap();
    for k in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        std::env::remove_var(k);
    }
    assert!(!cloexec(3) && !cloexec(4));

    // Not set, or not for us: nothing, and nothing taken.
    assert!(listen_fds(false).unwrap().is_empty());
    set(LISTEN_FDS, "2");
    assert!(listen_fds(false).unwrap().is_empty());
    set(LISTEN_PID, "1");
    assert!(listen_fds(false).unwrap().is_empty());

    // Malformed values are errors.
    set(LISTEN_PID, "12abc");
    assert!(matches!(listen_fds(false), Err(Error::InvalidPid(_))));
    set(LISTEN_PID, &me);
    set(LISTEN_FDS, "two");
    assert!(matches!(listen_fds(false), Err(Error::InvalidFds(_))));
    set(LISTEN_FDS, "2");
    set(LISTEN_FDNAMES, "web");
    assert!(matches!(
        listen_fds(false),
        Err(Error::NameCount { names: 1, fds: 2 })
    ));
    if !fd_is_open(5) {
        std::env::remove_var(LISTEN_FDNAMES);
        set(LISTEN_FDS, "3");
        match listen_fds(false) {
            Err(Error::BadFd { fd: 5, .. }) => {}
            other => panic!("expected BadFd for fd 5, got {other:?}"),
        }
    }

    // The real thing, keeping the environment.
    set(LISTEN_FDS, "2");
    set(LISTEN_FDNAMES, "web:dns");
    let fds = listen_fds(false).unwrap();
    assert_eq!(fds.len(), 2);
    assert_eq!(
        (fds[0].fd.as_raw_fd(), fds[0].name.as_str(), fds[0].kind),
        (3, "web", SocketKind::Stream)
    );
    assert_eq!(
        (fds[1].fd.as_raw_fd(), fds[1].name.as_str(), fds[1].kind),
        (4, "dns", SocketKind::Datagram)
    );
    assert_eq!(local_port(3), tcp_port);
    assert_eq!(local_port(4), udp_port);
    assert!(cloexec(3) && cloexec(4), "FD_CLOEXEC not set");
    assert_eq!(std::env::var(LISTEN_FDS).as_deref(), Ok("2"));

    // The descriptors have one owner: a second call fails, and unsets the env.
    assert!(matches!(listen_fds(true), Err(Error::AlreadyTaken)));
    for k in [LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES] {
        assert!(std::env::var_os(k).is_none(), "{k} still set");
    }
    assert!(listen_fds(true).unwrap().is_empty());

    drop(fds);
    assert!(
        !fd_is_open(3) && !fd_is_open(4),
        "dropping ListenFd closes the fd"
    );
}

#[test]
fn listen_fds_from_environment() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        child();
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = common::activated_command(
        exe.to_str().unwrap(),
        &[
            "listen_fds_from_environment",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ],
        &[l.as_fd(), u.as_fd()],
    )
    .env(CHILD_MARKER, "1")
    .env("TEST_TCP_PORT", l.local_addr().unwrap().port().to_string())
    .env("TEST_UDP_PORT", u.local_addr().unwrap().port().to_string())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut out);
    }
    let err = common::stderr_of(&mut child);
    assert!(status.success(), "child failed: {status:?}\n{out}\n{err}");
    assert!(out.contains("1 passed"), "child ran no test:\n{out}\n{err}");
}
