//! `cargo xtask soak --minutes M [--seed S]`: the activator in a private systemd
//! under steady loopback load, with a seeded random schedule of disruptions:
//!
//! * `systemctl kill -s SIGKILL web@I.service` (and `api@I`) on a running instance,
//! * a reload with a changed `Distribute=` (live grow or shrink with drain),
//! * `distributectl scale web N` (the D-Bus `SetDistribute` call),
//! * `systemctl restart systemd-distribute` (sockets kept in the fd store);
//!   `--no-restarts` leaves these out, so that one activator process lives
//!   through the whole run and its RSS and fd counts compare directly,
//! * a config edit that replaces `web`'s sockets (`FreeBind=` flipped: fixed
//!   at bind time; the new sockets are bound before the old ones drain, so
//!   this must cost no connection),
//! * two reloads at once (`systemctl reload` and `distributectl reload`),
//! * forged "instance failed" signals sent by `nobody` to the activator.
//!
//! Besides the short-connection clients, one client keeps an HTTP keep-alive
//! connection to `web` across everything (shrinks stop drained instances
//! after `DrainTimeoutSec=`); like any HTTP client it sends again on a fresh
//! connection when the server closed the idle one, and counts a failure only
//! for a request that got no answer.
//!
//! Prints connections attempted and failed, the failures split into those an
//! instance had already accepted when it was SIGKILLed (a reset or EOF on a
//! request in flight during a kill: nothing can save those) and every other
//! failure (the target is 0); the activator's RSS and open fds, and PID 1's
//! RSS, at start and end, with samples in between. Loopback only, bounded in
//! time; the sandbox is torn down on exit (its `Drop`).

use anyhow::{bail, Context, Result};
use distribute_tests::{forged_failed_signal, get_hello, port, Activator, KeepAlive, Rng};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Client threads per config.
const CLIENTS: &[(&str, usize)] = &[("web", 3), ("api", 1)];
/// Longest pause of a client between two requests (random below it).
const MAX_GAP: Duration = Duration::from_millis(20);
/// A request that overlaps a kill (from just before the `systemctl kill` to
/// this long after it returned) and ends in a reset or EOF was in flight in
/// the killed instance.
const KILL_WINDOW: Duration = Duration::from_millis(500);
/// Instances exit after this long without connections.
const IDLE: &str = "2s";
/// The same unit is killed again only after this long: more often is a crash
/// loop, and the activator rightly gives up on it after 5 (a failed slot).
const KILL_SPACING: Duration = Duration::from_millis(10_500);
/// The N a reload may pick for `web`.
const WEB_SIZES: &[u32] = &[2, 3, 4, 6, 8];
/// `web` and `api` at start (and again at the end, before the last sample).
const WEB_N: u32 = 4;
const API_N: u32 = 2;
/// Drains end this soon (a shrink with the keep-alive client on a drained
/// instance stops it then).
const DRAIN: &str = "2s";
/// Failures this soon after a socket replacement started are reported as
/// happening during it (a cause to look at; they still count as failures:
/// the new sockets are bound before the old ones drain, so there should be
/// none).
const REPLACE_WINDOW: Duration = Duration::from_secs(5);

fn config(port: u16, n: u32) -> String {
    config_with(port, n, false)
}

fn config_with(port: u16, n: u32, free_bind: bool) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\nDrainTimeoutSec={DRAIN}\nFreeBind={free_bind}\n\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout {IDLE}\nDynamicUser=yes\n"
    )
}

/// One failed request: when it ran, and how it failed.
struct Failure {
    config: &'static str,
    /// CLOCK_MONOTONIC at the failure, as in the journal.
    mono: f64,
    start: Instant,
    end: Instant,
    /// Reset or EOF (what a killed instance leaves its accepted connections with).
    reset_or_eof: bool,
    what: String,
}

/// One disruption that can break requests in flight.
struct Kill {
    config: String,
    from: Instant,
    to: Instant,
}

#[derive(Default)]
struct Tally {
    attempted: u64,
    failures: Vec<Failure>,
    /// Keep-alive requests sent again on a fresh connection because the
    /// server had closed the idle one (HTTP's usual retry; not a failure).
    keep_alive_reconnects: u64,
}

/// Footprint of the activator and PID 1 at one moment.
struct Sample {
    at: Duration,
    pid: u32,
    rss_kb: u64,
    fds: usize,
    pid1_rss_kb: u64,
    web_n: u32,
    running: usize,
}

pub fn run(minutes: u64, seed: u64, restarts: bool) -> Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let web_port = port(78);
    let api_port = port(79);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    println!(
        "== soak: {minutes} min, seed {seed}, web on {web_port} (N={WEB_N}), api on {api_port} (N={API_N}){}",
        if restarts { "" } else { ", no activator restarts" }
    );
    let Some(a) = Activator::start(
        "soak",
        &[
            ("web", &config(web_port, WEB_N)),
            ("api", &config(api_port, API_N)),
        ],
    ) else {
        bail!("the soak needs root (namespaces, cgroups) and systemd/dbus-daemon installed");
    };
    let t0 = Instant::now();

    // Warm up, then the baseline.
    for _ in 0..20 {
        get_hello(addr(web_port), Duration::from_secs(10)).context("warm-up request")?;
        get_hello(addr(api_port), Duration::from_secs(10)).context("warm-up request")?;
    }
    // The baseline in the state the run ends in: every instance exited on idle.
    if !a.wait_no_instances("*@*.service", Duration::from_secs(30)) {
        bail!(
            "instances did not exit on idle: {:?}",
            a.instances("*@*.service")
        );
    }
    let mut samples = vec![sample(&a, t0, WEB_N)?];

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let hard_stop = Instant::now() + Duration::from_secs(minutes * 60 + 120);
    let mut threads = Vec::new();
    let clients: Vec<&'static str> = CLIENTS
        .iter()
        .flat_map(|&(name, n)| std::iter::repeat_n(name, n))
        .collect();
    for (i, name) in clients.into_iter().enumerate() {
        let target = addr(if name == "web" { web_port } else { api_port });
        let (stop, tally) = (stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng::new(seed.wrapping_mul(1000) + i as u64 + 1);
            let mut local = Tally::default();
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                let start = Instant::now();
                local.attempted += 1;
                if let Err(e) = get_hello(target, Duration::from_secs(10)) {
                    local.failures.push(classify(name, start, &e));
                }
                std::thread::sleep(Duration::from_micros(rng.below(MAX_GAP.as_micros() as u64)));
            }
            let mut t = tally.lock().unwrap();
            t.attempted += local.attempted;
            t.failures.extend(local.failures);
        }));
    }

    {
        let (stop, tally) = (stop.clone(), tally.clone());
        let target = addr(web_port);
        threads.push(std::thread::spawn(move || {
            let local = keep_alive_client(target, &stop, hard_stop);
            let mut t = tally.lock().unwrap();
            t.attempted += local.attempted;
            t.failures.extend(local.failures);
            t.keep_alive_reconnects += local.keep_alive_reconnects;
        }));
    }

    let mut rng = Rng::new(seed);
    let mut kills: Vec<Kill> = Vec::new();
    let mut replacements: Vec<Instant> = Vec::new();
    let mut free_bind = false;
    let mut last_kill: std::collections::HashMap<String, Instant> = Default::default();
    let mut counts = [0u32; 7];
    let mut web_n = WEB_N;
    // N in the config file: what a restart of the activator comes back with
    // (a `distributectl scale` lasts until the next reload or restart).
    let mut file_n = WEB_N;
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut next_sample = Instant::now() + Duration::from_secs(15);
    let ctl = format!("{}/distributectl", a.bin);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1000 + rng.below(3000)));
        let mut action = rng.below(13);
        if (8..=9).contains(&action) && !restarts {
            action = 0;
        }
        let at = t0.elapsed();
        let at_mono = mono();
        match action {
            // Kills are the commonest disruption.
            0..=3 => {
                let name = if action == 3 { "api" } else { "web" };
                // Not the same unit again within 10 s: that is a crash loop,
                // which rightly ends in a failed slot (see CRASH_LOOP_RESET).
                let running: Vec<String> = a
                    .instances(&format!("{name}@*"))
                    .into_iter()
                    .filter(|(u, state)| {
                        state == "active"
                            && last_kill
                                .get(u)
                                .is_none_or(|t: &Instant| t.elapsed() > KILL_SPACING)
                    })
                    .map(|(u, _)| u)
                    .collect();
                if running.is_empty() {
                    continue;
                }
                let unit = &running[rng.below(running.len() as u64) as usize];
                let from = Instant::now();
                let r = a.sb.systemctl(&["kill", "-s", "SIGKILL", unit]);
                last_kill.insert(unit.clone(), Instant::now());
                kills.push(Kill {
                    config: name.to_string(),
                    from,
                    to: Instant::now() + KILL_WINDOW,
                });
                counts[0] += 1;
                println!("{at:>8.1?} [{at_mono:.3}]  SIGKILL {unit}{}", err_note(&r));
            }
            4 | 5 => {
                let n = WEB_SIZES[rng.below(WEB_SIZES.len() as u64) as usize];
                a.write_config("web", &config_with(web_port, n, free_bind));
                if let Err(e) = a.try_reload() {
                    stop.store(true, Ordering::Relaxed);
                    let path = save_journal(&a)?;
                    bail!(
                        "{at:.1?}: reload with web Distribute={n} failed: {e:#}\nthe sandbox's whole journal: {}",
                        path.display()
                    );
                }
                web_n = n;
                file_n = n;
                counts[1] += 1;
                println!("{at:>8.1?} [{at_mono:.3}]  reload with web Distribute={n}");
            }
            6 | 7 => {
                let n = WEB_SIZES[rng.below(WEB_SIZES.len() as u64) as usize];
                let r = a.sb.run(&ctl, &["scale", "web", &n.to_string()]);
                if r.is_ok() {
                    web_n = n;
                }
                counts[2] += 1;
                println!(
                    "{at:>8.1?} [{at_mono:.3}]  distributectl scale web {n}{}",
                    err_note(&r)
                );
            }
            10 => {
                // FreeBind= is fixed at bind time: web gets new sockets.
                free_bind = !free_bind;
                a.write_config("web", &config_with(web_port, file_n, free_bind));
                replacements.push(Instant::now());
                if let Err(e) = a.try_reload() {
                    stop.store(true, Ordering::Relaxed);
                    let path = save_journal(&a)?;
                    bail!(
                        "{at:.1?}: reload replacing web's sockets failed: {e:#}\nthe sandbox's whole journal: {}",
                        path.display()
                    );
                }
                web_n = file_n;
                counts[4] += 1;
                println!(
                    "{at:>8.1?} [{at_mono:.3}]  reload with web FreeBind={free_bind} (new sockets)"
                );
            }
            11 => {
                // Two reloads at once: SIGHUP and the D-Bus method.
                let sb_reload = {
                    let ctl = ctl.clone();
                    let mut c = a.sb.command(&ctl);
                    c.arg("reload");
                    std::thread::spawn(move || c.output())
                };
                let r = a.sb.systemctl(&["reload", "systemd-distribute.service"]);
                let other = sb_reload
                    .join()
                    .map_err(|_| anyhow::anyhow!("reload thread panicked"))??;
                counts[5] += 1;
                web_n = file_n;
                println!(
                    "{at:>8.1?} [{at_mono:.3}]  systemctl reload + distributectl reload at once{}{}",
                    err_note(&r),
                    if other.status.success() { String::new() } else {
                        format!(" (distributectl reload failed: {})", String::from_utf8_lossy(&other.stderr))
                    }
                );
            }
            12 => {
                // Forged "web@I failed" from an unprivileged user.
                let unique = a.unique_name();
                let i = rng.below(u64::from(web_n.max(1)));
                let path = format!("/org/freedesktop/systemd1/unit/web_40{i}_2eservice");
                let mut args = vec![
                    "--reuid=65534".to_string(),
                    "--regid=65534".into(),
                    "--clear-groups".into(),
                    "busctl".into(),
                ];
                args.extend(forged_failed_signal(&unique, &path));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let r = a.sb.run("setpriv", &args);
                counts[6] += 1;
                println!(
                    "{at:>8.1?} [{at_mono:.3}]  forged 'web@{i} failed' from nobody{}",
                    err_note(&r)
                );
            }
            _ => {
                let r = a.sb.systemctl(&["restart", "systemd-distribute.service"]);
                web_n = file_n;
                counts[3] += 1;
                println!(
                    "{at:>8.1?} [{at_mono:.3}]  systemctl restart systemd-distribute{}",
                    err_note(&r)
                );
                if r.is_err() {
                    println!("{}", a.sb.journal(None));
                }
            }
        }
        if Instant::now() >= next_sample {
            samples.push(sample(&a, t0, web_n)?);
            next_sample = Instant::now() + Duration::from_secs(15);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    }
    let load_time = t0.elapsed();

    // Back to the starting config, let every instance exit on idle, and take
    // the final footprint in the same state as the baseline.
    a.write_config("web", &config_with(web_port, WEB_N, free_bind));
    a.reload();
    if !a.wait_no_instances("*@*.service", Duration::from_secs(30)) {
        println!(
            "instances still loaded after the load stopped: {:?}",
            a.instances("*@*.service")
        );
    }
    // Draining slots of a shrink close after their grace period.
    std::thread::sleep(Duration::from_secs(1));
    samples.push(sample(&a, t0, WEB_N)?);

    let log = a.log();
    let journal_path = save_journal(&a)?;
    let tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tally still shared"))?
        .into_inner()
        .unwrap();
    let in_kill = |f: &Failure| {
        f.reset_or_eof
            && kills.iter().any(|k| {
                f.config.starts_with(k.config.as_str()) && f.start <= k.to && f.end >= k.from
            })
    };
    // Make-before-break: a failure during a replacement is a bug like any
    // other; said apart only to point at the cause.
    let in_replacement = |f: &Failure| {
        f.config.starts_with("web")
            && replacements
                .iter()
                .any(|&t| f.start >= t && f.start <= t + REPLACE_WINDOW)
    };
    let (killed, rest): (Vec<&Failure>, Vec<&Failure>) =
        tally.failures.iter().partition(|f| in_kill(f));
    let other = rest;
    let replaced = other.iter().filter(|f| in_replacement(f)).count();

    println!("\n== soak summary ({minutes} min of load, seed {seed})");
    println!(
        "disruptions: {} SIGKILLs, {} reloads with a new Distribute=, {} distributectl scale, {} activator restarts, {} socket replacements, {} overlapping reloads, {} forged signals",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6]
    );
    println!(
        "activator log: {} instance starts, {} 'failed' slots, {} errors",
        log.matches(": started (").count(),
        log.matches(": failed: ").count(),
        log.lines()
            .filter(|l| l.contains(" ERROR ") || l.contains("error"))
            .count()
    );
    println!(
        "connections: {} attempted, {} failed: {} in flight in a SIGKILLed instance, {} other (target 0), of which {} within {REPLACE_WINDOW:?} of a socket replacement",
        tally.attempted,
        tally.failures.len(),
        killed.len(),
        other.len(),
        replaced
    );
    println!(
        "keep-alive client: {} requests sent again on a fresh connection after the server closed an idle one",
        tally.keep_alive_reconnects
    );
    let forged_ignored = log
        .matches("not sent by the owner of org.freedesktop.systemd1")
        .count();
    println!("forged signals ignored by the activator: {forged_ignored}");
    for f in other.iter().take(10) {
        println!(
            "  other failure: {} at {:.1?} [{:.6}] after {:?}: {}",
            f.config,
            f.start.duration_since(t0),
            f.mono,
            f.end.duration_since(f.start),
            f.what
        );
        let journal = a.sb.journal(None);
        for l in log_around(&journal, f.mono, 0.5) {
            println!("      {l}");
        }
    }
    println!("\n   time     pid   N  running   VmRSS(kB)  fds   PID1 VmRSS(kB)");
    for s in &samples {
        println!(
            "{:>8.1?}  {:>5} {:>3} {:>7}  {:>10} {:>4}   {:>10}",
            s.at, s.pid, s.web_n, s.running, s.rss_kb, s.fds, s.pid1_rss_kb
        );
    }
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    println!(
        "\nactivator: VmRSS {} kB → {} kB, fds {} → {} (PID {} → {}; same configs, no instance running); PID 1: VmRSS {} kB → {} kB",
        first.rss_kb, last.rss_kb, first.fds, last.fds, first.pid, last.pid,
        first.pid1_rss_kb, last.pid1_rss_kb
    );
    println!(
        "load ran for {load_time:.1?}; the sandbox's whole journal: {}",
        journal_path.display()
    );
    let failed_slots = log.matches(": failed: ").count();
    if failed_slots > 0 {
        bail!("{failed_slots} instance slots were given up (failed)");
    }
    if !other.is_empty() {
        bail!(
            "{} connections failed that no instance kill explains",
            other.len()
        );
    }
    if last.fds > first.fds {
        bail!(
            "the activator holds more fds than at the start ({} > {})",
            last.fds,
            first.fds
        );
    }
    Ok(())
}

/// Keeps the sandbox's whole journal in `target/soak-journal.log`: the
/// sandbox (and its volatile journal) is gone once the soak returns.
fn save_journal(a: &Activator) -> Result<std::path::PathBuf> {
    let path = crate::root().join("target/soak-journal.log");
    std::fs::write(&path, a.sb.journal(None))?;
    Ok(path)
}

fn err_note(r: &Result<String>) -> String {
    match r {
        Ok(_) => String::new(),
        Err(e) => format!(" (failed: {e:#})"),
    }
}

fn classify(config: &'static str, start: Instant, e: &anyhow::Error) -> Failure {
    let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
    let reset_or_eof = match io.map(|e| e.kind()) {
        Some(ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof | ErrorKind::BrokenPipe) => true,
        // EOF before any response: `get_hello` reads to the end, then finds no
        // status line.
        None => e.to_string().contains("unexpected response: \"\""),
        _ => false,
    };
    Failure {
        config,
        mono: mono(),
        start,
        end: Instant::now(),
        reset_or_eof,
        what: format!("{e:#}"),
    }
}

/// One HTTP keep-alive connection to `target`, a request every 20 ms, until
/// `stop`. A request that finds the connection closed by the server before
/// any byte of the answer (an idle connection closed as its instance drained
/// or exited) is sent again once on a fresh connection, as HTTP clients do;
/// only a request that then gets no answer is a failure.
fn keep_alive_client(target: SocketAddr, stop: &AtomicBool, hard_stop: Instant) -> Tally {
    let mut t = Tally::default();
    // Some(ok): answered, 200 or not; None: closed before any answer byte.
    let ask = |c: &mut KeepAlive| -> std::io::Result<Option<bool>> {
        Ok(c.get()?
            .map(|(status, _)| status.starts_with("HTTP/1.1 200")))
    };
    let mut conn: Option<KeepAlive> = None;
    let fresh = |conn: &mut Option<KeepAlive>| -> std::io::Result<Option<bool>> {
        *conn = Some(KeepAlive::connect(target)?);
        ask(conn.as_mut().expect("just connected"))
    };
    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
        let start = Instant::now();
        t.attempted += 1;
        let (mut result, reused) = match conn.as_mut() {
            Some(c) => (ask(c), true),
            None => (fresh(&mut conn), false),
        };
        let closed_idle = reused
            && match &result {
                Ok(None) => true,
                Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                Ok(Some(_)) => false,
            };
        if closed_idle {
            t.keep_alive_reconnects += 1;
            result = fresh(&mut conn);
        }
        let failure = match result {
            Ok(Some(true)) => None,
            Ok(Some(false)) => Some(anyhow::anyhow!("answered, but not 200 OK")),
            Ok(None) => Some(anyhow::Error::new(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "closed before answering",
            ))),
            Err(e) => Some(anyhow::Error::new(e)),
        };
        if let Some(e) = failure {
            conn = None;
            t.failures.push(classify("web-keepalive", start, &e));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    t
}

/// The activator's and PID 1's footprint now.
fn sample(a: &Activator, t0: Instant, web_n: u32) -> Result<Sample> {
    let pid: u32 =
        a.sb.systemctl(&[
            "show",
            "-p",
            "MainPID",
            "--value",
            "systemd-distribute.service",
        ])?
        .trim()
        .parse()
        .context("MainPID")?;
    let status = a.sb.run("cat", &[&format!("/proc/{pid}/status")])?;
    let fds =
        a.sb.run("ls", &[&format!("/proc/{pid}/fd")])?
            .lines()
            .count();
    let pid1 = std::fs::read_to_string(format!("/proc/{}/status", a.sb.pid1()))?;
    let running = a
        .instances("*@*.service")
        .iter()
        .filter(|(_, s)| s == "active")
        .count();
    Ok(Sample {
        at: t0.elapsed(),
        pid,
        rss_kb: vm_rss(&status),
        fds,
        pid1_rss_kb: vm_rss(&pid1),
        web_n,
        running,
    })
}

/// CLOCK_MONOTONIC in seconds: the clock of the journal's `-o short-monotonic`
/// timestamps, so failures can be matched with the activator's log.
fn mono() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Journal lines (`[  123.456789] …`) within `margin` seconds of `at`.
fn log_around(log: &str, at: f64, margin: f64) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(t, _)| t.trim().parse::<f64>().ok())
                .is_some_and(|t| (t - at).abs() <= margin)
        })
        .collect()
}

fn vm_rss(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
