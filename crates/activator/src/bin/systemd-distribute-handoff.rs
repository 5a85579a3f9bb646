//! `systemd-distribute-handoff [--socket PATH] UNIT`: the instance-side half of
//! template mode (see the activator's `handoff` module).
//!
//! Our runtime drop-in runs it as `ExecStartPre=+… %n` of a template unit's
//! instance: as root, inside the instance's cgroup, while it starts. It asks
//! the activator for the instance's listening sockets and puts them into the
//! unit's fd store (`FDSTORE=1`, `FDNAME=`), which systemd then passes to the
//! main process as `$LISTEN_FDS`/`$LISTEN_FDNAMES` with the right
//! `$LISTEN_PID`. Nothing runs in front of the unit's own `ExecStart=`.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use systemd_distribute::handoff_side::{self as handoff, BARRIER_TIMEOUT};

fn main() -> ExitCode {
    match run() {
        Ok(summary) => {
            eprintln!("systemd-distribute-handoff: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("systemd-distribute-handoff: {e}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: systemd-distribute-handoff [--socket PATH] UNIT \
    (run by systemd as ExecStartPre=+ of a template-mode instance; see systemd-distribute(8))";

fn run() -> Result<String, String> {
    let mut socket = handoff::runtime_dir().join(handoff::SOCKET_NAME);
    let mut unit = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = PathBuf::from(args.next().ok_or(USAGE)?),
            "-h" | "--help" => return Err(USAGE.into()),
            _ if unit.is_none() && !a.starts_with('-') => unit = Some(a),
            _ => return Err(format!("unexpected argument {a:?}; {USAGE}")),
        }
    }
    let unit = unit.ok_or(USAGE)?;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Err(format!(
            "$NOTIFY_SOCKET is not set, so the sockets cannot go into {unit}'s fd store: \
             the unit needs NotifyAccess=exec (or all) and FileDescriptorStoreMax=, which \
             systemd-distribute's drop-in sets; run `systemctl daemon-reload` if it was just written"
        ));
    }
    let fds =
        handoff::request(&socket, &unit).map_err(|e| format!("no sockets for {unit}: {e}"))?;
    for (fd, name) in &fds {
        sd_notify::notify_with_fds(
            false,
            &[
                sd_notify::NotifyState::FdStore,
                sd_notify::NotifyState::FdName(name),
            ],
            &[fd.as_fd()],
        )
        .map_err(|e| format!("FDSTORE=1 for {name}: {e}"))?;
    }
    barrier()?;
    Ok(format!(
        "put {} socket(s) into {unit}'s fd store ({})",
        fds.len(),
        fds.iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// `BARRIER=1`: waits until systemd has processed every message we sent, so
/// our exit (which ends the control process) cannot overtake the fds.
fn barrier() -> Result<(), String> {
    let read_end = handoff::send_barrier()
        .map_err(|e| format!("BARRIER=1: {e}"))?
        .ok_or("$NOTIFY_SOCKET is not set")?;
    // systemd closes its copy of the write end once it got here: POLLHUP.
    wait_hangup(read_end.as_fd())
}

fn wait_hangup(fd: BorrowedFd<'_>) -> Result<(), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    let timeout = PollTimeout::try_from(BARRIER_TIMEOUT).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(0) => Err(format!(
            "systemd did not confirm the fd store within {BARRIER_TIMEOUT:?}"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("waiting for systemd: {e}")),
    }
}
