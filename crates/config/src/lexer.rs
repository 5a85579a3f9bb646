//! Unit-file lexer: text → `(section, line, key, value)` assignments.
//!
//! Follows systemd's `config_parse()` (src/shared/conf-parser.c) where it matters to
//! people who copy snippets from real unit files:
//!
//! * comment lines start with `#` or `;` after optional whitespace; they are skipped
//!   everywhere, also in the middle of a continued line (so a commented-out line inside
//!   a continuation does not end it);
//! * a line ending in an odd number of backslashes continues on the next line; the
//!   backslash becomes a space and the next line is appended as is;
//! * an empty line ends a continuation; so does the end of the file;
//! * keys and values are trimmed of spaces and tabs (not of other Unicode whitespace);
//! * sections named `X-…` are extensions and ignored, like systemd does.
//!
//! Unlike systemd, which warns and goes on, everything questionable is an error here:
//! the activator should not start a half-understood config.

use std::path::Path;

use crate::error::ConfigError;

/// What systemd calls `WHITESPACE` minus the newline, which cannot occur inside a line.
const WS: &[char] = &[' ', '\t', '\r'];

/// The sections this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// `[Unit]`: `Description=`, `Documentation=`; ordering and dependencies are ignored.
    Unit,
    /// `[Socket]`.
    Socket,
    /// `[Service]`.
    Service,
    /// `[Install]`: ignored (the daemon's own unit is what gets enabled).
    Install,
}

impl Section {
    /// The section as written in a file, e.g. `[Socket]`.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Section::Unit => "[Unit]",
            Section::Socket => "[Socket]",
            Section::Service => "[Service]",
            Section::Install => "[Install]",
        }
    }
}

/// One `Key=Value` line (after joining continuations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// Section the assignment is in.
    pub section: Section,
    /// 1-based line the assignment starts on.
    pub line: usize,
    /// Key, trimmed.
    pub key: String,
    /// Value, trimmed; empty means "reset".
    pub value: String,
}

/// Where the lexer currently is.
#[derive(Clone, Copy)]
enum State {
    /// Before the first section header.
    NoSection,
    /// In a section we parse.
    In(Section),
    /// In an `X-…` extension section: its lines are ignored.
    Ignored,
}

/// Splits `text` (the contents of `file`) into assignments.
pub(crate) fn lex(file: &Path, text: &str) -> Result<Vec<Assignment>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut state = State::NoSection;
    // (line the logical line starts on, text so far)
    let mut continuation: Option<(usize, String)> = None;

    for (index, raw) in text.split('\n').enumerate() {
        let lineno = index + 1;
        // CRLF files happen (edited on other systems); treat them like systemd's read_line().
        let raw = raw.strip_suffix('\r').unwrap_or(raw);

        let trimmed = raw.trim_start_matches(WS);
        if trimmed.starts_with(['#', ';']) {
            continue;
        }
        if let Some(c) = raw.chars().find(|&c| c.is_control() && c != '\t') {
            // A NUL or escape sequence cannot be passed on over D-Bus or shown sanely.
            return Err(ConfigError::line(
                file,
                lineno,
                format!("line contains the control character U+{:04X}", c as u32),
            ));
        }

        let (start, mut logical) = match continuation.take() {
            Some((start, mut so_far)) => {
                so_far.push_str(raw);
                (start, so_far)
            }
            None => (lineno, raw.to_string()),
        };
        if ends_in_unescaped_backslash(&logical) {
            logical.pop();
            logical.push(' ');
            continuation = Some((start, logical));
            continue;
        }
        line(file, start, &logical, &mut state, &mut out)?;
    }
    if let Some((start, logical)) = continuation {
        line(file, start, &logical, &mut state, &mut out)?;
    }
    Ok(out)
}

/// True if `s` ends in an odd number of backslashes, i.e. the last one is not escaped.
fn ends_in_unescaped_backslash(s: &str) -> bool {
    s.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// Handles one logical line.
fn line(
    file: &Path,
    lineno: usize,
    text: &str,
    state: &mut State,
    out: &mut Vec<Assignment>,
) -> Result<(), ConfigError> {
    let text = text.trim_matches(WS);
    if text.is_empty() {
        return Ok(());
    }

    if let Some(rest) = text.strip_prefix('[') {
        let Some(name) = rest.strip_suffix(']') else {
            return Err(ConfigError::line(
                file,
                lineno,
                format!("invalid section header \"{text}\": expected [Socket], [Service], [Unit] or [Install]"),
            ));
        };
        *state = section(file, lineno, name)?;
        return Ok(());
    }

    let Some((key, value)) = text.split_once('=') else {
        return Err(ConfigError::line(
            file,
            lineno,
            format!("missing \"=\" in \"{text}\": expected Key=Value"),
        ));
    };
    let key = key.trim_matches(WS);
    let value = value.trim_matches(WS);
    if key.is_empty() {
        return Err(ConfigError::line(
            file,
            lineno,
            format!("missing key before \"=\" in \"{text}\""),
        ));
    }

    match *state {
        State::NoSection => Err(ConfigError::assignment(
            file,
            lineno,
            key,
            value,
            "assignment outside of a section: put it under [Socket] or [Service]",
        )),
        State::Ignored => Ok(()),
        State::In(section) => {
            out.push(Assignment {
                section,
                line: lineno,
                key: key.to_string(),
                value: value.to_string(),
            });
            Ok(())
        }
    }
}

/// Maps a section name (between the brackets) to the lexer state it starts.
fn section(file: &Path, lineno: usize, name: &str) -> Result<State, ConfigError> {
    match name {
        "Unit" => return Ok(State::In(Section::Unit)),
        "Socket" => return Ok(State::In(Section::Socket)),
        "Service" => return Ok(State::In(Section::Service)),
        "Install" => return Ok(State::In(Section::Install)),
        _ if name.starts_with("X-") => return Ok(State::Ignored),
        _ => {}
    }
    let hint = match name {
        _ if name.eq_ignore_ascii_case("Socket") => {
            format!("unknown section [{name}]: did you mean [Socket]? (names are case-sensitive)")
        }
        _ if name.eq_ignore_ascii_case("Service") => {
            format!("unknown section [{name}]: did you mean [Service]? (names are case-sensitive)")
        }
        _ if name.eq_ignore_ascii_case("Unit") => {
            format!("unknown section [{name}]: did you mean [Unit]? (names are case-sensitive)")
        }
        _ if name.eq_ignore_ascii_case("Install") => {
            format!("unknown section [{name}]: did you mean [Install]? (names are case-sensitive)")
        }
        _ => format!(
            "unknown section [{name}]: valid sections are [Unit], [Socket], [Service] and \
             [Install]"
        ),
    };
    Err(ConfigError::line(file, lineno, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(section, line, key, value)`.
    type Lexed = (Section, usize, String, String);

    fn lex_ok(text: &str) -> Vec<Lexed> {
        lex(Path::new("t.socket"), text)
            .unwrap()
            .into_iter()
            .map(|a| (a.section, a.line, a.key, a.value))
            .collect()
    }

    fn lex_err(text: &str) -> String {
        lex(Path::new("t.socket"), text).unwrap_err().to_string()
    }

    fn a(section: Section, line: usize, key: &str, value: &str) -> Lexed {
        (section, line, key.to_string(), value.to_string())
    }

    #[test]
    fn basics() {
        use Section::*;
        let cases: &[(&str, Vec<Lexed>)] = &[
            ("", vec![]),
            ("\n\n", vec![]),
            ("[Socket]\nA=b\n", vec![a(Socket, 2, "A", "b")]),
            // whitespace around key and value is trimmed, inner whitespace kept
            (
                "[Socket]\n  A  =  b  c \t\n",
                vec![a(Socket, 2, "A", "b  c")],
            ),
            // only the first '=' separates
            (
                "[Service]\nEnvironment=A=b\n",
                vec![a(Service, 2, "Environment", "A=b")],
            ),
            // empty value: reset
            ("[Socket]\nA=\n", vec![a(Socket, 2, "A", "")]),
            // comments, also indented
            (
                "# c\n[Socket]\n; c\n  # c\nA=b # not a comment\n",
                vec![a(Socket, 5, "A", "b # not a comment")],
            ),
            // continuation: backslash becomes a space, next line appended as is
            ("[Socket]\nA=b \\\n  c\n", vec![a(Socket, 2, "A", "b    c")]),
            ("[Socket]\nA=b\\\nc\n", vec![a(Socket, 2, "A", "b c")]),
            // comment lines inside a continuation are skipped
            (
                "[Socket]\nA=b \\\n# x\n; y \\\n c\nD=e\n",
                vec![a(Socket, 2, "A", "b   c"), a(Socket, 6, "D", "e")],
            ),
            // an empty line ends a continuation
            (
                "[Socket]\nA=b \\\n\nD=e\n",
                vec![a(Socket, 2, "A", "b"), a(Socket, 4, "D", "e")],
            ),
            // continuation at end of file
            ("[Socket]\nA=b \\", vec![a(Socket, 2, "A", "b")]),
            // escaped backslash at the end is not a continuation
            (
                "[Socket]\nA=b\\\\\nD=e\n",
                vec![a(Socket, 2, "A", "b\\\\"), a(Socket, 3, "D", "e")],
            ),
            // a commented line ending in a backslash continues nothing
            ("[Socket]\n# x \\\nA=b\n", vec![a(Socket, 3, "A", "b")]),
            // CRLF and BOM
            ("\u{feff}[Socket]\r\nA=b\r\n", vec![a(Socket, 2, "A", "b")]),
            // sections switch, X- sections are ignored
            (
                "[Socket]\nA=b\n[X-Mine]\nWhatever=1\n[Service]\nC=d\n",
                vec![a(Socket, 2, "A", "b"), a(Service, 6, "C", "d")],
            ),
            // repeated sections are fine
            (
                "[Socket]\nA=1\n[Service]\nB=2\n[Socket]\nC=3\n",
                vec![
                    a(Socket, 2, "A", "1"),
                    a(Service, 4, "B", "2"),
                    a(Socket, 6, "C", "3"),
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&lex_ok(text), want, "input {text:?}");
        }
    }

    #[test]
    fn errors() {
        let cases = [
            ("A=b\n", "t.socket:1: A=b: assignment outside of a section: put it under [Socket] or [Service]"),
            ("[Socket]\nfoo\n", "t.socket:2: missing \"=\" in \"foo\": expected Key=Value"),
            ("[Socket]\n=foo\n", "t.socket:2: missing key before \"=\" in \"=foo\""),
            ("[Socket\n", "t.socket:1: invalid section header \"[Socket\": expected [Socket], [Service], [Unit] or [Install]"),
            ("[Sockets]\n", "t.socket:1: unknown section [Sockets]: valid sections are [Unit], [Socket], [Service] and [Install]"),
            ("[socket]\n", "t.socket:1: unknown section [socket]: did you mean [Socket]? (names are case-sensitive)"),
            ("[unit]\n", "t.socket:1: unknown section [unit]: did you mean [Unit]? (names are case-sensitive)"),
            ("[Socket]\nA=\u{7}\n", "t.socket:2: line contains the control character U+0007"),
            ("[Socket]\nA=b\rc\n", "t.socket:2: line contains the control character U+000D"),
            // the error is reported on the line the assignment starts on
            ("[Socket]\nA \\\nb\n", "t.socket:2: missing \"=\" in \"A  b\": expected Key=Value"),
        ];
        for (text, want) in cases {
            assert_eq!(lex_err(text), want, "input {text:?}");
        }
    }
}
