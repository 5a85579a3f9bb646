//! Typed result of parsing a `NAME.socket` file: the contract between the
//! config crate and the activator. Everything here is plain data.

use std::net::SocketAddr;
use std::path::PathBuf;

/// One fully parsed and validated distributed socket config.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketSpec {
    /// `NAME` from `NAME.socket`.
    pub name: String,
    /// Files that contributed, in the order they were applied (main file, then drop-ins).
    pub sources: Vec<PathBuf>,
    /// `ListenStream=` / `ListenDatagram=` with TCP/UDP addresses, in file order (after
    /// list resets): the listeners distributed over N sockets.
    pub listen: Vec<Listen>,
    /// Listeners the kernel cannot distribute (AF_UNIX paths, FIFOs), in file order:
    /// bound once and handed to every instance next to its own sockets.
    pub companions: Vec<Companion>,
    /// `[Unit]` `Description=`, if set.
    pub description: Option<String>,
    /// `[Unit]` `Documentation=` URIs, in order.
    pub documentation: Vec<String>,
    /// What was accepted but ignored (`[Unit]` ordering and dependencies, `[Install]`),
    /// one notice per kind, for the daemon's log and `distributectl verify`.
    pub notices: Vec<Notice>,
    /// `Distribute=`. Optional in the file: defaults to `Count(1)` (one instance),
    /// which still gives the activator's start-on-demand behaviour.
    pub distribute: Distribute,
    /// Template prefix from `Service=`: instances are `{service}@{instance}.service`.
    /// Defaults to `name`. `Service=web@.service` and `Service=web` both give `web`.
    pub service: String,
    /// How an index forms the instance string, `%i` standing for the index:
    /// `%i` by default, `shop-%i` for `Service=app@shop-%i.service`.
    pub instance: String,
    /// Where the `[Service]` section starts (its first assignment), if the config
    /// has one: with it the activator builds transient instances, without it the
    /// instances are the template unit file's own (template mode).
    pub service_section: Option<Origin>,
    /// Per-fd socket options.
    pub options: SocketOptions,
    /// `[Service]` section: what each instance runs.
    pub exec: ServiceSpec,
}

impl SocketSpec {
    /// The name for `$LISTEN_FDNAMES`: `FileDescriptorName=`, or by default `NAME.socket`,
    /// which is what systemd uses for a `NAME.socket` unit.
    pub fn fd_name(&self) -> String {
        match &self.options.file_descriptor_name {
            Some(n) => n.clone(),
            None => format!("{}.socket", self.name),
        }
    }

    /// The sockets an instance gets, in the order systemd would pass them for the same
    /// `Listen*=` lines: the config order, each distributed listener contributing the
    /// instance's own socket and each companion the one shared socket.
    pub fn fd_order(&self) -> Vec<FdRef> {
        let total = self.listen.len() + self.companions.len();
        let mut out = Vec::with_capacity(total);
        let mut distributed = 0;
        for position in 0..total {
            match self.companions.iter().position(|c| c.position == position) {
                Some(c) => out.push(FdRef::Companion(c)),
                None => {
                    out.push(FdRef::Distributed(distributed));
                    distributed += 1;
                }
            }
        }
        out
    }

    /// The unit name of instance `index`: `{service}@{instance}.service`, with
    /// `%i` in the instance pattern replaced by `index`.
    pub fn instance_unit(&self, index: u32) -> String {
        let instance = self.instance.replacen("%i", &index.to_string(), 1);
        format!("{}@{instance}.service", self.service)
    }

    /// The template unit: `{service}@.service`.
    pub fn template_unit(&self) -> String {
        format!("{}@.service", self.service)
    }

    /// The index of `unit` if it is one of this config's instance names
    /// (the inverse of [`SocketSpec::instance_unit`]).
    pub fn instance_index(&self, unit: &str) -> Option<u32> {
        let instance = unit
            .strip_suffix(".service")?
            .strip_prefix(self.service.as_str())?
            .strip_prefix('@')?;
        let (before, after) = self.instance.split_once("%i")?;
        let digits = instance.strip_prefix(before)?.strip_suffix(after)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // "07" is not instance 7: only the canonical spelling names an instance.
        let index: u32 = digits.parse().ok()?;
        (index.to_string() == digits).then_some(index)
    }
}

/// A place in a config file, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One entry of [`SocketSpec::fd_order`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdRef {
    /// The instance's own socket of `listen[i]`.
    Distributed(usize),
    /// The shared socket of `companions[i]`.
    Companion(usize),
}

/// Something accepted and ignored, said once (`file:line: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Where the first ignored key is.
    pub origin: Origin,
    /// What is ignored, and why.
    pub message: String,
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Kind of a companion listener (one the kernel cannot distribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompanionKind {
    /// `ListenStream=/path` or `@abstract`: AF_UNIX `SOCK_STREAM`.
    Stream,
    /// `ListenDatagram=/path`: AF_UNIX `SOCK_DGRAM`.
    Datagram,
    /// `ListenSequentialPacket=/path`: AF_UNIX `SOCK_SEQPACKET`.
    SequentialPacket,
    /// `ListenFIFO=/path`.
    Fifo,
}

impl CompanionKind {
    /// The key it comes from.
    pub fn key(self) -> &'static str {
        match self {
            CompanionKind::Stream => ListenKind::Stream.key(),
            CompanionKind::Datagram => ListenKind::Datagram.key(),
            CompanionKind::SequentialPacket => "ListenSequentialPacket",
            CompanionKind::Fifo => "ListenFIFO",
        }
    }
}

/// A listener bound once by the activator and shared by every instance: an AF_UNIX
/// socket (a path, or `@name` in the abstract namespace) or a FIFO.
#[derive(Debug, Clone, PartialEq)]
pub struct Companion {
    /// What to create.
    pub kind: CompanionKind,
    /// The path (absolute), or `@name` for an abstract socket.
    pub path: String,
    /// Index among all `Listen*=` lines (distributed or not), for [`SocketSpec::fd_order`].
    pub position: usize,
    /// The line it comes from.
    pub origin: Origin,
}

impl Companion {
    /// An abstract AF_UNIX socket (`@name`): nothing in the file system.
    pub fn is_abstract(&self) -> bool {
        self.path.starts_with('@')
    }
}

/// Kind of listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenKind {
    /// `ListenStream=`: TCP.
    Stream,
    /// `ListenDatagram=`: UDP.
    Datagram,
}

impl ListenKind {
    /// The key it comes from: `ListenStream` or `ListenDatagram`.
    pub fn key(self) -> &'static str {
        match self {
            ListenKind::Stream => "ListenStream",
            ListenKind::Datagram => "ListenDatagram",
        }
    }
}

/// One `Listen*=` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// Stream or datagram.
    pub kind: ListenKind,
    /// `PORT` alone means `[::]:PORT` (dual-stack unless `BindIPv6Only=ipv6-only`).
    pub addr: SocketAddr,
    /// The value as written, for messages and `FileDescriptorName` defaults.
    pub original: String,
}

/// `Distribute=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribute {
    /// A fixed count (see [`crate::values::check_distribute`]).
    Count(u32),
    /// `cpus`: CPUs in the activator's affinity set, resolved at bind time.
    Cpus,
}

impl Default for Distribute {
    /// `Distribute=` may be left out: one instance.
    fn default() -> Self {
        Distribute::Count(1)
    }
}

/// Largest `Distribute=` we accept.
pub const MAX_DISTRIBUTE: u32 = 1024;

/// `BindIPv6Only=` (systemd's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindIpv6Only {
    /// `default`: the kernel's `net.ipv6.bindv6only` (we leave IPV6_V6ONLY untouched).
    #[default]
    Default,
    /// `both`: dual-stack, IPV6_V6ONLY=0.
    Both,
    /// `ipv6-only`: IPV6_V6ONLY=1.
    Ipv6Only,
}

impl BindIpv6Only {
    /// The value as systemd spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            BindIpv6Only::Default => "default",
            BindIpv6Only::Both => "both",
            BindIpv6Only::Ipv6Only => "ipv6-only",
        }
    }
}

/// Options applied to every fd of the config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SocketOptions {
    /// `Backlog=` (systemd default: SOMAXCONN, we use `None` = 4096 at bind time).
    pub backlog: Option<u32>,
    /// `BindIPv6Only=`.
    pub bind_ipv6_only: BindIpv6Only,
    /// `FreeBind=`.
    pub free_bind: bool,
    /// `NoDelay=` (TCP_NODELAY, streams only).
    pub no_delay: bool,
    /// `KeepAlive=` (SO_KEEPALIVE, streams only).
    pub keep_alive: bool,
    /// `ReceiveBuffer=` in bytes (suffixes K, M, G accepted, base 1024).
    pub receive_buffer: Option<u64>,
    /// `SendBuffer=` in bytes.
    pub send_buffer: Option<u64>,
    /// `FileDescriptorName=`; `None`: `NAME.socket`, like systemd's default (the socket
    /// unit's name), see [`SocketSpec::fd_name`]. Checked like systemd: <= 255 chars,
    /// printable ASCII, no `:`. `%N` and `%%` are already expanded.
    pub file_descriptor_name: Option<String>,
    /// `Transparent=` (IP_TRANSPARENT / IPV6_TRANSPARENT; needs CAP_NET_ADMIN).
    pub transparent: bool,
    /// `DeferAcceptSec=` in microseconds (TCP_DEFER_ACCEPT takes seconds: round up at bind time).
    /// `None` or `Some(0)`: off.
    pub defer_accept_usec: Option<u64>,
    /// `BindToDevice=`: network interface name (SO_BINDTODEVICE), checked like systemd's
    /// `ifname_valid()`. `None`: not bound to a device.
    pub bind_to_device: Option<String>,
    /// `TriggerLimitIntervalSec=` in microseconds (`u64::MAX` = `infinity`). `None`: default.
    pub trigger_limit_interval_usec: Option<u64>,
    /// `TriggerLimitBurst=`. `None`: default.
    pub trigger_limit_burst: Option<u32>,
    /// `Activation=`: when instances start.
    pub activation: Activation,
    /// `Steering=`: how new connections pick a socket of the group.
    pub steering: Steering,
    /// `WarmQueueDepth=`: with `Steering=warm`, another instance is warmed up
    /// when every warm instance has more than this many connections queued.
    pub warm_queue_depth: Option<u32>,
    /// `KeepAliveTimeSec=` in microseconds (TCP_KEEPIDLE, whole seconds at bind time).
    pub keep_alive_time_usec: Option<u64>,
    /// `KeepAliveIntervalSec=` in microseconds (TCP_KEEPINTVL).
    pub keep_alive_interval_usec: Option<u64>,
    /// `KeepAliveProbes=` (TCP_KEEPCNT).
    pub keep_alive_probes: Option<u32>,
    /// `Priority=` (SO_PRIORITY).
    pub priority: Option<u32>,
    /// `IPTOS=` (IP_TOS / IPV6_TCLASS).
    pub ip_tos: Option<u8>,
    /// `IPTTL=` (IP_TTL / IPV6_UNICAST_HOPS).
    pub ip_ttl: Option<u8>,
    /// `Mark=` (SO_MARK; needs CAP_NET_ADMIN).
    pub mark: Option<u32>,
    /// `Broadcast=` (SO_BROADCAST).
    pub broadcast: bool,
    /// `PassPacketInfo=` (IP_PKTINFO / IPV6_RECVPKTINFO).
    pub pass_packet_info: bool,
    /// `Timestamping=` (SO_TIMESTAMP / SO_TIMESTAMPNS).
    pub timestamping: Timestamping,
    /// `TCPCongestion=` (TCP_CONGESTION, stream sockets).
    pub tcp_congestion: Option<String>,
    /// `SocketProtocol=`: `mptcp` for ListenStream= addresses, `udplite` for
    /// ListenDatagram= addresses (like systemd: by socket type).
    pub socket_protocol: Option<SocketProtocol>,
    /// `PassCredentials=` (SO_PASSCRED, AF_UNIX companions).
    pub pass_credentials: bool,
    /// `PassSecurity=` (SO_PASSSEC, AF_UNIX companions).
    pub pass_security: bool,
    /// `SocketUser=`: owner of companion socket files and FIFOs.
    pub socket_user: Option<String>,
    /// `SocketGroup=`: group of companion socket files and FIFOs.
    pub socket_group: Option<String>,
    /// `SocketMode=` (default 0666).
    pub socket_mode: Option<u32>,
    /// `DirectoryMode=` for created parent directories (default 0755).
    pub directory_mode: Option<u32>,
    /// `RemoveOnStop=`: remove companion files and `Symlinks=` when the config goes.
    pub remove_on_stop: bool,
    /// `Symlinks=`: aliases of the one file-system companion.
    pub symlinks: Vec<String>,
    /// `PipeSize=` (F_SETPIPE_SZ on FIFOs).
    pub pipe_size: Option<u64>,
    /// `DrainTimeoutSec=` in microseconds (`u64::MAX` = `infinity`): how long
    /// an instance being drained (shrink, config removed) may keep running
    /// before it is stopped. `None`: the default.
    pub drain_timeout_usec: Option<u64>,
    /// `StuckTimeoutSec=` in microseconds (`0` or `u64::MAX` = off): an
    /// instance whose queue stays non-empty without draining this long (or is
    /// full) is steered around until it has drained it. `None`: the default.
    pub stuck_timeout_usec: Option<u64>,
    /// `StuckRestartSec=` in microseconds (`0` or `u64::MAX` = off, the
    /// default): an instance stuck this long is killed and started again.
    pub stuck_restart_usec: Option<u64>,
}

/// `Timestamping=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Timestamping {
    /// `off`.
    #[default]
    Off,
    /// `us`: SO_TIMESTAMP.
    Us,
    /// `ns`: SO_TIMESTAMPNS.
    Ns,
}

/// `SocketProtocol=` values we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketProtocol {
    /// `mptcp`: IPPROTO_MPTCP for the stream sockets.
    Mptcp,
    /// `udplite`: IPPROTO_UDPLITE for the datagram sockets.
    UdpLite,
}

impl SocketProtocol {
    /// As systemd spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketProtocol::Mptcp => "mptcp",
            SocketProtocol::UdpLite => "udplite",
        }
    }
}

/// Default `SocketMode=`.
pub const DEFAULT_SOCKET_MODE: u32 = 0o666;
/// Default `DirectoryMode=`.
pub const DEFAULT_DIRECTORY_MODE: u32 = 0o755;

/// `Activation=`: when the activator starts instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `on-demand` (default): instance i starts when socket i has something queued.
    #[default]
    OnDemand,
    /// `eager`: all N instances start as soon as the config is bound (and on
    /// reload or rescale); after an instance exits, it is started on demand.
    Eager,
}

/// `Steering=`: which socket of the reuseport group a new connection lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Steering {
    /// `hash` (default): the kernel's hash of the 4-tuple over all N sockets.
    #[default]
    Hash,
    /// `cpu`: the socket of the CPU that processes the packet (`cpu % N`), and
    /// instance i is pinned to those CPUs, so a connection stays on one CPU
    /// from softirq to user space.
    Cpu,
    /// `warm`: only the instances already running get new connections; one
    /// more is started when all of them fall behind.
    Warm,
}

/// `[Service]` section, values still containing specifiers (`%i`, `%N`, `%%`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceSpec {
    /// `ExecStart=`: argv (systemd quoting rules: double/single quotes, backslash escapes).
    /// Exactly one ExecStart is required (empty assignment resets).
    pub exec_start: Vec<String>,
    /// `User=`.
    pub user: Option<String>,
    /// `Group=`.
    pub group: Option<String>,
    /// `DynamicUser=`.
    pub dynamic_user: Option<bool>,
    /// `Environment=` assignments in order (`KEY=VALUE`, quoted words split like systemd).
    pub environment: Vec<String>,
    /// `WorkingDirectory=`.
    pub working_directory: Option<String>,
    /// `CPUAffinity=` as a list of CPU indices (ranges `0-3` and lists `0 2 4` / `0,2`).
    pub cpu_affinity: Vec<u32>,
    /// Other supported keys, translated 1:1 into transient-unit properties,
    /// in file order. See `PassthroughValue`.
    pub extra: Vec<(String, PassthroughValue)>,
}

/// Typed value for a `[Service]` key that maps 1:1 onto a systemd unit property.
#[derive(Debug, Clone, PartialEq)]
pub enum PassthroughValue {
    /// D-Bus `b`.
    Bool(bool),
    /// D-Bus `s`.
    Str(String),
    /// D-Bus `t`.
    U64(u64),
    /// D-Bus `i`.
    I32(i32),
}
