//! `systemd-distribute-exec PROGRAM [ARGS...]`: the instance-side half of fd
//! passing on systemd < 257 (see `fdpass`). Started by systemd as the
//! instance's `ExecStart=`, it takes the listening sockets queued on fd 0,
//! puts them at fd 3.., sets `LISTEN_FDS`, `LISTEN_PID` (its own PID, which the
//! program keeps because we exec in place) and `LISTEN_FDNAMES`, puts /dev/null
//! on fd 0, and execs PROGRAM.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::process::ExitCode;
use systemd_distribute::exec_side as fdpass;

/// sd_listen_fds' first fd.
const LISTEN_FDS_START: RawFd = 3;

fn main() -> ExitCode {
    match run() {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("systemd-distribute-exec: {e}");
            // 203 is systemd's EXIT_EXEC: "failed to execute the command".
            ExitCode::from(203)
        }
    }
}

enum Never {}

fn run() -> Result<Never, String> {
    let args: Vec<CString> = std::env::args_os()
        .skip(1)
        .map(|a| {
            CString::new(a.into_encoded_bytes()).map_err(|_| "argument contains NUL".to_string())
        })
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        return Err("usage: systemd-distribute-exec PROGRAM [ARGS...] (started by systemd-distribute, with the sockets on fd 0)".into());
    }
    // SAFETY: fd 0 is open for the lifetime of this function (systemd gave it to us).
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    let fds = fdpass::receive(stdin).map_err(|e| {
        format!("fd 0 does not carry the activator's sockets ({e}); this program is run by systemd-distribute")
    })?;
    let n = fds.len() as RawFd;

    // Move every fd above the target range first so no dup2 below clobbers one
    // we still need, then into place at 3.. (dup2 clears FD_CLOEXEC).
    let mut parked = Vec::with_capacity(fds.len());
    let mut names = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        let high = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(LISTEN_FDS_START + n),
        )
        .map_err(|e| format!("dup: {e}"))?;
        drop(fd);
        parked.push(high);
        names.push(name);
    }
    for (i, high) in parked.into_iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        // SAFETY: raw dup2/close on fds this process owns.
        if unsafe { libc::dup2(high, target) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
        unsafe { libc::close(high) };
    }
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: replacing our own stdin.
    if unsafe { libc::dup2(devnull.as_fd().as_raw_fd(), 0) } < 0 {
        return Err(format!(
            "dup2 /dev/null: {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(devnull);
    let pid = std::process::id();
    // Single-threaded here, so mutating the environment is sound.
    std::env::set_var("LISTEN_FDS", n.to_string());
    std::env::set_var("LISTEN_PID", pid.to_string());
    std::env::set_var("LISTEN_FDNAMES", names.join(":"));
    let err = nix::unistd::execvp(&args[0], &args).unwrap_err();
    Err(format!("exec {}: {err}", args[0].to_string_lossy()))
}
