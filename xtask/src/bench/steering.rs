//! Scenario 5, steering: `Steering=hash|warm|cpu` of a `Distribute=2` config
//! side by side, in two CPU budgets (see [`Budget`]).

use super::measure::{best_of, load_on, median_of, ratio_or_infinity, select, Clients, Run};
use super::testbed::{wait_port, Bed, ACTIVATOR};
use super::{Profile, Progress, P_STEER, SERVER_CPU, WORKLOADS};
use anyhow::Result;
use distribute_bench::report::LoadResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Instances per steering config.
const STEER_N: usize = 2;
/// The light-load runs offer this fraction of the budget's `hash` capacity.
const LIGHT_FRACTION: f64 = 0.1;
/// Keep-alive connections are closed by the instance after this many
/// requests (`distribute-hello --keepalive-requests`, like nginx's
/// `keepalive_requests`), so that the clients reconnect and steering, warm's
/// pool in particular, sees keep-alive clients again.
const KEEPALIVE_REQUESTS: u64 = 100;
/// The stall runs: instances of their configs.
const STALL_N: usize = 4;
/// How long instance 1 is stopped (`SIGSTOP` … `SIGCONT`).
const STALL_FOR: Duration = Duration::from_secs(5);
/// Measured window of a stall run (seconds): the stall starts 2 s into it.
const STALL_WINDOW_S: f64 = 20.0;
/// The stall runs offer this fraction of `hash / split` short capacity.
const STALL_FRACTION: f64 = 0.3;
/// Connections in flight allowed in a stall run: enough that the ones
/// waiting in the stopped instance's queue (until the generator's 2 s
/// timeout) never hold up the others.
const STALL_CONNECTIONS: usize = 4000;
/// The two stall configs: (config, health check on).
const STALL: [(&str, bool); 2] = [("st-stall-check", true), ("st-stall-nocheck", false)];

/// Where the servers and the clients of a steering variant run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// The budget of every other scenario: clients on CPU 0, instances
    /// `CPUAffinity=1`.
    Split,
    /// Clients on both CPUs (one generator thread pinned to each); instances
    /// without `CPUAffinity=` (`Steering=cpu` pins instance i to CPU i).
    Both,
}

impl Budget {
    pub(super) fn label(self) -> &'static str {
        match self {
            Budget::Split => "split",
            Budget::Both => "both CPUs",
        }
    }

    fn clients(self) -> Clients {
        match self {
            Budget::Split => Clients::Cpu0,
            Budget::Both => Clients::PerCpu,
        }
    }
}

/// How a variant is named in the runs, the progress output and the report:
/// `STEERING / BUDGET`.
pub(super) fn variant_id(steering: &str, budget: Budget) -> String {
    format!("{steering} / {}", budget.label())
}

/// One config of the steering scenario.
pub(super) struct SteerVariant {
    pub(super) steering: &'static str,
    pub(super) budget: Budget,
}

impl SteerVariant {
    fn id(&self) -> String {
        variant_id(self.steering, self.budget)
    }

    fn config(&self) -> String {
        let b = match self.budget {
            Budget::Split => "split",
            Budget::Both => "both",
        };
        format!("st-{}-{b}", self.steering)
    }
}

/// The variants, `hash` first in each budget (its baseline). Ports: P_STEER + index.
pub(super) const STEER: &[SteerVariant] = &[
    SteerVariant {
        steering: "hash",
        budget: Budget::Split,
    },
    SteerVariant {
        steering: "warm",
        budget: Budget::Split,
    },
    SteerVariant {
        steering: "cpu",
        budget: Budget::Split,
    },
    SteerVariant {
        steering: "hash",
        budget: Budget::Both,
    },
    SteerVariant {
        steering: "warm",
        budget: Budget::Both,
    },
    SteerVariant {
        steering: "cpu",
        budget: Budget::Both,
    },
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteerRow {
    pub steering: String,
    pub budget: Budget,
    pub workload: String,
    /// Closed loop, median of the rounds.
    pub capacity_rps: f64,
    /// capacity / capacity of `hash` in the same budget.
    pub throughput_ratio: f64,
    /// Offered rate of the fixed-rate runs (`load_fraction` of the budget's `hash` capacity).
    pub rate: f64,
    /// Best fixed-rate round.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// p50 / p50 of `hash` in the same budget (lower is better).
    pub p50_ratio: f64,
    /// p99 / p99 of `hash` in the same budget (lower is better).
    pub p99_ratio: f64,
    /// Largest over smallest share of the N instances in the fixed-rate runs
    /// (median); `None` when an instance served nothing.
    pub fairness: Option<f64>,
    /// fairness / fairness of `hash` in the same budget.
    pub fairness_ratio: Option<f64>,
    /// Instances that answered at least one request, and the busiest one's
    /// share, at `LIGHT_FRACTION` of capacity (not measured for `cpu`), at
    /// the fixed rate and in the capacity runs (largest count of the rounds,
    /// median share).
    pub light_rate: f64,
    pub served_light: Option<usize>,
    pub top_share_light: Option<f64>,
    pub served_fixed: usize,
    pub top_share_fixed: f64,
    pub served_capacity: usize,
    pub top_share_capacity: f64,
    /// Failed or unsent requests over every fixed-rate and light run.
    pub failures: u64,
    /// The generator's busiest capacity run, as a share of its CPUs.
    pub gen_busy: f64,
}

impl SteerRow {
    /// The row's variant, as its runs name it.
    pub(super) fn id(&self) -> String {
        variant_id(&self.steering, self.budget)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SteeringResult {
    pub n: usize,
    pub work_us: u64,
    pub connections: usize,
    pub load_fraction: f64,
    pub light_fraction: f64,
    pub rows: Vec<SteerRow>,
    /// `CPUAffinity=` of every instance after the runs (`systemctl show`).
    pub affinity: BTreeMap<String, String>,
    /// The activator's `warm pool A → B` log lines during the scenario.
    pub warm_pool_log: Vec<String>,
    pub runs: Vec<Run>,
    /// "One of N instances stalls for 5 s", with and without the health
    /// check (`StuckTimeoutSec=` default vs `0`).
    #[serde(default)]
    pub stall: Vec<StallRow>,
    /// `--keepalive-requests` of the instances.
    #[serde(default)]
    pub keepalive_requests: u64,
}

/// One stall run: short connections at a fixed rate on `Distribute=4`
/// (`split` budget) while instance 1 is stopped for [`STALL_FOR`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StallRow {
    /// The health check was on (`StuckTimeoutSec=` default).
    pub health_check: bool,
    pub n: usize,
    pub stall_s: f64,
    pub window_s: f64,
    pub rate: f64,
    #[serde(default)]
    pub connections: usize,
    pub completed: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Failed requests (connect, reset, timeout, bad answer).
    pub failed: u64,
    /// Scheduled but never sent: every allowed connection was waiting.
    pub unsent: u64,
    /// Activator log lines about the stuck instance during the run.
    pub log: Vec<String>,
}

impl SteeringResult {
    /// The row of one variant and workload.
    pub(super) fn row(&self, steering: &str, budget: Budget, workload: &str) -> Option<&SteerRow> {
        self.rows
            .iter()
            .find(|r| r.steering == steering && r.budget == budget && r.workload == workload)
    }

    /// How many of the warm pool changes in [`Self::warm_pool_log`] grew a
    /// pool (the others shrank one).
    pub(super) fn warm_pool_growths(&self) -> usize {
        self.warm_pool_log
            .iter()
            .filter(|l| l.contains("(queues"))
            .count()
    }
}

/// Largest over smallest share among all `n` instances (∞ when one served nothing).
fn fairness_of(r: &LoadResult, n: usize) -> f64 {
    if r.workers.len() < n {
        f64::INFINITY
    } else {
        r.fairness
    }
}

fn top_share(r: &LoadResult) -> f64 {
    let total: u64 = r.workers.values().sum();
    r.workers.values().copied().max().unwrap_or(0) as f64 / total.max(1) as f64
}

/// The activator's configs of this scenario, one per [`STEER`] variant.
pub(super) fn configs(bin: &str, p: &Profile) -> Vec<(String, String)> {
    let w = p.work_us;
    let stall = STALL.iter().enumerate().map(|(i, (name, check))| {
        (
            name.to_string(),
            format!(
                "[Socket]\nListenStream=127.0.0.1:{}\nDistribute={STALL_N}\nNoDelay=yes\nBacklog=4096\n\
                 Activation=eager\n{}\n\
                 [Service]\nExecStart={bin}/distribute-hello --idle-timeout 0 --work-us {w}\n\
                 CPUAffinity={SERVER_CPU}\n",
                P_STEER + (STEER.len() + i) as u16,
                if *check { "" } else { "StuckTimeoutSec=0\n" }
            ),
        )
    });
    STEER
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let affinity = match v.budget {
                Budget::Split => format!("CPUAffinity={SERVER_CPU}\n"),
                Budget::Both => String::new(),
            };
            (
                v.config(),
                format!(
                    "[Socket]\nListenStream=127.0.0.1:{}\nDistribute={STEER_N}\nNoDelay=yes\nBacklog=4096\nSteering={}\n\n\
                     [Service]\nExecStart={bin}/distribute-hello --idle-timeout 0 --work-us {w} \
                     --keepalive-requests {KEEPALIVE_REQUESTS}\n{affinity}",
                    P_STEER + i as u16,
                    v.steering
                ),
            )
        })
        .chain(stall)
        .collect()
}

/// One stall run on `config` (port `port`): load for [`STALL_WINDOW_S`],
/// instance 1 stopped from 2 s into it for [`STALL_FOR`].
fn stall_run(
    bed: &Bed,
    p: &Profile,
    pr: &Progress,
    config: &str,
    check: bool,
    port: u16,
    rate: f64,
) -> Result<StallRow> {
    let unit = format!("{config}@1.service");
    let pid = bed.main_pid(&unit)?;
    let since = bed
        .sb
        .run("date", &["+%s"])
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut prof = p.clone();
    prof.duration_s = STALL_WINDOW_S;
    prof.connections = STALL_CONNECTIONS;
    let load = std::thread::spawn(move || load_on(&prof, port, "short", rate, Clients::Cpu0));
    std::thread::sleep(Duration::from_secs_f64(p.warmup_s + 2.0));
    bed.sb.run("kill", &["-STOP", &pid.to_string()])?;
    std::thread::sleep(STALL_FOR);
    bed.sb.run("kill", &["-CONT", &pid.to_string()])?;
    let (r, _busy) = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))??;
    let log: Vec<String> = bed
        .sb
        .run(
            "journalctl",
            &[
                "--no-pager",
                "-o",
                "cat",
                "-u",
                ACTIVATOR,
                "--since",
                &format!("@{since}"),
            ],
        )
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains(&unit) && (l.contains("not accepting") || l.contains("accepting again"))
        })
        .map(|l| l.trim().to_string())
        .collect();
    let row = StallRow {
        health_check: check,
        n: STALL_N,
        stall_s: STALL_FOR.as_secs_f64(),
        window_s: STALL_WINDOW_S,
        rate,
        connections: STALL_CONNECTIONS,
        completed: r.completed,
        p50_us: r.latency_us.p50,
        p99_us: r.latency_us.p99,
        p999_us: r.latency_us.p999,
        max_us: r.latency_us.max,
        failed: r.errors.total(),
        unsent: r.unsent,
        log,
    };
    pr.say(format!(
        "   stall, health check {}: @{rate:.0} {} done, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs, failed {}, unsent {}",
        if check { "on " } else { "off" },
        row.completed,
        row.p50_us,
        row.p99_us,
        row.p999_us,
        row.max_us,
        row.failed,
        row.unsent
    ));
    for l in &row.log {
        pr.say(format!("      {l}"));
    }
    Ok(row)
}

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<SteeringResult> {
    pr.say(format!(
        "== 5 steering: distribute-hello --work-us {} via systemd-distribute, Distribute={STEER_N}, \
         Steering=hash|warm|cpu; budget \"split\": clients CPU 0, instances CPUAffinity={SERVER_CPU}; \
         budget \"both CPUs\": a client thread pinned to each CPU, instances unpinned (cpu pins instance i to CPU i)",
        p.work_us
    ));
    let since = bed
        .sb
        .run("date", &["+%s"])
        .unwrap_or_default()
        .trim()
        .to_string();
    for i in 0..STEER.len() + STALL.len() {
        wait_port(P_STEER + i as u16)?;
    }
    let rounds = p.rounds.max(1);
    let mut runs: Vec<Run> = Vec::new();
    // A warm run right after another of the same config would start with the
    // pool the previous one grew; the pool shrinks after a calm second.
    let mut last: Option<usize> = None;
    let mut one = |v: usize,
                   w: &str,
                   rate: f64,
                   kind: &str,
                   round: usize,
                   runs: &mut Vec<Run>|
     -> Result<()> {
        let var = &STEER[v];
        if var.steering == "warm" && (last == Some(v) || kind == "light") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        last = Some(v);
        let (result, busy) = load_on(p, P_STEER + v as u16, w, rate, var.budget.clients())?;
        let run = Run {
            variant: var.id(),
            workload: w.to_string(),
            kind: kind.to_string(),
            round,
            gen_busy: busy,
            result,
        };
        pr.say(format!(
            "{}  instances {}",
            run.progress_line(&format!("{:<17}", var.id()), rate),
            run.result.workers.len()
        ));
        runs.push(run);
        Ok(())
    };
    // Rotate the order from round to round so that drift hits every variant alike.
    let order = |round: usize| (0..STEER.len()).map(move |i| (i + round) % STEER.len());
    for w in WORKLOADS {
        for round in 0..rounds {
            for v in order(round) {
                one(v, w, 0.0, "capacity", round, &mut runs)?;
            }
        }
    }
    let baseline = |b: Budget| {
        STEER
            .iter()
            .find(|v| v.budget == b && v.steering == "hash")
            .expect("a hash row per budget")
    };
    let hash_cap = |runs: &[Run], b: Budget, w: &str| {
        median_of(runs, &baseline(b).id(), w, "capacity", |r| {
            r.result.throughput
        })
    };
    let rate_of =
        |runs: &[Run], v: usize, w: &str, f: f64| (hash_cap(runs, STEER[v].budget, w) * f).round();
    for w in WORKLOADS {
        for round in 0..rounds {
            for v in order(round) {
                let rate = rate_of(&runs, v, w, p.load_fraction);
                one(v, w, rate, "fixed", round, &mut runs)?;
            }
        }
    }
    for w in WORKLOADS {
        for (v, var) in STEER.iter().enumerate() {
            if var.steering != "cpu" {
                let rate = rate_of(&runs, v, w, LIGHT_FRACTION);
                one(v, w, rate, "light", 0, &mut runs)?;
            }
        }
    }
    let mut affinity = BTreeMap::new();
    for v in STEER {
        for i in 0..STEER_N {
            let unit = format!("{}@{i}.service", v.config());
            let cpus = bed.show(&unit, "CPUAffinity");
            let state = bed.show(&unit, "ActiveState");
            let cpus = if cpus.is_empty() {
                "(all)".into()
            } else {
                cpus
            };
            affinity.insert(unit, format!("{cpus} ({state})"));
        }
    }
    let warm_pool_log: Vec<String> = bed
        .sb
        .run(
            "journalctl",
            &[
                "--no-pager",
                "-o",
                "cat",
                "-u",
                ACTIVATOR,
                "--since",
                &format!("@{since}"),
            ],
        )
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("warm pool"))
        .map(|l| l.trim().to_string())
        .collect();
    let mut rows = Vec::new();
    for w in WORKLOADS {
        for (vi, v) in STEER.iter().enumerate() {
            let (id, base) = (v.id(), baseline(v.budget).id());
            let of = |kind| select(&runs, &id, w, kind);
            let med = |kind, f: fn(&Run) -> f64| median_of(&runs, &id, w, kind, f);
            let best = |id: &str, f: fn(&LoadResult) -> u64| best_of(&runs, id, w, f);
            let cap = med("capacity", |r| r.result.throughput);
            let fair =
                |id: &str| median_of(&runs, id, w, "fixed", |r| fairness_of(&r.result, STEER_N));
            let finite = |x: f64| x.is_finite().then_some(x);
            let light = of("light").next();
            let (p50, p99) = (
                best(&id, |r| r.latency_us.p50),
                best(&id, |r| r.latency_us.p99),
            );
            rows.push(SteerRow {
                steering: v.steering.into(),
                budget: v.budget,
                workload: w.into(),
                capacity_rps: cap,
                throughput_ratio: cap / hash_cap(&runs, v.budget, w),
                rate: rate_of(&runs, vi, w, p.load_fraction),
                p50_us: p50,
                p99_us: p99,
                p999_us: best(&id, |r| r.latency_us.p999),
                p50_ratio: p50 as f64 / best(&base, |r| r.latency_us.p50).max(1) as f64,
                p99_ratio: p99 as f64 / best(&base, |r| r.latency_us.p99).max(1) as f64,
                fairness: finite(fair(&id)),
                fairness_ratio: finite(fair(&id) / fair(&base)),
                light_rate: rate_of(&runs, vi, w, LIGHT_FRACTION),
                served_light: light.map(|r| r.result.workers.len()),
                top_share_light: light.map(|r| top_share(&r.result)),
                served_fixed: of("fixed")
                    .map(|r| r.result.workers.len())
                    .max()
                    .unwrap_or(0),
                top_share_fixed: med("fixed", |r| top_share(&r.result)),
                served_capacity: of("capacity")
                    .map(|r| r.result.workers.len())
                    .max()
                    .unwrap_or(0),
                top_share_capacity: med("capacity", |r| top_share(&r.result)),
                failures: of("fixed")
                    .chain(of("light"))
                    .map(Run::failed_or_unsent)
                    .sum(),
                gen_busy: of("capacity").map(|r| r.gen_busy).fold(0.0, f64::max),
            });
        }
    }
    for r in &rows {
        pr.say(format!(
            "   {:<5} {:<9} {:<9} capacity {:.3}  p50 {:.2}  p99 {:.2}  fairness {}  instances light/fixed/capacity {}/{}/{}",
            r.steering,
            r.budget.label(),
            r.workload,
            r.throughput_ratio,
            r.p50_ratio,
            r.p99_ratio,
            ratio_or_infinity(r.fairness_ratio),
            r.served_light.map_or("-".into(), |n| n.to_string()),
            r.served_fixed,
            r.served_capacity
        ));
    }
    for (u, c) in &affinity {
        pr.say(format!("   {u}: CPUAffinity={c}"));
    }
    pr.say(format!("   warm pool changes: {}", warm_pool_log.len()));
    // One of N instances stalls: with and without the health check, one
    // after the other in this run, at the same rate.
    let stall_rate = (hash_cap(&runs, Budget::Split, "short") * STALL_FRACTION).round();
    pr.say(format!(
        "== 5b one of {STALL_N} instances stops for {}s (SIGSTOP … SIGCONT), short connections @{stall_rate:.0}/s for {STALL_WINDOW_S}s, \
         clients CPU 0, instances CPUAffinity={SERVER_CPU}",
        STALL_FOR.as_secs()
    ));
    let mut stall = Vec::new();
    for (i, (config, check)) in STALL.iter().enumerate() {
        let port = P_STEER + (STEER.len() + i) as u16;
        stall.push(stall_run(bed, p, pr, config, *check, port, stall_rate)?);
    }
    Ok(SteeringResult {
        stall,
        keepalive_requests: KEEPALIVE_REQUESTS,
        n: STEER_N,
        work_us: p.work_us,
        connections: p.connections,
        load_fraction: p.load_fraction,
        light_fraction: LIGHT_FRACTION,
        rows,
        affinity,
        warm_pool_log,
        runs,
    })
}
