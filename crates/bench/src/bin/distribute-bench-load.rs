//! `distribute-bench-load`: open-loop HTTP load against a loopback server;
//! prints one JSON object (`distribute_bench::report::LoadResult`).

use anyhow::{bail, Context};
use clap::Parser;
use distribute_bench::load::{self, LoadConfig, Workload};
use std::net::SocketAddrV4;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "distribute-bench-load", version)]
struct Cli {
    /// Target, e.g. 127.0.0.1:8080 (loopback only).
    #[arg(long)]
    addr: SocketAddrV4,
    /// `short` (a connection per request) or `keepalive`.
    #[arg(long, default_value = "keepalive")]
    workload: String,
    /// Requests per second, scheduled open loop; 0 = closed loop (capacity).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Keep-alive connections, or the most connections in flight (short).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of traffic before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// A request fails without a response after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Hard cap on requests.
    #[arg(long, default_value_t = 50_000_000)]
    max_requests: u64,
    /// Pin to these CPUs (e.g. `0`).
    #[arg(long)]
    cpus: Option<String>,
    /// One generator thread per CPU of `--cpus`, each pinned to its CPU with
    /// an equal share of the rate and connections (clients on every CPU).
    #[arg(long, requires = "cpus")]
    per_cpu: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cpus = match &cli.cpus {
        Some(c) => distribute_bench::parse_cpu_list(c).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    if !cli.per_cpu {
        distribute_bench::pin_to(&cpus).context("sched_setaffinity")?;
    }
    let workload = match cli.workload.as_str() {
        "short" => Workload::Short,
        "keepalive" | "keep-alive" => Workload::KeepAlive,
        w => bail!("unknown workload {w:?}"),
    };
    if !(0.0..=10_000_000.0).contains(&cli.rate) || !(0.0..=3600.0).contains(&cli.duration) {
        bail!("--rate or --duration out of range");
    }
    let cfg = LoadConfig {
        addr: cli.addr,
        workload,
        rate: cli.rate,
        connections: cli.connections,
        warmup: Duration::from_secs_f64(cli.warmup.max(0.0)),
        duration: Duration::from_secs_f64(cli.duration.max(0.001)),
        timeout: Duration::from_millis(cli.timeout_ms),
        max_requests: cli.max_requests,
    };
    let result = if cli.per_cpu {
        load::run_per_cpu(cfg, &cpus)?
    } else {
        load::run(cfg)?
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
