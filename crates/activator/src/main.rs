//! `systemd-distribute`: the activator daemon.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use systemd_distribute::Options;

/// Binds N SO_REUSEPORT sockets per listen address of every
/// /etc/systemd/distribute/NAME.socket and starts NAME@I.service on demand.
#[derive(Parser, Debug)]
#[command(name = "systemd-distribute", version, about, long_about = None)]
struct Cli {
    /// Read NAME.socket configs from DIR instead of /etc, /run and
    /// /usr/lib/systemd/distribute (repeatable; earlier wins).
    #[arg(long = "config-dir", value_name = "DIR")]
    config_dirs: Vec<PathBuf>,
    /// Path of systemd-distribute-exec (default: next to this program).
    #[arg(long, value_name = "PATH")]
    exec_shim: Option<PathBuf>,
    /// Path of systemd-distribute-handoff, which template-mode instances run
    /// to fetch their sockets (default: next to this program).
    #[arg(long, value_name = "PATH")]
    handoff_helper: Option<PathBuf>,
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SYSTEMD_DISTRIBUTE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd, log to the journal natively (priorities, fields); on a terminal, to stderr.
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(|| tracing_journald::layer().ok())
        .flatten();
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(filter)
            .with(layer)
            .init(),
        None => tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("systemd-distribute: cannot create the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let opts = Options {
        config_dirs: cli.config_dirs,
        exec_shim: cli.exec_shim,
        handoff_helper: cli.handoff_helper,
    };
    let result = local.block_on(&runtime, systemd_distribute::run(opts));
    {
        // Tasks still in the LocalSet hold D-Bus proxies whose destructors
        // spawn cleanup on the runtime: drop them inside its context.
        let _context = runtime.enter();
        drop(local);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("systemd-distribute: {e:#}");
            ExitCode::FAILURE
        }
    }
}
