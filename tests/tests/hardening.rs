//! Hardening (issue 14): what an unprivileged local user or bad timing must not
//! be able to do to the activator. Ports: `port(100)` to `port(109)`, `port(130)`
//! to `port(135)`, `port(137)`, and 100 above some of those.

use distribute_tests::{
    addr, assert_contains_all, forged_failed_signal, get_hello, hello_config, port, socket_path,
    wait_until, Activator, MANAGER, MANAGER_PATH, NOBODY, ROOT, SOCKET,
};
use std::time::Duration;

#[test]
fn forged_systemd_signals_from_an_unprivileged_user_are_ignored() {
    let p = port(100);
    let Some(a) = Activator::start("forged-signals", &[("web", &hello_config(p, 1, "60s"))]) else {
        return;
    };
    let first = get_hello(addr(p), Duration::from_secs(10)).expect("served");
    let unique = a.unique_name();
    let dest = format!("--destination={unique}");
    let unit_path = "/org/freedesktop/systemd1/unit/web_400_2eservice";
    let forged = forged_failed_signal(&unique, unit_path);
    let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
    // What the issue tried: "web@0.service failed", five times, between
    // connections, sent by `nobody` straight to the activator.
    for i in 0..5 {
        a.run_as(NOBODY, "busctl", &forged).ok();
        let h = get_hello(addr(p), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("request after forged signal {i}: {e:#}\n{}", a.log()));
        assert_eq!(h.pid, first.pid, "the instance was not touched");
    }
    // And "the unit is gone": must not make the activator watch (and start)
    // again while the instance runs.
    a.run_as(
        NOBODY,
        "busctl",
        &[
            "emit",
            &dest,
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "UnitRemoved",
            "so",
            "web@0.service",
            unit_path,
        ],
    )
    .ok();
    a.assert_logged(
        "ignoring PropertiesChanged on /org/freedesktop/systemd1/unit/web_400_2eservice from",
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..10 {
        let h = get_hello(addr(p), Duration::from_secs(10)).expect("served");
        assert_eq!(h.pid, first.pid);
    }
    let status = a.ctl(&["status", "web"]).ok().stdout;
    let row = status
        .lines()
        .find(|l| l.trim_start().starts_with("web@0.service"))
        .unwrap_or_default()
        .to_string();
    println!("{row}");
    assert!(row.contains("running"), "{status}");
    // ACTIVATIONS 1, FAILURES 0.
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[4..6], ["1", "0"], "{status}");
    assert_eq!(a.log().matches("web@0.service: started").count(), 1);
}

#[test]
fn a_config_name_starting_with_a_digit_gets_its_instances_signals() {
    // systemd escapes a leading digit in object paths (`_31crash_400_2eservice`);
    // a path built without that escape never matched, so the failures of
    // `1crash@0.service` went unseen and it was restarted forever.
    let p = port(101);
    let config = distribute_tests::script_config(p, "", "exit 3", "");
    let Some(a) = Activator::start("digit-name", &[("1crash", &config)]) else {
        return;
    };
    let _queued = std::net::TcpStream::connect(addr(p)).expect("connect");
    a.assert_logged_within(
        Duration::from_secs(30),
        "1crash@0.service: failed: instance failed after",
    );
    let status = a.ctl(&["status", "1crash"]).ok().stdout;
    assert!(status.contains("5 failures in a row"), "{status}");
}

#[test]
fn mutating_methods_check_the_caller_is_root_even_if_the_bus_lets_it_through() {
    // A policy that lets everyone call everything, as a broken or edited
    // policy file would: the daemon must still refuse non-root callers.
    let loose = distribute_sandbox::target_dir().join("hardening-loose-policy.conf");
    std::fs::write(
        &loose,
        "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN\"\n \
         \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n<busconfig>\n  \
         <policy context=\"default\">\n    <allow send_destination=\"org.distribute1\"/>\n  \
         </policy>\n</busconfig>\n",
    )
    .unwrap();
    let p = port(102);
    let Some(a) = Activator::start_with_policies(
        "root-check",
        &[("web", &hello_config(p, 2, "60s"))],
        &[loose],
    ) else {
        return;
    };
    let socket = socket_path("web");
    let socket = socket.as_str();
    for (iface, path, method, args) in [
        (SOCKET, socket, "SetDistribute", vec!["u", "3"]),
        (SOCKET, socket, "StartInstance", vec!["u", "0"]),
        (SOCKET, socket, "StopInstance", vec!["u", "0"]),
        (SOCKET, socket, "RestartInstance", vec!["u", "0"]),
        (MANAGER, MANAGER_PATH, "Reload", vec![]),
    ] {
        let r = a.bus_call(NOBODY, path, iface, method, &args);
        assert_ne!(r.code, 0, "{method} as nobody: {r:?}");
        // busctl shows any AccessDenied as "Access denied"; that it was the
        // daemon's check, not the bus policy, is in the daemon's log.
        assert!(r.stderr.contains("Access denied"), "{method}: {r:?}");
        a.assert_logged_within(
            Duration::from_secs(5),
            &format!("refused a {method} call from"),
        );
    }
    a.assert_logged("(uid 65534): only root may change anything");
    // Nothing changed; root still may.
    assert_eq!(a.socket_property(NOBODY, "web", "Distribute"), "u 2");
    a.bus_call(ROOT, socket, SOCKET, "SetDistribute", &["u", "3"])
        .ok();
    a.assert_logged("refused a SetDistribute call from");
}

#[test]
fn one_bad_entry_in_the_config_directory_drops_nothing_else() {
    use std::os::unix::ffi::OsStrExt;
    let p = port(103);
    let Some(a) = Activator::start("bad-entry", &[("web", &hello_config(p, 1, "60s"))]) else {
        return;
    };
    let first = get_hello(addr(p), Duration::from_secs(10)).expect("served");
    // A file whose name is not UTF-8 (an editor's backup, a botched copy).
    let bad =
        a.sb.dir()
            .join("config")
            .join(std::ffi::OsStr::from_bytes(b"\xff.socket"));
    std::fs::write(&bad, "[Socket]\nListenStream=1\n").unwrap();
    a.reload();
    a.assert_logged("file name is not valid UTF-8");
    assert!(
        !a.log().contains("web: config removed"),
        "web was dropped:\n{}",
        a.log()
    );
    let again = get_hello(addr(p), Duration::from_secs(10)).expect("still served");
    assert_eq!(again.pid, first.pid, "its instance was not drained either");
    std::fs::remove_file(&bad).unwrap();
}

#[test]
fn world_writable_configs_and_root_instances_are_warned_about_once() {
    use std::os::unix::fs::PermissionsExt;
    let p = port(104);
    let root_config = distribute_tests::socket_config(
        p + 1,
        1,
        "",
        "@BIN@/distribute-hello --idle-timeout 60s",
        "",
    );
    let Some(a) = Activator::start(
        "warnings",
        &[("web", &hello_config(p, 1, "60s")), ("rooty", &root_config)],
    ) else {
        return;
    };
    let web = a.sb.dir().join("config/web.socket");
    std::fs::set_permissions(&web, std::fs::Permissions::from_mode(0o666)).unwrap();
    a.reload();
    a.reload();
    let log = a.log();
    let writable = format!(
        "{}: is world-writable (mode 0666)",
        a.sb.inside("config/web.socket")
    );
    assert_eq!(log.matches(&writable).count(), 1, "{log}");
    assert_eq!(
        log.matches("rooty: its instances run as root").count(),
        1,
        "{log}"
    );
    assert!(
        !log.contains("web: its instances run as root"),
        "DynamicUser=yes"
    );
    // Served all the same.
    get_hello(addr(p), Duration::from_secs(10)).expect("web served");
    get_hello(addr(p + 1), Duration::from_secs(10)).expect("rooty served");
}

/// A keep-alive HTTP connection that has had one answer: (stream, instance).
fn keep_alive_client(target: std::net::SocketAddr) -> (std::net::TcpStream, String) {
    let mut c = distribute_tests::KeepAlive::connect(target).expect("connect");
    let (_, body) = c.get().expect("response").expect("an answer");
    let instance = body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("instance="))
        .unwrap()
        .to_string();
    (c.stream, instance)
}

#[test]
fn a_drain_with_idle_keep_alive_clients_ends_and_never_blocks_a_rescale() {
    use std::io::Read;
    let p = port(105);
    let config = distribute_tests::socket_config(
        p,
        2,
        "DrainTimeoutSec=2s\n",
        "@BIN@/distribute-hello --idle-timeout 60s",
        "DynamicUser=yes\n",
    );
    let Some(a) = Activator::start("drain-deadline", &[("web", &config)]) else {
        return;
    };
    // What the issue tried: 8 idle keep-alive clients over both instances.
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(keep_alive_client(addr(p)));
        if clients.len() >= 8 && clients.iter().any(|(_, i)| i == "1") {
            break;
        }
    }
    assert!(
        clients.iter().any(|(_, i)| i == "1"),
        "no client on instance 1"
    );
    a.ctl(&["scale", "web", "1"]).ok();
    // The second scale must not wait for the first one's drain.
    let asked = std::time::Instant::now();
    let r = a.ctl(&["scale", "web", "2"]).ok();
    let took = asked.elapsed();
    println!("scale 2 while 1 drains answered in {took:?}: {}", r.stdout);
    assert!(
        took < Duration::from_secs(5),
        "scale waited for the drain ({took:?})"
    );
    // The drain times out: instance 1 is stopped, its idle keep-alive
    // clients are closed cleanly (EOF, not a reset).
    a.assert_logged_within(
        Duration::from_secs(15),
        "web@1.service: still running when its drain timed out (DrainTimeoutSec=); stopping it",
    );
    for (mut s, instance) in clients.into_iter().filter(|(_, i)| i == "1") {
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            other => panic!("keep-alive client of instance {instance}: {other:?}"),
        }
    }
    // Then the queued scale applies: 2 instances, nothing draining.
    assert!(
        distribute_tests::wait_until(Duration::from_secs(15), || {
            let st = a.ctl(&["status", "web"]).stdout;
            st.contains("Distribute: 2 (") && !st.contains("draining")
        }),
        "{}\n{}",
        a.ctl(&["status", "web"]).stdout,
        a.log()
    );
    for _ in 0..20 {
        get_hello(addr(p), Duration::from_secs(10)).expect("served after the drain");
    }
}

#[test]
fn reloads_during_a_socket_replacement_leave_one_group() {
    let p = port(106);
    // FreeBind= is fixed at bind time: each change needs new sockets.
    // Backlog= only tells the versions apart.
    let config = |backlog: u32| {
        distribute_tests::socket_config(
            p,
            2,
            &format!(
                "Backlog={backlog}\nFreeBind={}\nDrainTimeoutSec=2s\n",
                (backlog / 100).is_multiple_of(2)
            ),
            "@BIN@/distribute-hello --idle-timeout 60s",
            "DynamicUser=yes\n",
        )
    };
    let Some(a) = Activator::start("reload-during-replace", &[("web", &config(100))]) else {
        return;
    };
    // A keep-alive client keeps the old instance busy, so the replacement's
    // drain lasts until DrainTimeoutSec=.
    let (_client, _) = keep_alive_client(addr(p));
    // New sockets; then, while the old ones drain, two more reloads with yet
    // other values.
    a.write_config("web", &config(200));
    a.reload();
    a.write_config("web", &config(300));
    a.reload();
    a.write_config("web", &config(400));
    a.reload();
    // Served once at start, once more on new sockets; then the old ones are
    // closed (and anything still pending is replaced once more).
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l
            .matches("web: serving with 2 instances")
            .count()
            >= 2
            && l.matches("web: the replaced sockets are closed").count()
                == l.matches("binding new sockets next to the old ones")
                    .count()),
        "{}",
        a.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    // Exactly one group: N listening sockets on the port, with the last backlog.
    let ss =
        a.sb.run("ss", &["-Hltn", &format!("sport = :{p}")])
            .expect("ss");
    println!("{ss}");
    let lines: Vec<&str> = ss.lines().collect();
    assert_eq!(lines.len(), 2, "one group of 2 sockets:\n{ss}\n{}", a.log());
    assert!(
        lines
            .iter()
            .all(|l| l.split_whitespace().nth(2) == Some("400")),
        "{ss}"
    );
    for _ in 0..10 {
        get_hello(addr(p), Duration::from_secs(10)).expect("served");
    }
}

#[test]
fn a_config_edited_across_a_restart_leaves_no_stale_sockets_and_gets_its_options() {
    let p = port(107);
    let config = |port: u16, backlog: u32| {
        distribute_tests::socket_config(
            port,
            2,
            &format!("Backlog={backlog}\n"),
            "@BIN@/distribute-hello --idle-timeout 60s",
            "DynamicUser=yes\n",
        )
    };
    let Some(a) = Activator::start("restart-edit", &[("web", &config(p, 100))]) else {
        return;
    };
    let listeners = |port: u16| -> Vec<String> {
        a.sb.run("ss", &["-Hltn", &format!("sport = :{port}")])
            .expect("ss")
            .lines()
            .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
            .collect()
    };
    let restart = || {
        a.sb.systemctl(&["restart", "systemd-distribute.service"])
            .expect("restart");
        a.assert_active();
    };
    assert_eq!(listeners(p), ["100", "100"]);
    // Backlog= changed while the sockets sit in the fd store: applied to them.
    a.write_config("web", &config(p, 300));
    restart();
    assert_eq!(listeners(p), ["300", "300"], "{}", a.log());
    get_hello(addr(p), Duration::from_secs(10)).expect("served");
    // Another port: the stored sockets of the old one are closed in systemd's
    // fd store too, not left bound; and twice, so no name is stored twice.
    let q = p + 100;
    a.write_config("web", &config(q, 300));
    restart();
    restart();
    // Instances that were running keep serving their old sockets until they
    // exit (here: stopped); after that nothing may hold the old port.
    let _ = a.sb.systemctl(&["stop", "web@0.service", "web@1.service"]);
    assert!(
        distribute_tests::wait_until(Duration::from_secs(5), || listeners(p).is_empty()),
        "old port still bound: {:?}\n{}",
        listeners(p),
        a.log()
    );
    assert_eq!(listeners(q), ["300", "300"]);
    let stored = a.unit_property("systemd-distribute.service", "NFileDescriptorStore");
    assert_eq!(stored, "2", "one stored socket per instance");
    get_hello(addr(q), Duration::from_secs(10)).expect("served on the new port");
}

#[test]
fn a_failed_configs_object_goes_with_its_file() {
    let p = port(108);
    let Some(a) = Activator::start("failed-object", &[("web", &hello_config(p, 1, "60s"))]) else {
        return;
    };
    a.write_config("bad", "[Socket]\nListenStream=127.0.0.1:1\nDistribute=0\n");
    a.reload();
    let state = || a.socket_property_run(ROOT, "bad", "State");
    // Objects are published shortly after a change.
    assert!(
        distribute_tests::wait_until(Duration::from_secs(5), || state().stdout.trim()
            == "s \"failed\""),
        "the failed config has no object"
    );
    std::fs::remove_file(a.sb.dir().join("config/bad.socket")).unwrap();
    a.reload();
    assert!(
        distribute_tests::wait_until(Duration::from_secs(5), || { state().code != 0 }),
        "the object of the deleted config is still served"
    );
    let list = a.ctl(&["list"]).ok().stdout;
    assert!(!list.contains("bad"), "{list}");
}

#[test]
fn socket_options_that_a_listener_takes_are_changed_in_place() {
    let p = port(109);
    let config = |backlog: u32| {
        distribute_tests::socket_config(
            p,
            2,
            &format!("Backlog={backlog}\n"),
            "@BIN@/distribute-hello --idle-timeout 60s",
            "DynamicUser=yes\n",
        )
    };
    let Some(a) = Activator::start("options-in-place", &[("web", &config(100))]) else {
        return;
    };
    get_hello(addr(p), Duration::from_secs(10)).expect("served");
    let pids = || ["web@0.service", "web@1.service"].map(|u| a.unit_property(u, "MainPID"));
    a.ctl(&["start", "web"]).ok();
    assert!(distribute_tests::wait_until(
        Duration::from_secs(10),
        || pids().iter().all(|p| p != "0")
    ));
    let before = pids();
    // Connections waiting in the queues while the options change.
    let queued = distribute_tests::queue_connections(p, 4);
    a.write_config("web", &config(250));
    a.reload();
    a.assert_logged("web: socket options applied in place");
    let ss =
        a.sb.run("ss", &["-Hltn", &format!("sport = :{p}")])
            .expect("ss");
    let backlogs: Vec<&str> = ss
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(backlogs, ["250", "250"], "{ss}");
    // Same sockets, same instances: nothing drained or replaced.
    assert!(!a.log().contains("replacing its sockets"), "{}", a.log());
    assert_eq!(pids(), before, "the instances were not replaced");
    // And what waited in the queues is served.
    for mut c in queued {
        use std::io::{Read, Write};
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp)
            .expect("queued connection answered");
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }
}

#[test]
fn sockets_beyond_the_fd_store_are_refused_with_what_to_raise() {
    let p = port(130);
    let Some(a) = Activator::start("fd-store-room", &[("web", &hello_config(p, 2, "60s"))]) else {
        return;
    };
    // A small store: the two sockets of web fit, two more do not.
    let dropin = a.sb.unit_dir().join("systemd-distribute.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("50-small.conf"),
        "[Service]\nFileDescriptorStoreMax=3\n",
    )
    .unwrap();
    a.sb.systemctl(&["daemon-reload"]).unwrap();
    a.sb.systemctl(&["restart", "systemd-distribute.service"])
        .unwrap();
    a.write_config("api", &hello_config(p + 1, 2, "60s"));
    a.reload();
    let want = "2 more sockets do not fit in systemd's fd store: 2 are stored and \
                FileDescriptorStoreMax=3 of systemd-distribute.service; raise it";
    let status = a.ctl(&["status", "api"]).output();
    assert!(status.contains(want), "{status}");
    let r = a.ctl(&["scale", "web", "4"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.output()
            .contains("growing to 4: 2 more sockets do not fit"),
        "{r:?}"
    );
    // What fits still works.
    a.ctl(&["scale", "web", "3"]).ok();
    get_hello(addr(p), Duration::from_secs(10)).expect("web served");
}

/// Keep-alive clients until `stop`: (answers, failures). A connection the
/// server closed between requests (`None`: an old instance stopped after its
/// drain) is opened again and does not count as a failure.
fn keep_alive_load(
    target: std::net::SocketAddr,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(u64, distribute_tests::Failures)>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failures) = (0, distribute_tests::Failures::default());
                let mut conn = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let c = match conn.take() {
                        Some(c) => c,
                        None => match distribute_tests::KeepAlive::connect(target) {
                            Ok(c) => c,
                            Err(e) => {
                                eprintln!("keep-alive connect: {e}");
                                failures.count(&e.into());
                                continue;
                            }
                        },
                    };
                    let mut c = c;
                    match c.get() {
                        Ok(Some(_)) => {
                            ok += 1;
                            conn = Some(c);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("keep-alive request: {e}");
                            failures.count(&e.into());
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (ok, failures)
            })
        })
        .collect()
}

#[test]
fn replacing_sockets_on_reload_binds_the_new_ones_first_and_loses_nothing() {
    use std::io::{Read, Write};
    let (p, p2) = (port(132), port(133));
    // (a) the address list: port kept, one added; (b) FreeBind=, fixed at
    // bind time; (c) the added port dropped and Distribute= 2 -> 3, (d) 3 -> 1
    // with FreeBind= back: fewer and more new sockets than old ones in the
    // shared reuseport group. Each needs new sockets.
    let config = |added: bool, free_bind: bool, n: u32| {
        format!(
            "[Socket]\nListenStream=127.0.0.1:{p}\n{}Distribute={n}\nFreeBind={free_bind}\n\
             DrainTimeoutSec=3s\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 60s\n\
             DynamicUser=yes\n",
            if added {
                format!("ListenStream=127.0.0.1:{p2}\n")
            } else {
                String::new()
            }
        )
    };
    let Some(a) = Activator::start("make-before-break", &[("web", &config(false, false, 2))])
    else {
        return;
    };
    distribute_tests::get_hellos(addr(p), 4);
    let load = distribute_tests::SteadyLoad::start(addr(p), 4, Duration::from_millis(5));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let keep_alive = keep_alive_load(addr(p), 4, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let mut queued = Vec::new();
    let steps = [
        config(true, false, 2),
        config(true, true, 2),
        config(false, true, 3),
        config(false, false, 1),
    ];
    for (step, text) in (1..).zip(steps) {
        // Requests sent just before the reload: on the old sockets.
        for _ in 0..10 {
            let mut s = std::net::TcpStream::connect(addr(p)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .unwrap();
            queued.push(s);
        }
        a.write_config("web", &text);
        a.reload();
        assert!(
            a.wait_log(Duration::from_secs(30), |l| l
                .matches("web: the replaced sockets are closed")
                .count()
                >= step),
            "replacement {step} did not finish:\n{}",
            a.log()
        );
        if step <= 2 {
            // The added address is served.
            distribute_tests::get_hellos(addr(p2), 2);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let (served, failures) = load.finish();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut kept = distribute_tests::Failures::default();
    let mut kept_ok = 0;
    for t in keep_alive {
        let (o, f) = t.join().unwrap();
        kept_ok += o;
        kept.add(&f);
    }
    println!(
        "short connections: {served} answered, {failures}; keep-alive: {kept_ok} answered, {kept}"
    );
    assert!(served > 100 && kept_ok > 100, "too little load to tell");
    assert_eq!(
        failures.total(),
        0,
        "short connections: {failures}\n{}",
        a.log()
    );
    assert_eq!(kept.total(), 0, "keep-alive: {kept}\n{}", a.log());
    for (i, mut s) in queued.into_iter().enumerate() {
        let mut resp = String::new();
        s.read_to_string(&mut resp)
            .unwrap_or_else(|e| panic!("queued request {i}: {e}"));
        distribute_tests::parse_hello(&resp)
            .unwrap_or_else(|e| panic!("queued request {i}: {e:#}"));
    }
    // One group of Distribute= sockets; the added port is gone again.
    let ss =
        a.sb.run("ss", &["-Hltn", &format!("sport = :{p}")])
            .expect("ss");
    assert_eq!(ss.lines().count(), 1, "port {p}:\n{ss}");
    let ss =
        a.sb.run("ss", &["-Hltn", &format!("sport = :{p2}")])
            .expect("ss");
    assert_eq!(ss.lines().count(), 0, "port {p2}:\n{ss}");
    distribute_tests::get_hellos(addr(p), 4);
    a.assert_logged("binding new sockets next to the old ones");
}

#[test]
fn a_rescale_during_a_socket_replacement_answers_at_once_and_follows() {
    let p = port(134);
    // Old instances that ignore SIGTERM: the replacement's drain lasts until
    // systemd kills them (TimeoutStopSec=3s), and a scale meanwhile must not
    // wait for it.
    let config = |free_bind: bool| {
        distribute_tests::socket_config(
            p,
            2,
            &format!("FreeBind={free_bind}\nActivation=eager\nDrainTimeoutSec=5s\n"),
            "/bin/sh -c 'trap \"\" TERM; echo ignoring SIGTERM; exec /bin/sleep 600'",
            "TimeoutStopSec=3s\n",
        )
    };
    let Some(a) = Activator::start("scale-during-replace", &[("web", &config(false))]) else {
        return;
    };
    assert!(
        wait_until(Duration::from_secs(10), || a
            .sb
            .journal(Some("web@1.service"))
            .contains("ignoring SIGTERM")),
        "web@1 never got to its trap:\n{}",
        a.log()
    );
    a.write_config("web", &config(true));
    a.reload();
    let started = std::time::Instant::now();
    a.ctl(&["scale", "web", "3"]).ok();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "scale waited {:?} for the replacement",
        started.elapsed()
    );
    let status = a.ctl(&["status", "web"]).ok().output();
    assert_contains_all(
        &status,
        &["State: replacing", "old sockets (replaced on reload)"],
    );
    a.assert_logged(
        "web: its replaced sockets are still draining; 3 instances once they are closed",
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let ss =
                a.sb.run("ss", &["-Hltn", &format!("sport = :{p}")])
                    .unwrap_or_default();
            ss.lines().count() == 3
        }),
        "never 3 sockets:\n{}",
        a.log()
    );
    a.assert_logged("web: the replaced sockets are closed");
}

#[test]
fn a_change_that_splits_the_reuseport_group_falls_back_to_drain_then_bind_and_says_why() {
    let p = port(135);
    // IPV6_V6ONLY differs: the kernel would keep old and new sockets in two
    // reuseport groups on one port, and keep choosing the old one.
    let config = |only: &str| {
        format!(
            "[Socket]\nListenStream=[::1]:{p}\nDistribute=2\nBindIPv6Only={only}\nDrainTimeoutSec=2s\n\
             [Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 60s\nDynamicUser=yes\n"
        )
    };
    let Some(a) = Activator::start("replace-with-gap", &[("web", &config("default"))]) else {
        return;
    };
    let v6: std::net::SocketAddr = format!("[::1]:{p}").parse().unwrap();
    distribute_tests::get_hellos(v6, 2);
    a.write_config("web", &config("ipv6-only"));
    a.reload();
    a.assert_logged_within(
        Duration::from_secs(5),
        "web: listen addresses or socket options changed; replacing its sockets with a gap (old ones closed before the new ones are bound) because BindIPv6Only= changed for [::1]:",
    );
    assert!(
        a.wait_log(Duration::from_secs(20), |l| l
            .matches("web: serving with 2 instances")
            .count()
            >= 2),
        "{}",
        a.log()
    );
    assert!(!a.log().contains("binding new sockets next to the old ones"));
    distribute_tests::get_hellos(v6, 4);
}

#[test]
fn a_replacement_during_a_shrink_follows_once_it_has_drained() {
    let p = port(137);
    let config = |free_bind: bool| {
        distribute_tests::socket_config(
            p,
            3,
            &format!("FreeBind={free_bind}\nDrainTimeoutSec=3s\n"),
            "@BIN@/distribute-hello --idle-timeout 60s",
            "DynamicUser=yes\n",
        )
    };
    let Some(a) = Activator::start("replace-during-shrink", &[("web", &config(false))]) else {
        return;
    };
    // Idle keep-alive clients on every instance: the shrink's drain lasts
    // until DrainTimeoutSec= stops instance 2.
    let clients: Vec<_> = (0..12).map(|_| keep_alive_client(addr(p))).collect();
    assert!(
        clients.iter().any(|(_, i)| i == "2"),
        "no client on instance 2"
    );
    let load = distribute_tests::SteadyLoad::start(addr(p), 3, Duration::from_millis(5));
    a.ctl(&["scale", "web", "2"]).ok();
    a.write_config("web", &config(true));
    a.reload();
    a.assert_logged("web: new sockets once the shrink in progress has drained");
    assert!(
        a.wait_log(Duration::from_secs(30), |l| l
            .contains("web: the replaced sockets are closed")),
        "{}",
        a.log()
    );
    let (served, failures) = load.finish();
    println!("{served} answered, {failures}");
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    // The file's Distribute=3 again, on new sockets.
    let ss =
        a.sb.run("ss", &["-Hltn", &format!("sport = :{p}")])
            .expect("ss");
    assert_eq!(ss.lines().count(), 3, "{ss}\n{}", a.log());
    drop(clients);
}
