//! Assignments → [`SocketSpec`]: one `match` per section over the keys, like systemd's
//! generator-style parsers, each arm calling a validator from [`crate::values`].
//!
//! Every key accepts an empty value as a reset: lists are emptied, scalars go back to
//! their default. That is what lets a drop-in replace a list instead of extending it.

use std::path::Path;

use crate::error::ConfigError;
use crate::lexer::{lex, Assignment, Section};
use crate::spec::{
    Activation, Distribute, Listen, ListenKind, Origin, PassthroughValue, ServiceSpec,
    SocketOptions, SocketSpec, Steering,
};
use crate::specifier::{check_specifiers, expand_specifiers};
use crate::validate::finish;
use crate::values::{self, check_unit_prefix};
use crate::words::split_words;

/// Keys accepted in `[Socket]`, in the order the documentation lists them.
pub const SOCKET_KEYS: &[&str] = &[
    "ListenStream",
    "ListenDatagram",
    "Distribute",
    "Service",
    "Backlog",
    "BindIPv6Only",
    "FreeBind",
    "Transparent",
    "NoDelay",
    "KeepAlive",
    "ReceiveBuffer",
    "SendBuffer",
    "DeferAcceptSec",
    "BindToDevice",
    "FileDescriptorName",
    "TriggerLimitIntervalSec",
    "TriggerLimitBurst",
    "Activation",
    "Steering",
    "WarmQueueDepth",
    "DrainTimeoutSec",
];

/// `[Service]` booleans passed through 1:1 as D-Bus `b` properties of the same name.
const SERVICE_BOOLS: &[&str] = &[
    "NoNewPrivileges",
    "PrivateTmp",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
];

/// Keys accepted in `[Service]` other than [`SERVICE_BOOLS`].
const SERVICE_OTHER_KEYS: &[&str] = &[
    "ExecStart",
    "User",
    "Group",
    "DynamicUser",
    "Environment",
    "WorkingDirectory",
    "CPUAffinity",
    "ProtectSystem",
    "ProtectHome",
    "KillMode",
    "LimitNOFILE",
    "MemoryMax",
    "TimeoutStopSec",
    "Nice",
];

/// All keys accepted in `[Service]`.
pub fn service_keys() -> impl Iterator<Item = &'static str> {
    SERVICE_OTHER_KEYS.iter().chain(SERVICE_BOOLS).copied()
}

/// systemd `.socket` keys we know but deliberately do not support, with the reason.
/// (`Accept=` is handled separately: `Accept=no` is what we do anyway.)
fn unsupported_socket_key(key: &str) -> Option<&'static str> {
    const NOT_IP: &str = "only ListenStream= (TCP) and ListenDatagram= (UDP) can be \
                          distributed: the kernel spreads connections over SO_REUSEPORT \
                          sockets only for TCP and UDP";
    const UNIX_ONLY: &str = "applies only to AF_UNIX sockets (and FIFOs), which cannot be \
                             distributed with SO_REUSEPORT";
    const ACCEPT_ONLY: &str = "applies only with Accept=yes, which is incompatible with \
                               Distribute=: each instance accepts on its own socket";
    Some(match key {
        "ListenSequentialPacket"
        | "ListenFIFO"
        | "ListenSpecial"
        | "ListenNetlink"
        | "ListenMessageQueue"
        | "ListenUSBFunction"
        | "Writable"
        | "MessageQueueMaxMessages"
        | "MessageQueueMessageSize" => NOT_IP,
        "SocketUser" | "SocketGroup" | "SocketMode" | "DirectoryMode" | "Symlinks"
        | "RemoveOnStop" | "PassCredentials" | "PassSecurity" => UNIX_ONLY,
        "MaxConnections" | "MaxConnectionsPerSource" => ACCEPT_ONLY,
        "ExecStartPre" | "ExecStartPost" | "ExecStopPre" | "ExecStopPost" | "TimeoutSec" => {
            "socket units' own commands are not supported; put the command in [Service] or \
             in the instances' drop-ins"
        }
        _ => return None,
    })
}

/// Applies assignments to the fields of a [`SocketSpec`] under construction.
struct Builder<'a> {
    /// Config name, for specifiers and defaults.
    name: &'a str,
    /// Service prefix to name in hints about drop-ins (from a pre-scan of `Service=`).
    dropin_prefix: String,
    listen: Vec<Listen>,
    distribute: Option<Distribute>,
    service: Option<(String, String)>,
    options: SocketOptions,
    exec: ServiceSpec,
    service_section: Option<Origin>,
}

/// Parses a single file; see [`parse_files`].
pub fn parse_str(name: &str, path: &Path, text: &str) -> Result<SocketSpec, ConfigError> {
    parse_files(name, &[(path, text)])
}

/// Parses the main file `files[0]` and then its drop-ins `files[1..]`, in that order, into a
/// validated [`SocketSpec`] named `name`. Stops at the first error.
pub fn parse_files(name: &str, files: &[(&Path, &str)]) -> Result<SocketSpec, ConfigError> {
    let Some(&(main, _)) = files.first() else {
        return Err(ConfigError::file(
            Path::new(""),
            format!("config {name:?}: no files"),
        ));
    };
    check_config_name(name).map_err(|e| ConfigError::file(main, e))?;

    // Lex everything first: syntax errors come before meaning errors, and the pre-scan
    // below needs all assignments.
    let mut lexed = Vec::with_capacity(files.len());
    for &(path, text) in files {
        lexed.push((path, lex(path, text)?));
    }

    let mut b = Builder {
        name,
        dropin_prefix: last_service_prefix(&lexed).unwrap_or_else(|| name.to_string()),
        listen: Vec::new(),
        distribute: None,
        service: None,
        options: SocketOptions::default(),
        exec: ServiceSpec::default(),
        service_section: None,
    };
    for (path, assignments) in &lexed {
        for a in assignments {
            if a.section == Section::Service && b.service_section.is_none() {
                b.service_section = Some(Origin {
                    file: path.to_path_buf(),
                    line: a.line,
                });
            }
            b.apply(a)
                .map_err(|msg| ConfigError::assignment(path, a.line, &a.key, &a.value, msg))?;
        }
    }

    let (service, instance) = b
        .service
        .unwrap_or_else(|| (name.to_string(), values::DEFAULT_INSTANCE.to_string()));
    let spec = SocketSpec {
        name: name.to_string(),
        sources: files.iter().map(|(p, _)| p.to_path_buf()).collect(),
        listen: b.listen,
        distribute: b.distribute.unwrap_or(Distribute::Count(1)),
        service,
        instance,
        service_section: b.service_section,
        options: b.options,
        exec: b.exec,
    };
    finish(main, spec)
}

/// Checks `NAME` of `NAME.socket`: a unit-name prefix (instances are `NAME@i.service`
/// unless `Service=` says otherwise), so no `@`.
pub fn check_config_name(name: &str) -> Result<(), String> {
    if name.contains('@') {
        return Err(format!(
            "invalid config name \"{name}\": it must not contain \"@\" (instances are named \
             NAME@INDEX)"
        ));
    }
    if name.contains(':') {
        // The activator names its sockets in systemd's fd store after the
        // config, and fd names cannot contain ":".
        return Err(format!(
            "invalid config name \"{name}\": it must not contain \":\" (the sockets are kept \
             in systemd's fd store under names that cannot contain it)"
        ));
    }
    check_unit_prefix(name).map_err(|e| format!("invalid config name \"{name}\": {e}"))
}

/// The template prefix the final `Service=` will give, if any: known before applying the
/// `[Service]` lines, so that their errors can name the right drop-in directory.
fn last_service_prefix(lexed: &[(&Path, Vec<Assignment>)]) -> Option<String> {
    let last = lexed
        .iter()
        .flat_map(|(_, a)| a)
        .rev()
        .find(|a| a.section == Section::Socket && a.key == "Service")?;
    values::parse_service(&last.value)
        .ok()
        .map(|(prefix, _)| prefix)
}

impl Builder<'_> {
    fn apply(&mut self, a: &Assignment) -> Result<(), String> {
        match a.section {
            Section::Socket => self.socket(&a.key, &a.value),
            Section::Service => self.service(&a.key, &a.value),
        }
    }

    fn socket(&mut self, key: &str, value: &str) -> Result<(), String> {
        let o = &mut self.options;
        match key {
            "ListenStream" => self.listen(ListenKind::Stream, value)?,
            "ListenDatagram" => self.listen(ListenKind::Datagram, value)?,
            "Distribute" => self.distribute = opt(value, values::parse_distribute)?,
            "Service" => self.service = opt(value, values::parse_service)?,
            "Backlog" => {
                // listen(2) takes an int.
                o.backlog = opt(value, |v| {
                    values::parse_u64_max(v, i32::MAX as u64).map(|n| n as u32)
                })?
            }
            "BindIPv6Only" => {
                o.bind_ipv6_only = opt(value, values::parse_bind_ipv6_only)?.unwrap_or_default()
            }
            "FreeBind" => o.free_bind = flag(value)?,
            "Transparent" => o.transparent = flag(value)?,
            "NoDelay" => o.no_delay = flag(value)?,
            "KeepAlive" => o.keep_alive = flag(value)?,
            "ReceiveBuffer" => o.receive_buffer = opt(value, socket_buffer)?,
            "SendBuffer" => o.send_buffer = opt(value, socket_buffer)?,
            "DeferAcceptSec" => o.defer_accept_usec = opt(value, values::parse_time_span)?,
            "BindToDevice" => {
                // systemd: empty and "*" both mean "any device".
                o.bind_to_device = match value {
                    "*" => None,
                    v => opt(v, |v| values::check_ifname(v).map(|()| v.to_string()))?,
                }
            }
            "FileDescriptorName" => {
                let name = self.name;
                o.file_descriptor_name = opt(value, |v| fd_name(v, name))?
            }
            "TriggerLimitIntervalSec" => {
                o.trigger_limit_interval_usec = opt(value, values::parse_time_span)?
            }
            "TriggerLimitBurst" => o.trigger_limit_burst = opt(value, values::parse_u32)?,
            "Activation" => {
                o.activation = match value {
                    "" | "on-demand" => Activation::OnDemand,
                    "eager" => Activation::Eager,
                    _ => return Err("must be \"on-demand\" (start an instance when its socket has something queued) or \"eager\" (start all N at once)".into()),
                }
            }
            "Steering" => {
                o.steering = match value {
                    "" | "hash" => Steering::Hash,
                    "cpu" => Steering::Cpu,
                    "warm" => Steering::Warm,
                    _ => return Err("must be \"hash\" (the kernel's default spread), \"cpu\" (the socket of the CPU handling the packet) or \"warm\" (running instances first)".into()),
                }
            }
            "WarmQueueDepth" => {
                o.warm_queue_depth = opt(value, values::parse_u32)?;
            }
            "DrainTimeoutSec" => {
                o.drain_timeout_usec = opt(value, values::parse_time_span)?;
            }
            "ReusePort" => {
                // SO_REUSEPORT is always on (it is how the sockets are
                // distributed); accept ReusePort=yes so real units copy over.
                if !value.is_empty() && !values::parse_bool(value)? {
                    return Err("ReusePort=no is impossible here: SO_REUSEPORT is how the \
                                sockets are distributed"
                        .into());
                }
            }
            "Accept" => {
                // Accept=no is what every distributed socket does; accept it so that
                // existing units can be copied over unchanged.
                if !value.is_empty() && values::parse_bool(value)? {
                    return Err(
                        "Accept=yes is incompatible with Distribute=: each instance \
                                accepts on its own socket"
                            .into(),
                    );
                }
            }
            _ => {
                if let Some(reason) = unsupported_socket_key(key) {
                    return Err(format!("{key}= is not supported: {reason}"));
                }
                if service_keys().any(|k| k == key) {
                    return Err(format!("{key}= belongs in [Service], not [Socket]"));
                }
                return Err(
                    unknown_key(key, Section::Socket, SOCKET_KEYS.iter().copied()).unwrap_or_else(
                        || {
                            format!(
                                "unknown key \"{key}\" in [Socket]; valid keys: {}",
                                SOCKET_KEYS.join(", ")
                            )
                        },
                    ),
                );
            }
        }
        Ok(())
    }

    fn listen(&mut self, kind: ListenKind, value: &str) -> Result<(), String> {
        if value.is_empty() {
            // Like systemd, an empty ListenStream= or ListenDatagram= drops every
            // listening address given so far, of both kinds.
            self.listen.clear();
            return Ok(());
        }
        let addr = values::parse_listen(value)?;
        if self.listen.iter().any(|l| l.kind == kind && l.addr == addr) {
            return Err(format!(
                "{addr} is already listed; each address may be given once"
            ));
        }
        self.listen.push(Listen {
            kind,
            addr,
            original: value.to_string(),
        });
        Ok(())
    }

    fn service(&mut self, key: &str, value: &str) -> Result<(), String> {
        let name = self.name;
        let exec = &mut self.exec;
        match key {
            "ExecStart" => {
                if value.is_empty() {
                    exec.exec_start.clear();
                } else if !exec.exec_start.is_empty() {
                    return Err(
                        "ExecStart= is already set; only one command is allowed (an \
                                empty ExecStart= first resets it, e.g. in a drop-in)"
                            .into(),
                    );
                } else {
                    exec.exec_start = exec_start(value)?;
                }
            }
            "User" => exec.user = opt(value, |v| user_group(v, name))?,
            "Group" => exec.group = opt(value, |v| user_group(v, name))?,
            "DynamicUser" => exec.dynamic_user = opt(value, values::parse_bool)?,
            "Environment" => {
                if value.is_empty() {
                    exec.environment.clear();
                } else {
                    exec.environment.extend(environment(value)?);
                }
            }
            "WorkingDirectory" => {
                exec.working_directory = opt(value, |v| working_directory(v, name))?
            }
            "CPUAffinity" => {
                if value.is_empty() {
                    exec.cpu_affinity.clear();
                } else {
                    // systemd merges repeated CPUAffinity= lines.
                    exec.cpu_affinity.extend(values::parse_cpu_set(value)?);
                    exec.cpu_affinity.sort_unstable();
                    exec.cpu_affinity.dedup();
                }
            }
            k if SERVICE_BOOLS.contains(&k) => {
                let v = opt(value, values::parse_bool)?.map(PassthroughValue::Bool);
                set_extra(exec, k, v);
            }
            "ProtectSystem" => {
                let v = opt(value, |v| {
                    values::parse_bool_or_choice(v, &["full", "strict"])
                })?;
                set_extra(exec, key, v.map(PassthroughValue::Str));
            }
            "ProtectHome" => {
                let v = opt(value, |v| {
                    values::parse_bool_or_choice(v, &["read-only", "tmpfs"])
                })?;
                set_extra(exec, key, v.map(PassthroughValue::Str));
            }
            "KillMode" => {
                let v = opt(value, |v| {
                    values::parse_choice(v, &["control-group", "mixed", "process", "none"])
                })?;
                set_extra(exec, key, v.map(PassthroughValue::Str));
            }
            "LimitNOFILE" => {
                let v = opt(value, values::parse_limit_nofile)?;
                set_extra(
                    exec,
                    "LimitNOFILE",
                    v.map(|(_, hard)| PassthroughValue::U64(hard)),
                );
                set_extra(
                    exec,
                    "LimitNOFILESoft",
                    v.map(|(soft, _)| PassthroughValue::U64(soft)),
                );
            }
            "MemoryMax" => {
                let v = opt(value, values::parse_memory_limit)?;
                set_extra(exec, key, v.map(PassthroughValue::U64));
            }
            "TimeoutStopSec" => {
                // systemd: 0 disables the timeout, i.e. infinity.
                let v = opt(value, values::parse_time_span)?.map(|usec| {
                    if usec == 0 {
                        u64::MAX
                    } else {
                        usec
                    }
                });
                set_extra(exec, "TimeoutStopUSec", v.map(PassthroughValue::U64));
            }
            "Nice" => {
                let v = opt(value, values::parse_nice)?;
                set_extra(exec, key, v.map(PassthroughValue::I32));
            }
            "RemainAfterExit" => {
                return Err("RemainAfterExit= is not allowed: an instance must become \
                            inactive when it exits, so that systemd-distribute can start it \
                            again when the next connection arrives"
                    .into())
            }
            "Sockets" => {
                return Err("Sockets= does not apply: instances get their socket from \
                            systemd-distribute"
                    .into())
            }
            _ if SOCKET_KEYS.contains(&key) || key == "Accept" => {
                return Err(format!("{key}= belongs in [Socket], not [Service]"))
            }
            _ => {
                return Err(
                    unknown_key(key, Section::Service, service_keys()).unwrap_or_else(|| {
                        format!(
                            "unknown or unsupported key \"{key}\" in [Service]; put it in a \
                             drop-in /etc/systemd/system/{}@.service.d/*.conf, which systemd \
                             applies to every instance",
                            self.dropin_prefix
                        )
                    }),
                )
            }
        }
        Ok(())
    }
}

/// For a key that differs from a valid one only in case, the "did you mean" message.
fn unknown_key<'k>(
    key: &str,
    section: Section,
    valid: impl Iterator<Item = &'k str>,
) -> Option<String> {
    let mut valid = valid;
    let close = valid.find(|k| k.eq_ignore_ascii_case(key))?;
    Some(format!(
        "unknown key \"{key}\" in {}: did you mean \"{close}\"? (keys are case-sensitive)",
        section.header()
    ))
}

/// `None` for an empty value (reset), else the parsed value.
fn opt<T>(value: &str, parse: impl FnOnce(&str) -> values::Result<T>) -> values::Result<Option<T>> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

/// A boolean option whose default is `false`.
fn flag(value: &str) -> values::Result<bool> {
    Ok(opt(value, values::parse_bool)?.unwrap_or(false))
}

/// Replaces (or with `None`, removes) the passthrough property `name`.
fn set_extra(exec: &mut ServiceSpec, name: &str, value: Option<PassthroughValue>) {
    exec.extra.retain(|(k, _)| k != name);
    if let Some(v) = value {
        exec.extra.push((name.to_string(), v));
    }
}

/// `ReceiveBuffer=` / `SendBuffer=`: a size that fits the `int` of SO_RCVBUF/SO_SNDBUF.
fn socket_buffer(value: &str) -> values::Result<u64> {
    let v = values::parse_size(value)?;
    if v > i32::MAX as u64 {
        return Err(format!(
            "too large: at most {} bytes (the kernel takes an int)",
            i32::MAX
        ));
    }
    Ok(v)
}

/// `FileDescriptorName=`: `%N` is expanded right away (the name is known); `%i` would
/// differ per fd and is not offered.
fn fd_name(value: &str, name: &str) -> values::Result<String> {
    if value.contains("%i") {
        return Err("%i is not available in FileDescriptorName=; use %N or a fixed name".into());
    }
    check_specifiers(value)?;
    let expanded = expand_specifiers(value, name, 0);
    values::check_fd_name(&expanded)?;
    Ok(expanded)
}

/// `ExecStart=`: one command, an absolute path and its arguments.
fn exec_start(value: &str) -> values::Result<Vec<String>> {
    let words = split_words(value, true)?;
    if words.iter().any(|w| w.bare && w.text == ";") {
        return Err(
            "only one command is allowed; to pass \";\" as an argument write \"\\;\"".into(),
        );
    }
    let Some(first) = words.first() else {
        return Err("no command given".into());
    };
    if first.bare {
        let prefix: String = first
            .text
            .chars()
            .take_while(|c| "-@:+!|".contains(*c))
            .collect();
        if !prefix.is_empty() {
            return Err(format!(
                "prefix \"{prefix}\" is not supported; start the command with the absolute \
                 path of the program"
            ));
        }
    }
    for w in &words {
        check_specifiers(&w.text)?;
    }
    let path = &first.text;
    if path.is_empty() {
        return Err("empty command: give the absolute path of the program".into());
    }
    if !path.starts_with('/') {
        return Err(format!(
            "\"{path}\" is not an absolute path; commands are not looked up in $PATH: write \
             e.g. /usr/bin/{path}"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("\"{path}\" is a directory, not a program"));
    }
    values::check_absolute_path(path)?;
    Ok(words.into_iter().map(|w| w.text).collect())
}

/// `Environment=`: one or more `NAME=VALUE` words.
fn environment(value: &str) -> values::Result<Vec<String>> {
    let words = split_words(value, false)?;
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let Some((var, val)) = w.text.split_once('=') else {
            return Err(format!(
                "\"{}\" is not an assignment: write NAME=VALUE (quote it if it contains \
                 spaces: \"NAME=a b\")",
                w.text
            ));
        };
        values::check_env_name(var)?;
        if let Some(c) = val
            .chars()
            .find(|&c| c.is_control() && c != '\t' && c != '\n')
        {
            return Err(format!(
                "value of {var} contains {}",
                values::describe_char(c)
            ));
        }
        check_specifiers(&w.text)?;
        out.push(w.text);
    }
    Ok(out)
}

/// `User=` / `Group=`: specifiers allowed (e.g. `web-%i`); validated as instance 0.
fn user_group(value: &str, name: &str) -> values::Result<String> {
    check_specifiers(value)?;
    values::check_user_group(&expand_specifiers(value, name, 0))?;
    Ok(value.to_string())
}

/// `WorkingDirectory=`: an absolute path, or `~` for the user's home.
fn working_directory(value: &str, name: &str) -> values::Result<String> {
    if value == "~" {
        return Ok(value.to_string());
    }
    if value.starts_with('-') {
        return Err("the \"-\" prefix is not supported: give an absolute path or ~".into());
    }
    check_specifiers(value)?;
    values::check_absolute_path(&expand_specifiers(value, name, 0))
        .map_err(|e| format!("{e}; use an absolute path or ~"))?;
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed key must accept an empty value (a reset), so that the lists shown in
    /// error messages and the `match` arms cannot drift apart.
    #[test]
    fn every_listed_key_is_handled() {
        let mut b = Builder {
            name: "web",
            dropin_prefix: "web".into(),
            listen: Vec::new(),
            distribute: None,
            service: None,
            options: SocketOptions::default(),
            exec: ServiceSpec::default(),
            service_section: None,
        };
        for key in SOCKET_KEYS {
            assert_eq!(b.socket(key, ""), Ok(()), "[Socket] {key}");
        }
        for key in service_keys() {
            assert_eq!(b.service(key, ""), Ok(()), "[Service] {key}");
        }
        assert!(b.socket("Nope", "").is_err());
        assert!(b.service("Nope", "").is_err());
    }
}
