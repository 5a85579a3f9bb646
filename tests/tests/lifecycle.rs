//! Lifecycle under load: reload and live rescale, restart of the activator,
//! daemon-reload of systemd, crashes, stop. Every test counts client-side
//! failures (refused, reset, timeout) and prints them.

use distribute_tests::{
    addr, get_hello, get_hellos, hello_config, port, queue_connections, script_config,
    socket_config, socket_path, wait_until, Activator, Failures, SteadyLoad, ROOT, SERVICE, SOCKET,
};
use std::collections::BTreeSet;
use std::time::Duration;

fn report(what: &str, ok: u64, f: &Failures) {
    println!("{what}: {ok} answered; failed: {f}");
}

#[test]
fn rescale_4_8_2_4_under_load_loses_nothing() {
    let p = port(20);
    let Some(a) = Activator::start("rescale", &[("web", &hello_config(p, 4, "300ms"))]) else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(500));
    for n in [8, 2, 4] {
        a.write_config("web", &hello_config(p, n, "300ms"));
        a.reload();
        println!("reloaded with Distribute={n}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Wait until the 8→2 shrink has fully drained and closed.
    a.assert_logged_within(Duration::from_secs(30), "web: shrink to 2 complete");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    report("rescale 4→8→2→4 under load", ok, &failures);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert!(ok > 100, "the load ran ({ok} requests)");
    a.assert_logged("web: grew from 4 to 8 instances");
    a.assert_logged("web: shrinking from 8 to 2");
    a.assert_logged("web: grew from 2 to 4 instances");
    // Instances 4..7 are gone for good.
    let units = a.instances("web@*");
    assert!(
        units.iter().all(|(u, _)| [
            "web@0.service",
            "web@1.service",
            "web@2.service",
            "web@3.service"
        ]
        .contains(&u.as_str())),
        "{units:?}"
    );
}

#[test]
fn restarting_the_activator_under_load_loses_nothing() {
    let p = port(21);
    let Some(a) = Activator::start("restart", &[("web", &hello_config(p, 2, "200ms"))]) else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        if let Err(e) = a.sb.systemctl(&["restart", SERVICE]) {
            panic!("systemctl restart: {e:#}\n{}", a.sb.journal(None));
        }
        println!("restart {i} done");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, failures) = load.finish();
    report("5 activator restarts under load", ok, &failures);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    // The sockets came back from the fd store.
    a.assert_logged("got 2 sockets back from the fd store");
}

#[test]
fn daemon_reload_of_systemd_under_load_loses_nothing() {
    let p = port(22);
    let Some(a) = Activator::start("daemon-reload", &[("web", &hello_config(p, 2, "200ms"))])
    else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(2));
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(300));
        a.sb.systemctl(&["daemon-reload"]).expect("daemon-reload");
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    report("3 systemd daemon-reloads under load", ok, &failures);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    // Still activating after the reloads.
    assert!(get_hello(addr(p), Duration::from_secs(10)).is_ok());
}

#[test]
fn crash_loop_backs_off_and_fails_while_others_serve() {
    let good = port(23);
    let bad = port(24);
    let crash = script_config(bad, "", "exit 3", "");
    let Some(a) = Activator::start(
        "crash-loop",
        &[("good", &hello_config(good, 2, "30s")), ("crash", &crash)],
    ) else {
        return;
    };
    // Keep connections queued on the crashing socket: every start fails.
    let _queued = queue_connections(bad, 3);
    a.assert_logged_within(Duration::from_secs(20), "crash@0.service: failed:");
    let log = a.log();
    println!("{log}");
    assert!(
        log.contains("next start in 100ms"),
        "backoff starts at 100ms"
    );
    assert!(log.contains("next start in 200ms"), "backoff doubles");
    let failures = log.matches("crash@0.service: started").count();
    assert_eq!(
        failures, 5,
        "5 starts, then failed (FAILURES_BEFORE_FAILED)"
    );
    // No failed transient units pile up.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        a.instances("crash@*").is_empty(),
        "{:?}",
        a.instances("crash@*")
    );
    // The activator is idle (no retry loop) and keeps serving the other config.
    let h = get_hello(addr(good), Duration::from_secs(10)).expect("good config still served");
    println!("good config served by {h:?}");
    a.assert_active();
}

#[test]
fn reload_applies_service_changes_keeps_last_good_and_adds_removes_configs() {
    let p = port(25);
    let q = port(26);
    let Some(a) = Activator::start(
        "reload-semantics",
        &[(
            "web",
            &(hello_config(p, 1, "200ms") + "Environment=GENERATION=1\n"),
        )],
    ) else {
        return;
    };
    get_hello(addr(p), Duration::from_secs(10)).unwrap();
    let env = a.unit_property("web@0.service", "Environment");
    assert!(env.contains("GENERATION=1"), "{env}");
    a.assert_no_instances_within("web@*", Duration::from_secs(10), "web exits on idle");

    // [Service] change: applies to the next instance started.
    a.write_config(
        "web",
        &(hello_config(p, 1, "200ms") + "Environment=GENERATION=2\n"),
    );
    // A new config appears.
    a.write_config("api", &hello_config(q, 1, "200ms"));
    a.reload();
    let mut load = Vec::new();
    let h = get_hello(addr(p), Duration::from_secs(10)).unwrap();
    load.push(h);
    let env = a.unit_property("web@0.service", "Environment");
    assert!(env.contains("GENERATION=2"), "{env}");
    get_hello(addr(q), Duration::from_secs(10)).expect("new config is served after reload");

    // An invalid config keeps the last good one.
    a.write_config("web", "[Socket]\nListenStream=127.0.0.1:1\nDistribute=0\n");
    a.reload();
    a.assert_logged("web.socket:3: Distribute=0");
    get_hello(addr(p), Duration::from_secs(10)).expect("last good config still served");

    // A removed config is drained and closed.
    std::fs::remove_file(a.sb.dir().join("config/api.socket")).unwrap();
    a.reload();
    a.assert_logged_within(
        Duration::from_secs(15),
        "api: removed; all its sockets are closed",
    );
    let refused = std::net::TcpStream::connect_timeout(&addr(q), Duration::from_secs(2));
    assert!(refused.is_err(), "the removed config's port is closed");
}

#[test]
fn eager_activation_starts_all_instances() {
    let p = port(27);
    let text = socket_config(
        p,
        3,
        "Activation=eager\n",
        "@BIN@/distribute-hello --idle-timeout 30s",
        "DynamicUser=yes\n",
    );
    let Some(a) = Activator::start("eager", &[("web", &text)]) else {
        return;
    };
    wait_until(Duration::from_secs(10), || a.instances("web@*").len() >= 3);
    let units = a.instances("web@*");
    println!("eager: {units:?}");
    assert_eq!(
        units.len(),
        3,
        "all instances started without any connection"
    );
}

#[test]
fn stopping_the_activator_stops_instances_and_leaves_no_units() {
    let p = port(28);
    let Some(a) = Activator::start("stop", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    get_hellos(addr(p), 20);
    assert!(!a.instances("web@*").is_empty());
    a.stop();
    a.assert_no_instances_within(
        "web@*",
        Duration::from_secs(15),
        "instances left after stop",
    );
    a.assert_logged("stopping: stopping every instance");
}

#[test]
fn dbus_restart_is_survived_without_losing_connections() {
    let p = port(29);
    let Some(a) = Activator::start("dbus-restart", &[("web", &hello_config(p, 2, "200ms"))]) else {
        return;
    };
    let pid_before = a.main_pid();
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(300));
    a.sb.systemctl(&["restart", "dbus.service"])
        .expect("restarting dbus");
    a.assert_logged_within(Duration::from_secs(20), "reconnected to the system bus");
    // Instances exit on idle and are re-activated through the new connection.
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, failures) = load.finish();
    report("dbus-daemon restart under load", ok, &failures);
    assert_eq!(
        a.main_pid(),
        pid_before,
        "the activator did not crash or restart"
    );
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    a.assert_no_instances_within("web@*", Duration::from_secs(10), "web exits on idle");
    get_hello(addr(p), Duration::from_secs(10)).expect("activation works after the reconnect");
}

#[test]
fn reload_returns_to_the_files_distribute_after_a_runtime_scale() {
    let p = port(30);
    let Some(a) = Activator::start(
        "scale-then-reload",
        &[("web", &hello_config(p, 2, "200ms"))],
    ) else {
        return;
    };
    let web = socket_path("web").to_string();
    let n = || a.bus_property(ROOT, &web, SOCKET, "Distribute");
    assert_eq!(n(), "u 2");
    a.bus_call(ROOT, &web, SOCKET, "SetDistribute", &["u", "3"])
        .ok();
    assert_eq!(n(), "u 3");
    a.reload();
    assert_eq!(n(), "u 2", "reload applies the file's Distribute=2 again");
}

#[test]
fn a_restart_during_a_shrink_finishes_the_shrink() {
    // The kernel moves a reuseport group's last socket into the place of one
    // that closes, and the steering programs address sockets by place: the
    // sockets of a shrink must close highest first even when a restart of the
    // activator interrupts it (before, the new daemon left them to the
    // draining instances, whose exits reordered the group).
    let p = port(31);
    let Some(a) = Activator::start("restart-shrink", &[("web", &hello_config(p, 4, "3s"))]) else {
        return;
    };
    // Bring up all four instances.
    assert!(
        wait_until(Duration::from_secs(10), || {
            get_hellos(addr(p), 8);
            a.instances("web@*").len() == 4
        }),
        "not all 4 instances started: {:?}",
        a.instances("web@*")
    );
    a.write_config("web", &hello_config(p, 1, "3s"));
    a.reload();
    // Instances 1..3 drain (they exit after 3 s idle); restart meanwhile.
    if let Err(e) = a.sb.systemctl(&["restart", SERVICE]) {
        panic!("systemctl restart: {e:#}\n{}", a.sb.journal(None));
    }
    // Only instance 0 gets new connections, during and after the drain.
    let served: BTreeSet<String> = get_hellos(addr(p), 40)
        .into_iter()
        .map(|h| h.instance)
        .collect();
    assert_eq!(served, BTreeSet::from(["0".to_string()]), "{}", a.log());
    a.assert_logged("web: the fd store still holds the sockets of instances 1..3; draining them");
    a.assert_logged_within(Duration::from_secs(15), "web: shrink to 1 complete");
    let served: BTreeSet<String> = get_hellos(addr(p), 40)
        .into_iter()
        .map(|h| h.instance)
        .collect();
    assert_eq!(served, BTreeSet::from(["0".to_string()]), "{}", a.log());
    a.assert_logged("got 4 sockets back from the fd store");
}
