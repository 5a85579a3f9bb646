//! Scenario 3, cold activation latency: connect → first byte on an idle
//! socket, systemd-distribute (`Distribute=1`, with transient instances and in
//! template mode) against systemd's own `Accept=no` and `Accept=yes`, and what
//! the cycles cost PID 1 and the activator in memory.

use super::measure::us;
use super::testbed::{Bed, ACTIVATOR};
use super::{Profile, Progress, P_COLD_DIST, P_COLD_NO, P_COLD_TPL, P_COLD_YES};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdRow {
    pub variant: String,
    pub activations: usize,
    pub failures: usize,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// p50 / p50 of native Accept=no.
    pub p50_ratio: f64,
    pub p99_ratio: f64,
    pub pid1_rss_before_kb: u64,
    pub pid1_rss_after_kb: u64,
    /// PID 1 VmRSS growth scaled to 1,000 activation cycles.
    pub pid1_growth_per_1000_kb: f64,
    pub samples_us: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Activation {
    pub rows: Vec<ColdRow>,
    pub activator_rss_before_kb: u64,
    pub activator_rss_after_kb: u64,
    /// The first line of `systemd --version` of the systemd measured. Empty
    /// in results from before the bench ran on more than one systemd: those
    /// were measured on the host's (`meta.json`'s `systemd`).
    #[serde(default)]
    pub systemd: String,
    /// Its major version (0: not recorded, see `systemd`).
    #[serde(default)]
    pub systemd_major: u32,
    /// How the transient variant's instances got their socket, as the
    /// activator logged it at start: [`HANDOFF_SHIM`] or [`HANDOFF_NATIVE`];
    /// empty when not recorded (the host's 252: the shim).
    #[serde(default)]
    pub handoff: String,
    /// Where the time goes (journal timestamps against the client's); empty
    /// in results from before it was measured.
    #[serde(default)]
    pub breakdown: Vec<Breakdown>,
}

/// systemd < 257: `StandardInputFileDescriptor=` and the exec shim.
pub const HANDOFF_SHIM: &str = "shim";
/// systemd >= 257: `ExtraFileDescriptors=`.
pub const HANDOFF_NATIVE: &str = "native";

impl Activation {
    /// The row of a variant.
    pub fn row(&self, variant: &str) -> Option<&ColdRow> {
        self.rows.iter().find(|r| r.variant == variant)
    }

    /// The hand-off of the transient variant; results from before it was
    /// recorded came from the host's systemd 252, which needs the shim.
    pub fn handoff(&self) -> &str {
        if self.handoff.is_empty() {
            HANDOFF_SHIM
        } else {
            &self.handoff
        }
    }
}

/// The native systemd variants' unit names: `Accept=no` and `Accept=yes`.
const NATIVE_NO: &str = "coldno";
const NATIVE_YES: &str = "coldyes";
/// The template-mode config's name and its template unit file's instances'
/// prefix: `coldtpl.socket`, `coldtpl@.service`.
const TEMPLATE: &str = "coldtpl";

/// The variants' names, as the results and the report carry them.
pub const V_TRANSIENT: &str = "systemd-distribute (Distribute=1)";
pub const V_TEMPLATE: &str = "systemd-distribute template mode (Distribute=1)";
/// The baseline of every ratio.
pub const V_NO: &str = "systemd Accept=no";
pub const V_YES: &str = "systemd Accept=yes";

/// Name, port, and "is the socket idle again" probe of a cold-start variant.
type ColdVariant<'a> = (&'static str, u16, Box<dyn Fn() -> bool + 'a>);

/// The activator's configs of this scenario, one instance each that exits
/// after its one connection: `cold` with a `[Service]` (transient instances),
/// `coldtpl` without one (template mode: the instances of [`units`]'s
/// `coldtpl@.service`, which must be installed before the activator reads
/// this config).
pub(super) fn configs(bin: &str) -> Vec<(String, String)> {
    vec![
        (
            "cold".into(),
            format!(
                "[Socket]\nListenStream=127.0.0.1:{P_COLD_DIST}\nDistribute=1\nNoDelay=yes\nTriggerLimitIntervalSec=0\n\n\
                 [Service]\nExecStart={bin}/distribute-bench-server --model listen-fds --exit-after 1\n"
            ),
        ),
        (
            TEMPLATE.into(),
            format!(
                "[Socket]\nListenStream=127.0.0.1:{P_COLD_TPL}\nDistribute=1\nNoDelay=yes\nTriggerLimitIntervalSec=0\n\
                 Service={TEMPLATE}@.service\n"
            ),
        ),
    ]
}

/// The unit files the activator's configs need at its start: the template of
/// the template-mode variant. Like the transient instances: `Type=simple`,
/// default dependencies; like the native units: no start rate limit. The
/// activator adds its drop-in (`ExecStartPre=+systemd-distribute-handoff`).
pub(super) fn units(bin: &str) -> Vec<(String, String)> {
    vec![(
        format!("{TEMPLATE}@.service"),
        format!(
            "[Unit]\nDescription=cold activation, template mode, instance %i\nStartLimitIntervalSec=0\n\n\
             [Service]\nType=simple\nExecStart={bin}/distribute-bench-server --model listen-fds --exit-after 1\n"
        ),
    )]
}

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Activation> {
    pr.say(format!(
        "== 3 cold activation: connect → first byte on an idle socket, {} activations per variant",
        p.activations
    ));
    // The sandboxes share the host's network namespace: a second benchmark
    // on this machine binds the same ports, and since the activator's
    // sockets are SO_REUSEPORT the kernel would hand some of these
    // connections to the other one's instances (seen: a third of the
    // transient activations never reached this activator).
    only_listener(P_COLD_DIST, 1)?;
    only_listener(P_COLD_TPL, 1)?;
    only_listener(P_COLD_NO, 0)?;
    only_listener(P_COLD_YES, 0)?;
    let server = format!("{}/distribute-bench-server --model listen-fds", bed.bin);
    bed.sb.install_unit(
        &format!("{NATIVE_NO}.socket"),
        &format!(
            "[Unit]\nDefaultDependencies=no\n\n[Socket]\nListenStream=127.0.0.1:{P_COLD_NO}\nNoDelay=yes\nAccept=no\n\
             TriggerLimitIntervalSec=0\n"
        ),
    )?;
    bed.sb.install_unit(
        &format!("{NATIVE_NO}.service"),
        &format!(
            "[Unit]\nDefaultDependencies=no\nStartLimitIntervalSec=0\n\n[Service]\nExecStart={server} --exit-after 1\n"
        ),
    )?;
    bed.sb.install_unit(
        &format!("{NATIVE_YES}.socket"),
        &format!(
            "[Unit]\nDefaultDependencies=no\n\n[Socket]\nListenStream=127.0.0.1:{P_COLD_YES}\nNoDelay=yes\nAccept=yes\n\
             TriggerLimitIntervalSec=0\nMaxConnections=1024\n"
        ),
    )?;
    bed.sb.install_unit(
        &format!("{NATIVE_YES}@.service"),
        &format!(
            "[Unit]\nDefaultDependencies=no\nStartLimitIntervalSec=0\nCollectMode=inactive-or-failed\n\n\
             [Service]\nExecStart={server}\n"
        ),
    )?;
    bed.sb.systemctl(&[
        "start",
        &format!("{NATIVE_NO}.socket"),
        &format!("{NATIVE_YES}.socket"),
    ])?;
    // Template mode in effect: the activator's drop-in on the instance.
    let tpl_unit = format!("{TEMPLATE}@0.service");
    let dropins = bed.show(&tpl_unit, "DropInPaths");
    if !dropins.contains("99-systemd-distribute.conf") {
        bail!(
            "{tpl_unit} has no drop-in of systemd-distribute (DropInPaths={dropins:?}): \
             {TEMPLATE}.socket is not served in template mode\n--- journal ---\n{}",
            bed.sb.journal(Some(ACTIVATOR))
        );
    }
    let act_pid = bed.main_pid(ACTIVATOR)?;
    let act_before = bed.rss_kb(act_pid)?;
    let systemd = bed
        .sb
        .run("/lib/systemd/systemd", &["--version"])
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let how = handoff(bed)?;
    pr.say(format!(
        "   {systemd}: transient instances get their socket {}",
        if how == HANDOFF_NATIVE {
            "natively (ExtraFileDescriptors=)"
        } else {
            "through the exec shim (StandardInputFileDescriptor=, systemd-distribute-exec)"
        }
    ));
    let variants: [ColdVariant<'_>; 4] = [
        (
            V_TRANSIENT,
            P_COLD_DIST,
            Box::new(|| bed.show("cold@0.service", "LoadState") == "not-found"),
        ),
        (
            V_TEMPLATE,
            P_COLD_TPL,
            // A unit file's instance may stay loaded once it is inactive.
            Box::new(|| {
                matches!(
                    bed.show(&tpl_unit, "ActiveState").as_str(),
                    "inactive" | "failed"
                )
            }),
        ),
        (
            V_NO,
            P_COLD_NO,
            Box::new(|| {
                bed.show(&format!("{NATIVE_NO}.service"), "ActiveState") == "inactive"
                    && bed.show(&format!("{NATIVE_NO}.socket"), "SubState") == "listening"
            }),
        ),
        (
            V_YES,
            P_COLD_YES,
            Box::new(|| {
                bed.sb
                    .loaded_units(&format!("{NATIVE_YES}@*"))
                    .map(|u| u.is_empty())
                    .unwrap_or(false)
            }),
        ),
    ];
    // Blocks of BLOCK activations per variant, the variants taking turns, so a
    // drift of the machine's state hits all of them alike. PID 1's RSS growth
    // over a block is charged to that block's variant.
    const BLOCK: usize = 20;
    const QUIET: Duration = Duration::from_millis(50);
    let mut samples: Vec<Vec<u64>> = vec![Vec::new(); variants.len()];
    let mut failures = vec![0usize; variants.len()];
    let mut growth = vec![0i64; variants.len()];
    // CLOCK_MONOTONIC at connect and at the first byte of every activation,
    // for the breakdown against the journal's timestamps (same clock: the
    // sandbox has no time namespace).
    let mut stamps: Vec<Vec<(u64, u64)>> = vec![Vec::new(); variants.len()];
    let rss_start = bed.pid1_rss_kb()?;
    let t = Instant::now();
    let blocks = p.activations.div_ceil(BLOCK);
    for block in 0..blocks {
        for k in 0..variants.len() {
            let v = (block + k) % variants.len();
            let (name, port, idle) = &variants[v];
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let rss0 = bed.pid1_rss_kb()?;
            for _ in 0..BLOCK.min(p.activations - block * BLOCK) {
                // Idle: no instance, the socket re-armed, systemd quiet.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !idle() {
                    if Instant::now() > deadline {
                        bail!("{name}: the instance did not go away within 10 s");
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                std::thread::sleep(QUIET);
                let t0 = mono_us();
                match first_byte(addr) {
                    Ok(d) => {
                        samples[v].push(d.as_micros() as u64);
                        stamps[v].push((t0, t0 + d.as_micros() as u64));
                    }
                    Err(e) => {
                        failures[v] += 1;
                        if failures[v] <= 3 {
                            pr.say(format!("   {name}: activation failed: {e:#}"));
                        }
                    }
                }
            }
            growth[v] += bed.pid1_rss_kb()? as i64 - rss0 as i64;
        }
        if (block + 1) % 5 == 0 || block + 1 == blocks {
            pr.say(format!(
                "   {}/{} activations per variant ({:.0} s)",
                ((block + 1) * BLOCK).min(p.activations),
                p.activations,
                t.elapsed().as_secs_f64()
            ));
        }
    }
    // A second benchmark that started meanwhile would have taken some of
    // these connections: then the figures are not this sandbox's.
    for port in [P_COLD_DIST, P_COLD_TPL, P_COLD_NO, P_COLD_YES] {
        only_listener(port, 1).context("after the activations")?;
    }
    let rss_end = bed.pid1_rss_kb()?;
    let mut rows = Vec::new();
    for (v, (name, _, _)) in variants.iter().enumerate() {
        let samples = std::mem::take(&mut samples[v]);
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        let pct = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        let row = ColdRow {
            variant: name.to_string(),
            activations: samples.len(),
            failures: failures[v],
            p50_us: pct(0.5),
            p90_us: pct(0.9),
            p99_us: pct(0.99),
            max_us: sorted.last().copied().unwrap_or(0),
            p50_ratio: 0.0,
            p99_ratio: 0.0,
            pid1_rss_before_kb: rss_start,
            pid1_rss_after_kb: rss_end,
            pid1_growth_per_1000_kb: growth[v] as f64 * 1000.0 / p.activations as f64,
            samples_us: samples,
        };
        pr.say(format!(
            "   {name:<48} p50 {:>7} p90 {:>7} p99 {:>7} max {:>7}  failures {}  PID 1 RSS +{} KiB",
            us(row.p50_us),
            us(row.p90_us),
            us(row.p99_us),
            us(row.max_us),
            row.failures,
            growth[v]
        ));
        rows.push(row);
    }
    let base = rows
        .iter()
        .find(|r| r.variant == V_NO)
        .map(|r| (r.p50_us.max(1) as f64, r.p99_us.max(1) as f64));
    let (b50, b99) = base.unwrap_or((1.0, 1.0));
    for r in &mut rows {
        r.p50_ratio = r.p50_us as f64 / b50;
        r.p99_ratio = r.p99_us as f64 / b99;
    }
    let row = |v: &str| rows.iter().find(|r| r.variant == v);
    if let (Some(t), Some(tpl)) = (row(V_TRANSIENT), row(V_TEMPLATE)) {
        pr.say(format!(
            "   p50 / Accept=no p50: transient {:.2}, template mode {:.2} (target <= 1.5); \
             template p50 - transient p50 = {:+.2} ms",
            t.p50_ratio,
            tpl.p50_ratio,
            template_extra_ms(&rows).unwrap_or(0.0)
        ));
    }
    let breakdown = breakdown(
        bed,
        &variants.iter().map(|v| v.0).collect::<Vec<_>>(),
        &stamps,
    );
    for b in &breakdown {
        pr.say(format!(
            "   {:<48} connect → PID 1 logs Started p50 {:>7}, Started → first byte p50 {:>7} ({} matched){}",
            b.variant,
            signed_us(b.to_started_p50_us),
            signed_us(b.started_to_byte_p50_us),
            b.matched,
            if b.start_call_p50_us > 0 {
                format!(
                    ", connect → StartTransientUnit sent p50 {}, its round trip p50 {}",
                    signed_us(b.wake_p50_us),
                    us(b.start_call_p50_us)
                )
            } else {
                String::new()
            }
        ));
    }
    let act_after = bed.rss_kb(act_pid)?;
    bed.sb.systemctl(&[
        "stop",
        &format!("{NATIVE_NO}.socket"),
        &format!("{NATIVE_YES}.socket"),
    ])?;
    Ok(Activation {
        rows,
        activator_rss_before_kb: act_before,
        activator_rss_after_kb: act_after,
        systemd,
        systemd_major: bed.sb.systemd_version(),
        handoff: how.to_string(),
        breakdown,
    })
}

/// Where a cold start's time goes, per variant (medians over the activations
/// matched in the journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Breakdown {
    pub variant: String,
    /// Activations whose `Started` line of PID 1 was found.
    pub matched: usize,
    /// Client connect → PID 1 logs `Started UNIT` (the job is done: for
    /// `Type=simple`, right after the fork). For systemd-distribute this
    /// includes the activator's wake-up and its D-Bus call.
    pub to_started_p50_us: i64,
    /// PID 1's `Started` → the client reads the first byte: exec of the
    /// service (through the shim, or the hand-off helper before it, where
    /// there is one), its start-up, accept and answer.
    pub started_to_byte_p50_us: i64,
    /// Transient mode only: the activator's `StartTransientUnit` call, sent →
    /// answered (its `started (…)` log line); 0 for the others.
    pub start_call_p50_us: u64,
    /// Transient mode only: connect → the activator sent that call (its
    /// line's journal timestamp minus the call's duration), 0 for the others.
    #[serde(default)]
    pub wake_p50_us: i64,
}

/// CLOCK_MONOTONIC in µs, the clock of the journal's monotonic timestamps.
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// `[SECONDS.MICROS] ...` of `journalctl -o short-monotonic`, as µs.
fn journal_mono_us(line: &str) -> Option<u64> {
    let inner = line
        .trim_start()
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim();
    let (s, frac) = inner.split_once('.')?;
    Some(s.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?)
}

/// Pairs every activation with the first `Started` line of its unit that PID 1
/// logged between connect and first byte; the transient variant's
/// `StartTransientUnit` round trips from the activator's own lines.
fn breakdown(bed: &Bed, variants: &[&str], stamps: &[Vec<(u64, u64)>]) -> Vec<Breakdown> {
    let journal = bed.sb.journal(None);
    let started = |unit_prefix: &str| -> Vec<u64> {
        let mut v: Vec<u64> = journal
            .lines()
            .filter(|l| l.contains(" systemd[1]: Started ") && l.contains(unit_prefix))
            .filter_map(journal_mono_us)
            .collect();
        v.sort_unstable();
        v
    };
    fn p50<T: Ord + Copy + Default>(mut v: Vec<T>) -> T {
        v.sort_unstable();
        v.get(((v.len() as f64 * 0.5).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
    let mut out = Vec::new();
    for (name, st) in variants.iter().zip(stamps) {
        let prefix = match *name {
            V_TRANSIENT => "Started cold@0.service",
            V_TEMPLATE => "Started coldtpl@0.service",
            V_NO => "Started coldno.service",
            _ => "Started coldyes@",
        };
        let lines = started(prefix);
        let (mut to, mut from) = (Vec::new(), Vec::new());
        for &(t0, t1) in st {
            // journald stamps a line when it receives it, which can be after
            // the client's first byte: any line up to 40 ms after it still
            // belongs to this activation (the next one starts 50 ms after
            // the instance is gone). Excluding late ones would bias the
            // split towards the variants journald keeps up with.
            let i = lines.partition_point(|&x| x < t0);
            if let Some(&ts) = lines.get(i).filter(|&&ts| ts <= t1 + 40_000) {
                to.push(ts as i64 - t0 as i64);
                from.push(t1 as i64 - ts as i64);
            }
        }
        // The activator's line, logged when StartTransientUnit was answered:
        // (its journal timestamp, the call's duration).
        let calls: Vec<(u64, u64)> = if *name == V_TRANSIENT {
            journal
                .lines()
                .filter_map(|l| {
                    let (_, rest) = l.split_once("cold@0.service: started (")?;
                    Some((journal_mono_us(l)?, duration_us(rest.split_once(')')?.0)?))
                })
                .collect()
        } else {
            Vec::new()
        };
        let call: Vec<u64> = calls.iter().map(|c| c.1).collect();
        // Connect → the call was sent: the kernel's wake-up of the activator,
        // its epoll loop and building the call.
        let mut wake = Vec::new();
        for &(t0, t1) in st {
            if let Some(&(ts, d)) = calls.iter().find(|&&(ts, _)| ts >= t0 && ts <= t1 + 40_000) {
                wake.push(ts as i64 - d as i64 - t0 as i64);
            }
        }
        out.push(Breakdown {
            variant: name.to_string(),
            matched: to.len(),
            to_started_p50_us: p50(to),
            started_to_byte_p50_us: p50(from),
            start_call_p50_us: p50(call),
            wake_p50_us: p50(wake),
        });
    }
    out
}

/// A `Duration`'s `Debug` form (`8.668694ms`, `950.2µs`, `1.2s`) as µs.
fn duration_us(d: &str) -> Option<u64> {
    let (num, unit) = d.split_at(d.find(|c: char| c.is_ascii_alphabetic() || c == 'µ')?);
    let x: f64 = num.parse().ok()?;
    let f = match unit {
        "ns" => 0.001,
        "µs" | "us" => 1.0,
        "ms" => 1000.0,
        "s" => 1_000_000.0,
        _ => return None,
    };
    Some((x * f).round() as u64)
}

/// The hand-off the activator chose at its start (its log line), checked
/// against the version of the systemd it runs on.
fn handoff(bed: &Bed) -> Result<&'static str> {
    // journald may not have written the line yet right after a boot.
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let journal = bed.sb.journal(Some(ACTIVATOR));
        if journal.contains("passing sockets with ExtraFileDescriptors=") {
            break HANDOFF_NATIVE;
        }
        if journal.contains("passing sockets through StandardInputFileDescriptor=") {
            break HANDOFF_SHIM;
        }
        if Instant::now() > deadline {
            bail!("the activator's journal does not say how it passes sockets:\n{journal}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let want = if bed.sb.systemd_version() >= 257 {
        HANDOFF_NATIVE
    } else {
        HANDOFF_SHIM
    };
    if found != want {
        bail!(
            "systemd {}: the activator passes sockets the {found} way, expected {want}",
            bed.sb.systemd_version()
        );
    }
    Ok(found)
}

/// Template-mode p50 minus transient p50, ms: what the `ExecStartPre=` helper's
/// fork+exec and the hand-off add to a cold start. `None` in results from
/// before the template variant.
pub fn template_extra_ms(rows: &[ColdRow]) -> Option<f64> {
    let p50 = |v: &str| rows.iter().find(|r| r.variant == v).map(|r| r.p50_us);
    Some((p50(V_TEMPLATE)? as f64 - p50(V_TRANSIENT)? as f64) / 1000.0)
}

/// Connect, send a request, wait for the first byte of the answer; reads the
/// rest to check it is a 200.
pub(super) fn first_byte(addr: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).context("connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).context("first byte")?;
    let d = t.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    if first[0] != b'H' || !rest.starts_with(b"TTP/1.1 200") {
        bail!("unexpected answer {:?}", String::from_utf8_lossy(&rest));
    }
    Ok(d)
}

/// [`us`] of a value that may be negative.
pub fn signed_us(v: i64) -> String {
    if v < 0 {
        format!("-{}", us(v.unsigned_abs()))
    } else {
        us(v as u64)
    }
}

/// Fails unless exactly `ours` TCP listeners are bound to 127.0.0.1:`port`
/// (`ss`, host network namespace, which every sandbox shares).
pub(super) fn only_listener(port: u16, ours: usize) -> Result<()> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .context("running ss")?;
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    if n != ours {
        bail!(
            "port {port} has {n} listener(s), expected {ours}: another benchmark (or test) on this \
             machine uses it, and with SO_REUSEPORT it would take some of this run's connections; \
             run one benchmark at a time"
        );
    }
    Ok(())
}
