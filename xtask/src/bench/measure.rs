//! Load runs: the load generator, the record of each run, the order of the
//! rounds, and the statistics over the rounds.

use super::testbed::HostServer;
use super::{release_bin, Profile, Progress, LOAD_CPU, WORKLOADS};
use anyhow::{bail, Context, Result};
use distribute_bench::report::LoadResult;
use serde::{Deserialize, Serialize};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub variant: String,
    pub workload: String,
    /// `capacity` (closed loop), `fixed` (open loop at `result.rate`) or, in
    /// the steering scenario, `light` (open loop at a light rate).
    pub kind: String,
    pub round: usize,
    /// Share of CPU 0 the load generator used (user+system / wall).
    pub gen_busy: f64,
    pub result: LoadResult,
}

impl Run {
    /// Requests that failed or were never sent.
    pub(super) fn failed_or_unsent(&self) -> u64 {
        self.result.errors.total() + self.result.unsent
    }

    /// The progress line of this run: `round R LABEL WORKLOAD capacity|@RATE
    /// figures`, where `rate` is the offered rate (0 for capacity).
    pub(super) fn progress_line(&self, label: &str, rate: f64) -> String {
        let what = if rate > 0.0 {
            format!("@{rate:<7.0}")
        } else {
            "capacity ".to_string()
        };
        format!(
            "   round {} {label} {:<9} {what} {}",
            self.round,
            self.workload,
            describe(&self.result, self.gen_busy)
        )
    }
}

/// Where the load generator's clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Clients {
    /// One thread pinned to CPU 0 (the budget of every other scenario).
    Cpu0,
    /// One thread pinned to each of CPU 0 and CPU 1, half the rate and the
    /// connections each (`distribute-bench-load --cpus 0,1 --per-cpu`).
    PerCpu,
}

/// One run of the load generator; the second value is the share of its
/// CPUs it kept busy (user + system time / wall time / CPUs).
pub(super) fn load_on(
    p: &Profile,
    port: u16,
    workload: &str,
    rate: f64,
    clients: Clients,
) -> Result<(LoadResult, f64)> {
    let t = Instant::now();
    let (cpus, per_cpu, ncpus) = match clients {
        Clients::Cpu0 => (LOAD_CPU, false, 1.0),
        Clients::PerCpu => ("0,1", true, 2.0),
    };
    let out = Command::new(release_bin("distribute-bench-load"))
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--workload",
            workload,
        ])
        .args([
            "--rate",
            &format!("{rate:.0}"),
            "--connections",
            &p.connections.to_string(),
        ])
        .args([
            "--warmup",
            &p.warmup_s.to_string(),
            "--duration",
            &p.duration_s.to_string(),
        ])
        .args(["--cpus", cpus])
        .args(per_cpu.then_some("--per-cpu"))
        .stderr(Stdio::inherit())
        .output()
        .context("running distribute-bench-load")?;
    if !out.status.success() {
        bail!("distribute-bench-load failed: {}", out.status);
    }
    let r: LoadResult =
        serde_json::from_slice(&out.stdout).context("parsing the load generator's JSON")?;
    let busy = r.cpu_s / t.elapsed().as_secs_f64() / ncpus;
    Ok((r, busy))
}

/// The measuring plan of the data-path and models scenarios (load generator
/// on CPU 0): `rounds` rounds in which every variant serves every workload at
/// capacity (closed loop), then as many rounds at a fixed rate, `load_fraction`
/// of the median capacity of the first variant (the baseline). Even rounds take
/// the variants in order, odd ones backwards, so that drift hits all of them
/// alike. `serve(variant, kind, round)` readies a variant for its runs of a
/// round and returns its port and the server started by hand, if any (stopped
/// after the round's runs). Returns the fixed rates (one per [`WORKLOADS`])
/// and every run; `label` names a variant on the progress lines.
pub(super) fn alternating_rounds(
    p: &Profile,
    pr: &Progress,
    rounds: usize,
    variants: &[&str],
    label: impl Fn(&str) -> String,
    mut serve: impl FnMut(&str, &str, usize) -> Result<(u16, Option<HostServer>)>,
) -> Result<(Vec<f64>, Vec<Run>)> {
    let mut runs = Vec::new();
    let mut rates = vec![0.0; WORKLOADS.len()];
    for kind in ["capacity", "fixed"] {
        if kind == "fixed" {
            rates = WORKLOADS
                .iter()
                .map(|w| {
                    (median_of(&runs, variants[0], w, "capacity", |r| r.result.throughput)
                        * p.load_fraction)
                        .round()
                })
                .collect();
        }
        for round in 0..rounds {
            let order: Vec<&str> = if round.is_multiple_of(2) {
                variants.to_vec()
            } else {
                variants.iter().rev().copied().collect()
            };
            for v in order {
                let (port, _server) = serve(v, kind, round)?;
                for (w, &rate) in WORKLOADS.iter().zip(&rates) {
                    let (result, busy) = load_on(p, port, w, rate, Clients::Cpu0)?;
                    let run = Run {
                        variant: v.to_string(),
                        workload: w.to_string(),
                        kind: kind.into(),
                        round,
                        gen_busy: busy,
                        result,
                    };
                    pr.say(run.progress_line(&label(v), rate));
                    runs.push(run);
                }
            }
        }
    }
    Ok((rates, runs))
}

/// The runs of one variant on one workload of one kind (`capacity`, `fixed`, ...).
pub(super) fn select<'a>(
    runs: &'a [Run],
    variant: &'a str,
    workload: &'a str,
    kind: &'a str,
) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter()
        .filter(move |r| r.variant == variant && r.workload == workload && r.kind == kind)
}

/// The median of `f` over the selected runs (NaN when there are none).
pub(super) fn median_of(
    runs: &[Run],
    variant: &str,
    workload: &str,
    kind: &str,
    f: impl Fn(&Run) -> f64,
) -> f64 {
    median(select(runs, variant, workload, kind).map(f).collect())
}

/// A latency figure of the best fixed-rate round (0 when there is none).
/// Interference from outside only ever adds latency, so the lowest of the
/// rounds is the estimate least polluted by it.
pub(super) fn best_of(
    runs: &[Run],
    variant: &str,
    workload: &str,
    f: impl Fn(&LoadResult) -> u64,
) -> u64 {
    select(runs, variant, workload, "fixed")
        .map(|r| f(&r.result))
        .min()
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest and the largest of `v` (`f64::MAX` and 0 when it is empty).
pub(super) fn min_max(v: impl IntoIterator<Item = f64>) -> (f64, f64) {
    v.into_iter()
        .fold((f64::MAX, 0.0), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

fn describe(r: &LoadResult, busy: f64) -> String {
    let l = &r.latency_us;
    let mut s = format!(
        "{:>8.0} req/s  p50 {:>7} p99 {:>7} p99.9 {:>7}  fairness {:.2}  generator {:.0}%",
        r.throughput,
        us(l.p50),
        us(l.p99),
        us(l.p999),
        r.fairness,
        busy * 100.0
    );
    if r.errors.total() > 0 || r.unsent > 0 {
        s += &format!("  FAILED {} unsent {}", r.errors.total(), r.unsent);
    }
    s
}

/// Microseconds, as milliseconds from 10 ms up.
pub(super) fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
}

/// A ratio with two decimals; ∞ for `None` (a share of 0 below it).
pub(super) fn ratio_or_infinity(v: Option<f64>) -> String {
    v.map_or("∞".to_string(), |v| format!("{v:.2}"))
}
