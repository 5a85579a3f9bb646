//! The daemon: connect to systemd, bind every config, supervise, reload,
//! answer the control plane, report.

use crate::control::{Command, CommandSender, ControlError, Event, Reply, Request, SocketInfo};
use crate::fdstore::FdStore;
use crate::handoff;
use crate::served::{sockets_wanted, Reconciled, ServedSocket, SocketChange};
use crate::supervisor::{SlotCommand, SystemdLink};
use crate::systemd::{
    major_version, JobProxy, ManagerProxy, SystemdOwner, UnitProxy, EXTRA_FDS_SINCE,
};
use crate::template::{self, Mode};
use anyhow::{bail, Context, Result};
use distribute_config::{check_distribute, ConfigError, Loader, SocketSpec};
use futures_util::StreamExt;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Notify};

/// Name of the exec shim, installed next to the daemon.
pub const SHIM_NAME: &str = "systemd-distribute-exec";

/// Changes are published at most this often (D-Bus signals, `STATUS=`), so
/// instance churn under load does not turn into a signal storm.
const PUBLISH_DELAY: Duration = Duration::from_millis(50);

/// Command-line settings of the daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Config directories replacing the standard search path (tests, demos).
    pub config_dirs: Vec<PathBuf>,
    /// Path of `systemd-distribute-exec`; default: next to this executable.
    pub exec_shim: Option<PathBuf>,
    /// Path of `systemd-distribute-handoff` (template mode); default: next to
    /// this executable.
    pub handoff_helper: Option<PathBuf>,
}

/// Configs whose state changed since the last publication.
#[derive(Default)]
struct Changes {
    names: RefCell<BTreeSet<String>>,
    wake: Notify,
}

impl Changes {
    fn mark(&self, name: &str) {
        self.names.borrow_mut().insert(name.to_string());
        self.wake.notify_one();
    }
}

/// The daemon's state.
pub struct Daemon {
    shared: Rc<SystemdLink>,
    store: Rc<FdStore>,
    loader: Loader,
    served: RefCell<BTreeMap<String, Rc<ServedSocket>>>,
    /// Configs that could not be served at all, with the reason.
    failed: RefCell<BTreeMap<String, String>>,
    changes: Rc<Changes>,
    events: RefCell<Option<mpsc::UnboundedSender<Event>>>,
    commands: CommandSender,
    /// Template mode: the helper our drop-ins run, or why there is none.
    helper: Result<String, String>,
    /// Template mode: the hand-off socket the helper connects to.
    handoff_socket: PathBuf,
    /// Warnings already given (a file's permissions, root instances), so a
    /// reload does not repeat them.
    warned: RefCell<BTreeSet<String>>,
    /// One reload at a time (SIGHUP, D-Bus `Reload()`, `distributectl`):
    /// interleaved at their awaits, two could serve one config twice.
    reload_lock: tokio::sync::Mutex<()>,
    /// Configs whose sockets are being replaced (old group draining), with
    /// the spec to serve once that is done: the newest, if reloads come
    /// meanwhile; gone if the config was removed meanwhile.
    replacing: RefCell<BTreeMap<String, SocketSpec>>,
    /// Configs whose new sockets serve while the old ones drain behind them
    /// (make-before-break, `ServedSocket::retire`): the old group, and a spec that
    /// needs new sockets again, served once the old ones are closed (one
    /// replacement at a time keeps at most two groups per address).
    retiring: RefCell<BTreeMap<String, Retiring>>,
    /// Configs whose sockets are replaced once the shrink in progress has
    /// drained (its closes would move the old sockets under the new ones):
    /// the newest spec.
    deferred: RefCell<BTreeMap<String, SocketSpec>>,
}

/// A replaced group still draining, and a spec to serve after it (see
/// `Daemon::retiring`).
type Retiring = (Rc<ServedSocket>, Option<SocketSpec>);

/// Runs until SIGTERM/SIGINT. Must be called inside a `LocalSet`.
pub async fn run(opts: Options) -> Result<()> {
    raise_nofile_limit();
    let store = Rc::new(FdStore::from_env());
    let conn = system_bus().await.context("connecting to the system bus")?;
    let manager = ManagerProxy::new(&conn).await?;
    let version = manager
        .version()
        .await
        .context("reading systemd's Version")?;
    let major = major_version(&version).unwrap_or(0);
    let shim = if major >= EXTRA_FDS_SINCE {
        tracing::info!("systemd {version}: passing sockets with ExtraFileDescriptors=");
        None
    } else {
        let shim = resolve_shim(&opts)?;
        tracing::info!(
            "systemd {version}: passing sockets through StandardInputFileDescriptor= and {shim}"
        );
        Some(shim)
    };

    let changes = Rc::new(Changes::default());
    let (bus_generation, _) = tokio::sync::watch::channel(0u64);
    let shared = Rc::new(SystemdLink {
        manager: RefCell::new(manager),
        bus_generation,
        shim,
        routes: RefCell::new(HashMap::new()),
        paths: RefCell::new(HashMap::new()),
        instances: RefCell::new(HashMap::new()),
        on_change: Box::new({
            let changes = changes.clone();
            move |name: &str| changes.mark(name)
        }),
    });

    let (commands_tx, mut commands) = mpsc::unbounded_channel::<Command>();
    let loader = if opts.config_dirs.is_empty() {
        Loader::system()
    } else {
        Loader::with_dirs("/", opts.config_dirs.clone())
    };
    // Template mode: instances of unit files fetch their sockets here. Bound
    // before any config is served, so no instance can ask too early.
    let (handoff_listener, handoff_socket) = handoff::bind_socket(&handoff::runtime_dir())
        .with_context(|| {
            format!(
                "binding the hand-off socket in {}",
                handoff::runtime_dir().display()
            )
        })?;
    tokio::task::spawn_local(handoff::serve(handoff_listener, shared.clone()));
    let helper = resolve_helper(&opts);
    let daemon = Rc::new(Daemon {
        warned: RefCell::new(BTreeSet::new()),
        reload_lock: tokio::sync::Mutex::new(()),
        replacing: RefCell::new(BTreeMap::new()),
        retiring: RefCell::new(BTreeMap::new()),
        deferred: RefCell::new(BTreeMap::new()),
        helper,
        handoff_socket,
        shared,
        store,
        loader,
        served: RefCell::new(BTreeMap::new()),
        failed: RefCell::new(BTreeMap::new()),
        changes,
        events: RefCell::new(None),
        commands: commands_tx,
    });
    // Handle signals before READY=1: from then on `systemctl reload` may send
    // SIGHUP, whose default action would end the daemon; a signal that comes
    // before the loop below waits in tokio's queue.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // Subscribe to unit signals before any instance can start, so no removal
    // is missed; serve the API so it sees every config being added.
    daemon.listen_bus(&conn).await?;
    if let Some(max) = daemon.own_fd_store_max().await {
        daemon.store.set_capacity(max as usize);
    }
    daemon.reload().await;
    // Sockets in the fd store that no config claimed (config removed while we
    // were down) would otherwise stay open forever.
    daemon.store.discard_unclaimed();
    // Binding and D-Bus setup leave freed heap behind; give it back once, so
    // the steady-state RSS is what the daemon actually uses.
    trim_heap();
    tokio::task::spawn_local(daemon.clone().publish_changes());

    crate::notify::send(&[sd_notify::NotifyState::Ready], &[]);
    daemon.notify_status();

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let daemon = daemon.clone();
                tokio::task::spawn_local(async move {
                    let summary = daemon.reload_notified().await;
                    tracing::info!("SIGHUP: {summary}");
                });
            }
            Some(cmd) = commands.recv() => {
                let daemon = daemon.clone();
                tokio::task::spawn_local(async move {
                    let reply = daemon.handle(cmd.request).await;
                    let _ = cmd.reply.send(reply);
                });
            }
        }
    }
    crate::notify::send(&[sd_notify::NotifyState::Stopping], &[]);
    daemon.shutdown().await;
    // What systemd has not taken yet (fd store entries above all) would be
    // lost with us.
    crate::notify::flushed(crate::notify::SEND_TIMEOUT).await;
    Ok(())
}

async fn start_api(
    conn: &zbus::Connection,
    commands: CommandSender,
    events: mpsc::UnboundedReceiver<Event>,
) {
    if let Err(e) = crate::api::serve(conn, commands, events).await {
        tracing::error!(
            "serving org.distribute1 on the bus failed: {e}; continuing without the control API"
        );
    }
}

impl Daemon {
    /// On a (new) bus connection: subscribe to systemd's unit signals, serve
    /// `org.distribute1`, and watch for the connection's end to reconnect.
    async fn listen_bus(self: &Rc<Self>, conn: &zbus::Connection) -> Result<()> {
        let manager = ManagerProxy::new(conn).await?;
        let systemd = SystemdOwner::follow(conn)
            .await
            .context("following the owner of org.freedesktop.systemd1")?;
        let mut removed = manager.receive_unit_removed().await?;
        let mut changed =
            zbus::MessageStream::for_match_rule(unit_state_rule()?, conn, None).await?;
        manager
            .subscribe()
            .await
            .context("Subscribe() to systemd")?;
        *self.shared.manager.borrow_mut() = manager;
        let (events_tx, events_rx) = mpsc::unbounded_channel::<Event>();
        *self.events.borrow_mut() = Some(events_tx);
        start_api(conn, self.commands.clone(), events_rx).await;
        {
            let shared = self.shared.clone();
            let systemd = systemd.clone();
            tokio::task::spawn_local(async move {
                while let Some(msg) = changed.next().await {
                    let Ok(msg) = msg else { continue };
                    if !systemd.sent(&msg) {
                        ignore_forged(&msg);
                        continue;
                    }
                    if let Some(state) = new_active_state(&msg) {
                        if let Some(path) = msg.header().path() {
                            shared.unit_state_at(path.as_str(), &state);
                        }
                    }
                }
            });
        }
        {
            let daemon = self.clone();
            tokio::task::spawn_local(async move {
                while let Some(signal) = removed.next().await {
                    if !systemd.sent(signal.message()) {
                        ignore_forged(signal.message());
                        continue;
                    }
                    match signal.args() {
                        Ok(args) => daemon.shared.unit_removed(args.id()),
                        Err(e) => tracing::warn!("malformed UnitRemoved signal: {e}"),
                    }
                }
                tracing::error!("lost the bus connection; reconnecting");
                daemon.reconnect().await;
            });
        }
        self.shared.bus_generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Reconnects to the system bus with backoff (the sockets stay bound and
    /// queued connections wait meanwhile), then re-checks every instance we
    /// believed running: one that exited while we were deaf is re-armed.
    async fn reconnect(self: Rc<Self>) {
        let mut delay = Duration::from_millis(100);
        loop {
            tokio::time::sleep(delay).await;
            match system_bus().await {
                Ok(conn) => match self.listen_bus(&conn).await {
                    Ok(()) => break,
                    Err(e) => tracing::warn!("bus reconnect: {e:#}; retrying in {delay:?}"),
                },
                Err(e) => tracing::warn!("bus reconnect: {e}; retrying in {delay:?}"),
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        tracing::info!("reconnected to the system bus");
        let manager = self.shared.manager();
        let groups: Vec<Rc<ServedSocket>> = self.served.borrow().values().cloned().collect();
        for g in groups {
            for unit in g.units_believed_loaded() {
                if manager.get_unit(&unit).await.is_err() {
                    tracing::info!("{unit}: exited while the bus was down");
                    self.shared.unit_removed(&unit);
                }
            }
            self.emit(Event::SocketAdded(g.name.clone()));
        }
    }

    /// Re-reads every config and reconciles (see the module docs of `group`).
    pub async fn reload(self: &Rc<Self>) -> String {
        let _one_at_a_time = self.reload_lock.lock().await;
        let report = self.loader.load_report();
        let (specs, errors) = (report.specs, report.errors);
        let mut summary = Vec::new();
        let mut seen = BTreeSet::new();
        let mut errors_by_name: BTreeMap<String, String> = BTreeMap::new();
        for e in &errors {
            let name = config_name(e).unwrap_or_else(|| e.file.display().to_string());
            tracing::error!("{e}");
            errors_by_name.insert(name, e.to_string());
        }
        for spec in specs {
            self.warn_once_about(&spec);
            seen.insert(spec.name.clone());
            summary.push(self.apply(spec).await);
        }
        for (name, err) in &errors_by_name {
            seen.insert(name.clone());
            let group = self.served.borrow().get(name).cloned();
            match group {
                Some(g) => {
                    // Keep serving the last good config.
                    g.set_error(format!("{err} (still serving the last good config)"));
                    summary.push(format!("{name}: invalid, kept the last good config"));
                }
                None => {
                    self.failed.borrow_mut().insert(name.clone(), err.clone());
                    summary.push(format!("{name}: invalid, not served"));
                }
            }
            self.changes.mark(name);
        }
        // A directory that could not be listed says nothing about its
        // configs: keep serving the ones we had from it.
        for (name, g) in self.served.borrow().iter() {
            let dir = g
                .spec()
                .sources
                .first()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            if !seen.contains(name) && dir.is_some_and(|d| report.unreadable_dirs.contains(&d)) {
                g.set_error(format!(
                    "{} cannot be read; still serving the last good config",
                    g.spec().sources[0]
                        .parent()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default()
                ));
                seen.insert(name.clone());
                summary.push(format!("{name}: its directory cannot be read, kept"));
                self.changes.mark(name);
            }
        }
        let gone: Vec<String> = self
            .served
            .borrow()
            .keys()
            .filter(|n| !seen.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(g) = self.served.borrow_mut().remove(&name) {
                tracing::info!("{name}: config removed; draining and closing its sockets");
                tokio::task::spawn_local(g.remove(self.store.clone()));
                self.emit(Event::SocketRemoved(name.clone()));
                summary.push(format!("{name}: removed"));
            }
        }
        self.failed.borrow_mut().retain(|n, _| seen.contains(n));
        // A config removed while its sockets were being replaced: nothing
        // to serve once the old ones are closed.
        self.replacing.borrow_mut().retain(|n, _| seen.contains(n));
        self.deferred.borrow_mut().retain(|n, _| seen.contains(n));
        for (n, (_, pending)) in self.retiring.borrow_mut().iter_mut() {
            if !seen.contains(n) {
                *pending = None;
            }
        }
        self.remove_unused_dropins().await;
        if self.served.borrow().is_empty() && self.failed.borrow().is_empty() {
            tracing::warn!(
                "no config found; add NAME.socket files to {:?}",
                self.loader.dirs()
            );
        }
        self.notify_status();
        summary.join("; ")
    }

    async fn reload_notified(self: &Rc<Self>) -> String {
        let mut states = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        crate::notify::send(&states, &[]);
        let summary = self.reload().await;
        trim_heap();
        crate::notify::send(&[sd_notify::NotifyState::Ready], &[]);
        summary
    }

    /// Serves a new config or reconciles an existing one with `spec`.
    async fn apply(self: &Rc<Self>, spec: SocketSpec) -> String {
        let name = spec.name.clone();
        if let Some(pending) = self.replacing.borrow_mut().get_mut(&name) {
            // Its old sockets are still draining: serve this version then.
            *pending = spec;
            return format!("{name}: sockets being replaced; the new version follows");
        }
        let existing = self.served.borrow().get(&name).cloned();
        let Some(group) = existing else {
            return self.serve_new(spec).await;
        };
        group.set_error(String::new());
        let change = group.socket_change(&spec);
        if let Some(pending) = self.deferred.borrow_mut().get_mut(&name) {
            if change.new_sockets() {
                *pending = spec;
                return format!(
                    "{name}: new sockets follow once the shrink in progress has drained"
                );
            }
        }
        // Not (or no longer) a replacement: the newest spec wins.
        self.deferred.borrow_mut().remove(&name);
        if let Some((_, pending)) = self.retiring.borrow_mut().get_mut(&name) {
            // The previous replacement's old sockets are still draining: the
            // newest spec decides; if it needs new sockets again, they follow
            // once the old ones are closed, otherwise it applies now (and an
            // earlier pending one is dropped).
            if change.new_sockets() {
                *pending = Some(spec);
                return format!(
                    "{name}: its previous sockets are still draining; new sockets follow once they are closed"
                );
            }
            *pending = None;
        }
        if change == SocketChange::Replace {
            return self.replace_live(group, spec).await;
        }
        if let SocketChange::ReplaceWithGap(why) = change {
            // New addresses or socket options need new sockets, and these
            // cannot join the old ones' reuseport groups: the old ones drain
            // first, then the new ones are bound; connections arriving in
            // between are refused.
            tracing::warn!(
                "{name}: listen addresses or socket options changed; replacing its sockets with a gap (old ones closed before the new ones are bound) because {why}"
            );
            self.served.borrow_mut().remove(&name);
            self.replacing.borrow_mut().insert(name.clone(), spec);
            let daemon = self.clone();
            let replaced = name.clone();
            tokio::task::spawn_local(async move {
                group.remove(daemon.store.clone()).await;
                // Whatever the reloads since said: the newest spec, or none.
                let latest = daemon.replacing.borrow_mut().remove(&replaced);
                if let Some(spec) = latest {
                    let _one_at_a_time = daemon.reload_lock.lock().await;
                    let summary = daemon.serve_new(spec).await;
                    tracing::info!("{summary}");
                }
            });
            return format!("{name}: sockets replaced");
        }
        // The template's unit file may have appeared or gone (daemon-reload):
        // the mode is decided again; an error keeps the last good setup.
        let probe = spec.clone();
        let mode = self.prepare_mode(&probe);
        let done = group.reconcile(&self.shared, &self.store, spec, mode).await;
        self.changes.mark(&name);
        match done {
            Err(e) => format!("{name}: {e}; kept the last good config"),
            Ok(Reconciled::Rescaled(summary)) => summary,
            Ok(Reconciled::Unchanged) => format!("{name}: unchanged"),
            Ok(Reconciled::Updated) => {
                format!("{name}: [Service] updated; applies to instances started from now on")
            }
        }
    }

    /// Make-before-break: binds `spec`'s sockets next to `old`'s, steers new
    /// connections to them, and drains and closes the old ones behind them
    /// (see `ServedSocket::retire`). If the new ones cannot be bound, the old ones
    /// keep serving.
    async fn replace_live(self: &Rc<Self>, old: Rc<ServedSocket>, spec: SocketSpec) -> String {
        let name = spec.name.clone();
        // No rescale of the old group while new sockets join its reuseport
        // groups behind its own (their positions are counted on).
        let locked = old.clone();
        let _old_serial = locked.lock_rescale().await;
        if old.shrinking() {
            return self.defer_replacement(old.clone(), spec);
        }
        tracing::info!(
            "{name}: listen addresses or socket options changed; binding new sockets next to the old ones"
        );
        let mode = match self.prepare_mode(&spec).await {
            Ok(mode) => mode,
            Err(e) => {
                old.set_error(format!("{e} (still serving the last good config)"));
                self.changes.mark(&name);
                return format!("{name}: {e}; kept the last good config");
            }
        };
        old.begin_retiring(&self.store);
        if let Err(e) = self.store.room_for(sockets_wanted(&spec)) {
            old.restore_stored(&self.store);
            old.set_error(format!("{e} (still serving the last good config)"));
            self.changes.mark(&name);
            return format!("{name}: {e}; kept the last good config");
        }
        let (release, holds) = old.hand_over();
        let new =
            match ServedSocket::serve(&self.shared, &self.store, spec, mode, Some((&old, holds)))
                .await
            {
                Ok(g) => g,
                Err(e) => {
                    old.restore_stored(&self.store);
                    old.unpin();
                    old.set_error(format!(
                        "new sockets: {e} (still serving the last good config)"
                    ));
                    self.changes.mark(&name);
                    return format!("{name}: new sockets: {e}; kept the last good config");
                }
            };
        // From here the new group steers the shared reuseport groups.
        old.retire_all();
        new.apply_steering();
        let n = new.active();
        self.served.borrow_mut().insert(name.clone(), new.clone());
        self.retiring
            .borrow_mut()
            .insert(name.clone(), (old.clone(), None));
        self.changes.mark(&name);
        let daemon = self.clone();
        let replaced = name.clone();
        tokio::task::spawn_local(async move {
            let (shared, store) = (daemon.shared.clone(), daemon.store.clone());
            ServedSocket::retire(old, new, release, shared, store).await;
            let pending = daemon
                .retiring
                .borrow_mut()
                .remove(&replaced)
                .and_then(|(_, p)| p);
            daemon.changes.mark(&replaced);
            if let Some(spec) = pending {
                let _one_at_a_time = daemon.reload_lock.lock().await;
                // Still configured? (A reload may have removed it meanwhile.)
                if daemon.served.borrow().contains_key(&replaced) {
                    // Boxed: `apply` spawned this task.
                    let again: std::pin::Pin<Box<dyn std::future::Future<Output = String>>> =
                        Box::pin(daemon.apply(spec));
                    let summary = again.await;
                    tracing::info!("{summary}");
                }
            }
        });
        tracing::info!("{name}: serving with {n} instances on new sockets; the old ones drain");
        format!("{name}: sockets replaced (the old ones drain)")
    }

    /// A replacement asked for while `group` shrinks: applied (under the
    /// reload lock, newest spec) once the shrink has drained, which
    /// `DrainTimeoutSec=` bounds. Looks every 100 ms meanwhile.
    fn defer_replacement(self: &Rc<Self>, group: Rc<ServedSocket>, spec: SocketSpec) -> String {
        let name = spec.name.clone();
        tracing::info!("{name}: new sockets once the shrink in progress has drained");
        self.deferred.borrow_mut().insert(name.clone(), spec);
        let daemon = self.clone();
        tokio::task::spawn_local(async move {
            while group.shrinking() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _one_at_a_time = daemon.reload_lock.lock().await;
            let spec = daemon.deferred.borrow_mut().remove(&group.name);
            let current = daemon.served.borrow().get(&group.name).cloned();
            // Still the group it was asked of (not removed or replaced since).
            if let (Some(spec), Some(current)) = (spec, current) {
                if Rc::ptr_eq(&current, &group) {
                    // Boxed: `apply` spawned this task.
                    let again: std::pin::Pin<Box<dyn std::future::Future<Output = String>>> =
                        Box::pin(daemon.apply(spec));
                    tracing::info!("{}", again.await);
                }
            }
        });
        format!("{name}: new sockets follow once the shrink in progress has drained")
    }

    async fn serve_new(self: &Rc<Self>, spec: SocketSpec) -> String {
        let name = spec.name.clone();
        let mode = match self.prepare_mode(&spec).await {
            Ok(mode) => mode,
            Err(e) => return self.not_served(&name, e),
        };
        // Sockets taken back after a restart are stored already.
        // Companion listeners are stored once per config.
        let more = (sockets_wanted(&spec) + spec.companions.len())
            .saturating_sub(self.store.stored_for(&name));
        if let Err(e) = self.store.room_for(more) {
            return self.not_served(&name, e);
        }
        match ServedSocket::serve(&self.shared, &self.store, spec, mode, None).await {
            Ok(group) => {
                let n = group.active();
                self.served.borrow_mut().insert(name.clone(), group);
                self.failed.borrow_mut().remove(&name);
                self.emit(Event::SocketAdded(name.clone()));
                tracing::info!("{name}: serving with {n} instances");
                format!("{name}: serving with {n} instances")
            }
            Err(e) => self.not_served(&name, e.to_string()),
        }
    }

    /// What systemd warns about for unit files, and a root instance: logged
    /// once (per file and mode, per config), the config is served anyway.
    fn warn_once_about(&self, spec: &SocketSpec) {
        use std::os::unix::fs::MetadataExt;
        let mut warned = self.warned.borrow_mut();
        // What a copied socket unit has that does not apply here ([Unit]
        // ordering and dependencies, [Install]): said once, served anyway.
        for notice in &spec.notices {
            if warned.insert(format!("notice:{}:{notice}", spec.name)) {
                tracing::warn!("{notice}");
            }
        }
        for file in &spec.sources {
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let (mode, uid) = (meta.mode() & 0o7777, meta.uid());
            let key = format!("{}:{mode:o}:{uid}", file.display());
            if (mode & 0o002 != 0 || uid != 0) && warned.insert(key) {
                let what = if mode & 0o002 != 0 {
                    format!("is world-writable (mode {mode:04o})")
                } else {
                    format!("is owned by uid {uid}, not root")
                };
                tracing::warn!(
                    "{}: {what}: whoever can change it decides what runs, as which user; make \
                     it root's, 0644 (proceeding anyway, as systemd does)",
                    file.display()
                );
            }
        }
        let exec = &spec.exec;
        let runs_as_root = spec.service_section.is_some()
            && exec.user.is_none()
            && exec.dynamic_user != Some(true);
        if runs_as_root && warned.insert(format!("root:{}", spec.name)) {
            tracing::warn!(
                "{}: its instances run as root (no User= or DynamicUser=yes in [Service]); \
                 consider DynamicUser=yes",
                spec.name
            );
        }
    }

    /// Records a config that cannot be served, with the reason.
    fn not_served(&self, name: &str, e: String) -> String {
        tracing::error!("{name}: {e}; this config is not served, the others are");
        let first = !self.failed.borrow().contains_key(name);
        self.failed.borrow_mut().insert(name.to_string(), e.clone());
        if first {
            self.emit(Event::SocketAdded(name.to_string()));
        }
        format!("{name}: {e}")
    }

    /// Decides how `spec`'s instances start (see `template`) and, in template
    /// mode, puts our drop-in in place (reloading systemd if it changed).
    async fn prepare_mode(&self, spec: &SocketSpec) -> Result<Mode, String> {
        let manager = self.shared.manager();
        let mode = template::detect(&manager, spec).await?;
        if let Mode::Template { unit_file } = &mode {
            let helper = self.helper.as_ref().map_err(Clone::clone)?;
            let own = template::own_settings(&manager, spec).await;
            let text = template::dropin_text(spec, &own, helper, &self.handoff_socket);
            let unit_dir = std::path::Path::new(template::RUNTIME_UNIT_DIR);
            let template_unit = spec.template_unit();
            let changed = template::write_dropin(unit_dir, &template_unit, &text).map_err(|e| {
                format!(
                    "writing {}: {e}",
                    template::dropin_path(unit_dir, &template_unit).display()
                )
            })?;
            if changed {
                manager
                    .reload()
                    .await
                    .map_err(|e| format!("systemctl daemon-reload (for our drop-in): {e}"))?;
                tracing::info!(
                    "{}: template mode with {unit_file}; wrote {} and reloaded systemd",
                    spec.name,
                    template::dropin_path(unit_dir, &template_unit).display()
                );
            }
        }
        Ok(mode)
    }

    /// Removes the drop-ins of templates no served config uses any more.
    async fn remove_unused_dropins(&self) {
        let keep: BTreeSet<String> = self
            .served
            .borrow()
            .values()
            .filter_map(|g| g.template_in_use())
            .collect();
        let unit_dir = std::path::Path::new(template::RUNTIME_UNIT_DIR);
        if template::remove_dropins_except(unit_dir, &keep) {
            if let Err(e) = self.shared.manager().reload().await {
                tracing::warn!("systemctl daemon-reload after removing drop-ins: {e}");
            }
        }
    }

    fn group(&self, name: &str) -> Result<Rc<ServedSocket>, ControlError> {
        self.served
            .borrow()
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::NoSuchSocket(name.to_string()))
    }

    /// Answers one control-plane request.
    pub async fn handle(self: &Rc<Self>, request: Request) -> Result<Reply, ControlError> {
        match request {
            Request::List => Ok(Reply::Sockets(self.list().await)),
            Request::Describe { name } => match self.group(&name) {
                Ok(g) => Ok(Reply::Socket(self.info_of(&g).await)),
                Err(e) => match self.failed.borrow().get(&name) {
                    Some(err) => Ok(Reply::Socket(failed_info(&name, err))),
                    None => match self.replacing.borrow().get(&name) {
                        Some(spec) => Ok(Reply::Socket(replacing_info(spec))),
                        None => Err(e),
                    },
                },
            },
            Request::Reload => Ok(Reply::Done(self.reload_notified().await)),
            Request::SetDistribute { name, n } => {
                check_distribute(n)
                    .map_err(|e| ControlError::InvalidArgs(format!("Distribute {e}, got {n}")))?;
                let g = self.group(&name)?;
                let s = g.rescale(&self.shared, &self.store, n).await?;
                self.changes.mark(&name);
                Ok(Reply::Done(s))
            }
            Request::StartInstance { name, index } => {
                self.group(&name)?.command(index, SlotCommand::Start)?;
                Ok(Reply::Done(format!("{name}@{index}: start requested")))
            }
            Request::StopInstance { name, index } => {
                self.group(&name)?.command(index, SlotCommand::Stop)?;
                Ok(Reply::Done(format!("{name}@{index}: stop requested")))
            }
            Request::RestartInstance { name, index } => {
                self.group(&name)?.command(index, SlotCommand::Restart)?;
                Ok(Reply::Done(format!("{name}@{index}: restart requested")))
            }
        }
    }

    async fn list(&self) -> Vec<SocketInfo> {
        let groups: Vec<Rc<ServedSocket>> = self.served.borrow().values().cloned().collect();
        let mut out = Vec::new();
        for g in groups {
            out.push(self.info_of(&g).await);
        }
        for (name, err) in self.failed.borrow().iter() {
            out.push(failed_info(name, err));
        }
        for spec in self.replacing.borrow().values() {
            out.push(replacing_info(spec));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// A group's view; while its predecessor's sockets drain (make-before-
    /// break), state `replacing` and the old instances listed as draining.
    async fn info_of(&self, g: &Rc<ServedSocket>) -> SocketInfo {
        let mut info = g.info(&self.shared).await;
        let old = self.retiring.borrow().get(&g.name).map(|(o, _)| o.clone());
        if let Some(old) = old {
            info.state = "replacing".into();
            let mut previous = old.info(&self.shared).await.instances;
            for i in &mut previous {
                i.state = "draining".into();
                if i.reason.is_empty() {
                    i.reason = "old sockets (replaced on reload)".into();
                }
            }
            info.instances.extend(previous);
        }
        info
    }

    fn emit(&self, e: Event) {
        if let Some(tx) = self.events.borrow().as_ref() {
            let _ = tx.send(e);
        }
    }

    /// Publishes coalesced changes: one wakeup per burst, never a timer when idle.
    async fn publish_changes(self: Rc<Self>) {
        loop {
            self.changes.wake.notified().await;
            tokio::time::sleep(PUBLISH_DELAY).await;
            let names = std::mem::take(&mut *self.changes.names.borrow_mut());
            for name in names {
                self.emit(Event::SocketChanged(name));
            }
            self.notify_status();
        }
    }

    fn notify_status(&self) {
        let groups = self.served.borrow();
        let (mut running, mut total) = (0, 0);
        let mut per_config = Vec::new();
        for g in groups.values() {
            let (up, n) = g.running();
            running += up;
            total += n;
            per_config.push(format!("{} {up}/{n}", g.name));
        }
        // STATUS= is one line in `systemctl status`: keep it short.
        per_config.truncate(8);
        let failed = self.failed.borrow().len();
        let mut status = format!(
            "{running}/{total} instances running: {}",
            per_config.join(", ")
        );
        if failed > 0 {
            status.push_str(&format!("; {failed} config(s) failed"));
        }
        crate::notify::send(&[sd_notify::NotifyState::Status(&status)], &[]);
    }

    /// On `systemctl stop`, instances are stopped too (no instance outlives the
    /// service by more than its own stop timeout). On a restart they keep
    /// running, keep their sockets, and are adopted by the next activator.
    async fn shutdown(&self) {
        match self.own_job_type().await {
            Some(job) if job == "stop" => {
                tracing::info!("stopping: stopping every instance");
                for (old, _) in self.retiring.borrow().values() {
                    old.command_every(SlotCommand::Stop);
                }
                for g in self.served.borrow().values() {
                    g.command_all(SlotCommand::Stop);
                    // Not on a restart: the fd store keeps the sockets, whose
                    // files must stay where the clients look for them.
                    crate::companion::remove_on_stop(&g.spec());
                }
                // Let the slot tasks send their StopUnit calls.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            job => {
                tracing::info!(
                    "exiting ({}); running instances keep serving and are adopted on the next start",
                    job.unwrap_or_else(|| "no stop job".into())
                );
            }
        }
    }

    /// Our unit's `FileDescriptorStoreMax=`, if we run as a unit.
    async fn own_fd_store_max(&self) -> Option<u32> {
        let manager = self.shared.manager();
        let path = manager.get_unit_by_pid(std::process::id()).await.ok()?;
        let service = crate::systemd::ServiceProxy::builder(manager.inner().connection())
            .path(path)
            .ok()?
            .build()
            .await
            .ok()?;
        service.file_descriptor_store_max().await.ok()
    }

    async fn own_job_type(&self) -> Option<String> {
        let manager = self.shared.manager();
        let path = manager.get_unit_by_pid(std::process::id()).await.ok()?;
        let conn = manager.inner().connection();
        let unit = UnitProxy::builder(conn)
            .path(path)
            .ok()?
            .build()
            .await
            .ok()?;
        let (id, job_path) = unit.job().await.ok()?;
        if id == 0 {
            return None;
        }
        let job = JobProxy::builder(conn)
            .path(job_path)
            .ok()?
            .build()
            .await
            .ok()?;
        job.job_type().await.ok()
    }
}

fn failed_info(name: &str, err: &str) -> SocketInfo {
    SocketInfo {
        name: name.to_string(),
        state: "failed".into(),
        error: err.to_string(),
        ..Default::default()
    }
}

/// A config whose old sockets drain before its new ones are bound.
fn replacing_info(spec: &SocketSpec) -> SocketInfo {
    SocketInfo {
        state: "replacing".into(),
        error: String::new(),
        service: spec.service.clone(),
        sources: spec
            .sources
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        ..failed_info(&spec.name, "")
    }
}

/// The config an error belongs to: `NAME` of `.../NAME.socket` or of a drop-in
/// `.../NAME.socket.d/x.conf`.
pub fn config_name(e: &ConfigError) -> Option<String> {
    let file = e.file.file_name()?.to_str()?;
    if let Some(n) = file.strip_suffix(".socket") {
        return Some(n.to_string());
    }
    let dir = e.file.parent()?.file_name()?.to_str()?;
    dir.strip_suffix(".socket.d").map(str::to_string)
}

/// `PropertiesChanged` of any unit's `org.freedesktop.systemd1.Unit` interface.
fn unit_state_rule() -> zbus::Result<zbus::MatchRule<'static>> {
    Ok(zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.systemd1")?
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace("/org/freedesktop/systemd1/unit")?
        .arg(0, "org.freedesktop.systemd1.Unit")?
        .build())
}

/// Logs a unit signal that did not come from systemd (see `SystemdOwner`).
fn ignore_forged(msg: &zbus::Message) {
    let h = msg.header();
    tracing::warn!(
        "ignoring {} on {} from {}: not sent by the owner of org.freedesktop.systemd1",
        h.member().map(|m| m.to_string()).unwrap_or_default(),
        h.path().map(|p| p.to_string()).unwrap_or_default(),
        h.sender().map(|s| s.to_string()).unwrap_or_default()
    );
}

/// The new `ActiveState` announced by a unit's `PropertiesChanged`, if any.
fn new_active_state(msg: &zbus::Message) -> Option<String> {
    type Body = (
        String,
        HashMap<String, zbus::zvariant::OwnedValue>,
        Vec<String>,
    );
    let (_iface, changed, _) = msg.body().deserialize::<Body>().ok()?;
    changed
        .get("ActiveState")
        .and_then(|v| <&str>::try_from(v).ok())
        .map(str::to_string)
}

/// The hand-off helper's path (template mode needs it; transient mode does not,
/// so a missing helper only fails template-mode configs, with this reason).
fn resolve_helper(opts: &Options) -> Result<String, String> {
    let path = match &opts.handoff_helper {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("locating our own executable: {e}"))?
            .with_file_name(handoff::HELPER_NAME),
    };
    if !path.is_file() {
        return Err(format!(
            "{} not found: template-mode instances fetch their sockets with it; install it next to systemd-distribute or pass --handoff-helper",
            path.display()
        ));
    }
    Ok(path.display().to_string())
}

/// How long a D-Bus call (to systemd, to the bus) may take: systemd's own
/// default. Without it a hung call would freeze the slot that made it, and
/// with it every command for that slot.
pub const BUS_CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// A system bus connection whose method calls time out after
/// [`BUS_CALL_TIMEOUT`] (`ErrorKind::TimedOut`).
async fn system_bus() -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::system()?
        .method_timeout(BUS_CALL_TIMEOUT)
        .build()
        .await
}

fn resolve_shim(opts: &Options) -> Result<String> {
    let path = match &opts.exec_shim {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating our own executable")?
            .with_file_name(SHIM_NAME),
    };
    if !path.is_file() {
        bail!(
            "{} not found: it hands sockets to instances on systemd < {EXTRA_FDS_SINCE}; install it next to systemd-distribute or pass --exec-shim",
            path.display()
        );
    }
    Ok(path.display().to_string())
}

fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of the heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// N sockets per address need N fds; the default soft limit (1024) is low.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_of_errors() {
        let err = |p: &str| ConfigError {
            file: PathBuf::from(p),
            line: None,
            key: None,
            value: None,
            message: String::new(),
        };
        assert_eq!(
            config_name(&err("/etc/systemd/distribute/web.socket")).as_deref(),
            Some("web")
        );
        assert_eq!(
            config_name(&err("/etc/systemd/distribute/web.socket.d/10-x.conf")).as_deref(),
            Some("web")
        );
        assert_eq!(config_name(&err("/etc/other")), None);
    }
}
