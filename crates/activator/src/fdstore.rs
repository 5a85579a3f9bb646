//! Keeping the listening sockets in systemd's fd store across restarts.
//!
//! Every socket is handed to systemd with `FDSTORE=1` and a name
//! `CONFIG/LISTEN/INDEX` (config name, position of its `Listen*=` line,
//! instance index; `/` cannot occur in config names and `:` is not allowed in
//! fd names). When `systemd-distribute.service` restarts, systemd passes them
//! back through `$LISTEN_FDS`/`$LISTEN_FDNAMES`, so the queues (and the
//! reuseport groups) survive the restart and no connection is lost. Needs
//! `FileDescriptorStoreMax=` in the unit; without a notify socket this is a no-op.
//! Companion listeners (AF_UNIX, FIFOs: one per config, not per instance) are
//! stored as `CONFIG/shared/K` ([`crate::companion::fd_name`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

/// How long systemd may take to confirm a barrier.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends `BARRIER=1` to `$NOTIFY_SOCKET` and returns the read end of its pipe:
/// it hangs up once systemd has processed every message sent before (our
/// `FDSTORE=1`/`FDSTOREREMOVE=1` are datagrams that systemd handles later).
/// `None` without a notify socket.
pub fn send_barrier() -> std::io::Result<Option<OwnedFd>> {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(None);
    }
    let (read_end, write_end) = nix::unistd::pipe()?;
    // The write end goes with the message (queued behind the messages it
    // waits for; see `crate::notify`): then systemd holds the only copy and
    // closes it. A message dropped after its timeout closes it too, so the
    // barrier ends then as well.
    crate::notify::send_owned(&[sd_notify::NotifyState::Custom("BARRIER=1")], [write_end]);
    Ok(Some(read_end))
}

/// Registration-only wrapper for the barrier pipe's read end.
struct Pipe(OwnedFd);

impl AsRawFd for Pipe {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// [`send_barrier`], then waits (without blocking the event loop) until
/// systemd confirms, at most [`BARRIER_TIMEOUT`].
pub async fn barrier() {
    let read_end = match send_barrier() {
        Ok(Some(fd)) => fd,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("BARRIER=1: {e}");
            return;
        }
    };
    // SAFETY: `Pipe` owns the fd for the `AsyncFd`'s whole life.
    let fd = match unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            Pipe(read_end),
            tokio::io::Interest::READABLE,
        )
    } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("BARRIER=1: {e}");
            return;
        }
    };
    // A hang-up makes the pipe readable (EOF).
    if tokio::time::timeout(BARRIER_TIMEOUT, fd.readable())
        .await
        .is_err()
    {
        tracing::warn!("systemd did not confirm BARRIER=1 within {BARRIER_TIMEOUT:?}");
    }
}

/// The fd store name of a socket.
pub fn fd_name(config: &str, listen: usize, index: u32) -> String {
    format!("{config}/{listen}/{index}")
}

/// Inverse of [`fd_name`].
pub fn parse_fd_name(name: &str) -> Option<(String, usize, u32)> {
    let mut it = name.rsplitn(3, '/');
    let index = it.next()?.parse().ok()?;
    let listen = it.next()?.parse().ok()?;
    let config = it.next()?;
    (!config.is_empty()).then(|| (config.to_string(), listen, index))
}

/// The fds systemd gave back at start, and the channel to store new ones.
pub struct FdStore {
    enabled: bool,
    received: RefCell<HashMap<String, OwnedFd>>,
    /// Names of the sockets systemd holds for us now.
    stored: RefCell<std::collections::BTreeSet<String>>,
    /// Our unit's `FileDescriptorStoreMax=`, once known.
    capacity: std::cell::Cell<Option<usize>>,
}

impl FdStore {
    /// Takes the fds passed by systemd (and unsets `$LISTEN_*`).
    pub fn from_env() -> FdStore {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut received = HashMap::new();
        match distribute_instance::listen_fds(true) {
            Ok(fds) => {
                for f in fds {
                    if parse_fd_name(&f.name).is_some() || crate::companion::is_fd_name(&f.name) {
                        received.insert(f.name, f.fd);
                    } else {
                        tracing::warn!("ignoring passed fd named {:?}: not one of ours", f.name);
                    }
                }
            }
            Err(e) => tracing::warn!("ignoring $LISTEN_FDS: {e}"),
        }
        if !received.is_empty() {
            tracing::info!("got {} sockets back from the fd store", received.len());
        }
        let stored = received.keys().cloned().collect();
        FdStore {
            enabled,
            received: RefCell::new(received),
            stored: RefCell::new(stored),
            capacity: std::cell::Cell::new(None),
        }
    }

    /// Sets our unit's `FileDescriptorStoreMax=` (read from systemd).
    pub fn set_capacity(&self, max: usize) {
        self.capacity.set(Some(max));
    }

    /// Whether `more` sockets still fit in systemd's fd store; the error
    /// says how many are stored, what is allowed, and what to raise. systemd
    /// would silently close what does not fit, and the sockets would not
    /// survive the next restart.
    pub fn room_for(&self, more: usize) -> Result<(), String> {
        let Some(max) = self.capacity.get().filter(|_| self.enabled) else {
            return Ok(());
        };
        let now = self.stored.borrow().len();
        if now + more > max {
            return Err(format!(
                "{more} more sockets do not fit in systemd's fd store: {now} are stored and \
                 FileDescriptorStoreMax={max} of systemd-distribute.service; raise it \
                 (`systemctl edit systemd-distribute`, [Service] FileDescriptorStoreMax={}) \
                 and restart the service",
                (now + more).next_power_of_two().max(max * 2)
            ));
        }
        Ok(())
    }

    /// A store that neither receives nor stores (tests).
    #[cfg(test)]
    pub fn disabled() -> FdStore {
        FdStore {
            enabled: false,
            received: RefCell::new(HashMap::new()),
            stored: RefCell::new(Default::default()),
            capacity: std::cell::Cell::new(None),
        }
    }

    /// Takes a socket passed back under `name`, if any.
    pub fn take(&self, name: &str) -> Option<OwnedFd> {
        self.received.borrow_mut().remove(name)
    }

    /// Hands a socket to systemd's fd store.
    pub fn store(&self, name: &str, fd: BorrowedFd<'_>) {
        if !self.enabled {
            return;
        }
        let states = [
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(name),
        ];
        // Never blocks; a failure is logged with the name (`crate::notify`).
        crate::notify::send(&states, &[fd]);
        self.stored.borrow_mut().insert(name.to_string());
    }

    /// Drops `name` from systemd's fd store (the socket is being closed).
    pub fn remove(&self, name: &str) {
        if !self.enabled {
            return;
        }
        let states = [
            sd_notify::NotifyState::FdStoreRemove,
            sd_notify::NotifyState::FdName(name),
        ];
        self.stored.borrow_mut().remove(name);
        crate::notify::send(&states, &[]);
    }

    /// How many sockets of config `name` systemd holds for us.
    pub fn stored_for(&self, config: &str) -> usize {
        self.stored
            .borrow()
            .iter()
            .filter(|n| {
                parse_fd_name(n).is_some_and(|(c, _, _)| c == config)
                    || (crate::companion::is_fd_name(n) && n.rsplitn(3, '/').nth(2) == Some(config))
            })
            .count()
    }

    /// How many slots of `config` the received sockets cover: the highest
    /// index + 1, 0 if none. More than the config's N after a restart that
    /// interrupted a shrink (or when N was lowered while the daemon was down).
    pub fn stored_slots(&self, config: &str) -> u32 {
        self.received
            .borrow()
            .keys()
            .filter_map(|n| parse_fd_name(n))
            .filter(|(c, _, _)| c == config)
            .map(|(_, _, i)| i + 1)
            .max()
            .unwrap_or(0)
    }

    /// Closes every received socket nobody claimed and removes it from the store.
    ///
    /// Highest index first: closing a member of a reuseport group moves the
    /// group's last socket into its place, and the steering programs rely on
    /// position i being socket i (see [`crate::steering`]).
    pub fn discard_unclaimed(&self) {
        let mut left: Vec<(String, OwnedFd)> = self.received.borrow_mut().drain().collect();
        left.sort_by_key(|(name, _)| std::cmp::Reverse(parse_fd_name(name).map(|(_, _, i)| i)));
        for (name, fd) in left {
            tracing::info!("closing stored socket {name}: no config uses it any more");
            drop(fd);
            self.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (c, l, i) in [("web", 0, 0), ("a.b-c", 3, 1023), ("x", 1, 7)] {
            assert_eq!(
                parse_fd_name(&fd_name(c, l, i)),
                Some((c.to_string(), l, i))
            );
        }
        for bad in ["", "web", "web/1", "/1/2", "web/x/1", "web/1/x"] {
            assert_eq!(parse_fd_name(bad), None, "{bad:?}");
        }
    }
}
