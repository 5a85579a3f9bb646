//! Lifecycle under load: reload and live rescale, restart of the activator,
//! daemon-reload of systemd, crashes, stop. Every test counts client-side
//! failures (refused, reset, timeout) and prints them.

use distribute_tests::{get_hello, port, Activator, SteadyLoad};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn config(port: u16, n: u32, idle: &str, extra_service: &str) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\n\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout {idle}\nDynamicUser=yes\n{extra_service}"
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn report(what: &str, ok: u64, f: &distribute_tests::Failures) {
    println!(
        "{what}: {ok} answered; failed: refused={} reset={} timeout={} other={}",
        f.refused, f.reset, f.timeout, f.other
    );
}

#[test]
fn rescale_4_8_2_4_under_load_loses_nothing() {
    let p = port(20);
    let Some(a) = Activator::start("rescale", &[("web", &config(p, 4, "300ms", ""))]) else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(500));
    for n in [8, 2, 4] {
        a.write_config("web", &config(p, n, "300ms", ""));
        a.reload();
        println!("reloaded with Distribute={n}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Wait until the 8→2 shrink has fully drained and closed.
    assert!(
        a.wait_log(Duration::from_secs(30), |l| l
            .contains("web: shrink to 2 complete")),
        "shrink did not complete:\n{}",
        a.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    report("rescale 4→8→2→4 under load", ok, &failures);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert!(ok > 100, "the load ran ({ok} requests)");
    let log = a.log();
    assert!(log.contains("web: grew from 4 to 8 instances"), "{log}");
    assert!(log.contains("web: shrinking from 8 to 2"), "{log}");
    assert!(log.contains("web: grew from 2 to 4 instances"), "{log}");
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
    let Some(a) = Activator::start("restart", &[("web", &config(p, 2, "200ms", ""))]) else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..5 {
        if let Err(e) = a.sb.systemctl(&["restart", "systemd-distribute.service"]) {
            panic!("systemctl restart: {e:#}\n{}", a.sb.journal(None));
        }
        println!("restart {i} done");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, failures) = load.finish();
    report("5 activator restarts under load", ok, &failures);
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert!(
        a.log().contains("got 2 sockets back from the fd store"),
        "sockets came back from the fd store:\n{}",
        a.log()
    );
}

#[test]
fn daemon_reload_of_systemd_under_load_loses_nothing() {
    let p = port(22);
    let Some(a) = Activator::start("daemon-reload", &[("web", &config(p, 2, "200ms", ""))]) else {
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
    let crash = format!(
        "[Socket]\nListenStream=127.0.0.1:{bad}\nDistribute=1\n\n[Service]\nExecStart=/bin/sh -c 'exit 3'\n"
    );
    let Some(a) = Activator::start(
        "crash-loop",
        &[("good", &config(good, 2, "30s", "")), ("crash", &crash)],
    ) else {
        return;
    };
    // Keep connections queued on the crashing socket: every start fails.
    let _queued: Vec<_> = (0..3)
        .filter_map(|_| std::net::TcpStream::connect(addr(bad)).ok())
        .collect();
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l
            .contains("crash@0.service: failed:")),
        "the crashing slot was not marked failed:\n{}",
        a.log()
    );
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
    assert!(a
        .sb
        .systemctl(&["is-active", "systemd-distribute.service"])
        .is_ok());
}

#[test]
fn reload_applies_service_changes_keeps_last_good_and_adds_removes_configs() {
    let p = port(25);
    let q = port(26);
    let Some(a) = Activator::start(
        "reload-semantics",
        &[("web", &config(p, 1, "200ms", "Environment=GENERATION=1\n"))],
    ) else {
        return;
    };
    get_hello(addr(p), Duration::from_secs(10)).unwrap();
    let env =
        a.sb.systemctl(&["show", "-p", "Environment", "web@0.service"])
            .unwrap();
    assert!(env.contains("GENERATION=1"), "{env}");
    assert!(a.wait_no_instances("web@*", Duration::from_secs(10)));

    // [Service] change: applies to the next instance started.
    a.write_config("web", &config(p, 1, "200ms", "Environment=GENERATION=2\n"));
    // A new config appears.
    a.write_config("api", &config(q, 1, "200ms", ""));
    a.reload();
    let mut load = Vec::new();
    let h = get_hello(addr(p), Duration::from_secs(10)).unwrap();
    load.push(h);
    let env =
        a.sb.systemctl(&["show", "-p", "Environment", "web@0.service"])
            .unwrap();
    assert!(env.contains("GENERATION=2"), "{env}");
    get_hello(addr(q), Duration::from_secs(10)).expect("new config is served after reload");

    // An invalid config keeps the last good one.
    a.write_config("web", "[Socket]\nListenStream=127.0.0.1:1\nDistribute=0\n");
    a.reload();
    assert!(
        a.log().contains("web.socket:3: Distribute=0"),
        "{}",
        a.log()
    );
    get_hello(addr(p), Duration::from_secs(10)).expect("last good config still served");

    // A removed config is drained and closed.
    std::fs::remove_file(a.sb.dir().join("config/api.socket")).unwrap();
    a.reload();
    assert!(
        a.wait_log(Duration::from_secs(15), |l| l
            .contains("api: removed; all its sockets are closed")),
        "{}",
        a.log()
    );
    let refused = std::net::TcpStream::connect_timeout(&addr(q), Duration::from_secs(2));
    assert!(refused.is_err(), "the removed config's port is closed");
}

#[test]
fn eager_activation_starts_all_instances() {
    let p = port(27);
    let text = format!(
        "[Socket]\nListenStream=127.0.0.1:{p}\nDistribute=3\nActivation=eager\n\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 30s\nDynamicUser=yes\n"
    );
    let Some(a) = Activator::start("eager", &[("web", &text)]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.instances("web@*").len() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let Some(a) = Activator::start("stop", &[("web", &config(p, 2, "30s", ""))]) else {
        return;
    };
    for _ in 0..20 {
        get_hello(addr(p), Duration::from_secs(10)).unwrap();
    }
    assert!(!a.instances("web@*").is_empty());
    a.sb.systemctl(&["stop", "systemd-distribute.service"])
        .unwrap();
    assert!(
        a.wait_no_instances("web@*", Duration::from_secs(15)),
        "instances left after stop: {:?}\n{}",
        a.instances("web@*"),
        a.log()
    );
    assert!(
        a.log().contains("stopping: stopping every instance"),
        "{}",
        a.log()
    );
}

#[test]
fn dbus_restart_is_survived_without_losing_connections() {
    let p = port(29);
    let Some(a) = Activator::start("dbus-restart", &[("web", &config(p, 2, "200ms", ""))]) else {
        return;
    };
    let pid_before =
        a.sb.systemctl(&["show", "-p", "MainPID", "systemd-distribute.service"])
            .unwrap();
    let load = SteadyLoad::start(addr(p), 2, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(300));
    a.sb.systemctl(&["restart", "dbus.service"])
        .expect("restarting dbus");
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l
            .contains("reconnected to the system bus")),
        "{}",
        a.log()
    );
    // Instances exit on idle and are re-activated through the new connection.
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, failures) = load.finish();
    report("dbus-daemon restart under load", ok, &failures);
    let pid_after =
        a.sb.systemctl(&["show", "-p", "MainPID", "systemd-distribute.service"])
            .unwrap();
    assert_eq!(
        pid_before, pid_after,
        "the activator did not crash or restart"
    );
    assert_eq!(failures.total(), 0, "{failures:?}\n{}", a.log());
    assert!(a.wait_no_instances("web@*", Duration::from_secs(10)));
    get_hello(addr(p), Duration::from_secs(10)).expect("activation works after the reconnect");
}

#[test]
fn reload_returns_to_the_files_distribute_after_a_runtime_scale() {
    let p = port(30);
    let Some(a) = Activator::start("scale-then-reload", &[("web", &config(p, 2, "200ms", ""))])
    else {
        return;
    };
    let n = || {
        a.sb.run(
            "busctl",
            &[
                "get-property",
                "org.distribute1",
                "/org/distribute1/socket/web",
                "org.distribute1.Socket",
                "Distribute",
            ],
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(n(), "u 2");
    a.sb.run(
        "busctl",
        &[
            "call",
            "org.distribute1",
            "/org/distribute1/socket/web",
            "org.distribute1.Socket",
            "SetDistribute",
            "u",
            "3",
        ],
    )
    .unwrap();
    assert_eq!(n(), "u 3");
    a.reload();
    assert_eq!(n(), "u 2", "reload applies the file's Distribute=2 again");
}
