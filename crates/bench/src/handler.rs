//! The request handler all models share: the `distribute-hello` protocol.
//!
//! `GET`/`HEAD` get `200 OK` with the body `instance=LABEL pid=ID\n` after a
//! busy-spin of `work` (the simulated CPU cost of a request); anything else gets
//! `405`, malformed requests `400` and a closed connection. `ID` is the process
//! id, or the thread id for models whose workers are threads, so the load
//! generator can count per-worker shares.

use distribute_instance::http::{parse_request, write_response};
use std::time::{Duration, Instant};

/// Per-worker handler state.
pub struct Hello {
    body: Vec<u8>,
    work: Duration,
    /// Requests answered with 200.
    pub requests: u64,
}

/// Per-connection state: received bytes not parsed yet, body bytes to skip.
#[derive(Default)]
pub struct Conn {
    buf: Vec<u8>,
    skip: u64,
}

impl Hello {
    /// A handler answering `instance=label pid=id`.
    pub fn new(label: &str, id: u32, work: Duration) -> Hello {
        Hello {
            body: format!("instance={label} pid={id}\n").into_bytes(),
            work,
            requests: 0,
        }
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

    /// Feeds received bytes, appends responses to `out`; false when the
    /// connection must be closed once `out` is written.
    pub fn on_data(&mut self, conn: &mut Conn, input: &[u8], out: &mut Vec<u8>) -> bool {
        conn.buf.extend_from_slice(input);
        let mut pos = 0;
        let keep = loop {
            let k = conn.skip.min((conn.buf.len() - pos) as u64);
            pos += k as usize;
            conn.skip -= k;
            if conn.skip > 0 {
                break true;
            }
            let (req, consumed) = match parse_request(&conn.buf[pos..]) {
                Ok(None) => break true,
                Err(e) => {
                    let body = format!("{e}\n");
                    write_response(out, e.status(), false, &[], body.as_bytes(), false);
                    break false;
                }
                Ok(Some(r)) => r,
            };
            if req.transfer_encoding {
                write_response(
                    out,
                    501,
                    false,
                    &[],
                    b"Transfer-Encoding is not supported\n",
                    false,
                );
                break false;
            }
            let head_only = req.method == "HEAD";
            if req.method == "GET" || head_only {
                self.spin();
                self.requests += 1;
                write_response(out, 200, req.keep_alive, &[], &self.body, head_only);
            } else {
                let body = b"only GET and HEAD are supported\n";
                write_response(out, 405, req.keep_alive, &["Allow: GET, HEAD"], body, false);
            }
            conn.skip = req.content_length;
            pos += consumed;
            if !req.keep_alive {
                break false;
            }
        };
        conn.buf.drain(..pos);
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_like_distribute_hello() {
        let mut h = Hello::new("3", 42, Duration::ZERO);
        let mut c = Conn::default();
        let mut out = Vec::new();
        assert!(h.on_data(&mut c, b"GET / HTTP/1.1\r\nHo", &mut out));
        assert!(out.is_empty());
        assert!(!h.on_data(
            &mut c,
            b"st: x\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            &mut out
        ));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("instance=3 pid=42\n").count(), 2, "{text}");
        assert!(text.ends_with("Connection: close\r\n\r\ninstance=3 pid=42\n"));
    }

    #[test]
    fn close_after_http10_and_errors() {
        let mut h = Hello::new("?", 1, Duration::ZERO);
        let mut out = Vec::new();
        assert!(!h.on_data(&mut Conn::default(), b"GET / HTTP/1.0\r\n\r\n", &mut out));
        out.clear();
        assert!(!h.on_data(&mut Conn::default(), b"garbage\r\n\r\n", &mut out));
        assert!(out.starts_with(b"HTTP/1.1 400"));
    }
}
