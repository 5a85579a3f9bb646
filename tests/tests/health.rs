//! The health check (`StuckTimeoutSec=`, `StuckRestartSec=`): an instance
//! that stops accepting under steady loopback load on `Distribute=4` is
//! steered around, shown as `stuck`, and its queued connections are served
//! once it continues (SIGCONT, the end of `distribute-hello --stall`) or once
//! the activator restarted it. Ports: `port(120)` to `port(129)`.
//!
//! No speed targets here (they live in `cargo xtask bench --only steering`):
//! the tests print failures per second before and after detection and
//! assert only what must hold on any machine: nothing is reset, requests that
//! start after the detection are not sent to the stuck instance, and every
//! patient connection queued at the stuck instance is answered.

use distribute_tests::{addr, get_hello, monotonic_secs, port, socket_config, Activator, Hello};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `Distribute=4`, every instance started at once, `distribute-hello ARGS`.
fn config(port: u16, socket_extra: &str, args: &str) -> String {
    socket_config(
        port,
        4,
        &format!("Activation=eager\n{socket_extra}"),
        &format!("@BIN@/distribute-hello --idle-timeout 60s {args}"),
        "DynamicUser=yes\n",
    )
}

/// One request of the load: when it started, and how it ended.
#[derive(Debug, Clone)]
struct Attempt {
    started: Instant,
    result: Result<Hello, String>,
    reset: bool,
}

/// Client threads sending one short request after the other (timeout
/// `timeout` each), recording every attempt, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize, timeout: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, attempts) = (stop.clone(), attempts.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let r = get_hello(addr(port), timeout);
                        let reset = r.as_ref().err().is_some_and(|e| {
                            e.chain()
                                .find_map(|c| c.downcast_ref::<std::io::Error>())
                                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
                        });
                        attempts.lock().unwrap().push(Attempt {
                            started,
                            result: r.map_err(|e| format!("{e:#}")),
                            reset,
                        });
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            attempts,
            threads,
        }
    }

    fn finish(self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        Arc::try_unwrap(self.attempts)
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// `n` requests sent at once, each waiting up to 60 s for its answer: some
/// land in the stuck instance's queue and wait there.
fn patient(port: u16, n: usize) -> Vec<std::thread::JoinHandle<anyhow::Result<Hello>>> {
    (0..n)
        .map(|_| std::thread::spawn(move || get_hello(addr(port), Duration::from_secs(60))))
        .collect()
}

/// Failures per second of the attempts that started in `[from, to)`, and
/// which instances answered them.
fn window(attempts: &[Attempt], from: Instant, to: Instant) -> (usize, usize, f64, Vec<String>) {
    let w: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started >= from && a.started < to)
        .collect();
    let failed = w.iter().filter(|a| a.result.is_err()).count();
    let secs = to.duration_since(from).as_secs_f64().max(1e-3);
    let mut served: Vec<String> = w
        .iter()
        .filter_map(|a| a.result.as_ref().ok().map(|h| h.instance.clone()))
        .collect();
    served.sort();
    served.dedup();
    (w.len(), failed, failed as f64 / secs, served)
}

fn main_pid(a: &Activator, unit: &str) -> u32 {
    a.unit_property(unit, "MainPID").parse().unwrap_or(0)
}

/// Waits until all four instances answered once.
fn warm_up(a: &Activator, p: u16) {
    assert!(
        a.wait_active("web@*", Duration::from_secs(20)) && a.instances("web@*").len() == 4,
        "4 instances run:\n{}",
        a.log()
    );
    for i in 0..4 {
        assert!(
            distribute_tests::wait_until(Duration::from_secs(10), || main_pid(
                a,
                &format!("web@{i}.service")
            ) != 0),
            "web@{i} has a main PID"
        );
    }
    let _ = distribute_tests::get_hellos(addr(p), 8);
}

#[test]
fn a_stopped_instance_is_steered_around_and_serves_its_queue_after_sigcont() {
    let p = port(120);
    let Some(a) = Activator::start("health-sigstop", &[("web", &config(p, "", ""))]) else {
        return;
    };
    warm_up(&a, p);
    let load = Load::start(p, 6, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(800));
    let pid = main_pid(&a, "web@2.service");
    let stopped = Instant::now();
    a.sb.run("kill", &["-STOP", &pid.to_string()])
        .expect("SIGSTOP");
    println!("[{:.2}] SIGSTOP web@2 (pid {pid})", monotonic_secs());
    // Connections that will wait in web@2's queue until it continues.
    let waiting = patient(p, 40);
    assert!(
        a.wait_log(Duration::from_secs(10), |l| l
            .contains("web@2.service: not accepting")),
        "the activator notices:\n{}",
        a.log()
    );
    let detected = Instant::now();
    println!(
        "[{:.2}] detected after {:?}",
        monotonic_secs(),
        detected - stopped
    );
    // The operator sees it: state, since when, why.
    let status = a.ctl(&["status", "web"]).ok().output();
    println!("{status}");
    assert!(status.contains("stuck"), "{status}");
    assert!(status.contains("since "), "{status}");
    assert!(status.contains("has not drained"), "{status}");
    let json = a.ctl(&["--json=short", "status", "web"]).ok().output();
    assert!(json.contains("\"state\":\"stuck\""), "{json}");
    let stuck = a.socket_property(None, "web", "Stuck");
    println!("Stuck: {stuck}");
    assert!(stuck.starts_with("a(uts) 1 2 "), "{stuck}");
    std::thread::sleep(Duration::from_secs(3));
    let attempts = load.finish();
    let end = Instant::now();
    a.sb.run("kill", &["-CONT", &pid.to_string()])
        .expect("SIGCONT");
    println!("[{:.2}] SIGCONT web@2", monotonic_secs());
    let start = attempts.iter().map(|a| a.started).min().unwrap();
    let grace = detected + Duration::from_millis(200);
    let before = window(&attempts, start, stopped);
    let during = window(&attempts, stopped, detected);
    let after = window(&attempts, grace, end);
    for (what, (n, failed, per_sec, served)) in [
        ("before SIGSTOP", &before),
        ("SIGSTOP..detection", &during),
        ("detection+200ms..end", &after),
    ] {
        println!("{what}: {n} requests, {failed} failed ({per_sec:.1}/s), served by {served:?}");
    }
    for x in attempts.iter().filter(|x| x.result.is_err()) {
        println!(
            "  failed at +{:?}: {}",
            x.started - start,
            x.result.as_ref().unwrap_err()
        );
    }
    assert_eq!(attempts.iter().filter(|x| x.reset).count(), 0, "0 reset");
    assert_eq!(
        after.1, 0,
        "no request started after the detection went to the stuck instance"
    );
    assert!(
        !after.3.contains(&"2".to_string()),
        "web@2 got nothing new while stuck: {:?}",
        after.3
    );
    // Its queue is served once it continues, and it gets its share back.
    let answers: Vec<Hello> = waiting
        .into_iter()
        .map(|t| t.join().unwrap().expect("a queued connection is answered"))
        .collect();
    let by_2 = answers.iter().filter(|h| h.instance == "2").count();
    println!(
        "patient requests: {} answered, {by_2} by web@2",
        answers.len()
    );
    assert!(by_2 > 0, "some waited in web@2's queue: {answers:?}");
    a.assert_logged_within(Duration::from_secs(10), "web@2.service: accepting again");
    let status = a.ctl(&["--json=short", "status", "web"]).ok().output();
    assert!(!status.contains("\"state\":\"stuck\""), "{status}");
    let back = distribute_tests::get_hellos(addr(p), 40);
    assert!(
        back.iter().any(|h| h.instance == "2"),
        "web@2 gets new connections again"
    );
    // Once per episode.
    assert_eq!(a.log().matches("web@2.service: not accepting").count(), 1);
    // Four instances running, nothing queued: the check is dormant (epoll on
    // the sockets), the activator is not woken.
    std::thread::sleep(Duration::from_millis(500));
    let pid = a.main_pid();
    let runs0 = scheduled(&a, pid);
    std::thread::sleep(Duration::from_secs(2));
    let runs = scheduled(&a, pid) - runs0;
    println!("activator scheduled {runs} times in 2 s with 4 idle instances");
    assert!(runs <= 2, "{runs} wakeups with idle instances");
    a.assert_active();
}

/// How often the threads of process `pid` in the sandbox were scheduled
/// (/proc/PID/task/*/schedstat).
fn scheduled(a: &Activator, pid: u32) -> u64 {
    let out =
        a.sb.run(
            "/bin/sh",
            &["-c", &format!("cat /proc/{pid}/task/*/schedstat")],
        )
        .expect("reading schedstat");
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_stalled_instance_is_restarted_with_stuck_restart_sec_and_the_new_one_serves_its_queue() {
    let p = port(121);
    // web@1 hangs for good 1.5 s after it started, at its next connection.
    let Some(a) = Activator::start(
        "health-restart",
        &[(
            "web",
            &config(p, "StuckRestartSec=2s\n", "--stall 1@1500ms"),
        )],
    ) else {
        return;
    };
    warm_up(&a, p);
    let old = main_pid(&a, "web@1.service");
    let load = Load::start(p, 4, Duration::from_secs(30));
    assert!(
        a.wait_log(Duration::from_secs(15), |l| l
            .contains("web@1.service: not accepting")),
        "the activator notices:\n{}",
        a.log()
    );
    let waiting = patient(p, 8);
    a.assert_logged_within(
        Duration::from_secs(15),
        "web@1.service: stuck for 2.0s (StuckRestartSec=2.0s); killing it",
    );
    let attempts = load.finish();
    let answers: Vec<Hello> = waiting
        .into_iter()
        .map(|t| t.join().unwrap().expect("answered"))
        .collect();
    let served_by_1: Vec<u32> = attempts
        .iter()
        .filter_map(|x| x.result.as_ref().ok())
        .chain(answers.iter())
        .filter(|h| h.instance == "1")
        .map(|h| h.pid)
        .collect();
    let failed = attempts.iter().filter(|x| x.result.is_err()).count();
    println!(
        "{} requests, {failed} failed, {} reset; web@1 pids that answered: {:?} (old {old})",
        attempts.len(),
        attempts.iter().filter(|x| x.reset).count(),
        {
            let mut v = served_by_1.clone();
            v.sort();
            v.dedup();
            v
        }
    );
    // The one connection web@1 had accepted when it hung dies with it (a
    // kill cannot save what the process holds); nothing queued is reset.
    let reset = attempts.iter().filter(|x| x.reset).count();
    assert!(reset <= 1, "{reset} reset");
    // Every other request that waited in web@1's queue (30 s timeouts) was
    // answered, by the new instance.
    assert_eq!(
        failed,
        reset,
        "{:?}",
        attempts.iter().find(|x| x.result.is_err() && !x.reset)
    );
    assert!(
        served_by_1.iter().any(|&pid| pid != old),
        "a new web@1 served the queue: {served_by_1:?}\n{}",
        a.log()
    );
    a.assert_active();
}

#[test]
fn a_stall_that_ends_by_itself_gives_the_instance_its_share_back_under_cpu_steering() {
    let p = port(122);
    // web@1 stops for 2 s, 1 s after it started, at its next connection.
    let Some(a) = Activator::start(
        "health-stall-cpu",
        &[("web", &config(p, "Steering=cpu\n", "--stall 1@1s+2s"))],
    ) else {
        return;
    };
    warm_up(&a, p);
    // Clients on both CPUs: under Steering=cpu those on CPU 1 go to web@1
    // (on a 2-CPU machine; with more CPUs to socket c % 4). While it stalls
    // they go elsewhere; what waited in its queue is served when it resumes.
    let load = Load::start(p, 6, Duration::from_secs(30));
    a.assert_logged_within(Duration::from_secs(15), "web@1.service: not accepting");
    a.assert_logged_within(Duration::from_secs(15), "web@1.service: accepting again");
    std::thread::sleep(Duration::from_millis(500));
    let attempts = load.finish();
    let failed = attempts.iter().filter(|x| x.result.is_err()).count();
    println!(
        "{} requests, {failed} failed\n{}",
        attempts.len(),
        a.log()
            .lines()
            .filter(|l| l.contains("stuck") || l.contains("accepting"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(attempts.iter().filter(|x| x.reset).count(), 0, "0 reset");
    assert_eq!(
        failed,
        0,
        "{:?}",
        attempts.iter().find(|x| x.result.is_err())
    );
    a.assert_active();
}
