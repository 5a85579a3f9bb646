//! A minimal HTTP/1.x request-head parser and response writer.
//!
//! Enough for a demo and benchmark target: request line and headers up to the blank
//! line, `Connection` (keep-alive rules of HTTP/1.0 and 1.1), `Content-Length` and
//! `Transfer-Encoding` detection. Parsing is incremental: call [`parse_request`] on
//! the bytes received so far until it returns a request.

use std::fmt;

/// Largest accepted request head (request line + headers + blank line).
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The request target, e.g. `/index.html`.
    pub target: &'a str,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1 (and later 1.x).
    pub minor: u8,
    /// Whether the connection stays open after the response: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// The `Content-Length` (0 when absent): body bytes that follow the head.
    pub content_length: u64,
    /// A `Transfer-Encoding` header is present (the body length is not known
    /// from the head alone; this parser does not decode chunked bodies).
    pub transfer_encoding: bool,
}

/// Why a request head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a valid HTTP/1.x request head (answer 400).
    Malformed(&'static str),
    /// A well-formed version other than HTTP/1.x (answer 505).
    VersionNotSupported,
    /// The head is longer than [`MAX_HEAD`] (answer 431).
    TooLarge,
}

impl ParseError {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::Malformed(_) => 400,
            ParseError::VersionNotSupported => 505,
            ParseError::TooLarge => 431,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(why) => write!(f, "malformed request: {why}"),
            ParseError::VersionNotSupported => f.write_str("HTTP version not supported"),
            ParseError::TooLarge => f.write_str("request head too large"),
        }
    }
}

impl std::error::Error for ParseError {}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

fn find_crlfcrlf(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` if the head is not complete yet, or `Ok(Some((request,
/// consumed)))` where `consumed` is the length of the head including the blank line
/// (and any empty lines before the request line, which RFC 9112 says to ignore).
/// Any body (`content_length` bytes) follows at `buf[consumed..]`. Errors are
/// reported as soon as they are certain, even before the head is complete.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, ParseError> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let rest = &buf[start..];
    // Control characters other than HTAB, CR, LF never occur in a request head;
    // a bare LF is not accepted either. Check what we have so garbage is rejected
    // without waiting for a blank line.
    let end = find_crlfcrlf(rest);
    let scan = match end {
        Some(e) => &rest[..e + 4],
        None => rest,
    };
    for (i, &b) in scan.iter().enumerate() {
        let bad_ctl = (b < 0x20 && b != b'\t' && b != b'\r' && b != b'\n') || b == 0x7f;
        let bare_lf = b == b'\n' && (i == 0 || scan[i - 1] != b'\r');
        let bare_cr = b == b'\r' && i + 1 < scan.len() && scan[i + 1] != b'\n';
        if bad_ctl || bare_lf || bare_cr {
            return Err(ParseError::Malformed("control character in request head"));
        }
    }
    // The request line can be checked as soon as it is complete; before that at
    // least its method must look like a token.
    let first_line_end = rest.windows(2).position(|w| w == b"\r\n");
    let partial_line = &rest[..first_line_end.unwrap_or(rest.len())];
    let method_part = partial_line.split(|&b| b == b' ').next().unwrap_or(b"");
    if !method_part.iter().all(|&b| is_tchar(b))
        || (method_part.len() < partial_line.len() && method_part.is_empty())
    {
        return Err(ParseError::Malformed("invalid method"));
    }
    let Some(end) = end else {
        if rest.len() > MAX_HEAD {
            return Err(ParseError::TooLarge);
        }
        if let Some(le) = first_line_end {
            parse_request_line(&rest[..le])?;
        }
        return Ok(None);
    };
    if end + 4 > MAX_HEAD {
        return Err(ParseError::TooLarge);
    }
    let head = &rest[..end];
    // The whole head is printable ASCII, HTAB, CRLF or obs-text; request-line and
    // header names are checked to be ASCII below, values may carry obs-text.
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or(b"");
    let (method, target, minor) = parse_request_line(request_line)?;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    for line in lines {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(ParseError::Malformed("obsolete header line folding"));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError::Malformed("header line without colon"))?;
        let name = &line[..colon];
        if !is_token(name) {
            return Err(ParseError::Malformed("invalid header name"));
        }
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"connection") {
            for opt in value.split(|&b| b == b',') {
                let opt = opt.trim_ascii();
                if opt.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // Only digits; a repeated header must agree (RFC 9112 §6.3).
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(ParseError::Malformed("invalid Content-Length"));
            }
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ParseError::Malformed("invalid Content-Length"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(ParseError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
        }
    }
    if transfer_encoding && content_length.is_some() {
        return Err(ParseError::Malformed(
            "both Transfer-Encoding and Content-Length",
        ));
    }
    let keep_alive = !close && (minor >= 1 || keep_alive_token);
    Ok(Some((
        Request {
            method,
            target,
            minor,
            keep_alive,
            content_length: content_length.unwrap_or(0),
            transfer_encoding,
        },
        start + end + 4,
    )))
}

fn parse_request_line(line: &[u8]) -> Result<(&str, &str, u8), ParseError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ParseError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if !is_token(method) {
        return Err(ParseError::Malformed("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(ParseError::Malformed("invalid request target"));
    }
    let v = version
        .strip_prefix(b"HTTP/")
        .ok_or(ParseError::Malformed("invalid HTTP version"))?;
    let (major, minor) = match v {
        [ma, b'.', mi] if ma.is_ascii_digit() && mi.is_ascii_digit() => (ma - b'0', mi - b'0'),
        _ => return Err(ParseError::Malformed("invalid HTTP version")),
    };
    if major != 1 {
        return Err(ParseError::VersionNotSupported);
    }
    // All bytes are ASCII here (token, graphic), so these conversions cannot fail.
    let method = std::str::from_utf8(method).map_err(|_| ParseError::Malformed("method"))?;
    let target = std::str::from_utf8(target).map_err(|_| ParseError::Malformed("target"))?;
    Ok((method, target, minor.min(1)))
}

/// The reason phrase for the status codes this module produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends an HTTP/1.1 response to `out`: status line, `Content-Type: text/plain`,
/// `Content-Length`, `Connection: keep-alive` or `Connection: close`, any `extra`
/// header lines (without CRLF), then `body` unless `head_only` (for `HEAD`).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    keep_alive: bool,
    extra: &[&str],
    body: &[u8],
    head_only: bool,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reason_phrase(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for h in extra {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Want {
        Incomplete,
        Ok {
            method: &'static str,
            target: &'static str,
            minor: u8,
            keep_alive: bool,
            content_length: u64,
            te: bool,
            consumed: usize,
        },
        Err(u16),
    }

    fn ok(method: &'static str, minor: u8, keep_alive: bool, consumed: usize) -> Want {
        Want::Ok {
            method,
            target: "/",
            minor,
            keep_alive,
            content_length: 0,
            te: false,
            consumed,
        }
    }

    fn run(input: &[u8]) -> Want {
        match parse_request(input) {
            Ok(None) => Want::Incomplete,
            Ok(Some((r, n))) => Want::Ok {
                method: match r.method {
                    "GET" => "GET",
                    "HEAD" => "HEAD",
                    "POST" => "POST",
                    m => panic!("unexpected method {m}"),
                },
                target: if r.target == "/" { "/" } else { "other" },
                minor: r.minor,
                keep_alive: r.keep_alive,
                content_length: r.content_length,
                te: r.transfer_encoding,
                consumed: n,
            },
            Err(e) => Want::Err(e.status()),
        }
    }

    #[test]
    fn parse_table() {
        let g11 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let cases: Vec<(&[u8], Want)> = vec![
            (b"", Want::Incomplete),
            (b"G", Want::Incomplete),
            (b"GET / HTTP/1.1", Want::Incomplete),
            (b"GET / HTTP/1.1\r\n", Want::Incomplete),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", Want::Incomplete),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r", Want::Incomplete),
            (g11, ok("GET", 1, true, g11.len())),
            (b"GET / HTTP/1.1\r\n\r\n", ok("GET", 1, true, 18)),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", ok("GET", 1, true, 22)),
            (
                b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                ok("GET", 1, true, 18),
            ),
            (
                b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                ok("GET", 1, false, 37),
            ),
            (
                b"GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n",
                ok("GET", 1, false, 49),
            ),
            (b"GET / HTTP/1.0\r\n\r\n", ok("GET", 0, false, 18)),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                ok("GET", 0, true, 42),
            ),
            (
                b"GET / HTTP/1.0\r\nConnection:keep-alive \r\n\r\n",
                ok("GET", 0, true, 42),
            ),
            (b"HEAD / HTTP/1.1\r\n\r\n", ok("HEAD", 1, true, 19)),
            (b"GET / HTTP/1.9\r\n\r\n", ok("GET", 1, true, 18)),
            (
                b"GET /a?b=c HTTP/1.1\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
                Want::Ok {
                    method: "GET",
                    target: "other",
                    minor: 1,
                    keep_alive: true,
                    content_length: 0,
                    te: false,
                    consumed: 37,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
                Want::Ok {
                    method: "POST",
                    target: "/",
                    minor: 1,
                    keep_alive: true,
                    content_length: 5,
                    te: false,
                    consumed: 38,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Want::Ok {
                    method: "POST",
                    target: "/",
                    minor: 1,
                    keep_alive: true,
                    content_length: 5,
                    te: false,
                    consumed: 57,
                },
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Want::Ok {
                    method: "POST",
                    target: "/",
                    minor: 1,
                    keep_alive: true,
                    content_length: 0,
                    te: true,
                    consumed: 47,
                },
            ),
            // Garbage and errors, detected early where possible.
            (b"hello\r\n\r\n", Want::Err(400)),
            (b"hello world\r\n", Want::Err(400)),
            (b"\x16\x03\x01\x02\x00\x01", Want::Err(400)),
            (b"GET\0", Want::Err(400)),
            (b"GE(T / HTTP/1.1", Want::Err(400)),
            (b" GET / HTTP/1.1\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/1.1\n\n", Want::Err(400)),
            (b"GET / HTTP/1.1\rX", Want::Err(400)),
            (b"GET  / HTTP/1.1\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/1.1 x\r\n\r\n", Want::Err(400)),
            (b"GET / FTP/1.1\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/11\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/1.1\r\nHost x\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", Want::Err(400)),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", Want::Err(400)),
            (
                b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Want::Err(400),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                Want::Err(400),
            ),
            (
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                Want::Err(400),
            ),
            (b"GET / HTTP/2.0\r\n\r\n", Want::Err(505)),
            (b"GET / HTTP/2.0\r\n", Want::Err(505)),
        ];
        for (input, want) in cases {
            assert_eq!(run(input), want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_incomplete() {
        let req = b"GET /x HTTP/1.1\r\nHost: example\r\nConnection: keep-alive\r\n\r\n";
        for i in 0..req.len() {
            assert_eq!(parse_request(&req[..i]), Ok(None), "prefix {i}");
        }
        assert!(parse_request(req).unwrap().is_some());
    }

    #[test]
    fn too_large() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_request(&big), Err(ParseError::TooLarge));
    }

    #[test]
    fn response_format() {
        let mut out = Vec::new();
        write_response(&mut out, 200, true, &[], b"hi\n", false);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nhi\n"
        );
        out.clear();
        write_response(&mut out, 405, false, &["Allow: GET, HEAD"], b"no\n", true);
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\n"
        );
    }
}
