//! `cargo xtask bench`: the distribution models side by side, cold activation
//! latency, scale and footprint; writes `bench/results/*.json` and regenerates
//! `docs/benchmarks.md` (tables, SVG charts) from them.
//!
//! CPU budget on this 2-core machine: the load generator (and this
//! orchestrator, which also is the client of the activation scenario) is pinned
//! to CPU 0, every server process to CPU 1 (`sched_setaffinity` for processes
//! started here, `CPUAffinity=1` for units started by systemd). The sandboxed
//! systemd, dbus-daemon and the activator are not pinned; they are idle while
//! load runs.

use anyhow::{bail, Context, Result};
use distribute_bench::report::LoadResult;
use distribute_sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
const P_DP_ACT: u16 = 47810;
const P_DP_HAND: u16 = 47811;
const P_MODELS: u16 = 47820;
const P_COLD_DIST: u16 = 47830;
const P_COLD_NO: u16 = 47831;
const P_COLD_YES: u16 = 47832;
const P_SCALE: u16 = 48000;
/// First port of the steering scenario (one per [`STEER`] variant).
const P_STEER: u16 = 47840;

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

// ---------------------------------------------------------------- results

/// One load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub variant: String,
    pub workload: String,
    /// `capacity` (closed loop) or `fixed` (open loop at `result.rate`).
    pub kind: String,
    pub round: usize,
    /// Share of CPU 0 the load generator used (user+system / wall).
    pub gen_busy: f64,
    pub result: LoadResult,
}

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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataPath {
    pub n: usize,
    pub work_us: u64,
    pub rows: Vec<DataPathRow>,
    pub runs: Vec<Run>,
}

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
}

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
    pub render_only: bool,
}

const SCENARIOS: &[&str] = &["datapath", "models", "activation", "footprint", "steering"];

pub fn run(opts: Options) -> Result<()> {
    for s in &opts.only {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.join(", "));
        }
    }
    if opts.render_only {
        return render();
    }
    let profile = if opts.full {
        Profile::full()
    } else {
        Profile::quick()
    };
    let want = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    ensure_tools()?;
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

    p.say("booting a private systemd and starting systemd-distribute (release build)");
    let bed = Bed::boot(&profile)?;
    // The sandbox is booted unpinned; from here on this process (the client of
    // the activation scenario, the parent of the load generator) stays on CPU 0.
    distribute_bench::pin_to(&[0]).context("pinning the orchestrator to CPU 0")?;
    let systemd = bed
        .sb
        .run("/lib/systemd/systemd", &["--version"])
        .unwrap_or_default();
    let mut scenarios = Vec::new();
    if want("datapath") {
        let r = datapath(&bed, &profile, &p)?;
        write_json("datapath", &r)?;
        scenarios.push("datapath".to_string());
    }
    if want("models") {
        let r = models(&bed, &profile, &p)?;
        write_json("models", &r)?;
        scenarios.push("models".to_string());
    }
    if want("activation") {
        let r = activation(&bed, &profile, &p)?;
        write_json("activation", &r)?;
        scenarios.push("activation".to_string());
    }
    if want("footprint") {
        let r = footprint(&bed, &profile, &p)?;
        write_json("footprint", &r)?;
        scenarios.push("footprint".to_string());
    }
    if want("steering") {
        let r = steering(&bed, &profile, &p)?;
        write_json("steering", &r)?;
        scenarios.push("steering".to_string());
    }
    drop(bed);
    let mut meta = Meta {
        profile: profile.clone(),
        started_unix: started,
        wall_s: p.0.elapsed().as_secs_f64(),
        git_rev: output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default(),
        kernel: output("uname", &["-r"]).unwrap_or_default(),
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default(),
        // Not available_parallelism(): this process is pinned to one CPU by now.
        cores: std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count(),
        systemd: systemd.lines().next().unwrap_or_default().to_string(),
        pinning: PINNING.into(),
        scenarios,
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
    render()
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

fn ensure_tools() -> Result<()> {
    if let Some(reason) = distribute_sandbox::unavailable_reason() {
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
    if let Some(reason) = distribute_sandbox::unavailable_reason() {
        bail!("the benchmark boots a private systemd: {reason}");
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

// ---------------------------------------------------------------- test bed

/// The sandbox with the activator and every config of the load scenarios.
struct Bed {
    sb: Sandbox,
    bin: String,
}

const ACTIVATOR: &str = "systemd-distribute.service";

impl Bed {
    fn boot(profile: &Profile) -> Result<Bed> {
        let sb = Sandbox::boot("bench", &[crate::root().join("units/org.distribute1.conf")])?;
        let mut bin = String::new();
        for b in [
            "systemd-distribute",
            "systemd-distribute-exec",
            "distribute-hello",
            "distribute-bench-server",
        ] {
            let inner = sb.install_file(&release_bin(b))?;
            bin = inner
                .rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default();
        }
        let unit = std::fs::read_to_string(crate::root().join("units/systemd-distribute.service"))?;
        let unit_text = unit.replace(
            "ExecStart=/usr/lib/systemd/systemd-distribute",
            &format!(
                "ExecStart={bin}/systemd-distribute --config-dir {}",
                sb.inside("config")
            ),
        );
        sb.install_unit(ACTIVATOR, &unit_text)?;
        let bed = Bed { sb, bin };
        bed.set_configs(&bed.load_configs(profile))?;
        bed.start_activator()?;
        Ok(bed)
    }

    fn load_configs(&self, p: &Profile) -> Vec<(String, String)> {
        let bin = &self.bin;
        let w = p.work_us;
        vec![
            (
                "hello".into(),
                format!(
                    "[Socket]\nListenStream=127.0.0.1:{P_DP_ACT}\nDistribute=2\nNoDelay=yes\nBacklog=4096\n\n\
                     [Service]\nExecStart={bin}/distribute-hello --idle-timeout 0 --work-us {w}\nCPUAffinity={SERVER_CPU}\n"
                ),
            ),
            (
                "models".into(),
                format!(
                    "[Socket]\nListenStream=127.0.0.1:{P_MODELS}\nDistribute={}\nNoDelay=yes\nBacklog=4096\n\n\
                     [Service]\nExecStart={bin}/distribute-bench-server --model listen-fds --work-us {w}\nCPUAffinity={SERVER_CPU}\n",
                    p.models_n
                ),
            ),
            (
                "cold".into(),
                format!(
                    "[Socket]\nListenStream=127.0.0.1:{P_COLD_DIST}\nDistribute=1\nNoDelay=yes\nTriggerLimitIntervalSec=0\n\n\
                     [Service]\nExecStart={bin}/distribute-bench-server --model listen-fds --exit-after 1\n"
                ),
            ),
        ]
        .into_iter()
        .chain(STEER.iter().enumerate().map(|(i, v)| {
            let affinity = match v.budget {
                Budget::Split => format!("CPUAffinity={SERVER_CPU}\n"),
                Budget::Both => String::new(),
            };
            (
                v.config(),
                format!(
                    "[Socket]\nListenStream=127.0.0.1:{}\nDistribute={STEER_N}\nNoDelay=yes\nBacklog=4096\nSteering={}\n\n\
                     [Service]\nExecStart={bin}/distribute-hello --idle-timeout 0 --work-us {w}\n{affinity}",
                    P_STEER + i as u16,
                    v.steering
                ),
            )
        }))
        .collect()
    }

    /// Replaces every config in the activator's config dir.
    fn set_configs(&self, configs: &[(String, String)]) -> Result<()> {
        let dir = self.sb.dir().join("config");
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in configs {
            self.sb.write_file(&format!("config/{name}.socket"), text)?;
        }
        if configs.is_empty() {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    fn start_activator(&self) -> Result<Duration> {
        let t = Instant::now();
        if let Err(e) = self.sb.systemctl(&["start", ACTIVATOR]) {
            bail!(
                "starting systemd-distribute failed: {e:#}\n--- journal ---\n{}",
                self.sb.journal(Some(ACTIVATOR))
            );
        }
        Ok(t.elapsed())
    }

    fn stop_activator(&self) -> Result<()> {
        self.sb.systemctl(&["stop", ACTIVATOR])?;
        Ok(())
    }

    fn show(&self, unit: &str, prop: &str) -> String {
        self.sb
            .systemctl(&["show", "-p", prop, "--value", unit])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    fn main_pid(&self, unit: &str) -> Result<u32> {
        let pid: u32 = self.show(unit, "MainPID").parse().unwrap_or(0);
        if pid == 0 {
            bail!("{unit} has no main PID");
        }
        Ok(pid)
    }

    /// `/proc/PID/status` of a process inside the sandbox.
    fn status(&self, pid: u32) -> Result<String> {
        let p = self.sb.host_path(&format!("/proc/{pid}/status"));
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    fn rss_kb(&self, pid: u32) -> Result<u64> {
        status_field(&self.status(pid)?, "VmRSS")
    }

    /// Voluntary + involuntary context switches of every thread of PID.
    fn ctxt_switches(&self, pid: u32) -> Result<(u64, usize)> {
        let dir = self.sb.host_path(&format!("/proc/{pid}/task"));
        let mut total = 0;
        let mut threads = 0;
        for e in std::fs::read_dir(&dir)? {
            let s = std::fs::read_to_string(e?.path().join("status"))?;
            total += status_field(&s, "voluntary_ctxt_switches")?
                + status_field(&s, "nonvoluntary_ctxt_switches")?;
            threads += 1;
        }
        Ok((total, threads))
    }

    fn pid1_rss_kb(&self) -> Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.sb.pid1()))?;
        status_field(&s, "VmRSS")
    }
}

fn status_field(status: &str, key: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/PID/status"))
}

/// A server started by hand (pinned to the server CPU); killed on drop.
struct HostServer(Child);

impl HostServer {
    fn start(args: &[String], port: u16) -> Result<HostServer> {
        let mut cmd = Command::new(release_bin("distribute-bench-server"));
        cmd.args(["--cpus", SERVER_CPU])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let s = HostServer(cmd.spawn().context("starting distribute-bench-server")?);
        wait_port(port)?;
        Ok(s)
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        // SIGKILL to the parent; its workers die with it (PR_SET_PDEATHSIG).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run of the load generator on CPU 0.
fn load(p: &Profile, port: u16, workload: &str, rate: f64) -> Result<(LoadResult, f64)> {
    load_on(p, port, workload, rate, Clients::Cpu0)
}

/// Where the load generator's clients run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clients {
    /// One thread pinned to CPU 0 (the budget of every other scenario).
    Cpu0,
    /// One thread pinned to each of CPU 0 and CPU 1, half the rate and the
    /// connections each (`distribute-bench-load --cpus 0,1 --per-cpu`).
    PerCpu,
}

/// One run of the load generator; the second value is the share of its
/// CPUs it kept busy (user + system time / wall time / CPUs).
fn load_on(
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

fn us(v: u64) -> String {
    if v >= 10_000 {
        format!("{:.1}ms", v as f64 / 1000.0)
    } else {
        format!("{v}µs")
    }
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

// ---------------------------------------------------------------- scenario 1

fn datapath(_bed: &Bed, p: &Profile, pr: &Progress) -> Result<DataPath> {
    pr.say(format!(
        "== 1 data path: distribute-hello x2 via systemd-distribute (:{P_DP_ACT}) vs x2 SO_REUSEPORT by hand (:{P_DP_HAND})"
    ));
    let hello = release_bin("distribute-hello").display().to_string();
    let hand_args: Vec<String> = [
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _hand = HostServer::start(&hand_args, P_DP_HAND)?;
    wait_port(P_DP_ACT)?;
    let mut runs = Vec::new();
    let workloads = ["keepalive", "short"];
    let order = |round: usize| {
        if round.is_multiple_of(2) {
            ["hand", "distribute"]
        } else {
            ["distribute", "hand"]
        }
    };
    let port = |v: &str| if v == "hand" { P_DP_HAND } else { P_DP_ACT };
    for round in 0..p.rounds {
        for v in order(round) {
            for w in workloads {
                let (r, busy) = load(p, port(v), w, 0.0)?;
                pr.say(format!(
                    "   round {round} {v:<10} {w:<9} capacity  {}",
                    describe(&r, busy)
                ));
                runs.push(Run {
                    variant: v.into(),
                    workload: w.into(),
                    kind: "capacity".into(),
                    round,
                    gen_busy: busy,
                    result: r,
                });
            }
        }
    }
    fn cap_of(runs: &[Run], v: &str, w: &str) -> f64 {
        median(
            runs.iter()
                .filter(|r| r.variant == v && r.workload == w && r.kind == "capacity")
                .map(|r| r.result.throughput)
                .collect(),
        )
    }
    let rates: Vec<f64> = workloads
        .iter()
        .map(|w| (cap_of(&runs, "hand", w) * p.load_fraction).round())
        .collect();
    for round in 0..p.rounds {
        for v in order(round) {
            for (w, &rate) in workloads.iter().zip(&rates) {
                let (r, busy) = load(p, port(v), w, rate)?;
                pr.say(format!(
                    "   round {round} {v:<10} {w:<9} @{rate:<7} {}",
                    describe(&r, busy)
                ));
                runs.push(Run {
                    variant: v.into(),
                    workload: w.to_string(),
                    kind: "fixed".into(),
                    round,
                    gen_busy: busy,
                    result: r,
                });
            }
        }
    }
    let cap = |v: &str, w: &str| cap_of(&runs, v, w);
    // Latency: the best round. Interference from outside only ever adds
    // latency, so the lowest of the rounds is the estimate least polluted by it.
    let fixed = |v: &str, w: &str, f: fn(&LoadResult) -> u64| {
        runs.iter()
            .filter(|r| r.variant == v && r.workload == w && r.kind == "fixed")
            .map(|r| f(&r.result))
            .min()
            .unwrap_or(0)
    };
    let rows = workloads
        .iter()
        .zip(&rates)
        .map(|(w, &rate)| {
            let (hand_p99, dist_p99) = (
                fixed("hand", w, |r| r.latency_us.p99),
                fixed("distribute", w, |r| r.latency_us.p99),
            );
            DataPathRow {
                workload: w.to_string(),
                hand_rps: cap("hand", w),
                dist_rps: cap("distribute", w),
                throughput_ratio: cap("distribute", w) / cap("hand", w),
                rate,
                hand_p50_us: fixed("hand", w, |r| r.latency_us.p50),
                dist_p50_us: fixed("distribute", w, |r| r.latency_us.p50),
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
    })
}

// ---------------------------------------------------------------- scenario 2

const MODELS: &[(&str, &str, &str)] = &[
    ("a", "Distribute=N: one SO_REUSEPORT socket per single-threaded process, started by systemd-distribute", ""),
    ("a'", "the same sockets and processes started by hand (no systemd)", "reuseport"),
    ("b", "one shared listening socket, N processes each in epoll (thundering herd)", "shared"),
    ("c", "one shared listening socket, N processes, EPOLLEXCLUSIVE", "exclusive"),
    ("d", "one acceptor thread handing accepted fds round-robin to N worker threads", "acceptor"),
    ("e", "one process, one thread", "single"),
];

fn models(_bed: &Bed, p: &Profile, pr: &Progress) -> Result<Models> {
    pr.say(format!(
        "== 2 models: N={}, {} µs work per request, {} connections, same handler and event loop",
        p.models_n, p.work_us, p.connections
    ));
    let workloads = ["keepalive", "short"];
    let mut runs = Vec::new();
    let start = |model: &str| -> Result<Option<HostServer>> {
        let m = MODELS.iter().find(|m| m.0 == model).expect("known model");
        if m.2.is_empty() {
            wait_port(P_MODELS)?;
            return Ok(None);
        }
        let port = P_MODELS + 1 + MODELS.iter().position(|x| x.0 == model).unwrap_or(0) as u16;
        let args: Vec<String> = [
            "--model",
            m.2,
            "--workers",
            &p.models_n.to_string(),
            "--port",
            &port.to_string(),
            "--work-us",
            &p.work_us.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Ok(Some(HostServer::start(&args, port)?))
    };
    let port_of = |model: &str| {
        if model == "a" {
            P_MODELS
        } else {
            P_MODELS + 1 + MODELS.iter().position(|x| x.0 == model).unwrap_or(0) as u16
        }
    };
    let order = |round: usize| -> Vec<&(&str, &str, &str)> {
        if round.is_multiple_of(2) {
            MODELS.iter().collect()
        } else {
            MODELS.iter().rev().collect()
        }
    };
    let rounds = p.model_rounds.max(1);
    for round in 0..rounds {
        for (model, desc, _) in order(round) {
            if round == 0 {
                pr.say(format!("   ({model}) {desc}"));
            }
            let _server = start(model)?;
            for w in workloads {
                let (r, busy) = load(p, port_of(model), w, 0.0)?;
                pr.say(format!(
                    "   round {round} ({model}) {w:<9} capacity  {}",
                    describe(&r, busy)
                ));
                runs.push(Run {
                    variant: model.to_string(),
                    workload: w.into(),
                    kind: "capacity".into(),
                    round,
                    gen_busy: busy,
                    result: r,
                });
            }
        }
    }
    /// Latency of the best fixed-rate round (see `datapath`).
    fn best(runs: &[Run], m: &str, w: &str, f: fn(&Run) -> u64) -> u64 {
        runs.iter()
            .filter(|r| r.variant == m && r.workload == w && r.kind == "fixed")
            .map(f)
            .min()
            .unwrap_or(0)
    }
    fn med(runs: &[Run], m: &str, w: &str, kind: &str, f: fn(&Run) -> f64) -> f64 {
        median(
            runs.iter()
                .filter(|r| r.variant == m && r.workload == w && r.kind == kind)
                .map(f)
                .collect(),
        )
    }
    let rates: Vec<f64> = workloads
        .iter()
        .map(|w| {
            (med(&runs, "a", w, "capacity", |r| r.result.throughput) * p.load_fraction).round()
        })
        .collect();
    for round in 0..rounds {
        for (model, _, _) in order(round) {
            let _server = start(model)?;
            for (w, &rate) in workloads.iter().zip(&rates) {
                let (r, busy) = load(p, port_of(model), w, rate)?;
                pr.say(format!(
                    "   round {round} ({model}) {w:<9} @{rate:<7} {}",
                    describe(&r, busy)
                ));
                runs.push(Run {
                    variant: model.to_string(),
                    workload: w.to_string(),
                    kind: "fixed".into(),
                    round,
                    gen_busy: busy,
                    result: r,
                });
            }
        }
    }
    let mut rows = Vec::new();
    for (w, &rate) in workloads.iter().zip(&rates) {
        let cap_a = med(&runs, "a", w, "capacity", |r| r.result.throughput);
        let p99_a = best(&runs, "a", w, |r| r.result.latency_us.p99).max(1) as f64;
        for (model, desc, _) in MODELS {
            let fixed = |f: fn(&Run) -> f64| med(&runs, model, w, "fixed", f);
            let cap = med(&runs, model, w, "capacity", |r| r.result.throughput);
            let p99 = best(&runs, model, w, |r| r.result.latency_us.p99) as f64;
            rows.push(ModelRow {
                model: model.to_string(),
                description: desc.to_string(),
                workload: w.to_string(),
                capacity_rps: cap,
                throughput_ratio: cap / cap_a,
                rate,
                p50_us: best(&runs, model, w, |r| r.result.latency_us.p50),
                p99_us: p99 as u64,
                p999_us: best(&runs, model, w, |r| r.result.latency_us.p999),
                p99_vs_a: p99 / p99_a,
                fairness: fixed(|r| r.result.fairness),
                workers_seen: fixed(|r| r.result.workers.len() as f64) as usize,
                failures: fixed(|r| r.result.errors.total() as f64) as u64,
                unsent: fixed(|r| r.result.unsent as f64) as u64,
                gen_busy: runs
                    .iter()
                    .filter(|r| r.variant == *model && r.workload == *w && r.kind == "capacity")
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

// ---------------------------------------------------------------- scenario 3

const NATIVE_NO: &str = "coldno";

/// Name, port, and "is the socket idle again" probe of a cold-start variant.
type ColdVariant<'a> = (&'static str, u16, Box<dyn Fn() -> bool + 'a>);

/// Label, configs (name, text), sockets.
type ScaleCase = (String, Vec<(String, String)>, usize);
const NATIVE_YES: &str = "coldyes";

fn activation(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Activation> {
    pr.say(format!(
        "== 3 cold activation: connect → first byte on an idle socket, {} activations per variant",
        p.activations
    ));
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
    let act_pid = bed.main_pid(ACTIVATOR)?;
    let act_before = bed.rss_kb(act_pid)?;
    let variants: [ColdVariant<'_>; 3] = [
        (
            "systemd-distribute (Distribute=1)",
            P_COLD_DIST,
            Box::new(|| bed.show("cold@0.service", "LoadState") == "not-found"),
        ),
        (
            "systemd Accept=no",
            P_COLD_NO,
            Box::new(|| {
                bed.show(&format!("{NATIVE_NO}.service"), "ActiveState") == "inactive"
                    && bed.show(&format!("{NATIVE_NO}.socket"), "SubState") == "listening"
            }),
        ),
        (
            "systemd Accept=yes",
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
                match first_byte(addr) {
                    Ok(d) => samples[v].push(d.as_micros() as u64),
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
            "   {name:<34} p50 {:>7} p90 {:>7} p99 {:>7} max {:>7}  failures {}  PID 1 RSS +{} KiB",
            us(row.p50_us),
            us(row.p90_us),
            us(row.p99_us),
            us(row.max_us),
            row.failures,
            growth[v]
        ));
        rows.push(row);
    }
    let (b50, b99) = (rows[1].p50_us.max(1) as f64, rows[1].p99_us.max(1) as f64);
    for r in &mut rows {
        r.p50_ratio = r.p50_us as f64 / b50;
        r.p99_ratio = r.p99_us as f64 / b99;
    }
    pr.say(format!(
        "   distribute p50 / Accept=no p50 = {:.2} (target <= 1.5)",
        rows[0].p50_ratio
    ));
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
    })
}

/// Connect, send a request, wait for the first byte of the answer; reads the
/// rest to check it is a 200.
fn first_byte(addr: SocketAddr) -> Result<Duration> {
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

// ---------------------------------------------------------------- scenario 4

fn footprint(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Footprint> {
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
        bed.stop_activator()?;
        bed.set_configs(&configs)?;
        let wall = bed.start_activator()?;
        let start_us: f64 = bed
            .show(ACTIVATOR, "ExecMainStartTimestampMonotonic")
            .parse()
            .unwrap_or(0.0);
        let ready_us: f64 = bed
            .show(ACTIVATOR, "ActiveEnterTimestampMonotonic")
            .parse()
            .unwrap_or(0.0);
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
    bed.stop_activator()?;
    bed.set_configs(&bed.load_configs(p))?;
    bed.start_activator()?;
    Ok(Footprint { rows })
}

// ---------------------------------------------------------------- scenario 5

/// Instances per steering config.
const STEER_N: usize = 2;
/// The light-load runs offer this fraction of the budget's `hash` capacity.
const LIGHT_FRACTION: f64 = 0.1;

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
    fn label(self) -> &'static str {
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

/// One config of the steering scenario.
struct SteerVariant {
    steering: &'static str,
    budget: Budget,
}

impl SteerVariant {
    fn id(&self) -> String {
        format!("{} / {}", self.steering, self.budget.label())
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
const STEER: &[SteerVariant] = &[
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

fn steering(bed: &Bed, p: &Profile, pr: &Progress) -> Result<SteeringResult> {
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
    for i in 0..STEER.len() {
        wait_port(P_STEER + i as u16)?;
    }
    let workloads = ["keepalive", "short"];
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
        let (r, busy) = load_on(p, P_STEER + v as u16, w, rate, var.budget.clients())?;
        let what = if rate > 0.0 {
            format!("@{rate:<7.0}")
        } else {
            "capacity ".to_string()
        };
        pr.say(format!(
            "   round {round} {:<17} {w:<9} {what} {}  instances {}",
            var.id(),
            describe(&r, busy),
            r.workers.len()
        ));
        runs.push(Run {
            variant: var.id(),
            workload: w.to_string(),
            kind: kind.to_string(),
            round,
            gen_busy: busy,
            result: r,
        });
        Ok(())
    };
    // Rotate the order from round to round so that drift hits every variant alike.
    let order = |round: usize| (0..STEER.len()).map(move |i| (i + round) % STEER.len());
    for w in workloads {
        for round in 0..rounds {
            for v in order(round) {
                one(v, w, 0.0, "capacity", round, &mut runs)?;
            }
        }
    }
    let med = |runs: &[Run], v: &SteerVariant, w: &str, kind: &str, f: &dyn Fn(&Run) -> f64| {
        median(
            runs.iter()
                .filter(|r| r.variant == v.id() && r.workload == w && r.kind == kind)
                .map(f)
                .collect(),
        )
    };
    let baseline = |b: Budget| {
        STEER
            .iter()
            .find(|v| v.budget == b && v.steering == "hash")
            .expect("a hash row per budget")
    };
    let hash_cap = |runs: &[Run], b: Budget, w: &str| {
        med(runs, baseline(b), w, "capacity", &|r| r.result.throughput)
    };
    let rate_of =
        |runs: &[Run], v: usize, w: &str, f: f64| (hash_cap(runs, STEER[v].budget, w) * f).round();
    for w in workloads {
        for round in 0..rounds {
            for v in order(round) {
                let rate = rate_of(&runs, v, w, p.load_fraction);
                one(v, w, rate, "fixed", round, &mut runs)?;
            }
        }
    }
    for w in workloads {
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
    for w in workloads {
        for (vi, v) in STEER.iter().enumerate() {
            let base = baseline(v.budget);
            let of = |kind: &'static str| {
                let id = v.id();
                runs.iter()
                    .filter(move |r| r.variant == id && r.workload == w && r.kind == kind)
            };
            let best = |var: &SteerVariant, f: fn(&LoadResult) -> u64| {
                runs.iter()
                    .filter(|r| r.variant == var.id() && r.workload == w && r.kind == "fixed")
                    .map(|r| f(&r.result))
                    .min()
                    .unwrap_or(0)
            };
            let cap = med(&runs, v, w, "capacity", &|r| r.result.throughput);
            let fair = |var: &SteerVariant| {
                med(&runs, var, w, "fixed", &|r| fairness_of(&r.result, STEER_N))
            };
            let finite = |x: f64| x.is_finite().then_some(x);
            let light = of("light").next();
            let (p50, p99) = (best(v, |r| r.latency_us.p50), best(v, |r| r.latency_us.p99));
            rows.push(SteerRow {
                steering: v.steering.into(),
                budget: v.budget,
                workload: w.into(),
                capacity_rps: cap,
                throughput_ratio: cap / hash_cap(&runs, v.budget, w),
                rate: rate_of(&runs, vi, w, p.load_fraction),
                p50_us: p50,
                p99_us: p99,
                p999_us: best(v, |r| r.latency_us.p999),
                p50_ratio: p50 as f64 / best(base, |r| r.latency_us.p50).max(1) as f64,
                p99_ratio: p99 as f64 / best(base, |r| r.latency_us.p99).max(1) as f64,
                fairness: finite(fair(v)),
                fairness_ratio: finite(fair(v) / fair(base)),
                light_rate: rate_of(&runs, vi, w, LIGHT_FRACTION),
                served_light: light.map(|r| r.result.workers.len()),
                top_share_light: light.map(|r| top_share(&r.result)),
                served_fixed: of("fixed")
                    .map(|r| r.result.workers.len())
                    .max()
                    .unwrap_or(0),
                top_share_fixed: med(&runs, v, w, "fixed", &|r| top_share(&r.result)),
                served_capacity: of("capacity")
                    .map(|r| r.result.workers.len())
                    .max()
                    .unwrap_or(0),
                top_share_capacity: med(&runs, v, w, "capacity", &|r| top_share(&r.result)),
                failures: of("fixed")
                    .chain(of("light"))
                    .map(|r| r.result.errors.total() + r.result.unsent)
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
            r.fairness_ratio.map_or("∞".into(), |f| format!("{f:.2}")),
            r.served_light.map_or("-".into(), |n| n.to_string()),
            r.served_fixed,
            r.served_capacity
        ));
    }
    for (u, c) in &affinity {
        pr.say(format!("   {u}: CPUAffinity={c}"));
    }
    pr.say(format!("   warm pool changes: {}", warm_pool_log.len()));
    Ok(SteeringResult {
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

// ---------------------------------------------------------------- report

fn render() -> Result<()> {
    let meta: Option<Meta> = read_json("meta");
    let dp: Option<DataPath> = read_json("datapath");
    let models: Option<Models> = read_json("models");
    let act: Option<Activation> = read_json("activation");
    let fp: Option<Footprint> = read_json("footprint");
    let st: Option<SteeringResult> = read_json("steering");
    let docs = crate::root().join("docs");
    let img = docs.join("benchmarks");
    std::fs::create_dir_all(&img)?;
    let mut md = String::new();
    let w = &mut md;
    use std::fmt::Write as _;
    writeln!(w, "# Benchmarks\n")?;
    writeln!(
        w,
        "Generated by `cargo xtask bench` (quick profile, < 5 min) or `cargo xtask bench --full` from \
         `bench/results/*.json`; `cargo xtask bench --render` regenerates this page without measuring. \
         Do not edit by hand.\n"
    )?;
    writeln!(
        w,
        "Every figure is a ratio against a baseline measured **in the same run** on the same machine, \
         so the ratios, not the absolute numbers, are what carries over to other machines.\n"
    )?;
    if let Some(m) = &meta {
        writeln!(w, "| | |\n|---|---|")?;
        writeln!(
            w,
            "| profile | `{}` ({} s warm-up + {} s per load run, {} µs of busy work per request) |",
            m.profile.name, m.profile.warmup_s, m.profile.duration_s, m.profile.work_us
        )?;
        writeln!(
            w,
            "| machine | {} × {}, Linux {} |",
            m.cores, m.cpu, m.kernel
        )?;
        writeln!(
            w,
            "| systemd | {} (private instance in namespaces, see `crates/sandbox`) |",
            m.systemd
        )?;
        writeln!(w, "| CPU budget | {} |", m.pinning)?;
        writeln!(w)?;
        writeln!(
            w,
            "Which invocation measured each section (`--only` runs refresh their sections and leave the others; \
             commit = `HEAD` when measured, the working tree may carry the changes of the commit that added the results):\n"
        )?;
        writeln!(
            w,
            "| section | commit | profile | invocation wall time | /proc/loadavg before → after |"
        )?;
        writeln!(w, "|---|---|---|---:|---|")?;
        for s in SCENARIOS {
            if !results_dir().join(format!("{s}.json")).exists() {
                continue;
            }
            match m.runs.get(*s) {
                Some(r) => writeln!(
                    w,
                    "| {s} | `{}` | `{}` | {:.0} s | {} → {} |",
                    r.git_rev, r.profile, r.wall_s, r.loadavg_before, r.loadavg_after
                )?,
                None => writeln!(
                    w,
                    "| {s} | an earlier run, not recorded (see `git log bench/results/{s}.json`) | | | |"
                )?,
            }
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "**Method.** The load generator (`crates/bench`, `distribute-bench-load`) is open loop like wrk2: \
         request *k* is due at *start + k/rate* and its latency counts from that moment, so a stalled \
         server is charged for every request it delayed (no coordinated omission). *Capacity* runs are \
         closed loop instead ({} connections in flight, latency from the actual send). Each fixed-rate run \
         offers {:.0}% of the baseline's measured capacity. Responses carry `pid=`, which gives the \
         per-worker shares; *fairness* is the largest share over the smallest (1.00 = even). \
         \"generator\" is the share of CPU 0 the load generator used: near 100% the generator, not the \
         server, limited a capacity run. Short connections cost the generator's core a lot of kernel \
         TCP work on loopback (both ends' handshakes run there).\n",
        meta.as_ref().map_or(64, |m| m.profile.connections),
        meta.as_ref().map_or(60.0, |m| m.profile.load_fraction * 100.0)
    )?;

    writeln!(
        w,
        "**Noise.** This is a 2-core VM shared with other work (compiles, test suites): anything else \
         that runs on CPU 1 preempts the servers and shows up as millisecond p99 spikes. Capacity and p50 \
         are stable to a few percent between rounds; p99 and p99.9 at a fixed rate are not, so latency \
         figures are the best of the rounds, and differences are meaningful only when they are large (the \
         `--full` profile runs more and longer rounds). `bench/results/*.json` keeps every run.\n"
    )?;
    if let Some(dp) = &dp {
        writeln!(w, "## 1. Data-path overhead\n")?;
        writeln!(
            w,
            "`distribute-hello --work-us {}`, N={}: started by `systemd-distribute` in the sandbox versus the \
             same binary as {} processes with their own `SO_REUSEPORT` sockets started by hand \
             (`distribute-bench-server --model exec`). {} alternating rounds: capacity is the median, latency the best round. \
             Throughput ratio = distribute / by hand; p50 and p99 ratio = by hand / distribute (all: 1.00 = \
             identical, lower = distribute slower). Target: ≥ 0.97.\n",
            dp.work_us,
            dp.n,
            dp.n,
            dp.runs.iter().map(|r| r.round + 1).max().unwrap_or(0)
        )?;
        writeln!(w, "| workload | by hand req/s | distribute req/s | throughput ratio | fixed rate | by hand p50 / p99 | distribute p50 / p99 | p50 ratio | p99 ratio | generator |")?;
        writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &dp.rows {
            writeln!(
                w,
                "| {} | {:.0} | {:.0} | **{:.3}** {} | {:.0}/s | {} / {} | {} / {} | {:.3} | **{:.3}** {} | {:.0}% |",
                r.workload,
                r.hand_rps,
                r.dist_rps,
                r.throughput_ratio,
                verdict(r.throughput_ratio >= 0.97),
                r.rate,
                us(r.hand_p50_us),
                us(r.hand_p99_us),
                us(r.dist_p50_us),
                us(r.dist_p99_us),
                r.hand_p50_us as f64 / r.dist_p50_us.max(1) as f64,
                r.p99_ratio,
                verdict(r.p99_ratio >= 0.97),
                r.gen_busy_max * 100.0
            )?;
        }
        let cats: Vec<String> = dp.rows.iter().map(|r| r.workload.clone()).collect();
        bar_chart(
            &img.join("datapath.svg"),
            "Data path: systemd-distribute vs by hand (1.00 = identical)",
            "ratio",
            &cats,
            &[
                (
                    "throughput ratio".into(),
                    dp.rows.iter().map(|r| r.throughput_ratio).collect(),
                ),
                (
                    "p50 ratio".into(),
                    dp.rows
                        .iter()
                        .map(|r| r.hand_p50_us as f64 / r.dist_p50_us.max(1) as f64)
                        .collect(),
                ),
                (
                    "p99 ratio".into(),
                    dp.rows.iter().map(|r| r.p99_ratio).collect(),
                ),
            ],
            Some((0.97, "target 0.97")),
        )?;
        writeln!(w, "\n![data path ratios](benchmarks/datapath.svg)\n")?;
        writeln!(w, "{}\n", spread_note(&dp.runs))?;
    }

    if let Some(m) = &models {
        writeln!(w, "## 2. Distribution models\n")?;
        writeln!(
            w,
            "Same handler, same level-triggered epoll loop (`distribute-bench-server`), N={} workers, {} µs \
             of work per request, all workers on one CPU. Baseline: (a). Capacity ratio = model / (a) \
             (higher is better); p99 vs (a) = model p99 / (a) p99 at the same offered rate (lower is better). \
             Capacity and fairness: medians over the rounds; latency: the best round (outside \
             interference only adds latency). In (d) the workers are threads and `pid=` carries the thread id.\n",
            m.n, m.work_us
        )?;
        writeln!(w, "| model | |\n|---|---|")?;
        for (id, desc, _) in MODELS {
            writeln!(w, "| ({id}) | {desc} |")?;
        }
        writeln!(w)?;
        for wl in ["keepalive", "short"] {
            let rows: Vec<&ModelRow> = m.rows.iter().filter(|r| r.workload == wl).collect();
            if rows.is_empty() {
                continue;
            }
            writeln!(
                w,
                "### {}\n",
                if wl == "short" {
                    "Short connections (connect, request, close)"
                } else {
                    "Keep-alive"
                }
            )?;
            writeln!(w, "| model | capacity req/s | capacity ratio | fixed rate | p50 | p99 | p99.9 | p99 vs (a) | fairness (workers) | failed or unsent, all rounds | generator |")?;
            writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
            for r in &rows {
                writeln!(
                    w,
                    "| ({}) | {:.0} | **{:.2}** | {:.0}/s | {} | {} | {} | **{:.2}** | {} ({}) | {} | {:.0}% |",
                    r.model,
                    r.capacity_rps,
                    r.throughput_ratio,
                    r.rate,
                    us(r.p50_us),
                    us(r.p99_us),
                    us(r.p999_us),
                    r.p99_vs_a,
                    if r.fairness.is_finite() { format!("{:.2}", r.fairness) } else { "∞".into() },
                    r.workers_seen,
                    m.runs
                        .iter()
                        .filter(|x| x.variant == r.model && x.workload == r.workload && x.kind == "fixed")
                        .map(|x| x.result.errors.total() + x.result.unsent)
                        .sum::<u64>(),
                    r.gen_busy * 100.0
                )?;
            }
            writeln!(w)?;
        }
        let cats: Vec<String> = MODELS.iter().map(|m| format!("({})", m.0)).collect();
        let series = |f: fn(&ModelRow) -> f64| -> Vec<(String, Vec<f64>)> {
            ["keepalive", "short"]
                .iter()
                .map(|wl| {
                    (
                        wl.to_string(),
                        MODELS
                            .iter()
                            .map(|(id, _, _)| {
                                m.rows
                                    .iter()
                                    .find(|r| r.model == *id && r.workload == *wl)
                                    .map_or(f64::NAN, f)
                            })
                            .collect(),
                    )
                })
                .collect()
        };
        bar_chart(
            &img.join("models-throughput.svg"),
            "Capacity relative to (a) Distribute=N (higher is better)",
            "ratio",
            &cats,
            &series(|r| r.throughput_ratio),
            Some((1.0, "(a)")),
        )?;
        bar_chart(
            &img.join("models-p99.svg"),
            "p99 latency relative to (a) at the same fixed rate (lower is better)",
            "ratio",
            &cats,
            &series(|r| r.p99_vs_a),
            Some((1.0, "(a)")),
        )?;
        writeln!(w, "![capacity ratios](benchmarks/models-throughput.svg)\n")?;
        writeln!(w, "![p99 ratios](benchmarks/models-p99.svg)\n")?;
    }

    if let Some(a) = &act {
        writeln!(w, "## 3. Cold activation latency\n")?;
        writeln!(
            w,
            "Connect → first byte of the answer on an idle socket (no instance running), {} activations \
             per variant, one at a time, each once the previous instance is gone and 50 ms have passed; the \
             variants take turns in blocks of 20 so that drift hits all alike (PID 1's RSS growth over a block \
             is charged to its variant; the runs before and after: {} → {} KiB). Same binary everywhere: \
             `distribute-bench-server --model listen-fds` (exits after its one connection; under `Accept=yes` \
             it gets the accepted connection as fd 3). Baseline: systemd's own `Accept=no`. Target: \
             distribute p50 ≤ 1.5 × `Accept=no`. The absolute times are dominated by waking idle vCPUs \
             of this VM along the chain (client, systemd or activator, dbus, fork/exec): while writing this \
             benchmark, activations right after a busy moment took 3–4 ms in every variant, after 50 ms of \
             quiet 15 ms; the ratio stayed the same.\n",
            a.rows.first().map_or(0, |r| r.activations + r.failures),
            a.rows.first().map_or(0, |r| r.pid1_rss_before_kb),
            a.rows.first().map_or(0, |r| r.pid1_rss_after_kb),
        )?;
        writeln!(w, "| variant | p50 | p90 | p99 | max | p50 ratio | p99 ratio | failed | PID 1 RSS growth per 1,000 activations |")?;
        writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for (i, r) in a.rows.iter().enumerate() {
            writeln!(
                w,
                "| {} | {} | {} | {} | {} | **{:.2}** {} | {:.2} | {} | {:.0} KiB |",
                r.variant,
                us(r.p50_us),
                us(r.p90_us),
                us(r.p99_us),
                us(r.max_us),
                r.p50_ratio,
                if i == 0 {
                    verdict(r.p50_ratio <= 1.5)
                } else {
                    ""
                },
                r.p99_ratio,
                r.failures,
                r.pid1_growth_per_1000_kb,
            )?;
        }
        writeln!(
            w,
            "\nActivator RSS before / after these {} activation cycles: {} / {} KiB.\n",
            a.rows.first().map_or(0, |r| r.activations),
            a.activator_rss_before_kb,
            a.activator_rss_after_kb
        )?;
        let cats: Vec<String> = a
            .rows
            .iter()
            .map(|r| r.variant.replace("systemd-distribute", "distribute"))
            .collect();
        bar_chart(
            &img.join("activation.svg"),
            "Cold activation relative to systemd Accept=no (lower is better)",
            "ratio",
            &cats,
            &[
                (
                    "p50 ratio".into(),
                    a.rows.iter().map(|r| r.p50_ratio).collect(),
                ),
                (
                    "p99 ratio".into(),
                    a.rows.iter().map(|r| r.p99_ratio).collect(),
                ),
            ],
            Some((1.5, "target p50 1.5")),
        )?;
        writeln!(w, "![activation ratios](benchmarks/activation.svg)\n")?;
    }

    if let Some(f) = &fp {
        writeln!(w, "## 4. Scale and footprint\n")?;
        writeln!(
            w,
            "The activator restarted with each configuration set (one `.socket` per config, nothing connects). \
             READY = `ExecMainStartTimestampMonotonic` → `ActiveEnterTimestampMonotonic` of the unit (the \
             process's own start-up to `READY=1`); RSS = `VmRSS` 0.5 s after READY; idle wakeups = growth of \
             voluntary + involuntary context switches of all its threads over {:.0} s without traffic \
             (target 0). Baseline: N=1. Target: RSS ≤ 8 MiB at N=256.\n",
            f.rows.first().map_or(0.0, |r| r.idle_window_s)
        )?;
        writeln!(w, "| case | sockets | READY | ratio | `systemctl start` | RSS | ratio | threads | idle wakeups/s |")?;
        writeln!(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &f.rows {
            let target = if r.case == "N=256" {
                format!(" {}", verdict(r.rss_kb <= 8 * 1024))
            } else {
                String::new()
            };
            writeln!(
                w,
                "| {} | {} | {:.1} ms | {:.2} | {:.1} ms | {:.1} MiB{} | {:.2} | {} | {:.2} {} |",
                r.case,
                r.sockets,
                r.ready_ms,
                r.ready_ratio,
                r.start_wall_ms,
                r.rss_kb as f64 / 1024.0,
                target,
                r.rss_ratio,
                r.threads,
                r.idle_wakeups_per_s,
                verdict(r.idle_wakeups_per_s < 0.5)
            )?;
        }
        if let Some(a) = &act {
            writeln!(
                w,
                "\nPID 1 (`systemd`) RSS growth per 1,000 activation cycles, from scenario 3:\n"
            )?;
            for r in &a.rows {
                writeln!(w, "- {}: {:.0} KiB", r.variant, r.pid1_growth_per_1000_kb)?;
            }
            writeln!(w)?;
        }
        let cats: Vec<String> = f.rows.iter().map(|r| r.case.replace(", N=1", "")).collect();
        bar_chart(
            &img.join("footprint.svg"),
            "Activator footprint relative to N=1",
            "ratio",
            &cats,
            &[
                (
                    "RSS ratio".into(),
                    f.rows.iter().map(|r| r.rss_ratio).collect(),
                ),
                (
                    "READY time ratio".into(),
                    f.rows.iter().map(|r| r.ready_ratio).collect(),
                ),
            ],
            None,
        )?;
        writeln!(w, "![footprint ratios](benchmarks/footprint.svg)\n")?;
    }
    if let Some(st) = &st {
        render_steering(w, st, &img)?;
    }
    let path = docs.join("benchmarks.md");
    std::fs::write(&path, md)?;
    println!("wrote {} and {}/*.svg", path.display(), img.display());
    Ok(())
}

fn render_steering(w: &mut String, st: &SteeringResult, img: &Path) -> Result<()> {
    use std::fmt::Write as _;
    let rounds = st.runs.iter().map(|r| r.round + 1).max().unwrap_or(0);
    writeln!(w, "## 5. Steering\n")?;
    writeln!(
        w,
        "`Steering=` decides which of the N reuseport sockets of an address a new connection lands on \
         (see `distribute.socket(5)`):\n\n\
         - **hash** (default, the baseline): the kernel's hash of addresses and ports, spread evenly \
         and blindly over all N sockets.\n\
         - **cpu**: a classic BPF reuseport program returns *CPU mod N*, the CPU that processes the \
         SYN, and the activator pins instance *i* to the CPUs *c* with *c mod N = i* (unless \
         `CPUAffinity=` is set), so a connection stays on one CPU from softirq to user space.\n\
         - **warm**: a program that picks randomly among the first *k* sockets only, *k* starting at 1; \
         the activator checks the warm sockets' accept queues every 10 ms and warms one more instance \
         when all of them hold more than `WarmQueueDepth=` (4) connections, and shrinks the pool by one \
         after a calm second. Light load: one instance; heavy load: up to N.\n"
    )?;
    writeln!(
        w,
        "Setup: `distribute-hello --idle-timeout 0 --work-us {}`, `Distribute={}`, started by systemd-distribute \
         in the sandbox; one config per row, each on its own port. {} rounds in a rotating order; capacity \
         (closed loop, {} connections) and fairness are medians over the rounds, latency is the best fixed-rate \
         round, at {:.0}% of the capacity of `hash` in the same budget. Every ratio is against `hash` \
         **in the same budget and the same run**: capacity ratio higher is better; p50, p99 and fairness \
         ratios lower is better. Fairness is over both instances: ∞ when one served nothing.\n",
        st.work_us,
        st.n,
        rounds,
        st.connections,
        st.load_fraction * 100.0
    )?;
    writeln!(
        w,
        "**Two CPU budgets.** The budget of the other sections (clients pinned to CPU 0, instances \
         `CPUAffinity=1`) contradicts `Steering=cpu`: on loopback a SYN is processed on the CPU that sends \
         it, so with every client on CPU 0 the program sends every connection to socket 0, and \
         `CPUAffinity=1` overrides the mode's own pinning. So every mode is measured twice:\n\n\
         - **split**: the budget of the other sections. Load generator: one thread on CPU 0. Instances: \
         `CPUAffinity=1`. The `cpu / split` row shows the misconfiguration above, measured.\n\
         - **both CPUs**: `distribute-bench-load --cpus 0,1 --per-cpu`, one generator thread pinned to each \
         CPU, each with half the connections and half the rate (histograms merged). Instances: no \
         `CPUAffinity=`; under `cpu` the activator pins instance 0 to CPU 0 and instance 1 to CPU 1 \
         (checked below), under `hash` and `warm` the scheduler places them. Clients and servers share \
         both CPUs, so absolute numbers differ from the split budget; compare rows only within a budget.\n"
    )?;
    for wl in ["keepalive", "short"] {
        let rows: Vec<&SteerRow> = st.rows.iter().filter(|r| r.workload == wl).collect();
        if rows.is_empty() {
            continue;
        }
        writeln!(
            w,
            "### {}\n",
            if wl == "short" {
                "Short connections (connect, request, close)"
            } else {
                "Keep-alive"
            }
        )?;
        writeln!(w, "| Steering | budget | capacity req/s | capacity ratio | fixed rate | p50 | p99 | p99 of each round | p99.9 | p50 ratio | p99 ratio | fairness | fairness ratio | failed or unsent | generator |")?;
        writeln!(
            w,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for r in rows {
            let opt = |v: Option<f64>| v.map_or("∞".to_string(), |v| format!("{v:.2}"));
            let id = format!("{} / {}", r.steering, r.budget.label());
            let each: Vec<String> = st
                .runs
                .iter()
                .filter(|x| x.variant == id && x.workload == wl && x.kind == "fixed")
                .map(|x| us(x.result.latency_us.p99))
                .collect();
            writeln!(
                w,
                "| {} | {} | {:.0} | **{:.2}** | {:.0}/s | {} | {} | {} | {} | {:.2} | **{:.2}** | {} | **{}** | {} | {:.0}% |",
                r.steering,
                r.budget.label(),
                r.capacity_rps,
                r.throughput_ratio,
                r.rate,
                us(r.p50_us),
                us(r.p99_us),
                each.join(", "),
                us(r.p999_us),
                r.p50_ratio,
                r.p99_ratio,
                opt(r.fairness),
                opt(r.fairness_ratio),
                r.failures,
                r.gen_busy * 100.0
            )?;
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "\"generator\" is the busiest capacity run's CPU time as a share of the generator's CPUs \
         (1 in the split budget, 2 in the other).\n"
    )?;
    writeln!(w, "### Instances serving\n")?;
    writeln!(
        w,
        "Instances that answered at least one request in the measured window, and the busiest one's \
         share: light load = {:.0}% of the budget's `hash` capacity (one run, after 1.5 s without load so \
         a warm pool is back to 1), fixed = {:.0}% (largest count of the rounds), capacity = closed loop. \
         Not measured at light load for `cpu` (it follows the clients' CPUs, not the load).\n",
        st.light_fraction * 100.0,
        st.load_fraction * 100.0
    )?;
    writeln!(
        w,
        "| Steering | budget | workload | light | fixed | capacity |\n|---|---|---|---:|---:|---:|"
    )?;
    for r in &st.rows {
        let cell = |n: usize, share: f64| format!("{n} of {} ({:.0}% on one)", st.n, share * 100.0);
        writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            r.steering,
            r.budget.label(),
            r.workload,
            match (r.served_light, r.top_share_light) {
                (Some(n), Some(s)) => format!("{} @{:.0}/s", cell(n, s), r.light_rate),
                _ => "–".into(),
            },
            cell(r.served_fixed, r.top_share_fixed),
            cell(r.served_capacity, r.top_share_capacity),
        )?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "Instance CPU affinity after the runs (`systemctl show -p CPUAffinity`, state):\n"
    )?;
    for (u, c) in &st.affinity {
        writeln!(w, "- `{u}`: {c}")?;
    }
    let grew = st
        .warm_pool_log
        .iter()
        .filter(|l| l.contains("(queues"))
        .count();
    writeln!(
        w,
        "\nThe activator changed a warm pool {} times during the scenario ({} growths, {} shrinks; \
         `bench/results/steering.json` keeps the log lines).\n",
        st.warm_pool_log.len(),
        grew,
        st.warm_pool_log.len() - grew
    )?;
    let variants: Vec<(&str, Budget)> = STEER.iter().map(|v| (v.steering, v.budget)).collect();
    let cats: Vec<String> = variants
        .iter()
        .map(|(s, b)| format!("{s} / {}", b.label()))
        .collect();
    let series = |f: fn(&SteerRow) -> f64| -> Vec<(String, Vec<f64>)> {
        ["keepalive", "short"]
            .iter()
            .map(|wl| {
                (
                    wl.to_string(),
                    variants
                        .iter()
                        .map(|(s, b)| {
                            st.rows
                                .iter()
                                .find(|r| r.steering == *s && r.budget == *b && r.workload == *wl)
                                .map_or(f64::NAN, f)
                        })
                        .collect(),
                )
            })
            .collect()
    };
    bar_chart(
        &img.join("steering-throughput.svg"),
        "Capacity relative to hash in the same budget (higher is better)",
        "ratio",
        &cats,
        &series(|r| r.throughput_ratio),
        Some((1.0, "hash")),
    )?;
    // Latency of an overloaded row (requests failed or never sent) is the
    // overload's queueing, not the steering: left out of the chart.
    let latency = |name: &str, f: fn(&SteerRow) -> f64| -> Vec<(String, Vec<f64>)> {
        series(f)
            .into_iter()
            .map(|(wl, vals)| {
                let vals = vals
                    .into_iter()
                    .zip(&variants)
                    .map(|(v, (s, b))| {
                        let overloaded = st.rows.iter().any(|r| {
                            r.steering == *s && r.budget == *b && r.workload == wl && r.failures > 0
                        });
                        if overloaded {
                            f64::NAN
                        } else {
                            v
                        }
                    })
                    .collect();
                (format!("{wl} {name}"), vals)
            })
            .collect()
    };
    let mut lat = latency("p50", |r| r.p50_ratio);
    lat.extend(latency("p99", |r| r.p99_ratio));
    bar_chart(
        &img.join("steering-latency.svg"),
        "Latency relative to hash in the same budget, same rate (lower is better)",
        "ratio",
        &cats,
        &lat,
        Some((1.0, "hash")),
    )?;
    let _ = std::fs::remove_file(img.join("steering-p99.svg"));
    writeln!(
        w,
        "![steering capacity ratios](benchmarks/steering-throughput.svg)\n"
    )?;
    let left_out: Vec<String> = st
        .rows
        .iter()
        .filter(|r| r.failures > 0)
        .map(|r| format!("{} / {} {}", r.steering, r.budget.label(), r.workload))
        .collect();
    writeln!(
        w,
        "![steering latency ratios](benchmarks/steering-latency.svg)\n\n{}",
        if left_out.is_empty() {
            String::new()
        } else {
            format!(
                "Left out of the latency chart because requests failed or were never sent (the latency \
                 there is the queue of an overloaded instance; see the table): {}.\n",
                left_out.join(", ")
            )
        }
    )?;
    steering_findings(w, st)?;
    Ok(())
}

/// The figures of this run in words, and what this machine cannot show.
fn steering_findings(w: &mut String, st: &SteeringResult) -> Result<()> {
    use std::fmt::Write as _;
    let row = |s: &str, b: Budget, wl: &str| {
        st.rows
            .iter()
            .find(|r| r.steering == s && r.budget == b && r.workload == wl)
    };
    let (Some(cpu_k), Some(cpu_s), Some(warm_k), Some(warm_s), Some(warm_k1), Some(warm_s1)) = (
        row("cpu", Budget::Both, "keepalive"),
        row("cpu", Budget::Both, "short"),
        row("warm", Budget::Both, "keepalive"),
        row("warm", Budget::Both, "short"),
        row("warm", Budget::Split, "keepalive"),
        row("warm", Budget::Split, "short"),
    ) else {
        return Ok(());
    };
    let split_caps: Vec<f64> = st
        .rows
        .iter()
        .filter(|r| r.budget == Budget::Split)
        .map(|r| r.throughput_ratio)
        .collect();
    let lo = split_caps.iter().copied().fold(f64::MAX, f64::min);
    let hi = split_caps.iter().copied().fold(0.0, f64::max);
    let light: Vec<String> = [warm_k1, warm_s1, warm_k, warm_s]
        .iter()
        .map(|r| r.served_light.map_or("–".into(), |n| n.to_string()))
        .collect();
    let grew = st
        .warm_pool_log
        .iter()
        .filter(|l| l.contains("(queues"))
        .count();
    writeln!(w, "### Reading this run\n")?;
    writeln!(
        w,
        "- **split budget**: capacity ratios {lo:.2}–{hi:.2}. All instances share CPU 1, which is the \
         limit whichever socket a connection lands on; the p99 differences in these rows are of the \
         size of the round-to-round spread (column \"p99 of each round\"). `cpu / split` is served by \
         one instance: every SYN comes from CPU 0.\n\
         - **cpu, both CPUs**: capacity {:.2} (keep-alive) and {:.2} (short) of `hash`; p50 {:.2} and \
         {:.2} of `hash`, p99 {:.2} and {:.2} (best rounds; compare each round's p99). With `cpu` a client \
         thread, the softirq of its packets and the instance it talks to run on one CPU (affinity \
         checked below); under `hash` about half of the connections cross CPUs, so a request wakes a \
         task on the other vCPU, which costs an inter-processor interrupt and, in a VM, exits: the likely \
         cause of the difference (not measured separately). Capacity does not change: both CPUs are \
         busy either way.\n\
         - **warm**: instances serving at {:.0}% load: {} (split keep-alive, split short, both-CPUs \
         keep-alive, both-CPUs short). With short connections the pool grows under load (fixed rate: \
         {} and {} instances; capacity {:.2} and {:.2} of `hash`) and shrinks again ({} growths and {} \
         shrinks in the activator's log). With keep-alive it does not help: `warm` steers \
         *connections*, and the {} keep-alive connections of a run are opened at its start, all land on \
         the one warm socket and stay with instance 0; a pool that grows a moment later only sends \
         *new* connections to instance 1 (instances serving in the capacity runs: {}). Where the instances have two CPUs to use, that halves \
         capacity ({:.2} of `hash`), and the fixed rate ({:.0}/s, {:.0}% of `hash`'s capacity) is then \
         more than the one instance can serve: p50 {}, {} requests failed or unsent. The growth signal \
         is the accept queue, which stays short while the instance accepts promptly and falls behind on \
         requests.\n",
        cpu_k.throughput_ratio,
        cpu_s.throughput_ratio,
        cpu_k.p50_ratio,
        cpu_s.p50_ratio,
        cpu_k.p99_ratio,
        cpu_s.p99_ratio,
        st.light_fraction * 100.0,
        light.join(", "),
        warm_s1.served_fixed,
        warm_s.served_fixed,
        warm_s1.throughput_ratio,
        warm_s.throughput_ratio,
        grew,
        st.warm_pool_log.len() - grew,
        st.connections,
        warm_k.served_capacity,
        warm_k.throughput_ratio,
        warm_k.rate,
        st.load_fraction * 100.0,
        us(warm_k.p50_us),
        warm_k.failures,
    )?;
    writeln!(w, "### What this 2-core VM can and cannot show\n")?;
    writeln!(
        w,
        "- Loopback only: there is no NIC, no receive-side scaling or RPS. A SYN is processed on the \
         CPU that sends it, so `cpu` here can only mean \"client, softirq and server on one CPU\", with \
         clients and servers competing for the same two CPUs. What `cpu` is for in production (remote \
         clients, NIC receive queues spread over many CPUs, one instance per queue's CPU) and its \
         effect on cache and NUMA locality cannot be measured here; the locality gain measured above \
         is this VM's cost of cross-vCPU wakeups, which may well be larger than on bare metal.\n\
         - 2 CPUs and N=2: `cpu` maps one CPU to one instance; CPU counts that are not a multiple of N, \
         or more CPUs than instances, are not exercised. `warm` can only grow from 1 to 2, and in the \
         split budget the second instance shares the first one's CPU, so growing cannot add capacity \
         there; it can in the both-CPUs budget.\n\
         - What `warm` saves at light load (processes, memory, cold caches of idle instances) is not a \
         throughput figure. The instances run with `--idle-timeout 0` like every load scenario, so an \
         instance that left the pool stays up idle instead of exiting: \"instances serving\" counts \
         instances that answered, not processes.\n\
         - Each run measures {} s after {} s of warm-up; the pool shrinks after a calm second, so each \
         light-load `warm` run (and one that directly follows another of its config) waits 1.5 s first. \
         Other work on this shared VM shows up in p99 and p99.9: trust capacity and p50 ratios, and p99 \
         ratios only where every round agrees.\n",
        st.runs.first().map_or(0.0, |r| r.result.duration_s),
        read_json::<Meta>("meta").map_or(0.5, |m| m.profile.warmup_s),
    )?;
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

fn spread_note(runs: &[Run]) -> String {
    let mut parts = Vec::new();
    for v in ["hand", "distribute"] {
        for w in ["keepalive", "short"] {
            let caps: Vec<f64> = runs
                .iter()
                .filter(|r| r.variant == v && r.workload == w && r.kind == "capacity")
                .map(|r| r.result.throughput)
                .collect();
            if caps.len() > 1 {
                let (lo, hi) = (
                    caps.iter().copied().fold(f64::MAX, f64::min),
                    caps.iter().copied().fold(0.0, f64::max),
                );
                parts.push(format!("{v} {w} {lo:.0}–{hi:.0}"));
            }
        }
    }
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "Spread of the capacity rounds (req/s): {}. Differences smaller than this spread are noise.",
        parts.join("; ")
    )
}

/// A grouped bar chart: one group per category, one bar per series, an
/// optional dashed reference line.
fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    cats: &[String],
    series: &[(String, Vec<f64>)],
    reference: Option<(f64, &str)>,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::series::DashedLineSeries;
    let finite = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|v| v.is_finite());
    let top = finite.fold(reference.map_or(0.0, |r| r.0), f64::max) * 1.7;
    let top = if top > 0.0 { top } else { 1.0 };
    let root = SVGBackend::new(path, (760, 380)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let n = cats.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 && i < cats.len() {
                cats[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
    ];
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (si, (name, vals)) in series.iter().enumerate() {
        let color = palette[si % palette.len()];
        let bars = vals
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(move |(i, &v)| {
                let x0 = i as f64 + 0.1 + width * si as f64;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.95, v)], color.filled())
            });
        chart
            .draw_series(bars)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        let labels = vals
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(move |(i, &v)| {
                let x = i as f64 + 0.1 + width * si as f64;
                Text::new(
                    format!("{v:.2}"),
                    (x, v + top * 0.05),
                    ("sans-serif", 11).into_font(),
                )
            });
        chart
            .draw_series(labels)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    if let Some((y, label)) = reference {
        let style = ShapeStyle::from(&BLACK).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, y), (n as f64, y)],
                6,
                4,
                style,
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
