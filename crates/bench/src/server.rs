//! A level-triggered epoll server loop and the distribution models built on it.
//!
//! Every model runs the same [`EventLoop`] with the same [`Hello`] handler; they
//! differ only in how connections reach a worker:
//!
//! | model | sockets | workers |
//! |---|---|---|
//! | [`Model::Reuseport`] | one `SO_REUSEPORT` socket per worker (what `Distribute=N` sets up) | N processes |
//! | [`Model::Shared`] | one socket inherited by every worker, plain epoll (thundering herd) | N processes |
//! | [`Model::Exclusive`] | the same with `EPOLLEXCLUSIVE` | N processes |
//! | [`Model::Acceptor`] | one socket, one thread blocking in `accept4`, fds handed round-robin over pipes | N threads |
//! | [`Model::Single`] | one socket | one process, one thread |
//!
//! [`serve_listen_fds`] is the socket-activated form (a listening socket under
//! `systemd-distribute` or `Accept=no`, an accepted connection under `Accept=yes`).

use crate::cvt;
use crate::handler::{Conn, Hello};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How connections reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// One `SO_REUSEPORT` socket per worker process.
    Reuseport,
    /// One listening socket shared by N processes, each in its own epoll.
    Shared,
    /// [`Model::Shared`] with `EPOLLEXCLUSIVE`.
    Exclusive,
    /// One acceptor thread handing accepted fds to N worker threads.
    Acceptor,
    /// One process, one thread.
    Single,
}

/// Options of the event loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Accept at most this many connections per readiness event of a listener.
    pub batch: usize,
    /// Exit after this long without connections (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Exit once this many connections have been closed (`None`: never).
    pub exit_after: Option<u64>,
    /// Register listeners with `EPOLLEXCLUSIVE`.
    pub exclusive: bool,
    /// Simulated work per request.
    pub work: Duration,
}

impl Default for LoopConfig {
    fn default() -> LoopConfig {
        LoopConfig {
            batch: 64,
            idle_timeout: None,
            exit_after: None,
            exclusive: false,
            work: Duration::ZERO,
        }
    }
}

const LISTENER_TOKEN: u64 = 1 << 40;
const HANDOFF_TOKEN: u64 = 1 << 41;

struct Slot {
    fd: OwnedFd,
    conn: Conn,
    out: Vec<u8>,
    close_after: bool,
    want_out: bool,
}

/// One worker: an epoll instance, its listeners, its connections.
pub struct EventLoop {
    ep: OwnedFd,
    listeners: Vec<RawFd>,
    handoff: Option<RawFd>,
    conns: HashMap<RawFd, Slot>,
    hello: Hello,
    cfg: LoopConfig,
    closed: u64,
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a valid epoll_event; the kernel validates the fds.
    cvt(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}

impl EventLoop {
    /// A loop serving `listeners` (borrowed: they must outlive the loop) and,
    /// with `handoff`, connections whose fds arrive as 4-byte numbers on a pipe.
    pub fn new(
        listeners: &[RawFd],
        handoff: Option<RawFd>,
        hello: Hello,
        cfg: LoopConfig,
    ) -> io::Result<EventLoop> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: ep was just created and is owned by nobody else.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut flags = libc::EPOLLIN as u32;
        if cfg.exclusive {
            flags |= libc::EPOLLEXCLUSIVE as u32;
        }
        for (i, &l) in listeners.iter().enumerate() {
            epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                l,
                flags,
                LISTENER_TOKEN + i as u64,
            )?;
        }
        if let Some(h) = handoff {
            epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                h,
                libc::EPOLLIN as u32,
                HANDOFF_TOKEN,
            )?;
        }
        Ok(EventLoop {
            ep,
            listeners: listeners.to_vec(),
            handoff,
            conns: HashMap::new(),
            hello,
            cfg,
            closed: 0,
        })
    }

    /// Takes an already accepted connection (made non-blocking here).
    pub fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            raw,
            libc::EPOLLIN as u32,
            raw as u64,
        )?;
        self.conns.insert(
            raw,
            Slot {
                fd,
                conn: Conn::default(),
                out: Vec::new(),
                close_after: false,
                want_out: false,
            },
        );
        Ok(())
    }

    /// Runs until idle for `idle_timeout` or `exit_after` connections are done.
    /// Returns the number of requests answered.
    pub fn run(mut self) -> io::Result<u64> {
        let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_activity = Instant::now();
        loop {
            if let Some(n) = self.cfg.exit_after {
                if self.closed >= n && self.conns.is_empty() {
                    return Ok(self.hello.requests);
                }
            }
            let timeout = match self.cfg.idle_timeout {
                Some(t) if self.conns.is_empty() => {
                    let left = t.saturating_sub(last_activity.elapsed());
                    if left.is_zero() {
                        return Ok(self.hello.requests);
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
                _ => -1,
            };
            // SAFETY: events has room for events.len() entries.
            let n = unsafe {
                libc::epoll_wait(
                    self.ep.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    timeout,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n > 0 {
                last_activity = Instant::now();
            }
            for ev in &events[..n as usize] {
                let (token, flags) = (ev.u64, ev.events);
                if token == HANDOFF_TOKEN {
                    self.take_handoff()?;
                } else if token >= LISTENER_TOKEN {
                    let l = self.listeners[(token - LISTENER_TOKEN) as usize];
                    self.accept(l)?;
                } else {
                    self.on_conn(token as RawFd, flags);
                }
            }
        }
    }

    fn accept(&mut self, l: RawFd) -> io::Result<()> {
        for _ in 0..self.cfg.batch {
            // SAFETY: accept4 with null address pointers.
            let fd = unsafe {
                libc::accept4(
                    l,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    // EAGAIN: queue empty (or another worker won the race).
                    _ => return Ok(()),
                }
            }
            // SAFETY: accept4 returned a new fd that nobody else owns.
            self.add_conn(unsafe { OwnedFd::from_raw_fd(fd) })?;
        }
        Ok(())
    }

    fn take_handoff(&mut self) -> io::Result<()> {
        let Some(h) = self.handoff else { return Ok(()) };
        let mut buf = [0u8; 4 * 256];
        // SAFETY: reading into a stack buffer of the given size.
        let n = unsafe { libc::read(h, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return Ok(());
        }
        // Writes are 4 bytes (atomic on a pipe) and reads a multiple of 4.
        for c in buf[..n as usize].chunks_exact(4) {
            let fd = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            // SAFETY: the acceptor gave up ownership of fd when it wrote it.
            self.add_conn(unsafe { OwnedFd::from_raw_fd(fd) })?;
        }
        Ok(())
    }

    fn on_conn(&mut self, fd: RawFd, flags: u32) {
        let Some(slot) = self.conns.get_mut(&fd) else {
            return;
        };
        let mut close = false;
        if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0
            && !slot.close_after
        {
            let mut buf = [0u8; 16 * 1024];
            // SAFETY: reading into a stack buffer of the given size.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                let keep = self
                    .hello
                    .on_data(&mut slot.conn, &buf[..n as usize], &mut slot.out);
                slot.close_after = !keep;
            } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock {
                close = true;
            }
        }
        if !close {
            close = flush(self.ep.as_raw_fd(), slot);
        }
        if close {
            // Closing the only reference removes it from the epoll set.
            self.conns.remove(&fd);
            self.closed += 1;
        }
    }
}

/// Writes what is pending; true when the connection is to be closed now.
fn flush(ep: RawFd, slot: &mut Slot) -> bool {
    let fd = slot.fd.as_raw_fd();
    while !slot.out.is_empty() {
        // SAFETY: writing from a live buffer of the given length.
        let n = unsafe { libc::write(fd, slot.out.as_ptr().cast(), slot.out.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => return true,
            }
        }
        slot.out.drain(..n as usize);
    }
    let want = !slot.out.is_empty();
    if want != slot.want_out {
        let mut ev = libc::EPOLLIN as u32;
        if want {
            ev |= libc::EPOLLOUT as u32;
        }
        let _ = epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, ev, fd as u64);
        slot.want_out = want;
    }
    slot.out.is_empty() && slot.close_after
}

/// Binds a TCP listener on `addr` (IPv4), `TCP_NODELAY` set (inherited by
/// accepted sockets), optionally `SO_REUSEPORT`.
pub fn bind(addr: SocketAddrV4, reuseport: bool, nonblocking: bool) -> io::Result<OwnedFd> {
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain socket syscalls on a fd we own; option values are c_ints.
    unsafe {
        let fd = OwnedFd::from_raw_fd(cvt(libc::socket(libc::AF_INET, ty, 0))?);
        let one: libc::c_int = 1;
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let p = (&one as *const libc::c_int).cast();
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            p,
            sz,
        ))?;
        if reuseport {
            cvt(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                p,
                sz,
            ))?;
        }
        cvt(libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            p,
            sz,
        ))?;
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        cvt(libc::bind(
            fd.as_raw_fd(),
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        cvt(libc::listen(fd.as_raw_fd(), 4096))?;
        Ok(fd)
    }
}

/// Forks `n` children running `child(i)`; they die with the parent. The parent
/// waits for all of them and fails if one failed.
pub fn fork_workers(n: usize, mut child: impl FnMut(usize) -> io::Result<()>) -> io::Result<()> {
    let mut pids = Vec::new();
    for i in 0..n {
        // SAFETY: the process is single-threaded here; the child only runs
        // `child` and exits without returning into the parent's code.
        let pid = cvt(unsafe { libc::fork() })?;
        if pid == 0 {
            // SAFETY: prctl/setsid/_exit have no memory-safety preconditions.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // A session of its own, as systemd gives every service process
            // (and so every Distribute=N instance): with the kernel's
            // autogroup scheduling (sched_autogroup_enabled=1, Debian's
            // default) a session is a CFS group, and N workers sharing the
            // starter's session would get one share of a contended CPU where
            // N instances get N. Without this the models compared the
            // scheduler's grouping, not the distribution (issue 18, item 6).
            unsafe { libc::setsid() };
            let code = match child(i) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("worker {i}: {e}");
                    1
                }
            };
            unsafe { libc::_exit(code) };
        }
        pids.push(pid);
    }
    let mut failed = 0;
    for pid in pids {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(io::Error::other(format!("{failed} worker(s) failed")));
    }
    Ok(())
}

/// Runs `model` with `n` workers on `addr` until killed (or idle, per `cfg`).
pub fn serve_model(model: Model, n: usize, addr: SocketAddrV4, cfg: LoopConfig) -> io::Result<()> {
    let work = cfg.work;
    match model {
        Model::Reuseport => {
            let socks: Vec<OwnedFd> = (0..n)
                .map(|_| bind(addr, true, true))
                .collect::<io::Result<_>>()?;
            fork_workers(n, |i| {
                let me = socks[i].as_raw_fd();
                for (j, s) in socks.iter().enumerate() {
                    if j != i {
                        // SAFETY: closing our copy of a sibling's socket in the child.
                        unsafe { libc::close(s.as_raw_fd()) };
                    }
                }
                let hello = Hello::new(&i.to_string(), std::process::id(), work);
                EventLoop::new(&[me], None, hello, cfg.clone())?
                    .run()
                    .map(drop)
            })
        }
        Model::Shared | Model::Exclusive => {
            let sock = bind(addr, false, true)?;
            let cfg = LoopConfig {
                exclusive: model == Model::Exclusive,
                ..cfg
            };
            fork_workers(n, |i| {
                let hello = Hello::new(&i.to_string(), std::process::id(), work);
                EventLoop::new(&[sock.as_raw_fd()], None, hello, cfg.clone())?
                    .run()
                    .map(drop)
            })
        }
        Model::Single => {
            let sock = bind(addr, false, true)?;
            let hello = Hello::new("0", std::process::id(), work);
            EventLoop::new(&[sock.as_raw_fd()], None, hello, cfg)?
                .run()
                .map(drop)
        }
        Model::Acceptor => serve_acceptor(n, addr, cfg),
    }
}

fn serve_acceptor(n: usize, addr: SocketAddrV4, cfg: LoopConfig) -> io::Result<()> {
    let sock = bind(addr, false, false)?;
    let mut pipes = Vec::new();
    let mut workers = Vec::new();
    for i in 0..n {
        let mut p = [0; 2];
        // SAFETY: p has room for two fds.
        cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: pipe2 returned two new fds.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        // The acceptor blocks when a worker falls far behind (64 KiB of fds).
        // SAFETY: fcntl on our own fd.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETFL, 0) };
        pipes.push(w);
        let cfg = cfg.clone();
        workers.push(std::thread::spawn(move || -> io::Result<()> {
            let hello = Hello::new(&i.to_string(), crate::gettid(), cfg.work);
            EventLoop::new(&[], Some(r.as_raw_fd()), hello, cfg)?
                .run()
                .map(drop)
        }));
    }
    let mut next = 0;
    loop {
        // SAFETY: accept4 with null address pointers, blocking.
        let fd = unsafe {
            libc::accept4(
                sock.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                _ => return Err(e),
            }
        }
        let bytes = fd.to_ne_bytes();
        // SAFETY: writing 4 bytes from a stack array to our pipe.
        let w = unsafe { libc::write(pipes[next].as_raw_fd(), bytes.as_ptr().cast(), 4) };
        if w != 4 {
            // SAFETY: we still own fd when the hand-off failed.
            unsafe { libc::close(fd) };
        }
        next = (next + 1) % n;
        if workers.iter().any(|w| w.is_finished()) {
            return Err(io::Error::other("a worker thread exited"));
        }
    }
}

/// Serves the sockets passed by socket activation (`$LISTEN_FDS`): listening
/// sockets (`systemd-distribute`, `Accept=no`) and accepted connections
/// (`Accept=yes`, which ends the process once they are closed).
pub fn serve_listen_fds(cfg: LoopConfig) -> anyhow::Result<u64> {
    use distribute_instance::SocketKind;
    let fds = distribute_instance::listen_fds(true)?;
    if fds.is_empty() {
        anyhow::bail!("no sockets passed ($LISTEN_FDS/$LISTEN_PID not set for this process)");
    }
    let label =
        distribute_instance::instance_index().map_or_else(|| "?".to_owned(), |i| i.to_string());
    let hello = Hello::new(&label, std::process::id(), cfg.work);
    let listeners: Vec<RawFd> = fds
        .iter()
        .filter(|f| f.kind == SocketKind::Stream)
        .map(|f| f.fd.as_raw_fd())
        .collect();
    let mut cfg = cfg;
    let mut accepted = Vec::new();
    let mut keep = Vec::new();
    for f in fds {
        match f.kind {
            SocketKind::Stream => keep.push(f.fd),
            SocketKind::Other => accepted.push(f.fd),
            SocketKind::Datagram => anyhow::bail!("fd {} is a datagram socket", f.fd.as_raw_fd()),
        }
    }
    if listeners.is_empty() {
        // inetd style: serve the connection(s), then exit.
        cfg.exit_after = Some(accepted.len() as u64);
    }
    for fd in &keep {
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    let mut ev = EventLoop::new(&listeners, None, hello, cfg)?;
    for fd in accepted {
        ev.add_conn(fd)?;
    }
    let requests = ev.run()?;
    drop(keep);
    Ok(requests)
}

/// Binds `n` `SO_REUSEPORT` sockets on `addr` and runs `argv` once per socket, the
/// socket passed by the socket-activation protocol (fd 3, `$LISTEN_FDS=1`,
/// `$LISTEN_PID`) and `$DISTRIBUTE_INSTANCE=i`: N unmodified socket-activated
/// processes started by hand, the baseline `systemd-distribute` is measured against.
pub fn exec_reuseport(n: usize, addr: SocketAddrV4, argv: &[String]) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let socks: Vec<OwnedFd> = (0..n)
        .map(|_| bind(addr, true, false))
        .collect::<io::Result<_>>()?;
    fork_workers(n, |i| {
        let fd = socks[i].as_raw_fd();
        if fd == 3 {
            // SAFETY: fcntl on our own fd, in the child: keep it across exec.
            cvt(unsafe { libc::fcntl(3, libc::F_SETFD, 0) })?;
        } else {
            // SAFETY: dup2 onto fd 3 (the copy has no CLOEXEC), in the child.
            cvt(unsafe { libc::dup2(fd, 3) })?;
        }
        let err = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("LISTEN_FDS", "1")
            .env("LISTEN_PID", std::process::id().to_string())
            .env("LISTEN_FDNAMES", "bench")
            .env("DISTRIBUTE_INSTANCE", i.to_string())
            .exec();
        Err(err)
    })
}
