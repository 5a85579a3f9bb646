//! An open-loop HTTP load generator for loopback benchmarks.
//!
//! Request `k` is due at `start + k / rate`, whatever happened before it. A
//! request that cannot be sent on time (every connection busy) waits in a
//! backlog, and its latency still counts from when it was due: a server that
//! stalls for 100 ms shows up as every request of those 100 ms being late, not
//! as one slow request (the "coordinated omission" that closed-loop generators
//! suffer from; this is the method of wrk2). With `rate = 0` the generator runs
//! closed loop instead, keeping `connections` requests in flight: a capacity
//! run whose latency is measured from the actual send.
//!
//! Single-threaded, non-blocking sockets, epoll with nanosecond timeouts
//! (`epoll_pwait2`); loopback destinations only; every run is bounded by its
//! duration, a request count and a drain timeout.

use crate::cvt;
use crate::report::{Errors, Latency, LoadResult};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The two workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A new connection per request (`Connection: close`).
    Short,
    /// Requests on long-lived connections.
    KeepAlive,
}

impl Workload {
    /// `short` or `keepalive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Short => "short",
            Workload::KeepAlive => "keepalive",
        }
    }
}

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Target (must be a loopback address).
    pub addr: SocketAddrV4,
    /// Short connections or keep-alive.
    pub workload: Workload,
    /// Requests per second; 0 = closed loop.
    pub rate: f64,
    /// Keep-alive connections, or the cap on connections in flight (short).
    pub connections: usize,
    /// Traffic before the measured window (not recorded).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// A request without a complete response after this long fails.
    pub timeout: Duration,
    /// Hard cap on requests scheduled (warm-up included).
    pub max_requests: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Idle,
    Waiting,
}

struct Conn {
    fd: OwnedFd,
    phase: Phase,
    /// When the current request was due (open loop) or sent (closed loop).
    due: Instant,
    /// When the current request (or connect, for short) was started.
    started: Instant,
    /// Whether the current request counts (it was due inside the window).
    record: bool,
    recv: Vec<u8>,
}

struct Gen {
    cfg: LoadConfig,
    ep: OwnedFd,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    idle: std::collections::VecDeque<usize>,
    open: usize,
    inflight: usize,
    hist: Histogram<u64>,
    errors: Errors,
    completed: u64,
    workers: HashMap<u32, u64>,
    window_start: Instant,
    window_end: Instant,
    next_source: u32,
}

const GET_KEEPALIVE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";

/// Outcome of parsing what a connection received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a complete response yet.
    Incomplete,
    /// A complete `200` response; the `pid=` of its body if any.
    Ok(Option<u32>),
    /// A complete response that is not `200`, or garbage.
    Bad,
}

/// Parses one HTTP response with `Content-Length` from the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    let head = &buf[..end];
    let mut len = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if line[..colon].eq_ignore_ascii_case(b"content-length") {
                len = std::str::from_utf8(&line[colon + 1..])
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok());
            }
        }
    }
    let Some(len) = len else { return Parsed::Bad };
    if buf.len() < end + 4 + len {
        return Parsed::Incomplete;
    }
    if !head.starts_with(b"HTTP/1.1 200 ") {
        return Parsed::Bad;
    }
    let body = &buf[end + 4..end + 4 + len];
    let pid = body.windows(4).position(|w| w == b"pid=").and_then(|i| {
        let digits: Vec<u8> = body[i + 4..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    });
    Parsed::Ok(pid)
}

/// Whether the head of a response says `Connection: close`.
pub fn says_close(buf: &[u8]) -> bool {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    buf[..end].split(|&b| b == b'\n').skip(1).any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        line.iter().position(|&b| b == b':').is_some_and(|colon| {
            line[..colon].eq_ignore_ascii_case(b"connection")
                && line[colon + 1..]
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"close")
        })
    })
}

fn epoll_ctl(ep: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: ev is a valid epoll_event.
    cvt(unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) }).map(drop)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        t(ru.ru_utime) + t(ru.ru_stime)
    }
}

impl Gen {
    fn new(cfg: LoadConfig) -> io::Result<Gen> {
        // SAFETY: epoll_create1 returns a new fd or -1.
        let ep = unsafe { OwnedFd::from_raw_fd(cvt(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        let now = Instant::now();
        Ok(Gen {
            ep,
            conns: Vec::new(),
            free: Vec::new(),
            idle: std::collections::VecDeque::new(),
            open: 0,
            inflight: 0,
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds"),
            errors: Errors::default(),
            completed: 0,
            workers: HashMap::new(),
            window_start: now + cfg.warmup,
            window_end: now + cfg.warmup + cfg.duration,
            next_source: 0,
            cfg,
        })
    }

    /// Starts a non-blocking connect; the slot index.
    fn connect(&mut self, due: Instant, record: bool) -> io::Result<usize> {
        // SAFETY: plain socket syscalls on a new fd we own.
        let fd = unsafe {
            OwnedFd::from_raw_fd(cvt(libc::socket(
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            ))?)
        };
        // Rotate the source address over 127.0.0.2..=127.0.0.251: every one has
        // its own ephemeral port range, so the TIME_WAIT entries that tens of
        // thousands of short connections leave behind neither run out the ports
        // nor make connect() search for a free one.
        self.next_source = self.next_source.wrapping_add(1);
        let src = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::new(
                    127,
                    0,
                    0,
                    2 + (self.next_source % 250) as u8,
                ))
                .to_be(),
            },
            sin_zero: [0; 8],
        };
        enable_option(&fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT);
        // SAFETY: the address points to live, correctly sized data.
        unsafe {
            cvt(libc::bind(
                fd.as_raw_fd(),
                (&src as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ))?;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: self.cfg.addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*self.cfg.addr.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        enable_option(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY);
        // SAFETY: the address points to live, correctly sized data.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            (libc::EPOLLIN | libc::EPOLLOUT) as u32,
            idx as u64,
        )?;
        let now = Instant::now();
        self.conns[idx] = Some(Conn {
            fd,
            phase: Phase::Connecting,
            due,
            started: now,
            record,
            recv: Vec::new(),
        });
        self.open += 1;
        Ok(idx)
    }

    fn close(&mut self, idx: usize) {
        if let Some(c) = self.conns[idx].take() {
            if c.phase == Phase::Waiting
                || (c.phase == Phase::Connecting && self.cfg.workload == Workload::Short)
            {
                self.inflight -= 1;
            }
            self.open -= 1;
            self.idle.retain(|&i| i != idx);
            self.free.push(idx);
        }
    }

    fn fail(&mut self, idx: usize, kind: fn(&mut Errors) -> &mut u64) {
        let counts = self.conns[idx].as_ref().is_some_and(|c| {
            c.record && (c.phase == Phase::Waiting || self.cfg.workload == Workload::Short)
        });
        if counts {
            *kind(&mut self.errors) += 1;
        }
        self.close(idx);
    }

    fn send(&mut self, idx: usize) {
        let req = match self.cfg.workload {
            Workload::Short => GET_CLOSE,
            Workload::KeepAlive => GET_KEEPALIVE,
        };
        let c = self.conns[idx].as_mut().expect("live connection");
        c.phase = Phase::Waiting;
        c.recv.clear();
        // SAFETY: writing from a static buffer.
        let n = unsafe { libc::write(c.fd.as_raw_fd(), req.as_ptr().cast(), req.len()) };
        let fd = c.fd.as_raw_fd();
        if n != req.len() as isize {
            self.fail(idx, |e| &mut e.reset);
            return;
        }
        let _ = epoll_ctl(
            self.ep.as_raw_fd(),
            libc::EPOLL_CTL_MOD,
            fd,
            libc::EPOLLIN as u32,
            idx as u64,
        );
    }

    /// Puts request `due` on a keep-alive connection.
    fn dispatch_keepalive(&mut self, idx: usize, due: Instant, record: bool) {
        let c = self.conns[idx].as_mut().expect("idle connection");
        c.due = due;
        c.started = Instant::now();
        c.record = record;
        self.inflight += 1;
        self.send(idx);
    }

    fn on_event(&mut self, idx: usize, flags: u32) {
        let Some(c) = self.conns[idx].as_mut() else {
            return;
        };
        match c.phase {
            Phase::Connecting => {
                let mut err: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                // SAFETY: err/len are a correctly sized c_int and its length.
                unsafe {
                    libc::getsockopt(
                        c.fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_ERROR,
                        (&mut err as *mut libc::c_int).cast(),
                        &mut len,
                    )
                };
                if err != 0 || flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                    self.fail(idx, |e| &mut e.connect);
                    return;
                }
                match self.cfg.workload {
                    Workload::Short => self.send(idx),
                    Workload::KeepAlive => {
                        c.phase = Phase::Idle;
                        let fd = c.fd.as_raw_fd();
                        let _ = epoll_ctl(
                            self.ep.as_raw_fd(),
                            libc::EPOLL_CTL_MOD,
                            fd,
                            libc::EPOLLIN as u32,
                            idx as u64,
                        );
                        self.idle.push_back(idx);
                    }
                }
            }
            Phase::Idle => {
                // The server closed an idle keep-alive connection (or sent junk).
                self.close(idx);
            }
            Phase::Waiting => {
                let mut buf = [0u8; 4096];
                // SAFETY: reading into a stack buffer of the given size.
                let n = unsafe { libc::read(c.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                        return;
                    }
                    self.fail(idx, |e| &mut e.reset);
                    return;
                }
                if n == 0 {
                    self.fail(idx, |e| &mut e.reset);
                    return;
                }
                c.recv.extend_from_slice(&buf[..n as usize]);
                match parse_response(&c.recv) {
                    Parsed::Incomplete => {}
                    Parsed::Bad => self.fail(idx, |e| &mut e.bad),
                    Parsed::Ok(pid) => {
                        let now = Instant::now();
                        if c.record {
                            let us = now.saturating_duration_since(c.due).as_micros() as u64;
                            self.hist.saturating_record(us.max(1));
                            self.completed += 1;
                            if let Some(pid) = pid {
                                *self.workers.entry(pid).or_default() += 1;
                            }
                        }
                        match self.cfg.workload {
                            Workload::Short => self.close(idx),
                            Workload::KeepAlive => {
                                // `Connection: close` (e.g. the server's
                                // keep-alive request limit): reconnect
                                // rather than send on a closing connection.
                                let closing = says_close(&c.recv);
                                c.phase = Phase::Idle;
                                c.recv.clear();
                                self.inflight -= 1;
                                if closing {
                                    self.close(idx);
                                } else {
                                    self.idle.push_back(idx);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        let timeout = self.cfg.timeout;
        let late: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.as_ref()?;
                let busy = c.phase == Phase::Waiting
                    || (c.phase == Phase::Connecting && self.cfg.workload == Workload::Short);
                (busy && now.saturating_duration_since(c.started) > timeout).then_some(i)
            })
            .collect();
        for i in late {
            self.fail(i, |e| &mut e.timeout);
        }
    }

    fn wait(&mut self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: epoll_pwait2(2): events has room for len entries, ts is a valid
        // timespec, no signal mask.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                &ts as *const libc::timespec,
                std::ptr::null::<libc::sigset_t>(),
                0usize,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    fn run(mut self) -> io::Result<Partial> {
        let start = Instant::now();
        let open_loop = self.cfg.rate > 0.0;
        let interval = if open_loop {
            Duration::from_secs_f64(1.0 / self.cfg.rate)
        } else {
            Duration::ZERO
        };
        let due = |k: u64| start + interval.mul_f64(k as f64);
        let stop = self.window_end;
        let hard_stop = stop + self.cfg.timeout + Duration::from_millis(100);
        let (mut scheduled, mut dispatched) = (0u64, 0u64);
        let mut scheduled_in_window = 0u64;
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
        let mut last_expire = start;
        if self.cfg.workload == Workload::KeepAlive {
            for _ in 0..self.cfg.connections {
                if self.connect(start, false).is_err() {
                    self.errors.connect += 1;
                }
            }
        }
        loop {
            let now = Instant::now();
            // Schedule what is due.
            if now < stop {
                if open_loop {
                    while scheduled < self.cfg.max_requests && due(scheduled) <= now {
                        if due(scheduled) >= self.window_start {
                            scheduled_in_window += 1;
                        }
                        scheduled += 1;
                    }
                } else {
                    // Closed loop: one more request whenever a slot is free.
                    let backlog = (scheduled - dispatched) as usize;
                    let free = self.cfg.connections.saturating_sub(self.inflight + backlog) as u64;
                    let add = free.min(self.cfg.max_requests - scheduled);
                    if now >= self.window_start {
                        scheduled_in_window += add;
                    }
                    scheduled += add;
                }
            } else if self.inflight == 0 || now >= hard_stop {
                break;
            }
            // Dispatch the backlog.
            while dispatched < scheduled {
                let (d, record) = if open_loop {
                    (due(dispatched), due(dispatched) >= self.window_start)
                } else {
                    (now, now >= self.window_start)
                };
                match self.cfg.workload {
                    Workload::KeepAlive => {
                        if let Some(idx) = self.idle.pop_front() {
                            self.dispatch_keepalive(idx, d, record);
                        } else {
                            if self.open < self.cfg.connections && self.connect(now, false).is_err()
                            {
                                self.errors.connect += u64::from(record);
                                dispatched += 1;
                                continue;
                            }
                            break;
                        }
                    }
                    Workload::Short => {
                        if self.inflight >= self.cfg.connections {
                            break;
                        }
                        match self.connect(d, record) {
                            Ok(_) => self.inflight += 1,
                            Err(_) => self.errors.connect += u64::from(record),
                        }
                    }
                }
                dispatched += 1;
            }
            if now.duration_since(last_expire) > Duration::from_millis(50) {
                self.expire(now);
                last_expire = now;
            }
            // Sleep until the next request is due or something happens.
            let timeout = if now >= stop {
                Duration::from_millis(10)
            } else if open_loop && dispatched == scheduled {
                due(scheduled)
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(10))
            } else if !open_loop && self.inflight < self.cfg.connections {
                Duration::ZERO
            } else {
                Duration::from_millis(10)
            };
            let n = self.wait(&mut events, timeout)?;
            for ev in &events[..n] {
                let (token, flags) = (ev.u64 as usize, ev.events);
                self.on_event(token, flags);
            }
        }
        // Whatever is still in flight timed out; whatever was never sent is unsent.
        let stuck: Vec<usize> = (0..self.conns.len()).collect();
        for i in stuck {
            let busy = self.conns[i].as_ref().is_some_and(|c| {
                c.phase == Phase::Waiting
                    || (c.phase == Phase::Connecting && self.cfg.workload == Workload::Short)
            });
            if busy {
                self.fail(i, |e| &mut e.timeout);
            }
        }
        let unsent = if open_loop {
            (dispatched..scheduled)
                .filter(|&k| due(k) >= self.window_start)
                .count() as u64
        } else {
            0
        };
        Ok(Partial {
            scheduled: scheduled_in_window,
            unsent,
            completed: self.completed,
            errors: self.errors,
            hist: self.hist,
            workers: self.workers,
        })
    }
}

/// What one generator thread measured.
struct Partial {
    scheduled: u64,
    unsent: u64,
    completed: u64,
    errors: Errors,
    hist: Histogram<u64>,
    workers: HashMap<u32, u64>,
}

/// Merges the threads' measurements (histograms added, not percentiles averaged).
fn merge(cfg: &LoadConfig, parts: Vec<Partial>, cpu_s: f64) -> LoadResult {
    let mut hist = Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds");
    let mut errors = Errors::default();
    let mut workers: BTreeMap<u32, u64> = BTreeMap::new();
    let (mut scheduled, mut unsent, mut completed) = (0, 0, 0);
    for p in parts {
        hist.add(&p.hist).expect("same histogram bounds");
        errors.connect += p.errors.connect;
        errors.reset += p.errors.reset;
        errors.timeout += p.errors.timeout;
        errors.bad += p.errors.bad;
        for (k, v) in p.workers {
            *workers.entry(k).or_default() += v;
        }
        scheduled += p.scheduled;
        unsent += p.unsent;
        completed += p.completed;
    }
    let secs = cfg.duration.as_secs_f64();
    let (max, min) = (
        workers.values().copied().max().unwrap_or(0),
        workers.values().copied().min().unwrap_or(0),
    );
    LoadResult {
        workload: cfg.workload.as_str().into(),
        rate: cfg.rate,
        connections: cfg.connections,
        duration_s: secs,
        scheduled,
        unsent,
        completed,
        errors,
        throughput: completed as f64 / secs,
        latency_us: Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
            mean: hist.mean(),
        },
        workers,
        fairness: if min > 0 {
            max as f64 / min as f64
        } else {
            f64::INFINITY
        },
        cpu_s,
    }
}

fn check(cfg: &LoadConfig) -> anyhow::Result<()> {
    if !cfg.addr.ip().is_loopback() {
        anyhow::bail!(
            "refusing to send load to {}: loopback (127.0.0.0/8) only",
            cfg.addr
        );
    }
    if cfg.connections == 0 {
        anyhow::bail!("--connections must be at least 1");
    }
    Ok(())
}

/// Runs one load run on the calling thread. Fails for non-loopback targets.
pub fn run(cfg: LoadConfig) -> anyhow::Result<LoadResult> {
    check(&cfg)?;
    // Nanosecond timers: no 50 µs default slack on the send schedule.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
    let cpu0 = cpu_seconds();
    let part = Gen::new(cfg.clone())?.run()?;
    Ok(merge(&cfg, vec![part], cpu_seconds() - cpu0))
}

/// Runs one load run with one generator thread per CPU of `cpus`, each pinned
/// to its CPU and offering its share of the rate over its share of the
/// connections (split as evenly as possible). On loopback a connection's
/// packets are processed on the CPU that sends them, so this puts clients, and
/// their SYNs, on every listed CPU. The result merges the threads' histograms;
/// `cpu_s` is the whole process's CPU time.
pub fn run_per_cpu(cfg: LoadConfig, cpus: &[usize]) -> anyhow::Result<LoadResult> {
    check(&cfg)?;
    let k = cpus.len();
    if k == 0 || cfg.connections < k {
        anyhow::bail!("need at least one CPU and one connection per CPU");
    }
    let cpu0 = cpu_seconds();
    let threads: Vec<_> = cpus
        .iter()
        .enumerate()
        .map(|(i, &cpu)| {
            let mut c = cfg.clone();
            c.rate = cfg.rate / k as f64;
            c.connections = cfg.connections / k + usize::from(i < cfg.connections % k);
            c.max_requests = cfg.max_requests / k as u64;
            std::thread::spawn(move || -> anyhow::Result<Partial> {
                crate::pin_to(&[cpu])?;
                // SAFETY: prctl with integer arguments (per thread).
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
                Ok(Gen::new(c)?.run()?)
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(k);
    for t in threads {
        parts.push(
            t.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??,
        );
    }
    Ok(merge(&cfg, parts, cpu_seconds() - cpu0))
}

/// Sets a boolean socket option to 1; a failure only costs performance
/// (no `IP_BIND_ADDRESS_NO_PORT`, or Nagle), so it is not an error.
fn enable_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) {
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connection_close_is_seen() {
        assert!(says_close(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!says_close(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!says_close(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    }

    use super::*;

    #[test]
    fn parses_responses() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\ninstance=0 pid=42\n";
        assert_eq!(parse_response(ok), Parsed::Ok(Some(42)));
        assert_eq!(parse_response(&ok[..ok.len() - 1]), Parsed::Incomplete);
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n"), Parsed::Incomplete);
        assert_eq!(
            parse_response(b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Bad
        );
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n"), Parsed::Bad);
    }

    #[test]
    fn refuses_non_loopback() {
        let cfg = LoadConfig {
            addr: "10.0.0.1:80".parse().unwrap(),
            workload: Workload::Short,
            rate: 1.0,
            connections: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(10),
            timeout: Duration::from_millis(10),
            max_requests: 1,
        };
        assert!(run(cfg).is_err());
    }
}
