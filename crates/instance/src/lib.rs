//! Building blocks for `systemd-distribute` service instances.
//!
//! The activator binds N `SO_REUSEPORT` sockets for one listen address and starts
//! `NAME@i.service` for socket `i`. Each instance receives its socket through the
//! standard socket-activation protocol (`$LISTEN_FDS`, `$LISTEN_PID`,
//! `$LISTEN_FDNAMES`, file descriptors from [`SD_LISTEN_FDS_START`]), serves the
//! connections the kernel puts in that socket's queue, and exits once it has been
//! idle for a while. The activator keeps its own copy of every listening socket, so
//! connections that arrive while an instance is down wait in the queue until the
//! activator starts the instance again.
//!
//! This crate provides:
//!
//! * [`listen_fds`]: the equivalent of `sd_listen_fds_with_names(3)`, returning
//!   owned descriptors classified by [`SocketKind`]; the pure parser behind it is
//!   [`parse_listen_env`].
//! * [`Server`] (and the shortcut [`run`]): a single-threaded event loop that
//!   accepts in batches, drives per-connection [`Handler`] state machines, answers
//!   datagrams, exits after an idle timeout and drains gracefully on `SIGTERM` /
//!   `SIGINT`.
//! * [`http`]: a small HTTP/1.x request-head parser used by the `distribute-hello`
//!   demo instance.
//! * [`parse_timespan`]: systemd-style time spans (`5s`, `500ms`, `1min 30s`).
//!
//! ```no_run
//! use distribute_instance::{listen_fds, Action, Config, Handler, Server};
//! use std::os::fd::BorrowedFd;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Conn = ();
//!     fn on_connect(&mut self, _fd: BorrowedFd<'_>) {}
//!     fn on_data(&mut self, _c: &mut (), input: &[u8], out: &mut Vec<u8>) -> Action {
//!         out.extend_from_slice(input);
//!         Action::Continue
//!     }
//! }
//!
//! let fds = listen_fds(true)?;
//! let (stats, _echo) = Server::new(fds, Echo, Config::default())?.run()?;
//! eprintln!("exiting: {}, {} connections", stats.reason, stats.accepted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub mod http;
mod server;
mod timespan;

pub use timespan::{parse_time_span_usec, TimeSpanError};

pub use server::{run, Action, Config, ExitReason, Handler, Server, Stats};

/// Environment variable holding the number of passed file descriptors.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// Environment variable holding the PID the passed file descriptors are meant for.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// Environment variable holding the colon-separated names of the passed descriptors.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The first passed file descriptor; the others follow consecutively.
pub const SD_LISTEN_FDS_START: RawFd = 3;
/// Environment variable set by `systemd-distribute`: this instance's index `i`
/// (the `i` in `NAME@i.service`, `0..N`).
pub const DISTRIBUTE_INSTANCE: &str = "DISTRIBUTE_INSTANCE";
/// Environment variable set by `systemd-distribute`: the configuration name
/// (`NAME` of `NAME.socket`).
pub const DISTRIBUTE_NAME: &str = "DISTRIBUTE_NAME";

/// The name systemd reports for a descriptor when `$LISTEN_FDNAMES` is not set.
pub const UNKNOWN_FD_NAME: &str = "unknown";

/// Errors from reading the socket-activation environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `$LISTEN_PID` is not a positive decimal integer.
    #[error("invalid ${LISTEN_PID}={0:?}: expected a positive decimal PID")]
    InvalidPid(String),
    /// `$LISTEN_FDS` is not a decimal integer in range.
    #[error("invalid ${LISTEN_FDS}={0:?}: expected a decimal count of file descriptors")]
    InvalidFds(String),
    /// `$LISTEN_FDNAMES` does not name every passed descriptor.
    #[error("${LISTEN_FDNAMES} has {names} name(s) but ${LISTEN_FDS} is {fds}")]
    NameCount {
        /// Number of names in `$LISTEN_FDNAMES`.
        names: usize,
        /// Value of `$LISTEN_FDS`.
        fds: usize,
    },
    /// An environment variable is not valid UTF-8.
    #[error("${0} is not valid UTF-8")]
    NotUnicode(&'static str),
    /// A descriptor announced by `$LISTEN_FDS` is not open or cannot be configured.
    #[error("file descriptor {fd} announced by ${LISTEN_FDS}: {source}")]
    BadFd {
        /// The descriptor number.
        fd: RawFd,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// [`listen_fds`] already handed out the descriptors (they have exactly one owner).
    #[error("the passed file descriptors were already taken by an earlier listen_fds() call")]
    AlreadyTaken,
}

/// Result type of this crate's environment functions.
pub type Result<T> = std::result::Result<T, Error>;

/// What kind of socket a passed descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// A listening `SOCK_STREAM` socket (`SO_ACCEPTCONN` is set).
    Stream,
    /// A `SOCK_DGRAM` socket.
    Datagram,
    /// Anything else: not a socket, a connected stream, `SOCK_SEQPACKET`, ...
    Other,
}

impl SocketKind {
    /// Classifies a descriptor with `getsockopt(SO_TYPE)` and `getsockopt(SO_ACCEPTCONN)`.
    pub fn of(fd: &impl AsRawFd) -> SocketKind {
        let fd = fd.as_raw_fd();
        match getsockopt_int(fd, libc::SO_TYPE) {
            Ok(libc::SOCK_STREAM) => match getsockopt_int(fd, libc::SO_ACCEPTCONN) {
                Ok(1) => SocketKind::Stream,
                _ => SocketKind::Other,
            },
            Ok(libc::SOCK_DGRAM) => SocketKind::Datagram,
            _ => SocketKind::Other,
        }
    }

    /// A short lowercase name: `stream`, `datagram` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketKind::Stream => "stream",
            SocketKind::Datagram => "datagram",
            SocketKind::Other => "other",
        }
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn getsockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: val/len point to a properly sized c_int; the kernel validates fd.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(val)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One descriptor received through socket activation.
#[derive(Debug)]
pub struct ListenFd {
    /// The descriptor (close-on-exec is set).
    pub fd: OwnedFd,
    /// Its name from `$LISTEN_FDNAMES` ([`UNKNOWN_FD_NAME`] when unset).
    pub name: String,
    /// What kind of socket it is.
    pub kind: SocketKind,
}

impl ListenFd {
    /// Wraps a descriptor the caller owns (for example a socket bound by a test),
    /// classifying it with [`SocketKind::of`].
    pub fn new(fd: OwnedFd, name: impl Into<String>) -> ListenFd {
        let kind = SocketKind::of(&fd);
        ListenFd {
            fd,
            name: name.into(),
            kind,
        }
    }
}

/// Parses a strictly decimal, non-negative integer (no sign, no spaces).
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Interprets the socket-activation variables, like `sd_listen_fds_with_names(3)`.
///
/// `listen_pid`, `listen_fds` and `listen_fdnames` are the values of `$LISTEN_PID`,
/// `$LISTEN_FDS` and `$LISTEN_FDNAMES` (`None` when unset); `my_pid` is the PID of
/// the calling process. Returns the `(fd, name)` pairs, starting at
/// [`SD_LISTEN_FDS_START`].
///
/// * `$LISTEN_PID` or `$LISTEN_FDS` unset, `$LISTEN_FDS=0`, or a `$LISTEN_PID` that
///   is not `my_pid`: the descriptors are not for us, the result is empty.
/// * Malformed numbers are errors ([`Error::InvalidPid`], [`Error::InvalidFds`]).
/// * When `$LISTEN_FDNAMES` is set it must hold exactly `$LISTEN_FDS`
///   colon-separated names ([`Error::NameCount`]); when unset every descriptor is
///   named [`UNKNOWN_FD_NAME`].
pub fn parse_listen_env(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    my_pid: u32,
) -> Result<Vec<(RawFd, String)>> {
    let Some(pid) = listen_pid else {
        return Ok(Vec::new());
    };
    let pid = match parse_decimal(pid) {
        Some(p) if p > 0 => p,
        _ => return Err(Error::InvalidPid(pid.to_owned())),
    };
    if pid != u64::from(my_pid) {
        return Ok(Vec::new());
    }
    let Some(fds) = listen_fds else {
        return Ok(Vec::new());
    };
    let n = match parse_decimal(fds) {
        Some(n) if n <= (RawFd::MAX - SD_LISTEN_FDS_START) as u64 => n as usize,
        _ => return Err(Error::InvalidFds(fds.to_owned())),
    };
    if n == 0 {
        return Ok(Vec::new());
    }
    let names: Vec<String> = match listen_fdnames {
        // systemd splits without coalescing separators; an empty value has no names.
        Some("") => Vec::new(),
        Some(s) => s.split(':').map(str::to_owned).collect(),
        None => vec![UNKNOWN_FD_NAME.to_owned(); n],
    };
    if names.len() != n {
        return Err(Error::NameCount {
            names: names.len(),
            fds: n,
        });
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| (SD_LISTEN_FDS_START + i as RawFd, name))
        .collect())
}

fn env_str(name: &'static str) -> Result<Option<String>> {
    match std::env::var_os(name) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| Error::NotUnicode(name)),
    }
}

static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes ownership of the descriptors passed by socket activation.
///
/// Reads `$LISTEN_PID`, `$LISTEN_FDS` and `$LISTEN_FDNAMES` (see
/// [`parse_listen_env`]), checks that every announced descriptor is open, sets
/// `FD_CLOEXEC` on it and classifies it ([`SocketKind`]). With `unset_env`, the three
/// variables are removed afterwards whatever the outcome, like
/// `sd_listen_fds(unset_environment=1)`, so child processes do not see them.
///
/// Every descriptor must have exactly one owner, so only the first call that finds
/// descriptors gets them; a later call that would return the same descriptors fails
/// with [`Error::AlreadyTaken`].
///
/// Modifying the environment is not thread-safe: call this early, before the
/// process starts threads that read or write the environment.
pub fn listen_fds(unset_env: bool) -> Result<Vec<ListenFd>> {
    let result = take_listen_fds();
    if unset_env {
        std::env::remove_var(LISTEN_PID);
        std::env::remove_var(LISTEN_FDS);
        std::env::remove_var(LISTEN_FDNAMES);
    }
    result
}

fn take_listen_fds() -> Result<Vec<ListenFd>> {
    let pid = env_str(LISTEN_PID)?;
    let fds = env_str(LISTEN_FDS)?;
    let names = env_str(LISTEN_FDNAMES)?;
    let parsed = parse_listen_env(
        pid.as_deref(),
        fds.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?;
    if parsed.is_empty() {
        return Ok(Vec::new());
    }
    // Check and configure every descriptor before taking ownership of any.
    for (fd, _) in &parsed {
        set_cloexec(*fd).map_err(|source| Error::BadFd { fd: *fd, source })?;
    }
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(Error::AlreadyTaken);
    }
    Ok(parsed
        .into_iter()
        .map(|(fd, name)| {
            // SAFETY: the socket-activation protocol hands these descriptors to this
            // process, they are open (checked above), and TAKEN guarantees that they
            // are wrapped only once.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let kind = SocketKind::of(&fd);
            ListenFd { fd, name, kind }
        })
        .collect())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an arbitrary integer is memory-safe; EBADF reports closed fds.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::FD_CLOEXEC == 0 {
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// This instance's index from `$DISTRIBUTE_INSTANCE`, if set and numeric.
pub fn instance_index() -> Option<u32> {
    std::env::var(DISTRIBUTE_INSTANCE)
        .ok()
        .and_then(|s| parse_decimal(&s))
        .and_then(|n| u32::try_from(n).ok())
}

/// The configuration name from `$DISTRIBUTE_NAME`, if set and non-empty.
pub fn instance_name() -> Option<String> {
    std::env::var(DISTRIBUTE_NAME)
        .ok()
        .filter(|s| !s.is_empty())
}

/// Error from [`parse_timespan`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time span {0:?}: expected e.g. 10s, 500ms, 1min 30s, or infinity")]
pub struct TimespanError(pub String);

/// Parses a systemd-style time span (`systemd.time(7)`) into a [`Duration`]
/// with [`parse_time_span_usec`] (surrounding white space allowed): `5` =
/// `5s`, `1.5s`, `1min 30s`, `250us`; `infinity` gives [`Duration::MAX`].
pub fn parse_timespan(s: &str) -> std::result::Result<Duration, TimespanError> {
    match parse_time_span_usec(s.trim()) {
        Ok(u64::MAX) => Ok(Duration::MAX),
        Ok(usec) => Ok(Duration::from_micros(usec)),
        Err(_) => Err(TimespanError(s.to_owned())),
    }
}

/// Formats a duration the way [`parse_timespan`] reads it (`10s`, `300ms`, `infinity`).
pub fn format_timespan(d: Duration) -> String {
    if d == Duration::MAX {
        return "infinity".to_owned();
    }
    let us = d.as_micros();
    if us == 0 {
        "0".to_owned()
    } else if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_listen_env_table() {
        let u = || UNKNOWN_FD_NAME.to_owned();
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            std::result::Result<Vec<(RawFd, String)>, &'static str>,
        );
        let cases: Vec<Case> = vec![
            // Nothing set / not for us.
            (None, None, None, Ok(vec![])),
            (None, Some("2"), None, Ok(vec![])),
            (Some("100"), None, None, Ok(vec![])),
            (Some("101"), Some("2"), None, Ok(vec![])),
            (Some("101"), Some("2"), Some("a:b"), Ok(vec![])),
            (Some("101"), Some("zz"), None, Ok(vec![])),
            (Some("100"), Some("0"), None, Ok(vec![])),
            (Some("100"), Some("0"), Some("x"), Ok(vec![])),
            // For us.
            (Some("100"), Some("1"), None, Ok(vec![(3, u())])),
            (Some("100"), Some("2"), None, Ok(vec![(3, u()), (4, u())])),
            (
                Some("100"),
                Some("1"),
                Some("web"),
                Ok(vec![(3, "web".into())]),
            ),
            (
                Some("100"),
                Some("3"),
                Some("a:b:c"),
                Ok(vec![(3, "a".into()), (4, "b".into()), (5, "c".into())]),
            ),
            (
                Some("100"),
                Some("2"),
                Some("a:"),
                Ok(vec![(3, "a".into()), (4, "".into())]),
            ),
            // Malformed.
            (Some(""), Some("1"), None, Err("pid")),
            (Some("0"), Some("1"), None, Err("pid")),
            (Some("-100"), Some("1"), None, Err("pid")),
            (Some("+100"), Some("1"), None, Err("pid")),
            (Some(" 100"), Some("1"), None, Err("pid")),
            (Some("100x"), Some("1"), None, Err("pid")),
            (Some("99999999999999999999999"), Some("1"), None, Err("pid")),
            (Some("100"), Some(""), None, Err("fds")),
            (Some("100"), Some("-1"), None, Err("fds")),
            (Some("100"), Some("1 "), None, Err("fds")),
            (Some("100"), Some("one"), None, Err("fds")),
            (Some("100"), Some("2147483645"), None, Err("fds")),
            (Some("100"), Some("1"), Some(""), Err("names")),
            (Some("100"), Some("1"), Some("a:b"), Err("names")),
            (Some("100"), Some("3"), Some("a:b"), Err("names")),
        ];
        for (pid, fds, names, want) in cases {
            let got = parse_listen_env(pid, fds, names, 100);
            let ctx = format!("pid={pid:?} fds={fds:?} names={names:?} -> {got:?}");
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{ctx}"),
                (Err(Error::InvalidPid(_)), Err("pid")) => {}
                (Err(Error::InvalidFds(_)), Err("fds")) => {}
                (Err(Error::NameCount { .. }), Err("names")) => {}
                (_, want) => panic!("{ctx}, want {want:?}"),
            }
        }
    }

    #[test]
    fn name_count_error_message() {
        let e = parse_listen_env(Some("1"), Some("2"), Some("a"), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "$LISTEN_FDNAMES has 1 name(s) but $LISTEN_FDS is 2"
        );
        let e = parse_listen_env(Some("x"), Some("2"), None, 1).unwrap_err();
        assert!(e.to_string().contains("$LISTEN_PID=\"x\""), "{e}");
    }

    #[test]
    fn timespan_table() {
        let ms = Duration::from_millis;
        let cases: &[(&str, Option<Duration>)] = &[
            ("10s", Some(ms(10_000))),
            ("500ms", Some(ms(500))),
            ("5", Some(ms(5000))),
            ("0", Some(Duration::ZERO)),
            ("1.5s", Some(ms(1500))),
            ("1min 30s", Some(ms(90_000))),
            ("1min30s", Some(ms(90_000))),
            ("2h", Some(ms(7_200_000))),
            ("250us", Some(Duration::from_micros(250))),
            ("3 sec", Some(ms(3000))),
            (" 2s ", Some(ms(2000))),
            ("1d", Some(ms(86_400_000))),
            ("infinity", Some(Duration::MAX)),
            ("", None),
            ("s", None),
            ("5x", None),
            ("-5s", None),
            (".5s", None),
            ("5.s", None),
            ("1e3s", None),
            ("10 20", Some(ms(30_000))),
            ("99999999999999999999w", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_timespan(s).ok(), *want, "{s:?}");
        }
    }

    #[test]
    fn timespan_roundtrip() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(10),
            Duration::from_millis(300),
            Duration::from_micros(1500),
            Duration::MAX,
        ] {
            assert_eq!(parse_timespan(&format_timespan(d)).unwrap(), d, "{d:?}");
        }
    }

    #[test]
    fn socket_kind_detection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(SocketKind::of(&l), SocketKind::Stream);
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(SocketKind::of(&u), SocketKind::Datagram);
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(SocketKind::of(&c), SocketKind::Other);
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(SocketKind::of(&f), SocketKind::Other);
        let lf = ListenFd::new(OwnedFd::from(l), "web");
        assert_eq!((lf.kind, lf.name.as_str()), (SocketKind::Stream, "web"));
    }
}
