//! The single-threaded instance event loop.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::{ListenFd, SocketKind};

/// What the server should do with a connection after a handler callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the connection open and keep reading.
    Continue,
    /// Stop reading, send what is in the output buffer, then close the connection.
    Close,
}

/// Per-connection protocol logic, driven by [`Server`].
///
/// All callbacks run on the server's only thread and must not block.
pub trait Handler {
    /// Per-connection state.
    type Conn;

    /// A connection was accepted; `fd` is the connected socket (non-blocking,
    /// close-on-exec), for example for `getpeername`.
    fn on_connect(&mut self, fd: BorrowedFd<'_>) -> Self::Conn;

    /// Bytes arrived on a connection. `input` holds only the new bytes; anything the
    /// protocol cannot use yet (a partial request) must be kept in `conn`. Bytes
    /// appended to `out` are sent to the peer.
    fn on_data(&mut self, conn: &mut Self::Conn, input: &[u8], out: &mut Vec<u8>) -> Action;

    /// The server is shutting down (`SIGTERM`/`SIGINT`) while this connection is
    /// open. Return [`Action::Close`] if the connection may be closed once `out` is
    /// flushed (it is between requests), or [`Action::Continue`] to keep serving it
    /// until the handler returns [`Action::Close`] or the grace period ends. The
    /// default closes.
    fn on_shutdown(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>) -> Action {
        let _ = (conn, out);
        Action::Close
    }

    /// The connection is closed (after the peer closed it, after [`Action::Close`],
    /// on an error, or at the end of the grace period).
    fn on_close(&mut self, conn: Self::Conn) {
        let _ = conn;
    }

    /// A datagram arrived on a datagram socket. Bytes appended to `out` (which is
    /// empty on entry) are sent back to the sender as one datagram. The default
    /// ignores datagrams.
    fn on_datagram(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// At most this many `accept4()`/`recvfrom()` calls per socket before the loop
    /// turns to other work (the rest is picked up on the next round). Default 64.
    pub batch: usize,
    /// Exit after this long with no open connection, nothing accepted and no
    /// datagram received. `None` never exits for idleness. Default 10 s.
    pub idle_timeout: Option<Duration>,
    /// After `SIGTERM`/`SIGINT`, how long open connections may still be served
    /// before they are closed. Default 5 s.
    pub grace: Duration,
    /// Handle `SIGTERM` and `SIGINT` (blocked and read through a signalfd while
    /// [`Server::run`] runs). Default true.
    pub handle_signals: bool,
    /// Stop reading from a connection while more than this many bytes wait to be
    /// sent to it. Default 1 MiB.
    pub max_pending_output: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            batch: 64,
            idle_timeout: Some(Duration::from_secs(10)),
            grace: Duration::from_secs(5),
            handle_signals: true,
            max_pending_output: 1 << 20,
        }
    }
}

/// Why [`Server::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// The idle timeout passed with no open connection and no activity.
    Idle,
    /// A signal (`SIGTERM` or `SIGINT`, as its number) asked the server to stop.
    Signal(i32),
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Idle => f.write_str("idle"),
            ExitReason::Signal(n) => match Signal::try_from(*n) {
                Ok(s) => f.write_str(s.as_str()),
                Err(_) => write!(f, "signal {n}"),
            },
        }
    }
}

/// Counters returned by [`Server::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Why the server stopped.
    pub reason: ExitReason,
    /// Connections accepted.
    pub accepted: u64,
    /// Datagrams received.
    pub datagrams: u64,
    /// Connections still open when the grace period ended (closed by force).
    pub forced_closed: u64,
}

const SIGNAL_TOKEN: Token = Token(0);
const READ_BUF: usize = 64 * 1024;
/// Reads per connection per round, so one busy peer cannot starve the others.
const READ_BUDGET: usize = 16;
/// How long to stop accepting after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

struct Listener {
    fd: OwnedFd,
    kind: SocketKind,
    registered: bool,
    queued: bool,
}

struct Conn<S> {
    fd: OwnedFd,
    state: Option<S>,
    out: Vec<u8>,
    out_pos: usize,
    /// No more reads: the handler asked to close, or shutdown.
    closing: bool,
    /// The peer closed its sending side.
    read_closed: bool,
    queued: bool,
}

impl<S> Conn<S> {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// Restores the thread's signal mask when dropped.
struct SignalGuard {
    sfd: SignalFd,
    old_mask: SigSet,
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let _ = self.old_mask.thread_set_mask();
    }
}

/// A single-threaded server over the passed listening sockets.
///
/// Listening stream sockets are accepted from in batches (`accept4` with
/// `SOCK_NONBLOCK|SOCK_CLOEXEC`); every connection gets a [`Handler::Conn`] state.
/// Datagram sockets are read in batches and answered through
/// [`Handler::on_datagram`]. [`Server::run`] returns after the idle timeout, or
/// after `SIGTERM`/`SIGINT` once open connections are finished (at most
/// [`Config::grace`]; a second signal cuts the grace period short).
///
/// The listening sockets are set to non-blocking mode. That flag belongs to the
/// open file description, which the activator shares; it never blocks on them
/// either. They are never `shutdown()`: connections the instance has not accepted
/// stay queued in the activator's copy after the instance exits.
pub struct Server<H: Handler> {
    handler: H,
    config: Config,
    poll: Poll,
    listeners: Vec<Listener>,
    conns: Vec<Option<Conn<H::Conn>>>,
    free: Vec<usize>,
    open: usize,
    ready: VecDeque<Token>,
    buf: Vec<u8>,
    out_scratch: Vec<u8>,
    last_activity: Instant,
    accept_paused_until: Option<Instant>,
    draining: Option<(i32, Instant)>,
    stats_accepted: u64,
    stats_datagrams: u64,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0
        // SAFETY: as above.
        && unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl<H: Handler> Server<H> {
    /// Creates a server over `listeners`, which must be listening stream sockets or
    /// datagram sockets ([`SocketKind::Other`] is an `InvalidInput` error).
    pub fn new(listeners: Vec<ListenFd>, handler: H, config: Config) -> io::Result<Server<H>> {
        let poll = Poll::new()?;
        let mut ls = Vec::with_capacity(listeners.len());
        for l in listeners {
            if l.kind == SocketKind::Other {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "fd {} ({:?}) is neither a listening stream socket nor a datagram socket",
                        l.fd.as_raw_fd(),
                        l.name
                    ),
                ));
            }
            set_nonblocking(l.fd.as_raw_fd())?;
            ls.push(Listener {
                fd: l.fd,
                kind: l.kind,
                registered: false,
                queued: false,
            });
        }
        Ok(Server {
            handler,
            config,
            poll,
            listeners: ls,
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            ready: VecDeque::new(),
            buf: vec![0; READ_BUF],
            out_scratch: Vec::new(),
            last_activity: Instant::now(),
            accept_paused_until: None,
            draining: None,
            stats_accepted: 0,
            stats_datagrams: 0,
        })
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Number of currently open connections.
    pub fn open_connections(&self) -> usize {
        self.open
    }

    fn listener_token(i: usize) -> Token {
        Token(1 + i)
    }

    fn conn_token(&self, i: usize) -> Token {
        Token(1 + self.listeners.len() + i)
    }

    /// Runs the loop until the idle timeout or a signal; returns the counters and
    /// the handler. Listening sockets are closed when this returns (never shut
    /// down), open connections are closed.
    ///
    /// With [`Config::handle_signals`], `SIGTERM` and `SIGINT` are blocked in the
    /// calling thread while this runs (and the previous mask restored afterwards), so
    /// call it from the main thread before starting other threads, or block them in
    /// every thread.
    pub fn run(mut self) -> io::Result<(Stats, H)> {
        let signals = if self.config.handle_signals {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGTERM);
            mask.add(Signal::SIGINT);
            let old_mask = mask.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
            let guard = SignalGuard {
                sfd: SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                    .map_err(io::Error::from)?,
                old_mask,
            };
            self.poll.registry().register(
                &mut SourceFd(&guard.sfd.as_fd().as_raw_fd()),
                SIGNAL_TOKEN,
                Interest::READABLE,
            )?;
            Some(guard)
        } else {
            None
        };
        for i in 0..self.listeners.len() {
            let fd = self.listeners[i].fd.as_raw_fd();
            self.poll.registry().register(
                &mut SourceFd(&fd),
                Self::listener_token(i),
                Interest::READABLE,
            )?;
            self.listeners[i].registered = true;
            // Connections may already be queued; look without waiting for an edge.
            self.queue(Self::listener_token(i));
        }
        self.last_activity = Instant::now();
        let reason = self.event_loop(signals.as_ref())?;
        let forced = self.open as u64;
        self.close_all();
        drop(signals);
        let stats = Stats {
            reason,
            accepted: self.stats_accepted,
            datagrams: self.stats_datagrams,
            forced_closed: forced,
        };
        Ok((stats, self.handler))
    }

    fn event_loop(&mut self, signals: Option<&SignalGuard>) -> io::Result<ExitReason> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let mut deadline: Option<Instant> = None;
            let mut earliest = |t: Instant| {
                deadline = Some(deadline.map_or(t, |d: Instant| d.min(t)));
            };
            if let Some((signo, grace_end)) = self.draining {
                if self.open == 0 || now >= grace_end {
                    return Ok(ExitReason::Signal(signo));
                }
                earliest(grace_end);
            } else {
                if let Some(until) = self.accept_paused_until {
                    if now >= until {
                        self.accept_paused_until = None;
                        for i in 0..self.listeners.len() {
                            self.queue(Self::listener_token(i));
                        }
                    } else {
                        earliest(until);
                    }
                }
                if self.open == 0 && self.ready.is_empty() {
                    if let Some(idle) = self.config.idle_timeout {
                        match self.last_activity.checked_add(idle) {
                            Some(end) if now >= end => return Ok(ExitReason::Idle),
                            Some(end) => earliest(end),
                            None => {}
                        }
                    }
                }
            }
            let timeout = if self.ready.is_empty() {
                deadline.map(|d| d.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let token = ev.token();
                if token == SIGNAL_TOKEN {
                    if let Some(sig) = signals {
                        if let Some(reason) = self.read_signals(sig)? {
                            return Ok(reason);
                        }
                    }
                } else {
                    self.dispatch(token)?;
                }
            }
            // Work left over from earlier rounds (batch or read budget exhausted).
            for _ in 0..self.ready.len() {
                let Some(token) = self.ready.pop_front() else {
                    break;
                };
                self.unmark_queued(token);
                self.dispatch(token)?;
            }
        }
    }

    /// Reads pending signals; returns `Some` to exit right away (second signal).
    fn read_signals(&mut self, sig: &SignalGuard) -> io::Result<Option<ExitReason>> {
        loop {
            let info = match sig.sfd.read_signal() {
                Ok(Some(info)) => info,
                Ok(None) => return Ok(None),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let signo = info.ssi_signo as i32;
            if self.draining.is_some() {
                return Ok(Some(ExitReason::Signal(signo)));
            }
            self.begin_drain(signo)?;
        }
    }

    fn begin_drain(&mut self, signo: i32) -> io::Result<()> {
        self.draining = Some((signo, Instant::now() + self.config.grace));
        // Stop accepting: forget the listening sockets in epoll. Their queues stay
        // untouched for the activator's copy.
        for i in 0..self.listeners.len() {
            if self.listeners[i].registered {
                let fd = self.listeners[i].fd.as_raw_fd();
                self.poll.registry().deregister(&mut SourceFd(&fd))?;
                self.listeners[i].registered = false;
            }
        }
        for idx in 0..self.conns.len() {
            let Some(c) = self.conns[idx].as_mut() else {
                continue;
            };
            if c.closing {
                continue;
            }
            let state = c.state.as_mut().expect("open connection has state");
            if self.handler.on_shutdown(state, &mut c.out) == Action::Close {
                c.closing = true;
            }
            self.drive(idx)?;
        }
        Ok(())
    }

    fn queue(&mut self, token: Token) {
        let nl = self.listeners.len();
        let flag = if token.0 >= 1 && token.0 <= nl {
            &mut self.listeners[token.0 - 1].queued
        } else if token.0 > nl {
            match self
                .conns
                .get_mut(token.0 - 1 - nl)
                .and_then(Option::as_mut)
            {
                Some(c) => &mut c.queued,
                None => return,
            }
        } else {
            return;
        };
        if !*flag {
            *flag = true;
            self.ready.push_back(token);
        }
    }

    fn unmark_queued(&mut self, token: Token) {
        let nl = self.listeners.len();
        if token.0 >= 1 && token.0 <= nl {
            self.listeners[token.0 - 1].queued = false;
        } else if token.0 > nl {
            if let Some(Some(c)) = self.conns.get_mut(token.0 - 1 - nl) {
                c.queued = false;
            }
        }
    }

    fn dispatch(&mut self, token: Token) -> io::Result<()> {
        let nl = self.listeners.len();
        if token.0 >= 1 && token.0 <= nl {
            let i = token.0 - 1;
            if self.draining.is_some() || self.accept_paused_until.is_some() {
                return Ok(());
            }
            match self.listeners[i].kind {
                SocketKind::Stream => self.accept_batch(i),
                SocketKind::Datagram => self.datagram_batch(i),
                SocketKind::Other => Ok(()),
            }
        } else if token.0 > nl {
            let idx = token.0 - 1 - nl;
            if matches!(self.conns.get(idx), Some(Some(_))) {
                self.drive(idx)?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }

    fn accept_batch(&mut self, i: usize) -> io::Result<()> {
        let lfd = self.listeners[i].fd.as_raw_fd();
        for _ in 0..self.config.batch.max(1) {
            // SAFETY: null address pointers are allowed; the kernel validates lfd.
            let fd = unsafe {
                libc::accept4(
                    lfd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error().unwrap_or(0) {
                    libc::EAGAIN => return Ok(()),
                    // The connection died in the queue, or a pending network error
                    // of the new socket (accept(2)): try the next one.
                    libc::EINTR
                    | libc::ECONNABORTED
                    | libc::EPROTO
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
                    | libc::ECONNRESET
                    | libc::ETIMEDOUT => continue,
                    // Out of descriptors or memory: leave the rest queued, retry soon.
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                        self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                        return Ok(());
                    }
                    _ => return Err(e),
                }
            }
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            self.add_conn(fd)?;
        }
        // Batch used up: more may be queued, come back after other work.
        self.queue(Self::listener_token(i));
        Ok(())
    }

    fn add_conn(&mut self, fd: OwnedFd) -> io::Result<()> {
        self.stats_accepted += 1;
        self.last_activity = Instant::now();
        let state = self.handler.on_connect(fd.as_fd());
        let idx = match self.free.pop() {
            Some(idx) => idx,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let token = self.conn_token(idx);
        let raw = fd.as_raw_fd();
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&raw),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(idx);
            self.handler.on_close(state);
            return Err(e);
        }
        self.conns[idx] = Some(Conn {
            fd,
            state: Some(state),
            out: Vec::new(),
            out_pos: 0,
            closing: false,
            read_closed: false,
            queued: false,
        });
        self.open += 1;
        Ok(())
    }

    /// Makes all possible progress on connection `idx`: flush output, read and
    /// handle input, close when done.
    fn drive(&mut self, idx: usize) -> io::Result<()> {
        let max_pending = self.config.max_pending_output;
        let mut reads = 0;
        loop {
            let c = self.conns[idx].as_mut().expect("drive on open connection");
            // Flush.
            let mut broken = false;
            while c.pending() > 0 {
                let data = &c.out[c.out_pos..];
                // SAFETY: data is a valid slice; MSG_NOSIGNAL avoids SIGPIPE.
                let n = unsafe {
                    libc::send(
                        c.fd.as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                    )
                };
                if n >= 0 {
                    c.out_pos += n as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if !would_block(&e) {
                    broken = true;
                }
                break;
            }
            if broken {
                self.close_conn(idx, false);
                return Ok(());
            }
            if c.pending() == 0 {
                c.out.clear();
                c.out_pos = 0;
            } else if c.out_pos > 64 * 1024 && c.out_pos * 2 > c.out.len() {
                c.out.drain(..c.out_pos);
                c.out_pos = 0;
            }
            if c.closing || c.read_closed {
                if c.pending() == 0 {
                    self.close_conn(idx, true);
                }
                // Otherwise wait for a writable event.
                return Ok(());
            }
            if c.pending() > max_pending {
                return Ok(()); // resumes on a writable event
            }
            if reads >= READ_BUDGET {
                let token = self.conn_token(idx);
                self.queue(token);
                return Ok(());
            }
            // Read.
            // SAFETY: buf is a valid writable buffer of the given length.
            let n = unsafe {
                libc::recv(
                    c.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if would_block(&e) {
                    return Ok(());
                }
                self.close_conn(idx, false);
                return Ok(());
            }
            reads += 1;
            if n == 0 {
                c.read_closed = true;
                continue;
            }
            let state = c.state.as_mut().expect("open connection has state");
            if self
                .handler
                .on_data(state, &self.buf[..n as usize], &mut c.out)
                == Action::Close
            {
                c.closing = true;
            }
        }
    }

    /// Closes connection `idx`. With `graceful`, the sending side is shut down
    /// first and unread input discarded, so that the close sends a FIN, not a RST.
    fn close_conn(&mut self, idx: usize, graceful: bool) {
        let Some(mut c) = self.conns[idx].take() else {
            return;
        };
        let raw = c.fd.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        if graceful {
            // SAFETY: plain syscalls on a descriptor we own, into our own buffer.
            unsafe {
                libc::shutdown(raw, libc::SHUT_WR);
                for _ in 0..8 {
                    let n = libc::recv(
                        raw,
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        libc::MSG_DONTWAIT,
                    );
                    if n <= 0 {
                        break;
                    }
                }
            }
        }
        drop(c.fd);
        if let Some(state) = c.state.take() {
            self.handler.on_close(state);
        }
        self.free.push(idx);
        self.open -= 1;
        if self.open == 0 {
            self.last_activity = Instant::now();
        }
    }

    fn close_all(&mut self) {
        for idx in 0..self.conns.len() {
            if self.conns[idx].is_some() {
                self.close_conn(idx, false);
            }
        }
    }

    fn datagram_batch(&mut self, i: usize) -> io::Result<()> {
        let fd = self.listeners[i].fd.as_raw_fd();
        for _ in 0..self.config.batch.max(1) {
            // SAFETY: zeroed sockaddr_storage is a valid initial value.
            let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut addr_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            // SAFETY: buffer and address pointers are valid for the given lengths.
            let n = unsafe {
                libc::recvfrom(
                    fd,
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut addr as *mut libc::sockaddr_storage).cast(),
                    &mut addr_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error().unwrap_or(0) {
                    libc::EAGAIN => return Ok(()),
                    // EINTR, or an ICMP error reported for an earlier send: go on.
                    _ => continue,
                }
            }
            self.stats_datagrams += 1;
            self.last_activity = Instant::now();
            self.out_scratch.clear();
            self.handler
                .on_datagram(&self.buf[..n as usize], &mut self.out_scratch);
            if !self.out_scratch.is_empty() && addr_len > 0 {
                // Best effort, like UDP itself: a full send buffer drops the reply.
                // SAFETY: pointers are valid; addr was filled in by recvfrom.
                unsafe {
                    libc::sendto(
                        fd,
                        self.out_scratch.as_ptr().cast(),
                        self.out_scratch.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        (&addr as *const libc::sockaddr_storage).cast(),
                        addr_len,
                    );
                }
            }
        }
        self.queue(Self::listener_token(i));
        Ok(())
    }
}

/// Runs a [`Server`] over `listeners` with `handler` and `config` until it exits
/// (idle timeout or signal); returns the counters.
pub fn run<H: Handler>(listeners: Vec<ListenFd>, handler: H, config: Config) -> io::Result<Stats> {
    Server::new(listeners, handler, config)?
        .run()
        .map(|(stats, _)| stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream, UdpSocket};

    struct Echo {
        closed: usize,
    }

    impl Handler for Echo {
        type Conn = usize;
        fn on_connect(&mut self, _fd: BorrowedFd<'_>) -> usize {
            0
        }
        fn on_data(&mut self, n: &mut usize, input: &[u8], out: &mut Vec<u8>) -> Action {
            *n += input.len();
            out.extend_from_slice(input);
            if input.contains(&b'!') {
                Action::Close
            } else {
                Action::Continue
            }
        }
        fn on_close(&mut self, _n: usize) {
            self.closed += 1;
        }
        fn on_datagram(&mut self, input: &[u8], out: &mut Vec<u8>) {
            out.extend_from_slice(input);
        }
    }

    fn config(idle_ms: u64) -> Config {
        Config {
            idle_timeout: Some(Duration::from_millis(idle_ms)),
            handle_signals: false,
            batch: 2,
            ..Config::default()
        }
    }

    #[test]
    fn idle_exit_without_activity() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let server = Server::new(
            vec![ListenFd::new(l.into(), "x")],
            Echo { closed: 0 },
            config(100),
        )
        .unwrap();
        let (stats, _) = server.run().unwrap();
        let el = start.elapsed();
        assert_eq!(stats.reason, ExitReason::Idle);
        assert_eq!(stats.accepted, 0);
        assert!(
            el >= Duration::from_millis(100) && el < Duration::from_secs(3),
            "{el:?}"
        );
    }

    #[test]
    fn rejects_other_fds() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let err = Server::new(
            vec![ListenFd::new(f.into(), "x")],
            Echo { closed: 0 },
            config(100),
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn tcp_and_udp_echo_in_process() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let uaddr = u.local_addr().unwrap();
        // Queue more connections than one batch before the server starts.
        let mut clients: Vec<TcpStream> =
            (0..5).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let fds = vec![
            ListenFd::new(l.into(), "tcp"),
            ListenFd::new(u.into(), "udp"),
        ];
        let server = Server::new(fds, Echo { closed: 0 }, config(300)).unwrap();
        let t = std::thread::spawn(move || server.run().unwrap());
        for (i, c) in clients.iter_mut().enumerate() {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let msg = format!("hello {i}");
            c.write_all(msg.as_bytes()).unwrap();
            let mut buf = vec![0; msg.len()];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(buf, msg.as_bytes());
        }
        // Handler-initiated close flushes first.
        clients[0].write_all(b"bye!").unwrap();
        let mut rest = Vec::new();
        clients[0].read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"bye!");
        // A large transfer exercises partial writes and backpressure.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut c = clients.pop().unwrap();
        let writer = {
            let mut c = c.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || c.write_all(&big).unwrap())
        };
        let mut got = vec![0; big.len()];
        c.read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == big);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"ping", uaddr).unwrap();
        let mut b = [0; 16];
        let (n, from) = s.recv_from(&mut b).unwrap();
        assert_eq!((&b[..n], from), (&b"ping"[..], uaddr));
        drop(c);
        drop(clients);
        let (stats, echo) = t.join().unwrap();
        assert_eq!(stats.reason, ExitReason::Idle);
        assert_eq!(stats.accepted, 5);
        assert_eq!(stats.datagrams, 1);
        assert_eq!(echo.closed, 5);
    }
}
