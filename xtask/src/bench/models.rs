//! Scenario 2, distribution models: the same handler and event loop
//! (`distribute-bench-server`) with N workers, distributed in the ways of
//! [`MODELS`], on one CPU.

use super::measure::{alternating_rounds, best_of, median_of, select, Run};
use super::testbed::{wait_port, Bed, HostServer};
use super::{Profile, Progress, P_MODELS, SERVER_CPU, WORKLOADS};
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRow {
    pub model: String,
    pub description: String,
    pub workload: String,
    pub capacity_rps: f64,
    /// capacity / capacity of (a).
    pub throughput_ratio: f64,
    pub rate: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// p99 / p99 of (a) at the same offered rate (lower is better).
    pub p99_vs_a: f64,
    /// max/min per-worker share in the fixed-rate run.
    pub fairness: f64,
    pub workers_seen: usize,
    pub failures: u64,
    pub unsent: u64,
    pub gen_busy: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Models {
    pub n: usize,
    pub work_us: u64,
    pub connections: usize,
    pub rows: Vec<ModelRow>,
    pub runs: Vec<Run>,
}

/// Id, description, and `distribute-bench-server --model` (empty: served by
/// the activator). (a), first, is the baseline.
pub(super) const MODELS: &[(&str, &str, &str)] = &[
    ("a", "Distribute=N: one SO_REUSEPORT socket per single-threaded process, started by systemd-distribute", ""),
    ("a'", "the same sockets and processes started by hand (no systemd)", "reuseport"),
    ("b", "one shared listening socket, N processes each in epoll (thundering herd)", "shared"),
    ("c", "one shared listening socket, N processes, EPOLLEXCLUSIVE", "exclusive"),
    ("d", "one acceptor thread handing accepted fds round-robin to N worker threads", "acceptor"),
    ("e", "one process, one thread", "single"),
];

/// The activator's config of this scenario: model (a).
pub(super) fn config(bin: &str, p: &Profile) -> (String, String) {
    let w = p.work_us;
    (
        "models".into(),
        format!(
            "[Socket]\nListenStream=127.0.0.1:{P_MODELS}\nDistribute={}\nNoDelay=yes\nBacklog=4096\n\n\
             [Service]\nExecStart={bin}/distribute-bench-server --model listen-fds --work-us {w}\nCPUAffinity={SERVER_CPU}\n",
            p.models_n
        ),
    )
}

pub(super) fn measure(_bed: &Bed, p: &Profile, pr: &Progress) -> Result<Models> {
    pr.say(format!(
        "== 2 models: N={}, {} µs work per request, {} connections, same handler and event loop",
        p.models_n, p.work_us, p.connections
    ));
    let model = |id: &str| {
        let i = MODELS.iter().position(|m| m.0 == id).expect("known model");
        (i, MODELS[i])
    };
    // (a) listens on P_MODELS, the others each on a port of their own above it.
    let serve = |id: &str, kind: &str, round: usize| -> Result<(u16, Option<HostServer>)> {
        let (i, (_, desc, server_model)) = model(id);
        if kind == "capacity" && round == 0 {
            pr.say(format!("   ({id}) {desc}"));
        }
        if server_model.is_empty() {
            wait_port(P_MODELS)?;
            return Ok((P_MODELS, None));
        }
        let port = P_MODELS + 1 + i as u16;
        let server = HostServer::start(
            &[
                "--model",
                server_model,
                "--workers",
                &p.models_n.to_string(),
                "--port",
                &port.to_string(),
                "--work-us",
                &p.work_us.to_string(),
            ],
            port,
        )?;
        Ok((port, Some(server)))
    };
    let ids: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
    let (rates, runs) = alternating_rounds(
        p,
        pr,
        p.model_rounds.max(1),
        &ids,
        |id| format!("({id})"),
        serve,
    )?;
    let mut rows = Vec::new();
    for (w, &rate) in WORKLOADS.iter().zip(&rates) {
        let cap_a = median_of(&runs, "a", w, "capacity", |r| r.result.throughput);
        let p99_a = best_of(&runs, "a", w, |r| r.latency_us.p99).max(1) as f64;
        for (model, desc, _) in MODELS {
            let fixed = |f: fn(&Run) -> f64| median_of(&runs, model, w, "fixed", f);
            let cap = median_of(&runs, model, w, "capacity", |r| r.result.throughput);
            let p99 = best_of(&runs, model, w, |r| r.latency_us.p99) as f64;
            rows.push(ModelRow {
                model: model.to_string(),
                description: desc.to_string(),
                workload: w.to_string(),
                capacity_rps: cap,
                throughput_ratio: cap / cap_a,
                rate,
                p50_us: best_of(&runs, model, w, |r| r.latency_us.p50),
                p99_us: p99 as u64,
                p999_us: best_of(&runs, model, w, |r| r.latency_us.p999),
                p99_vs_a: p99 / p99_a,
                fairness: fixed(|r| r.result.fairness),
                workers_seen: fixed(|r| r.result.workers.len() as f64) as usize,
                failures: fixed(|r| r.result.errors.total() as f64) as u64,
                unsent: fixed(|r| r.result.unsent as f64) as u64,
                gen_busy: select(&runs, model, w, "capacity")
                    .map(|r| r.gen_busy)
                    .fold(0.0, f64::max),
            });
        }
    }
    Ok(Models {
        n: p.models_n,
        work_us: p.work_us,
        connections: p.connections,
        rows,
        runs,
    })
}
