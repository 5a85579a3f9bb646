//! Activation and supervision: one task per instance slot.
//!
//! The life of slot i of a config is a loop:
//! 1. **watch**: its sockets are registered with epoll; the task sleeps until
//!    one of them is readable (a connection or datagram queued).
//! 2. **start**: `StartTransientUnit("SERVICE@i.service")` with the sockets.
//!    The sockets are deregistered first, so while the instance runs the
//!    activator gets no wakeups for them at all: it is never on the data path.
//! 3. **running**: the task waits for systemd's `UnitRemoved` signal for that
//!    unit (the unit is `CollectMode=inactive-or-failed`, so it is unloaded as
//!    soon as the instance exits, whatever the reason; a `PropertiesChanged`
//!    to `ActiveState=failed` before that marks a crash, which delays the next
//!    start with exponential backoff). Then back to 1: anything
//!    that queued meanwhile makes the socket readable at once and starts the
//!    instance again, so nothing that reached the queue is lost.

use crate::fdpass;
use crate::sockets::BoundSocket;
use crate::systemd::ManagerProxy;
use crate::unit::{self, FdHandOff};
use distribute_config::SocketSpec;
use futures_util::future::select_all;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

/// What the signal dispatcher tells an instance slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitEvent {
    /// The unit entered the `failed` state (non-zero exit, killed, timeout).
    Failed,
    /// systemd unloaded the unit: the instance is gone.
    Removed,
}

/// The observable state of one instance slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// Sockets watched, no instance.
    Listening,
    /// `StartTransientUnit` sent.
    Starting,
    /// Instance unit loaded.
    Running,
    /// Waiting before the next start after failures.
    Backoff {
        /// Why the last start failed.
        reason: String,
    },
}

/// Counters and state of one slot, shared with status reporting.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// Current state.
    pub state: SlotState,
    /// Successful starts.
    pub activations: u64,
    /// Starts that systemd refused, and instances that exited within
    /// [`QUICK_EXIT`] of their start.
    pub failures: u64,
}

/// First backoff delay after a failed instance; doubles per consecutive failure,
/// so a crash loop cannot spin the activator or systemd.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest backoff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Everything the slot tasks share: the bus, how fds are handed off, and the
/// routing table from unit names to slots.
pub struct Shared {
    /// systemd's manager.
    pub manager: ManagerProxy<'static>,
    /// `Some(shim path)` on systemd < 257, `None` for native `ExtraFileDescriptors`.
    pub shim: Option<String>,
    /// Unit name → the slot that owns it.
    pub routes: RefCell<HashMap<String, mpsc::UnboundedSender<UnitEvent>>>,
    /// Unit object path → unit name, for `PropertiesChanged`.
    pub paths: RefCell<HashMap<String, String>>,
    /// Called whenever a slot changes state (for `STATUS=`).
    pub on_change: Box<dyn Fn()>,
}

impl Shared {
    /// Delivers a `UnitRemoved` signal to the slot owning `unit`, if any.
    pub fn unit_removed(&self, unit: &str) {
        self.route(unit, UnitEvent::Removed);
    }

    /// Delivers "entered the failed state" to the slot whose unit has object path `path`.
    pub fn unit_failed_at(&self, path: &str) {
        if let Some(unit) = self.paths.borrow().get(path) {
            self.route(unit, UnitEvent::Failed);
        }
    }

    fn route(&self, unit: &str, event: UnitEvent) {
        if let Some(tx) = self.routes.borrow().get(unit) {
            let _ = tx.send(event);
        }
    }
}

/// One instance slot: its sockets and its status.
pub struct Slot {
    /// Config name.
    pub name: String,
    /// Instance index.
    pub index: u32,
    /// `SERVICE@INDEX.service`.
    pub unit: String,
    /// The slot's sockets, one per `Listen*=` line.
    pub sockets: Vec<BoundSocket>,
    /// Shared status.
    pub status: Rc<RefCell<SlotStatus>>,
}

/// Registers the slot's route and spawns its task on the current `LocalSet`.
pub fn spawn_slot(shared: Rc<Shared>, spec: Rc<SocketSpec>, slot: Slot) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    shared.routes.borrow_mut().insert(slot.unit.clone(), tx);
    shared
        .paths
        .borrow_mut()
        .insert(unit_object_path(&slot.unit), slot.unit.clone());
    tokio::task::spawn_local(run_slot(shared, spec, slot, rx))
}

async fn run_slot(
    shared: Rc<Shared>,
    spec: Rc<SocketSpec>,
    slot: Slot,
    mut events: mpsc::UnboundedReceiver<UnitEvent>,
) {
    let set = |state: SlotState| {
        slot.status.borrow_mut().state = state;
        (shared.on_change)();
    };
    let mut consecutive_failures: u32 = 0;
    loop {
        set(SlotState::Listening);
        if let Err(e) = wait_readable(&slot.sockets).await {
            tracing::error!(unit = %slot.unit, "{}: cannot watch sockets: {e}", slot.unit);
            return;
        }
        // Anything routed to us before this start belongs to an earlier life.
        while events.try_recv().is_ok() {}
        set(SlotState::Starting);
        let started = Instant::now();
        match start_instance(&shared, &spec, &slot).await {
            Ok(()) => {
                slot.status.borrow_mut().activations += 1;
                tracing::info!(unit = %slot.unit, "{}: started ({:?})", slot.unit, started.elapsed());
                set(SlotState::Running);
                let Some(failed) = wait_gone(&mut events).await else {
                    return; // config removed
                };
                let lived = started.elapsed();
                if !failed {
                    tracing::debug!(unit = %slot.unit, "{}: exited after {lived:?}", slot.unit);
                    consecutive_failures = 0;
                    continue;
                }
                consecutive_failures += 1;
                slot.status.borrow_mut().failures += 1;
                let delay = backoff(consecutive_failures);
                let reason = format!(
                    "instance failed after {lived:?} ({consecutive_failures} failure(s) in a row)"
                );
                tracing::warn!(unit = %slot.unit, "{}: {reason}; next start in {delay:?}", slot.unit);
                set(SlotState::Backoff { reason });
                tokio::time::sleep(delay).await;
            }
            Err(StartError::Exists) => {
                // A unit of that name is still loaded (e.g. an instance from an
                // earlier run of the activator): it is running with its own copy
                // of the socket. Adopt it: wait until it goes away.
                tracing::info!(unit = %slot.unit, "{}: already loaded; adopting it until it exits", slot.unit);
                // A failed leftover would never be unloaded on its own.
                let _ = shared.manager.reset_failed_unit(&slot.unit).await;
                set(SlotState::Running);
                if wait_gone(&mut events).await.is_none() {
                    return;
                }
            }
            Err(StartError::Other(e)) => {
                consecutive_failures += 1;
                slot.status.borrow_mut().failures += 1;
                let delay = backoff(consecutive_failures);
                tracing::error!(unit = %slot.unit, "{}: start failed: {e}; next try in {delay:?}", slot.unit);
                set(SlotState::Backoff { reason: e });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits for the unit's removal; `Some(true)` if it failed on the way out,
/// `None` if the slot was dropped.
async fn wait_gone(events: &mut mpsc::UnboundedReceiver<UnitEvent>) -> Option<bool> {
    let mut failed = false;
    loop {
        match events.recv().await? {
            UnitEvent::Failed => failed = true,
            UnitEvent::Removed => return Some(failed),
        }
    }
}

/// systemd's object path for a unit: `/org/freedesktop/systemd1/unit/` plus
/// the name with every byte that is not `[A-Za-z0-9]` written as `_xx` (hex).
pub fn unit_object_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// Exponential backoff: `BACKOFF_START * 2^(n-1)`, capped at `BACKOFF_MAX`.
pub fn backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(16);
    (BACKOFF_START * (1u32 << shift)).min(BACKOFF_MAX)
}

enum StartError {
    Exists,
    Other(String),
}

async fn start_instance(shared: &Shared, spec: &SocketSpec, slot: &Slot) -> Result<(), StartError> {
    let exec = spec.exec.for_instance(&spec.name, slot.index);
    let fd_name = spec.fd_name();
    let fds: Vec<BorrowedFd<'_>> = slot.sockets.iter().map(|s| s.socket.as_fd()).collect();
    let names: Vec<String> = fds.iter().map(|_| fd_name.clone()).collect();
    // The carrier must outlive the call: systemd dups it while handling it.
    let carrier;
    let hand_off = match &shared.shim {
        Some(shim) => {
            carrier = fdpass::package(&fds, &names)
                .map_err(|e| StartError::Other(format!("packaging sockets: {e}")))?;
            FdHandOff::Shim {
                shim,
                carrier: carrier.as_fd(),
            }
        }
        None => FdHandOff::Native {
            fds: fds.iter().copied().zip(names).collect(),
        },
    };
    let props = unit::properties(&spec.name, slot.index, &exec, hand_off);
    let props: Vec<(&str, zbus::zvariant::Value<'_>)> =
        props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    match shared
        .manager
        .start_transient_unit(&slot.unit, "fail", &props, &[])
        .await
    {
        Ok(_job) => Ok(()),
        Err(zbus::Error::MethodError(name, msg, _))
            if name.as_str() == "org.freedesktop.systemd1.UnitExists" =>
        {
            tracing::debug!(unit = %slot.unit, "UnitExists: {}", msg.unwrap_or_default());
            Err(StartError::Exists)
        }
        Err(e) => Err(StartError::Other(e.to_string())),
    }
}

/// A registration-only handle: the socket stays owned by the slot (the borrow
/// proves it outlives the registration); dropping the `AsyncFd` removes it
/// from epoll.
struct Watch<'a>(BorrowedFd<'a>);

impl AsRawFd for Watch<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Waits until one of `sockets` has something queued.
async fn wait_readable(sockets: &[BoundSocket]) -> io::Result<()> {
    let watches: Vec<AsyncFd<Watch<'_>>> = sockets
        .iter()
        .map(|s| {
            // SAFETY: the fd is borrowed from `sockets`, so it stays open and
            // refers to the same socket for as long as the `AsyncFd` lives.
            unsafe { AsyncFd::register_with_interest(Watch(s.socket.as_fd()), Interest::READABLE) }
                .map_err(io::Error::from)
        })
        .collect::<io::Result<_>>()?;
    loop {
        let (res, i, _) = select_all(watches.iter().map(|w| Box::pin(w.readable()))).await;
        let mut guard = res?;
        // tokio's readiness is edge-triggered and may be stale; ask the kernel.
        if queued(sockets[i].socket.as_fd())? {
            return Ok(());
        }
        guard.clear_ready();
    }
}

/// Whether a connection or datagram is queued on `fd` right now.
pub fn queued(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::ZERO)?;
    Ok(n > 0 && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_escape_like_systemd() {
        for (unit, want) in [
            ("web@0.service", "/org/freedesktop/systemd1/unit/web_400_2eservice"),
            ("a-b.service", "/org/freedesktop/systemd1/unit/a_2db_2eservice"),
        ] {
            assert_eq!(unit_object_path(unit), want);
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(100), BACKOFF_MAX);
    }

    #[test]
    fn queued_sees_a_pending_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!queued(l.as_fd()).unwrap());
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(queued(l.as_fd()).unwrap());
    }
}
