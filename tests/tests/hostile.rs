//! Hostile instances and a hostile environment, against the real sandboxed
//! systemd: an instance that crashes at start, one that never accepts, one that
//! ignores SIGTERM; too few file descriptors for N; a template unit file on
//! disk; systemd re-executing itself under load. Each test checks that the
//! activator keeps serving its other configs and that the reason is visible
//! (activator log, systemd's journal, or `distributectl status`).
//!
//! Instances with odd behaviour are small `/bin/sh -c` scripts (no `$` in them:
//! systemd would expand it). Ports: `port(60)` to `port(69)`.

use distribute_tests::{
    addr, get_hello, get_hellos, hello_config, port, queue_connections, script_config, Activator,
    SteadyLoad, SERVICE,
};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn served(p: u16, what: &str, a: &Activator) {
    match get_hello(addr(p), Duration::from_secs(10)) {
        Ok(h) => println!("{what}: served by {h:?}"),
        Err(e) => panic!("{what}: {e:#}\n--- activator log ---\n{}", a.log()),
    }
}

/// utime + stime of a process in the sandbox, in clock ticks.
fn cpu_ticks(a: &Activator, pid: u32) -> u64 {
    let stat =
        a.sb.run("cat", &[&format!("/proc/{pid}/stat")])
            .expect("reading /proc/PID/stat");
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("stat has (comm)") + 1..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap_or(0))
        .collect();
    f[10] + f[11]
}

/// (CPU time in ns, times scheduled) of all threads of a process in the
/// sandbox, from /proc/PID/task/*/schedstat: exact, unlike the tick-sampled
/// utime and stime.
fn sched(a: &Activator, pid: u32) -> (u64, u64) {
    let out =
        a.sb.run(
            "/bin/sh",
            &["-c", &format!("cat /proc/{pid}/task/*/schedstat")],
        )
        .expect("reading schedstat");
    out.lines().fold((0, 0), |(ns, runs), l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        (ns + f[0], runs + f[2])
    })
}

#[test]
fn instance_crashing_at_start_fails_its_slot_and_the_activator_sleeps() {
    let good = port(60);
    let bad = port(61);
    // Killed by a signal right at start, every time.
    let crash = script_config(bad, "", "kill -KILL 0", "");
    let Some(a) = Activator::start(
        "hostile-crash",
        // One instance: once it runs, nothing about `good` involves the activator.
        // Without the health check (StuckTimeoutSec=0): with it, each
        // request to `good` after a quiet spell wakes the activator to look
        // at the queue (tests/tests/health.rs); here only the failed slot counts.
        &[
            (
                "good",
                &hello_config(good, 1, "30s")
                    .replace("Distribute=1\n", "Distribute=1\nStuckTimeoutSec=0\n"),
            ),
            ("crash", &crash),
        ],
    ) else {
        return;
    };
    served(good, "good config before", &a);
    // Connections that wait in the crashing slot's queue: every start fails.
    let queued = queue_connections(bad, 3);
    a.assert_logged_within(Duration::from_secs(20), "crash@0.service: failed:");
    // The log says how to recover.
    a.assert_logged("giving up until `distributectl start crash@0`");
    // systemd's journal has the instance's own reason.
    let journal = a.sb.journal(None);
    assert!(
        journal.contains("status=9/KILL"),
        "systemd's journal names the signal:\n{journal}"
    );
    let status = a.ctl(&["status", "crash"]).output();
    assert!(status.contains("failed"), "{status}");

    // While the slot is failed (connections still queued on it) and the other
    // config serves, the activator uses no CPU: no retry loop, no polling.
    let pid = a.main_pid();
    let ticks0 = cpu_ticks(&a, pid);
    let (ns0, runs0) = sched(&a, pid);
    let t = Instant::now();
    for _ in 0..10 {
        get_hello(addr(good), Duration::from_secs(10)).expect("good config served");
        std::thread::sleep(Duration::from_millis(500));
    }
    let ticks = cpu_ticks(&a, pid) - ticks0;
    let (ns1, runs1) = sched(&a, pid);
    let cpu = Duration::from_nanos(ns1 - ns0);
    println!(
        "activator while crash@0 is failed, over {:?}: utime+stime {ticks} ticks (1/100 s), \
         {cpu:?} on CPU, scheduled {} times",
        t.elapsed(),
        runs1 - runs0
    );
    // Measured: 0 ns, 0 wakeups. A retry, poll or timer loop would show.
    assert!(
        cpu < Duration::from_millis(5) && ticks <= 1,
        "the activator used {cpu:?} ({ticks} ticks) of CPU in {:?} while idle",
        t.elapsed()
    );
    assert!(runs1 - runs0 <= 5, "{} wakeups while idle", runs1 - runs0);
    // No start after the slot failed; the connections still wait in its queue.
    assert_eq!(
        a.log().matches("crash@0.service: started (").count(),
        5,
        "no start after the slot failed:\n{}",
        a.log()
    );
    let json = a.ctl(&["--json=short", "status", "crash"]).output();
    assert!(
        json.contains(&format!("\"queue_depth\":{}", queued.len())),
        "{json}"
    );
    // `distributectl start` clears the failed state (and it fails again here).
    a.ctl(&["start", "crash@0"]).ok();
    assert!(a.wait_log(Duration::from_secs(20), |l| l
        .matches("crash@0.service: failed:")
        .count()
        >= 2));
    served(good, "good config after", &a);
    drop(queued);
}

#[test]
fn instance_that_never_accepts_fills_its_queue_while_others_serve() {
    let good = port(62);
    let stuck = port(63);
    const BACKLOG: usize = 4;
    // Holds its socket (fd 3) and never accepts.
    let stuck_cfg = script_config(
        stuck,
        &format!("Backlog={BACKLOG}\n"),
        "exec /bin/sleep 600",
        "",
    );
    let Some(a) = Activator::start(
        "hostile-never-accepts",
        &[
            ("good", &hello_config(good, 2, "30s")),
            ("stuck", &stuck_cfg),
        ],
    ) else {
        return;
    };
    // The first connection starts the instance; then fill its queue. The
    // kernel completes the handshake for backlog+1 connections; after that it
    // drops SYNs, so connects time out.
    let mut established = Vec::new();
    let mut timed_out = 0;
    for _ in 0..(BACKLOG + 6) {
        match TcpStream::connect_timeout(&addr(stuck), Duration::from_millis(700)) {
            Ok(s) => established.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => timed_out += 1,
            Err(e) => panic!("connect to the stuck config: {e}"),
        }
    }
    println!(
        "stuck config: {} connections queued, {timed_out} timed out",
        established.len()
    );
    assert!(
        timed_out > 0,
        "the queue of a never-accepting instance fills"
    );
    assert!(established.len() <= BACKLOG + 1);
    assert!(
        a.wait_active("stuck@*", Duration::from_secs(10)),
        "the stuck instance runs"
    );
    // The other config is unaffected.
    get_hellos(addr(good), 20);
    // The operator sees why: the instance runs, its accept queue is full,
    // and the health check calls it stuck (with one instance there is no
    // other to steer to).
    assert!(
        distribute_tests::wait_until(Duration::from_secs(10), || a
            .ctl(&["--json=short", "status", "stuck"])
            .ok()
            .output()
            .contains("\"state\":\"stuck\"")),
        "{}",
        a.log()
    );
    let json = a.ctl(&["--json=short", "status", "stuck"]).ok().output();
    assert!(
        json.contains("full, new connections dropped") || json.contains("has not drained"),
        "{json}"
    );
    assert!(
        json.contains(&format!("\"queue_depth\":{}", established.len())),
        "status shows the full queue: {json}"
    );
    a.assert_active();
}

#[test]
fn instance_ignoring_sigterm_is_killed_by_its_stop_timeout() {
    let good = port(64);
    let stubborn = port(65);
    let cfg = script_config(
        stubborn,
        "",
        "trap \"\" TERM; echo ignoring SIGTERM; exec /bin/sleep 600",
        "TimeoutStopSec=2s\n",
    );
    let Some(a) = Activator::start(
        "hostile-sigterm",
        &[("good", &hello_config(good, 2, "30s")), ("stubborn", &cfg)],
    ) else {
        return;
    };
    // Start it (the connection stays queued: sleep never accepts).
    let _c = TcpStream::connect(addr(stubborn)).expect("connect");
    assert!(
        a.wait_active("stubborn@*", Duration::from_secs(10)),
        "stubborn@0 runs:\n{}",
        a.log()
    );
    // Only once the shell has set SIGTERM aside (a stop before that simply
    // ends it: seen on 257, where the stop came 30 ms after the start).
    assert!(
        a.wait_log(Duration::from_secs(10), |_| a
            .sb
            .journal(Some("stubborn@0.service"))
            .contains("ignoring SIGTERM")),
        "stubborn@0 never got to its trap:\n{}",
        a.sb.journal(Some("stubborn@0.service"))
    );
    // An operator stop: SIGTERM is ignored, SIGKILL after 2 s; meanwhile the
    // other config is served as usual.
    let t = Instant::now();
    a.ctl(&["stop", "stubborn@0"]).ok();
    get_hellos(addr(good), 10);
    assert!(
        a.wait_log(Duration::from_secs(15), |_| {
            a.sb.journal(Some("stubborn@0.service"))
                .contains("State 'stop-sigterm' timed out. Killing.")
        }),
        "systemd's stop timeout killed it:\n{}",
        a.sb.journal(None)
    );
    println!(
        "stubborn@0 killed by its stop timeout after {:?}",
        t.elapsed()
    );

    // `systemctl stop systemd-distribute` ends with no instance left, the
    // stubborn one included (it was started again for the queued connection).
    assert!(a.wait_active("stubborn@*", Duration::from_secs(10)));
    get_hello(addr(good), Duration::from_secs(10)).expect("good config served");
    let t = Instant::now();
    a.stop();
    a.assert_no_instances_within(
        "*@*.service",
        Duration::from_secs(15),
        "instances left after stop",
    );
    let took = t.elapsed();
    println!("no units left {took:?} after systemctl stop");
    assert!(
        took >= Duration::from_millis(1500),
        "the stubborn instance needed its stop timeout ({took:?})"
    );
    assert_eq!(
        a.sb.journal(Some("stubborn@0.service"))
            .matches("State 'stop-sigterm' timed out. Killing.")
            .count(),
        2,
        "{}",
        a.sb.journal(Some("stubborn@0.service"))
    );
}

#[test]
fn too_few_fds_for_n_is_a_clear_error_and_other_configs_are_served() {
    let good = port(66);
    let big = port(67);
    let Some(a) = Activator::start(
        "hostile-nofile",
        &[("good", &hello_config(good, 2, "300ms"))],
    ) else {
        return;
    };
    // Restart the activator with 64 fds at most.
    let dropin = a.sb.unit_dir().join(format!("{SERVICE}.d"));
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("50-nofile.conf"), "[Service]\nLimitNOFILE=64\n").unwrap();
    a.sb.systemctl(&["daemon-reload"]).unwrap();
    a.sb.systemctl(&["restart", SERVICE]).unwrap();
    let pid = a.main_pid();
    let limits = a.sb.run("cat", &[&format!("/proc/{pid}/limits")]).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    println!("{nofile}");
    assert!(nofile.split_whitespace().any(|w| w == "64"), "{nofile}");
    served(good, "good config with LimitNOFILE=64", &a);

    // 200 sockets cannot fit in 64 fds.
    a.write_config("big", &hello_config(big, 200, "30s"));
    a.reload();
    let log = a.log();
    println!("{log}");
    let want =
        format!("big: ListenStream=127.0.0.1:{big} (127.0.0.1:{big}): socket: Too many open files");
    assert!(log.contains(&want), "log lacks {want:?}");
    assert!(
        log.contains("raise LimitNOFILE= of systemd-distribute.service or lower Distribute="),
        "the error says what to do"
    );
    assert!(log.contains("this config is not served, the others are"));
    let status = a.ctl(&["status", "big"]).output();
    assert!(status.contains("Too many open files"), "{status}");

    // Nothing of the failed config stays bound: not in the activator, not in
    // systemd's fd store.
    let refused = TcpStream::connect_timeout(&addr(big), Duration::from_secs(2));
    assert!(
        refused.is_err(),
        "the failed config's port must be closed, but a connection was accepted into a queue"
    );
    assert_eq!(
        a.unit_property(SERVICE, "NFileDescriptorStore"),
        "2",
        "fd store holds only good's sockets"
    );

    // The other config still activates: its instances exit on idle and start
    // again, which needs fds too (the hand-off socketpair).
    a.assert_no_instances_within("good@*", Duration::from_secs(15), "good exits on idle");
    get_hellos(addr(good), 10);
    a.assert_active();
}

#[test]
fn a_unit_file_and_a_service_section_is_refused_and_the_others_serve() {
    // systemd refuses StartTransientUnit("tpl@0.service") while a unit file
    // tpl@.service exists ("was already loaded or has a fragment file"), so a
    // config with [Service] for that template is refused (template mode is for
    // configs without [Service]); drop-ins tpl@.service.d/*.conf alone are fine
    // and apply to the transient instances.
    let good = port(68);
    let tpl = port(69);
    let Some(a) = Activator::start(
        "hostile-template",
        &[("good", &hello_config(good, 1, "30s"))],
    ) else {
        return;
    };
    a.sb.install_unit(
        "tpl@.service",
        "[Service]\nExecStart=/bin/false\nEnvironment=FROM_TEMPLATE=1\n",
    )
    .unwrap();
    let dropin = a.sb.unit_dir().join("tpl@.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("50-env.conf"),
        "[Service]\nEnvironment=FROM_DROPIN=1\n",
    )
    .unwrap();
    a.sb.systemctl(&["daemon-reload"]).unwrap();

    a.write_config("tpl", &hello_config(tpl, 1, "30s"));
    a.reload();
    // Both the config's [Service] and the unit file define the instances: the
    // config is refused with both files named; the others keep serving.
    let status = a.ctl(&["status", "tpl"]).output();
    assert!(
        status.contains(
            "a [Service] section, but /run/distribute-harness/units/tpl@.service exists too"
        ),
        "{status}"
    );
    served(good, "good config while tpl is refused", &a);

    // Without the unit file, the instance starts and the drop-in applies.
    std::fs::remove_file(a.sb.unit_dir().join("tpl@.service")).unwrap();
    a.sb.systemctl(&["daemon-reload"]).unwrap();
    a.reload();
    served(tpl, "tpl config after removing the unit file", &a);
    let env = a.unit_property("tpl@0.service", "Environment");
    println!("tpl@0.service Environment={env}");
    assert!(env.contains("FROM_DROPIN=1"), "drop-ins apply: {env}");
    assert!(!env.contains("FROM_TEMPLATE"), "{env}");
}

#[test]
fn systemd_daemon_reexec_under_load_loses_nothing() {
    let web = port(70);
    let other = port(71);
    let Some(a) = Activator::start(
        "hostile-reexec",
        &[
            ("web", &hello_config(web, 2, "200ms")),
            ("other", &hello_config(other, 1, "200ms")),
        ],
    ) else {
        return;
    };
    let pid_before = a.main_pid();
    let load = SteadyLoad::start(addr(web), 2, Duration::from_millis(2));
    // Slower clients on the other config: its instance exits on idle between
    // bursts, so activations and UnitRemoved signals cross the re-execs.
    let slow = SteadyLoad::start(addr(other), 1, Duration::from_millis(250));
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(700));
        let t = Instant::now();
        a.sb.systemctl(&["daemon-reexec"]).expect("daemon-reexec");
        println!("daemon-reexec {i} took {:?}", t.elapsed());
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, f) = load.finish();
    let (ok_slow, f_slow) = slow.finish();
    println!(
        "3 daemon-reexecs under load: web {ok} answered, failed {f:?}; other {ok_slow} answered, failed {f_slow:?}"
    );
    assert_eq!(
        f.total() + f_slow.total(),
        0,
        "{f:?} {f_slow:?}\n{}",
        a.log()
    );
    assert!(ok > 100 && ok_slow > 5);
    assert_eq!(a.main_pid(), pid_before, "the activator did not restart");
    // Activation still works: instances exit on idle and come back.
    a.assert_no_instances_within(
        "*@*.service",
        Duration::from_secs(15),
        "instances exit on idle after the re-execs",
    );
    served(web, "web after re-exec", &a);
    served(other, "other after re-exec", &a);
    let log = a.log();
    assert!(!log.contains(": failed: "), "no slot failed:\n{log}");
}

#[test]
fn reload_starts_failed_instances_again() {
    let good = port(72);
    let flaky = port(73);
    let broken = script_config(flaky, "", "kill -KILL 0", "");
    let Some(a) = Activator::start(
        "hostile-reload-failed",
        &[("good", &hello_config(good, 1, "30s")), ("flaky", &broken)],
    ) else {
        return;
    };
    let _queued = TcpStream::connect(addr(flaky)).expect("connect");
    a.assert_logged_within(Duration::from_secs(20), "flaky@0.service: failed:");
    // A reload is the operator's "try again", even with the config unchanged.
    a.reload();
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l
            .matches("flaky@0.service: failed:")
            .count()
            == 2),
        "a reload retries a failed instance:\n{}",
        a.log()
    );
    a.assert_logged("flaky: reload: starting 1 failed instance(s) again");
    // Fixed config (same sockets, new [Service]): the reload starts it and the
    // connections that waited in its queue are served.
    a.write_config("flaky", &hello_config(flaky, 1, "30s"));
    a.reload();
    served(flaky, "flaky config after the fix and a reload", &a);
    served(good, "good config", &a);
}

#[test]
fn instance_killed_every_ten_seconds_under_load_is_never_given_up() {
    // A failure after >= 10 s of service starts a new row: occasional deaths
    // (OOM kills, crashes under load) never add up to a failed slot, which
    // would leave its share of connections waiting for an operator.
    let p = port(74);
    let Some(a) = Activator::start(
        "hostile-periodic-kill",
        &[("web", &hello_config(p, 1, "30s"))],
    ) else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 1, Duration::from_millis(5));
    let kills = 5;
    for i in 0..kills {
        std::thread::sleep(Duration::from_millis(10_600));
        a.sb.systemctl(&["kill", "-s", "SIGKILL", "web@0.service"])
            .expect("systemctl kill");
        println!("SIGKILL {i} sent");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (ok, f) = load.finish();
    println!("{kills} SIGKILLs 10.6 s apart: {ok} answered, failed {f:?}");
    let log = a.log();
    assert!(!log.contains("web@0.service: failed:"), "{log}");
    assert_eq!(
        log.matches("web@0.service: instance failed after 10.")
            .count(),
        kills
    );
    assert!(log.contains("instance failed after 10.") && log.contains("next start in 100ms"));
    assert!(
        !log.contains("next start in 200ms"),
        "every kill starts a new row:\n{log}"
    );
    // Only requests in flight in the killed instance may fail; none waits.
    assert_eq!(f.timeout, 0, "{f:?}");
    assert!(f.total() <= kills as u64, "{f:?}");
    assert!(ok > 1000);
    served(p, "web after the kills", &a);
}
