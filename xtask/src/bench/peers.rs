//! Scenario `peers`: real servers from Debian, the same client (`wrk` from
//! Debian), one run: nginx with 2 workers and `reuseport`, nginx with one
//! shared socket (`accept_mutex` on and off), lighttpd in its own 2-worker
//! mode, and lighttpd as 2 instances under `Distribute=2` (the socket from
//! `$LISTEN_FDS`, `server.systemd-socket-activation`).
//!
//! Everything lives under `target/bench-peers/` (configs, pid and log files,
//! the document root); nothing under /etc is read or written. The servers
//! started by hand run as `nobody` (`setpriv`), pinned to CPU 1 (`taskset`);
//! the instances run as `User=nobody` with `CPUAffinity=1`; `wrk` runs on
//! CPU 0.

use super::testbed::{wait_port, Bed, ACTIVATOR};
use super::{Profile, Progress, LOAD_CPU, SERVER_CPU};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const P_PEERS: u16 = 47900;
/// The systemd-distribute config of the lighttpd instances.
const CONFIG: &str = "peers-lighttpd";

/// Id, description. The first is the baseline of the throughput ratios.
pub(super) const PEERS: &[(&str, &str)] = &[
    ("nginx-reuseport", "nginx, 2 worker processes, `listen … reuseport` (one SO_REUSEPORT socket per worker)"),
    ("nginx-mutex-on", "nginx, 2 worker processes, one shared socket, `accept_mutex on`"),
    ("nginx-mutex-off", "nginx, 2 worker processes, one shared socket, `accept_mutex off` (nginx's default)"),
    ("lighttpd-workers", "lighttpd, its own multi-process mode: `server.max-worker = 2`, one shared socket"),
    ("lighttpd-distribute", "lighttpd as 2 instances under systemd-distribute `Distribute=2` (one SO_REUSEPORT socket each, from `$LISTEN_FDS`)"),
];

/// Keep-alive (wrk's default) and a new connection per request
/// (`-H "Connection: close"`, where how accepts are spread matters).
pub(super) const PEER_WORKLOADS: [&str; 2] = ["keepalive", "close"];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRun {
    pub variant: String,
    pub workload: String,
    pub round: usize,
    pub rps: f64,
    pub requests: u64,
    /// Socket errors and non-2xx responses.
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU time of each worker process during the run, seconds (schedstat).
    pub worker_cpu_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    pub variant: String,
    pub workload: String,
    /// Median requests/s over the rounds.
    pub rps: f64,
    /// Median over the rounds of this variant's rps / the baseline's in the
    /// same round, and the smallest and largest of these per-round ratios.
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    /// Median p50 and p99 over the rounds.
    pub p50_us: u64,
    pub p99_us: u64,
    /// The busiest worker's share of the workers' CPU time, median over the
    /// rounds (0.5 = even with 2 workers).
    pub top_share: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    pub versions: Vec<String>,
    pub threads: usize,
    pub connections: usize,
    pub duration_s: u64,
    pub rounds: usize,
    /// The generated config files, name and text, as given to each peer.
    pub configs: Vec<(String, String)>,
    /// What each peer was started with (command line, user, pinning).
    pub commands: Vec<(String, String)>,
    /// lighttpd-distribute / lighttpd-workers per round (per workload).
    pub rows: Vec<PeerRow>,
    pub runs: Vec<PeerRun>,
}

fn which(prog: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
}

/// wrk, nginx and lighttpd from Debian; installed here like `.ci/run` installs
/// its tools when they are missing (this machine's `policy-rc.d` keeps the
/// packages' services from starting; nothing of theirs is used but the
/// binaries).
fn ensure_installed() -> Result<()> {
    let missing: Vec<&str> = [
        ("wrk", "wrk"),
        ("nginx", "nginx-light"),
        ("lighttpd", "lighttpd"),
    ]
    .iter()
    .filter(|(bin, _)| which(bin).is_none())
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("peers: installing {} from Debian", missing.join(" "));
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        bail!(
            "the peers scenario needs wrk, nginx and lighttpd from Debian: apt-get install wrk nginx-light lighttpd"
        );
    }
    Ok(())
}

fn version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

fn nginx_conf(dir: &Path, port: u16, reuseport: bool, mutex: bool) -> String {
    let d = dir.display();
    format!(
        "# generated by cargo xtask bench (peers)\n\
         worker_processes 2;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{\n    worker_connections 4096;\n    accept_mutex {};\n}}\n\
         http {{\n    access_log off;\n    default_type text/html;\n    keepalive_requests 1000;\n\
         \x20   client_body_temp_path {d}/tmp/body;\n    proxy_temp_path {d}/tmp/proxy;\n\
         \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n    uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20   scgi_temp_path {d}/tmp/scgi;\n\
         \x20   server {{\n        listen 127.0.0.1:{port}{} backlog=4096;\n        root {};\n    }}\n}}\n",
        if mutex { "on" } else { "off" },
        if reuseport { " reuseport" } else { "" },
        dir.parent().unwrap_or(dir).join("www").display()
    )
}

fn lighttpd_conf(dir: &Path, port: u16, workers: usize, activation: bool) -> String {
    format!(
        "# generated by cargo xtask bench (peers)\n\
         server.document-root = \"{}\"\n\
         server.bind = \"127.0.0.1\"\n\
         server.port = {port}\n\
         server.max-worker = {workers}\n\
         server.max-connections = 4096\n\
         server.max-keep-alive-requests = 1000\n\
         server.systemd-socket-activation = \"{}\"\n\
         index-file.names = ( \"index.html\" )\n\
         mimetype.assign = ( \".html\" => \"text/html\" )\n",
        dir.parent().unwrap_or(dir).join("www").display(),
        if activation { "enable" } else { "disable" },
    )
}

/// A server started by hand as `nobody`, pinned to the server CPU; killed
/// (its process group: master and workers) on drop.
struct Peer {
    child: Child,
}

impl Peer {
    fn start(argv: &[String], port: u16, log: &Path) -> Result<Peer> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("taskset");
        cmd.args([
            "-c",
            SERVER_CPU,
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?);
        // A session (and so a process group) of its own, as systemd would
        // start nginx.service or lighttpd.service: with autogroup scheduling
        // a session is one CPU scheduling group (master and workers share
        // it), while each Distribute=N instance is a session of its own.
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {argv:?}"))?;
        let p = Peer { child };
        wait_port(port).with_context(|| format!("{argv:?}"))?;
        Ok(p)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // The process group this Peer's spawn created: its master and workers
        // (nginx's and lighttpd's workers do not die with their parent).
        let pgid = self.child.id() as i32;
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Host PIDs of the children of `parent`.
fn children(parent: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
    .collect()
}

/// Nanoseconds on a CPU of every thread of each process (`schedstat`).
fn cpu_ns(proc_root: &Path, pids: &[u32]) -> Vec<u64> {
    pids.iter()
        .map(|pid| {
            let dir = proc_root.join(pid.to_string()).join("task");
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.filter_map(|e| {
                        let s = std::fs::read_to_string(e.ok()?.path().join("schedstat")).ok()?;
                        s.split_whitespace().next()?.parse::<u64>().ok()
                    })
                    .sum()
                })
                .unwrap_or(0)
        })
        .collect()
}

/// Latency like wrk prints it (`812.00us`, `1.23ms`, `2.01s`) in µs.
fn wrk_time(s: &str) -> Option<u64> {
    let (num, mul) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        return None;
    };
    Some((num.parse::<f64>().ok()? * mul).round() as u64)
}

struct WrkOut {
    rps: f64,
    requests: u64,
    errors: u64,
    p50: u64,
    p99: u64,
}

fn parse_wrk(out: &str) -> Result<WrkOut> {
    let mut w = WrkOut {
        rps: f64::NAN,
        requests: 0,
        errors: 0,
        p50: 0,
        p99: 0,
    };
    for line in out.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("Requests/sec:") => {
                w.rps = words
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            }
            Some("50%") => w.p50 = words.next().and_then(wrk_time).unwrap_or(0),
            Some("99%") => w.p99 = words.next().and_then(wrk_time).unwrap_or(0),
            Some("Non-2xx") => {
                w.errors += t
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            }
            Some("Socket") => {
                // "Socket errors: connect 0, read 0, write 0, timeout 0"
                w.errors += t
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>();
            }
            Some(n) if t.contains(" requests in ") => w.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    if !w.rps.is_finite() {
        bail!("no Requests/sec in wrk's output:\n{out}");
    }
    Ok(w)
}

fn wrk(port: u16, workload: &str, secs: u64, threads: usize, conns: usize) -> Result<WrkOut> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", LOAD_CPU, "wrk"])
        .args(["-t", &threads.to_string(), "-c", &conns.to_string()])
        .args(["-d", &format!("{secs}s"), "--latency"]);
    if workload == "close" {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/index.html"))
        .stdin(Stdio::null())
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}\n{text}", out.status);
    }
    parse_wrk(&text)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Where a variant's worker processes are: (proc root, PIDs).
type Workers = (PathBuf, Vec<u32>);

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Peers> {
    ensure_installed()?;
    let (rounds, secs) = if p.name == "full" { (9, 5) } else { (5, 2) };
    let (threads, conns) = (1, p.connections);
    let versions = vec![
        version("nginx", "-v"),
        version("lighttpd", "-v"),
        version("wrk", "-v"),
    ];
    pr.say(format!(
        "== peers: wrk -t{threads} -c{conns} on CPU {LOAD_CPU}, {rounds} alternating rounds of {secs} s, \
         servers on CPU {SERVER_CPU}; {}",
        versions.join("; ")
    ));
    let root = distribute_sandbox::target_dir()
        .canonicalize()?
        .join("bench-peers");
    let _ = std::fs::remove_dir_all(&root);
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    // 13 bytes of body: the response is mostly headers, like the other scenarios'.
    std::fs::write(www.join("index.html"), "hello, world\n")?;
    let nobody = (65534, 65534);
    let mut configs = Vec::new();
    let mut commands = Vec::new();
    let mut servers: Vec<Peer> = Vec::new();
    let mut workers: Vec<Workers> = Vec::new();
    let mut ports = Vec::new();
    for (i, (id, _)) in PEERS.iter().enumerate() {
        let port = P_PEERS + i as u16;
        ports.push(port);
        let dir = root.join(id);
        std::fs::create_dir_all(dir.join("tmp"))?;
        for d in [&root, &www, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        // nginx as nobody writes its pid, log and temp dirs here.
        std::os::unix::fs::chown(&dir, Some(nobody.0), Some(nobody.1))?;
        std::os::unix::fs::chown(dir.join("tmp"), Some(nobody.0), Some(nobody.1))?;
        let (file, text) = match *id {
            "nginx-reuseport" => ("nginx.conf", nginx_conf(&dir, port, true, false)),
            "nginx-mutex-on" => ("nginx.conf", nginx_conf(&dir, port, false, true)),
            "nginx-mutex-off" => ("nginx.conf", nginx_conf(&dir, port, false, false)),
            "lighttpd-workers" => ("lighttpd.conf", lighttpd_conf(&dir, port, 2, false)),
            _ => ("lighttpd.conf", lighttpd_conf(&dir, port, 0, true)),
        };
        let conf = dir.join(file);
        std::fs::write(&conf, &text)?;
        configs.push((conf.display().to_string(), text));
        let c = conf.display().to_string();
        if *id == "lighttpd-distribute" {
            let sock = format!(
                "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute=2\nBacklog=4096\nActivation=eager\n\n\
                 [Service]\nExecStart=/usr/sbin/lighttpd -D -f {c}\nUser=nobody\nCPUAffinity={SERVER_CPU}\n"
            );
            let path = bed
                .sb
                .write_file(&format!("config/{CONFIG}.socket"), &sock)?;
            configs.push((format!("{path} (systemd-distribute config)"), sock));
            bed.sb.systemctl(&["reload", ACTIVATOR])?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let pids = loop {
                let out = bed.sb.systemctl(&[
                    "show",
                    "-p",
                    "MainPID",
                    "--value",
                    &format!("{CONFIG}@0.service"),
                    &format!("{CONFIG}@1.service"),
                ])?;
                let pids: Vec<u32> = out
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .filter(|&p| p != 0)
                    .collect();
                if pids.len() == 2 {
                    break pids;
                }
                if Instant::now() > deadline {
                    bail!(
                        "lighttpd under Distribute=2: {} of 2 instances running\n{}",
                        pids.len(),
                        bed.sb.journal(None)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            wait_port(port)?;
            commands.push((
                id.to_string(),
                format!(
                    "{CONFIG}@0.service, {CONFIG}@1.service started by systemd-distribute: \
                     `/usr/sbin/lighttpd -D -f {c}`, `User=nobody`, `CPUAffinity={SERVER_CPU}`"
                ),
            ));
            workers.push((bed.sb.host_path("/proc"), pids));
            continue;
        }
        let argv: Vec<String> = if file == "nginx.conf" {
            vec![
                "/usr/sbin/nginx".into(),
                "-e".into(),
                dir.join("error.log").display().to_string(),
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                c.clone(),
            ]
        } else {
            vec![
                "/usr/sbin/lighttpd".into(),
                "-D".into(),
                "-f".into(),
                c.clone(),
            ]
        };
        commands.push((
            id.to_string(),
            format!(
                "`taskset -c {SERVER_CPU} setpriv --reuid=nobody --regid=nogroup --clear-groups {}`",
                argv.join(" ")
            ),
        ));
        let server = Peer::start(&argv, port, &dir.join("stderr.log"))?;
        let master = server.child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        let kids = loop {
            let k = children(master);
            if k.len() >= 2 || Instant::now() > deadline {
                break k;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if kids.len() != 2 {
            bail!("{id}: {} worker processes, expected 2", kids.len());
        }
        workers.push((PathBuf::from("/proc"), kids));
        servers.push(server);
    }
    // A warm-up run per variant (caches, page cache, nginx's worker state).
    for (i, (id, _)) in PEERS.iter().enumerate() {
        for w in PEER_WORKLOADS {
            wrk(ports[i], w, 1, threads, conns).with_context(|| format!("warming up {id}"))?;
        }
    }
    let mut runs = Vec::new();
    for round in 0..rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..PEERS.len()).collect()
        } else {
            (0..PEERS.len()).rev().collect()
        };
        for i in order {
            let (id, _) = PEERS[i];
            for w in PEER_WORKLOADS {
                let (proc_root, pids) = &workers[i];
                let before = cpu_ns(proc_root, pids);
                let o = wrk(ports[i], w, secs, threads, conns)?;
                let after = cpu_ns(proc_root, pids);
                let cpu: Vec<f64> = after
                    .iter()
                    .zip(&before)
                    .map(|(a, b)| a.saturating_sub(*b) as f64 / 1e9)
                    .collect();
                pr.say(format!(
                    "   round {round} {id:<20} {w:<9} {:>8.0} req/s  p50 {:>7}µs p99 {:>7}µs  worker CPU {}{}",
                    o.rps,
                    o.p50,
                    o.p99,
                    cpu.iter().map(|c| format!("{c:.2}s")).collect::<Vec<_>>().join(" / "),
                    if o.errors > 0 { format!("  ERRORS {}", o.errors) } else { String::new() }
                ));
                // Every worker must have served: for the instances this is
                // the check that lighttpd took its socket from $LISTEN_FDS
                // (it could not bind the port itself: the activator's
                // SO_REUSEPORT sockets hold it, and lighttpd's own has no
                // SO_REUSEPORT).
                if cpu.iter().any(|&c| c <= 0.0) {
                    bail!("{id} {w} round {round}: a worker used no CPU time: {cpu:?}");
                }
                runs.push(PeerRun {
                    variant: id.to_string(),
                    workload: w.to_string(),
                    round,
                    rps: o.rps,
                    requests: o.requests,
                    errors: o.errors,
                    p50_us: o.p50,
                    p99_us: o.p99,
                    worker_cpu_s: cpu,
                });
            }
        }
    }
    drop(servers);
    let _ = std::fs::remove_file(bed.sb.dir().join(format!("config/{CONFIG}.socket")));
    bed.sb.systemctl(&["reload", ACTIVATOR])?;
    let rows = rows(&runs, PEERS[0].0);
    Ok(Peers {
        versions,
        threads,
        connections: conns,
        duration_s: secs,
        rounds,
        configs,
        commands,
        rows,
        runs,
    })
}

/// Per variant and workload: medians, and the ratio against `base` paired
/// by round.
fn rows(runs: &[PeerRun], base: &str) -> Vec<PeerRow> {
    let mut rows = Vec::new();
    for w in PEER_WORKLOADS {
        for (id, _) in PEERS {
            let mine: Vec<&PeerRun> = runs
                .iter()
                .filter(|r| r.variant == *id && r.workload == w)
                .collect();
            let ratios: Vec<f64> = mine
                .iter()
                .filter_map(|r| {
                    let b = runs
                        .iter()
                        .find(|x| x.variant == base && x.workload == w && x.round == r.round)?;
                    Some(r.rps / b.rps)
                })
                .collect();
            let top: Vec<f64> = mine
                .iter()
                .map(|r| {
                    let total: f64 = r.worker_cpu_s.iter().sum();
                    r.worker_cpu_s.iter().copied().fold(0.0, f64::max) / total.max(1e-9)
                })
                .collect();
            rows.push(PeerRow {
                variant: id.to_string(),
                workload: w.to_string(),
                rps: median(mine.iter().map(|r| r.rps).collect()),
                ratio: median(ratios.clone()),
                ratio_min: ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratio_max: ratios.iter().copied().fold(0.0, f64::max),
                p50_us: median(mine.iter().map(|r| r.p50_us as f64).collect()) as u64,
                p99_us: median(mine.iter().map(|r| r.p99_us as f64).collect()) as u64,
                top_share: median(top),
                errors: mine.iter().map(|r| r.errors).sum(),
            });
        }
    }
    rows
}

/// Per-round ratio of `a` over `b` (min, median, max) on a workload.
pub(super) fn paired(p: &Peers, a: &str, b: &str, w: &str) -> Option<(f64, f64, f64)> {
    let r: Vec<f64> = p
        .runs
        .iter()
        .filter(|x| x.variant == a && x.workload == w)
        .filter_map(|x| {
            let y = p
                .runs
                .iter()
                .find(|y| y.variant == b && y.workload == w && y.round == x.round)?;
            Some(x.rps / y.rps)
        })
        .collect();
    if r.is_empty() {
        return None;
    }
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    Some((lo, median(r), hi))
}

/// The section of `docs/benchmarks.md`.
pub(super) fn section(w: &mut String, p: &Peers, img: &Path) -> Result<()> {
    use std::fmt::Write as _;
    // Paths as seen from the checkout, not this machine's absolute ones.
    let root = crate::root()
        .canonicalize()
        .map(|r| format!("{}/", r.display()))
        .unwrap_or_default();
    let rel = |s: &str| {
        if root.is_empty() {
            s.to_string()
        } else {
            s.replace(&root, "")
        }
    };
    let us = super::measure::us;
    writeln!(w, "## 8. Real peers, same client, one run\n")?;
    writeln!(
        w,
        "`wrk -t{} -c{} -d{}s --latency` (closed loop: {} connections each with one request in \
         flight; its latency is at capacity, not at a fixed rate) pinned to CPU {LOAD_CPU} with \
         `taskset`, against each peer in turn; every peer's 2 worker processes on CPU {SERVER_CPU}. \
         {} rounds, the variants in alternating order; one 1 s warm-up run per variant and workload \
         first. *keepalive*: wrk's default (the {} connections stay open); *close*: `-H \"Connection: \
         close\"`, a new connection per request, where the spreading of accepts matters. One static \
         file of 13 bytes (`index.html`). Versions: {}.\n",
        p.threads,
        p.connections,
        p.duration_s,
        p.connections,
        p.rounds,
        p.connections,
        p.versions.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(
        w,
        "Ratio = this peer's req/s over nginx `reuseport`'s in the same round: the median of the \
         rounds, and in brackets the smallest and largest per-round ratio. p50/p99: medians of wrk's \
         per-round figures. Worker share: the busier worker's part of both workers' CPU time \
         (`/proc/PID/task/*/schedstat`) during the run, median of the rounds; 50% is even.\n"
    )?;
    writeln!(
        w,
        "lighttpd's socket activation, verified in every run: both instances under `Distribute=2` \
         served (each one's CPU time is checked to be above zero, or the scenario fails) and neither \
         could have bound the port itself (the activator's `SO_REUSEPORT` sockets hold it and \
         lighttpd's own socket would have no `SO_REUSEPORT`), so each served the socket it got as \
         fd 3 with `$LISTEN_FDS=1`.\n"
    )?;
    writeln!(
        w,
        "Scheduling groups: each peer started by hand is one session (`setsid`, master and workers \
         together), as it would be as one systemd service; each lighttpd instance under \
         `Distribute=2` is a session of its own. With the kernel's autogroup scheduling (on here) a \
         session is one CFS group, so when other work shares CPU 1 (this VM is shared), the two \
         instances get two shares where a 2-worker server gets one; with CPU 1 to themselves, as \
         intended, that makes no difference. wrk's own closed loop and the shared VM make the \
         per-round ratios wide: read the brackets.\n"
    )?;
    for wl in PEER_WORKLOADS {
        writeln!(w, "### {wl}\n")?;
        writeln!(
            w,
            "| peer | req/s | ratio [min–max] | p50 | p99 | busier worker's CPU share | errors |"
        )?;
        writeln!(w, "|---|---:|---:|---:|---:|---:|---:|")?;
        for r in p.rows.iter().filter(|r| r.workload == wl) {
            writeln!(
                w,
                "| {} | {:.0} | **{:.2}** [{:.2}–{:.2}] | {} | {} | {:.0}% | {} |",
                r.variant,
                r.rps,
                r.ratio,
                r.ratio_min,
                r.ratio_max,
                us(r.p50_us),
                us(r.p99_us),
                r.top_share * 100.0,
                r.errors
            )?;
        }
        if let Some((lo, mid, hi)) = paired(p, "lighttpd-distribute", "lighttpd-workers", wl) {
            writeln!(
                w,
                "\nlighttpd under `Distribute=2` over lighttpd's own 2 workers, same round: **{mid:.2}** \
                 [{lo:.2}–{hi:.2}].",
            )?;
        }
        writeln!(w)?;
    }
    writeln!(w, "| peer | |\n|---|---|")?;
    for (id, desc) in PEERS {
        writeln!(w, "| {id} | {desc} |")?;
    }
    writeln!(w, "\nHow each peer was started:\n")?;
    for (id, c) in &p.commands {
        writeln!(w, "- {id}: {}", rel(c))?;
    }
    writeln!(
        w,
        "\n<details><summary>The generated config files</summary>\n"
    )?;
    for (name, text) in &p.configs {
        writeln!(w, "`{}`:\n\n```\n{}```\n", rel(name), rel(text))?;
    }
    writeln!(w, "</details>\n")?;
    let cats: Vec<String> = PEERS.iter().map(|(id, _)| id.to_string()).collect();
    let series: Vec<(String, Vec<f64>)> = PEER_WORKLOADS
        .iter()
        .map(|wl| {
            let vals = PEERS
                .iter()
                .map(|(id, _)| {
                    p.rows
                        .iter()
                        .find(|r| r.variant == *id && r.workload == *wl)
                        .map_or(f64::NAN, |r| r.ratio)
                })
                .collect();
            (wl.to_string(), vals)
        })
        .collect();
    super::chart::bar_chart(
        &img.join("peers.svg"),
        "Throughput relative to nginx reuseport, same wrk, same run",
        "ratio",
        &cats,
        &series,
        Some((1.0, "nginx reuseport")),
    )?;
    writeln!(w, "![peers throughput ratios](benchmarks/peers.svg)\n")?;
    Ok(())
}
