//! One served socket config ([`ServedSocket`], `org.distribute1.Socket`): its
//! N slots, reconciling with a new version of the config, rescaling and
//! removal.
//!
//! Rescaling never resets a queued connection:
//! - **grow N→M**: bind M-N more sockets per address; they join the same
//!   reuseport groups (appended, so socket i stays at position i).
//! - **shrink N→M**: steer new connections to sockets 0..M-1 with a cBPF
//!   program ([`crate::steering`]), let slots M..N-1 drain (their instances
//!   serve what is queued and exit on idle), then close them highest first
//!   and return the group to the kernel's hash.
//!
//! Rescales of one config are serialized; a grow waits for a running drain.

use crate::companion;
use crate::control::{ControlError, Instance, InstanceInfo, SocketInfo};
use crate::fdstore::{fd_name, FdStore};
use crate::sockets::{self, BindError, BoundSocket};
use crate::steering;
use crate::supervisor::{self, Begin, Slot, SlotCommand, SlotState, SocketCommon, SystemdLink};
use crate::systemd::ServiceProxy;
use crate::template::Mode;
use distribute_config::{Activation, Distribute, ListenKind, SocketSpec, Steering};
use std::cell::{Cell, RefCell};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long the slots of a removed config may take to drain before their
/// sockets are closed anyway (a removed config gets no new home for its
/// traffic, so under steady load its queues would never run empty).
pub const REMOVE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// `WarmQueueDepth=` default: warm another instance when every warm one has
/// more than this many connections waiting.
pub const DEFAULT_WARM_QUEUE_DEPTH: u32 = 4;
/// How often the warm-steering monitor looks at queue depths, only while an
/// instance of the config runs (an idle config costs no wakeups).
pub const WARM_TICK: Duration = Duration::from_millis(10);
/// Ticks in a row with short queues before the warm pool shrinks by one.
pub const WARM_SHRINK_TICKS: u32 = 100;
/// `Steering=warm`: an instance that used at least this share of a CPU
/// (its cgroup's `cpu.stat`) over the last [`WARM_BUSY_WINDOW`] counts as
/// busy, like one with a long queue: keep-alive work, which never shows in
/// the accept queue, grows the pool too.
pub const WARM_BUSY: f64 = 0.5;
/// How often the warm monitor reads the instances' CPU time.
pub const WARM_BUSY_WINDOW: Duration = Duration::from_millis(100);

/// A slot as its group holds it.
pub struct SlotHandle {
    /// The slot (shared with its task).
    pub slot: Rc<Slot>,
    /// Commands to its task.
    pub commands: mpsc::UnboundedSender<SlotCommand>,
    /// The task; ends once the slot drained.
    pub task: Option<JoinHandle<()>>,
}

/// One served socket config: what a `NAME.socket` file is at run time (the
/// D-Bus `Socket` object, `distributectl status NAME`). Its instances run in
/// slots, one per socket index.
pub struct ServedSocket {
    /// Config name.
    pub name: String,
    /// The effective spec; slots read it at every start, so a reload that only
    /// changes `[Service]` applies to the next instance started. Set by
    /// [`ServedSocket::serve`] and [`ServedSocket::reconcile`] only.
    spec: Rc<RefCell<Rc<SocketSpec>>>,
    /// Slots by index; draining ones stay here until closed.
    pub slots: RefCell<Vec<SlotHandle>>,
    /// Last reload error for this config ("" if none).
    error: RefCell<String>,
    /// What its slots have in common (mode, N, wake-ups, companions).
    pub common: Rc<SocketCommon>,
    /// `Steering=warm`: how many sockets (from index 0) get new connections.
    warm: Cell<u32>,
    rescale_lock: tokio::sync::Mutex<()>,
    drain: RefCell<Option<JoinHandle<()>>>,
    /// N asked for while a shrink was draining: applied when it ends (a
    /// rescale never waits for a drain).
    queued: Cell<Option<u32>>,
    /// Watches the companion listeners while no instance runs.
    companion_task: RefCell<Option<JoinHandle<()>>>,
    /// The sockets it replaced still share its reuseport groups (until
    /// [`ServedSocket::retire`] closes them): a rescale waits for that, queued.
    behind: Cell<bool>,
    /// A replacement is binding sockets into our reuseport groups: new
    /// connections must stay on ours until its program takes over.
    pinned: Cell<bool>,
    /// Its sockets were replaced on reload ([`ServedSocket::retire`]): it no longer
    /// steers the reuseport groups it shares with its successor.
    retired: Cell<bool>,
    /// While a replaced config's old sockets share reuseport groups with
    /// ours: per `Listen*=` line, the kernel position of each slot's socket
    /// (`None`: position i is socket i).
    positions: RefCell<Vec<Option<Vec<u32>>>>,
    /// (listen line, slot) left out of steering while a close moves it.
    avoid: RefCell<Vec<(usize, u32)>>,
    /// Listening sockets that only pad a shared reuseport group so the old
    /// sockets' closes leave ours at positions 0..N (see [`ServedSocket::retire`]).
    pads: RefCell<Vec<Vec<socket2::Socket>>>,
}

/// Per unit name of a replaced group's instances: fires (or is dropped) once
/// that instance is gone, so the new slot of that name may begin.
pub type Holds = std::collections::HashMap<String, oneshot::Receiver<()>>;

/// A slot task that ends when dropped (a held slot's inner task).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why replacing `a`'s sockets by `b`'s cannot be done with both bound at once
/// (then the old ones drain and close before the new ones are bound: a gap in
/// which connections are refused), or `None`.
pub fn replacement_needs_gap(a: &SocketSpec, b: &SocketSpec) -> Option<String> {
    if !a.companions.is_empty() || !b.companions.is_empty() {
        return Some(
            "it has AF_UNIX or FIFO listeners, whose paths and abstract names can be bound only once"
                .into(),
        );
    }
    for l in &b.listen {
        if !a
            .listen
            .iter()
            .any(|o| o.kind == l.kind && o.addr == l.addr)
        {
            continue;
        }
        let (x, y) = (&a.options, &b.options);
        // The kernel puts sockets into one reuseport group only if these
        // match (inet_reuseport_add_sock); two groups on one port, and it
        // keeps choosing the older one while it is open.
        if l.addr.is_ipv6() && x.bind_ipv6_only != y.bind_ipv6_only {
            return Some(format!(
                "BindIPv6Only= changed for {}: sockets that differ in IPV6_V6ONLY do not share a reuseport group",
                l.original
            ));
        }
        if x.bind_to_device != y.bind_to_device {
            return Some(format!(
                "BindToDevice= changed for {}: sockets bound to different devices do not share a reuseport group",
                l.original
            ));
        }
        if x.socket_protocol != y.socket_protocol {
            return Some(format!(
                "SocketProtocol= changed for {}: sockets of different protocols do not share a reuseport group",
                l.original
            ));
        }
    }
    None
}

/// N for a spec (`Distribute=cpus`: the CPUs in our affinity set). The
/// daemon never resolves N: [`ServedSocket::serve`] and [`ServedSocket::reconcile`] do.
fn resolve_n(spec: &SocketSpec) -> u32 {
    match spec.distribute {
        Distribute::Count(n) => n,
        Distribute::Cpus => sockets::cpus_in_affinity(),
    }
}

/// How many distributed sockets serving `spec` takes (for
/// [`FdStore::room_for`]).
pub fn sockets_wanted(spec: &SocketSpec) -> usize {
    resolve_n(spec) as usize * spec.listen.len()
}

/// What [`ServedSocket::reconcile`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// N changed: the rescale's summary (a shrink completes in the
    /// background).
    Rescaled(String),
    /// Something other than N and the sockets changed (`[Service]`, socket
    /// options applied in place, limits, timeouts).
    Updated,
    /// Nothing changed.
    Unchanged,
}

/// What a new version of a served config asks of its sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketChange {
    /// Nothing.
    None,
    /// Options applied to the sockets in place ([`refreshable_change`]).
    Refresh,
    /// New sockets ([`socket_level_change`]), bound next to the old ones.
    Replace,
    /// New sockets, bound only once the old ones are closed; why
    /// ([`replacement_needs_gap`]).
    ReplaceWithGap(String),
}

impl SocketChange {
    /// Whether it needs new sockets.
    pub fn new_sockets(&self) -> bool {
        matches!(
            self,
            SocketChange::Replace | SocketChange::ReplaceWithGap(_)
        )
    }
}

/// The policy for a reload: which [`SocketChange`] going from `a` to `b` is.
pub fn socket_change(a: &SocketSpec, b: &SocketSpec) -> SocketChange {
    if socket_level_change(a, b) {
        match replacement_needs_gap(a, b) {
            Some(why) => SocketChange::ReplaceWithGap(why),
            None => SocketChange::Replace,
        }
    } else if refreshable_change(a, b) {
        SocketChange::Refresh
    } else {
        SocketChange::None
    }
}

/// Whether two specs differ in anything that needs new sockets: addresses,
/// options fixed at bind time, instance names. Options a listening socket
/// takes any time ([`refreshable_change`]) do not count.
pub fn socket_level_change(a: &SocketSpec, b: &SocketSpec) -> bool {
    let norm = |s: &SocketSpec| {
        let mut o = without_refreshable(s);
        o.activation = Default::default();
        o.trigger_limit_burst = None;
        o.trigger_limit_interval_usec = None;
        o.file_descriptor_name = None;
        o.warm_queue_depth = None;
        o.drain_timeout_usec = None;
        o.stuck_timeout_usec = None;
        o.stuck_restart_usec = None;
        o
    };
    // Companions by what they bind, not by the line they are on.
    let companions = |s: &SocketSpec| {
        s.companions
            .iter()
            .map(|c| (c.kind, c.path.clone(), c.position))
            .collect::<Vec<_>>()
    };
    a.listen != b.listen
        || companions(a) != companions(b)
        || a.service != b.service
        || a.instance != b.instance
        || norm(a) != norm(b)
}

/// Whether the options that [`sockets::refresh_stored`] applies to bound,
/// listening sockets differ: `Backlog=`, buffers, `NoDelay=`, `KeepAlive=`,
/// `DeferAcceptSec=`. Applied in place, so no queue is touched.
pub fn refreshable_change(a: &SocketSpec, b: &SocketSpec) -> bool {
    let pick = |s: &SocketSpec| {
        let o = &s.options;
        (
            o.backlog,
            o.receive_buffer,
            o.send_buffer,
            o.no_delay,
            o.keep_alive,
            o.defer_accept_usec,
        )
    };
    pick(a) != pick(b)
}

fn without_refreshable(s: &SocketSpec) -> distribute_config::SocketOptions {
    let mut o = s.options.clone();
    o.backlog = None;
    o.receive_buffer = None;
    o.send_buffer = None;
    o.no_delay = false;
    o.keep_alive = false;
    o.defer_accept_usec = None;
    o
}

fn bind_slot_sockets(
    spec: &SocketSpec,
    index: u32,
    store: &FdStore,
) -> Result<Vec<BoundSocket>, BindError> {
    let mut out = Vec::with_capacity(spec.listen.len());
    for (l, listen) in spec.listen.iter().enumerate() {
        let name = fd_name(&spec.name, l, index);
        let stored = store.take(&name);
        let had_stored = stored.is_some();
        let reused =
            stored.and_then(|fd| sockets::reuse_stored(listen, spec.options.socket_protocol, fd));
        if let Some(s) = &reused {
            if let Err(e) = sockets::refresh_stored(s, listen, &spec.options) {
                tracing::warn!(
                    "{name}: applying the config's socket options to the stored socket: {e}"
                );
            }
        } else if had_stored {
            // Another address or type now: our copy is closed; systemd's
            // must go too, or it stays bound (and, in a reuseport group,
            // gets connections nobody accepts) under a name we reuse.
            tracing::info!("{name}: the stored socket no longer matches the config; replacing it");
            store.remove(&name);
        }
        let socket = match reused {
            Some(s) => s,
            None => {
                let s = sockets::bind_one(listen, &spec.options)?;
                store.store(&name, s.as_fd());
                s
            }
        };
        out.push(BoundSocket {
            listen: listen.clone(),
            socket,
        });
    }
    Ok(out)
}

impl ServedSocket {
    /// Binds (or takes back from the fd store) every socket of `spec` and
    /// starts supervising its slots. All or nothing.
    ///
    /// `after`: the group whose sockets these replace, still open and
    /// draining, and for each of its instances' units a signal that it is
    /// gone: our slot of the same unit name starts watching only then (one
    /// unit cannot serve both). On an address both configs listen on, our
    /// sockets join its reuseport groups, behind its own (and behind pads,
    /// see [`ServedSocket::retire`]), and the steering program sends every new
    /// connection to ours.
    pub async fn serve(
        shared: &Rc<SystemdLink>,
        store: &Rc<FdStore>,
        spec: SocketSpec,
        mode: Mode,
        after: Option<(&Rc<ServedSocket>, Holds)>,
    ) -> Result<Rc<ServedSocket>, String> {
        let n = resolve_n(&spec);
        // Take back the stored sockets above N too (a restart during a
        // shrink): they drain through `rescale` below, highest first,
        // because closing them in any other order would reorder the group.
        let open = n.max(store.stored_slots(&spec.name));
        let (old, mut holds) = match after {
            Some((g, h)) => (Some(g), h),
            None => (None, Default::default()),
        };
        // Shared reuseport groups: pad the old sockets up to `open`.
        let mut pads: Vec<Vec<socket2::Socket>> = spec.listen.iter().map(|_| Vec::new()).collect();
        let mut positions: Vec<Option<Vec<u32>>> = vec![None; spec.listen.len()];
        if let Some(old) = old {
            // Until our program is attached (below, once every slot is in
            // place), new connections go to the old sockets only: the
            // kernel's hash would also pick the pads, whose queues nobody
            // serves (reset when they close).
            old.pinned.set(true);
            old.apply_steering();
            let b = old.slots.borrow().len() as u32;
            let b_padded = b.max(open);
            let old_spec = old.spec.borrow().clone();
            for (l, listen) in spec.listen.iter().enumerate() {
                if !old_spec
                    .listen
                    .iter()
                    .any(|o| o.kind == listen.kind && o.addr == listen.addr)
                {
                    continue;
                }
                for _ in b..b_padded {
                    pads[l]
                        .push(sockets::bind_one(listen, &spec.options).map_err(|e| e.to_string())?);
                }
                positions[l] = Some((b_padded..b_padded + open).collect());
            }
        }
        let mut bound = Vec::with_capacity(open as usize);
        for i in 0..open {
            match bind_slot_sockets(&spec, i, store) {
                Ok(s) => bound.push(s),
                Err(e) if i >= n => {
                    tracing::warn!(
                        "{}: cannot take back the sockets of instance {i} to drain them: {e}",
                        spec.name
                    );
                    break;
                }
                Err(e) => {
                    // Close the sockets before telling systemd to drop its
                    // copies: FDSTOREREMOVE needs a socket of its own, and
                    // after EMFILE there is none while these are open (the
                    // copies would then keep the port bound, unserved).
                    drop(bound);
                    forget_stored(&spec, i, store);
                    return Err(e.to_string());
                }
            }
        }
        // The listeners the kernel cannot distribute: bound once, shared.
        let companions = match companion::bind_all(&spec, store) {
            Ok(c) => c,
            Err(e) => {
                drop(bound);
                forget_stored(&spec, open.saturating_sub(1), store);
                return Err(e.to_string());
            }
        };
        let group = Rc::new(ServedSocket {
            name: spec.name.clone(),
            spec: Rc::new(RefCell::new(Rc::new(spec))),
            slots: RefCell::new(Vec::new()),
            error: RefCell::new(String::new()),
            common: Rc::new(SocketCommon {
                mode: RefCell::new(mode),
                companions: RefCell::new(companions),
                ..SocketCommon::default()
            }),
            warm: Cell::new(1),
            rescale_lock: tokio::sync::Mutex::new(()),
            drain: RefCell::new(None),
            queued: Cell::new(None),
            companion_task: RefCell::new(None),
            retired: Cell::new(false),
            pinned: Cell::new(false),
            behind: Cell::new(old.is_some()),
            positions: RefCell::new(positions),
            avoid: RefCell::new(Vec::new()),
            pads: RefCell::new(pads),
        });
        group.common.size.set(bound.len() as u32);
        for (i, sockets) in (0u32..).zip(bound) {
            let unit = group.spec.borrow().instance_unit(i);
            match holds.remove(&unit) {
                Some(hold) => group.spawn_held(shared, i, sockets, hold),
                None => group.spawn(shared, i, sockets).await,
            }
        }
        group.apply_steering();
        if group.spec.borrow().options.steering == Steering::Warm {
            tokio::task::spawn_local(warm_monitor(Rc::downgrade(&group), shared.clone()));
        }
        if !group.common.companions.borrow().is_empty() {
            let task = tokio::task::spawn_local(companion_monitor(Rc::downgrade(&group)));
            *group.companion_task.borrow_mut() = Some(task);
        }
        tokio::task::spawn_local(crate::health::monitor(
            Rc::downgrade(&group),
            shared.clone(),
        ));
        if old.is_none() && group.active() > n {
            // Sockets of a shrink that a restart interrupted: finish it.
            tracing::info!(
                "{}: the fd store still holds the sockets of instances {n}..{}; draining them",
                group.name,
                group.active() - 1
            );
            if let Err(e) = group.rescale(shared, store, n).await {
                tracing::warn!("{}: {e}", group.name);
            }
        }
        Ok(group)
    }

    /// Brings a served config to `spec`, a new version of it that needs no
    /// new sockets ([`socket_change`] is `None` or `Refresh`; replacing
    /// sockets is the daemon's, as it involves two served configs): applies
    /// changed socket options in place, takes the instance mode that `mode`
    /// (the template unit file's presence, decided again) gives, makes
    /// `spec` the effective spec, starts failed instances again, and
    /// rescales to its N (a reload returns to the file's `Distribute=`, also
    /// after a run-time `SetDistribute()`). An error of `mode` keeps the last
    /// good config (and is the config's error until the next reload).
    pub async fn reconcile(
        self: &Rc<Self>,
        shared: &Rc<SystemdLink>,
        store: &Rc<FdStore>,
        spec: SocketSpec,
        mode: impl std::future::Future<Output = Result<Mode, String>>,
    ) -> Result<Reconciled, String> {
        let old = self.spec();
        if refreshable_change(&old, &spec) {
            // Backlog=, buffers, NoDelay=, KeepAlive=, DeferAcceptSec=: set
            // on the sockets as they are, queues untouched.
            self.refresh_sockets(&spec);
            tracing::info!("{}: socket options applied in place", self.name);
        }
        match mode.await {
            Ok(mode) => {
                let previous = self.common.mode.replace(mode.clone());
                if previous != mode {
                    tracing::info!(
                        "{}: instances now start in {} mode{}",
                        self.name,
                        mode.as_str(),
                        if mode.unit_file().is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", mode.unit_file())
                        }
                    );
                }
            }
            Err(e) => {
                self.set_error(format!("{e} (still serving the last good config)"));
                return Err(e);
            }
        }
        let m = resolve_n(&spec);
        let unchanged = *old == spec;
        *self.spec.borrow_mut() = Rc::new(spec);
        let retried = self.retry_failed();
        if retried > 0 {
            tracing::info!(
                "{}: reload: starting {retried} failed instance(s) again",
                self.name
            );
        }
        if m != self.active() {
            return match self.rescale(shared, store, m).await {
                Ok(s) => Ok(Reconciled::Rescaled(s)),
                Err(e) => {
                    self.set_error(e.to_string());
                    Ok(Reconciled::Rescaled(e.to_string()))
                }
            };
        }
        Ok(if unchanged {
            Reconciled::Unchanged
        } else {
            Reconciled::Updated
        })
    }

    /// The effective spec.
    pub fn spec(&self) -> Rc<SocketSpec> {
        self.spec.borrow().clone()
    }

    /// What [`socket_change`] going from the effective spec to `spec` is.
    pub fn socket_change(&self, spec: &SocketSpec) -> SocketChange {
        socket_change(&self.spec.borrow(), spec)
    }

    /// Sets the config's error (shown as `Error`); "" clears it.
    pub fn set_error(&self, error: String) {
        *self.error.borrow_mut() = error;
    }

    /// The template unit whose drop-in its instances need, in template mode.
    pub fn template_in_use(&self) -> Option<String> {
        matches!(*self.common.mode.borrow(), Mode::Template { .. })
            .then(|| self.spec.borrow().template_unit())
    }

    /// For a replacement ([`ServedSocket::serve`] with `after`): per unit name of
    /// our slots, a sender that [`ServedSocket::retire`] fires once our instance is
    /// gone, and the receiver the new slot of that name waits on.
    pub fn hand_over(
        &self,
    ) -> (
        std::collections::HashMap<String, oneshot::Sender<()>>,
        Holds,
    ) {
        let mut release = std::collections::HashMap::new();
        let mut holds = Holds::new();
        for h in self.slots.borrow().iter() {
            let (tx, rx) = oneshot::channel();
            release.insert(h.slot.unit.clone(), tx);
            holds.insert(h.slot.unit.clone(), rx);
        }
        (release, holds)
    }

    /// Its replacement serves from now on: it stops steering, and every slot
    /// drains.
    pub fn retire_all(&self) {
        self.retired.set(true);
        for h in self.slots.borrow().iter() {
            {
                let mut st = h.slot.status.borrow_mut();
                st.retiring = true;
                st.draining = true;
            }
            let _ = h.commands.send(SlotCommand::Drain);
        }
    }

    /// Sends `cmd` to every slot, draining ones included.
    pub fn command_every(&self, cmd: SlotCommand) {
        for h in self.slots.borrow().iter() {
            let _ = h.commands.send(cmd);
        }
    }

    /// Attaches the steering program that the mode and the current N (and
    /// warm pool, any drain in progress, and stuck instances) call for, or
    /// detaches it.
    pub fn apply_steering(&self) {
        if self.retired.get() {
            return;
        }
        let slots = self.slots.borrow();
        let Some(first) = slots.first() else { return };
        let m = slots
            .iter()
            .filter(|h| !h.slot.status.borrow().draining)
            .count() as u32;
        let open = slots.len() as u32;
        // Active sockets whose instance is not stuck. When every one is,
        // steering cannot help: spread as if none were.
        let healthy: Vec<u32> = (0..m)
            .filter(|&i| slots[i as usize].slot.status.borrow().stuck.is_none())
            .collect();
        let mut program = steering::steering_program(
            self.spec.borrow().options.steering,
            m,
            open,
            self.warm.get(),
            &healthy,
        );
        if self.pinned.get() && program.is_none() {
            // The kernel's hash would spread over the sockets a replacement
            // is adding to our groups, pads included, which nobody serves.
            program = Some(steering::Program::FirstM(open));
        }
        let positions = self.positions.borrow();
        let avoid = self.avoid.borrow();
        for (l, bs) in first.slot.sockets.iter().enumerate() {
            let program = match positions.get(l).and_then(Option::as_ref) {
                Some(pos) => {
                    let avoid: Vec<u32> = avoid
                        .iter()
                        .filter(|(al, _)| *al == l)
                        .map(|&(_, i)| i)
                        .collect();
                    Some(steering::relocate(program.as_ref(), open, pos, &avoid))
                }
                None => program.clone(),
            };
            let r = match &program {
                Some(p) => steering::attach(bs.socket.as_fd(), p),
                None => steering::detach(bs.socket.as_fd()),
            };
            if let Err(e) = r {
                tracing::warn!(
                    "{}: cannot set the steering program ({program:?}) on {}: {e}",
                    self.name,
                    bs.listen.original
                );
            }
        }
    }

    /// How slot `unit` begins: an instance that outlived a restart of the
    /// activator is still running with its own copy of the socket: adopt it
    /// instead of watching.
    async fn begin_for(shared: &SystemdLink, spec: &SocketSpec, unit: &str) -> Begin {
        if supervisor::instance_is_up(shared, unit).await {
            Begin::Adopt
        } else if spec.options.activation == Activation::Eager {
            Begin::Eager
        } else {
            Begin::OnDemand
        }
    }

    /// Like [`ServedSocket::spawn`], but the slot's task (its routes, its watch)
    /// begins only once `hold` fires or is dropped: the old instance of the
    /// same unit name is gone. Meanwhile connections queue on its socket.
    fn spawn_held(
        &self,
        shared: &Rc<SystemdLink>,
        index: u32,
        sockets: Vec<BoundSocket>,
        hold: oneshot::Receiver<()>,
    ) {
        let spec = self.spec.borrow().clone();
        let unit = spec.instance_unit(index);
        let slot = Rc::new(Slot::new(
            &spec.name,
            index,
            unit,
            sockets,
            self.common.clone(),
        ));
        slot.status.borrow_mut().reason = "waiting for the old instance to drain".into();
        let (commands, rx) = mpsc::unbounded_channel();
        let (shared, spec_cell, held) = (shared.clone(), self.spec.clone(), slot.clone());
        let task = tokio::task::spawn_local(async move {
            let _ = hold.await;
            held.status.borrow_mut().reason.clear();
            let spec = spec_cell.borrow().clone();
            let begin = ServedSocket::begin_for(&shared, &spec, &held.unit).await;
            let mut inner = AbortOnDrop(supervisor::spawn_slot_with(
                shared, spec_cell, held, begin, rx,
            ));
            let _ = (&mut inner.0).await;
        });
        self.slots.borrow_mut().push(SlotHandle {
            slot,
            commands,
            task: Some(task),
        });
    }

    async fn spawn(&self, shared: &Rc<SystemdLink>, index: u32, sockets: Vec<BoundSocket>) {
        let spec = self.spec.borrow().clone();
        let unit = spec.instance_unit(index);
        let begin = ServedSocket::begin_for(shared, &spec, &unit).await;
        let slot = Rc::new(Slot::new(
            &spec.name,
            index,
            unit,
            sockets,
            self.common.clone(),
        ));
        let (commands, task) =
            supervisor::spawn_slot(shared.clone(), self.spec.clone(), slot.clone(), begin);
        self.slots.borrow_mut().push(SlotHandle {
            slot,
            commands,
            task: Some(task),
        });
    }

    /// Applies `spec`'s refreshable socket options ([`refreshable_change`]) to
    /// every socket of the group, draining ones included.
    pub fn refresh_sockets(&self, spec: &SocketSpec) {
        for h in self.slots.borrow().iter() {
            for bs in &h.slot.sockets {
                if let Err(e) = sockets::refresh_stored(&bs.socket, &bs.listen, &spec.options) {
                    tracing::warn!(
                        "{}: applying socket options to {} of {}: {e}",
                        self.name,
                        bs.listen.original,
                        h.slot.unit
                    );
                }
            }
        }
    }

    /// Slots that are not draining.
    pub fn active(&self) -> u32 {
        self.slots
            .borrow()
            .iter()
            .filter(|h| !h.slot.status.borrow().draining)
            .count() as u32
    }

    /// Sends `cmd` to slot `index` (which must be active).
    pub fn command(&self, index: u32, cmd: SlotCommand) -> Result<(), ControlError> {
        let active = self.active();
        if index >= active {
            return Err(ControlError::InvalidArgs(format!(
                "instance index {index} out of range: {} has instances 0..{}",
                self.name,
                active.saturating_sub(1)
            )));
        }
        let slots = self.slots.borrow();
        slots[index as usize]
            .commands
            .send(cmd)
            .map_err(|_| ControlError::Failed(format!("{}@{index} is shutting down", self.name)))
    }

    /// Starts again every active slot that gave up (`failed`): a reload is the
    /// operator's "try again", as `distributectl start` is for one slot.
    /// Returns how many.
    pub fn retry_failed(&self) -> usize {
        let mut n = 0;
        for h in self.slots.borrow().iter() {
            let st = h.slot.status.borrow();
            if !st.draining && st.state == SlotState::Failed {
                let _ = h.commands.send(SlotCommand::Start);
                n += 1;
            }
        }
        n
    }

    /// Sends `cmd` to every active slot.
    pub fn command_all(&self, cmd: SlotCommand) {
        for h in self.slots.borrow().iter() {
            if !h.slot.status.borrow().draining {
                let _ = h.commands.send(cmd);
            }
        }
    }

    /// Remembers `m` for when what `rescale` waits for (`why`) is over.
    fn rescale_later(&self, m: u32, why: &str, after: &str) -> Result<String, ControlError> {
        self.queued.set(Some(m));
        tracing::info!("{}: {why}", self.name);
        Ok(format!(
            "{}: {m} instances once {after} (DrainTimeoutSec=)",
            self.name
        ))
    }

    /// Changes N to `m`. Returns a summary; a shrink completes in the background.
    pub async fn rescale(
        self: &Rc<Self>,
        shared: &Rc<SystemdLink>,
        store: &Rc<FdStore>,
        m: u32,
    ) -> Result<String, ControlError> {
        if self.behind.get() {
            // The kernel positions of our sockets are in flux until the
            // replaced ones are closed; whoever asks gets an answer now.
            return self.rescale_later(
                m,
                &format!(
                    "its replaced sockets are still draining; {m} instances once they are closed"
                ),
                "the replaced sockets have drained",
            );
        }
        let _serial = self.rescale_lock.lock().await;
        if self.retired.get() {
            // Asked of this group just before a reload replaced its sockets.
            return Err(ControlError::Failed(format!(
                "{}: its sockets were just replaced by a reload; ask again",
                self.name
            )));
        }
        let draining = self
            .drain
            .borrow()
            .as_ref()
            .is_some_and(|d| !d.is_finished());
        if draining {
            // The drain ends by itself, bounded by DrainTimeoutSec=; whoever
            // asks (D-Bus, a reload) gets an answer now.
            return self.rescale_later(
                m,
                &format!("a shrink is still draining; {m} instances once it is done"),
                "the shrink in progress has drained",
            );
        }
        self.queued.set(None);
        let n = self.active();
        if m == n {
            return Ok(format!("{}: already {n} instances", self.name));
        }
        if m > n {
            let spec = self.spec.borrow().clone();
            store
                .room_for((m - n) as usize * spec.listen.len())
                .map_err(|e| ControlError::Failed(format!("{}: growing to {m}: {e}", self.name)))?;
            for i in n..m {
                let sockets = bind_slot_sockets(&spec, i, store).map_err(|e| {
                    ControlError::Failed(format!("{}: growing to {m}: {e}", self.name))
                })?;
                self.spawn(shared, i, sockets).await;
            }
            self.common.size.set(m);
            self.apply_steering();
            tracing::info!("{}: grew from {n} to {m} instances", self.name);
            return Ok(format!("{}: {n} → {m} instances", self.name));
        }
        // Shrink: steer away first, then drain the slots being removed.
        for h in &self.slots.borrow()[m as usize..] {
            h.slot.status.borrow_mut().draining = true;
        }
        self.common.size.set(m);
        self.apply_steering();
        for h in &self.slots.borrow()[m as usize..] {
            let _ = h.commands.send(SlotCommand::Drain);
        }
        let group = self.clone();
        let store = store.clone();
        let shared = shared.clone();
        let task = tokio::task::spawn_local(async move {
            group.close_draining(&store, m, None).await;
            // Our copies are closed, but systemd's fd store still holds the
            // sockets until it has read FDSTOREREMOVE; until then they are
            // in the reuseport group, and without the steering program the
            // kernel would queue connections (TCP listeners already left
            // with shutdown() above) or datagrams there, lost when systemd
            // closes them. Wait for systemd to catch up first.
            crate::fdstore::barrier().await;
            // Back to the mode's own program (for hash: the kernel's spread).
            group.apply_steering();
            tracing::info!("{}: shrink to {m} complete", group.name);
            if let Some(next) = group.queued.take() {
                // Boxed: this task is part of `rescale`'s own future.
                let again: std::pin::Pin<Box<dyn std::future::Future<Output = _>>> =
                    Box::pin(async move {
                        // The drain handle is this task: let it be finished.
                        tokio::task::yield_now().await;
                        group.rescale(&shared, &store, next).await
                    });
                tokio::task::spawn_local(async move {
                    match again.await {
                        Ok(summary) => tracing::info!("{summary}"),
                        Err(e) => tracing::warn!("{e}"),
                    }
                });
            }
        });
        *self.drain.borrow_mut() = Some(task);
        tracing::info!(
            "{}: shrinking from {n} to {m}; draining instances {m}..{}",
            self.name,
            n - 1
        );
        Ok(format!(
            "{}: {n} → {m} instances (instances {m}..{} drain and close)",
            self.name,
            n - 1
        ))
    }

    /// Closes slots `keep..` highest first, each once its task ended (drained),
    /// or when `timeout` passes.
    async fn close_draining(&self, store: &FdStore, keep: u32, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let last = {
                let mut slots = self.slots.borrow_mut();
                if slots.len() as u32 <= keep {
                    break;
                }
                slots.last_mut().and_then(|h| h.task.take())
            };
            // Whether the slot drained (its instance is gone), rather than
            // being cut off by the timeout.
            let mut drained = true;
            if let Some(mut task) = last {
                match deadline {
                    Some(d) => {
                        if tokio::time::timeout_at(d, &mut task).await.is_err() {
                            task.abort();
                            let _ = task.await;
                            drained = false;
                        }
                    }
                    None => {
                        let _ = task.await;
                    }
                }
            }
            let closed = self.slots.borrow_mut().pop();
            if let Some(h) = closed {
                let spec = self.spec.borrow().clone();
                for bs in h.slot.sockets.iter().filter(|_| drained) {
                    // Dropping our fd does not take a socket out of the
                    // reuseport group while systemd still holds its fd store
                    // copy (until it gets to our FDSTOREREMOVE: 50-100 ms
                    // later seen on 257). Once steering is detached the
                    // kernel hashes new connections onto it too, and they
                    // are reset when systemd closes it. shutdown() on a
                    // drained listener leaves the group now, in our order.
                    if bs.listen.kind == ListenKind::Stream {
                        let _ = bs.socket.shutdown(std::net::Shutdown::Both);
                    }
                }
                for l in 0..h.slot.sockets.len() {
                    store.remove(&fd_name(&spec.name, l, h.slot.index));
                }
                tracing::debug!("{}: closed the sockets of {}", self.name, h.slot.unit);
                // Dropping `h` (the last reference) closes the sockets.
            }
        }
    }

    /// Removes the whole config: drain every slot (bounded by
    /// [`REMOVE_DRAIN_TIMEOUT`]), then close everything.
    pub async fn remove(self: Rc<Self>, store: Rc<FdStore>) {
        let _serial = self.rescale_lock.lock().await;
        let pending = self.drain.borrow_mut().take();
        if let Some(drain) = pending {
            let _ = drain.await;
        }
        for h in self.slots.borrow().iter() {
            let _ = h.commands.send(SlotCommand::Drain);
        }
        self.close_draining(&store, 0, Some(REMOVE_DRAIN_TIMEOUT))
            .await;
        // Closed now, not when the last reference goes: a replacement binds
        // the same abstract names and paths next. The monitor watching them
        // goes first.
        let monitor = self.companion_task.borrow_mut().take();
        if let Some(task) = monitor {
            task.abort();
            let _ = task.await;
        }
        drop(self.common.companions.take());
        companion::forget(&self.spec.borrow(), &store, true);
        tracing::info!("{}: removed; all its sockets are closed", self.name);
        // Wakes the warm-steering and health monitors, which end on it.
        self.common.closed.set(true);
        self.common.activity.notify_one();
        self.common.health.notify_one();
    }

    /// Whether a shrink is draining (its closes move sockets in the kernel's
    /// reuseport arrays).
    pub fn shrinking(&self) -> bool {
        self.drain
            .borrow()
            .as_ref()
            .is_some_and(|d| !d.is_finished())
    }

    /// After a replacement failed to bind: back to our own steering (see
    /// `pinned`).
    pub fn unpin(&self) {
        self.pinned.set(false);
        self.apply_steering();
    }

    /// Holds off rescales (a replacement binds next to our sockets, whose
    /// positions must not change meanwhile).
    pub async fn lock_rescale(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.rescale_lock.lock().await
    }

    /// Before a replacement (no shrink in progress, see [`ServedSocket::shrinking`]):
    /// takes our sockets out of systemd's fd store (the new ones take the
    /// same names; our own fds keep ours open until [`ServedSocket::retire`]).
    pub fn begin_retiring(&self, store: &FdStore) {
        let spec = self.spec.borrow().clone();
        for h in self.slots.borrow().iter() {
            for l in 0..h.slot.sockets.len() {
                store.remove(&fd_name(&spec.name, l, h.slot.index));
            }
        }
    }

    /// Undoes [`ServedSocket::begin_retiring`]'s fd store removals (the new sockets
    /// could not be bound: we keep serving).
    pub fn restore_stored(&self, store: &FdStore) {
        let spec = self.spec.borrow().clone();
        for h in self.slots.borrow().iter() {
            for (l, bs) in h.slot.sockets.iter().enumerate() {
                store.store(&fd_name(&spec.name, l, h.slot.index), bs.socket.as_fd());
            }
        }
    }

    /// Drains and closes the sockets of `old`, replaced by `new` (reload,
    /// make-before-break). `new` is serving already and, where both listen on
    /// one address, the steering program gives it every new connection.
    ///
    /// Each old slot drains (its instance serves what is queued, then is
    /// stopped, at the latest after `DrainTimeoutSec=`); once its task ends,
    /// `release` lets the new slot of the same unit name begin. Then the old
    /// sockets close, in an order that leaves the new ones at positions
    /// 0..N of each shared reuseport group: the kernel moves the group's last
    /// socket into a closed one's place, so closing positions N-1, …, 0 moves
    /// new socket N-1, …, 0 there (pads make sure there are at least N old
    /// sockets), and the rest are closed from the end, where nothing moves.
    /// Around each move, the moving socket is left out of the program.
    /// Limit: with `Distribute=1` nothing else can take the connections
    /// during that one move (two system calls), and a connection arriving
    /// then is hashed onto any socket of the group, possibly an old one
    /// about to close.
    pub async fn retire(
        old: Rc<ServedSocket>,
        new: Rc<ServedSocket>,
        mut release: std::collections::HashMap<String, oneshot::Sender<()>>,
        shared: Rc<SystemdLink>,
        store: Rc<FdStore>,
    ) {
        // The new group keeps its size until the old sockets are gone.
        let _serial = new.rescale_lock.lock().await;
        let spec = old.spec.borrow().clone();
        let drain = spec
            .options
            .drain_timeout_usec
            .map(Duration::from_micros)
            .unwrap_or(supervisor::DEFAULT_DRAIN_TIMEOUT);
        // The drain, then SIGTERM and the instance's stop timeout.
        let limit = drain.saturating_add(REMOVE_DRAIN_TIMEOUT);
        let tasks: Vec<(String, Option<JoinHandle<()>>)> = old
            .slots
            .borrow_mut()
            .iter_mut()
            .map(|h| (h.slot.unit.clone(), h.task.take()))
            .collect();
        let waits = tasks.into_iter().map(|(unit, task)| {
            let tx = release.remove(&unit);
            let name = old.name.clone();
            async move {
                if let Some(mut task) = task {
                    if tokio::time::timeout(limit, &mut task).await.is_err() {
                        tracing::warn!("{name}: {unit} did not drain within {limit:?}; closing its old sockets anyway");
                        task.abort();
                        let _ = task.await;
                    }
                }
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
        });
        futures_util::future::join_all(waits).await;
        drop(release);
        // systemd has closed its copies of the old sockets (FDSTOREREMOVE in
        // `begin_retiring`): ours are the last, so each close below leaves
        // the reuseport group at once, in our order.
        crate::fdstore::barrier().await;
        old.close_under(&new);
        new.apply_steering();
        // Wakes the old group's monitors, which end on it.
        old.common.closed.set(true);
        old.common.activity.notify_one();
        old.common.health.notify_one();
        tracing::info!("{}: the replaced sockets are closed", old.name);
        new.behind.set(false);
        drop(_serial);
        // A rescale asked for meanwhile.
        if let Some(next) = new.queued.take() {
            match new.rescale(&shared, &store, next).await {
                Ok(summary) => tracing::info!("{summary}"),
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// The closing part of [`ServedSocket::retire`]: synchronous, so nothing else
    /// steers in between.
    fn close_under(&self, new: &ServedSocket) {
        let handles: Vec<SlotHandle> = self.slots.borrow_mut().drain(..).collect();
        let mut handles: Vec<Option<SlotHandle>> = handles.into_iter().map(Some).collect();
        let mut pads: Vec<Vec<Option<socket2::Socket>>> = new
            .pads
            .take()
            .into_iter()
            .map(|v| v.into_iter().map(Some).collect())
            .collect();
        let shared: Vec<usize> = new
            .positions
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(l, _)| l)
            .collect();
        let b = handles.len();
        let m = new.slots.borrow().len();
        let padded = pads.iter().map(Vec::len).max().unwrap_or(0) + b;
        let close = |socket: &socket2::Socket| {
            // A listener leaves the group at shutdown(), also if an instance
            // that was cut off by the timeout still holds a copy.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        };
        for step in close_plan(padded, m) {
            if let Some(j) = step.moving {
                *new.avoid.borrow_mut() = shared.iter().map(|&l| (l, j)).collect();
                new.apply_steering();
            }
            let k = step.close;
            if k < b {
                if let Some(h) = handles[k].take() {
                    for bs in &h.slot.sockets {
                        if bs.listen.kind == ListenKind::Stream {
                            close(&bs.socket);
                        }
                    }
                    // Dropping the handle closes our fds.
                }
            } else {
                for l in &shared {
                    if let Some(s) = pads
                        .get_mut(*l)
                        .and_then(|v| v.get_mut(k - b))
                        .and_then(Option::take)
                    {
                        close(&s);
                    }
                }
            }
            {
                let mut positions = new.positions.borrow_mut();
                for &l in &shared {
                    positions[l] = Some(step.positions.clone());
                }
            }
            new.avoid.borrow_mut().clear();
            new.apply_steering();
        }
        // Old sockets of addresses the new config does not listen on.
        drop(handles);
        // Only new sockets are left, at positions 0..N.
        for p in new.positions.borrow_mut().iter_mut() {
            *p = None;
        }
    }

    /// The control plane's view, with live queue depths and main PIDs.
    pub async fn info(&self, shared: &SystemdLink) -> SocketInfo {
        let spec = self.spec.borrow().clone();
        let slots: Vec<Rc<Slot>> = self.slots.borrow().iter().map(|h| h.slot.clone()).collect();
        let mut instances = Vec::with_capacity(slots.len());
        for slot in slots {
            let st = slot.status.borrow().clone();
            let main_pid = match (st.state, st.main_pid) {
                (supervisor::SlotState::Running, 0) => {
                    let pid = main_pid(shared, &slot.unit).await;
                    // Still the same life? (The state changed while we asked.)
                    let mut now = slot.status.borrow_mut();
                    if now.state == supervisor::SlotState::Running {
                        now.main_pid = pid;
                    }
                    pid
                }
                (supervisor::SlotState::Running, pid) => pid,
                _ => 0,
            };
            let queue_depth = slot
                .sockets
                .iter()
                .filter(|s| s.listen.kind == ListenKind::Stream)
                .map(|s| sockets::accept_queue_depth(&s.socket))
                .sum();
            let stuck = st.stuck.as_ref().filter(|_| !st.draining);
            instances.push(InstanceInfo {
                stuck_since_usec: stuck.map_or(0, |s| {
                    s.since
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_micros() as u64)
                }),
                instance: Instance {
                    index: slot.index,
                    unit: slot.unit.clone(),
                    state: if st.draining {
                        "draining".into()
                    } else if stuck.is_some() {
                        "stuck".into()
                    } else {
                        st.state.as_str().into()
                    },
                    main_pid,
                    activations: st.activations,
                    failures: st.failures,
                    queue_depth,
                    reason: match stuck {
                        Some(s) => s.why.clone(),
                        None => st.reason.clone(),
                    },
                },
            });
        }
        let draining = instances.iter().any(|i| i.state == "draining");
        SocketInfo {
            name: self.name.clone(),
            listen: spec
                .fd_order()
                .into_iter()
                .map(|r| match r {
                    distribute_config::FdRef::Distributed(i) => {
                        let l = &spec.listen[i];
                        format!("{}={}", l.kind.key(), l.addr)
                    }
                    distribute_config::FdRef::Companion(i) => {
                        let c = &spec.companions[i];
                        format!("{}={}", c.kind.key(), c.path)
                    }
                })
                .collect(),
            description: spec.description.clone().unwrap_or_default(),
            distribute: self.active(),
            service: spec.service.clone(),
            state: if draining { "draining" } else { "serving" }.into(),
            error: self.error.borrow().clone(),
            sources: spec
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            mode: self.common.mode.borrow().as_str().into(),
            unit_file: self.common.mode.borrow().unit_file().into(),
            instances,
        }
    }

    /// Slots whose instance we believe is loaded (to re-check after a reconnect).
    pub fn units_believed_loaded(&self) -> Vec<String> {
        self.slots
            .borrow()
            .iter()
            .filter(|h| {
                matches!(
                    h.slot.status.borrow().state,
                    supervisor::SlotState::Running | supervisor::SlotState::Starting
                )
            })
            .map(|h| h.slot.unit.clone())
            .collect()
    }

    /// Counts (running, total) for `STATUS=`.
    pub fn running(&self) -> (usize, usize) {
        let slots = self.slots.borrow();
        let up = slots
            .iter()
            .filter(|h| h.slot.status.borrow().state == supervisor::SlotState::Running)
            .count();
        (up, slots.len())
    }
}

/// One close of [`close_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseStep {
    /// The old socket (or pad, from the number of old slots on) to close.
    pub close: usize,
    /// The new socket the kernel moves into its place, if any: left out of
    /// steering around the close.
    pub moving: Option<u32>,
    /// Afterwards, the kernel position of each new socket.
    pub positions: Vec<u32>,
}

/// The closes of a replaced group's sockets in a reuseport group that holds
/// `padded` old ones (positions 0..padded, pads included; at least `m`)
/// followed by `m` new ones. The kernel fills a closed socket's position with
/// the group's last socket (`reuseport_detach_sock`), so: close positions
/// m-1, …, 0, each taking the then-last new socket (m-1, …, 0) into its final
/// place, then the rest from the end, where nothing moves. The new sockets
/// end at positions 0..m.
pub fn close_plan(padded: usize, m: usize) -> Vec<CloseStep> {
    #[derive(Clone, Copy, PartialEq)]
    enum Member {
        Old(usize),
        New(u32),
    }
    let mut array: Vec<Member> = (0..padded)
        .map(Member::Old)
        .chain((0..m as u32).map(Member::New))
        .collect();
    let targets = (0..m.min(padded))
        .rev()
        .map(Some)
        .chain((m.min(padded)..padded).map(|_| None));
    let mut plan = Vec::with_capacity(padded);
    for target in targets {
        // None: the last position, whatever is there by then.
        let p = target.unwrap_or(array.len() - 1);
        let Member::Old(close) = array[p] else {
            unreachable!("position {p} holds a new socket");
        };
        let moving = match array.last() {
            Some(&Member::New(j)) if p + 1 != array.len() => Some(j),
            _ => None,
        };
        array.swap_remove(p);
        let positions = (0..m as u32)
            .map(|j| {
                array
                    .iter()
                    .position(|x| *x == Member::New(j))
                    .expect("new sockets stay") as u32
            })
            .collect();
        plan.push(CloseStep {
            close,
            moving,
            positions,
        });
    }
    plan
}

/// One tick of the `Steering=warm` pool: what [`warm_step`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmStep {
    /// One more socket gets new connections (and its instance starts).
    Grow,
    /// The highest socket of the pool stops getting new connections.
    Shrink,
    /// The pool stays as it is.
    Hold,
}

/// The warm pool's policy for one tick: a pool of `r` of the `m` active
/// sockets, whose members that are not stuck have these queue `depths` and
/// CPU shares (`busy`, `None`: not known), with `WarmQueueDepth=` `threshold`,
/// after `calm_ticks` calm ticks in a row. Grows when every member is behind
/// (a queue over the threshold or a busy CPU), shrinks after
/// [`WARM_SHRINK_TICKS`] calm ticks in a row (queues at most half the
/// threshold, CPU under half of [`WARM_BUSY`]). Returns the step and the calm
/// ticks in a row from now.
pub fn warm_step(
    r: u32,
    m: u32,
    threshold: u32,
    depths: &[u32],
    busy: &[Option<f64>],
    calm_ticks: u32,
) -> (WarmStep, u32) {
    let behind = depths
        .iter()
        .zip(busy)
        .all(|(&d, b)| d > threshold || b.is_some_and(|b| b >= WARM_BUSY));
    let calm = depths
        .iter()
        .zip(busy)
        .all(|(&d, b)| d <= threshold / 2 && !b.is_some_and(|b| b >= WARM_BUSY / 2.0));
    if behind && r < m {
        (WarmStep::Grow, 0)
    } else if r > 1 && calm {
        match calm_ticks + 1 {
            t if t >= WARM_SHRINK_TICKS => (WarmStep::Shrink, 0),
            t => (WarmStep::Hold, t),
        }
    } else {
        (WarmStep::Hold, 0)
    }
}

/// `Steering=warm`: grows the pool of sockets that get new connections when
/// every warm one has a queue, and shrinks it after a calm second, so the
/// instance at the top of the pool stops getting connections and exits on
/// idle. Every socket stays watched by its slot, so whatever reached a socket
/// outside the pool is still served. Ticks only while an instance runs.
async fn warm_monitor(group: std::rc::Weak<ServedSocket>, shared: Rc<SystemdLink>) {
    let mut calm_ticks = 0u32;
    let mut cpu = crate::load::CpuMeter::default();
    loop {
        let Some(g) = group.upgrade() else { return };
        if g.common.closed.get() {
            return;
        }
        let any_running = g
            .slots
            .borrow()
            .iter()
            .any(|h| h.slot.status.borrow().state == SlotState::Running);
        if !any_running {
            if g.warm.get() > 1 {
                tracing::info!(
                    "{}: warm pool {} → 1 (all instances idle)",
                    g.name,
                    g.warm.get()
                );
                g.warm.set(1);
                g.apply_steering();
            }
            calm_ticks = 0;
            cpu.clear();
            let common = g.common.clone();
            drop(g);
            common.activity.notified().await;
            continue;
        }
        let threshold = g
            .spec
            .borrow()
            .options
            .warm_queue_depth
            .unwrap_or(DEFAULT_WARM_QUEUE_DEPTH);
        let m = g.active();
        let r = g.warm.get().clamp(1, m.max(1));
        // Stuck instances (crate::health) get no new connections: they
        // neither show that the pool is behind nor that it is calm.
        let pool: Vec<Rc<Slot>> = g.slots.borrow()[..r as usize]
            .iter()
            .filter(|h| h.slot.status.borrow().stuck.is_none())
            .map(|h| h.slot.clone())
            .collect();
        let depths: Vec<u32> = pool.iter().map(|s| slot_depth(s)).collect();
        // CPU time of the pool's instances: keep-alive work shows here.
        let busy: Vec<Option<f64>> = {
            let running: Vec<Rc<Slot>> = pool
                .iter()
                .filter(|s| s.status.borrow().state == SlotState::Running)
                .cloned()
                .collect();
            drop(g);
            let b = cpu.sample(&shared, &running, WARM_BUSY_WINDOW).await;
            pool.iter()
                .map(|s| {
                    running
                        .iter()
                        .position(|x| Rc::ptr_eq(x, s))
                        .and_then(|i| b[i])
                })
                .collect()
        };
        let Some(g) = group.upgrade() else { return };
        let step;
        (step, calm_ticks) = warm_step(r, m, threshold, &depths, &busy, calm_ticks);
        if step == WarmStep::Grow {
            g.warm.set(r + 1);
            g.apply_steering();
            let _ = g.command(r, SlotCommand::Start);
            let busy: Vec<String> = busy
                .iter()
                .map(|b| b.map_or("?".into(), |b| format!("{:.0}%", b * 100.0)))
                .collect();
            tracing::info!(
                "{}: warm pool {r} → {} (queues {depths:?}, CPU {})",
                g.name,
                r + 1,
                busy.join(" ")
            );
        } else if step == WarmStep::Shrink {
            g.warm.set(r - 1);
            g.apply_steering();
            tracing::info!("{}: warm pool {r} → {}", g.name, r - 1);
        }
        drop(g);
        tokio::time::sleep(WARM_TICK).await;
    }
}

/// Companion listeners: when no instance runs (or is starting), something
/// queued on one of them starts instance 0; while one runs, the instances
/// accept from them (they share the sockets), so they are not watched.
async fn companion_monitor(group: std::rc::Weak<ServedSocket>) {
    loop {
        let Some(g) = group.upgrade() else { return };
        if g.common.closed.get() {
            return;
        }
        let common = g.common.clone();
        let first = g
            .slots
            .borrow()
            .first()
            .map(|h| (h.slot.clone(), h.commands.clone()));
        drop(g);
        let Some((slot0, start)) = first else { return };
        let any_up = || {
            group.upgrade().is_some_and(|g| {
                g.slots.borrow().iter().any(|h| {
                    matches!(
                        h.slot.status.borrow().state,
                        SlotState::Running | SlotState::Starting
                    )
                })
            })
        };
        if any_up() {
            common.companion_wake.notified().await;
            continue;
        }
        // Raw fds, not a borrow across the wait: `ServedSocket::remove` ends this
        // task before it closes the companions, so they stay open meanwhile.
        let fds: Vec<std::os::fd::RawFd> = common
            .companions
            .borrow()
            .iter()
            .map(|c| std::os::fd::AsRawFd::as_raw_fd(&c.fd))
            .collect();
        if !wait_any_readable(&fds, &common.companion_wake).await {
            continue; // a slot changed state: look again
        }
        if any_up() {
            continue;
        }
        // Backoff ends by itself; failed waits for an operator.
        let listening = slot0.status.borrow().state == SlotState::Listening;
        if listening {
            tracing::info!(
                "{}: something queued on a companion socket; starting instance 0",
                slot0.name
            );
            let _ = start.send(SlotCommand::Start);
        }
        // Wait for the start to show (or a state change) before looking again.
        common.companion_wake.notified().await;
    }
}

/// Waits until one of `fds` is readable (true) or `wake` is notified (false).
/// The fds must stay open while this runs (see [`companion_monitor`]).
async fn wait_any_readable(fds: &[std::os::fd::RawFd], wake: &tokio::sync::Notify) -> bool {
    use std::os::fd::AsRawFd;
    /// Registration-only handle; the fd is borrowed for the wait.
    struct Watch(std::os::fd::RawFd);
    impl AsRawFd for Watch {
        fn as_raw_fd(&self) -> std::os::fd::RawFd {
            self.0
        }
    }
    let watches: Vec<tokio::io::unix::AsyncFd<Watch>> = fds
        .iter()
        .filter_map(|&fd| {
            // SAFETY: the caller keeps `fd` open for as long as this future
            // (and so the registration) lives.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    Watch(fd),
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(|e| tracing::warn!("cannot watch a companion socket: {e}"))
            .ok()
        })
        .collect();
    if watches.is_empty() {
        wake.notified().await;
        return false;
    }
    let readable = async {
        loop {
            let (res, i, _) =
                futures_util::future::select_all(watches.iter().map(|w| Box::pin(w.readable())))
                    .await;
            let Ok(mut guard) = res else { return };
            // A shut-down socket stays ready for tokio (see
            // `health::wait_any_queued`): report it rather than spin.
            if guard.ready().is_read_closed() {
                return;
            }
            // SAFETY: open for the whole wait (see above).
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fds[i]) };
            if sockets::queued(fd).unwrap_or(false) {
                return;
            }
            guard.clear_ready();
        }
    };
    tokio::select! {
        () = readable => true,
        () = wake.notified() => false,
    }
}

/// Connections (or, for datagram sockets, 1 if anything) waiting on a slot.
fn slot_depth(slot: &Slot) -> u32 {
    slot.sockets
        .iter()
        .map(|s| match s.listen.kind {
            ListenKind::Stream => sockets::accept_queue_depth(&s.socket),
            ListenKind::Datagram => u32::from(sockets::queued(s.socket.as_fd()).unwrap_or(false)),
        })
        .sum()
}

async fn main_pid(shared: &SystemdLink, unit: &str) -> u32 {
    let manager = shared.manager();
    // The object path follows from the name: no GetUnit round trip.
    let Ok(builder) = ServiceProxy::builder(manager.inner().connection())
        .path(supervisor::unit_object_path(unit))
    else {
        return 0;
    };
    match builder.build().await {
        Ok(p) => p.main_pid().await.unwrap_or(0),
        Err(_) => 0,
    }
}

/// Undoes the fd-store entries of a partially bound config: slots
/// `0..=failed_index` (the sockets themselves must be closed already).
fn forget_stored(spec: &SocketSpec, failed_index: u32, store: &FdStore) {
    for i in 0..=failed_index {
        for l in 0..spec.listen.len() {
            store.remove(&fd_name(&spec.name, l, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_replaced_sockets_leaves_the_new_ones_in_order() {
        for b in 1..6 {
            for m in 1..6 {
                // As `ServedSocket::serve` pads: at least m old sockets.
                let padded = b.max(m);
                let plan = close_plan(padded, m);
                let mut closed: Vec<usize> = plan.iter().map(|s| s.close).collect();
                closed.sort();
                assert_eq!(closed, (0..padded).collect::<Vec<_>>(), "b={b} m={m}");
                let mut left = padded + m;
                for step in &plan {
                    left -= 1;
                    // Every position named exists after the close.
                    assert!(step.positions.iter().all(|&p| (p as usize) < left));
                }
                assert_eq!(
                    plan.last().unwrap().positions,
                    (0..m as u32).collect::<Vec<_>>(),
                    "b={b} m={m}"
                );
            }
        }
        // Two old, two new: [o0 o1 n0 n1] -> close o1, n1 moves in; close o0, n0 moves in.
        assert_eq!(
            close_plan(2, 2),
            vec![
                CloseStep {
                    close: 1,
                    moving: Some(1),
                    positions: vec![2, 1]
                },
                CloseStep {
                    close: 0,
                    moving: Some(0),
                    positions: vec![0, 1]
                },
            ]
        );
    }

    /// The plan against the kernel: old (and pad) sockets, then new ones in
    /// one reuseport group; before, between and after the closes, every
    /// connection lands on a new socket, and each new socket gets some.
    #[test]
    fn replaced_sockets_close_without_steering_a_connection_to_them() {
        use socket2::{Domain, Socket, Type};
        use std::os::fd::AsFd;
        let listener = |addr: std::net::SocketAddr| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_reuse_port(true).unwrap();
            s.bind(&addr.into()).unwrap();
            s.listen(128).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        };
        let accepted = |s: &Socket| {
            let mut n = 0;
            while s.accept().is_ok() {
                n += 1;
            }
            n
        };
        for (b, m) in [(2, 2), (2, 3), (3, 1), (4, 2)] {
            let padded = b.max(m);
            let first = listener("127.0.0.1:0".parse().unwrap());
            let addr = first.local_addr().unwrap().as_socket().unwrap();
            let mut old: Vec<Option<Socket>> = vec![Some(first)];
            old.extend((1..padded).map(|_| Some(listener(addr))));
            let new: Vec<Socket> = (0..m).map(|_| listener(addr)).collect();
            let mut positions: Vec<u32> = (padded as u32..(padded + m) as u32).collect();
            let check = |positions: &[u32], old: &[Option<Socket>], what: &str| {
                let program = steering::relocate(None, m as u32, positions, &[]);
                steering::attach(new[0].as_fd(), &program).unwrap();
                let conns: Vec<_> = (0..20 * m)
                    .map(|_| std::net::TcpStream::connect(addr).unwrap())
                    .collect();
                std::thread::sleep(Duration::from_millis(30));
                for (k, o) in old.iter().enumerate() {
                    if let Some(o) = o {
                        assert_eq!(accepted(o), 0, "b={b} m={m} {what}: old socket {k}");
                    }
                }
                for (j, n) in new.iter().enumerate() {
                    assert!(
                        accepted(n) > 0,
                        "b={b} m={m} {what}: new socket {j} got nothing"
                    );
                }
                drop(conns);
            };
            check(&positions, &old, "before");
            for step in close_plan(padded, m) {
                let s = old[step.close].take().unwrap();
                s.shutdown(std::net::Shutdown::Both).unwrap();
                drop(s);
                positions = step.positions;
                check(&positions, &old, &format!("after closing {}", step.close));
            }
            assert_eq!(positions, (0..m as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn warm_pool_policy_table() {
        use WarmStep::{Grow, Hold, Shrink};
        let last = WARM_SHRINK_TICKS - 1;
        #[rustfmt::skip]
        type Case<'a> = (u32, u32, &'a [u32], &'a [Option<f64>], u32, (WarmStep, u32));
        let cases: &[Case] = &[
            // (r, m, depths, busy, calm ticks so far) with WarmQueueDepth=4.
            // Every member's queue over the threshold: grow, if there is room.
            (1, 4, &[5], &[None], 0, (Grow, 0)),
            (2, 4, &[5, 9], &[None, None], 7, (Grow, 0)),
            (4, 4, &[5, 5, 5, 5], &[None; 4], 7, (Hold, 0)),
            // One member keeping up: no growth.
            (2, 4, &[5, 4], &[None, None], 0, (Hold, 0)),
            // A busy CPU counts as behind (keep-alive work), a quiet one does not.
            (1, 4, &[0], &[Some(WARM_BUSY)], 0, (Grow, 0)),
            (1, 4, &[0], &[Some(WARM_BUSY - 0.01)], 0, (Hold, 0)),
            // Calm (queues ≤ threshold/2, CPU < half busy): count, then shrink.
            (3, 4, &[2, 0, 1], &[None, Some(0.1), None], 0, (Hold, 1)),
            (3, 4, &[0, 0, 0], &[None; 3], last, (Shrink, 0)),
            (2, 2, &[0, 0], &[None; 2], last, (Shrink, 0)),
            // Never below one.
            (1, 4, &[0], &[None], last, (Hold, 0)),
            // Not calm, not behind: the count starts again.
            (3, 4, &[3, 0, 0], &[None; 3], 50, (Hold, 0)),
            (
                3,
                4,
                &[0, 0, 0],
                &[Some(WARM_BUSY / 2.0), None, None],
                50,
                (Hold, 0),
            ),
            // Every member stuck (left out): behind and calm at once; grows.
            (2, 4, &[], &[], 0, (Grow, 0)),
            (4, 4, &[], &[], 0, (Hold, 1)),
        ];
        for (r, m, depths, busy, calm, want) in cases {
            assert_eq!(
                warm_step(*r, *m, 4, depths, busy, *calm),
                *want,
                "r={r} m={m} depths={depths:?} busy={busy:?} calm={calm}"
            );
        }
    }

    #[test]
    fn socket_change_table() {
        let spec = |extra: &str| {
            distribute_config::parse_str(
                "web",
                std::path::Path::new("web.socket"),
                &format!(
                    "[Socket]\nListenStream=127.0.0.1:8080\nDistribute=2\n{extra}\n\
                     [Service]\nExecStart=/bin/true\n"
                ),
            )
            .unwrap()
        };
        let base = spec("");
        let gap = |why: &str| SocketChange::ReplaceWithGap(why.into());
        let unix = "ListenStream=/run/web.sock";
        let cases: &[(&str, SocketChange)] = &[
            ("", SocketChange::None),
            // N, activation, limits and timeouts: not the sockets' business.
            ("Distribute=4", SocketChange::None),
            ("Activation=eager", SocketChange::None),
            ("TriggerLimitBurst=3", SocketChange::None),
            ("FileDescriptorName=x", SocketChange::None),
            ("DrainTimeoutSec=3s", SocketChange::None),
            ("WarmQueueDepth=9", SocketChange::None),
            // Set on listening sockets as they are.
            ("Backlog=77", SocketChange::Refresh),
            ("ReceiveBuffer=1M", SocketChange::Refresh),
            ("NoDelay=yes", SocketChange::Refresh),
            ("KeepAlive=yes", SocketChange::Refresh),
            ("DeferAcceptSec=5", SocketChange::Refresh),
            // Fixed at bind time: new sockets, next to the old ones.
            ("ListenStream=127.0.0.1:8081", SocketChange::Replace),
            ("FreeBind=yes", SocketChange::Replace),
            ("Service=other", SocketChange::Replace),
            // Steering= too (the program belongs to the sockets).
            ("Steering=warm", SocketChange::Replace),
            ("Backlog=77\nFreeBind=yes", SocketChange::Replace),
            // ... or after them.
            ("BindToDevice=lo", gap("BindToDevice= changed")),
            ("SocketProtocol=mptcp", gap("SocketProtocol= changed")),
            (unix, gap("AF_UNIX or FIFO")),
        ];
        for (extra, want) in cases {
            let got = socket_change(&base, &spec(extra));
            match (&got, want) {
                (SocketChange::ReplaceWithGap(g), SocketChange::ReplaceWithGap(w)) => {
                    assert!(g.contains(w.as_str()), "{extra:?}: {g:?}")
                }
                _ => assert_eq!(&got, want, "{extra:?}"),
            }
            assert_eq!(got.new_sockets(), want.new_sockets(), "{extra:?}");
        }
    }
}
