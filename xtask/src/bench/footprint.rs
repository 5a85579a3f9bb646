//! Scenario 4, scale and footprint: the activator restarted with ever more
//! sockets and configs; start → READY, RSS, and its idle wakeups.

use super::testbed::{Bed, ACTIVATOR};
use super::{Profile, Progress, P_SCALE};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FootprintRow {
    pub case: String,
    pub configs: usize,
    pub sockets: usize,
    /// ExecMainStartTimestamp → ActiveEnterTimestamp (READY=1), ms.
    pub ready_ms: f64,
    /// `systemctl start` wall time as seen by a client, ms.
    pub start_wall_ms: f64,
    pub rss_kb: u64,
    pub rss_ratio: f64,
    pub ready_ratio: f64,
    pub threads: usize,
    /// Context switches of all activator threads per second while idle.
    pub idle_wakeups_per_s: f64,
    pub idle_window_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Footprint {
    pub rows: Vec<FootprintRow>,
}

/// Label, configs (name, text), sockets.
type ScaleCase = (String, Vec<(String, String)>, usize);

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Footprint> {
    pr.say("== 4 scale and footprint: start → READY, RSS, idle wakeups of the activator");
    let hello = format!("{}/distribute-hello --idle-timeout 5s", bed.bin);
    let one = |name: &str, port: u16, n: usize| {
        (
            name.to_string(),
            format!("[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\n\n[Service]\nExecStart={hello}\n"),
        )
    };
    let mut cases: Vec<ScaleCase> = [1usize, 16, 64, 256]
        .iter()
        .map(|&n| (format!("N={n}"), vec![one("scale", P_SCALE, n)], n))
        .collect();
    cases.push((
        "100 configs, N=1".into(),
        (0..100)
            .map(|i| one(&format!("cfg{i:03}"), P_SCALE + 100 + i as u16, 1))
            .collect(),
        100,
    ));
    let mut rows: Vec<FootprintRow> = Vec::new();
    for (label, configs, sockets) in cases {
        let wall = bed.restart_with(&configs)?;
        let timestamp_us = |prop: &str| -> f64 { bed.show(ACTIVATOR, prop).parse().unwrap_or(0.0) };
        let start_us = timestamp_us("ExecMainStartTimestampMonotonic");
        let ready_us = timestamp_us("ActiveEnterTimestampMonotonic");
        let pid = bed.main_pid(ACTIVATOR)?;
        std::thread::sleep(Duration::from_millis(500));
        let rss = bed.rss_kb(pid)?;
        let (c0, threads) = bed.ctxt_switches(pid)?;
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(p.idle_window_s));
        let (c1, _) = bed.ctxt_switches(pid)?;
        let window = t.elapsed().as_secs_f64();
        let row = FootprintRow {
            case: label.clone(),
            configs: configs.len(),
            sockets,
            ready_ms: (ready_us - start_us) / 1000.0,
            start_wall_ms: wall.as_secs_f64() * 1000.0,
            rss_kb: rss,
            rss_ratio: 0.0,
            ready_ratio: 0.0,
            threads,
            idle_wakeups_per_s: (c1 - c0) as f64 / window,
            idle_window_s: window,
        };
        pr.say(format!(
            "   {label:<18} READY after {:>6.1} ms (systemctl start {:>6.1} ms)  RSS {:>6} KiB  {} threads  idle wakeups {:.2}/s",
            row.ready_ms, row.start_wall_ms, rss, threads, row.idle_wakeups_per_s
        ));
        rows.push(row);
    }
    let (r0, t0) = (rows[0].rss_kb.max(1) as f64, rows[0].ready_ms.max(0.001));
    for r in &mut rows {
        r.rss_ratio = r.rss_kb as f64 / r0;
        r.ready_ratio = r.ready_ms / t0;
    }
    // Leave the bed as the load scenarios expect it.
    bed.restart_with(&bed.load_configs(p))?;
    Ok(Footprint { rows })
}
