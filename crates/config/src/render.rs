//! A stable, human-readable text form of loaded configs, for golden tests and for
//! `distributectl cat`-style output. Every field is shown, defaults included, one
//! `key = value` per line, so a diff shows exactly what a change did.

use std::fmt::Write as _;

use crate::error::ConfigError;
use crate::load::LoadReport;
use crate::spec::{
    CompanionKind, Distribute, ListenKind, PassthroughValue, SocketSpec, Timestamping,
};

/// Renders one spec.
pub fn render_spec(spec: &SocketSpec) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |key: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "{key} = {value}");
    };
    for s in &spec.sources {
        line("source", &s.display());
    }
    for l in &spec.listen {
        let kind = match l.kind {
            ListenKind::Stream => "stream",
            ListenKind::Datagram => "datagram",
        };
        line(
            "listen",
            &format_args!("{kind} {} ({:?})", l.addr, l.original),
        );
    }
    for c in &spec.companions {
        let kind = match c.kind {
            CompanionKind::Stream => "stream",
            CompanionKind::Datagram => "datagram",
            CompanionKind::SequentialPacket => "seqpacket",
            CompanionKind::Fifo => "fifo",
        };
        line(
            "companion",
            &format_args!("{kind} {:?} (position {})", c.path, c.position),
        );
    }
    if let Some(d) = &spec.description {
        line("description", &format_args!("{d:?}"));
    }
    if !spec.documentation.is_empty() {
        line("documentation", &quoted(&spec.documentation));
    }
    for n in &spec.notices {
        line("notice", n);
    }
    match spec.distribute {
        Distribute::Count(n) => line("distribute", &n),
        Distribute::Cpus => line("distribute", &"cpus"),
    }
    line("service", &spec.service);
    // Only when they say something, so the golden files of ordinary configs
    // stay as they are.
    if spec.instance != crate::values::DEFAULT_INSTANCE {
        line("instance", &spec.instance);
    }
    if spec.service_section.is_none() {
        line("service_section", &"none (template mode)");
    }
    let o = &spec.options;
    line("backlog", &opt(&o.backlog));
    line("bind_ipv6_only", &o.bind_ipv6_only.as_str());
    line("free_bind", &o.free_bind);
    line("transparent", &o.transparent);
    line("no_delay", &o.no_delay);
    line("keep_alive", &o.keep_alive);
    line("receive_buffer", &opt(&o.receive_buffer));
    line("send_buffer", &opt(&o.send_buffer));
    line("defer_accept_usec", &opt(&o.defer_accept_usec));
    line("bind_to_device", &opt_str(&o.bind_to_device));
    line("file_descriptor_name", &opt_str(&o.file_descriptor_name));
    line(
        "trigger_limit_interval_usec",
        &opt(&o.trigger_limit_interval_usec),
    );
    line("trigger_limit_burst", &opt(&o.trigger_limit_burst));
    // Only when set, so the golden files of other configs stay as they are.
    if let Some(d) = o.drain_timeout_usec {
        line("drain_timeout_usec", &d);
    }
    if let Some(d) = o.stuck_timeout_usec {
        line("stuck_timeout_usec", &d);
    }
    if let Some(d) = o.stuck_restart_usec {
        line("stuck_restart_usec", &d);
    }
    // The options added for copied systemd units: only when set, like the above.
    let set = |v: &dyn std::fmt::Display| v.to_string();
    let extra: [(&str, Option<String>); 21] = [
        (
            "keep_alive_time_usec",
            o.keep_alive_time_usec.map(|v| set(&v)),
        ),
        (
            "keep_alive_interval_usec",
            o.keep_alive_interval_usec.map(|v| set(&v)),
        ),
        ("keep_alive_probes", o.keep_alive_probes.map(|v| set(&v))),
        ("priority", o.priority.map(|v| set(&v))),
        ("ip_tos", o.ip_tos.map(|v| set(&v))),
        ("ip_ttl", o.ip_ttl.map(|v| set(&v))),
        ("mark", o.mark.map(|v| set(&v))),
        ("broadcast", o.broadcast.then(|| "true".into())),
        (
            "pass_packet_info",
            o.pass_packet_info.then(|| "true".into()),
        ),
        (
            "timestamping",
            (o.timestamping != Timestamping::Off).then(|| format!("{:?}", o.timestamping)),
        ),
        (
            "tcp_congestion",
            o.tcp_congestion.as_ref().map(|v| format!("{v:?}")),
        ),
        (
            "socket_protocol",
            o.socket_protocol.map(|p| p.as_str().to_string()),
        ),
        (
            "pass_credentials",
            o.pass_credentials.then(|| "true".into()),
        ),
        ("pass_security", o.pass_security.then(|| "true".into())),
        (
            "socket_user",
            o.socket_user.as_ref().map(|v| format!("{v:?}")),
        ),
        (
            "socket_group",
            o.socket_group.as_ref().map(|v| format!("{v:?}")),
        ),
        ("socket_mode", o.socket_mode.map(|m| format!("{m:04o}"))),
        (
            "directory_mode",
            o.directory_mode.map(|m| format!("{m:04o}")),
        ),
        ("remove_on_stop", o.remove_on_stop.then(|| "true".into())),
        (
            "symlinks",
            (!o.symlinks.is_empty()).then(|| quoted(&o.symlinks)),
        ),
        ("pipe_size", o.pipe_size.map(|v| set(&v))),
    ];
    for (key, value) in extra {
        if let Some(v) = value {
            line(key, &v);
        }
    }
    let e = &spec.exec;
    line("exec_start", &quoted(&e.exec_start));
    line("user", &opt_str(&e.user));
    line("group", &opt_str(&e.group));
    line("dynamic_user", &opt(&e.dynamic_user));
    line("environment", &quoted(&e.environment));
    line("working_directory", &opt_str(&e.working_directory));
    let cpus: Vec<String> = e.cpu_affinity.iter().map(u32::to_string).collect();
    line("cpu_affinity", &list(cpus));
    for (k, v) in &e.extra {
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
