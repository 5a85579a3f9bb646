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
//!    to `ActiveState=failed` before that marks a crash). Then back to 1:
//!    anything that queued meanwhile makes the socket readable at once and
//!    starts the instance again, so nothing that reached the queue is lost.
//!
//! In template mode ([`crate::template`]) step 2 is `StartUnit`, the instance
//! fetches its sockets itself ([`crate::handoff`]), and since a unit with a
//! unit file may stay loaded after it stops, step 3 also ends on `ActiveState`
//! `inactive`/`failed` — unless systemd is restarting the unit by itself
//! (`Restart=`): then it keeps its sockets and the slot stays running. An
//! instance started by someone else (`systemctl start`) while the slot was
//! listening is noticed when it fetches its sockets: the slot is then running.
//!
//! Crashes are retried with exponential backoff; after [`FAILURES_BEFORE_FAILED`]
//! in a row (a failure after [`CRASH_LOOP_RESET`] of uptime starts a new row:
//! that instance served, it was not crash-looping), or when starts exceed `TriggerLimitBurst=` per
//! `TriggerLimitIntervalSec=` (systemd's defaults: 20 per 2 s), the slot is
//! `failed`: its sockets are no longer watched (connections wait in the queue)
//! until an operator starts it again or the config is reloaded.

use crate::fdpass;
use crate::sockets::{queued, BoundSocket};
use crate::systemd::{unit_at, ManagerProxy};
use crate::template::Mode;
use crate::unit::{self, FdHandOff};
use distribute_config::{SocketSpec, Steering};
use futures_util::future::select_all;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
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
    /// The unit entered the `inactive` state (template mode: it may stay loaded).
    Inactive,
    /// The instance fetched its sockets over the hand-off (template mode): it is
    /// starting, whoever started it.
    HandedOff,
    /// systemd unloaded the unit: the instance is gone.
    Removed,
}

/// What an operator (or the reconciler) asks of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCommand {
    /// Start the instance now; clears `failed` and backoff.
    Start,
    /// Stop the running instance; the socket is watched again afterwards.
    Stop,
    /// Stop, then start.
    Restart,
    /// The instance is stuck ([`crate::health`], `StuckRestartSec=`): kill it
    /// (`SIGKILL`: it does not answer, a graceful stop would only wait for
    /// `TimeoutStopSec=`) and start a new one, which serves the queue.
    KillAndRestart,
    /// The slot is being removed (rescale down, config removed): let the
    /// instance finish, serve what is queued, and end once the queue is empty.
    Drain,
}

/// The observable state of one instance slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Sockets watched, no instance.
    Listening,
    /// `StartTransientUnit` sent.
    Starting,
    /// Instance unit loaded.
    Running,
    /// Waiting before the next start after failures.
    Backoff,
    /// Given up until an operator starts it again (see the module docs).
    Failed,
}

impl SlotState {
    /// The name the control plane shows.
    pub fn as_str(&self) -> &'static str {
        match self {
            SlotState::Listening => "listening",
            SlotState::Starting => "starting",
            SlotState::Running => "running",
            SlotState::Backoff => "backoff",
            SlotState::Failed => "failed",
        }
    }
}

/// Counters and state of one slot, shared with status reporting.
#[derive(Debug, Clone)]
pub struct SlotStatus {
    /// Current state.
    pub state: SlotState,
    /// Set once the slot is being removed.
    pub draining: bool,
    /// Draining because its sockets were replaced (reload): the instance is
    /// stopped as soon as its queue stays empty, not when it goes idle, since
    /// the same unit name is waiting to serve the new sockets.
    pub retiring: bool,
    /// Successful starts.
    pub activations: u64,
    /// Refused starts and failed exits.
    pub failures: u64,
    /// Why it is in backoff or failed.
    pub reason: String,
    /// Main PID of the running instance once the control plane looked it
    /// up (0: not running, or not asked yet), so status queries ask systemd
    /// once per instance life rather than on every change.
    pub main_pid: u32,
    /// Set while the running instance is not accepting ([`crate::health`]):
    /// new connections are steered to the other instances.
    pub stuck: Option<Stuck>,
}

/// Why and since when an instance counts as stuck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// When its queue stopped draining (wall clock, for the control plane).
    pub since: std::time::SystemTime,
    /// What was seen, e.g. "accept queue 37 (Backlog= 4096) has not drained for 520ms".
    pub why: String,
}

/// `DrainTimeoutSec=` default: how long a draining instance may keep running.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// First backoff delay after a failure; doubles per consecutive failure, so a
/// crash loop cannot spin the activator or systemd.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest backoff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Consecutive failures after which a slot is marked failed.
pub const FAILURES_BEFORE_FAILED: u32 = 5;
/// An instance that ran at least this long before it failed (killed, OOM,
/// crashed under load) was not crash-looping: its failure starts a new row,
/// so occasional deaths never add up to `failed` (systemd's default
/// `StartLimitIntervalSec=`).
pub const CRASH_LOOP_RESET: Duration = Duration::from_secs(10);
/// systemd's default `TriggerLimitIntervalSec=` for `Accept=no` sockets.
pub const DEFAULT_TRIGGER_INTERVAL: Duration = Duration::from_secs(2);
/// systemd's default `TriggerLimitBurst=` for `Accept=no` sockets.
pub const DEFAULT_TRIGGER_BURST: u32 = 20;
/// How long a draining slot's queue must stay empty before its sockets close:
/// covers handshakes that were already in flight when steering moved away.
pub const DRAIN_GRACE: Duration = Duration::from_millis(250);

/// The slots' link to systemd: the manager on the bus, how fds are handed
/// off, and the routing table from unit names (and object paths) to slots.
pub struct SystemdLink {
    /// systemd's manager on the current bus connection (replaced on reconnect).
    pub manager: RefCell<ManagerProxy<'static>>,
    /// Bumped every time the bus connection is (re)established.
    pub bus_generation: tokio::sync::watch::Sender<u64>,
    /// `Some(shim path)` on systemd < 257, `None` for native `ExtraFileDescriptors`.
    pub shim: Option<String>,
    /// Unit name → the slot that owns it.
    pub routes: RefCell<HashMap<String, mpsc::UnboundedSender<UnitEvent>>>,
    /// Unit object path → unit name, for `PropertiesChanged`.
    pub paths: RefCell<HashMap<String, String>>,
    /// Unit name → its slot and config, for the hand-off.
    pub instances: RefCell<HashMap<String, Registered>>,
    /// Called with the config name whenever a slot changes state.
    pub on_change: Box<dyn Fn(&str)>,
}

impl SystemdLink {
    /// systemd's manager proxy on the current connection.
    pub fn manager(&self) -> ManagerProxy<'static> {
        self.manager.borrow().clone()
    }

    /// Delivers a `UnitRemoved` signal to the slot owning `unit`, if any.
    pub fn unit_removed(&self, unit: &str) {
        self.route(unit, UnitEvent::Removed);
    }

    /// Delivers a new `ActiveState` of the unit at object path `path` to its
    /// slot (only the states a slot acts on).
    pub fn unit_state_at(&self, path: &str, active_state: &str) {
        let event = match active_state {
            "failed" => UnitEvent::Failed,
            "inactive" => UnitEvent::Inactive,
            _ => return,
        };
        if let Some(unit) = self.paths.borrow().get(path) {
            self.route(unit, event);
        }
    }

    /// The slot and config of instance `unit`, if we serve it.
    pub fn instance(&self, unit: &str) -> Option<(Rc<Slot>, SpecCell)> {
        let instances = self.instances.borrow();
        let r = instances.get(unit)?;
        Some((r.slot.upgrade()?, r.spec.upgrade()?))
    }

    /// Sends `event` to the slot owning `unit`, if any.
    pub fn route(&self, unit: &str, event: UnitEvent) {
        if let Some(tx) = self.routes.borrow().get(unit) {
            let _ = tx.send(event);
        }
    }
}

/// A config's spec as its group and slots share it; a reload replaces the inner `Rc`.
pub type SpecCell = Rc<RefCell<Rc<SocketSpec>>>;

/// A slot as the hand-off finds it (weak: the slot task and its group own it).
pub struct Registered {
    /// The slot.
    pub slot: std::rc::Weak<Slot>,
    /// Its config, as reloads update it.
    pub spec: std::rc::Weak<RefCell<Rc<SocketSpec>>>,
}

/// What the slots of one served socket have in common with it and each
/// other: the instance mode, N, wake-ups, the companion listeners.
#[derive(Default)]
pub struct SocketCommon {
    /// Transient units or the template unit file's instances; decided when the
    /// config is served and on every reload.
    pub mode: RefCell<Mode>,
    /// Woken whenever a slot changes state (the warm-steering monitor sleeps on it).
    pub activity: tokio::sync::Notify,
    /// The same for the health monitor ([`crate::health`]).
    pub health: tokio::sync::Notify,
    /// Current N (for `Steering=cpu` pinning).
    pub size: std::cell::Cell<u32>,
    /// Set when the config is removed or replaced: its monitor tasks end.
    pub closed: std::cell::Cell<bool>,
    /// The config's companion listeners (AF_UNIX, FIFOs), shared by every
    /// instance; emptied when the config is removed.
    pub companions: RefCell<Vec<crate::companion::CompanionSocket>>,
    /// Woken whenever a slot changes state, for the companion monitor (its own
    /// `Notify`: `activity` wakes one waiter only).
    pub companion_wake: tokio::sync::Notify,
}

/// One instance slot: its sockets and its status. Shared (`Rc`) between the
/// slot's task and its config group; the sockets close when both let go.
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
    pub status: RefCell<SlotStatus>,
    /// The group's shared bits.
    pub common: Rc<SocketCommon>,
}

impl Slot {
    /// A new slot in the `listening` state.
    pub fn new(
        name: &str,
        index: u32,
        unit: String,
        sockets: Vec<BoundSocket>,
        common: Rc<SocketCommon>,
    ) -> Slot {
        Slot {
            name: name.to_string(),
            index,
            unit,
            sockets,
            common,
            status: RefCell::new(SlotStatus {
                state: SlotState::Listening,
                draining: false,
                retiring: false,
                activations: 0,
                failures: 0,
                reason: String::new(),
                main_pid: 0,
                stuck: None,
            }),
        }
    }
}

/// How a slot task begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Watch the sockets.
    OnDemand,
    /// Start the instance right away (`Activation=eager`).
    Eager,
    /// The instance is already running (started before the activator restarted).
    Adopt,
}

/// Registers the slot's route and spawns its task on the current `LocalSet`.
/// The task ends when the slot has drained or its command channel closes.
pub fn spawn_slot(
    shared: Rc<SystemdLink>,
    spec: Rc<RefCell<Rc<SocketSpec>>>,
    slot: Rc<Slot>,
    begin: Begin,
) -> (
    mpsc::UnboundedSender<SlotCommand>,
    tokio::task::JoinHandle<()>,
) {
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let task = spawn_slot_with(shared, spec, slot, begin, cmd_rx);
    (cmd_tx, task)
}

/// [`spawn_slot`] with a command channel made earlier (a slot whose task
/// starts later, see `ServedSocket::serve`).
pub fn spawn_slot_with(
    shared: Rc<SystemdLink>,
    spec: Rc<RefCell<Rc<SocketSpec>>>,
    slot: Rc<Slot>,
    begin: Begin,
    cmd_rx: mpsc::UnboundedReceiver<SlotCommand>,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let registration = Registration {
        shared: shared.clone(),
        slot: slot.clone(),
        route: tx.clone(),
    };
    shared.routes.borrow_mut().insert(slot.unit.clone(), tx);
    shared
        .paths
        .borrow_mut()
        .insert(unit_object_path(&slot.unit), slot.unit.clone());
    shared.instances.borrow_mut().insert(
        slot.unit.clone(),
        Registered {
            slot: Rc::downgrade(&slot),
            spec: Rc::downgrade(&spec),
        },
    );
    let task = SlotTask {
        shared,
        spec,
        slot,
        events: rx,
        commands: cmd_rx,
        consecutive_failures: 0,
        starts: VecDeque::new(),
        drain_deadline: None,
        _registration: registration,
    };
    tokio::task::spawn_local(task.run(begin))
}

/// A slot's entries in the routing tables, removed when its task ends, also
/// when the task is aborted (a drain cut short): otherwise they would stay
/// forever, and route a later instance's signals nowhere. Only entries that
/// are still this slot's are removed (a new slot may own the name by then).
struct Registration {
    shared: Rc<SystemdLink>,
    slot: Rc<Slot>,
    route: mpsc::UnboundedSender<UnitEvent>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let unit = &self.slot.unit;
        let mut routes = self.shared.routes.borrow_mut();
        if routes
            .get(unit)
            .is_some_and(|tx| tx.same_channel(&self.route))
        {
            routes.remove(unit);
            self.shared
                .paths
                .borrow_mut()
                .remove(&unit_object_path(unit));
        }
        let mut instances = self.shared.instances.borrow_mut();
        if instances
            .get(unit)
            .is_some_and(|r| std::ptr::eq(r.slot.as_ptr(), Rc::as_ptr(&self.slot)))
        {
            instances.remove(unit);
        }
    }
}

struct SlotTask {
    shared: Rc<SystemdLink>,
    spec: Rc<RefCell<Rc<SocketSpec>>>,
    slot: Rc<Slot>,
    events: mpsc::UnboundedReceiver<UnitEvent>,
    commands: mpsc::UnboundedReceiver<SlotCommand>,
    consecutive_failures: u32,
    starts: VecDeque<Instant>,
    /// Draining: when a running instance is stopped (`DrainTimeoutSec=`).
    drain_deadline: Option<tokio::time::Instant>,
    _registration: Registration,
}

/// What to do after a phase.
enum Next {
    Watch,
    StartNow,
    Running,
    End,
}

impl SlotTask {
    fn set(&self, state: SlotState, reason: &str) {
        {
            let mut st = self.slot.status.borrow_mut();
            st.state = state;
            st.reason = reason.to_string();
            if state != SlotState::Running {
                st.main_pid = 0;
            }
        }
        self.slot.common.activity.notify_one();
        self.slot.common.companion_wake.notify_one();
        self.slot.common.health.notify_one();
        (self.shared.on_change)(&self.slot.name);
    }

    fn draining(&self) -> bool {
        self.slot.status.borrow().draining
    }

    fn mark_draining(&mut self) {
        self.slot.status.borrow_mut().draining = true;
        if self.drain_deadline.is_none() {
            let timeout = self
                .spec
                .borrow()
                .options
                .drain_timeout_usec
                .map(Duration::from_micros)
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
            // `infinity` (u64::MAX µs) never stops it.
            self.drain_deadline = tokio::time::Instant::now().checked_add(timeout);
        }
        (self.shared.on_change)(&self.slot.name);
    }

    async fn run(mut self, begin: Begin) {
        let mut next = match begin {
            Begin::OnDemand => Next::Watch,
            Begin::Eager => Next::StartNow,
            // Asked again now that the routes are in place: an instance
            // that exited between the caller's check and the registration
            // would otherwise leave the slot "running", its socket unwatched.
            Begin::Adopt if instance_is_up(&self.shared, &self.slot.unit).await => {
                tracing::info!("{}: adopting the running instance", self.slot.unit);
                Next::Running
            }
            Begin::Adopt => {
                tracing::info!("{}: exited before it could be adopted", self.slot.unit);
                Next::Watch
            }
        };
        loop {
            next = match next {
                Next::Watch => self.watch().await,
                Next::StartNow => self.start().await,
                Next::Running => self.running().await,
                Next::End => break,
            };
        }
        // The routes go with `_registration`.
        tracing::debug!("{}: slot ended", self.slot.unit);
    }

    /// Waits for something queued, or a command.
    async fn watch(&mut self) -> Next {
        if self.draining() {
            return self.finish_drain().await;
        }
        self.set(SlotState::Listening, "");
        tokio::select! {
            r = wait_readable(&self.slot.sockets) => match r {
                Ok(()) => Next::StartNow,
                Err(e) => {
                    tracing::error!("{}: cannot watch sockets: {e}", self.slot.unit);
                    self.fail(format!("cannot watch sockets: {e}")).await
                }
            },
            cmd = self.commands.recv() => match cmd {
                None => Next::End,
                Some(SlotCommand::Start | SlotCommand::Restart) => Next::StartNow,
                Some(SlotCommand::Stop | SlotCommand::KillAndRestart) => Next::Watch,
                Some(SlotCommand::Drain) => { self.mark_draining(); Next::Watch }
            },
            ev = self.events.recv() => self.event_while_down(ev),
        }
    }

    /// An event while no instance of ours runs: only a hand-off matters (the
    /// instance was started by systemd's `Restart=` or an admin).
    fn event_while_down(&mut self, ev: Option<UnitEvent>) -> Next {
        match ev {
            None => Next::End,
            Some(UnitEvent::HandedOff) => {
                tracing::info!(
                    "{}: started outside the activator; its sockets were handed over, it counts as running",
                    self.slot.unit
                );
                self.slot.status.borrow_mut().activations += 1;
                Next::Running
            }
            Some(_) => Next::Watch,
        }
    }

    fn template_mode(&self) -> bool {
        matches!(*self.slot.common.mode.borrow(), Mode::Template { .. })
    }

    /// A draining slot with no instance: end once the queue stayed empty for
    /// [`DRAIN_GRACE`], or start the instance to serve what is queued.
    async fn finish_drain(&mut self) -> Next {
        loop {
            if any_queued(&self.slot.sockets) {
                return Next::StartNow;
            }
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_GRACE) => {
                    if !any_queued(&self.slot.sockets) {
                        return Next::End;
                    }
                }
                cmd = self.commands.recv() => if cmd.is_none() { return Next::End },
            }
        }
    }

    async fn start(&mut self) -> Next {
        // Anything routed to us before this start belongs to an earlier life.
        while self.events.try_recv().is_ok() {}
        if let Some(limit) = self.trigger_limit_hit() {
            return self.fail(limit).await;
        }
        self.set(SlotState::Starting, "");
        let started = Instant::now();
        let spec = self.spec.borrow().clone();
        match start_instance(&self.shared, &spec, &self.slot).await {
            Ok(()) => {
                self.slot.status.borrow_mut().activations += 1;
                tracing::info!("{}: started ({:?})", self.slot.unit, started.elapsed());
                Next::Running
            }
            Err(StartError::Exists) => {
                if let Some(fragment) = fragment_on_disk(&self.shared, &self.slot.unit).await {
                    // Retrying cannot help: systemd refuses every start.
                    return self
                        .fail(format!(
                            "systemd refuses to start the transient {}: {fragment} exists, and \
                             systemd does not start transient instances of a unit that has a \
                             unit file; remove or rename it (put its settings in [Service] of \
                             the config, or in drop-ins {}@.service.d/*.conf, which do apply)",
                            self.slot.unit, spec.service
                        ))
                        .await;
                }
                // A unit of that name is still loaded (e.g. an instance from an
                // earlier run of the activator, holding its own copy of the
                // socket). Adopt it; a failed leftover needs a reset to go away.
                tracing::info!(
                    "{}: already loaded; adopting it until it exits",
                    self.slot.unit
                );
                let _ = self
                    .shared
                    .manager()
                    .reset_failed_unit(&self.slot.unit)
                    .await;
                Next::Running
            }
            Err(StartError::Bus(e)) => {
                // Not the instance's fault: wait for the reconnect, then retry.
                tracing::warn!(
                    "{}: start failed, bus connection lost ({e}); retrying after reconnect",
                    self.slot.unit
                );
                self.set(SlotState::Backoff, "waiting for the bus connection");
                let mut generation = self.shared.bus_generation.subscribe();
                generation.borrow_and_update();
                tokio::select! {
                    _ = generation.changed() => Next::StartNow,
                    cmd = self.commands.recv() => if cmd.is_none() { Next::End } else { Next::StartNow },
                }
            }
            Err(StartError::Other(e)) => {
                tracing::error!("{}: start failed: {e}", self.slot.unit);
                self.failure(format!("start failed: {e}")).await
            }
        }
    }

    /// Waits for the instance to go away, handling commands meanwhile.
    async fn running(&mut self) -> Next {
        self.set(SlotState::Running, "");
        let since = Instant::now();
        let mut failed = false;
        let mut restart = false;
        let template = self.template_mode();
        let mut drain_stopped = false;
        // Only an instance that was already running when its drain began is
        // stopped at the deadline: one started after it (to serve what was
        // still queued) runs until it is idle, or it would be started and
        // stopped again and again while connections keep arriving.
        let up_since = tokio::time::Instant::now();
        // Retiring (see `SlotStatus::retiring`): looks at the queue every
        // DRAIN_GRACE; empty twice in a row, the instance is stopped
        // (SIGTERM: it finishes what it accepted).
        let mut empty_checks = 0;
        loop {
            let mut state_changed = false;
            let retire_check =
                !drain_stopped && self.draining() && self.slot.status.borrow().retiring;
            let drain_deadline = self
                .drain_deadline
                .filter(|d| !drain_stopped && up_since < *d);
            tokio::select! {
                // A drained instance that never goes idle (keep-alive
                // clients) is stopped: SIGTERM, then TimeoutStopSec=.
                _ = sleep_until_some(drain_deadline) => {
                    tracing::info!(
                        "{}: still running when its drain timed out (DrainTimeoutSec=); stopping it",
                        self.slot.unit
                    );
                    drain_stopped = true;
                    self.stop_unit().await;
                }
                _ = tokio::time::sleep(DRAIN_GRACE), if retire_check => {
                    if any_queued(&self.slot.sockets) {
                        empty_checks = 0;
                    } else {
                        empty_checks += 1;
                    }
                    if empty_checks >= 2 {
                        tracing::info!(
                            "{}: its old sockets are empty; stopping it so the new ones get it",
                            self.slot.unit
                        );
                        drain_stopped = true;
                        self.stop_unit().await;
                    }
                }
                ev = self.events.recv() => match ev {
                    None => return Next::End,
                    Some(UnitEvent::Failed) => {
                        failed = true;
                        state_changed = true;
                    }
                    Some(UnitEvent::Inactive) => state_changed = true,
                    Some(UnitEvent::Removed) => break,
                    Some(UnitEvent::HandedOff) => {}
                },
                cmd = self.commands.recv() => match cmd {
                    None => return Next::End,
                    Some(SlotCommand::Stop) => self.stop_unit().await,
                    Some(SlotCommand::Restart) => {
                        restart = true;
                        self.stop_unit().await;
                    }
                    Some(SlotCommand::KillAndRestart) => {
                        restart = true;
                        self.kill_unit().await;
                    }
                    Some(SlotCommand::Start) => {}
                    Some(SlotCommand::Drain) => self.mark_draining(),
                },
            }
            // A transient unit ends with UnitRemoved (CollectMode=); a unit
            // file's instance may stay loaded, so its state decides, asked
            // now (the signal may be stale: it died again since, or restarts).
            if template && state_changed {
                match instance_state(&self.shared, &self.slot.unit).await {
                    Some(st) if st.is_up() => {
                        if failed {
                            tracing::info!(
                                "{}: failed and restarting itself (Restart=); it keeps its sockets",
                                self.slot.unit
                            );
                            failed = false;
                        }
                    }
                    Some(st) => {
                        if st.active_state == "failed" {
                            failed = true;
                            // Clears the failure (and systemd's start rate
                            // limit): our own backoff decides from here. Its
                            // `inactive` signal arrives while we back off.
                            let _ = self
                                .shared
                                .manager()
                                .reset_failed_unit(&self.slot.unit)
                                .await;
                        }
                        break;
                    }
                    None => break,
                }
            }
        }
        let lived = since.elapsed();
        if restart {
            tracing::info!("{}: restarting", self.slot.unit);
            self.consecutive_failures = 0;
            return Next::StartNow;
        }
        if failed {
            if lived >= CRASH_LOOP_RESET {
                self.consecutive_failures = 0;
            }
            return self
                .failure(format!("instance failed after {lived:.1?}"))
                .await;
        }
        tracing::debug!("{}: exited after {lived:?}", self.slot.unit);
        self.consecutive_failures = 0;
        Next::Watch
    }

    async fn stop_unit(&self) {
        if let Err(e) = self
            .shared
            .manager()
            .stop_unit(&self.slot.unit, "replace")
            .await
        {
            tracing::warn!("{}: StopUnit: {e}", self.slot.unit);
        }
    }

    /// `SIGKILL` to every process of the unit.
    async fn kill_unit(&self) {
        if let Err(e) = self
            .shared
            .manager()
            .kill_unit(&self.slot.unit, "all", libc::SIGKILL)
            .await
        {
            tracing::warn!("{}: KillUnit: {e}", self.slot.unit);
        }
    }

    /// Counts a failure: backoff, or `failed` after too many in a row.
    async fn failure(&mut self, what: String) -> Next {
        self.consecutive_failures += 1;
        self.slot.status.borrow_mut().failures += 1;
        if self.consecutive_failures >= FAILURES_BEFORE_FAILED {
            let reason = format!(
                "{what}; {} failures in a row, giving up until `distributectl start {}@{}`",
                self.consecutive_failures, self.slot.name, self.slot.index
            );
            return self.fail(reason).await;
        }
        let delay = backoff(self.consecutive_failures);
        let reason = format!("{what}; next start in {delay:?}");
        tracing::warn!("{}: {reason}", self.slot.unit);
        self.set(SlotState::Backoff, &reason);
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            return tokio::select! {
                _ = &mut sleep => Next::Watch,
                cmd = self.commands.recv() => match cmd {
                    None => Next::End,
                    Some(SlotCommand::Start | SlotCommand::Restart) => {
                        self.consecutive_failures = 0;
                        Next::StartNow
                    }
                    Some(SlotCommand::Stop | SlotCommand::KillAndRestart) => Next::Watch,
                    Some(SlotCommand::Drain) => { self.mark_draining(); Next::Watch }
                },
                // Only a hand-off (someone else started it) ends the backoff;
                // e.g. the `inactive` of our own ResetFailedUnit() does not.
                ev = self.events.recv() => match self.event_while_down(ev) {
                    Next::Watch => continue,
                    next => next,
                },
            };
        }
    }

    /// The `failed` state: sockets unwatched until an operator intervenes.
    async fn fail(&mut self, reason: String) -> Next {
        tracing::error!("{}: failed: {reason}", self.slot.unit);
        self.set(SlotState::Failed, &reason);
        loop {
            let cmd = tokio::select! {
                cmd = self.commands.recv() => cmd,
                ev = self.events.recv() => match self.event_while_down(ev) {
                    Next::Watch => continue,
                    next => {
                        self.consecutive_failures = 0;
                        self.starts.clear();
                        return next;
                    }
                },
            };
            match cmd {
                None => return Next::End,
                Some(SlotCommand::Start | SlotCommand::Restart) => {
                    self.consecutive_failures = 0;
                    self.starts.clear();
                    return Next::StartNow;
                }
                Some(SlotCommand::Stop | SlotCommand::KillAndRestart) => {}
                // Nothing can serve the queue of a failed slot: close it.
                Some(SlotCommand::Drain) => return Next::End,
            }
        }
    }

    /// Systemd's socket trigger limit, applied to this slot's starts.
    fn trigger_limit_hit(&mut self) -> Option<String> {
        let spec = self.spec.borrow();
        let interval = spec
            .options
            .trigger_limit_interval_usec
            .map(Duration::from_micros)
            .unwrap_or(DEFAULT_TRIGGER_INTERVAL);
        let burst = spec
            .options
            .trigger_limit_burst
            .unwrap_or(DEFAULT_TRIGGER_BURST);
        if interval.is_zero() || burst == 0 {
            return None; // disabled, as in systemd
        }
        let now = Instant::now();
        while self
            .starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > interval)
        {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        (self.starts.len() > burst as usize).then(|| {
            format!(
                "trigger limit hit: more than {burst} starts within {interval:?} (TriggerLimitIntervalSec=, TriggerLimitBurst=)"
            )
        })
    }
}

pub use crate::systemd::unit_object_path;

/// Exponential backoff: `BACKOFF_START * 2^(n-1)`, capped at `BACKOFF_MAX`.
pub fn backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(16);
    (BACKOFF_START * (1u32 << shift)).min(BACKOFF_MAX)
}

enum StartError {
    Exists,
    Bus(String),
    Other(String),
}

impl StartError {
    /// A call that timed out is systemd's answer being late, not the
    /// connection gone: count it as a failed start (backoff, then again)
    /// rather than waiting for a reconnect that never comes. Anything else
    /// is the connection, not the instance.
    fn from_bus(e: zbus::Error) -> StartError {
        match &e {
            zbus::Error::InputOutput(io) if io.kind() == io::ErrorKind::TimedOut => {
                StartError::Other(format!("systemd did not answer: {e}"))
            }
            _ => StartError::Bus(e.to_string()),
        }
    }
}

async fn start_instance(
    shared: &SystemdLink,
    spec: &SocketSpec,
    slot: &Slot,
) -> Result<(), StartError> {
    let template = matches!(*slot.common.mode.borrow(), Mode::Template { .. });
    if template {
        return start_template_instance(shared, &slot.unit).await;
    }
    let mut exec = spec.exec.for_instance(&spec.name, slot.index);
    if spec.options.steering == Steering::Cpu && exec.cpu_affinity.is_empty() {
        // Connections processed on CPU c land on socket c % N: run instance i there.
        exec.cpu_affinity = crate::sockets::cpus_for_slot(slot.index, slot.common.size.get());
    }
    let fd_name = spec.fd_name();
    // Copies, not a borrow across the call (the fds are dup'ed by systemd anyway).
    let companions = companion_fds(slot).map_err(|e| StartError::Other(format!("dup: {e}")))?;
    let fds = instance_fds(spec, slot, &companions);
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
    let props = unit::properties_described(
        &spec.name,
        spec.description.as_deref(),
        &spec.documentation,
        slot.index,
        &exec,
        hand_off,
    );
    let props: Vec<(&str, zbus::zvariant::Value<'_>)> =
        props.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    match shared
        .manager()
        .start_transient_unit(&slot.unit, "fail", &props, &[])
        .await
    {
        Ok(_job) => Ok(()),
        Err(zbus::Error::MethodError(name, msg, _))
            if name.as_str() == "org.freedesktop.systemd1.UnitExists" =>
        {
            tracing::debug!("{}: UnitExists: {}", slot.unit, msg.unwrap_or_default());
            Err(StartError::Exists)
        }
        Err(e @ zbus::Error::MethodError(..)) => Err(StartError::Other(e.to_string())),
        Err(e) => Err(StartError::from_bus(e)),
    }
}

/// The fds instance `slot` gets, in config order ([`SocketSpec::fd_order`]): its
/// own socket of each distributed listener, the shared one of each companion.
pub fn instance_fds<'a>(
    spec: &SocketSpec,
    slot: &'a Slot,
    companions: &'a [std::os::fd::OwnedFd],
) -> Vec<BorrowedFd<'a>> {
    let order = spec.fd_order();
    // A reload may have changed the listeners since the slot was bound (it
    // then replaces the sockets): hand over what exists.
    if order.len() != slot.sockets.len() + companions.len() {
        return slot
            .sockets
            .iter()
            .map(|s| s.socket.as_fd())
            .chain(companions.iter().map(|c| c.as_fd()))
            .collect();
    }
    order
        .into_iter()
        .map(|r| match r {
            distribute_config::FdRef::Distributed(i) => slot.sockets[i].socket.as_fd(),
            distribute_config::FdRef::Companion(i) => companions[i].as_fd(),
        })
        .collect()
}

/// Copies of the slot's companion fds (same sockets), for [`instance_fds`].
pub fn companion_fds(slot: &Slot) -> io::Result<Vec<std::os::fd::OwnedFd>> {
    slot.common
        .companions
        .borrow()
        .iter()
        .map(|c| c.fd.try_clone())
        .collect()
}

/// Template mode: `StartUnit` of the unit file's own instance; it fetches its
/// sockets from the hand-off while it starts.
async fn start_template_instance(shared: &SystemdLink, unit: &str) -> Result<(), StartError> {
    match shared.manager().start_unit(unit, "replace").await {
        Ok(_job) => Ok(()),
        Err(e @ zbus::Error::MethodError(..)) => Err(StartError::Other(e.to_string())),
        Err(e) => Err(StartError::from_bus(e)),
    }
}

/// systemd's view of a loaded instance.
pub struct InstanceState {
    /// `ActiveState`.
    pub active_state: String,
    /// Whether a job is queued for it.
    pub job: bool,
}

impl InstanceState {
    /// Up, on its way up, restarting itself (`Restart=`), or with a job queued
    /// (e.g. our own start, right after an `inactive`).
    pub fn is_up(&self) -> bool {
        self.job || !matches!(self.active_state.as_str(), "inactive" | "failed")
    }
}

/// Whether `unit` is loaded and up (see [`InstanceState::is_up`]).
pub async fn instance_is_up(shared: &SystemdLink, unit: &str) -> bool {
    instance_state(shared, unit)
        .await
        .is_some_and(|st| st.is_up())
}

/// The state of `unit`, or `None` if it is not loaded (or systemd cannot say).
pub async fn instance_state(shared: &SystemdLink, unit: &str) -> Option<InstanceState> {
    let manager = shared.manager();
    let path = manager.get_unit(unit).await.ok()?;
    let proxy = unit_at(manager.inner().connection(), path).await.ok()?;
    let active_state = proxy.active_state().await.ok()?;
    let job = proxy.job().await.is_ok_and(|(id, _)| id != 0);
    Some(InstanceState { active_state, job })
}

/// The unit file of `unit` when it is not running and systemd loads it from a
/// file on disk rather than as one of our transient units: a template
/// `NAME@.service` with a unit file, for which systemd refuses every
/// `StartTransientUnit` ("was already loaded or has a fragment file").
async fn fragment_on_disk(shared: &SystemdLink, unit: &str) -> Option<String> {
    let manager = shared.manager();
    let path = manager.load_unit(unit).await.ok()?;
    let proxy = unit_at(manager.inner().connection(), path).await.ok()?;
    let state = proxy.active_state().await.ok()?;
    if !matches!(state.as_str(), "inactive" | "failed") {
        return None; // running: something to adopt
    }
    let fragment = proxy.fragment_path().await.ok()?;
    (!fragment.is_empty() && !fragment.starts_with("/run/systemd/transient/")).then_some(fragment)
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
        // A shut-down socket stays ready for tokio ("read closed" survives
        // `clear_ready()`): looping would spin without yielding and freeze
        // the activator. The slot cannot serve it any more: say so.
        if guard.ready().is_read_closed() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the listening socket was shut down",
            ));
        }
        // tokio's readiness is edge-triggered and may be stale; ask the kernel.
        if queued(sockets[i].socket.as_fd())? {
            return Ok(());
        }
        guard.clear_ready();
    }
}

fn any_queued(sockets: &[BoundSocket]) -> bool {
    sockets
        .iter()
        .any(|s| queued(s.socket.as_fd()).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_escape_like_systemd() {
        for (unit, want) in [
            (
                "web@0.service",
                "/org/freedesktop/systemd1/unit/web_400_2eservice",
            ),
            (
                "a-b.service",
                "/org/freedesktop/systemd1/unit/a_2db_2eservice",
            ),
            // A leading digit is escaped too (systemd's bus_label_escape).
            (
                "1web@0.service",
                "/org/freedesktop/systemd1/unit/_31web_400_2eservice",
            ),
        ] {
            assert_eq!(unit_object_path(unit), want);
        }
    }

    #[test]
    fn a_timed_out_call_is_a_failed_start_not_a_lost_bus() {
        let timeout = zbus::Error::InputOutput(std::sync::Arc::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "method call timed out",
        )));
        assert!(
            matches!(StartError::from_bus(timeout), StartError::Other(m) if m.starts_with("systemd did not answer"))
        );
        let gone = zbus::Error::InputOutput(std::sync::Arc::new(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "broken pipe",
        )));
        assert!(matches!(StartError::from_bus(gone), StartError::Bus(_)));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
