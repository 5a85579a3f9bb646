//! Scenario 2, distribution models: the same handler and event loop
//! (`distribute-bench-server`) with N workers, distributed in the ways of
//! [`MODELS`], on one CPU.

use super::measure::{alternating_rounds, best_of, median_of, select, Run};
use super::testbed::{wait_port, Bed, HostServer};
use super::{release_bin, Profile, Progress, P_MODELS, SERVER_CPU, WORKLOADS};
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
    /// Smallest and largest per-round capacity ratio (model / (a) in the
    /// same round); `throughput_ratio` is their median.
    #[serde(default)]
    pub throughput_ratio_range: (f64, f64),
    /// Smallest and largest per-round p99 ratio (model / (a), same round,
    /// same rate).
    #[serde(default)]
    pub p99_vs_a_range: (f64, f64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Models {
    pub n: usize,
    pub work_us: u64,
    pub connections: usize,
    pub rows: Vec<ModelRow>,
    pub runs: Vec<Run>,
    /// Seconds measured per run (shorter than the profile's: many short
    /// rounds, the median of them).
    #[serde(default)]
    pub run_s: f64,
    /// Where systemd put (a)'s instance 0 and (a'-systemd): `/proc/PID/cgroup`,
    /// and the controllers enabled for the children of their parent slice.
    #[serde(default)]
    pub placement: Vec<(String, String)>,
    /// Runs answered by more processes than the model has (see
    /// [`foreign_runs`]).
    #[serde(default)]
    pub foreign_runs: usize,
}

/// Runs per model and seconds per run: many short interleaved rounds, so
/// that drift on this shared machine (one model moved 19% between two long
/// rounds) hits every model alike and the median sees past it.
pub(super) fn rounds(p: &Profile) -> (usize, f64) {
    if p.name == "full" {
        (p.model_rounds.max(10), 3.0)
    } else {
        (p.model_rounds.max(6), 1.0)
    }
}

/// The per-round ratio `f(model) / f(a)` over the rounds both have.
pub(super) fn paired_ratios(
    runs: &[Run],
    model: &str,
    base: &str,
    workload: &str,
    kind: &str,
    f: impl Fn(&Run) -> f64,
) -> Vec<f64> {
    select(runs, model, workload, kind)
        .filter_map(|r| {
            let b = select(runs, base, workload, kind).find(|b| b.round == r.round)?;
            Some(f(r) / f(b))
        })
        .collect()
}

/// (median, (min, max)) of `v`; NaN when empty.
pub(super) fn median_range(v: &[f64]) -> (f64, (f64, f64)) {
    if v.is_empty() {
        return (f64::NAN, (f64::NAN, f64::NAN));
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let mid = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (mid, (s[0], s[n - 1]))
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
    // Where (a) and (a') differ, one thing at a time (issue 18, item 6):
    ("a'-systemd", "the (a') server (`--model reuseport`, forking its N workers) started as one systemd service in the sandbox: systemd's cgroup placement and `CPUAffinity=1`, no systemd-distribute, all N in one cgroup", SD_MODEL),
    ("a-by-hand", "the (a) instance binary and path (`--model listen-fds`, the socket from `$LISTEN_FDS`) as N processes started by hand (`--model exec`), no systemd", "exec"),
];

/// Marks the model served by a unit of the sandbox's systemd.
const SD_MODEL: &str = "systemd";
/// That unit.
const SD_UNIT: &str = "bench-models-reuseport.service";

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

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Models> {
    let (nrounds, run_s) = rounds(p);
    pr.say(format!(
        "== 2 models: N={}, {} µs work per request, {} connections, same handler and event loop; \
         {nrounds} interleaved rounds of {run_s} s",
        p.models_n, p.work_us, p.connections
    ));
    let short = Profile {
        duration_s: run_s,
        ..p.clone()
    };
    let p = &short;
    let sd_port = P_MODELS + 1 + MODELS.iter().position(|m| m.2 == SD_MODEL).unwrap_or(0) as u16;
    bed.sb.install_unit(
        SD_UNIT,
        &format!(
            "[Unit]\nDefaultDependencies=no\n\n[Service]\nExecStart={}/distribute-bench-server --model reuseport \
             --workers {} --port {sd_port} --work-us {}\nCPUAffinity={SERVER_CPU}\n",
            bed.bin, p.models_n, p.work_us
        ),
    )?;
    bed.sb.systemctl(&["start", SD_UNIT])?;
    wait_port(sd_port)?;

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
        if server_model == SD_MODEL {
            // Started once, above, and left running like (a)'s instances.
            return Ok((port, None));
        }
        if server_model == "exec" {
            let server = HostServer::start(
                &[
                    "--model",
                    "exec",
                    "--workers",
                    &p.models_n.to_string(),
                    "--port",
                    &port.to_string(),
                    "--",
                    &release_bin("distribute-bench-server").display().to_string(),
                    "--model",
                    "listen-fds",
                    "--work-us",
                    &p.work_us.to_string(),
                ],
                port,
            )?;
            return Ok((port, Some(server)));
        }
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
    let measured = alternating_rounds(p, pr, nrounds, &ids, |id| format!("({id})"), serve);
    // Now that (a)'s instances have been started on demand.
    let placement = placement(bed);
    for (what, v) in &placement {
        pr.say(format!("   {what}: {v}"));
    }
    let _ = bed.sb.systemctl(&["stop", SD_UNIT]);
    let (rates, runs) = measured?;
    let foreign = foreign_runs(&runs, |id| if id == "e" { 1 } else { p.models_n }, pr);
    let mut rows = Vec::new();
    for (w, &rate) in WORKLOADS.iter().zip(&rates) {
        let p99_a = best_of(&runs, "a", w, |r| r.latency_us.p99).max(1) as f64;
        for (model, desc, _) in MODELS {
            let (cap_ratio, cap_range) =
                median_range(&paired_ratios(&runs, model, "a", w, "capacity", |r| {
                    r.result.throughput
                }));
            let (_, p99_range) = median_range(&paired_ratios(&runs, model, "a", w, "fixed", |r| {
                r.result.latency_us.p99.max(1) as f64
            }));
            let fixed = |f: fn(&Run) -> f64| median_of(&runs, model, w, "fixed", f);
            let cap = median_of(&runs, model, w, "capacity", |r| r.result.throughput);
            let p99 = best_of(&runs, model, w, |r| r.latency_us.p99) as f64;
            rows.push(ModelRow {
                model: model.to_string(),
                description: desc.to_string(),
                workload: w.to_string(),
                capacity_rps: cap,
                // The median of the per-round ratios: each round's pair ran
                // minutes apart at most, so drift cancels within a pair.
                throughput_ratio: cap_ratio,
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
                throughput_ratio_range: cap_range,
                p99_vs_a_range: p99_range,
            });
        }
    }
    Ok(Models {
        n: p.models_n,
        work_us: p.work_us,
        connections: p.connections,
        rows,
        runs,
        run_s,
        placement,
        foreign_runs: foreign,
    })
}

/// Runs answered by more processes than the variant has: a socket of
/// someone else's server joined the reuseport group of the port (same port,
/// same user, `SO_REUSEPORT`), which splits the load and spoils the
/// comparison. Warns about each one; returns how many there were.
pub(super) fn foreign_runs(runs: &[Run], expected: impl Fn(&str) -> usize, pr: &Progress) -> usize {
    let mut n = 0;
    for r in runs {
        let want = expected(&r.variant);
        if r.result.workers.len() > want {
            n += 1;
            pr.say(format!(
                "   WARNING: round {} {} {} {} answered by {} processes (expected at most {want}): \
                 another server shares the port's SO_REUSEPORT group",
                r.round,
                r.variant,
                r.workload,
                r.kind,
                r.result.workers.len()
            ));
        }
    }
    n
}

/// Where systemd placed (a)'s instance 0 and the (a'-systemd) service, and
/// which controllers their parent's children get: with `cpu` enabled, each
/// instance is a scheduling group of its own (one more level of CFS
/// bookkeeping per switch, and CPU shared per cgroup, not per process).
fn placement(bed: &Bed) -> Vec<(String, String)> {
    let read = |p: &str| {
        std::fs::read_to_string(bed.sb.host_path(p))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let mut out = Vec::new();
    for unit in ["models@0.service", SD_UNIT] {
        if let Ok(pid) = bed.main_pid(unit) {
            let cg = read(&format!("/proc/{pid}/cgroup"));
            // The path as the host sees it; inside the sandbox's cgroup
            // namespace its first component (the sandbox's cgroup) is the root.
            let path = cg.rsplit("::").next().unwrap_or_default().to_string();
            let inner = path
                .trim_start_matches('/')
                .split_once('/')
                .map_or(String::new(), |(_, rest)| format!("/{rest}"));
            let parent = inner.rsplit_once('/').map_or("", |(p, _)| p).to_string();
            out.push((format!("{unit} cgroup"), path.clone()));
            out.push((
                format!("{unit}: controllers of {parent}/*"),
                read(&format!("/sys/fs/cgroup{parent}/cgroup.subtree_control")),
            ));
            out.push((
                format!("{unit} CPUAccounting / CPUWeight"),
                format!(
                    "{} / {}",
                    bed.show(unit, "CPUAccounting"),
                    bed.show(unit, "CPUWeight")
                ),
            ));
        }
    }
    out
}
