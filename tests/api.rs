//! The org.distribute1 D-Bus API as operators use it: busctl and dbus-send
//! inside the sandbox, as root and as an unprivileged user.

use distribute_tests::{port, Activator};
use std::process::Command;
use std::time::{Duration, Instant};

fn config(port: u16, n: u32) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\n\n[Service]\nExecStart=@BIN@/distribute-hello --idle-timeout 30s\nDynamicUser=yes\n"
    )
}

const NOBODY: u32 = 65534;

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }
}

fn run(mut cmd: Command, what: String) -> Run {
    let out = cmd.output().expect("running a command in the sandbox");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("$ {what} -> {}\n{}{}", r.code, r.stdout, r.stderr);
    r
}

/// `PROGRAM ARGS` in the sandbox, as root or as `uid`.
fn as_user(a: &Activator, uid: Option<u32>, program: &str, args: &[&str]) -> Run {
    let mut cmd = match uid {
        None => a.sb.command(program),
        Some(uid) => {
            let mut c = a.sb.command("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(program);
            c
        }
    };
    cmd.args(args);
    run(cmd, format!("{program} {} (uid {uid:?})", args.join(" ")))
}

fn busctl(a: &Activator, args: &[&str]) -> Run {
    as_user(a, None, "busctl", args)
}

/// A method call with `dbus-send`, which prints D-Bus error *names*
/// (`Error org.freedesktop.DBus.Error.InvalidArgs: ...`), unlike busctl.
fn dbus_send(a: &Activator, uid: Option<u32>, path: &str, method: &str, args: &[&str]) -> Run {
    let dest = "--dest=org.distribute1".to_string();
    let mut full = vec!["--system", "--print-reply", dest.as_str(), path, method];
    full.extend_from_slice(args);
    as_user(a, uid, "dbus-send", &full)
}

fn error_name(r: &Run) -> &str {
    assert_ne!(r.code, 0, "expected an error: {r:?}");
    r.stderr
        .strip_prefix("Error ")
        .and_then(|s| s.split(':').next())
        .unwrap_or_else(|| panic!("no error name in {r:?}"))
}

const WEB: &str = "/org/distribute1/socket/web";

#[test]
fn busctl_introspects_reads_and_calls() {
    let p = port(44);
    let Some(a) = Activator::start(
        "api-busctl",
        &[("web", &config(p, 2)), ("my-app", &config(p + 1, 1))],
    ) else {
        return;
    };
    // Objects: names escaped like systemd's (web-api -> web_2dapi).
    let tree = busctl(&a, &["tree", "--list", "org.distribute1"])
        .ok()
        .stdout;
    for path in ["/org/distribute1", WEB, "/org/distribute1/socket/my_2dapp"] {
        assert!(tree.lines().any(|l| l == path), "{path} missing in {tree}");
    }
    // Introspection: signatures and argument names.
    let manager = busctl(
        &a,
        &[
            "introspect",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
        ],
    )
    .ok()
    .stdout;
    for member in [
        ".GetSocket",
        ".ListSockets",
        ".Reload",
        ".Sockets",
        ".Version",
        ".SocketAdded",
        ".SocketChanged",
        ".SocketRemoved",
    ] {
        assert!(manager.contains(member), "{member} in {manager}");
    }
    assert!(manager.contains("a(soasuus)"), "{manager}");
    let socket = busctl(
        &a,
        &[
            "introspect",
            "org.distribute1",
            WEB,
            "org.distribute1.Socket",
        ],
    )
    .ok()
    .stdout;
    for member in [
        ".SetDistribute",
        ".StartInstance",
        ".StopInstance",
        ".RestartInstance",
        ".Name",
        ".Listen",
        ".Distribute",
        ".Service",
        ".State",
        ".Error",
        ".Sources",
        ".Instances",
    ] {
        assert!(socket.contains(member), "{member} in {socket}");
    }
    assert!(socket.contains("a(ussuttus)"), "{socket}");
    let xml = busctl(
        &a,
        &[
            "--xml-interface",
            "introspect",
            "org.distribute1",
            "/org/distribute1",
        ],
    )
    .ok()
    .stdout;
    assert!(
        xml.contains(r#"<method name="GetSocket">"#)
            && xml.contains(r#"<arg name="name" type="s" direction="in"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<arg name="path" type="o" direction="out"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<arg name="sockets" type="a(soasuus)" direction="out"/>"#),
        "{xml}"
    );

    // Properties.
    let get = |path: &str, iface: &str, prop: &str| {
        busctl(&a, &["get-property", "org.distribute1", path, iface, prop])
            .ok()
            .stdout
            .trim()
            .to_string()
    };
    let version = format!("s \"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        get("/org/distribute1", "org.distribute1.Manager", "Version"),
        version
    );
    assert_eq!(
        get("/org/distribute1", "org.distribute1.Manager", "Sockets"),
        r#"ao 2 "/org/distribute1/socket/my_2dapp" "/org/distribute1/socket/web""#
    );
    let s = "org.distribute1.Socket";
    assert_eq!(get(WEB, s, "Name"), r#"s "web""#);
    assert_eq!(
        get(WEB, s, "Listen"),
        format!(r#"as 1 "ListenStream=127.0.0.1:{p}""#)
    );
    assert_eq!(get(WEB, s, "Distribute"), "u 2");
    assert_eq!(get(WEB, s, "Service"), r#"s "web""#);
    assert_eq!(get(WEB, s, "State"), r#"s "serving""#);
    assert_eq!(get(WEB, s, "Error"), r#"s """#);
    assert_eq!(
        get(WEB, s, "Sources"),
        format!(r#"as 1 "{}""#, a.sb.inside("config/web.socket"))
    );
    let instances = get(WEB, s, "Instances");
    assert!(
        instances.starts_with(
            r#"a(ussuttus) 2 0 "web@0.service" "listening" 0 0 0 0 "" 1 "web@1.service""#
        ),
        "{instances}"
    );

    // Methods.
    let r = busctl(
        &a,
        &[
            "call",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
            "GetSocket",
            "s",
            "my-app",
        ],
    )
    .ok();
    assert_eq!(r.stdout.trim(), r#"o "/org/distribute1/socket/my_2dapp""#);
    let r = busctl(
        &a,
        &[
            "call",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
            "ListSockets",
        ],
    )
    .ok();
    assert!(r.stdout.starts_with(&format!(
        r#"a(soasuus) 2 "my-app" "/org/distribute1/socket/my_2dapp" 1 "ListenStream=127.0.0.1:{}" 1 0 "serving" "web" "{WEB}" 1 "ListenStream=127.0.0.1:{p}" 2 0 "serving""#,
        p + 1
    )), "{r:?}");
    busctl(
        &a,
        &["call", "org.distribute1", WEB, s, "StartInstance", "u", "1"],
    )
    .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(WEB, s, "Instances").contains(r#""web@1.service" "running""#) {
        assert!(
            Instant::now() < deadline,
            "web@1 did not start: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    busctl(
        &a,
        &["call", "org.distribute1", WEB, s, "SetDistribute", "u", "3"],
    )
    .ok();
    assert_eq!(get(WEB, s, "Distribute"), "u 3");
    // Reload applies a changed file.
    a.write_config("web", &config(p, 4));
    busctl(
        &a,
        &[
            "call",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
            "Reload",
        ],
    )
    .ok();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(WEB, s, "Distribute") != "u 4" {
        assert!(
            Instant::now() < deadline,
            "Reload did not apply Distribute=4: {}",
            a.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn errors_and_access_control() {
    let p = port(46);
    let Some(a) = Activator::start("api-errors", &[("web", &config(p, 2))]) else {
        return;
    };
    let m = "/org/distribute1";
    // Bad arguments and unknown sockets, as root.
    let r = dbus_send(
        &a,
        None,
        WEB,
        "org.distribute1.Socket.SetDistribute",
        &["uint32:0"],
    );
    assert_eq!(error_name(&r), "org.freedesktop.DBus.Error.InvalidArgs");
    let r = dbus_send(
        &a,
        None,
        WEB,
        "org.distribute1.Socket.SetDistribute",
        &["uint32:100000"],
    );
    assert_eq!(error_name(&r), "org.freedesktop.DBus.Error.InvalidArgs");
    for method in ["StartInstance", "StopInstance", "RestartInstance"] {
        let r = dbus_send(
            &a,
            None,
            WEB,
            &format!("org.distribute1.Socket.{method}"),
            &["uint32:2"],
        );
        assert_eq!(
            error_name(&r),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{method}"
        );
        assert!(
            r.stderr.len() > "Error org.freedesktop.DBus.Error.InvalidArgs: ".len() + 5,
            "a message: {r:?}"
        );
    }
    let r = dbus_send(
        &a,
        None,
        m,
        "org.distribute1.Manager.GetSocket",
        &["string:nosuch"],
    );
    assert_eq!(error_name(&r), "org.distribute1.Error.NoSuchSocket");
    assert!(r.stderr.contains("nosuch"), "{r:?}");
    // Wrong argument types are rejected by zbus itself, under its own error
    // name (org.freedesktop.zbus.Error), before our code runs.
    let r = dbus_send(
        &a,
        None,
        WEB,
        "org.distribute1.Socket.SetDistribute",
        &["string:three"],
    );
    assert!(
        r.code != 0 && r.stderr.contains("Signature mismatch"),
        "{r:?}"
    );

    // An unprivileged user reads...
    let nobody = Some(NOBODY);
    let r = as_user(
        &a,
        nobody,
        "busctl",
        &[
            "get-property",
            "org.distribute1",
            WEB,
            "org.distribute1.Socket",
            "Distribute",
        ],
    )
    .ok();
    assert_eq!(r.stdout.trim(), "u 2");
    as_user(
        &a,
        nobody,
        "busctl",
        &[
            "get-property",
            "org.distribute1",
            WEB,
            "org.distribute1.Socket",
            "Instances",
        ],
    )
    .ok();
    as_user(
        &a,
        nobody,
        "busctl",
        &["introspect", "org.distribute1", WEB],
    )
    .ok();
    as_user(
        &a,
        nobody,
        "busctl",
        &[
            "call",
            "org.distribute1",
            m,
            "org.distribute1.Manager",
            "ListSockets",
        ],
    )
    .ok();
    as_user(
        &a,
        nobody,
        "busctl",
        &[
            "call",
            "org.distribute1",
            m,
            "org.distribute1.Manager",
            "GetSocket",
            "s",
            "web",
        ],
    )
    .ok();
    // ...but changes nothing.
    for (path, method, args) in [
        (
            WEB,
            "org.distribute1.Socket.SetDistribute",
            &["uint32:3"][..],
        ),
        (WEB, "org.distribute1.Socket.StartInstance", &["uint32:0"]),
        (WEB, "org.distribute1.Socket.StopInstance", &["uint32:0"]),
        (WEB, "org.distribute1.Socket.RestartInstance", &["uint32:0"]),
        (m, "org.distribute1.Manager.Reload", &[]),
    ] {
        let r = dbus_send(&a, nobody, path, method, args);
        assert_eq!(
            error_name(&r),
            "org.freedesktop.DBus.Error.AccessDenied",
            "{method}"
        );
    }
    let r = as_user(
        &a,
        nobody,
        "busctl",
        &[
            "set-property",
            "org.distribute1",
            WEB,
            "org.distribute1.Socket",
            "Distribute",
            "u",
            "5",
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(
        busctl(
            &a,
            &[
                "get-property",
                "org.distribute1",
                WEB,
                "org.distribute1.Socket",
                "Distribute"
            ]
        )
        .ok()
        .stdout
        .trim(),
        "u 2"
    );
    // Nobody but root may own the name.
    let r = as_user(
        &a,
        nobody,
        "busctl",
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            "org.distribute1",
            "0",
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Access denied"), "{r:?}");
}

#[test]
fn changes_are_signalled() {
    let p = port(47);
    let Some(a) = Activator::start("api-signals", &[("web", &config(p, 2))]) else {
        return;
    };
    // dbus-monitor flushes after every message; `timeout` ends it.
    let monitor =
        a.sb.command("timeout")
            .args([
                "6",
                "dbus-monitor",
                "--system",
                "type='signal',sender='org.distribute1'",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("dbus-monitor");
    std::thread::sleep(Duration::from_millis(1500));
    busctl(
        &a,
        &[
            "call",
            "org.distribute1",
            WEB,
            "org.distribute1.Socket",
            "SetDistribute",
            "u",
            "3",
        ],
    )
    .ok();
    // Changes are published coalesced (50 ms); a reload right after would
    // return to the file's Distribute=2 before 3 was ever announced.
    std::thread::sleep(Duration::from_millis(500));
    a.write_config("extra", &config(p + 1, 1));
    busctl(
        &a,
        &[
            "call",
            "org.distribute1",
            "/org/distribute1",
            "org.distribute1.Manager",
            "Reload",
        ],
    )
    .ok();
    let out = monitor.wait_with_output().expect("dbus-monitor output");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let changed = text
        .split("signal ")
        .find(|s| {
            s.contains(&format!("path={WEB}"))
                && s.contains("member=PropertiesChanged")
                && s.contains("\"Distribute\"")
        })
        .unwrap_or_else(|| panic!("no PropertiesChanged of Distribute on {WEB}:\n{text}"));
    assert!(
        changed.contains("string \"org.distribute1.Socket\""),
        "{changed}"
    );
    assert!(changed.contains("uint32 3"), "{changed}");
    assert!(text.contains("member=SocketChanged"), "{text}");
    let added = text
        .split("signal ")
        .find(|s| s.contains("member=SocketAdded"))
        .unwrap_or_else(|| panic!("no SocketAdded:\n{text}"));
    assert!(
        added.contains("string \"extra\"")
            && added.contains("object path \"/org/distribute1/socket/extra\""),
        "{added}"
    );
    assert!(
        text.split("signal ")
            .any(|s| s.contains("path=/org/distribute1;")
                && s.contains("member=PropertiesChanged")
                && s.contains("\"Sockets\"")),
        "no PropertiesChanged of Sockets:\n{text}"
    );
}
