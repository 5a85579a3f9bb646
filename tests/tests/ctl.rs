//! distributectl end to end: every command, run inside the sandbox against the
//! real activator, as root and as an unprivileged user.

use distribute_tests::{
    addr, assert_contains_all, get_hello, hello_config, port, queue_connections, script_config,
    Activator, NOBODY,
};
use std::time::{Duration, Instant};

/// Waits until `distributectl --json=short status NAME` satisfies `pred`.
fn wait_status(a: &Activator, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = a.ctl(&["--json=short", "status", name]);
        if r.code == 0 && pred(&r.stdout) {
            return r.stdout;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:?}\n{}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running_units(json: &str) -> usize {
    json.matches("\"state\":\"running\"").count()
}

#[test]
fn read_commands_text_and_json() {
    let p = port(40);
    let Some(a) = Activator::start("ctl-read", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    // `distributectl` alone is `list`.
    let r = a.ctl(&[]).ok();
    assert!(r.stdout.starts_with("SOCKET"), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "web     serving  2        0  ListenStream=127.0.0.1:{p}"
        )),
        "{r:?}"
    );
    assert!(r.stdout.ends_with("\n1 socket listed.\n"), "{r:?}");
    assert_eq!(
        a.ctl(&["list", "--no-legend", "--no-pager"])
            .ok()
            .stdout
            .lines()
            .count(),
        1
    );
    let r = a.ctl(&["list", "--json=short"]).ok();
    assert_eq!(
        r.stdout.trim(),
        format!(
            r#"[{{"name":"web","path":"/org/distribute1/socket/web","listen":["ListenStream=127.0.0.1:{p}"],"distribute":2,"running":0,"state":"serving"}}]"#
        )
    );
    // Not a terminal: a bare --json is one line.
    assert_eq!(a.ctl(&["--json", "list"]).ok().stdout.lines().count(), 1);
    assert!(
        a.ctl(&["--json=pretty", "list"])
            .ok()
            .stdout
            .lines()
            .count()
            > 5
    );

    // One connection starts one instance.
    get_hello(addr(p), Duration::from_secs(10)).expect("request");
    wait_status(&a, "web", "one running instance", |j| running_units(j) == 1);
    let r = a.ctl(&["status", "web"]).ok();
    let text = &r.stdout;
    assert!(
        text.starts_with("● web - Distribute=2 socket config\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("     Listen: ListenStream=127.0.0.1:{p}\n")),
        "{text}"
    );
    assert!(text.contains(" Distribute: 2 (1 running)\n"), "{text}");
    assert!(
        text.contains("    Service: web@0.service … web@1.service\n"),
        "{text}"
    );
    assert!(text.contains("      State: serving\n"), "{text}");
    assert!(
        text.contains(&format!(
            "     Source: {}\n",
            a.sb.inside("config/web.socket")
        )),
        "{text}"
    );
    assert!(text.contains("  UNIT           STATE"), "{text}");
    let running_line = text
        .lines()
        .find(|l| l.contains(".service  running"))
        .unwrap_or_else(|| panic!("no running instance line: {text}"));
    let pid: u32 = running_line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .expect("a PID");
    assert!(pid > 1, "{running_line}");
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    // SYSTEMD_COLORS forces colour, NO_COLOR turns it off.
    let out =
        a.sb.command(&format!("{}/distributectl", a.bin))
            .args(["status", "web"])
            .env("SYSTEMD_COLORS", "1")
            .output()
            .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\x1b[0;1;32mrunning\x1b[0m"));
    let out =
        a.sb.command(&format!("{}/distributectl", a.bin))
            .args(["status", "web"])
            .env("NO_COLOR", "1")
            .env_remove("SYSTEMD_COLORS")
            .output()
            .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));

    // status without names shows all; JSON has every field.
    assert_eq!(
        a.ctl(&["status"]).ok().stdout,
        a.ctl(&["status", "web"]).ok().stdout
    );
    let j = a.ctl(&["status", "--json=short"]).ok().stdout;
    assert_contains_all(
        &j,
        &[
            r#""name":"web""#,
            r#""path":"/org/distribute1/socket/web""#,
            r#""distribute":2"#,
            r#""service":"web""#,
            r#""state":"serving""#,
            r#""error":"""#,
            r#""unit":"web@0.service""#,
            r#""unit":"web@1.service""#,
            r#""main_pid":"#,
            r#""queue_depth":"#,
            r#""activations":"#,
            r#""failures":0"#,
            r#""reason":"#,
            &format!(r#""main_pid":{pid}"#),
        ],
    );

    // cat: the source files with headers.
    let r = a.ctl(&["cat", "web"]).ok();
    let path = a.sb.inside("config/web.socket");
    assert!(
        r.stdout.starts_with(&format!("# {path}\n[Socket]\n")),
        "{r:?}"
    );
    assert!(r.stdout.contains("Distribute=2\n"), "{r:?}");
    let r = a.ctl(&["cat", "web", "--json=short"]).ok();
    assert!(
        r.stdout.starts_with(&format!(
            r#"[{{"name":"web","files":[{{"path":"{path}","content":"[Socket]\n"#
        )),
        "{r:?}"
    );

    // Unknown sockets: exit 4, systemctl's wording.
    for args in [
        &["status", "nosuch"][..],
        &["status", "web", "nosuch"],
        &["cat", "nosuch"],
        &["scale", "nosuch", "2"],
        &["restart", "nosuch@0"],
        &["stop", "nosuch"],
        &["start", "nosuch"],
    ] {
        a.ctl(args)
            .fails_with(4, "Socket nosuch could not be found.");
    }
    // ...and the known one is still shown next to the unknown one.
    assert!(a.ctl(&["status", "web", "nosuch"]).stdout.contains("● web"));
}

#[test]
fn changing_commands() {
    let p = port(41);
    let Some(a) = Activator::start("ctl-change", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    // scale up: a third slot appears.
    a.ctl(&["scale", "web", "3"]).ok();
    wait_status(&a, "web", "N=3", |j| {
        j.contains(r#""distribute":3"#) && j.contains("web@2.service")
    });
    // start one instance, then all.
    a.ctl(&["start", "web@2"]).ok();
    wait_status(&a, "web", "web@2 running", |j| {
        j.contains(r#""unit":"web@2.service","state":"running""#)
    });
    a.ctl(&["start", "web"]).ok();
    let j = wait_status(&a, "web", "all running", |j| running_units(j) == 3);
    assert_eq!(a.instances("web@*").len(), 3, "{j}");
    // restart one: a new PID.
    let pid_of = |j: &str, unit: &str| -> String {
        let key = format!(r#""unit":"{unit}","state":"running","main_pid":"#);
        let rest = &j[j
            .find(&key)
            .unwrap_or_else(|| panic!("{unit} not running: {j}"))
            + key.len()..];
        rest.split(',').next().unwrap().to_string()
    };
    let before = pid_of(&j, "web@0.service");
    a.ctl(&["restart", "web@0.service"]).ok();
    wait_status(&a, "web", "web@0 restarted", |j| {
        j.contains(r#""unit":"web@0.service","state":"running""#)
            && pid_of(j, "web@0.service") != before
    });
    // stop one, then all; the sockets stay: a connection starts one again.
    a.ctl(&["stop", "web@1"]).ok();
    wait_status(&a, "web", "web@1 stopped", |j| {
        !j.contains(r#""unit":"web@1.service","state":"running""#)
    });
    a.ctl(&["stop", "web"]).ok();
    wait_status(&a, "web", "all stopped", |j| running_units(j) == 0);
    get_hello(addr(p), Duration::from_secs(10)).expect("a stopped config still serves");
    // reload applies a changed file.
    a.write_config("web", &hello_config(p, 4, "30s"));
    a.ctl(&["reload"]).ok();
    wait_status(&a, "web", "N=4 after reload", |j| {
        j.contains(r#""distribute":4"#)
    });

    // Bad arguments: exit 1 with the daemon's message; bad command lines: 2.
    a.ctl(&["scale", "web", "0"])
        .fails_with(1, "Failed to scale web to 0: invalid argument:");
    a.ctl(&["start", "web@9"])
        .fails_with(1, "Failed to start web@9: invalid argument:");
    a.ctl(&["restart", "web@x"])
        .fails_with(1, "expected NAME or NAME@I");
    assert_eq!(a.ctl(&["scale", "web", "many"]).code, 2);
    assert_eq!(a.ctl(&["frobnicate"]).code, 2);
}

#[test]
fn unprivileged_users_may_read_but_not_change() {
    let p = port(42);
    let Some(a) = Activator::start("ctl-nobody", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    let r = a.ctl_as(NOBODY, &["list"]).ok();
    assert!(r.stdout.contains("web"), "{r:?}");
    let r = a.ctl_as(NOBODY, &["status", "web"]).ok();
    assert!(r.stdout.contains(" Distribute: 2"), "{r:?}");
    a.ctl_as(NOBODY, &["--json", "status"]).ok();
    for args in [
        &["scale", "web", "3"][..],
        &["restart", "web@0"],
        &["stop", "web"],
        &["start", "web@1"],
        &["reload"],
    ] {
        a.ctl_as(NOBODY, args)
            .fails_with(1, "Access denied (only root may change systemd-distribute)");
    }
    // Nothing changed.
    let r = a.ctl(&["--json=short", "status", "web"]).ok();
    assert!(
        r.stdout.contains(r#""distribute":2"#) && running_units(&r.stdout) == 0,
        "{r:?}"
    );
}

#[test]
fn offline_commands_and_daemon_not_running() {
    let p = port(43);
    let Some(a) = Activator::start("ctl-offline", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    let good =
        a.sb.write_file(
            "check/good.socket",
            "[Socket]\nListenStream=8080\nDistribute=2\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
    let bad =
        a.sb.write_file(
            "check/bad.socket",
            "[Socket]\nListenStream=8080\nDistribute=0\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
    a.sb.write_file(
        "check/dropin.socket",
        "[Socket]\nListenStream=8081\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    a.sb.write_file(
        "check/dropin.socket.d/50-typo.conf",
        "[Service]\n\nExecStrat=/bin/false\n",
    )
    .unwrap();
    let dropin = a.sb.inside("check/dropin.socket");
    let unix =
        a.sb.write_file(
            "check/unix.socket",
            "[Socket]\nListenStream=/run/x.sock\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();

    let r = a.ctl(&["verify", &good]).ok();
    assert!(r.stderr.is_empty(), "{r:?}");
    assert!(
        r.stdout.starts_with(&format!("{good}: transient mode: ")),
        "verify says the mode: {r:?}"
    );
    let r = a.ctl(&["verify", &good, &bad, &dropin, &unix]);
    assert_eq!(r.code, 1, "{r:?}");
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "one problem per bad file: {r:?}");
    assert!(
        lines[0].starts_with(&format!("{bad}:3: Distribute=0: ")),
        "{r:?}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{dropin}.d/50-typo.conf:3: ExecStrat=/bin/false: "
        )),
        "{r:?}"
    );
    assert!(lines[2].starts_with(&format!("{unix}:2: ")), "{r:?}");
    let r = a.ctl(&["verify", "--json=short", &good, &bad]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains(r#""errors":[]"#) && r.stdout.contains(r#""line":3,"key":"Distribute""#),
        "{r:?}"
    );

    let r = a.ctl(&["completions", "bash"]).ok();
    assert!(
        r.stdout.contains("_distributectl()"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    for shell in ["zsh", "fish"] {
        assert!(a
            .ctl(&["completions", shell])
            .ok()
            .stdout
            .contains("distributectl"));
    }

    // The daemon stops: a clear message, exit 1, for reads and changes alike.
    a.stop();
    for args in [
        &["list"][..],
        &["status", "web"],
        &["scale", "web", "3"],
        &["reload"],
        &["cat", "web"],
    ] {
        let r = a.ctl(args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert_eq!(
            r.stderr,
            "systemd-distribute is not running (org.distribute1 has no owner on the system bus)\n",
            "{args:?}"
        );
    }
    // Offline commands do not care.
    a.ctl(&["verify", &good]).ok();
}

#[test]
fn failed_instance_shows_queue_failures_and_reason() {
    let p = port(48);
    let crash = script_config(p, "", "exit 3", "");
    let Some(a) = Activator::start("ctl-failed", &[("crash", &crash)]) else {
        return;
    };
    // Connections that nobody accepts: every start of the instance fails.
    let _queued = queue_connections(p, 3);
    let j = wait_status(&a, "crash", "the instance to fail", |j| {
        j.contains(r#""unit":"crash@0.service","state":"failed""#)
    });
    assert!(j.contains(r#""queue_depth":3"#), "{j}");
    assert!(!j.contains(r#""reason":"""#), "a reason is given: {j}");
    let r = a.ctl(&["status", "crash"]).ok();
    assert!(
        r.stdout.contains(" Distribute: 1 (0 running, 1 failed)\n"),
        "{r:?}"
    );
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("  crash@0.service"))
        .unwrap_or_else(|| panic!("{r:?}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        ["crash@0.service", "failed", "-", "3"],
        "{line}"
    );
    assert!(cols.len() > 6, "failures and a reason: {line}");
    // `start` clears the failed state (and it fails again, later).
    a.ctl(&["start", "crash@0"]).ok();
}
