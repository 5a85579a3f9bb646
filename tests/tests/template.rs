//! Template mode: the config has no `[Service]`, the instances are a real
//! template unit file's (`Type=notify`, `DynamicUser=`, `StateDirectory=`,
//! `EnvironmentFile=`, an admin drop-in), and they get their sockets through
//! the fd store with nothing in front of `ExecStart=`. Ports: `port(90)` to
//! `port(98)`, `port(95) + 100` and `port(136)`.

use distribute_tests::{
    addr, fire, get_hello, port, tally, wait_until, Activator, SteadyLoad, NOBODY, ROOT,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The template under test. `@BIN@` is the sandbox's bin directory.
const TEMPLATE: &str = "[Unit]
Description=template-mode test instance %i

[Service]
Type=notify
ExecStart=@BIN@/distribute-hello --notify --idle-timeout @IDLE@ --show-env GREETING --show-env FROM_DROPIN --show-env STATE_DIRECTORY --show-env LISTEN_PID --show-env LISTEN_FDNAMES
Environment=DISTRIBUTE_INSTANCE=%i
EnvironmentFile=/run/distribute-harness/tpl.env
DynamicUser=yes
StateDirectory=tpl-%i
KillSignal=SIGINT
Restart=on-failure
RestartSec=100ms
# Runs inside the instance's cgroup while it is active, not starting: the
# activator must refuse it.
ExecReload=+@BIN@/systemd-distribute-handoff --socket /run/systemd-distribute/handoff %n
";

/// The admin's own drop-in for the template.
const ADMIN_DROPIN: &str = "[Service]\nEnvironment=FROM_DROPIN=admin\n";

/// `tpl.socket`: no `[Service]`, so template mode.
fn config(port: u16, n: u32) -> String {
    format!("[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\nService=tpl@.service\n")
}

/// Boots the activator with the template `tpl@.service` (instances exit after
/// `idle`) and the config `tpl.socket`.
fn start(test: &str, port: u16, n: u32, idle: &str) -> Option<Activator> {
    // The activator reads its configs at start: the template must exist first.
    let a = Activator::start(test, &[])?;
    a.sb.write_file("tpl.env", "GREETING=from-environment-file\n")
        .unwrap();
    let unit = TEMPLATE.replace("@BIN@", &a.bin).replace("@IDLE@", idle);
    std::fs::create_dir_all(a.sb.unit_dir().join("tpl@.service.d")).unwrap();
    std::fs::write(
        a.sb.unit_dir().join("tpl@.service.d/10-admin.conf"),
        ADMIN_DROPIN,
    )
    .unwrap();
    a.sb.install_unit("tpl@.service", &unit).unwrap();
    a.write_config("tpl", &config(port, n));
    a.reload();
    Some(a)
}

/// The whole body of one `GET /`.
fn get_body(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    resp.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// `KEY=value` out of a body.
fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("{key} missing in {body:?}"))
}

#[test]
fn template_instances_serve_with_their_own_settings() {
    let p = port(90);
    let Some(a) = start("template-serve", p, 4, "30s") else {
        return;
    };
    let (hellos, failures) = fire(addr(p), 8, 50, Duration::ZERO);
    let t = tally(&hellos);
    println!(
        "400 connections to template instances: {} answered, {failures}",
        hellos.len()
    );
    for (instance, pids) in &t {
        println!("  tpl@{instance}.service: {pids:?}");
    }
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    assert_eq!(hellos.len(), 400);
    assert_eq!(
        t.keys().cloned().collect::<Vec<_>>(),
        vec!["0", "1", "2", "3"],
        "every instance serves"
    );
    for (instance, pids) in &t {
        assert_eq!(pids.len(), 1, "tpl@{instance} started more than once");
    }

    // What the unit file and the admin's drop-in set is in effect, and the
    // sockets came the standard way, to the main process itself.
    let body = get_body(addr(p));
    println!("body: {body}");
    let pid = field(&body, "pid");
    assert_eq!(
        field(&body, "LISTEN_PID"),
        pid,
        "$LISTEN_PID is the main PID"
    );
    assert_eq!(field(&body, "LISTEN_FDNAMES"), "tpl.socket");
    assert_eq!(field(&body, "GREETING"), "from-environment-file");
    assert_eq!(field(&body, "FROM_DROPIN"), "admin");
    let instance = field(&body, "instance");
    assert_eq!(
        field(&body, "STATE_DIRECTORY"),
        format!("/var/lib/tpl-{instance}")
    );
    let unit = format!("tpl@{instance}.service");
    assert_eq!(a.unit_property(&unit, "MainPID"), pid, "$MAINPID");
    assert_eq!(a.unit_property(&unit, "Type"), "notify");
    assert_eq!(a.unit_property(&unit, "KillSignal"), "2");
    assert_eq!(a.unit_property(&unit, "ActiveState"), "active");
    assert_eq!(
        a.unit_property(&unit, "FragmentPath"),
        a.sb.inside("units/tpl@.service")
    );
    let dropins = a.unit_property(&unit, "DropInPaths");
    assert!(
        dropins.contains("10-admin.conf")
            && dropins.contains("/run/systemd/system/tpl@.service.d/99-systemd-distribute.conf"),
        "{dropins}"
    );
    // Nothing runs in front of ExecStart=.
    let exec = a.unit_property(&unit, "ExecStart");
    assert!(
        exec.contains("distribute-hello") && !exec.contains("systemd-distribute-exec"),
        "{exec}"
    );

    // The control plane shows the mode and the unit file.
    let status = a.ctl(&["status", "tpl"]).ok();
    assert!(
        status.stdout.contains(&format!(
            "Mode: template ({})",
            a.sb.inside("units/tpl@.service")
        )),
        "{}",
        status.stdout
    );
    let mode = a.socket_property(NOBODY, "tpl", "Mode");
    assert_eq!(mode, "s \"template\"");
    let file = a.socket_property(ROOT, "tpl", "UnitFile");
    assert_eq!(file, format!("s \"{}\"", a.sb.inside("units/tpl@.service")));
}

#[test]
fn template_idle_exit_reactivation_and_no_loss() {
    let p = port(91);
    let Some(a) = start("template-idle", p, 2, "50ms") else {
        return;
    };
    let first = get_hello(addr(p), Duration::from_secs(10)).expect("first request");
    // The instance exits on idle; a unit with a unit file may stay loaded, so
    // wait for it to be inactive (or gone), with an empty fd store.
    assert!(
        wait_until(Duration::from_secs(15), || a
            .instances("tpl@*")
            .iter()
            .all(|(_, s)| s != "active" && s != "activating")),
        "instances did not exit on idle: {:?}",
        a.instances("tpl@*")
    );
    let second = get_hello(addr(p), Duration::from_secs(10)).expect("after idle exit");
    assert_ne!(first.pid, second.pid, "a new instance process served it");

    // 2,000 connections at random spacing around the 50 ms idle timeout.
    let (hellos, failures) = fire(addr(p), 10, 200, Duration::from_millis(200));
    let pids: std::collections::BTreeSet<u32> = hellos.iter().map(|h| h.pid).collect();
    println!(
        "template mode, 2000 connections around idle exits: {} answered by {} instance processes; {failures}",
        hellos.len(),
        pids.len()
    );
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    assert_eq!(hellos.len(), 2000);
    assert!(
        pids.len() > 4,
        "instances were re-activated: {} PIDs",
        pids.len()
    );
}

#[test]
fn template_rescale_and_activator_restart_under_load() {
    let p = port(92);
    let Some(a) = start("template-rescale", p, 4, "2s") else {
        return;
    };
    let load = SteadyLoad::start(addr(p), 4, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(500));
    a.ctl(&["scale", "tpl", "2"]).ok();
    assert!(wait_until(Duration::from_secs(20), || !a
        .ctl(&["status", "tpl"])
        .stdout
        .contains("draining")));
    a.ctl(&["scale", "tpl", "4"]).ok();
    std::thread::sleep(Duration::from_millis(500));
    a.sb.systemctl(&["restart", "systemd-distribute.service"])
        .expect("restart");
    std::thread::sleep(Duration::from_secs(1));
    a.assert_active();
    let (ok, failures) = load.finish();
    println!("template mode, rescale 4→2→4 and an activator restart under load: {ok} answered, {failures}");
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    assert!(ok > 100, "the load ran: {ok}");
    // After the restart the running instances were adopted, and still serve.
    assert_eq!(get_hellos_ok(addr(p), 20), 20);
}

fn get_hellos_ok(target: SocketAddr, n: usize) -> usize {
    (0..n)
        .filter(|_| get_hello(target, Duration::from_secs(10)).is_ok())
        .count()
}

#[test]
fn socket_requests_are_refused_outside_an_instance_start() {
    let p = port(93);
    let Some(a) = start("template-refused", p, 1, "30s") else {
        return;
    };
    get_hello(addr(p), Duration::from_secs(10)).expect("instance serves");
    let helper = format!("{}/systemd-distribute-handoff", a.bin);
    let socket = "/run/systemd-distribute/handoff";

    // An unprivileged user cannot even connect (the directory is 0700).
    let r = a.run_as(
        NOBODY,
        "/usr/bin/env",
        &[
            "NOTIFY_SOCKET=/run/systemd/notify",
            &helper,
            "--socket",
            socket,
            "tpl@0.service",
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("cannot reach systemd-distribute"),
        "{r:?}"
    );

    // Root, but from another unit: refused by the activator.
    let r = a.run_as(
        ROOT,
        "systemd-run",
        &[
            "--wait",
            "--unit=intruder",
            "-p",
            "Type=notify",
            "-p",
            "NotifyAccess=all",
            &helper,
            "--socket",
            socket,
            "tpl@0.service",
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    a.assert_logged_within(
        Duration::from_secs(10),
        "belongs to intruder.service, not to tpl@0.service",
    );

    // Root, inside the instance's own cgroup, but while it is running
    // (ExecReload=, so `reloading`): refused.
    let r = a.run_as(ROOT, "systemctl", &["reload", "tpl@0.service"]);
    assert_ne!(r.code, 0, "{r:?}");
    a.assert_logged_within(
        Duration::from_secs(10),
        "tpl@0.service is reloading, not starting",
    );
    // The instance is unharmed and still serves.
    get_hello(addr(p), Duration::from_secs(10)).expect("instance still serves");
}

#[test]
fn started_by_systemd_or_the_admin_counts_as_running() {
    let p = port(94);
    let Some(a) = start("template-external", p, 2, "30s") else {
        return;
    };
    // An admin starts instance 1 by hand: it fetches its sockets and the slot
    // counts it as running.
    a.sb.systemctl(&["start", "tpl@1.service"])
        .expect("systemctl start");
    a.assert_logged_within(
        Duration::from_secs(10),
        "tpl@1.service: started outside the activator",
    );
    let status = a.ctl(&["status", "tpl"]).ok().stdout;
    assert!(
        status
            .lines()
            .any(|l| l.contains("tpl@1.service") && l.contains("running")),
        "{status}"
    );
    // The unit's own Restart=: killed, it restarts by itself and keeps its sockets.
    let pid = a.unit_property("tpl@1.service", "MainPID");
    a.sb.run("kill", &["-KILL", &pid]).expect("kill");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = a.unit_property("tpl@1.service", "MainPID");
            now != pid && now != "0"
        }),
        "tpl@1 did not restart by itself"
    );
    let (hellos, failures) = fire(addr(p), 4, 25, Duration::ZERO);
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    let t = tally(&hellos);
    assert!(t.contains_key("1"), "restarted instance 1 serves: {t:?}");
    let status = a.ctl(&["status", "tpl"]).ok().stdout;
    assert!(!status.contains("failed"), "{status}");
}

#[test]
fn both_a_service_section_and_a_unit_file_is_an_exact_error() {
    let p = port(95);
    let Some(a) = Activator::start("template-both", &[]) else {
        return;
    };
    a.sb.install_unit("both@.service", "[Service]\nExecStart=/bin/true\n")
        .unwrap();
    a.write_config(
        "both",
        &format!(
            "[Socket]\nListenStream=127.0.0.1:{p}\nService=both@.service\n\n[Service]\nExecStart=/bin/true\n"
        ),
    );
    a.write_config(
        "neither",
        &format!("[Socket]\nListenStream=127.0.0.1:{}\n", p + 100),
    );
    a.reload();
    let config = a.sb.inside("config/both.socket");
    let unit_file = a.sb.inside("units/both@.service");
    let want = format!(
        "{config}:6: a [Service] section, but {unit_file} exists too: systemd refuses transient \
         instances of a template that has a unit file, so only one of them can define \
         both@.service's instances. To start the unit file's instances (template mode), remove \
         the [Service] section from {config}; to keep the transient instances built from \
         [Service], remove or rename {unit_file} and run `systemctl daemon-reload`"
    );
    // busctl prints a string in double quotes, with ' escaped.
    let error_of = |name: &str| a.socket_property(ROOT, name, "Error").replace("\\'", "'");
    assert_eq!(error_of("both"), format!("s \"{want}\""));
    let cfg = a.sb.inside("config/neither.socket");
    assert_eq!(
        error_of("neither"),
        format!(
            "s \"{cfg}: no [Service] section, and systemd finds no unit file neither@.service: \
             add a [Service] section with ExecStart= (transient instances), or install \
             neither@.service in a unit directory such as /etc/systemd/system and run \
             `systemctl daemon-reload` (template mode)\""
        )
    );
    // distributectl shows it too.
    let status = a.ctl(&["status", "both"]);
    assert!(
        status.output().contains("refuses transient instances"),
        "{status:?}"
    );
}

/// A template unit named `name@.service` running the demo instance, with `extra`
/// lines in `[Service]`; installed before the config that uses it.
fn install_template(a: &Activator, name: &str, extra: &str) {
    a.sb.install_unit(
        &format!("{name}@.service"),
        &format!(
            "[Service]\nExecStart={}/distribute-hello --idle-timeout 30s\nDynamicUser=yes\n{extra}",
            a.bin
        ),
    )
    .unwrap();
}

#[test]
fn the_dropin_adds_to_the_units_own_settings_and_goes_with_the_config() {
    let p = port(96);
    let Some(a) = Activator::start("template-dropin", &[]) else {
        return;
    };
    // The unit notifies from any process and keeps 2 fds of its own: our
    // drop-in must neither narrow NotifyAccess= nor take its fd store room.
    install_template(&a, "own", "NotifyAccess=all\nFileDescriptorStoreMax=2\n");
    a.write_config(
        "own",
        &format!("[Socket]\nListenStream=127.0.0.1:{p}\nService=own@.service\n"),
    );
    a.reload();
    get_hello(addr(p), Duration::from_secs(10)).expect("served");
    assert_eq!(a.unit_property("own@0.service", "NotifyAccess"), "all");
    assert_eq!(
        a.unit_property("own@0.service", "FileDescriptorStoreMax"),
        "3"
    );
    let dropin =
        a.sb.host_path("/run/systemd/system/own@.service.d/99-systemd-distribute.conf");
    let text = std::fs::read_to_string(&dropin).expect("our drop-in");
    println!("{}:\n{text}", dropin.display());
    assert!(!text.contains("NotifyAccess"), "{text}");

    // Unchanged: not written again, systemd not reloaded again.
    let wrote = |log: &str| {
        log.matches("wrote /run/systemd/system/own@.service.d")
            .count()
    };
    assert_eq!(wrote(&a.log()), 1);
    a.reload();
    assert_eq!(wrote(&a.log()), 1, "an unchanged drop-in is not rewritten");

    // The config goes away: so does the drop-in (and its directory).
    std::fs::remove_file(a.sb.dir().join("config/own.socket")).unwrap();
    a.reload();
    assert!(!dropin.exists(), "the drop-in outlived its config");
    assert!(!dropin.parent().unwrap().exists());
    a.assert_logged("no config uses own@.service any more");
    assert!(!a
        .unit_property("own@0.service", "DropInPaths")
        .contains("99-systemd-distribute"));
}

#[test]
fn a_crashing_template_instance_backs_off_then_fails() {
    let p = port(97);
    let Some(a) = Activator::start("template-crash", &[]) else {
        return;
    };
    a.sb.install_unit("crash@.service", "[Service]\nExecStart=/bin/false\n")
        .unwrap();
    a.write_config(
        "crash",
        &format!("[Socket]\nListenStream=127.0.0.1:{p}\nService=crash@.service\n"),
    );
    a.reload();
    let _queued = std::net::TcpStream::connect(addr(p)).expect("connect");
    a.assert_logged_within(
        Duration::from_secs(30),
        "crash@0.service: failed: instance failed after",
    );
    let status = a.ctl(&["status", "crash"]).output();
    assert!(
        status.contains("failed") && status.contains("5 failures in a row"),
        "{status}"
    );
    // Failed: the socket is no longer watched, the activator stays idle.
    let log = a.log();
    let starts = log.matches("crash@0.service: started").count();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.log().matches("crash@0.service: started").count(), starts);
    assert_eq!(starts, 5, "{log}");
}

#[test]
fn instance_names_from_a_pattern_and_operator_commands() {
    let p = port(98);
    let Some(a) = Activator::start("template-pattern", &[]) else {
        return;
    };
    install_template(&a, "shop", "Environment=SHOP=%i\n");
    a.write_config(
        "shops",
        &format!(
            "[Socket]\nListenStream=127.0.0.1:{p}\nDistribute=2\nService=shop@eu-%i.service\n"
        ),
    );
    a.reload();
    a.ctl(&["start", "shops"]).ok();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let units = a.instances("shop@*");
            units.len() == 2 && units.iter().all(|(_, s)| s == "active")
        }),
        "{:?}",
        a.instances("shop@*")
    );
    let names: Vec<String> = a.instances("shop@*").into_iter().map(|(u, _)| u).collect();
    assert_eq!(names, ["shop@eu-0.service", "shop@eu-1.service"]);
    assert!(a
        .unit_property("shop@eu-1.service", "Environment")
        .contains("SHOP=eu-1"));
    let status = a.ctl(&["status", "shops"]).ok().stdout;
    assert!(
        status.contains("Service: shop@eu-0.service … shop@eu-1.service"),
        "{status}"
    );

    // stop: the unit file's instance stops (it stays loaded or not), the
    // slot listens again; restart: a new main process.
    let before = a.unit_property("shop@eu-1.service", "MainPID");
    a.ctl(&["stop", "shops@0"]).ok();
    assert!(wait_until(Duration::from_secs(10), || {
        a.ctl(&["status", "shops"])
            .stdout
            .lines()
            .any(|l| l.contains("shop@eu-0.service") && l.contains("listening"))
    }));
    assert_ne!(
        a.unit_property("shop@eu-0.service", "ActiveState"),
        "active"
    );
    a.ctl(&["restart", "shops@1"]).ok();
    assert!(wait_until(Duration::from_secs(10), || {
        let now = a.unit_property("shop@eu-1.service", "MainPID");
        now != before && now != "0"
    }));
    // Both serve (instance 0 starts again on demand).
    let (hellos, failures) = fire(addr(p), 4, 25, Duration::ZERO);
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    assert_eq!(hellos.len(), 100);
}

#[test]
fn template_instances_follow_a_socket_replacement_without_loss() {
    let p = port(136);
    let Some(a) = start("template-replace", p, 2, "60s") else {
        return;
    };
    fire(addr(p), 2, 5, Duration::ZERO);
    let load = SteadyLoad::start(addr(p), 4, Duration::from_millis(5));
    std::thread::sleep(Duration::from_millis(300));
    // FreeBind= is fixed at bind time: new sockets, handed to the same
    // template's instances once the old ones have drained.
    a.write_config("tpl", &format!("{}FreeBind=yes\n", config(p, 2)));
    a.reload();
    assert!(
        a.wait_log(Duration::from_secs(30), |l| l
            .contains("tpl: the replaced sockets are closed")),
        "{}",
        a.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (served, failures) = load.finish();
    println!("{served} answered, {failures}");
    assert!(served > 50, "too little load to tell");
    assert_eq!(failures.total(), 0, "{failures}\n{}", a.log());
    a.assert_logged("binding new sockets next to the old ones");
    let (hellos, failures) = fire(addr(p), 2, 10, Duration::ZERO);
    assert_eq!(failures.total(), 0);
    assert_eq!(hellos.len(), 20);
}
