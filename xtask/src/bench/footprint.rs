//! Scenario 4, scale and footprint: the activator restarted with ever more
//! sockets and configs; start → READY, RSS, and its idle wakeups.

use super::testbed::{Bed, ACTIVATOR};
use super::{Profile, Progress, P_SCALE};
use anyhow::{bail, Result};
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
    /// Rescales of one config with nothing connected (`SetDistribute` on
    /// D-Bus, as `distributectl scale` sends it); empty in results from
    /// before they were measured.
    #[serde(default)]
    pub rescales: Vec<RescaleRow>,
}

/// One `SetDistribute(to)` call, timed until the activator reports N = `to`
/// settled: its `Instances` property lists exactly `to` instances, none is
/// still draining, and systemd's fd store of the activator holds exactly the
/// sockets of `to` instances (a shrink has sent `FDSTOREREMOVE` for the
/// others and systemd has read it; a grow has stored the new ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RescaleRow {
    pub from: u32,
    pub to: u32,
    /// Until the `SetDistribute` call returned, ms.
    pub call_ms: f64,
    /// Until settled, ms (includes `call_ms`).
    pub settled_ms: f64,
    /// Activator RSS once settled.
    pub rss_kb: u64,
}

/// The largest N a config may ask for (`Distribute=`, `SetDistribute`).
pub const MAX_N: u32 = 1024;

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
    let mut cases: Vec<ScaleCase> = [1usize, 16, 64, 256, MAX_N as usize]
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
    // Ports 49000..49999: the range this scenario owns ends there.
    cases.push((
        "1000 configs, N=1".into(),
        (0..1000)
            .map(|i| one(&format!("cfg{i:04}"), P_SCALE + 1000 + i as u16, 1))
            .collect(),
        1000,
    ));
    let mut rows: Vec<FootprintRow> = Vec::new();
    let mut rescales = Vec::new();
    for (label, configs, sockets) in cases {
        // The previous case's activator holds its ports until it stops.
        bed.sb.systemctl(&["stop", ACTIVATOR])?;
        wait_ports_free(&configs, pr)?;
        let wall = bed.restart_with(&configs)?;
        // Every config must be served, or the figures describe less than
        // the label says.
        let served = served_configs(bed)?;
        if served != configs.len() {
            bail!(
                "{label}: the activator serves {served} of {} configs\n--- journal ---\n{}",
                configs.len(),
                bed.sb
                    .journal(Some(ACTIVATOR))
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
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
        if label == format!("N={MAX_N}") {
            // Under no load, with the activator as READY left it.
            // What the fd store holds besides the config's sockets.
            let other = stored(bed).saturating_sub(MAX_N as usize);
            for (from, to) in [(MAX_N, 1), (1, MAX_N)] {
                let r = rescale(bed, pid, from, to, other)?;
                pr.say(format!(
                    "   rescale {from} → {to}: call returned after {:.1} ms, settled after {:.1} ms, RSS {} KiB",
                    r.call_ms, r.settled_ms, r.rss_kb
                ));
                rescales.push(r);
            }
        }
    }
    let (r0, t0) = (rows[0].rss_kb.max(1) as f64, rows[0].ready_ms.max(0.001));
    for r in &mut rows {
        r.rss_ratio = r.rss_kb as f64 / r0;
        r.ready_ratio = r.ready_ms / t0;
    }
    // Leave the bed as the load scenarios expect it.
    bed.restart_with(&bed.load_configs(p))?;
    Ok(Footprint { rows, rescales })
}

/// `SetDistribute(to)` on config `scale`, from inside the sandbox with
/// `busctl` (what `distributectl scale` calls), then the `Instances`
/// property polled until it lists `to` instances, none draining.
fn rescale(bed: &Bed, pid: u32, from: u32, to: u32, other: usize) -> Result<RescaleRow> {
    const PATH: &str = "/org/distribute1/socket/scale";
    const IFACE: &str = "org.distribute1.Socket";
    let t = Instant::now();
    bed.sb.run(
        "busctl",
        &[
            "call",
            "org.distribute1",
            PATH,
            IFACE,
            "SetDistribute",
            "u",
            &to.to_string(),
        ],
    )?;
    let call = t.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = bed.sb.run(
            "busctl",
            &[
                "--json=short",
                "get-property",
                "org.distribute1",
                PATH,
                IFACE,
                "Instances",
            ],
        )?;
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let list = v["data"].as_array().cloned().unwrap_or_default();
        // (index, unit, state, ...): the state is the third field.
        let draining = list.iter().any(|e| e[2].as_str() == Some("draining"));
        // The fd store only once the instances look right (one more
        // process per poll).
        let store = if list.len() == to as usize && !draining {
            stored(bed)
        } else {
            0
        };
        if store == to as usize + other {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "rescale {from} → {to}: not settled after 60 s ({} instances, draining: {draining}, \
                 fd store {store})",
                list.len()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let settled = t.elapsed();
    // The shrink's background task ends just after the fd store caught up
    // (it re-applies the steering program); a SetDistribute that came before
    // would be queued behind it, answered at once and timed wrongly.
    if to < from {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !bed
            .sb
            .journal(Some(ACTIVATOR))
            .contains(&format!("scale: shrink to {to} complete"))
        {
            if Instant::now() > deadline {
                bail!("rescale {from} → {to}: the activator never logged the shrink complete");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(RescaleRow {
        from,
        to,
        call_ms: call.as_secs_f64() * 1000.0,
        settled_ms: settled.as_secs_f64() * 1000.0,
        rss_kb: bed.rss_kb(pid)?,
    })
}

/// `NFileDescriptorStore` of the activator's unit: the fds systemd keeps for it.
fn stored(bed: &Bed) -> usize {
    bed.show(ACTIVATOR, "NFileDescriptorStore")
        .parse()
        .unwrap_or(0)
}

/// How many configs the activator serves: entries of `ListSockets` (name,
/// path, listen lines, N, running, state) in the `serving` state.
fn served_configs(bed: &Bed) -> Result<usize> {
    let out = bed.sb.run(
        "busctl",
        &[
            "--json=short",
            "call",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
            "ListSockets",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    Ok(v["data"][0].as_array().map_or(0, |a| {
        a.iter()
            .filter(|e| e[5].as_str() == Some("serving"))
            .count()
    }))
}

/// Waits until every port the configs listen on can be bound. This
/// scenario's ports (48000..49999) lie in the kernel's default ephemeral
/// range (32768..60999): while other load runs on the machine, a client
/// connection's local port, or its TIME-WAIT (60 s), may hold one of them,
/// and the activator's bind fails with EADDRINUSE like systemd's would. The
/// probe binds with SO_REUSEADDR (Rust's std does on Unix), as the activator.
fn wait_ports_free(configs: &[(String, String)], pr: &Progress) -> Result<()> {
    let ports: Vec<u16> = configs
        .iter()
        .filter_map(|(_, text)| {
            text.lines()
                .find_map(|l| l.strip_prefix("ListenStream=127.0.0.1:"))
                .and_then(|p| p.trim().parse().ok())
        })
        .collect();
    let busy = || {
        ports
            .iter()
            .copied()
            .filter(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_err())
            .collect::<Vec<u16>>()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut said = false;
    loop {
        let b = busy();
        if b.is_empty() {
            return Ok(());
        }
        if !said {
            pr.say(format!(
                "   waiting for {} port(s) to be free (e.g. {}): client connections of other \
                 load on this machine hold them (ephemeral range)",
                b.len(),
                b[0]
            ));
            said = true;
        }
        if Instant::now() > deadline {
            bail!(
                "ports still busy after 180 s: {b:?} (in the ephemeral port range; other load on \
                 this machine holds them)"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
