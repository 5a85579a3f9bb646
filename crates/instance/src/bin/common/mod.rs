//! Command-line options, logging and the server setup shared by the demo
//! instances: `mod common;` of each binary in src/bin/ (not part of the library;
//! a directory module, so cargo does not take it for a binary of its own).

use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use distribute_instance::{
    format_timespan, instance_index, instance_name, listen_fds, parse_timespan, Config, Handler,
    ListenFd, Server, SocketKind, Stats,
};

/// Options every demo instance takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Exit after this long without connections (systemd time span: 10s, 500ms,
    /// 1min; 0 or infinity never exit for idleness).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timespan)]
    pub idle_timeout: Duration,

    /// Accept (or receive) at most this many connections (datagrams) per socket
    /// before turning to other work.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: u32,

    /// After SIGTERM/SIGINT, serve open connections for at most this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_timespan)]
    pub grace: Duration,

    /// Tell systemd `READY=1` once the sockets are taken (for `Type=notify`
    /// units; `$NOTIFY_SOCKET` must be set).
    #[arg(long)]
    pub notify: bool,
}

impl Common {
    /// The server configuration these options describe.
    pub fn config(&self) -> Config {
        Config {
            batch: self.batch as usize,
            idle_timeout: (!self.idle_timeout.is_zero() && self.idle_timeout != Duration::MAX)
                .then_some(self.idle_timeout),
            grace: self.grace,
            ..Config::default()
        }
    }
}

/// A demo's `main`: parses the command line `C`, runs `run` with it, and
/// turns an error into a `PROG: error: ...` line and a failed exit.
pub fn main<C: clap::Parser>(prog: &str, run: impl FnOnce(&C) -> anyhow::Result<()>) -> ExitCode {
    match run(&C::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serves the passed sockets (of the `accept` kinds) with `handler` until the
/// server exits (idle or SIGTERM), logging the start line and the exit line,
/// which ends with `summary` of the handler's final state.
pub fn serve<H: Handler>(
    prog: &str,
    common: &Common,
    accept: &[SocketKind],
    handler: H,
    summary: impl FnOnce(&H) -> String,
) -> anyhow::Result<()> {
    let fds = start(prog, common, accept)?;
    if common.notify {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            bail!("--notify: $NOTIFY_SOCKET is not set (run it as a Type=notify unit)");
        }
        sd_notify::notify(false, &[sd_notify::NotifyState::Ready]).context("READY=1")?;
    }
    let (stats, handler) = Server::new(fds, handler, common.config())?.run()?;
    log_exit(prog, &stats, &summary(&handler));
    Ok(())
}

/// `instance=I` for log lines and responses: `$DISTRIBUTE_INSTANCE` or `?`.
pub fn instance_label() -> String {
    instance_index().map_or_else(|| "?".to_owned(), |i| i.to_string())
}

/// Takes the passed sockets, keeping those `accept` allows, and logs the start line.
pub fn start(prog: &str, common: &Common, accept: &[SocketKind]) -> anyhow::Result<Vec<ListenFd>> {
    let fds = listen_fds(true).context("reading $LISTEN_FDS")?;
    if fds.is_empty() {
        bail!(
            "no sockets received ($LISTEN_FDS/$LISTEN_PID not set for this process); \
             run it under systemd-distribute or e.g. `systemd-socket-activate -l 8080 {prog}`"
        );
    }
    for f in &fds {
        if !accept.contains(&f.kind) {
            bail!(
                "fd {} ({}) is a {} socket; {prog} serves {}",
                f.fd.as_raw_fd(),
                f.name,
                f.kind,
                accept
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
    }
    let list: Vec<String> = fds
        .iter()
        .map(|f| format!("{}:{}:{}", f.fd.as_raw_fd(), f.name, f.kind))
        .collect();
    eprintln!(
        "{prog}: start pid={} instance={} name={} fds={} idle-timeout={} batch={} grace={}",
        std::process::id(),
        instance_label(),
        instance_name().unwrap_or_else(|| "?".to_owned()),
        list.join(","),
        format_timespan(common.idle_timeout),
        common.batch,
        format_timespan(common.grace),
    );
    Ok(fds)
}

/// Logs the exit line.
pub fn log_exit(prog: &str, stats: &Stats, extra: &str) {
    eprintln!(
        "{prog}: exit reason={} pid={} instance={} connections={} datagrams={}{}{extra}",
        stats.reason,
        std::process::id(),
        instance_label(),
        stats.accepted,
        stats.datagrams,
        if stats.forced_closed > 0 {
            format!(" forced-closed={}", stats.forced_closed)
        } else {
            String::new()
        },
    );
}
