//! The daemon: connect to systemd, bind every config, supervise, report.

use crate::sockets;
use crate::supervisor::{self, Shared, Slot, SlotState, SlotStatus};
use crate::systemd::{major_version, ManagerProxy, EXTRA_FDS_SINCE};
use crate::unit::instance_unit_name;
use anyhow::{bail, Context, Result};
use distribute_config::{Distribute, Loader, SocketSpec};
use futures_util::StreamExt;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use tokio::signal::unix::{signal, SignalKind};

/// Name of the exec shim, installed next to the daemon.
pub const SHIM_NAME: &str = "systemd-distribute-exec";

/// Command-line settings of the daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Config directories replacing the standard search path (tests, demos).
    pub config_dirs: Vec<PathBuf>,
    /// Path of `systemd-distribute-exec`; default: next to this executable.
    pub exec_shim: Option<PathBuf>,
}

/// One served config.
struct Served {
    spec: Rc<SocketSpec>,
    slots: Vec<Rc<RefCell<SlotStatus>>>,
}

type Registry = Rc<RefCell<Vec<Served>>>;

/// Runs until SIGTERM/SIGINT. Must be called inside a `LocalSet`.
pub async fn run(opts: Options) -> Result<()> {
    raise_nofile_limit();
    let conn = zbus::Connection::system()
        .await
        .context("connecting to the system bus")?;
    let manager = ManagerProxy::new(&conn).await?;
    let version = manager.version().await.context("reading systemd's Version")?;
    let major = major_version(&version).unwrap_or(0);
    let shim = if major >= EXTRA_FDS_SINCE {
        tracing::info!("systemd {version}: passing sockets with ExtraFileDescriptors=");
        None
    } else {
        let shim = resolve_shim(&opts)?;
        tracing::info!(
            "systemd {version}: passing sockets through StandardInputFileDescriptor= and {}",
            shim
        );
        Some(shim)
    };

    // Subscribe to UnitRemoved and unit state changes before any instance can
    // start, so no removal is missed.
    let mut removed = manager.receive_unit_removed().await?;
    let mut changed = zbus::MessageStream::for_match_rule(unit_state_rule()?, &conn, None).await?;
    manager.subscribe().await.context("Subscribe() to systemd")?;

    let registry: Registry = Rc::new(RefCell::new(Vec::new()));
    let shared = Rc::new(Shared {
        manager: manager.clone(),
        shim,
        routes: RefCell::new(HashMap::new()),
        paths: RefCell::new(HashMap::new()),
        on_change: Box::new({
            let registry = registry.clone();
            move || notify_status(&registry)
        }),
    });
    {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            while let Some(signal) = removed.next().await {
                match signal.args() {
                    Ok(args) => shared.unit_removed(args.id()),
                    Err(e) => tracing::warn!("malformed UnitRemoved signal: {e}"),
                }
            }
            tracing::error!("the UnitRemoved signal stream ended (bus connection lost)");
        });
    }
    {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            while let Some(msg) = changed.next().await {
                let Ok(msg) = msg else { continue };
                if unit_entered_failed(&msg) {
                    if let Some(path) = msg.header().path() {
                        shared.unit_failed_at(path.as_str());
                    }
                }
            }
        });
    }

    let loader = if opts.config_dirs.is_empty() {
        Loader::system()
    } else {
        Loader::with_dirs("/", opts.config_dirs.clone())
    };
    let (specs, errors) = loader.load_all();
    for e in &errors {
        tracing::error!("{e}; this config is not served");
    }
    for spec in specs {
        let name = spec.name.clone();
        match serve(&shared, &registry, spec).await {
            Ok(n) => tracing::info!("{name}: serving with {n} instances"),
            Err(e) => tracing::error!("{name}: {e:#}; this config is not served, the others are"),
        }
    }
    if registry.borrow().is_empty() {
        tracing::warn!("no config is served; add NAME.socket files to {:?}", loader.dirs());
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    notify_status(&registry);

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::warn!("SIGHUP: live reload is not implemented yet; restart systemd-distribute to apply config changes");
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    // Running instances keep their own copy of their sockets: they finish what
    // they have, exit on idle, and systemd unloads them (CollectMode). Nothing
    // queued on a socket whose instance is running is lost; connections queued
    // on idle sockets are reset when we close them, as with any closed listener.
    tracing::info!("stopping; running instances exit when idle");
    Ok(())
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

fn unit_entered_failed(msg: &zbus::Message) -> bool {
    type Body = (String, HashMap<String, zbus::zvariant::OwnedValue>, Vec<String>);
    let Ok((_iface, changed, _)) = msg.body().deserialize::<Body>() else {
        return false;
    };
    changed
        .get("ActiveState")
        .and_then(|v| <&str>::try_from(v).ok())
        == Some("failed")
}

/// Binds a config and spawns its slots; returns N.
async fn serve(shared: &Rc<Shared>, registry: &Registry, spec: SocketSpec) -> Result<u32> {
    let n = match spec.distribute {
        Distribute::Count(n) => n,
        Distribute::Cpus => sockets::cpus_in_affinity(),
    };
    warn_about_template(shared, &spec).await;
    let bound = sockets::bind_all(&spec, n)?;
    let spec = Rc::new(spec);
    let mut slots = Vec::new();
    for (index, sockets) in (0u32..).zip(bound) {
        let status = Rc::new(RefCell::new(SlotStatus {
            state: SlotState::Listening,
            activations: 0,
            failures: 0,
        }));
        slots.push(status.clone());
        supervisor::spawn_slot(
            shared.clone(),
            spec.clone(),
            Slot {
                name: spec.name.clone(),
                index,
                unit: instance_unit_name(&spec.service, index),
                sockets,
                status,
            },
        );
    }
    registry.borrow_mut().push(Served { spec, slots });
    Ok(n)
}

/// systemd ignores the fragment of an on-disk `SERVICE@.service` for transient
/// instances (only its drop-ins apply), which silently surprises admins.
async fn warn_about_template(shared: &Shared, spec: &SocketSpec) {
    let pattern = format!("{}@.service", spec.service);
    match shared
        .manager
        .list_unit_files_by_patterns(&[], &[pattern.as_str()])
        .await
    {
        Ok(files) => {
            for (path, _state) in files {
                tracing::warn!(
                    "{}: {path} exists, but systemd does NOT apply a template's unit file to the transient instances systemd-distribute starts; only its drop-ins ({pattern}.d/*.conf) apply. Move its settings into [Service] of {} or into a drop-in",
                    spec.name,
                    spec.sources.first().map(|p| p.display().to_string()).unwrap_or_default()
                );
            }
        }
        Err(e) => tracing::debug!("ListUnitFilesByPatterns: {e}"),
    }
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

fn notify_status(registry: &Registry) {
    let reg = registry.borrow();
    let (mut running, mut total) = (0, 0);
    let mut per_config = Vec::new();
    for served in reg.iter() {
        let up = served
            .slots
            .iter()
            .filter(|s| s.borrow().state == SlotState::Running)
            .count();
        running += up;
        total += served.slots.len();
        per_config.push(format!("{} {up}/{}", served.spec.name, served.slots.len()));
    }
    // STATUS= is one line in `systemctl status`: keep it short.
    per_config.truncate(8);
    let status = format!(
        "{running}/{total} instances running: {}",
        per_config.join(", ")
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
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
