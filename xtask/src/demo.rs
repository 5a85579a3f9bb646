//! `cargo xtask demo`: the main job, end to end, with real connections.

use anyhow::{bail, Context, Result};
use distribute_tests::{get_hello, tally, Activator, Failures};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 400;
const CLIENT_THREADS: usize = 8;

pub fn run() -> Result<()> {
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let config = std::fs::read_to_string(crate::root().join("examples/http.socket"))?
        .replace("/usr/lib/systemd-distribute", "@BIN@");
    let port: u16 = config
        .lines()
        .find_map(|l| l.strip_prefix("ListenStream="))
        .and_then(|v| v.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .context("examples/http.socket has no ListenStream=PORT")?;
    let target = SocketAddr::from(([127, 0, 0, 1], port));

    println!("== booting a private systemd and starting systemd-distribute (examples/http.socket)");
    let t0 = Instant::now();
    let Some(a) = Activator::start("demo", &[("http", &config)]) else {
        bail!("the demo needs root (namespaces, cgroups) and systemd/dbus-daemon installed");
    };
    println!("   sandbox + activator READY in {:?}", t0.elapsed());
    println!(
        "   {}",
        a.sb.systemctl(&["show", "-p", "StatusText", "systemd-distribute.service"])?
            .trim()
    );
    println!(
        "   instances loaded before any connection: {}",
        a.instances("http@*").len()
    );

    println!("\n== {CONNECTIONS} connections from {CLIENT_THREADS} client threads to {target}");
    let hellos = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Failures::default()));
    let t1 = Instant::now();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            let (hellos, failures) = (hellos.clone(), failures.clone());
            std::thread::spawn(move || {
                for _ in 0..CONNECTIONS / CLIENT_THREADS {
                    match get_hello(target, Duration::from_secs(10)) {
                        Ok(h) => hellos.lock().unwrap().push(h),
                        Err(e) => failures.lock().unwrap().count(&e),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
    }
    let elapsed = t1.elapsed();
    let hellos = hellos.lock().unwrap().clone();
    let failures = failures.lock().unwrap().clone();
    println!(
        "   {} answered, {} failed ({failures:?}) in {elapsed:?}",
        hellos.len(),
        failures.total()
    );
    println!("   instance  PID      connections");
    for (instance, pids) in tally(&hellos) {
        for (pid, n) in pids {
            println!("   {instance:<9} {pid:<8} {n}");
        }
    }
    println!("\n== units now loaded");
    for (unit, state) in a.instances("http@*") {
        println!("   {unit:<20} {state}");
    }

    println!("\n== waiting for the instances to exit on idle (--idle-timeout 5s)");
    let t2 = Instant::now();
    if !a.wait_no_instances("http@*", Duration::from_secs(30)) {
        bail!(
            "instances did not exit on idle: {:?}",
            a.instances("http@*")
        );
    }
    println!("   all instances exited and were unloaded after {:?}; the activator still holds all sockets", t2.elapsed());

    println!("\n== one more connection: re-activation");
    let t3 = Instant::now();
    let h = get_hello(target, Duration::from_secs(10))?;
    println!(
        "   served by instance {} (new PID {}) in {:?}, including the instance's start",
        h.instance,
        h.pid,
        t3.elapsed()
    );
    println!("\n== activator log (tail)");
    let log = a.log();
    for line in log
        .lines()
        .rev()
        .take(12)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!("   {line}");
    }
    if failures.total() > 0 {
        bail!("{} connections failed", failures.total());
    }
    println!("\n== done; tearing down the sandbox");
    Ok(())
}
