//! `cargo xtask man [--check]`: the man pages in `man/`.
//!
//! Without `--check`, renders them to `target/man/*.txt` for review.
//! With `--check` (what CI runs):
//! 1. lints them with `mandoc -T lint` (or `groff -ww -z` where mandoc is missing);
//! 2. checks for drift between the pages and the code:
//!    - every `[Socket]` and `[Service]` key the config parser accepts
//!      (`SOCKET_KEYS`, `service_keys()`) is a tagged entry in the matching
//!      OPTIONS section of distribute.socket(5), and every entry there is a key
//!      the parser accepts;
//!    - every option in `systemd-distribute --help` is a tagged entry under
//!      OPTIONS in systemd-distribute(8), and vice versa;
//!    - every command of `distributectl --help` is a tagged entry under COMMANDS
//!      in distributectl(1) (and vice versa), every option of it and of each
//!      `distributectl COMMAND --help` is documented, and so is every possible
//!      value clap lists.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `[Socket]` keys accepted without being in `SOCKET_KEYS` (compatibility).
const EXTRA_SOCKET_KEYS: &[&str] = &["Accept"];

pub fn run(check: bool) -> Result<()> {
    let dir = crate::root().join("man");
    let pages: Vec<PathBuf> = crate::install::MAN_PAGES
        .iter()
        .map(|p| dir.join(p))
        .collect();
    if !check {
        return render(&pages);
    }
    let mut problems = Vec::new();
    for page in &pages {
        problems.extend(lint(page)?);
    }
    problems.extend(check_config_keys(&read(&dir.join("distribute.socket.5"))?));
    crate::cargo(&["build", "--bin", "systemd-distribute"])?;
    let daemon = bin_path("systemd-distribute");
    problems.extend(check_daemon(
        &read(&dir.join("systemd-distribute.8"))?,
        &daemon,
    )?);
    if crate::install::ctl_exists() {
        crate::cargo(&["build", "--bin", "distributectl"])?;
        problems.extend(check_ctl(
            &read(&dir.join("distributectl.1"))?,
            &bin_path("distributectl"),
        )?);
    } else {
        eprintln!(
            "\n*** WARNING: crates/ctl does not exist yet: distributectl(1) is NOT checked \
             against `distributectl --help` ***\n"
        );
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("man: {p}");
        }
        bail!("{} problem(s) in the man pages", problems.len());
    }
    eprintln!("man pages: lint clean, no drift ({} pages)", pages.len());
    Ok(())
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

fn bin_path(name: &str) -> PathBuf {
    distribute_sandbox::target_dir().join("debug").join(name)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Renders every page to `target/man/PAGE.txt`.
fn render(pages: &[PathBuf]) -> Result<()> {
    let out_dir = distribute_sandbox::target_dir().join("man");
    fs::create_dir_all(&out_dir)?;
    for page in pages {
        let out = if have("mandoc") {
            Command::new("mandoc")
                .args(["-T", "ascii"])
                .arg(page)
                .output()?
        } else {
            Command::new("groff")
                .args(["-man", "-T", "ascii", "-P", "-c", "-P", "-b", "-P", "-u"])
                .arg(page)
                .output()?
        };
        if !out.status.success() {
            bail!(
                "rendering {} failed: {}",
                page.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let name = page.file_name().unwrap().to_string_lossy();
        let dest = out_dir.join(format!("{name}.txt"));
        fs::write(
            &dest,
            strip_overstrike(&String::from_utf8_lossy(&out.stdout)),
        )?;
        println!("{}", dest.display());
    }
    Ok(())
}

/// Removes `x\bx` bold and `_\bx` underline sequences.
fn strip_overstrike(s: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// Lints one page; returns the messages.
fn lint(page: &Path) -> Result<Vec<String>> {
    let name = page.display().to_string();
    let (tool, out) = if have("mandoc") {
        // -W style: everything but OpenBSD base-system conventions.
        (
            "mandoc",
            Command::new("mandoc")
                .args(["-T", "lint", "-W", "style"])
                .arg(page)
                .output()?,
        )
    } else if have("groff") {
        eprintln!("man: mandoc not found, linting with groff -ww -z (apt-get install mandoc)");
        (
            "groff",
            Command::new("groff")
                .args(["-ww", "-z", "-man"])
                .arg(page)
                .output()?,
        )
    } else {
        bail!("neither mandoc nor groff is installed: apt-get install mandoc");
    };
    let mut msgs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{tool}: {l}"))
        .collect();
    if !out.status.success() && msgs.is_empty() {
        msgs.push(format!("{tool} failed on {name}: {}", out.status));
    }
    Ok(msgs)
}

/// A man page, split into sections with the tags of their `.TP`/`.TQ` items.
#[derive(Debug, Default)]
pub struct Page {
    /// (section title, plain text, tag lines), in order.
    pub sections: Vec<Section>,
}

/// One `.SH` section.
#[derive(Debug, Default)]
pub struct Section {
    /// The title, as plain text (`[SOCKET] SECTION OPTIONS`).
    pub title: String,
    /// All text of the section, escapes removed, one source line per line.
    pub text: String,
    /// The tag line of every `.TP`/`.TQ` item, as plain text.
    pub tags: Vec<String>,
}

impl Page {
    /// Parses roff source with man(7) macros.
    pub fn parse(src: &str) -> Page {
        let mut page = Page::default();
        let mut tag_next = false;
        for line in src.lines() {
            if line.starts_with(".\\\"") || line.starts_with("'\\\"") {
                continue;
            }
            if let Some(rest) = line.strip_prefix(".SH") {
                page.sections.push(Section {
                    title: plain(&macro_text(rest.trim(), false)),
                    ..Section::default()
                });
                tag_next = false;
                continue;
            }
            if line == ".TP" || line.starts_with(".TP ") || line == ".TQ" {
                tag_next = true;
                continue;
            }
            let text = match line.strip_prefix('.') {
                Some(m) => {
                    let (name, args) = m.split_once(' ').unwrap_or((m, ""));
                    match name {
                        "B" | "I" | "SM" | "SB" => plain(&macro_text(args, false)),
                        "BR" | "RB" | "BI" | "IB" | "IR" | "RI" => plain(&macro_text(args, true)),
                        "SS" => plain(&macro_text(args, false)),
                        _ => String::new(),
                    }
                }
                None => plain(line),
            };
            let Some(section) = page.sections.last_mut() else {
                continue;
            };
            if tag_next && !text.is_empty() {
                section.tags.push(text.clone());
                tag_next = false;
            }
            section.text.push_str(&text);
            section.text.push('\n');
        }
        page
    }

    /// The section whose title is `title`.
    pub fn section(&self, title: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.title == title)
    }

    /// Text of the whole page.
    pub fn text(&self) -> String {
        self.sections.iter().map(|s| s.text.as_str()).collect()
    }
}

/// Arguments of a font macro: quoted words unquoted; alternating macros
/// (`.BR`) join their words without spaces, others with one.
fn macro_text(args: &str, alternating: bool) -> String {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in args.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words.join(if alternating { "" } else { " " })
}

/// Removes roff escapes: fonts, `\-`, `\e`, `\&`, `\(xx` glyphs.
pub fn plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => match chars.next() {
                Some('(') => {
                    chars.next();
                    chars.next();
                }
                Some('[') => {
                    for c in chars.by_ref() {
                        if c == ']' {
                            break;
                        }
                    }
                }
                _ => {}
            },
            Some('-') => out.push('-'),
            Some('e') | Some('\\') => out.push('\\'),
            Some('&') | Some('%') | Some('c') => {}
            Some('(') => {
                let glyph: String = chars.by_ref().take(2).collect();
                out.push_str(match glyph.as_str() {
                    "em" | "en" => "-",
                    "<=" => "<=",
                    "bu" => "*",
                    _ => " ",
                });
            }
            Some(' ') => out.push(' '),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Whether `needle` occurs in `hay` as a whole word: not preceded by a letter,
/// digit, `-` or `_`, and (unless it ends in `=`) not followed by one.
pub fn has_word(hay: &str, needle: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(word) && (needle.ends_with('=') || !after.is_some_and(word))
    })
}

/// `Key=` names at the start of tag lines (`Key=VALUE`, `Key=, Other=`).
fn tagged_keys(section: &Section) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for tag in &section.tags {
        let Some((key, _)) = tag.split_once('=') else {
            continue;
        };
        if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric()) {
            keys.insert(key.to_string());
        }
    }
    keys
}

/// distribute.socket(5) against the parser's key lists.
pub fn check_config_keys(src: &str) -> Vec<String> {
    let page = Page::parse(src);
    let mut problems = Vec::new();
    let lists: [(&str, Vec<&str>, &[&str]); 2] = [
        (
            "[SOCKET] SECTION OPTIONS",
            distribute_config::SOCKET_KEYS.to_vec(),
            EXTRA_SOCKET_KEYS,
        ),
        (
            "[SERVICE] SECTION OPTIONS",
            distribute_config::service_keys().collect(),
            &[],
        ),
    ];
    for (title, keys, extra) in lists {
        let Some(section) = page.section(title) else {
            problems.push(format!("distribute.socket.5: no section {title}"));
            continue;
        };
        let documented = tagged_keys(section);
        for key in &keys {
            if !documented.contains(*key) {
                problems.push(format!(
                    "distribute.socket.5: {key}= is accepted by the config parser but has no \
                     entry (.TP {key}=...) under {title}"
                ));
            }
        }
        for key in &documented {
            if !keys.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
                problems.push(format!(
                    "distribute.socket.5: {key}= is documented under {title} but the config \
                     parser does not accept it"
                ));
            }
        }
    }
    // systemd.socket(5) keys we refuse: each named, with its reason, in the
    // page's list of unsupported options; the [Unit] keys we use, documented.
    let checks: [(&str, Vec<&str>); 2] = [
        (
            "UNSUPPORTED SYSTEMD.SOCKET OPTIONS",
            distribute_config::UNSUPPORTED_SOCKET_KEYS.to_vec(),
        ),
        (
            "[UNIT] AND [INSTALL] SECTIONS",
            distribute_config::UNIT_KEYS
                .iter()
                .chain(distribute_config::INSTALL_KEYS)
                .copied()
                .collect(),
        ),
    ];
    for (title, keys) in checks {
        let Some(section) = page.section(title) else {
            problems.push(format!("distribute.socket.5: no section {title}"));
            continue;
        };
        for key in keys {
            if !has_word(&section.text, &format!("{key}=")) {
                problems.push(format!(
                    "distribute.socket.5: {key}= is not named under {title}"
                ));
            }
        }
    }
    problems
}

/// What a clap `--help` lists.
#[derive(Debug, Default, PartialEq)]
pub struct Help {
    /// Subcommands (without `help`).
    pub commands: Vec<String>,
    /// Options: every `-x` and `--long` spelling.
    pub options: Vec<String>,
    /// Values from `[possible values: a, b]`.
    pub values: Vec<String>,
}

/// Parses clap's `--help` output.
pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    let mut value_list = false;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':');
            continue;
        }
        // Long help lists values as "Possible values:" then "- VALUE: text".
        if line.trim() == "Possible values:" {
            value_list = true;
            continue;
        }
        if value_list {
            if let Some(item) = line.trim().strip_prefix("- ") {
                let value = item.split(':').next().unwrap_or_default().trim();
                help.values.push(value.to_string());
                continue;
            }
            value_list = false;
        }
        if let Some(i) = line.find("[possible values: ") {
            let rest = &line[i + "[possible values: ".len()..];
            let list = rest.split(']').next().unwrap_or_default();
            help.values
                .extend(list.split(", ").map(|v| v.trim().to_string()));
        }
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Entries are indented by two spaces (six for a long option without a
        // short one); descriptions wrapped onto further lines are indented more.
        match section {
            "Commands" if indent == 2 => {
                let cmd = trimmed.split_whitespace().next().unwrap_or_default();
                if cmd != "help" && !cmd.is_empty() {
                    help.commands.push(cmd.to_string());
                }
            }
            "Options" if indent <= 6 && trimmed.starts_with('-') => {
                // "-h, --help", "--json[=<MODE>]", "--config-dir <DIR>"
                let spec = trimmed.split("  ").next().unwrap_or_default();
                for word in spec.split([',', ' ']) {
                    let word = word.split(['[', '=', '<']).next().unwrap_or_default();
                    if word.starts_with('-') && word.len() > 1 {
                        help.options.push(word.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    help
}

fn help_of(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .with_context(|| format!("running {} --help", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} --help failed: {}",
            bin.display(),
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Options of a section's tags, e.g. `-h`, `--help` from `-h, --help`.
fn tagged_options(section: &Section) -> BTreeSet<String> {
    let mut opts = BTreeSet::new();
    for tag in &section.tags {
        for word in tag.split([',', ' ', '[']) {
            let word = word.split(['=', '[']).next().unwrap_or_default();
            if word.starts_with('-') && word.len() > 1 {
                opts.insert(word.to_string());
            }
        }
    }
    opts
}

/// systemd-distribute(8) against `systemd-distribute --help`.
pub fn check_daemon(src: &str, bin: &Path) -> Result<Vec<String>> {
    let help = parse_help(&help_of(bin, &[])?);
    if help.options.is_empty() {
        bail!("no options found in `systemd-distribute --help`: has its format changed?");
    }
    Ok(check_options(
        "systemd-distribute.8",
        &Page::parse(src),
        &help.options,
        "systemd-distribute --help",
    ))
}

fn check_options(page_name: &str, page: &Page, options: &[String], origin: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(section) = page.section("OPTIONS") else {
        return vec![format!("{page_name}: no OPTIONS section")];
    };
    let documented = tagged_options(section);
    for o in options {
        if !documented.contains(o) {
            problems.push(format!(
                "{page_name}: {o} is in `{origin}` but has no entry under OPTIONS"
            ));
        }
    }
    for o in &documented {
        if !options.contains(o) {
            problems.push(format!(
                "{page_name}: {o} is documented under OPTIONS but not in `{origin}`"
            ));
        }
    }
    problems
}

/// distributectl(1) against `distributectl --help` and each command's help.
pub fn check_ctl(src: &str, bin: &Path) -> Result<Vec<String>> {
    let page = Page::parse(src);
    let name = "distributectl.1";
    let top = parse_help(&help_of(bin, &[])?);
    if top.commands.is_empty() {
        bail!("no commands found in `distributectl --help`: has its format changed?");
    }
    let mut problems = check_options(name, &page, &top.options, "distributectl --help");
    let Some(commands) = page.section("COMMANDS") else {
        problems.push(format!("{name}: no COMMANDS section"));
        return Ok(problems);
    };
    let documented: BTreeSet<String> = commands
        .tags
        .iter()
        .filter_map(|t| t.split_whitespace().next().map(str::to_string))
        .collect();
    for cmd in &top.commands {
        if !documented.contains(cmd) {
            problems.push(format!(
                "{name}: command {cmd} is in `distributectl --help` but has no entry under COMMANDS"
            ));
        }
    }
    for cmd in &documented {
        if !top.commands.contains(cmd) {
            problems.push(format!(
                "{name}: command {cmd} is documented under COMMANDS but not in `distributectl --help`"
            ));
        }
    }
    let text = page.text();
    let mut values = top.values.clone();
    for cmd in &top.commands {
        let help = parse_help(&help_of(bin, &[cmd])?);
        values.extend(help.values);
        for o in &help.options {
            if !top.options.contains(o) && !has_word(&text, o) {
                problems.push(format!(
                    "{name}: option {o} of `distributectl {cmd}` is not documented"
                ));
            }
        }
    }
    for v in values {
        if !has_word(&text, &v) {
            problems.push(format!(
                "{name}: value {v:?} (a possible value in distributectl's help) is not documented"
            ));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_of_roff() {
        assert_eq!(
            plain(r"\fBListenStream=\fR\fIADDRESS\fR"),
            "ListenStream=ADDRESS"
        );
        assert_eq!(plain(r"\-\-config\-dir \e\& \(em"), r"--config-dir \ -");
        assert_eq!(macro_text(r#"\-h ", " \-\-help"#, true), r"\-h, \-\-help");
        assert_eq!(macro_text(r#""a b" c"#, false), "a b c");
    }

    #[test]
    fn words() {
        assert!(has_word("the --json option", "--json"));
        assert!(!has_word("the --json-x option", "--json"));
        assert!(has_word("ListenStream=8080", "ListenStream="));
        assert!(!has_word("XListenStream=8080", "ListenStream="));
        assert!(has_word("(bash, zsh)", "bash"));
    }

    #[test]
    fn parses_clap_help() {
        let text = "Control it\n\nUsage: x [OPTIONS] [COMMAND]\n\nCommands:\n  list    List\n  \
                    status  Show\n          more text\n  help    Print this\n\nOptions:\n      \
                    --json[=<MODE>]  JSON [possible values: pretty, short, off]\n      \
                    --config-dir <DIR>  Dir\n  -h, --help  Print help\n  -V, --version  \
                    Print version\n      --color <WHEN>\n          Colour\n\n          \
                    Possible values:\n          - auto: Guess\n          - never:  No\n\n";
        let h = parse_help(text);
        assert_eq!(h.commands, ["list", "status"]);
        assert_eq!(
            h.options,
            [
                "--json",
                "--config-dir",
                "-h",
                "--help",
                "-V",
                "--version",
                "--color"
            ]
        );
        assert_eq!(h.values, ["pretty", "short", "off", "auto", "never"]);
    }

    #[test]
    fn pages_parse_into_sections_and_tags() {
        let src = ".TH X 5\n.SH \"[SOCKET] SECTION OPTIONS\"\n.TP\n\\fBListenStream=\\fR\\fIA\\fR\ntext\n\
                   .TP\n\\fBReceiveBuffer=\\fR\n.TQ\n\\fBSendBuffer=\\fR\nx\n.SH OPTIONS\n.TP\n\
                   .BR \\-h \", \" \\-\\-help\nHelp.\n";
        let page = Page::parse(src);
        let s = page.section("[SOCKET] SECTION OPTIONS").unwrap();
        assert_eq!(s.tags, ["ListenStream=A", "ReceiveBuffer=", "SendBuffer="]);
        let keys: Vec<String> = tagged_keys(s).into_iter().collect();
        assert_eq!(keys, ["ListenStream", "ReceiveBuffer", "SendBuffer"]);
        let o: Vec<String> = tagged_options(page.section("OPTIONS").unwrap())
            .into_iter()
            .collect();
        assert_eq!(o, ["--help", "-h"]);
    }

    /// The drift check of the config keys needs no binary: run it in every test run.
    #[test]
    fn every_config_key_is_documented() {
        let src = read(&crate::root().join("man/distribute.socket.5")).unwrap();
        let problems = check_config_keys(&src);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_missing_key_is_reported() {
        let src = read(&crate::root().join("man/distribute.socket.5"))
            .unwrap()
            .replace("\\fBNoDelay=\\fR", "\\fBNoDelayX=\\fR");
        let problems = check_config_keys(&src);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("NoDelay= is accepted"),
            "{problems:#?}"
        );
        assert!(
            problems[1].contains("NoDelayX= is documented"),
            "{problems:#?}"
        );
    }
}
