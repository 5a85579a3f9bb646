//! `cargo xtask bench`: data-path overhead, the distribution models side by
//! side, cold activation latency, scale and footprint, and the steering modes;
//! writes `bench/results/*.json` and regenerates
//! `docs/benchmarks.md` (tables, SVG charts) from them.
//!
//! Systemds: the cold-activation scenario ([`PER_SYSTEMD`]) runs on the
//! host's systemd (252: sockets handed to transient instances through the exec
//! shim) and on a Debian 13 root's (257: natively, `ExtraFileDescriptors=`),
//! one sandbox after the other (`--systemd` picks; both by default), and
//! writes `activation.json` and `activation-debian13.json`. The other
//! scenarios measure the data path and the activator, not systemd, and run on
//! the host's only.
//!
//! CPU budget on this 2-core machine: the load generator (and this
//! orchestrator, which also is the client of the activation scenario) is pinned
//! to CPU 0, every server process to CPU 1 (`sched_setaffinity` for processes
//! started here, `CPUAffinity=1` for units started by systemd). The sandboxed
//! systemd, dbus-daemon and the activator are not pinned; they are idle while
//! load runs.
//!
//! Layout: this file holds the profiles, the CPU and port plan and the
//! orchestration; `testbed` the sandbox and the servers started by hand;
//! `measure` the load runs and the statistics over them; one module per
//! scenario; `report` and `chart` the page and its SVG charts.

mod activation;
mod chart;
mod check;
mod churn;
mod datapath;
mod footprint;
mod herd;
mod measure;
mod models;
mod peers;
mod report;
mod steering;
mod testbed;

use anyhow::{bail, Context, Result};
use distribute_sandbox::Systemd;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use testbed::Bed;

/// Everything a profile fixes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    /// Seconds of load before each measured window.
    pub warmup_s: f64,
    /// Seconds measured per load run.
    pub duration_s: f64,
    /// Rounds per variant in the data-path scenario (alternating order).
    pub rounds: usize,
    /// Busy work per request, microseconds.
    pub work_us: u64,
    /// Workers in the model comparison.
    pub models_n: usize,
    /// Rounds per model (alternating order).
    #[serde(default)]
    pub model_rounds: usize,
    /// Keep-alive connections / short connections in flight.
    pub connections: usize,
    /// Fixed-rate runs offer this fraction of the baseline's capacity.
    pub load_fraction: f64,
    /// Cold activations per variant.
    pub activations: usize,
    /// Seconds of idleness over which activator wakeups are counted.
    pub idle_window_s: f64,
    /// Idle-exit cycles per variant in the churn scenario: 20,000 in both
    /// profiles (fewer cannot tell a level from a slow climb).
    #[serde(default)]
    pub churn_cycles: usize,
}

impl Profile {
    fn quick() -> Profile {
        Profile {
            name: "quick".into(),
            warmup_s: 0.5,
            duration_s: 2.0,
            rounds: 3,
            model_rounds: 2,
            work_us: 50,
            models_n: 4,
            connections: 64,
            load_fraction: 0.6,
            activations: 200,
            idle_window_s: 3.0,
            churn_cycles: 20_000,
        }
    }

    fn full() -> Profile {
        Profile {
            name: "full".into(),
            warmup_s: 1.0,
            duration_s: 8.0,
            rounds: 7,
            model_rounds: 5,
            activations: 1000,
            idle_window_s: 20.0,
            churn_cycles: 20_000,
            ..Profile::quick()
        }
    }
}

const LOAD_CPU: &str = "0";
const SERVER_CPU: &str = "1";
const PINNING: &str =
    "load generator and orchestrator/client pinned to CPU 0 (sched_setaffinity); \
every server process pinned to CPU 1 (sched_setaffinity for processes started by hand, \
CPUAffinity=1 for units started by systemd or systemd-distribute); the sandbox's systemd, \
dbus-daemon and the activator unpinned (idle during load runs); the steering scenario \
adds a second budget with clients and servers on both CPUs (see its section)";

// Ports (127.0.0.1). Integration tests use 47000 + a small offset.
// The data-path and models ports moved from 47810/47820 into 47870–47999:
// two benches running at once on one machine (two worktrees) bound the same
// ports with SO_REUSEPORT as the same user, so the kernel joined their
// sockets into one group and each bench's load was split over both benches'
// servers (seen as 8 answering PIDs for N=4; see models::foreign_runs).
const P_DP_ACT: u16 = 47950;
const P_DP_HAND: u16 = 47951;
const P_MODELS: u16 = 47960;
const P_COLD_DIST: u16 = 47830;
const P_COLD_NO: u16 = 47831;
const P_COLD_YES: u16 = 47832;
const P_COLD_TPL: u16 = 47833;
const P_SCALE: u16 = 48000;
/// First port of the steering scenario (one per [`steering::STEER`] variant).
const P_STEER: u16 = 47840;
/// First port of the churn scenario (one per variant, 4).
const P_CHURN: u16 = 47850;

/// The workloads of the load scenarios, in the order they are run and shown.
const WORKLOADS: [&str; 2] = ["keepalive", "short"];

fn release_bin(name: &str) -> PathBuf {
    distribute_sandbox::target_dir().join("release").join(name)
}

fn results_dir() -> PathBuf {
    crate::root().join("bench/results")
}

/// Progress output with the time since the start.
struct Progress(Instant);

impl Progress {
    fn say(&self, msg: impl AsRef<str>) {
        println!(
            "[{:>5.1}s] {}",
            self.0.elapsed().as_secs_f64(),
            msg.as_ref()
        );
        let _ = std::io::stdout().flush();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub profile: Profile,
    pub started_unix: u64,
    pub wall_s: f64,
    pub git_rev: String,
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub systemd: String,
    pub pinning: String,
    pub scenarios: Vec<String>,
    /// `/proc/loadavg` before and after: other work on the machine adds noise.
    #[serde(default)]
    pub loadavg_before: String,
    #[serde(default)]
    pub loadavg_after: String,
    /// Which invocation measured each scenario's `bench/results/NAME.json`
    /// (`--only` runs update their scenarios and keep the others' entries).
    #[serde(default)]
    pub runs: BTreeMap<String, RunInfo>,
}

/// One invocation of `cargo xtask bench`, as recorded per scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub profile: String,
    pub git_rev: String,
    pub started_unix: u64,
    /// Wall time of the whole invocation.
    pub wall_s: f64,
    pub loadavg_before: String,
    pub loadavg_after: String,
}

// ---------------------------------------------------------------- entry

/// Options of `cargo xtask bench`.
pub struct Options {
    pub full: bool,
    pub only: Vec<String>,
    pub systemd: Which,
    pub render_only: bool,
    /// With `render_only`: compare instead of writing (`--render --check`).
    pub check: bool,
    /// Overrides the profile's [`Profile::churn_cycles`].
    pub churn_cycles: Option<usize>,
}

/// Which systemd(s) `cargo xtask bench` measures the scenarios of
/// [`PER_SYSTEMD`] on; every other scenario runs on the host's only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The host's systemd (Debian 12: 252, sockets handed over by the exec shim).
    Host,
    /// The systemd of the cached Debian 13 root (257, native ExtraFileDescriptors=).
    Debian13,
    /// Both, the host's first.
    Both,
}

impl Which {
    fn systemds(self) -> &'static [Systemd] {
        match self {
            Which::Host => &[Systemd::Host],
            Which::Debian13 => &[Systemd::Debian13],
            Which::Both => &Systemd::ALL,
        }
    }
}

/// The scenarios, in the order they run and appear in the report; the names
/// `--only` accepts and `bench/results/NAME.json` is named after.
pub const SCENARIOS: &[&str] = &[
    "datapath",
    "models",
    "activation",
    "footprint",
    "steering",
    "churn",
    "herd",
    "peers",
];

/// The scenarios measured on every systemd `--systemd` picks (what they
/// compare is what systemd does); the others measure the data path and the
/// activator, the same on any systemd, and run on the host's only.
pub const PER_SYSTEMD: &[&str] = &["activation"];

/// The results file (without `.json`) of `scenario` measured on `systemd`:
/// `NAME` on the host's (as before there were others), `NAME-debian13`.
pub fn result_name(scenario: &str, systemd: Systemd) -> String {
    match systemd {
        Systemd::Host => scenario.to_string(),
        other => format!("{scenario}-{}", other.as_str()),
    }
}

/// Every results file a scenario can have, host's first.
pub(super) fn result_names(scenario: &str) -> Vec<(Systemd, String)> {
    Systemd::ALL
        .into_iter()
        .filter(|&sd| sd == Systemd::Host || PER_SYSTEMD.contains(&scenario))
        .map(|sd| (sd, result_name(scenario, sd)))
        .collect()
}

/// Which scenarios run on which systemd, in the order they run.
fn plan(opts: &Options) -> Result<Vec<(Systemd, Vec<&'static str>)>> {
    let want = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let systemds = opts.systemd.systemds();
    let mut plan = Vec::new();
    for &sd in &Systemd::ALL {
        let mut scenarios = Vec::new();
        for &s in SCENARIOS {
            if !want(s) {
                continue;
            }
            let runs_here = if PER_SYSTEMD.contains(&s) {
                systemds.contains(&sd)
            } else {
                sd == Systemd::Host
            };
            if !runs_here {
                continue;
            }
            if sd == Systemd::Host && !systemds.contains(&Systemd::Host) {
                // A host-only scenario with --systemd debian13.
                if !opts.only.is_empty() {
                    bail!(
                        "scenario {s} runs on the host's systemd only (--systemd host or both); \
                         measured on every systemd: {}",
                        PER_SYSTEMD.join(", ")
                    );
                }
                println!(
                    "--systemd {}: skipping {s}, which runs on the host's systemd only",
                    sd_list(systemds)
                );
                continue;
            }
            scenarios.push(s);
        }
        if !scenarios.is_empty() {
            plan.push((sd, scenarios));
        }
    }
    if plan.is_empty() {
        bail!("nothing to measure");
    }
    Ok(plan)
}

fn sd_list(systemds: &[Systemd]) -> String {
    systemds
        .iter()
        .map(Systemd::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(opts: Options) -> Result<()> {
    for s in &opts.only {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", "));
        }
    }
    if opts.render_only {
        return if opts.check {
            check::run()
        } else {
            report::render()
        };
    }
    let mut profile = if opts.full {
        Profile::full()
    } else {
        Profile::quick()
    };
    if let Some(n) = opts.churn_cycles {
        profile.churn_cycles = n;
    }
    let plan = plan(&opts)?;
    for (sd, _) in &plan {
        ensure_tools(*sd)?;
    }
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "systemd-distribute",
        "-p",
        "distribute-instance",
        "-p",
        "distribute-bench",
        "--bins",
    ])?;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let loadavg = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let loadavg_before = loadavg();
    let p = Progress(Instant::now());
    p.say(format!(
        "profile {}: {} s warm-up + {} s per load run, work {} µs/request; {PINNING}",
        profile.name, profile.warmup_s, profile.duration_s, profile.work_us
    ));
    std::fs::create_dir_all(results_dir())?;
    // Every sandbox is booted with this process's own affinity (its systemd
    // and activator are not pinned); while a scenario runs, this process is
    // the client and stays on CPU 0.
    let unpinned = Affinity::current()?;
    let mut measured = Vec::new();
    for (sd, scenarios) in &plan {
        let sd = *sd;
        unpinned.restore()?;
        p.say(format!(
            "booting a private systemd ({}) and starting systemd-distribute (release build); \
             scenarios: {}",
            describe(sd),
            scenarios.join(", ")
        ));
        let bed = Bed::boot(&profile, sd)?;
        distribute_bench::pin_to(&[0]).context("pinning the orchestrator to CPU 0")?;
        for &name in scenarios {
            let (bed, profile, p) = (&bed, &profile, &p);
            let file = result_name(name, sd);
            match name {
                "datapath" => write_json(&file, &datapath::measure(bed, profile, p)?)?,
                "models" => write_json(&file, &models::measure(bed, profile, p)?)?,
                "activation" => write_json(&file, &activation::measure(bed, profile, p)?)?,
                "footprint" => write_json(&file, &footprint::measure(bed, profile, p)?)?,
                "steering" => write_json(&file, &steering::measure(bed, profile, p)?)?,
                // Boots a sandbox per variant of its own (see churn.rs).
                "churn" => write_json(&file, &churn::measure(profile, p)?)?,
                "herd" => write_json(&file, &herd::measure(bed, profile, p)?)?,
                "peers" => write_json(&file, &peers::measure(bed, profile, p)?)?,
                _ => unreachable!("every name in SCENARIOS has a scenario"),
            }
            measured.push(file);
        }
        drop(bed);
    }
    unpinned.restore()?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut meta = Meta {
        profile: profile.clone(),
        started_unix: started,
        wall_s: p.0.elapsed().as_secs_f64(),
        git_rev: output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        kernel: output("uname", &["-r"]).unwrap_or_default(),
        cpu: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default(),
        // Not available_parallelism(): this process may be pinned.
        cores: cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count(),
        // The host's systemd, the one every sandbox of the host boots (results
        // measured on another carry their own version).
        systemd: output("/lib/systemd/systemd", &["--version"])
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        pinning: PINNING.into(),
        scenarios: measured,
        loadavg_before,
        loadavg_after: loadavg(),
        runs: BTreeMap::new(),
    };
    // Keep the record of the scenarios this invocation did not measure. A
    // meta.json from before per-scenario records names its scenarios at the
    // top level.
    if let Some(prev) = read_json::<Meta>("meta") {
        meta.runs = prev.runs.clone();
        for s in &prev.scenarios {
            meta.runs
                .entry(s.clone())
                .or_insert_with(|| run_info(&prev));
        }
    }
    for s in &meta.scenarios {
        meta.runs.insert(s.clone(), run_info(&meta));
    }
    write_json("meta", &meta)?;
    p.say(format!(
        "done in {:.0} s; rendering docs/benchmarks.md",
        meta.wall_s
    ));
    report::render()
}

/// How progress lines name a systemd.
fn describe(sd: Systemd) -> &'static str {
    match sd {
        Systemd::Host => "the host's",
        Systemd::Debian13 => "Debian 13's, booted on its own root (pivot_root)",
    }
}

/// A thread's CPU affinity, to boot each sandbox with the one this process
/// started with.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn current() -> Result<Affinity> {
        // SAFETY: cpu_set_t is plain data, written by the kernel.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Err(std::io::Error::last_os_error()).context("sched_getaffinity");
            }
            Ok(Affinity(set))
        }
    }

    fn restore(&self) -> Result<()> {
        // SAFETY: a cpu_set_t from sched_getaffinity.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) }
            != 0
        {
            return Err(std::io::Error::last_os_error()).context("sched_setaffinity");
        }
        Ok(())
    }
}

fn run_info(m: &Meta) -> RunInfo {
    RunInfo {
        profile: m.profile.name.clone(),
        git_rev: m.git_rev.clone(),
        started_unix: m.started_unix,
        wall_s: m.wall_s,
        loadavg_before: m.loadavg_before.clone(),
        loadavg_after: m.loadavg_after.clone(),
    }
}

fn ensure_tools(systemd: Systemd) -> Result<()> {
    if let Some(reason) = distribute_sandbox::unavailable_reason_on(systemd) {
        if reason.contains("missing") {
            eprintln!("{reason}: installing systemd, dbus and util-linux from Debian");
            let ok = Command::new("apt-get")
                .args(["install", "-y", "systemd", "dbus", "util-linux"])
                .status()?;
            if !ok.success() {
                bail!("apt-get install failed");
            }
        }
    }
    if let Some(reason) = distribute_sandbox::unavailable_reason_on(systemd) {
        bail!("the benchmark boots a private systemd ({systemd}): {reason}");
    }
    Ok(())
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd)
        .args(args)
        .current_dir(crate::root())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn write_json<T: Serialize>(name: &str, v: &T) -> Result<()> {
    let path = results_dir().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(v)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

fn read_json<T: for<'de> Deserialize<'de>>(name: &str) -> Option<T> {
    let text = std::fs::read_to_string(results_dir().join(format!("{name}.json"))).ok()?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("bench/results/{name}.json: {e} (ignored)");
            None
        }
    }
}
