//! Scenario 1, data-path overhead: `distribute-hello` x2 started by
//! systemd-distribute versus the same binary x2 with its own `SO_REUSEPORT`
//! sockets started by hand.

use super::measure::{alternating_rounds, best_of, median_of, Run};
use super::testbed::{wait_port, Bed, HostServer};
use super::{release_bin, Profile, Progress, P_DP_ACT, P_DP_HAND, SERVER_CPU, WORKLOADS};
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPathRow {
    pub workload: String,
    pub hand_rps: f64,
    pub dist_rps: f64,
    /// dist / hand (capacity).
    pub throughput_ratio: f64,
    /// Offered rate of the fixed-rate runs.
    pub rate: f64,
    pub hand_p50_us: u64,
    pub dist_p50_us: u64,
    pub hand_p99_us: u64,
    pub dist_p99_us: u64,
    /// hand p99 / dist p99 (1.0 = same, lower = distribute slower).
    pub p99_ratio: f64,
    /// The load generator's busiest capacity run (near 1.0: it, not the server, was the limit).
    pub gen_busy_max: f64,
}

impl DataPathRow {
    /// hand p50 / dist p50 (1.0 = same, lower = distribute slower).
    pub(super) fn p50_ratio(&self) -> f64 {
        self.hand_p50_us as f64 / self.dist_p50_us.max(1) as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPath {
    pub n: usize,
    pub work_us: u64,
    pub rows: Vec<DataPathRow>,
    pub runs: Vec<Run>,
    /// Runs answered by more processes than the variant has (see
    /// `models::foreign_runs`).
    #[serde(default)]
    pub foreign_runs: usize,
}

/// The activator's config of this scenario.
pub(super) fn config(bin: &str, p: &Profile) -> (String, String) {
    let w = p.work_us;
    (
        "hello".into(),
        format!(
            "[Socket]\nListenStream=127.0.0.1:{P_DP_ACT}\nDistribute=2\nNoDelay=yes\nBacklog=4096\n\n\
             [Service]\nExecStart={bin}/distribute-hello --idle-timeout 0 --work-us {w}\nCPUAffinity={SERVER_CPU}\n"
        ),
    )
}

pub(super) fn measure(_bed: &Bed, p: &Profile, pr: &Progress) -> Result<DataPath> {
    pr.say(format!(
        "== 1 data path: distribute-hello x2 via systemd-distribute (:{P_DP_ACT}) vs x2 SO_REUSEPORT by hand (:{P_DP_HAND})"
    ));
    let hello = release_bin("distribute-hello").display().to_string();
    let _hand = HostServer::start(
        &[
            "--model",
            "exec",
            "--workers",
            "2",
            "--port",
            &P_DP_HAND.to_string(),
            "--",
            &hello,
            "--idle-timeout",
            "0",
            "--work-us",
            &p.work_us.to_string(),
        ],
        P_DP_HAND,
    )?;
    wait_port(P_DP_ACT)?;
    let port = |v: &str| if v == "hand" { P_DP_HAND } else { P_DP_ACT };
    // Many short interleaved rounds (as in the models scenario), the ratios
    // paired by round on the page.
    let (nrounds, run_s) = super::models::rounds(p);
    let short = Profile {
        duration_s: run_s,
        ..p.clone()
    };
    let p = &short;
    let (rates, runs) = alternating_rounds(
        p,
        pr,
        nrounds.max(p.rounds),
        &["hand", "distribute"],
        |v| format!("{v:<10}"),
        |v, _, _| Ok((port(v), None)),
    )?;
    let foreign = super::models::foreign_runs(&runs, |_| 2, pr);
    let cap = |v: &str, w: &str| median_of(&runs, v, w, "capacity", |r| r.result.throughput);
    let rows = WORKLOADS
        .iter()
        .zip(&rates)
        .map(|(w, &rate)| {
            let (hand_p99, dist_p99) = (
                best_of(&runs, "hand", w, |r| r.latency_us.p99),
                best_of(&runs, "distribute", w, |r| r.latency_us.p99),
            );
            DataPathRow {
                workload: w.to_string(),
                hand_rps: cap("hand", w),
                dist_rps: cap("distribute", w),
                // Median of the per-round ratios (paired: drift cancels).
                throughput_ratio: super::models::median_range(&super::models::paired_ratios(
                    &runs,
                    "distribute",
                    "hand",
                    w,
                    "capacity",
                    |r| r.result.throughput,
                ))
                .0,
                rate,
                hand_p50_us: best_of(&runs, "hand", w, |r| r.latency_us.p50),
                dist_p50_us: best_of(&runs, "distribute", w, |r| r.latency_us.p50),
                hand_p99_us: hand_p99,
                dist_p99_us: dist_p99,
                p99_ratio: hand_p99 as f64 / dist_p99.max(1) as f64,
                gen_busy_max: runs
                    .iter()
                    .filter(|r| r.workload == *w && r.kind == "capacity")
                    .map(|r| r.gen_busy)
                    .fold(0.0, f64::max),
            }
        })
        .collect::<Vec<_>>();
    for r in &rows {
        pr.say(format!(
            "   {}: throughput ratio {:.3}, p99 ratio {:.3} (target >= 0.97)",
            r.workload, r.throughput_ratio, r.p99_ratio
        ));
    }
    Ok(DataPath {
        n: 2,
        work_us: p.work_us,
        rows,
        runs,
        foreign_runs: foreign,
    })
}
