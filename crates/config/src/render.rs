//! A stable, human-readable text form of loaded configs, for golden tests and for
//! `distributectl cat`-style output, one `key = value` per line, so a diff shows
//! exactly what a change did. Every field of [`SocketSpec`] and the structs it
//! holds is destructured without `..`, so a new field does not build until it
//! is rendered here (or explicitly skipped, with the reason). The fields of
//! the first version are shown always, defaults included; the ones added later
//! only when they are set (not the default), so the golden files of configs
//! that do not use them stay as they are.

use std::fmt::Write as _;

use crate::error::ConfigError;
use crate::load::LoadReport;
use crate::spec::{
    Activation, Companion, CompanionKind, Distribute, Listen, PassthroughValue, ServiceSpec,
    SocketOptions, SocketSpec, Steering, Timestamping,
};

/// Renders one spec.
pub fn render_spec(spec: &SocketSpec) -> String {
    let SocketSpec {
        // The `[NAME]` header of [`render`].
        name: _,
        sources,
        listen,
        companions,
        description,
        documentation,
        notices,
        distribute,
        service,
        instance,
        service_section,
        options,
        exec,
    } = spec;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key} = {value}");
    };
    for s in sources {
        line("source", &s.display());
    }
    for Listen {
        kind,
        addr,
        original,
    } in listen
    {
        // The dump's spelling of the key: `stream`, `datagram`.
        let kind = kind.key().trim_start_matches("Listen").to_lowercase();
        line("listen", &format_args!("{kind} {addr} ({original:?})"));
    }
    for Companion {
        kind,
        path,
        position,
        // Where it was written: errors and notices carry the lines.
        origin: _,
    } in companions
    {
        let kind = match kind {
            CompanionKind::Stream => "stream",
            CompanionKind::Datagram => "datagram",
            CompanionKind::SequentialPacket => "seqpacket",
            CompanionKind::Fifo => "fifo",
        };
        line(
            "companion",
            &format_args!("{kind} {path:?} (position {position})"),
        );
    }
    if let Some(d) = description {
        line("description", &format_args!("{d:?}"));
    }
    if !documentation.is_empty() {
        line("documentation", &quoted(documentation));
    }
    for n in notices {
        line("notice", n);
    }
    match distribute {
        Distribute::Count(n) => line("distribute", n),
        Distribute::Cpus => line("distribute", &"cpus"),
    }
    line("service", service);
    // Only when they say something, so the golden files of ordinary configs
    // stay as they are.
    if instance != crate::values::DEFAULT_INSTANCE {
        line("instance", instance);
    }
    // Where the section starts is not shown, only whether there is one.
    if service_section.is_none() {
        line("service_section", &"none (template mode)");
    }
    let SocketOptions {
        backlog,
        bind_ipv6_only,
        free_bind,
        no_delay,
        keep_alive,
        receive_buffer,
        send_buffer,
        file_descriptor_name,
        transparent,
        defer_accept_usec,
        bind_to_device,
        trigger_limit_interval_usec,
        trigger_limit_burst,
        activation,
        steering,
        warm_queue_depth,
        keep_alive_time_usec,
        keep_alive_interval_usec,
        keep_alive_probes,
        priority,
        ip_tos,
        ip_ttl,
        mark,
        broadcast,
        pass_packet_info,
        timestamping,
        tcp_congestion,
        socket_protocol,
        pass_credentials,
        pass_security,
        socket_user,
        socket_group,
        socket_mode,
        directory_mode,
        remove_on_stop,
        symlinks,
        pipe_size,
        drain_timeout_usec,
        stuck_timeout_usec,
        stuck_restart_usec,
    } = options;
    line("backlog", &opt(backlog));
    line("bind_ipv6_only", &bind_ipv6_only.as_str());
    line("free_bind", free_bind);
    line("transparent", transparent);
    line("no_delay", no_delay);
    line("keep_alive", keep_alive);
    line("receive_buffer", &opt(receive_buffer));
    line("send_buffer", &opt(send_buffer));
    line("defer_accept_usec", &opt(defer_accept_usec));
    line("bind_to_device", &opt_str(bind_to_device));
    line("file_descriptor_name", &opt_str(file_descriptor_name));
    line(
        "trigger_limit_interval_usec",
        &opt(trigger_limit_interval_usec),
    );
    line("trigger_limit_burst", &opt(trigger_limit_burst));
    // Only when set, so the golden files of other configs stay as they are.
    // Compared with the default spelled out, not `Default::default()`: a
    // change of the default shows in every golden file.
    match activation {
        Activation::OnDemand => {}
        Activation::Eager => line("activation", &"eager"),
    }
    match steering {
        Steering::Hash => {}
        Steering::Cpu => line("steering", &"cpu"),
        Steering::Warm => line("steering", &"warm"),
    }
    if let Some(d) = warm_queue_depth {
        line("warm_queue_depth", d);
    }
    if let Some(d) = drain_timeout_usec {
        line("drain_timeout_usec", d);
    }
    if let Some(d) = stuck_timeout_usec {
        line("stuck_timeout_usec", d);
    }
    if let Some(d) = stuck_restart_usec {
        line("stuck_restart_usec", d);
    }
    // The options added for copied systemd units: only when set, like the above.
    let set = |v: &dyn std::fmt::Display| v.to_string();
    let extra: [(&str, Option<String>); 21] = [
        (
            "keep_alive_time_usec",
            keep_alive_time_usec.map(|v| set(&v)),
        ),
        (
            "keep_alive_interval_usec",
            keep_alive_interval_usec.map(|v| set(&v)),
        ),
        ("keep_alive_probes", keep_alive_probes.map(|v| set(&v))),
        ("priority", priority.map(|v| set(&v))),
        ("ip_tos", ip_tos.map(|v| set(&v))),
        ("ip_ttl", ip_ttl.map(|v| set(&v))),
        ("mark", mark.map(|v| set(&v))),
        ("broadcast", broadcast.then(|| "true".into())),
        ("pass_packet_info", pass_packet_info.then(|| "true".into())),
        (
            "timestamping",
            (*timestamping != Timestamping::Off).then(|| format!("{timestamping:?}")),
        ),
        (
            "tcp_congestion",
            tcp_congestion.as_ref().map(|v| format!("{v:?}")),
        ),
        (
            "socket_protocol",
            socket_protocol.map(|p| p.as_str().to_string()),
        ),
        ("pass_credentials", pass_credentials.then(|| "true".into())),
        ("pass_security", pass_security.then(|| "true".into())),
        (
            "socket_user",
            socket_user.as_ref().map(|v| format!("{v:?}")),
        ),
        (
            "socket_group",
            socket_group.as_ref().map(|v| format!("{v:?}")),
        ),
        ("socket_mode", socket_mode.map(|m| format!("{m:04o}"))),
        ("directory_mode", directory_mode.map(|m| format!("{m:04o}"))),
        ("remove_on_stop", remove_on_stop.then(|| "true".into())),
        ("symlinks", (!symlinks.is_empty()).then(|| quoted(symlinks))),
        ("pipe_size", pipe_size.map(|v| set(&v))),
    ];
    for (key, value) in extra {
        if let Some(v) = value {
            line(key, &v);
        }
    }
    let ServiceSpec {
        exec_start,
        user,
        group,
        dynamic_user,
        environment,
        working_directory,
        cpu_affinity,
        extra,
    } = exec;
    line("exec_start", &quoted(exec_start));
    line("user", &opt_str(user));
    line("group", &opt_str(group));
    line("dynamic_user", &opt(dynamic_user));
    line("environment", &quoted(environment));
    line("working_directory", &opt_str(working_directory));
    let cpus: Vec<String> = cpu_affinity.iter().map(u32::to_string).collect();
    line("cpu_affinity", &list(cpus));
    for (k, v) in extra {
        let v = match v {
            PassthroughValue::Bool(b) => format!("b {b}"),
            PassthroughValue::Str(s) => format!("s {s:?}"),
            PassthroughValue::U64(n) => format!("t {n}"),
            PassthroughValue::I32(n) => format!("i {n}"),
        };
        line("extra", &format_args!("{k} {v}"));
    }
    out
}

/// Renders specs and errors: a `[NAME]` block per spec, then one `error: …` line per error.
pub fn render(specs: &[SocketSpec], errors: &[ConfigError]) -> String {
    let mut out = String::new();
    for spec in specs {
        let _ = writeln!(out, "[{}]", spec.name);
        out.push_str(&render_spec(spec));
        out.push('\n');
    }
    for e in errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

/// Renders a whole [`LoadReport`]: [`render`] plus `masked: …` lines.
pub fn render_report(report: &LoadReport) -> String {
    let mut out = render(&report.specs, &report.errors);
    for m in &report.masked {
        let _ = writeln!(out, "masked: {} ({})", m.name, m.path.display());
    }
    out
}

/// `-` for `None`.
fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".to_string(), T::to_string)
}

/// `-` for `None`, else the string quoted (so empty and odd strings stay visible).
fn opt_str(v: &Option<String>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |s| format!("{s:?}"))
}

/// Each word quoted, space-separated; `-` for none.
fn quoted(words: &[String]) -> String {
    list(words.iter().map(|w| format!("{w:?}")).collect())
}

/// Items space-separated; `-` for none (no trailing blanks in golden files).
fn list(items: Vec<String>) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(" ")
    }
}
