//! distributectl end to end: every command, run inside the sandbox against the
//! real activator, as root and as an unprivileged user.

use distribute_tests::{get_hello, port, Activator};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn config(port: u16, n: u32) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\n\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 30s\nDynamicUser=yes\n"
    )
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What a distributectl run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "distributectl failed: {self:?}");
        self
    }
}

/// `distributectl ARGS` inside the sandbox, as root (`uid` None) or as `uid`.
fn ctl_as(a: &Activator, uid: Option<u32>, args: &[&str]) -> Run {
    let bin = format!("{}/distributectl", a.bin);
    let mut cmd = match uid {
        None => a.sb.command(&bin),
        Some(uid) => {
            let mut c = a.sb.command("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(&bin);
            c
        }
    };
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env_remove("SYSTEMD_COLORS");
    let out = cmd.output().expect("running distributectl in the sandbox");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!(
        "$ distributectl {} (uid {uid:?}) -> {}\n{}{}",
        args.join(" "),
        run.code,
        run.stdout,
        run.stderr
    );
    run
}

fn ctl(a: &Activator, args: &[&str]) -> Run {
    ctl_as(a, None, args)
}

/// Waits until `distributectl --json=short status NAME` satisfies `pred`.
fn wait_status(a: &Activator, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ctl(a, &["--json=short", "status", name]);
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
    let Some(a) = Activator::start("ctl-read", &[("web", &config(p, 2))]) else {
        return;
    };
    // `distributectl` alone is `list`.
    let r = ctl(&a, &[]).ok();
    assert!(r.stdout.starts_with("SOCKET"), "{r:?}");
    assert!(
        r.stdout.contains(&format!(
            "web     serving  2        0  ListenStream=127.0.0.1:{p}"
        )),
        "{r:?}"
    );
    assert!(r.stdout.ends_with("\n1 socket listed.\n"), "{r:?}");
    assert_eq!(
        ctl(&a, &["list", "--no-legend", "--no-pager"])
            .ok()
            .stdout
            .lines()
            .count(),
        1
    );
    let r = ctl(&a, &["list", "--json=short"]).ok();
    assert_eq!(
        r.stdout.trim(),
        format!(
            r#"[{{"name":"web","path":"/org/distribute1/socket/web","listen":["ListenStream=127.0.0.1:{p}"],"distribute":2,"running":0,"state":"serving"}}]"#
        )
    );
    // Not a terminal: a bare --json is one line.
    assert_eq!(ctl(&a, &["--json", "list"]).ok().stdout.lines().count(), 1);
    assert!(
        ctl(&a, &["--json=pretty", "list"])
            .ok()
            .stdout
            .lines()
            .count()
            > 5
    );

    // One connection starts one instance.
    get_hello(addr(p), Duration::from_secs(10)).expect("request");
    wait_status(&a, "web", "one running instance", |j| running_units(j) == 1);
    let r = ctl(&a, &["status", "web"]).ok();
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
        ctl(&a, &["status"]).ok().stdout,
        ctl(&a, &["status", "web"]).ok().stdout
    );
    let j = ctl(&a, &["status", "--json=short"]).ok().stdout;
    for field in [
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
    ] {
        assert!(j.contains(field), "{field} missing in {j}");
    }

    // cat: the source files with headers.
    let r = ctl(&a, &["cat", "web"]).ok();
    let path = a.sb.inside("config/web.socket");
    assert!(
        r.stdout.starts_with(&format!("# {path}\n[Socket]\n")),
        "{r:?}"
    );
    assert!(r.stdout.contains("Distribute=2\n"), "{r:?}");
    let r = ctl(&a, &["cat", "web", "--json=short"]).ok();
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
        let r = ctl(&a, args);
        assert_eq!(r.code, 4, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("Socket nosuch could not be found."),
            "{args:?}: {r:?}"
        );
    }
    // ...and the known one is still shown next to the unknown one.
    assert!(ctl(&a, &["status", "web", "nosuch"])
        .stdout
        .contains("● web"));
}

#[test]
fn changing_commands() {
    let p = port(41);
    let Some(a) = Activator::start("ctl-change", &[("web", &config(p, 2))]) else {
        return;
    };
    // scale up: a third slot appears.
    ctl(&a, &["scale", "web", "3"]).ok();
    wait_status(&a, "web", "N=3", |j| {
        j.contains(r#""distribute":3"#) && j.contains("web@2.service")
    });
    // start one instance, then all.
    ctl(&a, &["start", "web@2"]).ok();
    wait_status(&a, "web", "web@2 running", |j| {
        j.contains(r#""unit":"web@2.service","state":"running""#)
    });
    ctl(&a, &["start", "web"]).ok();
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
    ctl(&a, &["restart", "web@0.service"]).ok();
    wait_status(&a, "web", "web@0 restarted", |j| {
        j.contains(r#""unit":"web@0.service","state":"running""#)
            && pid_of(j, "web@0.service") != before
    });
    // stop one, then all; the sockets stay: a connection starts one again.
    ctl(&a, &["stop", "web@1"]).ok();
    wait_status(&a, "web", "web@1 stopped", |j| {
        !j.contains(r#""unit":"web@1.service","state":"running""#)
    });
    ctl(&a, &["stop", "web"]).ok();
    wait_status(&a, "web", "all stopped", |j| running_units(j) == 0);
    get_hello(addr(p), Duration::from_secs(10)).expect("a stopped config still serves");
    // reload applies a changed file.
    a.write_config("web", &config(p, 4));
    ctl(&a, &["reload"]).ok();
    wait_status(&a, "web", "N=4 after reload", |j| {
        j.contains(r#""distribute":4"#)
    });

    // Bad arguments: exit 1 with the daemon's message; bad command lines: 2.
    let r = ctl(&a, &["scale", "web", "0"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("Failed to scale web to 0: invalid argument:"),
        "{r:?}"
    );
    let r = ctl(&a, &["start", "web@9"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr
            .contains("Failed to start web@9: invalid argument:"),
        "{r:?}"
    );
    let r = ctl(&a, &["restart", "web@x"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("expected NAME or NAME@I"), "{r:?}");
    assert_eq!(ctl(&a, &["scale", "web", "many"]).code, 2);
    assert_eq!(ctl(&a, &["frobnicate"]).code, 2);
}

#[test]
fn unprivileged_users_may_read_but_not_change() {
    let p = port(42);
    let Some(a) = Activator::start("ctl-nobody", &[("web", &config(p, 2))]) else {
        return;
    };
    let nobody = Some(65534);
    let r = ctl_as(&a, nobody, &["list"]).ok();
    assert!(r.stdout.contains("web"), "{r:?}");
    let r = ctl_as(&a, nobody, &["status", "web"]).ok();
    assert!(r.stdout.contains(" Distribute: 2"), "{r:?}");
    ctl_as(&a, nobody, &["--json", "status"]).ok();
    for args in [
        &["scale", "web", "3"][..],
        &["restart", "web@0"],
        &["stop", "web"],
        &["start", "web@1"],
        &["reload"],
    ] {
        let r = ctl_as(&a, nobody, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert!(
            r.stderr
                .contains("Access denied (only root may change systemd-distribute)"),
            "{args:?}: {r:?}"
        );
    }
    // Nothing changed.
    let r = ctl(&a, &["--json=short", "status", "web"]).ok();
    assert!(
        r.stdout.contains(r#""distribute":2"#) && running_units(&r.stdout) == 0,
        "{r:?}"
    );
}

#[test]
fn offline_commands_and_daemon_not_running() {
    let p = port(43);
    let Some(a) = Activator::start("ctl-offline", &[("web", &config(p, 2))]) else {
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

    let r = ctl(&a, &["verify", &good]).ok();
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", ""));
    let r = ctl(&a, &["verify", &good, &bad, &dropin, &unix]);
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
    let r = ctl(&a, &["verify", "--json=short", &good, &bad]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout.contains(r#""errors":[]"#) && r.stdout.contains(r#""line":3,"key":"Distribute""#),
        "{r:?}"
    );

    let r = ctl(&a, &["completions", "bash"]).ok();
    assert!(
        r.stdout.contains("_distributectl()"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    for shell in ["zsh", "fish"] {
        assert!(ctl(&a, &["completions", shell])
            .ok()
            .stdout
            .contains("distributectl"));
    }

    // The daemon stops: a clear message, exit 1, for reads and changes alike.
    a.sb.systemctl(&["stop", "systemd-distribute.service"])
        .unwrap();
    for args in [
        &["list"][..],
        &["status", "web"],
        &["scale", "web", "3"],
        &["reload"],
        &["cat", "web"],
    ] {
        let r = ctl(&a, args);
        assert_eq!(r.code, 1, "{args:?}: {r:?}");
        assert_eq!(
            r.stderr,
            "systemd-distribute is not running (org.distribute1 has no owner on the system bus)\n",
            "{args:?}"
        );
    }
    // Offline commands do not care.
    ctl(&a, &["verify", &good]).ok();
}

#[test]
fn failed_instance_shows_queue_failures_and_reason() {
    let p = port(48);
    let crash = format!(
        "[Socket]\nListenStream=127.0.0.1:{p}\nDistribute=1\n\n[Service]\nExecStart=/bin/sh -c 'exit 3'\n"
    );
    let Some(a) = Activator::start("ctl-failed", &[("crash", &crash)]) else {
        return;
    };
    // Connections that nobody accepts: every start of the instance fails.
    let _queued: Vec<_> = (0..3)
        .filter_map(|_| std::net::TcpStream::connect(addr(p)).ok())
        .collect();
    let j = wait_status(&a, "crash", "the instance to fail", |j| {
        j.contains(r#""unit":"crash@0.service","state":"failed""#)
    });
    assert!(j.contains(r#""queue_depth":3"#), "{j}");
    assert!(!j.contains(r#""reason":"""#), "a reason is given: {j}");
    let r = ctl(&a, &["status", "crash"]).ok();
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
    ctl(&a, &["start", "crash@0"]).ok();
}
