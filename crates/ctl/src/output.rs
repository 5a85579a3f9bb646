//! Text output: colours (systemd's rules), the `list` table, the `status` view.

use crate::bus::{SocketStatus, SocketSummary};
use std::fmt::Write;

/// Whether to colour output, decided like systemd's `colors_enabled()`:
/// `SYSTEMD_COLORS` (a boolean, or `16`/`256`/`24bit`) wins; otherwise
/// `NO_COLOR` (set at all) turns colour off; otherwise colour when stdout is a
/// terminal and `TERM` is not `dumb`.
pub fn colors_enabled(env: impl Fn(&str) -> Option<String>, stdout_is_tty: bool) -> bool {
    if let Some(v) = env("SYSTEMD_COLORS") {
        match v.to_ascii_lowercase().as_str() {
            "1" | "yes" | "y" | "true" | "t" | "on" | "16" | "256" | "24bit" => return true,
            "0" | "no" | "n" | "false" | "f" | "off" => return false,
            _ => {} // unparsable: ignored, as systemd does
        }
    }
    if env("NO_COLOR").is_some() {
        return false;
    }
    stdout_is_tty && env("TERM").as_deref() != Some("dumb")
}

/// Whether the locale is UTF-8 (for the `●` glyph), like systemd's `is_locale_utf8()`.
pub fn locale_is_utf8(env: impl Fn(&str) -> Option<String>) -> bool {
    let locale = ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| env(k).filter(|v| !v.is_empty()));
    match locale {
        Some(l) => {
            let l = l.to_ascii_lowercase();
            l.contains("utf-8") || l.contains("utf8")
        }
        // systemd assumes UTF-8 on an unset locale too (C.UTF-8 is its default).
        None => true,
    }
}

/// Terminal styling, a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Emit ANSI sequences.
    pub color: bool,
    /// Use `●` rather than `*`.
    pub utf8: bool,
}

const GREEN: &str = "\x1b[0;1;32m";
const RED: &str = "\x1b[0;1;31m";
const YELLOW: &str = "\x1b[0;1;33m";
const BOLD: &str = "\x1b[1m";
const GREY: &str = "\x1b[0;38;5;245m";
const NORMAL: &str = "\x1b[0m";

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color && !s.is_empty() {
            format!("{code}{s}{NORMAL}")
        } else {
            s.to_string()
        }
    }

    fn bullet(&self) -> &'static str {
        if self.utf8 {
            "●"
        } else {
            "*"
        }
    }

    /// Colours an instance or socket state.
    fn state(&self, state: &str) -> String {
        match state {
            "running" | "serving" => self.paint(GREEN, state),
            "failed" => self.paint(RED, state),
            "backoff" | "draining" | "starting" => self.paint(YELLOW, state),
            "stuck" => self.paint(RED, state),
            _ => state.to_string(),
        }
    }
}

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A plain-text table; cells are measured before they are coloured.
struct Table {
    header: Vec<(&'static str, Align)>,
    rows: Vec<Vec<(String, Option<String>)>>,
}

impl Table {
    fn new(header: Vec<(&'static str, Align)>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// A row of (plain text, coloured text if different).
    fn push(&mut self, row: Vec<(String, Option<String>)>) {
        self.rows.push(row);
    }

    fn render(&self, indent: &str, legend: bool, style: &Style) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self
            .header
            .iter()
            .map(|(h, _)| if legend { h.chars().count() } else { 0 })
            .collect();
        for row in &self.rows {
            for (i, (plain, _)) in row.iter().enumerate() {
                widths[i] = widths[i].max(plain.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<(String, String)>| {
            let mut l = String::from(indent);
            for (i, (plain, shown)) in cells.iter().enumerate() {
                let pad = widths[i] - plain.chars().count();
                let last = i + 1 == n;
                match self.header[i].1 {
                    Align::Left if last => l.push_str(shown),
                    Align::Left => {
                        l.push_str(shown);
                        l.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        l.push_str(&" ".repeat(pad));
                        l.push_str(shown);
                    }
                }
                if !last {
                    l.push_str("  ");
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        if legend {
            line(
                self.header
                    .iter()
                    .map(|(h, _)| (h.to_string(), style.paint(BOLD, h)))
                    .collect(),
            );
        }
        for row in &self.rows {
            line(
                row.iter()
                    .map(|(p, c)| (p.clone(), c.clone().unwrap_or_else(|| p.clone())))
                    .collect(),
            );
        }
        out
    }
}

fn plain(s: impl Into<String>) -> (String, Option<String>) {
    (s.into(), None)
}

/// `distributectl list`.
pub fn format_list(sockets: &[SocketSummary], legend: bool, style: &Style) -> String {
    let mut t = Table::new(vec![
        ("SOCKET", Align::Left),
        ("STATE", Align::Left),
        ("N", Align::Right),
        ("RUNNING", Align::Right),
        ("LISTEN", Align::Left),
    ]);
    for s in sockets {
        t.push(vec![
            plain(&s.name),
            (s.state.clone(), Some(style.state(&s.state))),
            plain(s.distribute.to_string()),
            plain(s.running.to_string()),
            plain(s.listen.join(" ")),
        ]);
    }
    let mut out = if sockets.is_empty() && legend {
        String::new()
    } else {
        t.render("", legend, style)
    };
    if legend {
        if !sockets.is_empty() {
            out.push('\n');
        }
        let n = sockets.len();
        let _ = writeln!(out, "{n} socket{} listed.", if n == 1 { "" } else { "s" });
    }
    out
}

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `since 12:03:04 UTC, 3.2s ago` for a time in µs since the epoch.
pub fn since(usec: u64, now_usec: u64) -> String {
    let secs = usec / 1_000_000;
    let day = secs % 86_400;
    let ago = now_usec.saturating_sub(usec) as f64 / 1e6;
    let ago = if ago < 10.0 {
        format!("{ago:.1}s")
    } else if ago < 3600.0 {
        format!("{}min {}s", ago as u64 / 60, ago as u64 % 60)
    } else {
        format!("{}h {}min", ago as u64 / 3600, ago as u64 % 3600 / 60)
    };
    format!(
        "since {:02}:{:02}:{:02} UTC, {ago} ago",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// `distributectl status NAME`: a systemctl-status-like view.
pub fn format_status(s: &SocketStatus, legend: bool, style: &Style) -> String {
    let running = s
        .instances
        .iter()
        .filter(|i| i.state == "running" || i.state == "stuck")
        .count();
    let troubled = s
        .instances
        .iter()
        .any(|i| i.state == "failed" || i.state == "backoff" || i.state == "stuck");
    let bullet = match s.state.as_str() {
        "failed" => style.paint(RED, style.bullet()),
        _ if troubled || s.state != "serving" => style.paint(YELLOW, style.bullet()),
        _ if running > 0 => style.paint(GREEN, style.bullet()),
        _ => style.bullet().to_string(),
    };
    let mut out = String::new();
    // Like systemctl status: the description, if the config has one.
    let description = if s.description.is_empty() {
        format!("Distribute={} socket config", s.distribute)
    } else {
        s.description.clone()
    };
    let _ = writeln!(out, "{bullet} {} - {description}", s.name);
    let field = |out: &mut String, label: &str, values: &[String]| {
        for (i, v) in values.iter().enumerate() {
            let label = if i == 0 {
                format!("{label}:")
            } else {
                String::new()
            };
            let _ = writeln!(out, "{label:>12} {v}");
        }
    };
    field(&mut out, "Listen", &s.listen);
    let failed = s.instances.iter().filter(|i| i.state == "failed").count();
    let stuck = s.instances.iter().filter(|i| i.state == "stuck").count();
    let mut counts = format!("{running} running");
    if stuck > 0 {
        counts.push_str(&format!(
            ", {}",
            style.paint(RED, &format!("{stuck} stuck"))
        ));
    }
    if failed > 0 {
        counts.push_str(&format!(
            ", {}",
            style.paint(RED, &format!("{failed} failed"))
        ));
    }
    field(
        &mut out,
        "Distribute",
        &[format!("{} ({counts})", s.distribute)],
    );
    // The instances' own names: `Service=app@shop-%i.service` makes them
    // app@shop-0.service, ….
    let service = match (s.instances.first(), s.instances.last()) {
        (Some(first), Some(last)) if first.unit != last.unit => {
            format!("{} … {}", first.unit, last.unit)
        }
        (Some(only), _) => only.unit.clone(),
        _ => format!("{}@.service", s.service),
    };
    field(&mut out, "Service", &[service]);
    match s.mode.as_str() {
        "" => {}
        "template" => field(&mut out, "Mode", &[format!("template ({})", s.unit_file)]),
        mode => field(
            &mut out,
            "Mode",
            &[format!("{mode} (built from [Service])")],
        ),
    }
    field(&mut out, "State", &[style.state(&s.state)]);
    if !s.error.is_empty() {
        field(&mut out, "Error", &[style.paint(RED, &s.error)]);
    }
    field(&mut out, "Source", &s.sources);
    if !s.instances.is_empty() {
        out.push('\n');
        let mut t = Table::new(vec![
            ("UNIT", Align::Left),
            ("STATE", Align::Left),
            ("PID", Align::Right),
            ("QUEUE", Align::Right),
            ("ACTIVATIONS", Align::Right),
            ("FAILURES", Align::Right),
            ("REASON", Align::Left),
        ]);
        for i in &s.instances {
            let pid = if i.main_pid == 0 {
                "-".to_string()
            } else {
                i.main_pid.to_string()
            };
            let failures = i.failures.to_string();
            let failures_shown = (i.failures > 0).then(|| style.paint(RED, &failures));
            t.push(vec![
                plain(&i.unit),
                (i.state.clone(), Some(style.state(&i.state))),
                plain(pid),
                plain(i.queue_depth.to_string()),
                plain(i.activations.to_string()),
                (failures, failures_shown),
                {
                    let reason = if i.stuck_since_usec != 0 {
                        format!("{}: {}", since(i.stuck_since_usec, now_usec()), i.reason)
                    } else {
                        i.reason.clone()
                    };
                    let painted = style.paint(GREY, &reason);
                    (reason, Some(painted))
                },
            ]);
        }
        out.push_str(&t.render("  ", legend, style));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use distribute_dbus::{socket_path, Instance, InstanceInfo, SocketInfo};
    use std::collections::HashMap;

    const PLAIN: Style = Style {
        color: false,
        utf8: true,
    };

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn colour_rules_follow_systemd() {
        assert!(colors_enabled(env(&[("TERM", "xterm")]), true));
        assert!(!colors_enabled(env(&[("TERM", "xterm")]), false));
        assert!(!colors_enabled(env(&[("TERM", "dumb")]), true));
        assert!(!colors_enabled(env(&[("NO_COLOR", "")]), true));
        assert!(!colors_enabled(env(&[("NO_COLOR", "1")]), true));
        assert!(colors_enabled(env(&[("SYSTEMD_COLORS", "1")]), false));
        assert!(colors_enabled(
            env(&[("SYSTEMD_COLORS", "256"), ("NO_COLOR", "1")]),
            false
        ));
        assert!(!colors_enabled(env(&[("SYSTEMD_COLORS", "no")]), true));
        assert!(colors_enabled(env(&[("SYSTEMD_COLORS", "bogus")]), true));
    }

    #[test]
    fn utf8_locale() {
        assert!(locale_is_utf8(env(&[("LANG", "en_US.UTF-8")])));
        assert!(!locale_is_utf8(env(&[
            ("LC_ALL", "C"),
            ("LANG", "en_US.UTF-8")
        ])));
        assert!(locale_is_utf8(env(&[])));
    }

    fn fixture() -> SocketStatus {
        let inst =
            |index: u32, state: &str, pid: u32, act: u64, fail: u64, q: u32, reason: &str| {
                InstanceInfo {
                    instance: Instance {
                        index,
                        unit: format!("web@{index}.service"),
                        state: state.into(),
                        main_pid: pid,
                        activations: act,
                        failures: fail,
                        queue_depth: q,
                        reason: reason.into(),
                    },
                    stuck_since_usec: 0,
                }
            };
        SocketStatus {
            path: "/org/distribute1/socket/web".into(),
            info: SocketInfo {
                name: "web".into(),
                listen: vec![
                    "ListenStream=127.0.0.1:8080".into(),
                    "ListenStream=[::1]:8080".into(),
                ],
                distribute: 3,
                service: "web".into(),
                state: "serving".into(),
                sources: vec![
                    "/etc/systemd/distribute/web.socket".into(),
                    "/etc/systemd/distribute/web.socket.d/10-mem.conf".into(),
                ],
                mode: "transient".into(),
                instances: vec![
                    inst(0, "running", 1234, 12, 0, 0, ""),
                    inst(1, "listening", 0, 3, 0, 2, ""),
                    inst(2, "failed", 0, 1, 5, 17, "exit-code 1, 5 times in a row"),
                ],
                ..Default::default()
            },
        }
    }

    #[test]
    fn status_view() {
        let got = format_status(&fixture(), true, &PLAIN);
        let want = "\
● web - Distribute=3 socket config
     Listen: ListenStream=127.0.0.1:8080
             ListenStream=[::1]:8080
 Distribute: 3 (1 running, 1 failed)
    Service: web@0.service … web@2.service
       Mode: transient (built from [Service])
      State: serving
     Source: /etc/systemd/distribute/web.socket
             /etc/systemd/distribute/web.socket.d/10-mem.conf

  UNIT           STATE       PID  QUEUE  ACTIVATIONS  FAILURES  REASON
  web@0.service  running    1234      0           12         0
  web@1.service  listening     -      2            3         0
  web@2.service  failed        -     17            1         5  exit-code 1, 5 times in a row
";
        assert_eq!(got, want, "\n{got}");
    }

    #[test]
    fn status_header_shows_the_description() {
        let mut s = fixture();
        s.info.description = "Web front end".into();
        let got = format_status(&s, true, &PLAIN);
        assert!(
            got.lines()
                .next()
                .unwrap()
                .ends_with(" web - Web front end"),
            "{got}"
        );
    }

    #[test]
    fn status_colours_do_not_break_alignment() {
        let colored = Style {
            color: true,
            utf8: false,
        };
        let got = format_status(&fixture(), true, &colored);
        assert!(got.starts_with("\x1b[0;1;33m*\x1b[0m web"), "{got:?}");
        let stripped = strip_ansi(&got);
        assert_eq!(
            stripped,
            format_status(&fixture(), true, &PLAIN).replacen('●', "*", 1)
        );
    }

    fn strip_ansi(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn list_table() {
        let rows = vec![
            SocketSummary {
                name: "web".into(),
                path: socket_path("web"),
                listen: vec!["ListenStream=8080".into()],
                distribute: 4,
                running: 2,
                state: "serving".into(),
            },
            SocketSummary {
                name: "dns-udp".into(),
                path: socket_path("dns-udp"),
                listen: vec!["ListenDatagram=53".into(), "ListenStream=53".into()],
                distribute: 12,
                running: 0,
                state: "failed".into(),
            },
        ];
        let got = format_list(&rows, true, &PLAIN);
        let want = "\
SOCKET   STATE     N  RUNNING  LISTEN
web      serving   4        2  ListenStream=8080
dns-udp  failed   12        0  ListenDatagram=53 ListenStream=53

2 sockets listed.
";
        assert_eq!(got, want, "\n{got}");
        let got = format_list(&rows[..1], false, &PLAIN);
        assert_eq!(got, "web  serving  4  2  ListenStream=8080\n");
        assert_eq!(format_list(&[], true, &PLAIN), "0 sockets listed.\n");
    }

    #[test]
    fn stuck_since_reads_as_clock_time_and_age() {
        // 2023-11-14 22:13:20 UTC.
        let t = 1_700_000_000_000_000;
        assert_eq!(since(t, t + 3_200_000), "since 22:13:20 UTC, 3.2s ago");
        assert_eq!(since(t, t + 95_000_000), "since 22:13:20 UTC, 1min 35s ago");
    }
}
