//! Assignments → [`SocketSpec`]: one `match` per section over the keys, like systemd's
//! generator-style parsers, each arm calling a validator from [`crate::values`].
//!
//! Every key accepts an empty value as a reset: lists are emptied, scalars go back to
//! their default. That is what lets a drop-in replace a list instead of extending it.

use std::path::Path;

use crate::error::ConfigError;
use crate::lexer::{lex, Assignment, Section};
use crate::spec::{
    Activation, Companion, CompanionKind, Distribute, Listen, ListenKind, Notice, Origin,
    PassthroughValue, ServiceSpec, SocketOptions, SocketProtocol, SocketSpec, Steering,
};
use crate::specifier::{check_specifiers, expand_specifiers};
use crate::validate::finish;
use crate::values::{self, check_unit_prefix};
use crate::words::split_words;

/// Keys accepted in `[Socket]`, in the order the documentation lists them.
pub const SOCKET_KEYS: &[&str] = &[
    "ListenStream",
    "ListenDatagram",
    "ListenSequentialPacket",
    "ListenFIFO",
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
    "KeepAliveTimeSec",
    "KeepAliveIntervalSec",
    "KeepAliveProbes",
    "Priority",
    "IPTOS",
    "IPTTL",
    "Mark",
    "Broadcast",
    "PassPacketInfo",
    "Timestamping",
    "TCPCongestion",
    "SocketProtocol",
    "SocketUser",
    "SocketGroup",
    "SocketMode",
    "DirectoryMode",
    "RemoveOnStop",
    "Symlinks",
    "PassCredentials",
    "PassSecurity",
    "PipeSize",
    "FileDescriptorName",
    "TriggerLimitIntervalSec",
    "TriggerLimitBurst",
    "Activation",
    "Steering",
    "WarmQueueDepth",
    "DrainTimeoutSec",
    "StuckTimeoutSec",
    "StuckRestartSec",
    "Accept",
    "ReusePort",
    "FlushPending",
];

/// `[Unit]` keys that are used.
pub const UNIT_KEYS: &[&str] = &["Description", "Documentation"];

/// `[Unit]` keys that are accepted and ignored (with one notice): ordering,
/// dependencies and what applies to a unit's own jobs. A config is not a unit.
pub const IGNORED_UNIT_KEYS: &[&str] = &[
    "Wants",
    "Requires",
    "Requisite",
    "BindsTo",
    "PartOf",
    "Upholds",
    "Conflicts",
    "Before",
    "After",
    "OnFailure",
    "OnSuccess",
    "OnFailureJobMode",
    "PropagatesReloadTo",
    "ReloadPropagatedFrom",
    "PropagatesStopTo",
    "StopPropagatedFrom",
    "JoinsNamespaceOf",
    "RequiresMountsFor",
    "WantsMountsFor",
    "DefaultDependencies",
    "IgnoreOnIsolate",
    "StopWhenUnneeded",
    "AllowIsolate",
    "RefuseManualStart",
    "RefuseManualStop",
    "CollectMode",
    "SurviveFinalKillSignal",
    "SourcePath",
    "JobTimeoutSec",
    "JobRunningTimeoutSec",
    "JobTimeoutAction",
    "JobTimeoutRebootArgument",
    "StartLimitIntervalSec",
    "StartLimitBurst",
    "StartLimitAction",
    "FailureAction",
    "SuccessAction",
    "FailureActionExitStatus",
    "SuccessActionExitStatus",
    "RebootArgument",
];

/// `[Install]` keys: accepted and ignored (with one notice).
pub const INSTALL_KEYS: &[&str] = &[
    "WantedBy",
    "RequiredBy",
    "UpheldBy",
    "Also",
    "Alias",
    "DefaultInstance",
];

/// Why `[Unit]` ordering and dependency keys are ignored.
const UNIT_IGNORED_WHY: &str = "a config is not a unit: systemd-distribute binds the sockets of \
    every config when it starts, so order or pull in systemd-distribute.service instead, and \
    put what the instances need in their own unit (a drop-in NAME@.service.d/*.conf)";

/// Why `[Install]` is ignored.
const INSTALL_IGNORED_WHY: &str = "configs are not enabled one by one: systemd-distribute \
    serves every config in its directories once systemd-distribute.service is enabled";

/// systemd 257's own `[Socket]` keys (systemd.socket(5)) that are refused, each with
/// its reason (see `unsupported_socket_key`). Every other key of that page is
/// implemented. The execution, kill and resource-control settings a socket unit
/// takes for its own commands are refused as a group.
pub const UNSUPPORTED_SOCKET_KEYS: &[&str] = &[
    "ListenSpecial",
    "ListenNetlink",
    "ListenMessageQueue",
    "ListenUSBFunction",
    "Writable",
    "MessageQueueMaxMessages",
    "MessageQueueMessageSize",
    "MaxConnections",
    "MaxConnectionsPerSource",
    "ExecStartPre",
    "ExecStartPost",
    "ExecStopPre",
    "ExecStopPost",
    "TimeoutSec",
    "PassFileDescriptorsToExec",
    "PollLimitIntervalSec",
    "PollLimitBurst",
    "SmackLabel",
    "SmackLabelIPIn",
    "SmackLabelIPOut",
    "SELinuxContextFromNet",
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
/// (`Accept=`, `ReusePort=` and `FlushPending=` are handled separately: their
/// default is what we do anyway.)
pub fn unsupported_socket_key(key: &str) -> Option<&'static str> {
    const NOT_SOCKET: &str = "only ListenStream= and ListenDatagram= (TCP, UDP, AF_UNIX), \
        ListenSequentialPacket= (AF_UNIX) and ListenFIFO= can be served; this kind of \
        listener is for a plain systemd socket unit";
    const ACCEPT_ONLY: &str = "applies only with Accept=yes, which is incompatible with \
        Distribute=: each instance accepts on its own socket";
    const COMMANDS: &str = "socket units' own commands are not supported; put the command in \
        [Service] or in the instances' drop-ins";
    const LSM: &str = "security labels of socket units are not supported; label the \
        instances instead (SELinuxContext=, SmackProcessLabel= in a drop-in \
        NAME@.service.d/*.conf)";
    Some(match key {
        "ListenSpecial"
        | "ListenNetlink"
        | "ListenMessageQueue"
        | "ListenUSBFunction"
        | "Writable"
        | "MessageQueueMaxMessages"
        | "MessageQueueMessageSize" => NOT_SOCKET,
        "MaxConnections" | "MaxConnectionsPerSource" => ACCEPT_ONLY,
        "ExecStartPre"
        | "ExecStartPost"
        | "ExecStopPre"
        | "ExecStopPost"
        | "TimeoutSec"
        | "PassFileDescriptorsToExec" => COMMANDS,
        "PollLimitIntervalSec" | "PollLimitBurst" => {
            "the activator watches a socket only while its instance is down and starts it \
             at the first event, so there is no polling to limit; TriggerLimitIntervalSec= \
             and TriggerLimitBurst= bound the starts"
        }
        "SmackLabel" | "SmackLabelIPIn" | "SmackLabelIPOut" | "SELinuxContextFromNet" => LSM,
        _ => return None,
    })
}

/// Applies assignments to the fields of a [`SocketSpec`] under construction.
struct Builder<'a> {
    /// Config name, for specifiers and defaults.
    name: &'a str,
    /// The file being applied, and the line of the assignment (for origins).
    file: &'a Path,
    line: usize,
    companions: Vec<Companion>,
    description: Option<String>,
    documentation: Vec<String>,
    /// `[Unit]` keys ignored so far, with the first one's place.
    unit_ignored: Option<(Origin, Vec<String>)>,
    /// `[Install]` keys ignored so far, with the first one's place.
    install_ignored: Option<(Origin, Vec<String>)>,
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
/// validated [`SocketSpec`] named `name`. Returns the first error.
pub fn parse_files(name: &str, files: &[(&Path, &str)]) -> Result<SocketSpec, ConfigError> {
    parse_files_all(name, files).map_err(|mut errors| errors.remove(0))
}

/// Like [`parse_files`], but goes on after a refused assignment, so that every refused
/// key of the config is reported at once (for `distributectl verify`). Syntax errors
/// still stop at the first. On error the list holds at least one error, in file order.
pub fn parse_files_all(
    name: &str,
    files: &[(&Path, &str)],
) -> Result<SocketSpec, Vec<ConfigError>> {
    let Some(&(main, _)) = files.first() else {
        return Err(vec![ConfigError::file(
            Path::new(""),
            format!("config {name:?}: no files"),
        )]);
    };
    check_config_name(name).map_err(|e| vec![ConfigError::file(main, e)])?;

    // Lex everything first: syntax errors come before meaning errors, and the pre-scan
    // below needs all assignments.
    let mut lexed = Vec::with_capacity(files.len());
    for &(path, text) in files {
        lexed.push((path, lex(path, text).map_err(|e| vec![e])?));
    }

    let mut b = Builder {
        name,
        file: main,
        line: 0,
        companions: Vec::new(),
        description: None,
        documentation: Vec::new(),
        unit_ignored: None,
        install_ignored: None,
        dropin_prefix: last_service_prefix(&lexed).unwrap_or_else(|| name.to_string()),
        listen: Vec::new(),
        distribute: None,
        service: None,
        options: SocketOptions::default(),
        exec: ServiceSpec::default(),
        service_section: None,
    };
    let mut errors = Vec::new();
    for (path, assignments) in &lexed {
        b.file = path;
        for a in assignments {
            b.line = a.line;
            if a.section == Section::Service && b.service_section.is_none() {
                b.service_section = Some(Origin {
                    file: path.to_path_buf(),
                    line: a.line,
                });
            }
            if let Err(msg) = b.apply(a) {
                errors.push(ConfigError::assignment(path, a.line, &a.key, &a.value, msg));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut notices = Vec::new();
    for (ignored, why) in [
        (b.unit_ignored.take(), UNIT_IGNORED_WHY),
        (b.install_ignored.take(), INSTALL_IGNORED_WHY),
    ] {
        if let Some((origin, keys)) = ignored {
            let keys: Vec<String> = keys.iter().map(|k| format!("{k}=")).collect();
            notices.push(Notice {
                origin,
                message: format!("{} ignored: {why}", keys.join(", ")),
            });
        }
    }

    let (service, instance) = b
        .service
        .unwrap_or_else(|| (name.to_string(), values::DEFAULT_INSTANCE.to_string()));
    let spec = SocketSpec {
        name: name.to_string(),
        sources: files.iter().map(|(p, _)| p.to_path_buf()).collect(),
        listen: b.listen,
        companions: b.companions,
        description: b.description,
        documentation: b.documentation,
        notices,
        distribute: b.distribute.unwrap_or(Distribute::Count(1)),
        service,
        instance,
        service_section: b.service_section,
        options: b.options,
        exec: b.exec,
    };
    finish(main, spec).map_err(|e| vec![e])
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
            Section::Unit => self.unit(&a.key, &a.value),
            Section::Socket => self.socket(&a.key, &a.value),
            Section::Service => self.service(&a.key, &a.value),
            Section::Install => self.install(&a.key),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            file: self.file.to_path_buf(),
            line: self.line,
        }
    }

    /// Remembers an ignored key for the section's one notice.
    fn ignore(&self, slot: &mut Option<(Origin, Vec<String>)>, key: &str) {
        let (_, keys) = slot.get_or_insert_with(|| (self.origin(), Vec::new()));
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }

    fn unit(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "Description" => {
                self.description = opt(value, |v| {
                    check_specifiers(v)?;
                    Ok(expand_specifiers(v, self.name, 0))
                })?
            }
            "Documentation" => {
                if value.is_empty() {
                    self.documentation.clear();
                } else {
                    for uri in split_words(value, false)? {
                        values::check_documentation_uri(&uri.text)?;
                        if !self.documentation.contains(&uri.text) {
                            self.documentation.push(uri.text);
                        }
                    }
                }
            }
            k if IGNORED_UNIT_KEYS.contains(&k) => {
                let mut slot = self.unit_ignored.take();
                self.ignore(&mut slot, k);
                self.unit_ignored = slot;
            }
            k if k.starts_with("Condition") || k.starts_with("Assert") => {
                return Err(format!(
                    "{k}= is not supported: conditions are not checked here, systemd-distribute \
                     serves every valid config; to have systemd check it before each instance \
                     starts, put it in the instances' [Unit] (a drop-in \
                     /etc/systemd/system/{}@.service.d/*.conf)",
                    self.dropin_prefix
                ))
            }
            _ if SOCKET_KEYS.contains(&key) => {
                return Err(format!("{key}= belongs in [Socket], not [Unit]"))
            }
            _ => {
                return Err(unknown_key(
                    key,
                    Section::Unit,
                    UNIT_KEYS.iter().chain(IGNORED_UNIT_KEYS).copied(),
                )
                .unwrap_or_else(|| {
                    format!(
                        "unknown key \"{key}\" in [Unit]; Description= and Documentation= \
                             are used, ordering and dependency keys (After=, Wants=, …) are \
                             ignored"
                    )
                }))
            }
        }
        Ok(())
    }

    fn install(&mut self, key: &str) -> Result<(), String> {
        if INSTALL_KEYS.contains(&key) {
            let mut slot = self.install_ignored.take();
            self.ignore(&mut slot, key);
            self.install_ignored = slot;
            return Ok(());
        }
        Err(
            unknown_key(key, Section::Install, INSTALL_KEYS.iter().copied()).unwrap_or_else(|| {
                format!(
                    "unknown key \"{key}\" in [Install]; valid keys: {} (all ignored)",
                    INSTALL_KEYS.join(", ")
                )
            }),
        )
    }

    fn socket(&mut self, key: &str, value: &str) -> Result<(), String> {
        let o = &mut self.options;
        match key {
            "ListenStream" => self.listen(ListenKind::Stream, value)?,
            "ListenDatagram" => self.listen(ListenKind::Datagram, value)?,
            "ListenSequentialPacket" => {
                if !value.is_empty() && !value.starts_with(['/', '@']) {
                    return Err("ListenSequentialPacket= takes an AF_UNIX socket: an absolute \
                                path, or @NAME in the abstract namespace"
                        .into());
                }
                self.companion(CompanionKind::SequentialPacket, value)?
            }
            "ListenFIFO" => {
                if value.starts_with('@') {
                    return Err("a FIFO needs a file-system path, not @NAME".into());
                }
                self.companion(CompanionKind::Fifo, value)?
            }
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
            "KeepAliveTimeSec" => o.keep_alive_time_usec = opt(value, keepalive_secs)?,
            "KeepAliveIntervalSec" => o.keep_alive_interval_usec = opt(value, keepalive_secs)?,
            "KeepAliveProbes" => {
                // TCP_KEEPCNT: 1..=127 in the kernel.
                o.keep_alive_probes = opt(value, |v| match values::parse_u64_max(v, 127) {
                    Ok(0) | Err(_) => Err("must be a number between 1 and 127".into()),
                    Ok(n) => Ok(n as u32),
                })?
            }
            "Priority" => o.priority = opt(value, values::parse_nonneg_int)?,
            "IPTOS" => o.ip_tos = opt(value, values::parse_ip_tos)?,
            "IPTTL" => o.ip_ttl = opt(value, values::parse_ip_ttl)?,
            "Mark" => o.mark = opt(value, values::parse_nonneg_int)?,
            "Broadcast" => o.broadcast = flag(value)?,
            "PassPacketInfo" => o.pass_packet_info = flag(value)?,
            "Timestamping" => {
                o.timestamping = opt(value, values::parse_timestamping)?.unwrap_or_default()
            }
            "TCPCongestion" => {
                o.tcp_congestion = opt(value, |v| {
                    values::check_tcp_congestion(v).map(|()| v.to_string())
                })?
            }
            "SocketProtocol" => {
                o.socket_protocol = match value {
                    "" => None,
                    "mptcp" => Some(SocketProtocol::Mptcp),
                    "udplite" => Some(SocketProtocol::UdpLite),
                    "sctp" => {
                        return Err("SocketProtocol=sctp is not supported: SCTP endpoints are \
                                    not spread over SO_REUSEPORT sockets the way TCP \
                                    connections are; use a plain systemd socket unit"
                            .into())
                    }
                    _ => return Err("must be mptcp (for ListenStream= addresses) or udplite \
                                     (for ListenDatagram= addresses)"
                        .into()),
                }
            }
            "SocketUser" => {
                o.socket_user = opt(value, |v| values::check_user_group(v).map(|()| v.to_string()))?
            }
            "SocketGroup" => {
                o.socket_group = opt(value, |v| values::check_user_group(v).map(|()| v.to_string()))?
            }
            "SocketMode" => o.socket_mode = opt(value, values::parse_mode)?,
            "DirectoryMode" => o.directory_mode = opt(value, values::parse_mode)?,
            "RemoveOnStop" => o.remove_on_stop = flag(value)?,
            "Symlinks" => {
                if value.is_empty() {
                    o.symlinks.clear();
                } else {
                    for w in split_words(value, false)? {
                        values::check_absolute_path(&w.text)?;
                        if !o.symlinks.contains(&w.text) {
                            o.symlinks.push(w.text);
                        }
                    }
                }
            }
            "PassCredentials" => o.pass_credentials = flag(value)?,
            "PassSecurity" => o.pass_security = flag(value)?,
            "PipeSize" => {
                o.pipe_size = opt(value, |v| {
                    let size = values::parse_size(v)?;
                    if size == 0 || size > i32::MAX as u64 {
                        return Err(format!("must be between 1 and {} bytes", i32::MAX));
                    }
                    Ok(size)
                })?
            }
            "FlushPending" => {
                // Never flushing is what the activator does (and systemd's default).
                if !value.is_empty() && values::parse_bool(value)? {
                    return Err("FlushPending=yes is not supported: the activator never reads \
                                from the sockets, what is queued belongs to the next instance"
                        .into());
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
            "StuckTimeoutSec" => {
                o.stuck_timeout_usec = opt(value, values::parse_time_span)?;
            }
            "StuckRestartSec" => {
                o.stuck_restart_usec = opt(value, values::parse_time_span)?;
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
                if UNIT_KEYS.contains(&key) || IGNORED_UNIT_KEYS.contains(&key) {
                    return Err(format!("{key}= belongs in [Unit], not [Socket]"));
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
            self.companions.clear();
            return Ok(());
        }
        if value.starts_with(['/', '@']) {
            let kind = match kind {
                ListenKind::Stream => CompanionKind::Stream,
                ListenKind::Datagram => CompanionKind::Datagram,
            };
            return self.companion(kind, value);
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

    /// A listener the kernel cannot distribute: bound once, shared by all instances.
    fn companion(&mut self, kind: CompanionKind, value: &str) -> Result<(), String> {
        if value.is_empty() {
            self.listen.clear();
            self.companions.clear();
            return Ok(());
        }
        // %t is systemd's runtime directory: /run for the system manager.
        let path = value.replace("%t", "/run");
        check_specifiers(&path)?;
        let path = expand_specifiers(&path, self.name, 0);
        match kind {
            CompanionKind::Fifo => {
                values::check_absolute_path(&path)?;
            }
            _ => values::check_unix_path(&path)?,
        }
        if self.companions.iter().any(|c| c.path == path) {
            return Err(format!(
                "{path} is already listed; each path may be given once"
            ));
        }
        self.companions.push(Companion {
            kind,
            path,
            position: self.listen.len() + self.companions.len(),
            origin: self.origin(),
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
            _ if SOCKET_KEYS.contains(&key) => {
                return Err(format!("{key}= belongs in [Socket], not [Service]"))
            }
            _ if UNIT_KEYS.contains(&key) || IGNORED_UNIT_KEYS.contains(&key) => {
                return Err(format!("{key}= belongs in [Unit], not [Service]"))
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

/// `KeepAliveTimeSec=`/`KeepAliveIntervalSec=`: a time span the kernel takes in whole
/// seconds, 1..=32767 (systemd truncates to seconds).
fn keepalive_secs(value: &str) -> values::Result<u64> {
    let usec = values::parse_time_span(value)?;
    let secs = usec / 1_000_000;
    if !(1..=32767).contains(&secs) {
        return Err("must be between 1s and 32767s (the kernel's limit)".into());
    }
    Ok(usec)
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
            file: Path::new("web.socket"),
            line: 1,
            companions: Vec::new(),
            description: None,
            documentation: Vec::new(),
            unit_ignored: None,
            install_ignored: None,
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
        for key in UNIT_KEYS.iter().chain(IGNORED_UNIT_KEYS) {
            assert_eq!(b.unit(key, ""), Ok(()), "[Unit] {key}");
        }
        for key in INSTALL_KEYS {
            assert_eq!(b.install(key), Ok(()), "[Install] {key}");
        }
        for key in UNSUPPORTED_SOCKET_KEYS {
            let e = b.socket(key, "x").unwrap_err();
            assert!(e.starts_with(&format!("{key}= is not supported: ")), "{e}");
        }
        assert!(b.socket("Nope", "").is_err());
        assert!(b.unit("Nope", "").is_err());
        assert!(b.install("Nope").is_err());
        assert!(b.service("Nope", "").is_err());
    }
}
