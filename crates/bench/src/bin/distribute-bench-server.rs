//! `distribute-bench-server`: the benchmark's server models, all sharing one
//! handler (HTTP hello with `--work-us` of busy work per request).
//!
//! * `--model reuseport|shared|exclusive|acceptor|single --workers N --port P`:
//!   binds 127.0.0.1:P itself (see `distribute_bench::server` for the models).
//! * `--model listen-fds`: socket activation (`$LISTEN_FDS`): listening sockets
//!   (`systemd-distribute`, `Accept=no`) or an accepted connection (`Accept=yes`).
//! * `--model exec --workers N --port P -- PROGRAM ARGS...`: N copies of an
//!   unmodified socket-activated PROGRAM, each with its own `SO_REUSEPORT` socket.

use anyhow::{bail, Context};
use clap::Parser;
use distribute_bench::server::{self, LoopConfig, Model};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "distribute-bench-server", version)]
struct Cli {
    /// reuseport, shared, exclusive, acceptor, single, listen-fds or exec.
    #[arg(long)]
    model: String,
    /// Worker processes (threads for `acceptor`).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Port on 127.0.0.1 (not for `listen-fds`).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Busy-spin this many microseconds per request.
    #[arg(long, default_value_t = 0)]
    work_us: u64,
    /// Exit after this many milliseconds without connections (0 = never).
    #[arg(long, default_value_t = 0)]
    idle_timeout_ms: u64,
    /// Exit after serving this many connections (0 = never).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
    /// Accept at most this many connections per wakeup.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Pin to these CPUs (e.g. `1` or `0-1`); children inherit it.
    #[arg(long)]
    cpus: Option<String>,
    /// For `exec`: the program and its arguments.
    #[arg(last = true)]
    argv: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Every server process in a session of its own, like a service started
    // by systemd (see `fork_workers`: with autogroup scheduling a session is
    // a CPU scheduling group). Fails harmlessly (EPERM) where the process
    // already leads one: under systemd.
    // SAFETY: setsid has no memory-safety preconditions.
    unsafe { libc::setsid() };
    if let Some(cpus) = &cli.cpus {
        let cpus = distribute_bench::parse_cpu_list(cpus).map_err(anyhow::Error::msg)?;
        distribute_bench::pin_to(&cpus).context("sched_setaffinity")?;
    }
    let cfg = LoopConfig {
        batch: cli.batch.max(1),
        idle_timeout: (cli.idle_timeout_ms > 0).then(|| Duration::from_millis(cli.idle_timeout_ms)),
        exit_after: (cli.exit_after > 0).then_some(cli.exit_after),
        exclusive: false,
        work: Duration::from_micros(cli.work_us),
    };
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, cli.port);
    let n = cli.workers.max(1);
    let model = match cli.model.as_str() {
        "listen-fds" => {
            server::serve_listen_fds(cfg)?;
            return Ok(());
        }
        "exec" => {
            if cli.argv.is_empty() {
                bail!("--model exec needs `-- PROGRAM ARGS...`");
            }
            server::exec_reuseport(n, addr, &cli.argv)?;
            return Ok(());
        }
        "reuseport" => Model::Reuseport,
        "shared" => Model::Shared,
        "exclusive" => Model::Exclusive,
        "acceptor" => Model::Acceptor,
        "single" => Model::Single,
        m => bail!("unknown model {m:?}"),
    };
    if cli.port == 0 {
        bail!("--port is required for --model {}", cli.model);
    }
    server::serve_model(model, n, addr, cfg)?;
    Ok(())
}
