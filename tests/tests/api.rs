//! The org.distribute1 D-Bus API as operators use it: busctl and dbus-send
//! inside the sandbox, as root and as an unprivileged user.

use distribute_tests::{
    assert_contains_all, hello_config, port, wait_until, Activator, Run, BUS, MANAGER,
    MANAGER_PATH, NOBODY, ROOT, SOCKET,
};
use std::time::Duration;

/// `busctl ARGS` in the sandbox, as root or as `uid`.
fn busctl(a: &Activator, uid: Option<u32>, args: &[&str]) -> Run {
    a.run_as(uid, "busctl", args)
}

/// A method call with `dbus-send`, which prints D-Bus error *names*
/// (`Error org.freedesktop.DBus.Error.InvalidArgs: ...`), unlike busctl.
fn dbus_send(a: &Activator, uid: Option<u32>, path: &str, method: &str, args: &[&str]) -> Run {
    let dest = format!("--dest={BUS}");
    let mut full = vec!["--system", "--print-reply", dest.as_str(), path, method];
    full.extend_from_slice(args);
    a.run_as(uid, "dbus-send", &full)
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
        &[
            ("web", &hello_config(p, 2, "30s")),
            ("my-app", &hello_config(p + 1, 1, "30s")),
        ],
    ) else {
        return;
    };
    // Objects: names escaped like systemd's (web-api -> web_2dapi).
    let tree = busctl(&a, ROOT, &["tree", "--list", BUS]).ok().stdout;
    for path in [MANAGER_PATH, WEB, "/org/distribute1/socket/my_2dapp"] {
        assert!(tree.lines().any(|l| l == path), "{path} missing in {tree}");
    }
    // Introspection: signatures and argument names.
    let manager = busctl(&a, ROOT, &["introspect", BUS, MANAGER_PATH, MANAGER])
        .ok()
        .stdout;
    assert_contains_all(
        &manager,
        &[
            ".GetSocket",
            ".ListSockets",
            ".Reload",
            ".Sockets",
            ".Version",
            ".SocketAdded",
            ".SocketChanged",
            ".SocketRemoved",
            "a(soasuus)",
        ],
    );
    let socket = busctl(&a, ROOT, &["introspect", BUS, WEB, SOCKET])
        .ok()
        .stdout;
    assert_contains_all(
        &socket,
        &[
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
            "a(ussuttus)",
        ],
    );
    let xml = busctl(
        &a,
        ROOT,
        &["--xml-interface", "introspect", BUS, MANAGER_PATH],
    )
    .ok()
    .stdout;
    assert_contains_all(
        &xml,
        &[
            r#"<method name="GetSocket">"#,
            r#"<arg name="name" type="s" direction="in"/>"#,
            r#"<arg name="path" type="o" direction="out"/>"#,
            r#"<arg name="sockets" type="a(soasuus)" direction="out"/>"#,
        ],
    );

    // Properties.
    let get = |path: &str, iface: &str, prop: &str| a.bus_property(ROOT, path, iface, prop);
    let version = format!("s \"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(get(MANAGER_PATH, MANAGER, "Version"), version);
    assert_eq!(
        get(MANAGER_PATH, MANAGER, "Sockets"),
        r#"ao 2 "/org/distribute1/socket/my_2dapp" "/org/distribute1/socket/web""#
    );
    assert_eq!(get(WEB, SOCKET, "Name"), r#"s "web""#);
    assert_eq!(
        get(WEB, SOCKET, "Listen"),
        format!(r#"as 1 "ListenStream=127.0.0.1:{p}""#)
    );
    assert_eq!(get(WEB, SOCKET, "Distribute"), "u 2");
    assert_eq!(get(WEB, SOCKET, "Service"), r#"s "web""#);
    assert_eq!(get(WEB, SOCKET, "State"), r#"s "serving""#);
    assert_eq!(get(WEB, SOCKET, "Error"), r#"s """#);
    assert_eq!(
        get(WEB, SOCKET, "Sources"),
        format!(r#"as 1 "{}""#, a.sb.inside("config/web.socket"))
    );
    let instances = get(WEB, SOCKET, "Instances");
    assert!(
        instances.starts_with(
            r#"a(ussuttus) 2 0 "web@0.service" "listening" 0 0 0 0 "" 1 "web@1.service""#
        ),
        "{instances}"
    );

    // Methods.
    let r = a
        .bus_call(ROOT, MANAGER_PATH, MANAGER, "GetSocket", &["s", "my-app"])
        .ok();
    assert_eq!(r.stdout.trim(), r#"o "/org/distribute1/socket/my_2dapp""#);
    let r = a
        .bus_call(ROOT, MANAGER_PATH, MANAGER, "ListSockets", &[])
        .ok();
    assert!(r.stdout.starts_with(&format!(
        r#"a(soasuus) 2 "my-app" "/org/distribute1/socket/my_2dapp" 1 "ListenStream=127.0.0.1:{}" 1 0 "serving" "web" "{WEB}" 1 "ListenStream=127.0.0.1:{p}" 2 0 "serving""#,
        p + 1
    )), "{r:?}");
    a.bus_call(ROOT, WEB, SOCKET, "StartInstance", &["u", "1"])
        .ok();
    assert!(
        wait_until(Duration::from_secs(20), || get(WEB, SOCKET, "Instances")
            .contains(r#""web@1.service" "running""#)),
        "web@1 did not start: {}",
        a.log()
    );
    a.bus_call(ROOT, WEB, SOCKET, "SetDistribute", &["u", "3"])
        .ok();
    assert_eq!(get(WEB, SOCKET, "Distribute"), "u 3");
    // Reload applies a changed file.
    a.write_config("web", &hello_config(p, 4, "30s"));
    a.bus_call(ROOT, MANAGER_PATH, MANAGER, "Reload", &[]).ok();
    assert!(
        wait_until(Duration::from_secs(20), || get(WEB, SOCKET, "Distribute")
            == "u 4"),
        "Reload did not apply Distribute=4: {}",
        a.log()
    );
}

#[test]
fn errors_and_access_control() {
    let p = port(46);
    let Some(a) = Activator::start("api-errors", &[("web", &hello_config(p, 2, "30s"))]) else {
        return;
    };
    let m = MANAGER_PATH;
    let set_distribute = "org.distribute1.Socket.SetDistribute";
    // Bad arguments and unknown sockets, as root.
    for n in ["uint32:0", "uint32:100000"] {
        let r = dbus_send(&a, ROOT, WEB, set_distribute, &[n]);
        assert_eq!(
            error_name(&r),
            "org.freedesktop.DBus.Error.InvalidArgs",
            "{n}"
        );
    }
    for method in ["StartInstance", "StopInstance", "RestartInstance"] {
        let r = dbus_send(
            &a,
            ROOT,
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
        ROOT,
        m,
        "org.distribute1.Manager.GetSocket",
        &["string:nosuch"],
    );
    assert_eq!(error_name(&r), "org.distribute1.Error.NoSuchSocket");
    assert!(r.stderr.contains("nosuch"), "{r:?}");
    // Wrong argument types are rejected by zbus itself, under its own error
    // name (org.freedesktop.zbus.Error), before our code runs.
    let r = dbus_send(&a, ROOT, WEB, set_distribute, &["string:three"]);
    assert!(
        r.code != 0 && r.stderr.contains("Signature mismatch"),
        "{r:?}"
    );

    // An unprivileged user reads...
    assert_eq!(a.bus_property(NOBODY, WEB, SOCKET, "Distribute"), "u 2");
    a.bus_property(NOBODY, WEB, SOCKET, "Instances");
    busctl(&a, NOBODY, &["introspect", BUS, WEB]).ok();
    a.bus_call(NOBODY, m, MANAGER, "ListSockets", &[]).ok();
    a.bus_call(NOBODY, m, MANAGER, "GetSocket", &["s", "web"])
        .ok();
    // ...but changes nothing.
    for (path, method, args) in [
        (WEB, set_distribute, &["uint32:3"][..]),
        (WEB, "org.distribute1.Socket.StartInstance", &["uint32:0"]),
        (WEB, "org.distribute1.Socket.StopInstance", &["uint32:0"]),
        (WEB, "org.distribute1.Socket.RestartInstance", &["uint32:0"]),
        (m, "org.distribute1.Manager.Reload", &[]),
    ] {
        let r = dbus_send(&a, NOBODY, path, method, args);
        assert_eq!(
            error_name(&r),
            "org.freedesktop.DBus.Error.AccessDenied",
            "{method}"
        );
    }
    let r = busctl(
        &a,
        NOBODY,
        &["set-property", BUS, WEB, SOCKET, "Distribute", "u", "5"],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert_eq!(a.bus_property(ROOT, WEB, SOCKET, "Distribute"), "u 2");
    // Nobody but root may own the name.
    let r = busctl(
        &a,
        NOBODY,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            BUS,
            "0",
        ],
    );
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Access denied"), "{r:?}");
}

#[test]
fn changes_are_signalled() {
    let p = port(47);
    let Some(a) = Activator::start("api-signals", &[("web", &hello_config(p, 2, "30s"))]) else {
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
    a.bus_call(ROOT, WEB, SOCKET, "SetDistribute", &["u", "3"])
        .ok();
    // Changes are published coalesced (50 ms); a reload right after would
    // return to the file's Distribute=2 before 3 was ever announced.
    std::thread::sleep(Duration::from_millis(500));
    a.write_config("extra", &hello_config(p + 1, 1, "30s"));
    a.bus_call(ROOT, MANAGER_PATH, MANAGER, "Reload", &[]).ok();
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
