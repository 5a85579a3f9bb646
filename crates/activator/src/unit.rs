//! Turning a config's `[Service]` section into the properties of one transient
//! instance unit `SERVICE@I.service`.

use distribute_config::{PassthroughValue, ServiceSpec};
use distribute_instance::{DISTRIBUTE_INSTANCE, DISTRIBUTE_NAME};
use std::os::fd::BorrowedFd;
use zbus::zvariant::{Fd, Value};

/// How the listening sockets reach the instance.
pub enum FdHandOff<'a> {
    /// systemd < 257: one fd on stdin carrying all sockets, unpacked by the exec shim.
    Shim {
        /// Path of `systemd-distribute-exec`.
        shim: &'a str,
        /// The socketpair end from [`crate::fdpass::package`].
        carrier: BorrowedFd<'a>,
    },
    /// systemd >= 257: `ExtraFileDescriptors=`, native `$LISTEN_FDS`.
    Native {
        /// The sockets and their names.
        fds: Vec<(BorrowedFd<'a>, String)>,
    },
}

/// The `Description=` of instance `index`.
pub fn instance_description(name: &str, description: Option<&str>, index: u32) -> String {
    match description {
        Some(d) => format!("{d}, instance {index} (systemd-distribute)"),
        None => format!("{name} instance {index} (systemd-distribute)"),
    }
}

/// The bitmask systemd's `CPUAffinity` property (`ay`) expects.
pub fn cpu_mask(cpus: &[u32]) -> Vec<u8> {
    let Some(&max) = cpus.iter().max() else {
        return Vec::new();
    };
    let mut mask = vec![0u8; (max / 8 + 1) as usize];
    for &c in cpus {
        mask[(c / 8) as usize] |= 1 << (c % 8);
    }
    mask
}

#[cfg(test)]
/// All properties of instance `index` of config `name`. `exec` must already
/// have its specifiers expanded for this instance.
pub fn properties<'a>(
    name: &str,
    index: u32,
    exec: &'a ServiceSpec,
    hand_off: FdHandOff<'a>,
) -> Vec<(String, Value<'a>)> {
    properties_described(name, None, &[], index, exec, hand_off)
}

/// [`properties`], with the config's `[Unit]` `Description=` (the instance's
/// description: `DESCRIPTION, instance I (systemd-distribute)`) and
/// `Documentation=`.
pub fn properties_described<'a>(
    name: &str,
    description: Option<&str>,
    documentation: &[String],
    index: u32,
    exec: &'a ServiceSpec,
    hand_off: FdHandOff<'a>,
) -> Vec<(String, Value<'a>)> {
    let mut p: Vec<(String, Value<'a>)> = Vec::new();
    let mut push = |k: &str, v: Value<'a>| p.push((k.to_string(), v));
    push(
        "Description",
        Value::from(instance_description(name, description, index)),
    );
    if !documentation.is_empty() {
        push("Documentation", Value::from(documentation.to_vec()));
    }
    // Without this a failed instance stays loaded and the next start of the same
    // name fails with "already loaded"; with it, every exit unloads the unit and
    // systemd's UnitRemoved tells us the socket can be watched again.
    push("CollectMode", Value::from("inactive-or-failed"));
    // StandardInput=fd would make stdout/stderr default to "inherit", i.e. the
    // carrier socket; logs belong in the journal.
    push("StandardOutput", Value::from("journal"));
    push("StandardError", Value::from("journal"));
    let argv: Vec<String> = match &hand_off {
        FdHandOff::Shim { shim, .. } => std::iter::once(shim.to_string())
            .chain(exec.exec_start.iter().cloned())
            .collect(),
        FdHandOff::Native { .. } => exec.exec_start.clone(),
    };
    let path = argv.first().cloned().unwrap_or_default();
    push("ExecStart", Value::from(vec![(path, argv, false)]));
    match hand_off {
        FdHandOff::Shim { carrier, .. } => {
            push("StandardInputFileDescriptor", Value::Fd(Fd::from(carrier)));
        }
        FdHandOff::Native { fds } => {
            let list: Vec<(Fd<'a>, String)> =
                fds.into_iter().map(|(fd, n)| (Fd::from(fd), n)).collect();
            push("ExtraFileDescriptors", Value::from(list));
        }
    }
    let mut env = vec![
        format!("{DISTRIBUTE_INSTANCE}={index}"),
        format!("{DISTRIBUTE_NAME}={name}"),
    ];
    env.extend(exec.environment.iter().cloned());
    push("Environment", Value::from(env));
    if let Some(u) = &exec.user {
        push("User", Value::from(u.as_str()));
    }
    if let Some(g) = &exec.group {
        push("Group", Value::from(g.as_str()));
    }
    if let Some(d) = exec.dynamic_user {
        push("DynamicUser", Value::from(d));
    }
    if let Some(w) = &exec.working_directory {
        push("WorkingDirectory", Value::from(w.as_str()));
    }
    if !exec.cpu_affinity.is_empty() {
        push("CPUAffinity", Value::from(cpu_mask(&exec.cpu_affinity)));
    }
    for (key, value) in &exec.extra {
        let v = match value {
            PassthroughValue::Bool(b) => Value::from(*b),
            PassthroughValue::Str(s) => Value::from(s.as_str()),
            PassthroughValue::U64(n) => Value::from(*n),
            PassthroughValue::I32(n) => Value::from(*n),
        };
        push(key, v);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_masks() {
        for (cpus, want) in [
            (vec![], vec![]),
            (vec![0], vec![0b1]),
            (vec![1, 3], vec![0b1010]),
            (vec![0, 8], vec![0b1, 0b1]),
            (vec![15], vec![0, 0b1000_0000]),
        ] {
            assert_eq!(cpu_mask(&cpus), want, "{cpus:?}");
        }
    }

    #[test]
    fn native_hand_off_uses_extra_file_descriptors() {
        use std::os::fd::AsFd;
        let exec = ServiceSpec {
            exec_start: vec!["/usr/bin/server".into()],
            ..Default::default()
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let props = properties(
            "web",
            0,
            &exec,
            FdHandOff::Native {
                fds: vec![(l.as_fd(), "web.socket".into())],
            },
        );
        let extra = props
            .iter()
            .find(|(k, _)| k == "ExtraFileDescriptors")
            .unwrap();
        assert_eq!(extra.1.value_signature().to_string(), "a(hs)");
        let exec_start = props.iter().find(|(k, _)| k == "ExecStart").unwrap();
        assert_eq!(
            exec_start.1.to_string(),
            r#"[("/usr/bin/server", ["/usr/bin/server"], false)]"#
        );
        assert!(props
            .iter()
            .all(|(k, _)| k != "StandardInputFileDescriptor"));
    }

    #[test]
    fn descriptions_follow_the_unit_section() {
        assert_eq!(
            instance_description("web", None, 3),
            "web instance 3 (systemd-distribute)"
        );
        assert_eq!(
            instance_description("web", Some("Web front end"), 3),
            "Web front end, instance 3 (systemd-distribute)"
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsFd;
        let exec = ServiceSpec::default();
        let docs = vec!["man:web(8)".to_string()];
        let props = properties_described(
            "web",
            Some("Web"),
            &docs,
            0,
            &exec,
            FdHandOff::Native {
                fds: vec![(l.as_fd(), "web.socket".into())],
            },
        );
        let get = |k: &str| {
            props
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(get("Documentation").unwrap(), r#"["man:web(8)"]"#);
        assert_eq!(
            get("Description").unwrap(),
            r#""Web, instance 0 (systemd-distribute)""#
        );
    }

    #[test]
    fn shim_wraps_exec_start_and_sets_instance_env() {
        let exec = ServiceSpec {
            exec_start: vec!["/usr/bin/echo-server".into(), "--port".into()],
            environment: vec!["A=b".into()],
            ..Default::default()
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsFd;
        let props = properties(
            "echo",
            2,
            &exec,
            FdHandOff::Shim {
                shim: "/usr/lib/systemd/systemd-distribute-exec",
                carrier: l.as_fd(),
            },
        );
        let get = |k: &str| {
            props
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            get("ExecStart").unwrap(),
            r#"[("/usr/lib/systemd/systemd-distribute-exec", ["/usr/lib/systemd/systemd-distribute-exec", "/usr/bin/echo-server", "--port"], false)]"#
        );
        assert_eq!(
            get("Environment").unwrap(),
            r#"["DISTRIBUTE_INSTANCE=2", "DISTRIBUTE_NAME=echo", "A=b"]"#
        );
        assert_eq!(get("CollectMode").unwrap(), r#""inactive-or-failed""#);
        assert!(get("StandardInputFileDescriptor").is_some());
        assert!(get("User").is_none());
    }
}
