//! Scenario `herd`, the thundering herd counted: context switches of the
//! serving processes per accepted connection, for N = 4, 16, 64 workers on one
//! CPU, at a fixed moderate rate of short connections.
//!
//! One *wakeup* is one context switch of a serving process, as the kernel
//! counts them in `/proc/PID/task/*/status`: `voluntary_ctxt_switches` (the
//! process blocked, in `epoll_wait` here, and was woken again later: one
//! sleep → wake cycle) plus `nonvoluntary_ctxt_switches` (it was runnable and
//! got preempted). Both are counted over every thread of every serving
//! process, from just before the load generator starts to just after it
//! exits, minus what the same processes do idle over the same time (measured
//! right before). The ratio to accepted connections depends on how many
//! processes a connection wakes, not on how fast the machine is.

use super::measure::{load_on, Clients};
use super::testbed::{wait_port, Bed, HostServer, ACTIVATOR};
use super::{Profile, Progress, SERVER_CPU};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Worker counts.
pub(super) const HERD_N: [usize; 3] = [4, 16, 64];
/// Offered rate of short connections (connect, one request, close): far below
/// the capacity of any model with 64 workers on one CPU, so every connection
/// finds the workers idle, which is when a herd is largest.
pub(super) const HERD_RATE: f64 = 500.0;
/// First port: (a) of each N on `P_HERD + i`, the models by hand above.
const P_HERD: u16 = 47870;

/// Id, description, `distribute-bench-server --model` (empty: instances of
/// systemd-distribute).
pub(super) const HERD: &[(&str, &str, &str)] = &[
    ("a", "Distribute=N: one SO_REUSEPORT socket per single-threaded instance, started by systemd-distribute", ""),
    ("a'", "the same: N SO_REUSEPORT sockets and processes, started by hand", "reuseport"),
    ("b", "one shared listening socket, N processes each in epoll", "shared"),
    ("c", "one shared listening socket, N processes, EPOLLEXCLUSIVE", "exclusive"),
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HerdRow {
    pub model: String,
    pub n: usize,
    /// Offered rate, connections per second.
    pub rate: f64,
    /// Connections answered (`200 OK`) in the run.
    pub connections: u64,
    pub failed: u64,
    /// Load run wall time (what the idle baseline is scaled to), seconds.
    pub window_s: f64,
    /// Raw context switches of the serving processes over the run.
    pub voluntary: u64,
    pub nonvoluntary: u64,
    /// Context switches per second of the same processes with no load.
    pub idle_per_s: f64,
    /// (voluntary + nonvoluntary − idle baseline) / connections.
    pub wakeups_per_conn: f64,
    /// The voluntary part alone, less its share of the idle baseline.
    pub voluntary_per_conn: f64,
    /// Serving processes that answered at least one request.
    pub served_by: usize,
    /// For (a): context switches of the activator per connection (it is not
    /// on the data path; this shows it stays asleep).
    pub activator_per_conn: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Herd {
    pub rate: f64,
    pub duration_s: f64,
    pub work_us: u64,
    pub idle_window_s: f64,
    pub rows: Vec<HerdRow>,
}

/// Seconds per load run and of the idle baseline.
fn durations(p: &Profile) -> (f64, f64) {
    if p.name == "full" {
        (10.0, 3.0)
    } else {
        (4.0, 1.0)
    }
}

fn config(bin: &str, n: usize, port: u16) -> String {
    // Activation=eager: all N run before the count starts, so no start-up
    // is counted; --work-us 0: the handler's busy loop would only add
    // preemptions that have nothing to do with how connections arrive.
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\nNoDelay=yes\nBacklog=4096\n\
         Activation=eager\n\n\
         [Service]\nExecStart={bin}/distribute-bench-server --model listen-fds --work-us 0\n\
         CPUAffinity={SERVER_CPU}\n"
    )
}

/// Serving processes: host PIDs for the readings.
enum Procs {
    /// Sandbox PIDs of the instances (read through the sandbox's /proc).
    Sandbox(Vec<u32>),
    /// Host PIDs of the forked workers.
    Host(Vec<u32>),
}

impl Procs {
    /// (voluntary, nonvoluntary) summed over every thread.
    fn switches(&self, bed: &Bed) -> Result<(u64, u64)> {
        let (pids, root) = match self {
            Procs::Sandbox(p) => (p, bed.sb.host_path("/proc")),
            Procs::Host(p) => (p, "/proc".into()),
        };
        let (mut v, mut nv) = (0, 0);
        for pid in pids {
            let dir = root.join(pid.to_string()).join("task");
            for e in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
                let s = std::fs::read_to_string(e?.path().join("status"))?;
                v += field(&s, "voluntary_ctxt_switches")?;
                nv += field(&s, "nonvoluntary_ctxt_switches")?;
            }
        }
        Ok((v, nv))
    }
}

fn field(status: &str, key: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/PID/status"))
}

/// Host PIDs of the children of `parent`.
fn children(parent: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")? {
        let e = e?;
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The field after the parenthesised command name: state, then ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    Ok(out)
}

fn instance_pids(bed: &Bed, name: &str, n: usize) -> Result<Vec<u32>> {
    let units: Vec<String> = (0..n).map(|i| format!("{name}@{i}.service")).collect();
    let mut args = vec!["show", "-p", "MainPID", "--value"];
    args.extend(units.iter().map(String::as_str));
    let out = bed.sb.systemctl(&args)?;
    Ok(out
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .filter(|&p| p != 0)
        .collect())
}

/// Writes the configs of (a) for every N and reloads the activator once.
/// One reload in and one out: removing a config with 16 running instances
/// and adding the next one right after it hung the activator's reload once
/// (with `DrainTimeoutSec=100ms`; reported, not fixed here), and the idle
/// instances of the other N cost no wakeups (their idle baseline is 0).
fn add_configs(bed: &Bed) -> Result<()> {
    for (i, &n) in HERD_N.iter().enumerate() {
        bed.sb.write_file(
            &format!("config/herd{n}.socket"),
            &config(&bed.bin, n, P_HERD + i as u16),
        )?;
    }
    bed.sb.systemctl(&["reload", ACTIVATOR])?;
    Ok(())
}

/// Waits until all N instances of (a) run.
fn start_distribute(bed: &Bed, name: &str, n: usize, port: u16) -> Result<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = instance_pids(bed, name, n)?;
        if pids.len() == n {
            wait_port(port)?;
            return Ok(pids);
        }
        if Instant::now() > deadline {
            bail!(
                "{name}: {} of {n} instances running after 30 s\n{}",
                pids.len(),
                bed.sb.journal(Some(ACTIVATOR))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes the configs; the activator drains and stops their instances in
/// the background.
fn remove_configs(bed: &Bed) -> Result<()> {
    for n in HERD_N {
        let _ = std::fs::remove_file(bed.sb.dir().join(format!("config/herd{n}.socket")));
    }
    bed.sb.systemctl(&["reload", ACTIVATOR])?;
    Ok(())
}

pub(super) fn measure(bed: &Bed, p: &Profile, pr: &Progress) -> Result<Herd> {
    let (duration, idle) = durations(p);
    pr.say(format!(
        "== herd: context switches of the serving processes per connection, N = {HERD_N:?}, \
         short connections at {HERD_RATE:.0}/s for {duration} s, idle baseline over {idle} s"
    ));
    // The load generator's own settings for these runs: no warm-up (every
    // connection of the run is counted), at most 64 connections in flight.
    let lp = Profile {
        warmup_s: 0.0,
        duration_s: duration,
        connections: 64,
        ..p.clone()
    };
    let activator = bed.main_pid(ACTIVATOR)?;
    add_configs(bed)?;
    let mut rows = Vec::new();
    for (i, &n) in HERD_N.iter().enumerate() {
        for &(id, _, model) in HERD {
            let name = format!("herd{n}");
            let (procs, port, _server) = if model.is_empty() {
                let port = P_HERD + i as u16;
                let pids = start_distribute(bed, &name, n, port)?;
                (Procs::Sandbox(pids), port, None)
            } else {
                let k = HERD.iter().position(|h| h.0 == id).unwrap_or(0);
                let port = P_HERD + 10 + (i * HERD.len() + k) as u16;
                let server = HostServer::start(
                    &[
                        "--model",
                        model,
                        "--workers",
                        &n.to_string(),
                        "--port",
                        &port.to_string(),
                        "--work-us",
                        "0",
                    ],
                    port,
                )?;
                // wait_port's probe connection was served; let every worker
                // reach epoll_wait.
                let deadline = Instant::now() + Duration::from_secs(10);
                let pids = loop {
                    let pids = children(server.pid())?;
                    if pids.len() == n || Instant::now() > deadline {
                        break pids;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                };
                if pids.len() != n {
                    bail!("({id}) N={n}: {} of {n} workers found", pids.len());
                }
                (Procs::Host(pids), port, Some(server))
            };
            // Let start-up and the readiness probe settle, then the baseline.
            std::thread::sleep(Duration::from_millis(300));
            let (v0, nv0) = procs.switches(bed)?;
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_secs_f64(idle));
            let (v1, nv1) = procs.switches(bed)?;
            let idle_s = t0.elapsed().as_secs_f64();
            let act0 = bed.ctxt_switches(activator)?.0;
            let t1 = Instant::now();
            let (r, _) = load_on(&lp, port, "short", HERD_RATE, Clients::Cpu0)?;
            let window = t1.elapsed().as_secs_f64();
            let (v2, nv2) = procs.switches(bed)?;
            let act1 = bed.ctxt_switches(activator)?.0;
            let idle_v = (v1 - v0) as f64 / idle_s;
            let idle_nv = (nv1 - nv0) as f64 / idle_s;
            let conns = r.completed.max(1) as f64;
            let (dv, dnv) = ((v2 - v1) as f64, (nv2 - nv1) as f64);
            let row = HerdRow {
                model: id.to_string(),
                n,
                rate: HERD_RATE,
                connections: r.completed,
                failed: r.errors.total() + r.unsent,
                window_s: window,
                voluntary: v2 - v1,
                nonvoluntary: nv2 - nv1,
                idle_per_s: idle_v + idle_nv,
                wakeups_per_conn: (dv + dnv - (idle_v + idle_nv) * window) / conns,
                voluntary_per_conn: (dv - idle_v * window) / conns,
                served_by: r.workers.len(),
                activator_per_conn: model.is_empty().then(|| (act1 - act0) as f64 / conns),
            };
            pr.say(format!(
                "   ({id:<2}) N={n:<3} {:>6} connections: {:>6.2} wakeups/connection \
                 ({:.2} voluntary; raw {} + {} involuntary; idle {:.1}/s), {} processes served{}{}",
                row.connections,
                row.wakeups_per_conn,
                row.voluntary_per_conn,
                row.voluntary,
                row.nonvoluntary,
                row.idle_per_s,
                row.served_by,
                row.activator_per_conn
                    .map_or(String::new(), |a| format!(", activator {a:.3}/connection")),
                if row.failed > 0 {
                    format!("  FAILED {}", row.failed)
                } else {
                    String::new()
                }
            ));
            rows.push(row);
        }
    }
    remove_configs(bed)?;
    Ok(Herd {
        rate: HERD_RATE,
        duration_s: duration,
        work_us: 0,
        idle_window_s: idle,
        rows,
    })
}

/// The section of `docs/benchmarks.md`.
pub(super) fn section(w: &mut String, h: &Herd, img: &std::path::Path) -> Result<()> {
    use std::fmt::Write as _;
    let ok = |b: bool| if b { "✅" } else { "❌" };
    writeln!(w, "## 7. The thundering herd, counted\n")?;
    writeln!(
        w,
        "Context switches of the serving processes per accepted connection. **One wakeup** = one \
         context switch of a serving process as `/proc/PID/task/*/status` counts it: \
         `voluntary_ctxt_switches` (it blocked in `epoll_wait` and was woken later: one sleep → wake \
         cycle) + `nonvoluntary_ctxt_switches` (preempted while runnable), summed over all threads of \
         all N processes, from just before the load generator starts to just after it exits, minus \
         what the same processes did idle (measured over {:.0} s right before, scaled to the run's \
         length). Load: short connections (connect, one `GET`, close by the server), open loop at a \
         fixed **{:.0} connections/s for {:.0} s** (about {:.0} connections per row, no warm-up, at \
         most 64 in flight), from one client thread on CPU 0; all N workers on CPU 1; \
         `distribute-bench-server --work-us {}` in every row, the same event loop (level-triggered \
         epoll, accept in batches of up to 64). (a): `Distribute=N`, `Activation=eager` (all N run \
         before counting starts), instances `--model listen-fds` with `CPUAffinity=1`; (a′), (b), \
         (c): `--model reuseport|shared|exclusive --workers N` started by hand, `sched_setaffinity` \
         to CPU 1. The ratio depends on how many processes one connection wakes, not on the \
         machine's speed or size. Goal: (a) ≤ 1.1 wakeups per connection at N = 64.\n",
        h.idle_window_s,
        h.rate,
        h.duration_s,
        h.rate * h.duration_s,
        h.work_us
    )?;
    writeln!(w, "| model | |\n|---|---|")?;
    for (id, desc, _) in HERD {
        writeln!(w, "| ({id}) | {desc} |")?;
    }
    writeln!(w)?;
    writeln!(
        w,
        "| N | model | connections | wakeups / connection | of which voluntary | raw voluntary + involuntary | idle /s | processes that served | failed |"
    )?;
    writeln!(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in &h.rows {
        let goal = if r.model == "a" && r.n == 64 {
            format!(" {}", ok(r.wakeups_per_conn <= 1.1))
        } else {
            String::new()
        };
        writeln!(
            w,
            "| {} | ({}) | {} | **{:.2}**{goal} | {:.2} | {} + {} | {:.1} | {} of {} | {} |",
            r.n,
            r.model,
            r.connections,
            r.wakeups_per_conn,
            r.voluntary_per_conn,
            r.voluntary,
            r.nonvoluntary,
            r.idle_per_s,
            r.served_by,
            r.n,
            r.failed
        )?;
    }
    let act: Vec<String> = h
        .rows
        .iter()
        .filter_map(|r| Some(format!("N={}: {:.3}", r.n, r.activator_per_conn?)))
        .collect();
    if !act.is_empty() {
        writeln!(
            w,
            "\nThe activator's own context switches per connection during the (a) runs (it holds a \
             duplicate of every socket but is not on the data path): {}.",
            act.join(", ")
        )?;
    }
    writeln!(w)?;
    let cats: Vec<String> = HERD_N.iter().map(|n| format!("N={n}")).collect();
    let series: Vec<(String, Vec<f64>)> = HERD
        .iter()
        .map(|(id, _, _)| {
            let vals = HERD_N
                .iter()
                .map(|&n| {
                    h.rows
                        .iter()
                        .find(|r| r.model == *id && r.n == n)
                        .map_or(f64::NAN, |r| r.wakeups_per_conn)
                })
                .collect();
            (format!("({id})"), vals)
        })
        .collect();
    super::chart::bar_chart(
        &img.join("herd.svg"),
        "Wakeups of the serving processes per connection (lower is better)",
        "wakeups per connection",
        &cats,
        &series,
        Some((1.1, "goal (a) 1.1")),
    )?;
    writeln!(w, "![wakeups per connection](benchmarks/herd.svg)\n")?;
    findings(w, h)?;
    Ok(())
}

/// This run's figures in words.
fn findings(w: &mut String, h: &Herd) -> Result<()> {
    use std::fmt::Write as _;
    let row = |id: &str, n: usize| h.rows.iter().find(|r| r.model == id && r.n == n);
    let n = *HERD_N.last().unwrap_or(&64);
    let (Some(a), Some(b), Some(c)) = (row("a", n), row("b", n), row("c", n)) else {
        return Ok(());
    };
    writeln!(w, "**Reading this run.**\n")?;
    writeln!(
        w,
        "- (a) at N = {n}: **{:.2}** wakeups per connection ({:.2} voluntary). One connection costs one \
         process one sleep → wake cycle: the connection's own socket is the only one that becomes \
         readable, so the kernel wakes the one instance that waits on it. In that wakeup it accepts (in a \
         batch, which here holds one), and the request is already there: the client sends it right \
         after its `connect()` completes, before the woken process on the other CPU runs (over a real \
         network it would arrive a round trip later and cost a second wakeup, unless `DeferAcceptSec=` \
         defers the accept until data is there). The server closes first, so the client's FIN meets a \
         closed socket and wakes nobody. What is above 1.00 is preemption (involuntary) and the rare \
         connection whose request came after the process had gone back to sleep.",
        a.wakeups_per_conn, a.voluntary_per_conn
    )?;
    writeln!(
        w,
        "- (b) at N = {n}: **{:.1}** wakeups per connection: every process waiting in `epoll_wait` on the \
         shared socket is woken, one wins the `accept()`, the others find `EAGAIN` and sleep again; it \
         grows with N ({}).",
        b.wakeups_per_conn,
        HERD_N
            .iter()
            .filter_map(|&k| Some(format!("N={k}: {:.1}", row("b", k)?.wakeups_per_conn)))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    writeln!(
        w,
        "- (c) `EPOLLEXCLUSIVE` also wakes about one process per connection ({:.2} at N = {n}), but which \
         one is not spread: only **{} of {n}** processes served any connection in this run. The socket's \
         wait queue holds the N epoll instances in the order they registered; the kernel wakes the \
         first whose process is asleep in `epoll_wait`, and at a moderate rate that is almost always \
         the first or second one. (a) spread the same connections over {} of {n}.",
        c.wakeups_per_conn, c.served_by, a.served_by
    )?;
    let act: Vec<f64> = h
        .rows
        .iter()
        .filter_map(|r| Some(r.activator_per_conn? * r.connections as f64 / r.window_s))
        .collect();
    let (lo, hi) = act
        .iter()
        .fold((f64::INFINITY, 0.0_f64), |(l, u), &x| (l.min(x), u.max(x)));
    writeln!(
        w,
        "- The activator is not a serving process and is not counted above; its own context switches \
         are listed under the table: {lo:.0}–{hi:.0} per second at this rate. Its health check is meant \
         to sleep in epoll on duplicates of the sockets while every queue is empty and, once something \
         is queued, to sample every 125 ms until the queues are empty again (\"at most twice per \
         tick\", about 16 per second for a config under load). The measured rate is higher than that \
         and grows with N in some runs; where the rest comes from is not found here (a question for the \
         activator, which this scenario only observes).\n"
    )?;
    Ok(())
}
