//! `distribute-hello`: a socket-activated HTTP/1.1 instance for systemd-distribute.
//!
//! Every `GET` (or `HEAD`) gets `200 OK`, `Content-Type: text/plain` and the body
//! `instance=<$DISTRIBUTE_INSTANCE or ?> pid=<pid>\n`, so clients can see which
//! instance served them (with `--show-env NAME`, ` NAME=<value>` pairs before the
//! newline: what the unit's settings put in the environment). Keep-alive, pipelining and partial requests are handled;
//! malformed requests get `400` and the connection is closed.

use std::os::fd::BorrowedFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use distribute_instance::http::{parse_request, write_response, ParseError};
use distribute_instance::{instance_index, parse_timespan, Action, Handler, SocketKind};

mod common;

const PROG: &str = "distribute-hello";

/// Answer HTTP GET requests on the passed sockets with this instance's index and PID.
#[derive(Debug, Parser)]
#[command(name = PROG, version)]
struct Cli {
    #[command(flatten)]
    common: common::Common,

    /// Busy-spin this many microseconds per request (simulated work, for benchmarks).
    #[arg(long, value_name = "N", default_value_t = 0)]
    work_us: u64,

    /// Add ` NAME=<value of $NAME at start>` to every answer (repeatable), e.g.
    /// to see a unit's `Environment=` or `$LISTEN_PID` from outside.
    #[arg(long, value_name = "NAME")]
    show_env: Vec<String>,

    /// Hang like a deadlocked or paused server, to try the activator's health
    /// check: `[I@]AFTER[+FOR]` — AFTER (a time span) after start, at the next
    /// connection or request, the whole event loop stops (no accept, no
    /// answer) for FOR (default infinity), once. With `I@` only instance I
    /// does (`$DISTRIBUTE_INSTANCE`); e.g. `--stall 2@1s+5s`.
    #[arg(long, value_name = "SPEC", value_parser = parse_stall)]
    stall: Option<Stall>,

    /// Close a keep-alive connection after this many requests (answering the
    /// last with `Connection: close`), like nginx's `keepalive_requests`, so
    /// that clients reconnect and steering sees their connections again.
    /// 0: never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    keepalive_requests: u64,
}

/// `--stall`: which instance, when, for how long.
#[derive(Debug, Clone, Copy)]
struct Stall {
    instance: Option<u32>,
    after: Duration,
    duration: Duration,
}

fn parse_stall(s: &str) -> Result<Stall, String> {
    let (instance, rest) = match s.split_once('@') {
        Some((i, rest)) => (
            Some(
                i.parse::<u32>()
                    .map_err(|_| format!("{i:?} is not an instance index"))?,
            ),
            rest,
        ),
        None => (None, s),
    };
    let (after, duration) = match rest.split_once('+') {
        Some((a, d)) => (a, Some(d)),
        None => (rest, None),
    };
    let span = |t: &str| parse_timespan(t).map_err(|e| e.to_string());
    Ok(Stall {
        instance,
        after: span(after)?,
        duration: duration.map(span).transpose()?.unwrap_or(Duration::MAX),
    })
}

struct Hello {
    body: Vec<u8>,
    work: Duration,
    requests: u64,
    errors: u64,
    /// `--stall`: when (once), and for how long.
    stall: Option<(Instant, Duration)>,
    /// `--keepalive-requests`.
    keepalive_requests: u64,
}

#[derive(Default)]
struct HttpConn {
    /// Received bytes not yet parsed (a partial request head, pipelined requests).
    buf: Vec<u8>,
    /// Body bytes of the current request still to be discarded.
    skip: u64,
    /// Shutting down: answer the request in progress with `Connection: close`.
    draining: bool,
    /// Requests answered on this connection.
    served: u64,
}

impl Hello {
    /// `--stall`: blocks the only thread once its time has come.
    fn maybe_stall(&mut self) {
        let Some((at, how_long)) = self.stall else {
            return;
        };
        if Instant::now() < at {
            return;
        }
        self.stall = None;
        eprintln!(
            "{PROG}: stalling for {}",
            distribute_instance::format_timespan(how_long)
        );
        match Instant::now().checked_add(how_long) {
            Some(end) => {
                while let Some(left) = end.checked_duration_since(Instant::now()) {
                    std::thread::sleep(left);
                }
            }
            None => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
        }
        eprintln!("{PROG}: stall over");
    }

    fn spin(&self) {
        if self.work.is_zero() {
            return;
        }
        let end = Instant::now() + self.work;
        while Instant::now() < end {
            std::hint::spin_loop();
        }
    }

    /// Answers every complete request in `conn.buf[*pos..]`, advancing `*pos`.
    fn handle_requests(
        &mut self,
        conn: &mut HttpConn,
        pos: &mut usize,
        out: &mut Vec<u8>,
    ) -> Action {
        loop {
            // Discard the body of the previous request.
            let k = conn.skip.min((conn.buf.len() - *pos) as u64);
            *pos += k as usize;
            conn.skip -= k;
            if conn.skip > 0 {
                return Action::Continue;
            }
            let (req, consumed) = match parse_request(&conn.buf[*pos..]) {
                Ok(None) => return Action::Continue,
                Err(e) => return self.error(e, out),
                Ok(Some(r)) => r,
            };
            if req.transfer_encoding {
                self.errors += 1;
                let body = b"Transfer-Encoding is not supported\n";
                write_response(out, 501, false, &[], body, false);
                return Action::Close;
            }
            conn.served += 1;
            let keep_alive = req.keep_alive
                && !conn.draining
                && (self.keepalive_requests == 0 || conn.served < self.keepalive_requests);
            let head_only = req.method == "HEAD";
            if req.method == "GET" || head_only {
                self.spin();
                self.requests += 1;
                write_response(out, 200, keep_alive, &[], &self.body, head_only);
            } else {
                self.errors += 1;
                let body = b"only GET and HEAD are supported\n";
                write_response(out, 405, keep_alive, &["Allow: GET, HEAD"], body, false);
            }
            conn.skip = req.content_length;
            *pos += consumed;
            if !keep_alive {
                return Action::Close;
            }
        }
    }

    fn error(&mut self, e: ParseError, out: &mut Vec<u8>) -> Action {
        self.errors += 1;
        let body = format!("{e}\n");
        write_response(out, e.status(), false, &[], body.as_bytes(), false);
        Action::Close
    }
}

impl Handler for Hello {
    type Conn = HttpConn;

    fn on_connect(&mut self, _fd: BorrowedFd<'_>) -> HttpConn {
        self.maybe_stall();
        HttpConn::default()
    }

    fn on_data(&mut self, conn: &mut HttpConn, input: &[u8], out: &mut Vec<u8>) -> Action {
        self.maybe_stall();
        conn.buf.extend_from_slice(input);
        // Parse at an offset and compact once, so a read full of pipelined requests
        // costs linear time.
        let mut pos = 0;
        let action = self.handle_requests(conn, &mut pos, out);
        conn.buf.drain(..pos);
        action
    }

    fn on_shutdown(&mut self, conn: &mut HttpConn, _out: &mut Vec<u8>) -> Action {
        conn.draining = true;
        if conn.buf.is_empty() && conn.skip == 0 {
            // Between requests: close now.
            Action::Close
        } else {
            // Mid-request: answer it (with Connection: close), then close.
            Action::Continue
        }
    }
}

fn main() -> ExitCode {
    common::main(PROG, |cli: &Cli| {
        // Read before the sockets are taken: that unsets $LISTEN_*.
        let env: String = cli
            .show_env
            .iter()
            .map(|k| format!(" {k}={}", std::env::var(k).unwrap_or_default()))
            .collect();
        let hello = Hello {
            body: format!(
                "instance={} pid={}{env}\n",
                common::instance_label(),
                std::process::id()
            )
            .into_bytes(),
            work: Duration::from_micros(cli.work_us),
            requests: 0,
            errors: 0,
            stall: cli
                .stall
                .filter(|s| s.instance.is_none() || s.instance == instance_index())
                .map(|s| (Instant::now() + s.after, s.duration)),
            keepalive_requests: cli.keepalive_requests,
        };
        common::serve(PROG, &cli.common, &[SocketKind::Stream], hello, |hello| {
            format!(" requests={} errors={}", hello.requests, hello.errors)
        })
    })
}
