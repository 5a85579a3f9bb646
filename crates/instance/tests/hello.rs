//! Runs the `distribute-hello` binary with a socket passed at fd 3, the way
//! systemd-distribute starts instances.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{accept_queued, activated_command, kill, stderr_of, wait_exit};

const HELLO: &str = env!("CARGO_BIN_EXE_distribute-hello");
const LIMIT: Duration = Duration::from_secs(10);

fn spawn_hello(l: &TcpListener, args: &[&str]) -> Child {
    activated_command(HELLO, args, &[l.as_fd()])
        .env("LISTEN_FDNAMES", "web")
        .env("DISTRIBUTE_INSTANCE", "7")
        .env("DISTRIBUTE_NAME", "hello")
        .spawn()
        .expect("spawn distribute-hello")
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, data: &str) {
        self.s.write_all(data.as_bytes()).unwrap();
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 4096];
        let n = self.s.read(&mut tmp).expect("read (timed out?)");
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    fn response(&mut self) -> Response {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(
                self.fill() > 0,
                "EOF before a response head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut r = Response {
            status,
            headers,
            body: String::new(),
        };
        let len: usize = r.header("Content-Length").unwrap().parse().unwrap();
        while self.buf.len() < len {
            assert!(self.fill() > 0, "EOF in body");
        }
        r.body = String::from_utf8(self.buf.drain(..len).collect()).unwrap();
        r
    }

    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        self.s.read_to_end(&mut rest).expect("read to EOF");
        assert!(
            self.buf.is_empty() && rest.is_empty(),
            "unexpected bytes {rest:?}"
        );
    }
}

const GET: &str = "GET / HTTP/1.1\r\nHost: test\r\n\r\n";

#[test]
fn serves_keep_alive_and_exits_when_idle() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = spawn_hello(&l, &["--idle-timeout", "300ms", "--batch", "4"]);
    let body = format!("instance=7 pid={}\n", child.id());

    // Keep-alive: several requests on one connection, pipelined and partial ones.
    let mut c = Client::connect(addr);
    c.send(GET);
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(
        r.header("Content-Length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(r.header("Connection"), Some("keep-alive"));
    assert_eq!(r.body, body);
    c.send(&format!("{GET}GET /x HTTP/1.1\r\nHost: test\r\n\r\n{GET}"));
    for _ in 0..3 {
        assert_eq!(c.response().body, body);
    }
    for part in ["GE", "T / HTTP/1.1\r", "\nHost: test\r\n", "\r", "\n"] {
        c.send(part);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.response().body, body);
    c.send("HEAD / HTTP/1.1\r\n\r\n");
    let r = c.response_head_only();
    assert_eq!(
        (r.status, r.header("Content-Length")),
        (200, Some(body.len().to_string().as_str()))
    );
    c.send("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.status, r.header("Connection"), r.body.as_str()),
        (200, Some("close"), body.as_str())
    );
    c.expect_eof();

    // HTTP/1.0 without keep-alive closes; with keep-alive stays open.
    let mut c = Client::connect(addr);
    c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response().header("Connection"), Some("keep-alive"));
    c.send("GET / HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!(
        (r.header("Connection"), r.body.as_str()),
        (Some("close"), body.as_str())
    );
    c.expect_eof();

    // Garbage gets 400 and a close; other methods 405.
    let mut c = Client::connect(addr);
    c.send("hello there\r\n\r\n");
    assert_eq!(c.response().status, 400);
    c.expect_eof();
    let mut c = Client::connect(addr);
    c.send("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    let r = c.response();
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
    c.send(GET);
    assert_eq!(c.response().body, body);
    drop(c);

    // Nothing open any more: the instance exits by itself after the idle timeout.
    let idle_start = Instant::now();
    let status = wait_exit(&mut child, LIMIT);
    let idle = idle_start.elapsed();
    let log = stderr_of(&mut child);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        idle >= Duration::from_millis(250),
        "exited after {idle:?}\n{log}"
    );
    assert!(log.contains("distribute-hello: start pid="), "{log}");
    assert!(
        log.contains("instance=7 name=hello fds=3:web:stream idle-timeout=300ms batch=4"),
        "{log}"
    );
    assert!(log.contains("exit reason=idle"), "{log}");
    assert!(
        log.contains("connections=4 datagrams=0 requests=10 errors=2"),
        "{log}"
    );

    // A connection that arrives now waits in the queue of the socket we still hold.
    let mut late = TcpStream::connect(addr).unwrap();
    late.write_all(b"late").unwrap();
    let mut accepted = accept_queued(&l, LIMIT);
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = [0u8; 4];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"late");
}

impl Client {
    fn response_head_only(&mut self) -> Response {
        let end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(self.fill() > 0, "EOF before a response head");
        };
        let head = String::from_utf8(self.buf.drain(..end + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        Response {
            status,
            headers,
            body: String::new(),
        }
    }
}

#[test]
fn sigterm_finishes_open_request_and_leaves_queue_alone() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = spawn_hello(&l, &["--idle-timeout", "30s", "--grace", "5s"]);
    let body = format!("instance=7 pid={}\n", child.id());

    // Two accepted connections: one will be mid-request, one idle between requests.
    let mut busy = Client::connect(addr);
    busy.send(GET);
    assert_eq!(busy.response().body, body);
    let mut idle = Client::connect(addr);
    idle.send(GET);
    assert_eq!(idle.response().body, body);

    busy.send("GET / HTTP/1.1\r\nHost: te");
    std::thread::sleep(Duration::from_millis(100));
    kill(child.id(), libc::SIGTERM);

    // The idle keep-alive connection is closed right away.
    idle.expect_eof();
    // The instance waits for the request in progress.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before finishing the request"
    );
    // New connections are no longer accepted: this one stays queued.
    let mut queued = TcpStream::connect(addr).unwrap();

    busy.send("st\r\n\r\n");
    let r = busy.response();
    assert_eq!(
        (r.status, r.header("Connection"), r.body.as_str()),
        (200, Some("close"), body.as_str())
    );
    busy.expect_eof();

    let status = wait_exit(&mut child, LIMIT);
    let log = stderr_of(&mut child);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("exit reason=SIGTERM"), "{log}");
    assert!(
        log.contains("connections=2 datagrams=0 requests=3"),
        "{log}"
    );

    queued.write_all(b"q").unwrap();
    let mut accepted = accept_queued(&l, LIMIT);
    accepted.set_nonblocking(false).unwrap();
    accepted.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = [0u8; 1];
    accepted.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"q");
}

#[test]
fn sigterm_grace_period_bounds_a_stuck_request() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut child = spawn_hello(&l, &["--idle-timeout", "30s", "--grace", "300ms"]);
    let mut c = Client::connect(addr);
    c.send(GET);
    assert_eq!(c.response().status, 200);
    c.send("GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    kill(child.id(), libc::SIGTERM);
    let status = wait_exit(&mut child, LIMIT);
    let took = start.elapsed();
    let log = stderr_of(&mut child);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(took >= Duration::from_millis(250), "{took:?}\n{log}");
    assert!(
        log.contains("reason=SIGTERM") && log.contains("forced-closed=1"),
        "{log}"
    );
    // The connection was closed without a response.
    c.expect_eof();
}

#[test]
fn refuses_to_start_without_sockets() {
    let out = std::process::Command::new(HELLO)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no sockets received"), "{err}");
}
