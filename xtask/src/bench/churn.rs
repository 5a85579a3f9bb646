//! Scenario "churn": what many idle-exit cycles cost PID 1. Every variant
//! (transient instances, template mode, systemd's `Accept=no` and
//! `Accept=yes`) runs `churn_cycles` activation cycles in a sandbox of its
//! own: each variant has its own PID 1, dbus-daemon and (for ours) activator,
//! so the four run at the same time and one variant's leftovers cannot be
//! charged to another. Every `sample_every` cycles it records the RSS of PID 1
//! (and the finer `smaps_rollup` figures), of dbus-daemon and of the
//! activator, and the counts where growth could hide: units loaded in PID 1,
//! cgroups, the journal's size, D-Bus match rules and connections.
//!
//! A cycle: connect, send a request, read the answer to its end (the instance
//! exits after its one connection), then wait until the instance's cgroup is
//! gone — a stat of the sandbox's cgroup tree, not a `systemctl` call, so a
//! cycle costs what systemd needs for a start and a stop, not what a poll
//! loop adds (the cold-activation scenario waits ~50 ms between activations
//! on purpose; this one must not).

use super::testbed::ACTIVATOR;
use super::{Profile, Progress};
use anyhow::{bail, Context, Result};
use distribute_sandbox::{Sandbox, Systemd};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// First port of this scenario, one per variant.
const P_CHURN: u16 = super::P_CHURN;

/// One sample, taken after `cycle` completed cycles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnSample {
    pub cycle: usize,
    pub elapsed_s: f64,
    pub pid1_rss_kb: u64,
    /// `/proc/PID1/smaps_rollup`: memory only PID 1 has written (its heap,
    /// mostly): where unit objects and their bookkeeping live.
    pub pid1_private_dirty_kb: u64,
    pub pid1_anonymous_kb: u64,
    pub dbus_rss_kb: u64,
    /// 0 for the native variants, which run no activator.
    pub activator_rss_kb: u64,
    /// PID 1's `NNames`: unit names loaded.
    pub units_loaded: u64,
    /// Directories in the sandbox's cgroup tree.
    pub cgroups: u64,
    /// Bytes of journal files under /run/log/journal.
    pub journal_kb: u64,
    /// dbus-daemon's `org.freedesktop.DBus.Debug.Stats.GetStats`
    /// (`None` when the bus does not answer it).
    pub dbus_match_rules: Option<u64>,
    pub dbus_connections: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnVariant {
    pub variant: String,
    pub cycles: usize,
    pub failures: usize,
    pub wall_s: f64,
    /// Cycles whose instance's cgroup was still there after 10 s (the next
    /// cycle started anyway).
    pub slow_teardowns: usize,
    pub samples: Vec<ChurnSample>,
}

impl ChurnVariant {
    /// PID 1 VmRSS growth per 1,000 cycles between samples `from` and `to`
    /// (indices), by the least-squares slope over the samples in between.
    pub fn slope_per_1000(&self, from: usize, to: usize, f: impl Fn(&ChurnSample) -> f64) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .samples
            .get(from..=to.min(self.samples.len().saturating_sub(1)))
            .unwrap_or(&[])
            .iter()
            .map(|s| (s.cycle as f64, f(s)))
            .collect();
        let n = pts.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx == 0.0 {
            return f64::NAN;
        }
        sxy / sxx * 1000.0
    }

    /// Slopes over the first and the second half of the run: a curve that
    /// levels off has a second-half slope near 0.
    pub fn halves(&self, f: impl Fn(&ChurnSample) -> f64 + Copy) -> (f64, f64) {
        let last = self.samples.len().saturating_sub(1);
        let mid = last / 2;
        (
            self.slope_per_1000(0, mid, f),
            self.slope_per_1000(mid, last, f),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Churn {
    pub cycles_per_variant: usize,
    pub sample_every: usize,
    /// First line of `systemd --version` of the systemd measured.
    pub systemd: String,
    pub wall_s: f64,
    pub variants: Vec<ChurnVariant>,
}

pub const V_TRANSIENT: &str = "systemd-distribute transient";
pub const V_TEMPLATE: &str = "systemd-distribute template mode";
pub const V_NO: &str = "systemd Accept=no";
pub const V_YES: &str = "systemd Accept=yes";
const VARIANTS: [&str; 4] = [V_TRANSIENT, V_TEMPLATE, V_NO, V_YES];

/// The unit name prefix whose cgroup marks a running instance, per variant.
fn unit_prefix(variant: &str) -> &'static str {
    match variant {
        V_TRANSIENT => "churn@",
        V_TEMPLATE => "churntpl@",
        V_NO => "churnno.service",
        _ => "churnyes@",
    }
}

/// A variant's sandbox: the private systemd and what runs in it.
struct ChurnBed {
    sb: Sandbox,
    dbus_pid: u32,
    activator_pid: Option<u32>,
}

fn boot(variant: &str, port: u16) -> Result<ChurnBed> {
    let tag = match variant {
        V_TRANSIENT => "transient",
        V_TEMPLATE => "template",
        V_NO => "acceptno",
        _ => "acceptyes",
    };
    let sb = Sandbox::boot_on(
        &format!("churn-{tag}"),
        &[crate::root().join("units/org.distribute1.conf")],
        Systemd::Host,
    )?;
    let bin = super::testbed::install_release_bins(
        &sb,
        &[
            "systemd-distribute",
            "systemd-distribute-exec",
            "systemd-distribute-handoff",
            "distribute-bench-server",
        ],
    )?;
    let server = format!("{bin}/distribute-bench-server --model listen-fds");
    let ours = matches!(variant, V_TRANSIENT | V_TEMPLATE);
    // The units and configs mirror the cold-activation scenario's (no start
    // or trigger rate limits, the same server) so the two scenarios compare.
    match variant {
        V_TRANSIENT => {
            sb.write_file(
                "config/churn.socket",
                &format!(
                    "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute=1\nNoDelay=yes\nTriggerLimitIntervalSec=0\n\n\
                     [Service]\nExecStart={server} --exit-after 1\n"
                ),
            )?;
        }
        V_TEMPLATE => {
            sb.install_unit(
                "churntpl@.service",
                &format!(
                    "[Unit]\nDescription=churn, template mode, instance %i\nStartLimitIntervalSec=0\n\n\
                     [Service]\nType=simple\nExecStart={server} --exit-after 1\n"
                ),
            )?;
            sb.write_file(
                "config/churntpl.socket",
                &format!(
                    "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute=1\nNoDelay=yes\nTriggerLimitIntervalSec=0\n\
                     Service=churntpl@.service\n"
                ),
            )?;
        }
        V_NO => {
            sb.install_unit(
                "churnno.socket",
                &format!(
                    "[Unit]\nDefaultDependencies=no\n\n[Socket]\nListenStream=127.0.0.1:{port}\nNoDelay=yes\nAccept=no\n\
                     TriggerLimitIntervalSec=0\n"
                ),
            )?;
            sb.install_unit(
                "churnno.service",
                &format!(
                    "[Unit]\nDefaultDependencies=no\nStartLimitIntervalSec=0\n\n[Service]\nExecStart={server} --exit-after 1\n"
                ),
            )?;
            sb.systemctl(&["start", "churnno.socket"])?;
        }
        _ => {
            sb.install_unit(
                "churnyes.socket",
                &format!(
                    "[Unit]\nDefaultDependencies=no\n\n[Socket]\nListenStream=127.0.0.1:{port}\nNoDelay=yes\nAccept=yes\n\
                     TriggerLimitIntervalSec=0\nMaxConnections=1024\n"
                ),
            )?;
            sb.install_unit(
                "churnyes@.service",
                &format!(
                    "[Unit]\nDefaultDependencies=no\nStartLimitIntervalSec=0\nCollectMode=inactive-or-failed\n\n\
                     [Service]\nExecStart={server}\n"
                ),
            )?;
            sb.systemctl(&["start", "churnyes.socket"])?;
        }
    }
    let mut activator_pid = None;
    if ours {
        super::testbed::install_activator_unit(&sb, &bin)?;
        if let Err(e) = sb.systemctl(&["start", ACTIVATOR]) {
            bail!(
                "{variant}: starting systemd-distribute failed: {e:#}\n{}",
                sb.journal(Some(ACTIVATOR))
            );
        }
        activator_pid = Some(main_pid(&sb, ACTIVATOR)?);
    }
    // The bus is socket-activated: without the activator nothing has used
    // it yet.
    sb.systemctl(&["start", "dbus.service"])?;
    let dbus_pid = main_pid(&sb, "dbus.service")?;
    Ok(ChurnBed {
        sb,
        dbus_pid,
        activator_pid,
    })
}

fn main_pid(sb: &Sandbox, unit: &str) -> Result<u32> {
    let pid: u32 = sb
        .systemctl(&["show", "-p", "MainPID", "--value", unit])?
        .trim()
        .parse()
        .unwrap_or(0);
    if pid == 0 {
        bail!("{unit} has no main PID");
    }
    Ok(pid)
}

/// A field (kB) of a `/proc` file in `Key: value kB` form; 0 when absent.
fn kb_field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// VmRSS of a process of the sandbox (host path through its PID 1's root).
fn rss_kb(sb: &Sandbox, pid: u32) -> u64 {
    std::fs::read_to_string(sb.host_path(&format!("/proc/{pid}/status")))
        .map(|s| kb_field(&s, "VmRSS"))
        .unwrap_or(0)
}

/// Whether an instance of the variant still has a cgroup: instances of a
/// template name sit in `system.slice/system-PREFIX.slice/`, others in
/// `system.slice/`. A directory listing of the cgroup2 mount costs
/// microseconds.
fn instance_present(sb: &Sandbox, prefix: &str) -> bool {
    let base = sb.host_path("/sys/fs/cgroup/system.slice");
    let mut dirs = vec![base.clone()];
    if let Some(stem) = prefix.strip_suffix('@') {
        dirs.push(base.join(format!("system-{stem}.slice")));
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    })
}

fn count_dirs(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| 1 + count_dirs(&e.path()))
            .sum()
    })
}

fn size_kb(p: &Path) -> u64 {
    fn bytes(p: &Path) -> u64 {
        std::fs::read_dir(p).map_or(0, |rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
    }
    bytes(p) / 1024
}

/// `(MatchRules, ActiveConnections)` from dbus-daemon's statistics interface.
fn dbus_stats(sb: &Sandbox) -> (Option<u64>, Option<u64>) {
    let Ok(out) = sb.run(
        "busctl",
        &[
            "--json=short",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.Debug.Stats",
            "GetStats",
        ],
    ) else {
        return (None, None);
    };
    let v: serde_json::Value = match serde_json::from_str(out.trim()) {
        Ok(v) => v,
        Err(_) => return (None, None),
    };
    let get = |k: &str| v["data"][0][k]["data"].as_u64();
    (get("MatchRules"), get("ActiveConnections"))
}

fn sample(bed: &ChurnBed, cycle: usize, t0: Instant) -> ChurnSample {
    let sb = &bed.sb;
    let pid1 = sb.pid1();
    let rss = std::fs::read_to_string(format!("/proc/{pid1}/status"))
        .map(|s| kb_field(&s, "VmRSS"))
        .unwrap_or(0);
    let rollup = std::fs::read_to_string(format!("/proc/{pid1}/smaps_rollup")).unwrap_or_default();
    let (match_rules, connections) = dbus_stats(sb);
    ChurnSample {
        cycle,
        elapsed_s: t0.elapsed().as_secs_f64(),
        pid1_rss_kb: rss,
        pid1_private_dirty_kb: kb_field(&rollup, "Private_Dirty"),
        pid1_anonymous_kb: kb_field(&rollup, "Anonymous"),
        dbus_rss_kb: rss_kb(sb, bed.dbus_pid),
        activator_rss_kb: bed.activator_pid.map_or(0, |p| rss_kb(sb, p)),
        units_loaded: sb
            .systemctl(&["show", "-p", "NNames", "--value"])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        cgroups: count_dirs(&sb.host_path("/sys/fs/cgroup")),
        journal_kb: size_kb(&sb.host_path("/run/log/journal")),
        dbus_match_rules: match_rules,
        dbus_connections: connections,
    }
}

/// Runs one variant's cycles in its own sandbox.
fn run_variant(
    variant: &str,
    port: u16,
    cycles: usize,
    every: usize,
    pr: &Progress,
) -> Result<ChurnVariant> {
    let bed = boot(variant, port)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let prefix = unit_prefix(variant);
    // Settle: the first activations load code and caches in every process
    // along the chain; the curve is about what comes after.
    for _ in 0..20 {
        let _ = super::activation::first_byte(addr);
        wait_gone(&bed.sb, prefix);
    }
    let t0 = Instant::now();
    let mut samples = vec![sample(&bed, 0, t0)];
    let (mut failures, mut in_a_row, mut slow) = (0, 0, 0);
    for c in 1..=cycles {
        match super::activation::first_byte(addr) {
            Ok(_) => in_a_row = 0,
            Err(e) => {
                failures += 1;
                in_a_row += 1;
                if failures <= 3 {
                    pr.say(format!("   churn {variant}: cycle {c} failed: {e:#}"));
                }
                if in_a_row >= 20 {
                    bail!(
                        "churn {variant}: 20 cycles in a row failed (last: {e:#})\n{}",
                        bed.sb
                            .journal(None)
                            .lines()
                            .rev()
                            .take(40)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
        if !wait_gone(&bed.sb, prefix) {
            slow += 1;
        }
        if c.is_multiple_of(every) || c == cycles {
            let s = sample(&bed, c, t0);
            if c.is_multiple_of(every * 5) || c == cycles {
                pr.say(format!(
                    "   churn {variant:<34} {c:>6}/{cycles} ({:>5.0} s)  PID 1 RSS {} KiB (private dirty {})  \
                     dbus {} KiB  activator {} KiB  units {}  cgroups {}",
                    s.elapsed_s,
                    s.pid1_rss_kb,
                    s.pid1_private_dirty_kb,
                    s.dbus_rss_kb,
                    s.activator_rss_kb,
                    s.units_loaded,
                    s.cgroups
                ));
            }
            samples.push(s);
        }
    }
    Ok(ChurnVariant {
        variant: variant.to_string(),
        cycles,
        failures,
        wall_s: t0.elapsed().as_secs_f64(),
        slow_teardowns: slow,
        samples,
    })
}

/// Waits until the variant's instance has no cgroup any more (systemd has
/// stopped it); false after 10 s.
fn wait_gone(sb: &Sandbox, prefix: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while instance_present(sb, prefix) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    true
}

pub(super) fn measure(p: &Profile, pr: &Progress) -> Result<Churn> {
    let cycles = p.churn_cycles;
    // 1,000 as the issue asks; at least 20 points for shorter runs.
    let every = (cycles / 20).clamp(1, 1000);
    pr.say(format!(
        "== churn: {cycles} idle-exit cycles per variant, the 4 variants at once, each in a \
         sandbox of its own (host systemd); sample every {every} cycles"
    ));
    // Nobody else may listen there (see activation::only_listener).
    for i in 0..VARIANTS.len() {
        super::activation::only_listener(P_CHURN + i as u16, 0)?;
    }
    let t = Instant::now();
    let results: Vec<Result<ChurnVariant>> = std::thread::scope(|s| {
        let handles: Vec<_> = VARIANTS
            .iter()
            .enumerate()
            .map(|(i, v)| s.spawn(move || run_variant(v, P_CHURN + i as u16, cycles, every, pr)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a churn thread panicked"))
            })
            .collect()
    });
    let mut variants = Vec::new();
    for r in results {
        variants.push(r.context("churn")?);
    }
    for v in &variants {
        let (a, b) = v.halves(|s| s.pid1_rss_kb as f64);
        pr.say(format!(
            "   {:<34} {} cycles in {:.0} s ({:.1} ms/cycle), {} failed; PID 1 RSS {:+.0} KiB per 1,000 \
             cycles in the first half, {:+.0} in the second",
            v.variant,
            v.cycles,
            v.wall_s,
            v.wall_s * 1000.0 / v.cycles.max(1) as f64,
            v.failures,
            a,
            b
        ));
    }
    let systemd = std::process::Command::new("/lib/systemd/systemd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default();
    Ok(Churn {
        cycles_per_variant: cycles,
        sample_every: every,
        systemd,
        wall_s: t.elapsed().as_secs_f64(),
        variants,
    })
}
