//! Binding the N `SO_REUSEPORT` sockets of each listen address.
//!
//! Socket i of every address belongs to instance i. All N sockets of an address
//! form one reuseport group, so the kernel spreads new connections (or
//! datagrams) across the N queues; the activator holds every fd for as long as
//! the config exists, which is why a connection that arrives while an instance
//! is down simply waits in its queue.

use distribute_config::{
    BindIpv6Only, Listen, ListenKind, SocketOptions, SocketProtocol, Timestamping,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// Listen backlog when `Backlog=` is not set (systemd uses SOMAXCONN too).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// One bound listening socket and what it is for.
#[derive(Debug)]
pub struct BoundSocket {
    /// The `Listen*=` line it came from.
    pub listen: Listen,
    /// The socket (blocking: its file description is shared with the instance,
    /// which picks its own mode; the activator only ever polls it).
    pub socket: Socket,
}

/// Why an address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("{key}={value} ({addr}): {op}: {err}{hint}")]
pub struct BindError {
    key: &'static str,
    value: String,
    addr: SocketAddr,
    op: &'static str,
    // Not `source`: the message already includes it, and anyhow would print it twice.
    err: io::Error,
    hint: String,
}

/// `IPPROTO_MPTCP` (linux/in.h; not in every libc crate version).
pub const IPPROTO_MPTCP: libc::c_int = 262;

fn hint_for(err: &io::Error, addr: &SocketAddr, op: &str) -> String {
    let errno = err.raw_os_error();
    match (op, errno) {
        ("socket (mptcp)", _) => {
            return "; this kernel cannot open MPTCP sockets: it lacks CONFIG_MPTCP, or MPTCP \
                    is off (sysctl net.mptcp.enabled=1); or drop SocketProtocol=mptcp"
                .into()
        }
        ("socket (udplite)", _) => {
            return "; this kernel has no UDP-Lite; drop SocketProtocol=udplite".into()
        }
        ("TCP_CONGESTION", Some(libc::ENOENT)) => {
            return "; this kernel does not have that algorithm: see \
                    /proc/sys/net/ipv4/tcp_available_congestion_control (a module \
                    tcp_NAME may need loading)"
                .into()
        }
        ("SO_MARK", Some(libc::EPERM)) => {
            return "; Mark= needs CAP_NET_RAW (Linux >= 5.17) or CAP_NET_ADMIN".into();
        }
        _ => {}
    }
    match errno {
        Some(libc::EADDRINUSE) => format!(
            "; another socket holds port {} without SO_REUSEPORT (or as another user): `ss -lntup 'sport = :{}'` shows it",
            addr.port(),
            addr.port()
        ),
        Some(libc::EACCES) => format!(
            "; port {} needs CAP_NET_BIND_SERVICE (run systemd-distribute as root or grant it the capability)",
            addr.port()
        ),
        Some(libc::EADDRNOTAVAIL) => format!(
            "; {} is not an address of this host (FreeBind=yes binds it anyway)",
            addr.ip()
        ),
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            "; out of file descriptors: raise LimitNOFILE= of systemd-distribute.service or lower Distribute=".into()
        }
        _ => String::new(),
    }
}

/// Binds one reuseport socket for `listen` with `opts` applied.
pub fn bind_one(listen: &Listen, opts: &SocketOptions) -> Result<Socket, BindError> {
    let addr = listen.addr;
    let fail = |op: &'static str, source: io::Error| BindError {
        key: listen.kind.key(),
        value: listen.original.clone(),
        addr,
        op,
        hint: hint_for(&source, &addr, op),
        err: source,
    };
    // SocketProtocol= applies by socket type, as in systemd.
    let (ty, proto, op) = match (listen.kind, opts.socket_protocol) {
        (ListenKind::Stream, Some(SocketProtocol::Mptcp)) => (
            Type::STREAM,
            Protocol::from(IPPROTO_MPTCP),
            "socket (mptcp)",
        ),
        (ListenKind::Stream, _) => (Type::STREAM, Protocol::TCP, "socket"),
        (ListenKind::Datagram, Some(SocketProtocol::UdpLite)) => (
            Type::DGRAM,
            Protocol::from(libc::IPPROTO_UDPLITE),
            "socket (udplite)",
        ),
        (ListenKind::Datagram, _) => (Type::DGRAM, Protocol::UDP, "socket"),
    };
    let socket = Socket::new(Domain::for_address(addr), ty.cloexec(), Some(proto))
        .map_err(|e| fail(op, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| fail("SO_REUSEADDR", e))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| fail("SO_REUSEPORT", e))?;
    if addr.is_ipv6() {
        match opts.bind_ipv6_only {
            BindIpv6Only::Default => {}
            BindIpv6Only::Both => socket
                .set_only_v6(false)
                .map_err(|e| fail("IPV6_V6ONLY", e))?,
            BindIpv6Only::Ipv6Only => socket
                .set_only_v6(true)
                .map_err(|e| fail("IPV6_V6ONLY", e))?,
        }
    }
    if opts.free_bind {
        socket
            .set_freebind(true)
            .map_err(|e| fail("IP_FREEBIND", e))?;
        if addr.is_ipv6() {
            socket
                .set_freebind_ipv6(true)
                .map_err(|e| fail("IPV6_FREEBIND", e))?;
        }
    }
    if opts.transparent {
        if addr.is_ipv6() {
            set_int_opt(&socket, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)
                .map_err(|e| fail("IPV6_TRANSPARENT", e))?;
        } else {
            socket
                .set_ip_transparent(true)
                .map_err(|e| fail("IP_TRANSPARENT", e))?;
        }
    }
    if let Some(dev) = &opts.bind_to_device {
        socket
            .bind_device(Some(dev.as_bytes()))
            .map_err(|e| fail("SO_BINDTODEVICE", e))?;
    }
    apply_changeable(&socket, listen, opts).map_err(|(op, e)| fail(op, e))?;
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|e| fail("bind", e))?;
    if listen.kind == ListenKind::Stream {
        socket
            .listen(backlog(opts))
            .map_err(|e| fail("listen", e))?;
    }
    Ok(socket)
}

/// `Backlog=` as `listen()` takes it.
fn backlog(opts: &SocketOptions) -> libc::c_int {
    opts.backlog.unwrap_or(DEFAULT_BACKLOG).min(i32::MAX as u32) as libc::c_int
}

/// The options a socket takes before and after it is bound alike: buffer
/// sizes, `NoDelay=`, `KeepAlive=`, `DeferAcceptSec=` (set either way, so a
/// reused socket loses a setting the config dropped) and the tunables. The
/// error names the option.
fn apply_changeable(
    socket: &Socket,
    listen: &Listen,
    opts: &SocketOptions,
) -> Result<(), (&'static str, io::Error)> {
    if let Some(size) = opts.receive_buffer {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        socket
            .set_recv_buffer_size(size)
            .map_err(|e| ("SO_RCVBUF", e))?;
    }
    if let Some(size) = opts.send_buffer {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        socket
            .set_send_buffer_size(size)
            .map_err(|e| ("SO_SNDBUF", e))?;
    }
    if listen.kind == ListenKind::Stream {
        socket
            .set_nodelay(opts.no_delay)
            .map_err(|e| ("TCP_NODELAY", e))?;
        socket
            .set_keepalive(opts.keep_alive)
            .map_err(|e| ("SO_KEEPALIVE", e))?;
        // TCP_DEFER_ACCEPT takes whole seconds; round up like systemd.
        let secs = opts.defer_accept_usec.map_or(0, |usec| {
            Duration::from_micros(usec).as_secs_f64().ceil() as libc::c_int
        });
        set_int_opt(socket, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, secs)
            .map_err(|e| ("TCP_DEFER_ACCEPT", e))?;
    }
    apply_tunables(socket, listen, opts)
}

/// Applies the options of `opts` that a bound, listening socket still takes
/// to a socket taken back from the fd store, so a config edited while the
/// activator was down (or restarted) gets them without losing its queue:
/// buffer sizes, `NoDelay=`, `KeepAlive=`, `DeferAcceptSec=`, and `Backlog=`
/// (a second `listen()` changes it). Address-level options (`BindIPv6Only=`,
/// `FreeBind=`, `Transparent=`, `BindToDevice=`) only apply to new sockets.
pub fn refresh_stored(socket: &Socket, listen: &Listen, opts: &SocketOptions) -> io::Result<()> {
    apply_changeable(socket, listen, opts)
        .map_err(|(op, e)| io::Error::new(e.kind(), format!("{op}: {e}")))?;
    if listen.kind == ListenKind::Stream {
        socket.listen(backlog(opts))?;
    }
    Ok(())
}

/// The per-socket options of systemd.socket(5) that are plain setsockopt() calls
/// (`Priority=`, `Mark=`, `IPTOS=`, `IPTTL=`, `Broadcast=`, `PassPacketInfo=`,
/// `Timestamping=`, and for streams `KeepAlive*Sec=`, `KeepAliveProbes=`,
/// `TCPCongestion=`), each only when set. On an IPv6 socket the IPv4 option is
/// set too where the kernel has one (for dual-stack sockets), ignoring errors.
/// The error names the option.
pub fn apply_tunables(
    socket: &Socket,
    listen: &Listen,
    opts: &SocketOptions,
) -> Result<(), (&'static str, io::Error)> {
    let v6 = listen.addr.is_ipv6();
    let int = |level, name, v: libc::c_int, op: &'static str| {
        set_int_opt(socket, level, name, v).map_err(|e| (op, e))
    };
    // The IPv4 twin of an IPv6 option, on a dual-stack socket: best effort.
    let twin = |name, v: libc::c_int| {
        if v6 && listen.addr.ip().is_unspecified() {
            let _ = set_int_opt(socket, libc::IPPROTO_IP, name, v);
        }
    };
    if let Some(m) = opts.mark {
        int(libc::SOL_SOCKET, libc::SO_MARK, m as libc::c_int, "SO_MARK")?;
    }
    if let Some(tos) = opts.ip_tos {
        if v6 {
            int(
                libc::IPPROTO_IPV6,
                libc::IPV6_TCLASS,
                tos.into(),
                "IPV6_TCLASS",
            )?;
            twin(libc::IP_TOS, tos.into());
        } else {
            int(libc::IPPROTO_IP, libc::IP_TOS, tos.into(), "IP_TOS")?;
        }
    }
    // After IP_TOS, which derives the priority from the TOS bits: an explicit
    // Priority= wins.
    if let Some(p) = opts.priority {
        int(
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            p as libc::c_int,
            "SO_PRIORITY",
        )?;
    }
    if let Some(ttl) = opts.ip_ttl {
        if v6 {
            int(
                libc::IPPROTO_IPV6,
                libc::IPV6_UNICAST_HOPS,
                ttl.into(),
                "IPV6_UNICAST_HOPS",
            )?;
            twin(libc::IP_TTL, ttl.into());
        } else {
            int(libc::IPPROTO_IP, libc::IP_TTL, ttl.into(), "IP_TTL")?;
        }
    }
    if opts.broadcast {
        int(libc::SOL_SOCKET, libc::SO_BROADCAST, 1, "SO_BROADCAST")?;
    }
    if opts.pass_packet_info {
        if v6 {
            int(
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVPKTINFO,
                1,
                "IPV6_RECVPKTINFO",
            )?;
            twin(libc::IP_PKTINFO, 1);
        } else {
            int(libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "IP_PKTINFO")?;
        }
    }
    match opts.timestamping {
        Timestamping::Off => {}
        Timestamping::Us => int(libc::SOL_SOCKET, libc::SO_TIMESTAMP, 1, "SO_TIMESTAMP")?,
        Timestamping::Ns => int(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS")?,
    }
    if listen.kind == ListenKind::Stream {
        let secs = |usec: u64| (usec / 1_000_000).min(i32::MAX as u64) as libc::c_int;
        if let Some(t) = opts.keep_alive_time_usec {
            int(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPIDLE,
                secs(t),
                "TCP_KEEPIDLE",
            )?;
        }
        if let Some(t) = opts.keep_alive_interval_usec {
            int(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPINTVL,
                secs(t),
                "TCP_KEEPINTVL",
            )?;
        }
        if let Some(n) = opts.keep_alive_probes {
            int(
                libc::IPPROTO_TCP,
                libc::TCP_KEEPCNT,
                n as libc::c_int,
                "TCP_KEEPCNT",
            )?;
        }
        if let Some(cc) = &opts.tcp_congestion {
            set_bytes_opt(
                socket,
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                cc.as_bytes(),
            )
            .map_err(|e| ("TCP_CONGESTION", e))?;
        }
    }
    Ok(())
}

fn set_bytes_opt(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    v: &[u8],
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live buffer of the given length.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            v.as_ptr().cast(),
            v.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn set_int_opt(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt with a pointer to a live c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPUs in this process's affinity set, for `Distribute=cpus`.
pub fn cpus_in_affinity() -> u32 {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// CPUs (of this process's affinity set) whose connections `Steering=cpu`
/// sends to socket `index` of `n`.
pub fn cpus_for_slot(index: u32, n: u32) -> Vec<u32> {
    let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..nix::sched::CpuSet::count() as u32)
        .filter(|&c| set.is_set(c as usize).unwrap_or(false) && c % n.max(1) == index)
        .collect()
}

/// Whether a connection or datagram is queued on `fd` right now.
pub fn queued(fd: BorrowedFd<'_>) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::ZERO)?;
    Ok(n > 0
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN)))
}

/// Reuses a socket systemd passed back from the fd store if it is still what
/// `listen` asks for (same address, same type, listening); otherwise `None`,
/// and the caller binds a fresh one.
pub fn reuse_stored(
    listen: &Listen,
    opts_protocol: Option<SocketProtocol>,
    fd: std::os::fd::OwnedFd,
) -> Option<Socket> {
    let socket = Socket::from(fd);
    let addr = socket.local_addr().ok()?.as_socket()?;
    let ty = socket.r#type().ok()?;
    // SocketProtocol= changed (mptcp ↔ tcp): a new socket.
    let proto = socket.protocol().ok().flatten().map(libc::c_int::from);
    let want_proto = match (listen.kind, opts_protocol) {
        (ListenKind::Stream, Some(SocketProtocol::Mptcp)) => IPPROTO_MPTCP,
        (ListenKind::Stream, _) => libc::IPPROTO_TCP,
        (ListenKind::Datagram, Some(SocketProtocol::UdpLite)) => libc::IPPROTO_UDPLITE,
        (ListenKind::Datagram, _) => libc::IPPROTO_UDP,
    };
    if proto.is_some_and(|p| p != want_proto) {
        return None;
    }
    let want_ty = match listen.kind {
        ListenKind::Stream => Type::STREAM,
        ListenKind::Datagram => Type::DGRAM,
    };
    let listening = listen.kind == ListenKind::Datagram || is_listening(&socket);
    (addr == listen.addr && ty == want_ty && listening).then_some(socket)
}

fn is_listening(socket: &Socket) -> bool {
    use std::os::fd::AsRawFd;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    r == 0 && v != 0
}

/// How full a socket's queue is, for the health check ([`crate::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueSample {
    /// Connections waiting to be accepted (stream), or bytes of datagrams
    /// waiting to be received (datagram: `SK_MEMINFO_RMEM_ALLOC`).
    pub depth: u64,
    /// When `depth` reaches this the queue is full: the listen backlog
    /// (`tcpi_sacked` of a listener), or the receive buffer.
    pub limit: u64,
    /// Datagrams dropped because the receive buffer was full, since the
    /// socket was created (`SK_MEMINFO_DROPS`; 0 for stream sockets).
    pub drops: u64,
}

impl QueueSample {
    /// Whether new connections or datagrams are being dropped now.
    pub fn full(&self) -> bool {
        self.limit > 0 && self.depth >= self.limit
    }
}

/// Samples the queue of `socket` (a listener or a datagram socket). Errors
/// read as an empty queue: the health check then simply sees nothing wrong.
pub fn queue_sample(socket: &Socket, kind: ListenKind) -> QueueSample {
    use std::os::fd::AsRawFd;
    match kind {
        ListenKind::Stream => {
            if !is_listening(socket) {
                return QueueSample::default();
            }
            // SAFETY: tcp_info is plain old data; zeroed is a valid value.
            let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            // SAFETY: getsockopt into a live tcp_info with its size.
            let r = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_INFO,
                    (&mut info as *mut libc::tcp_info).cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return QueueSample::default();
            }
            // A listener reports its accept queue in tcpi_unacked and the
            // backlog in tcpi_sacked; the kernel drops SYNs once the queue
            // holds more than the backlog.
            QueueSample {
                depth: info.tcpi_unacked.into(),
                limit: u64::from(info.tcpi_sacked) + 1,
                drops: 0,
            }
        }
        ListenKind::Datagram => {
            // SK_MEMINFO_RMEM_ALLOC, _RCVBUF, …, _DROPS (linux/sock_diag.h).
            const SO_MEMINFO: libc::c_int = 55;
            const VARS: usize = 9;
            let mut mem = [0u32; VARS];
            let mut len = std::mem::size_of_val(&mem) as libc::socklen_t;
            // SAFETY: getsockopt into a live u32 array with its size.
            let r = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_MEMINFO,
                    mem.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if r != 0 {
                return QueueSample::default();
            }
            QueueSample {
                depth: mem[0].into(),
                limit: mem[1].into(),
                drops: mem[8].into(),
            }
        }
    }
}

/// Connections waiting in a listening TCP socket's accept queue. For a
/// listener, the kernel reports the queue length in `tcpi_unacked` (and the
/// backlog in `tcpi_sacked`). Datagram sockets report 0.
pub fn accept_queue_depth(socket: &Socket) -> u32 {
    use std::os::fd::AsRawFd;
    if !is_listening(socket) {
        return 0;
    }
    // SAFETY: tcp_info is plain old data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt into a live tcp_info with its size.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if r == 0 {
        info.tcpi_unacked
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(addr: &str) -> Listen {
        Listen {
            kind: ListenKind::Stream,
            addr: addr.parse().unwrap(),
            original: addr.into(),
        }
    }

    #[test]
    fn queue_sample_of_a_datagram_socket_counts_bytes_and_drops() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = Socket::from(rx.try_clone().unwrap());
        sock.set_recv_buffer_size(4096).unwrap();
        let empty = queue_sample(&sock, ListenKind::Datagram);
        assert_eq!((empty.depth, empty.drops), (0, 0));
        assert!(empty.limit > 0);
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..64 {
            tx.send_to(&[0u8; 512], rx.local_addr().unwrap()).unwrap();
        }
        let s = queue_sample(&sock, ListenKind::Datagram);
        assert!(s.depth > 0, "{s:?}");
        assert!(
            s.drops > 0,
            "a 4 KiB buffer cannot hold 64 datagrams: {s:?}"
        );
    }

    #[test]
    fn queue_sample_of_a_listener_sees_the_backlog() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = Socket::from(l.try_clone().unwrap());
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let s = queue_sample(&sock, ListenKind::Stream);
        assert_eq!(s.depth, 1);
        assert!(s.limit > 1 && !s.full(), "{s:?}");
    }

    #[test]
    fn queue_depth_counts_unaccepted_connections() {
        let s = bind_one(&stream("127.0.0.1:0"), &SocketOptions::default()).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        assert_eq!(accept_queue_depth(&s), 0);
        let _c: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(accept_queue_depth(&s), 3);
    }

    #[test]
    fn stored_sockets_are_reused_only_when_they_match() {
        let s = bind_one(&stream("127.0.0.1:0"), &SocketOptions::default()).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let same = stream(&addr.to_string());
        let dup = s.try_clone().unwrap();
        assert!(reuse_stored(&same, None, dup.into()).is_some());
        let dup = s.try_clone().unwrap();
        assert!(reuse_stored(&same, Some(SocketProtocol::Mptcp), dup.into()).is_none());
        let other = stream("127.0.0.1:1");
        assert!(reuse_stored(&other, None, s.into()).is_none());
    }

    fn get_int(s: &Socket, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        use std::os::fd::AsRawFd;
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into a live c_int with its size.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(
            r,
            0,
            "getsockopt {level}/{name}: {}",
            io::Error::last_os_error()
        );
        v
    }

    /// A parsed config whose `127.0.0.1:1` listeners bind any free port.
    fn parsed(text: &str) -> distribute_config::SocketSpec {
        let mut spec =
            distribute_config::parse_str("t", std::path::Path::new("t.socket"), text).unwrap();
        for l in &mut spec.listen {
            l.addr.set_port(0);
        }
        spec
    }

    #[test]
    fn systemd_socket_options_reach_the_socket() {
        let spec = parsed(
            "[Socket]\nListenStream=127.0.0.1:1\nListenDatagram=127.0.0.1:1\n\
             KeepAlive=yes\nKeepAliveTimeSec=2min\nKeepAliveIntervalSec=15s\nKeepAliveProbes=5\n\
             IPTOS=low-delay\nIPTTL=33\nPriority=5\nTCPCongestion=reno\nBroadcast=yes\n\
             PassPacketInfo=yes\nTimestamping=ns\n[Service]\nExecStart=/bin/true\n",
        );
        let tcp = bind_one(&spec.listen[0], &spec.options).unwrap();
        assert_eq!(get_int(&tcp, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 120);
        assert_eq!(get_int(&tcp, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 15);
        assert_eq!(get_int(&tcp, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 5);
        assert_eq!(get_int(&tcp, libc::IPPROTO_IP, libc::IP_TOS), 0x10);
        assert_eq!(get_int(&tcp, libc::IPPROTO_IP, libc::IP_TTL), 33);
        assert_eq!(get_int(&tcp, libc::SOL_SOCKET, libc::SO_PRIORITY), 5);
        let udp = bind_one(&spec.listen[1], &spec.options).unwrap();
        assert_eq!(get_int(&udp, libc::SOL_SOCKET, libc::SO_BROADCAST), 1);
        assert_eq!(get_int(&udp, libc::IPPROTO_IP, libc::IP_PKTINFO), 1);
        assert_eq!(get_int(&udp, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS), 1);
        // TCP_CONGESTION reads back as a string.
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 16];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: getsockopt into a live buffer with its size.
        let r = unsafe {
            libc::getsockopt(
                tcp.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_CONGESTION,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        assert!(buf.starts_with(b"reno"), "{buf:?}");
    }

    #[test]
    fn unknown_congestion_control_and_mptcp_errors_say_why() {
        let spec = parsed(
            "[Socket]\nListenStream=127.0.0.1:1\nTCPCongestion=nosuchcc\n[Service]\nExecStart=/bin/true\n",
        );
        let e = bind_one(&spec.listen[0], &spec.options)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TCP_CONGESTION") && e.contains("tcp_available_congestion_control"),
            "{e}"
        );
        let spec = parsed(
            "[Socket]\nListenStream=127.0.0.1:1\nSocketProtocol=mptcp\n[Service]\nExecStart=/bin/true\n",
        );
        match bind_one(&spec.listen[0], &spec.options) {
            // The kernel has MPTCP: the socket is an MPTCP one.
            Ok(s) => assert_eq!(
                s.protocol().unwrap().map(libc::c_int::from),
                Some(IPPROTO_MPTCP)
            ),
            Err(e) => assert!(e.to_string().contains("CONFIG_MPTCP"), "{e}"),
        }
    }

    #[test]
    fn port_in_use_is_a_clear_error() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = holder.local_addr().unwrap();
        let e = bind_one(&stream(&addr.to_string()), &SocketOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bind: Address already in use"), "{msg}");
        assert!(
            msg.contains(&format!("ss -lntup 'sport = :{}'", addr.port())),
            "{msg}"
        );
    }

    #[test]
    fn queued_sees_a_pending_connection() {
        use std::os::fd::AsFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!queued(l.as_fd()).unwrap());
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert!(queued(l.as_fd()).unwrap());
    }
}
