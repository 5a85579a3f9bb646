//! Helpers shared by the integration tests: spawning an instance binary with
//! sockets passed the socket-activation way, and bounded waiting.
#![allow(dead_code)]

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Duplicates `fd` to a descriptor >= 64 with close-on-exec, so that placing the
/// copies at 3, 4, ... in the child cannot clobber one another.
fn dup_high(fd: BorrowedFd<'_>) -> OwnedFd {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
    assert!(n >= 0, "F_DUPFD_CLOEXEC: {}", io::Error::last_os_error());
    unsafe { OwnedFd::from_raw_fd(n) }
}

/// Builds a command that runs `program args...` with `fds` at 3, 4, ..., and
/// `$LISTEN_FDS` set; `$LISTEN_PID` is set to the program's own PID by exec'ing
/// through `/bin/sh` (the shell's `$$` is the PID the program keeps after exec).
pub fn activated_command(program: &str, args: &[&str], fds: &[BorrowedFd<'_>]) -> Command {
    let high: Vec<OwnedFd> = fds.iter().map(|fd| dup_high(*fd)).collect();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
        .arg(program)
        .args(args)
        .env("LISTEN_FDS", fds.len().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("DISTRIBUTE_INSTANCE")
        .env_remove("DISTRIBUTE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let raw: Vec<i32> = high.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: only async-signal-safe dup2 between fork and exec. `high` is moved
    // into the closure so the descriptors stay open until the command is dropped.
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &high;
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// Waits for `child` to exit, at most `limit`; kills it and panics on timeout.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads what the (exited) child wrote to stderr.
pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// Sends `sig` to `pid`.
pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill");
}

/// Polls `f` every 10 ms until it returns `Some`, at most `limit`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts one connection from a listener the test still holds (queued while no
/// instance was serving), waiting at most `limit`.
pub fn accept_queued(l: &std::net::TcpListener, limit: Duration) -> std::net::TcpStream {
    l.set_nonblocking(true).unwrap();
    eventually(limit, "accept a queued connection", || match l.accept() {
        Ok((s, _)) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("accept: {e}"),
    })
}
