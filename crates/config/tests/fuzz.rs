//! Property tests: no input makes the parser panic, and what it accepts is valid.

use std::path::Path;

use distribute_config::{
    expand_specifiers, parse_str, render_spec, service_keys, values, Distribute, MAX_DISTRIBUTE,
    SOCKET_KEYS,
};
use proptest::prelude::*;

const PATH: &str = "/etc/systemd/distribute/web.socket";

/// Checks what every accepted spec must satisfy, and that the helpers used on it by the
/// activator do not panic either.
fn check_accepted(text: &str) {
    let Ok(spec) = parse_str("web", Path::new(PATH), text) else {
        return;
    };
    assert!(!spec.listen.is_empty());
    // Without a [Service] section the instances are a template unit file's.
    if spec.service_section.is_some() {
        assert!(!spec.exec.exec_start.is_empty());
        assert!(spec.exec.exec_start[0].starts_with('/'));
    } else {
        assert!(spec.exec.exec_start.is_empty());
    }
    assert!(spec.listen.iter().all(|l| l.addr.port() != 0));
    if let Distribute::Count(n) = spec.distribute {
        assert!((1..=MAX_DISTRIBUTE).contains(&n));
    }
    let _ = render_spec(&spec);
    let _ = spec.exec.for_instance(&spec.name, MAX_DISTRIBUTE - 1);
    let unit = spec.instance_unit(MAX_DISTRIBUTE - 1);
    assert_eq!(spec.instance_index(&unit), Some(MAX_DISTRIBUTE - 1));
}

/// Lines that look like a config: headers, known keys with odd values, comments,
/// continuations.
fn config_line() -> impl Strategy<Value = String> {
    let keys: Vec<&'static str> = SOCKET_KEYS
        .iter()
        .copied()
        .chain(service_keys())
        .chain(["Accept", "Restart", "ListenFIFO", "X-Foo"])
        .collect();
    let value = prop_oneof![
        Just(String::new()),
        Just("80".to_string()),
        Just("/usr/bin/x %i \"a b\"".to_string()),
        Just("yes".to_string()),
        Just("1G 512M".to_string()),
        Just("1min 30s".to_string()),
        Just("[::1]:8080".to_string()),
        Just("cpus".to_string()),
        "[ -~]{0,24}",
        "\\PC{0,12}",
        "[0-9a-zA-Z%@:\\[\\]\\\\\"' .-]{0,16}",
    ];
    prop_oneof![
        Just("[Socket]".to_string()),
        Just("[Service]".to_string()),
        Just("[X-Ext]".to_string()),
        Just("# comment \\".to_string()),
        Just(String::new()),
        (proptest::sample::select(keys), value, any::<bool>()).prop_map(|(k, v, cont)| {
            if cont {
                format!("{k}={v} \\")
            } else {
                format!("{k}={v}")
            }
        }),
        "\\PC{0,30}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*|[\\x00-\\x7f]*") {
        check_accepted(&text);
    }

    #[test]
    fn config_like_text_never_panics(lines in proptest::collection::vec(config_line(), 0..24)) {
        check_accepted(&lines.join("\n"));
        check_accepted(&lines.join("\r\n"));
    }

    #[test]
    fn valid_core_plus_noise(lines in proptest::collection::vec(config_line(), 0..8)) {
        // A valid config followed by noise: either still valid or a located error.
        let text = format!(
            "[Socket]\nListenStream=80\n[Service]\nExecStart=/usr/bin/web\n{}",
            lines.join("\n")
        );
        match parse_str("web", Path::new(PATH), &text) {
            Ok(_) => check_accepted(&text),
            Err(e) => prop_assert_eq!(e.file.as_path(), Path::new(PATH)),
        }
    }

    #[test]
    fn validators_never_panic(s in "\\PC{0,40}") {
        let _ = values::parse_bool(&s);
        let _ = values::parse_size(&s);
        let _ = values::parse_time_span(&s);
        let _ = values::parse_listen(&s);
        let _ = values::parse_distribute(&s);
        let _ = values::parse_cpu_set(&s);
        let _ = values::parse_service(&s);
        let _ = values::parse_nice(&s);
        let _ = values::parse_limit_nofile(&s);
        let _ = values::parse_memory_limit(&s);
        let _ = values::check_fd_name(&s);
        let _ = values::check_ifname(&s);
        let _ = values::check_user_group(&s);
        let _ = expand_specifiers(&s, "web", 3);
    }

    #[test]
    fn numbers_round_trip(n in any::<u64>()) {
        prop_assert_eq!(values::parse_size(&n.to_string()), Ok(n));
        prop_assert_eq!(values::parse_u64(&n.to_string()), Ok(n));
        if n < u64::MAX {
            prop_assert_eq!(values::parse_time_span(&format!("{n}us")), Ok(n));
        }
    }

    #[test]
    fn sizes_scale(n in 0u64..(1 << 20)) {
        prop_assert_eq!(values::parse_size(&format!("{n}K")), Ok(n << 10));
        prop_assert_eq!(values::parse_size(&format!("{n}M")), Ok(n << 20));
    }

    #[test]
    fn ports_round_trip(port in 1u16..) {
        let addr = values::parse_listen(&port.to_string()).unwrap();
        prop_assert_eq!(addr.port(), port);
        prop_assert!(addr.ip().is_unspecified());
        let addr = values::parse_listen(&format!("127.0.0.1:{port}")).unwrap();
        prop_assert_eq!(addr.to_string(), format!("127.0.0.1:{port}"));
    }
}
