//! `distributectl`: control systemd-distribute over D-Bus (`org.distribute1`).
//!
//! A thin client: every command is one or a few calls on the system bus (see
//! the `distribute-dbus` crate for the interface), except `verify`, which checks
//! config files offline, and `completions`.
//!
//! Exit codes follow systemctl: 0 success, 1 failure (including "the daemon is
//! not running" and "access denied"), 2 bad command line, 4 no such socket.

mod bus;
mod output;
mod verify;

use bus::{Client, CtlError, SocketProxy};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use output::Style;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Control systemd-distribute, the Distribute=N socket activator.
#[derive(Parser, Debug)]
#[command(name = "distributectl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Print JSON (list, status, cat, verify): pretty, short or off; a bare
    /// --json is pretty on a terminal and short otherwise.
    #[arg(
        long,
        global = true,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "auto",
        value_enum
    )]
    json: Option<JsonMode>,
    /// Do not pipe output into a pager (distributectl never pages; accepted
    /// for systemctl compatibility).
    #[arg(long, global = true)]
    no_pager: bool,
    /// Do not print column headers and the footer.
    #[arg(long, global = true)]
    no_legend: bool,
    /// Talk to the system bus (the default, and the only bus systemd-distribute is on).
    #[arg(long, global = true)]
    system: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List socket configs (the default command).
    List,
    /// Show listen addresses, N, state and every instance of socket configs (all by default).
    Status {
        /// Config names (NAME of NAME.socket).
        names: Vec<String>,
    },
    /// Change the number of instances of a config until the next reload.
    Scale {
        /// Config name.
        name: String,
        /// New number of instances, 1 to 1024.
        n: u32,
    },
    /// Restart instance I of a config, or all its instances.
    Restart {
        /// NAME or NAME@I.
        target: String,
    },
    /// Stop instance I of a config, or all; the next connection starts it again.
    Stop {
        /// NAME or NAME@I.
        target: String,
    },
    /// Start instance I of a config, or all, even with nothing queued; clears a failed state.
    Start {
        /// NAME or NAME@I.
        target: String,
    },
    /// Re-read every config file and apply the changes.
    Reload,
    /// Show the files an effective config came from, with their contents.
    Cat {
        /// Config names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Check config files offline (with their FILE.d/*.conf drop-ins); no daemon needed.
    Verify {
        /// NAME.socket files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JsonMode {
    /// Indented.
    Pretty,
    /// One line.
    Short,
    /// No JSON.
    Off,
    /// Pretty on a terminal, short otherwise.
    #[value(hide = true)]
    Auto,
}

/// Parsed `NAME[@I]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    index: Option<u32>,
}

fn parse_target(s: &str) -> Result<Target, String> {
    match s.rsplit_once('@') {
        None if s.is_empty() => Err("empty socket name".into()),
        None => Ok(Target {
            name: s.to_string(),
            index: None,
        }),
        Some((name, index)) => {
            if name.is_empty() {
                return Err(format!("{s:?}: missing socket name before '@'"));
            }
            let index = index.strip_suffix(".service").unwrap_or(index);
            match index.parse::<u32>() {
                Ok(i) if index.bytes().all(|b| b.is_ascii_digit()) => Ok(Target {
                    name: name.to_string(),
                    index: Some(i),
                }),
                _ => Err(format!(
                    "{s:?}: expected NAME or NAME@I with I an instance index (0, 1, …)"
                )),
            }
        }
    }
}

/// Output settings shared by the commands.
struct Out {
    json: Option<JsonMode>,
    legend: bool,
    style: Style,
}

impl Out {
    fn print_json<T: Serialize>(&self, value: &T) {
        let text = match self.json {
            Some(JsonMode::Pretty) => serde_json::to_string_pretty(value),
            _ => serde_json::to_string(value),
        }
        .expect("our types serialize");
        println!("{text}");
    }
}

/// Exit status of a command that may fail part-way: the first error decides.
#[derive(Default)]
struct Status {
    code: u8,
}

impl Status {
    fn fail(&mut self, e: &CtlError) {
        eprintln!("{e}");
        if self.code == 0 {
            self.code = e.exit_code();
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let tty = std::io::stdout().is_terminal();
    let json = match cli.json {
        None | Some(JsonMode::Off) => None,
        Some(JsonMode::Auto) if tty => Some(JsonMode::Pretty),
        Some(JsonMode::Auto) => Some(JsonMode::Short),
        Some(m) => Some(m),
    };
    let out = Out {
        json,
        legend: !cli.no_legend,
        style: Style {
            color: output::colors_enabled(env, tty),
            utf8: output::locale_is_utf8(env),
        },
    };
    let command = cli.command.unwrap_or(Cmd::List);
    let code = match command {
        Cmd::Verify { files } => verify_files(&files, &out),
        Cmd::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "distributectl",
                &mut std::io::stdout(),
            );
            0
        }
        online => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("Failed to create the event loop: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(run(online, &out))
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(code)
}

async fn run(command: Cmd, out: &Out) -> u8 {
    let client = match Client::connect().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return e.exit_code();
        }
    };
    let mut status = Status::default();
    match command {
        Cmd::List => match client.list().await {
            Ok(sockets) if out.json.is_some() => out.print_json(&sockets),
            Ok(sockets) => print!("{}", output::format_list(&sockets, out.legend, &out.style)),
            Err(e) => status.fail(&e),
        },
        Cmd::Status { names } => status_cmd(&client, names, out, &mut status).await,
        Cmd::Scale { name, n } => {
            let r = match client.socket(&name).await {
                Ok(p) => p
                    .set_distribute(n)
                    .await
                    .map_err(|e| CtlError::from_zbus(&format!("Failed to scale {name} to {n}"), e)),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                status.fail(&e);
            }
        }
        Cmd::Restart { target } => {
            instances_cmd(&client, &target, Action::Restart, &mut status).await
        }
        Cmd::Stop { target } => instances_cmd(&client, &target, Action::Stop, &mut status).await,
        Cmd::Start { target } => instances_cmd(&client, &target, Action::Start, &mut status).await,
        Cmd::Reload => {
            if let Err(e) = client.reload().await {
                status.fail(&e);
            }
        }
        Cmd::Cat { names } => cat_cmd(&client, names, out, &mut status).await,
        Cmd::Verify { .. } | Cmd::Completions { .. } => unreachable!("handled offline"),
    }
    status.code
}

async fn status_cmd(client: &Client, names: Vec<String>, out: &Out, status: &mut Status) {
    let names = if names.is_empty() {
        match client.list().await {
            Ok(list) => list.into_iter().map(|s| s.name).collect(),
            Err(e) => return status.fail(&e),
        }
    } else {
        names
    };
    let mut all = Vec::new();
    for name in &names {
        match client.status(name).await {
            Ok(s) => all.push(s),
            Err(e @ CtlError::NotRunning) => return status.fail(&e),
            Err(e) => status.fail(&e),
        }
    }
    if out.json.is_some() {
        out.print_json(&all);
    } else {
        let blocks: Vec<String> = all
            .iter()
            .map(|s| output::format_status(s, out.legend, &out.style))
            .collect();
        print!("{}", blocks.join("\n"));
    }
}

#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        }
    }

    async fn call(self, p: &SocketProxy<'_>, index: u32) -> zbus::Result<()> {
        match self {
            Action::Start => p.start_instance(index).await,
            Action::Stop => p.stop_instance(index).await,
            Action::Restart => p.restart_instance(index).await,
        }
    }
}

async fn instances_cmd(client: &Client, target: &str, action: Action, status: &mut Status) {
    let target = match parse_target(target) {
        Ok(t) => t,
        Err(m) => return status.fail(&CtlError::Failed(format!("Invalid argument: {m}"))),
    };
    let p = match client.socket(&target.name).await {
        Ok(p) => p,
        Err(e) => return status.fail(&e),
    };
    let indices: Vec<u32> = match target.index {
        Some(i) => vec![i],
        None => match p.distribute().await {
            Ok(n) => (0..n).collect(),
            Err(e) => {
                return status.fail(&CtlError::from_zbus(
                    &format!("Failed to read the instances of {}", target.name),
                    e,
                ))
            }
        },
    };
    for i in indices {
        if let Err(e) = action.call(&p, i).await {
            let e = CtlError::from_zbus(
                &format!("Failed to {} {}@{i}", action.verb(), target.name),
                e,
            );
            let fatal = matches!(e, CtlError::NotRunning | CtlError::AccessDenied(_));
            status.fail(&e);
            if fatal {
                return;
            }
        }
    }
}

#[derive(Serialize)]
struct CatFile {
    path: String,
    content: String,
}

#[derive(Serialize)]
struct CatConfig {
    name: String,
    files: Vec<CatFile>,
}

async fn cat_cmd(client: &Client, names: Vec<String>, out: &Out, status: &mut Status) {
    let mut configs = Vec::new();
    for name in names {
        let sources = match client.socket(&name).await {
            Ok(p) => p.sources().await.map_err(|e| {
                CtlError::from_zbus(&format!("Failed to read the sources of {name}"), e)
            }),
            Err(e) => Err(e),
        };
        let sources = match sources {
            Ok(s) => s,
            Err(e @ CtlError::NotRunning) => return status.fail(&e),
            Err(e) => {
                status.fail(&e);
                continue;
            }
        };
        if sources.is_empty() {
            status.fail(&CtlError::Failed(format!("No files found for {name}.")));
            continue;
        }
        let mut files = Vec::new();
        for path in sources {
            match std::fs::read_to_string(&path) {
                Ok(content) => files.push(CatFile { path, content }),
                Err(e) => status.fail(&CtlError::Failed(format!("Failed to read {path}: {e}"))),
            }
        }
        configs.push(CatConfig { name, files });
    }
    if out.json.is_some() {
        return out.print_json(&configs);
    }
    let mut text = String::new();
    let mut first = true;
    for c in &configs {
        for f in &c.files {
            if !first {
                text.push('\n');
            }
            first = false;
            let header = format!("# {}", f.path);
            if out.style.color {
                text.push_str(&format!("\x1b[0;1;34m{header}\x1b[0m\n"));
            } else {
                text.push_str(&header);
                text.push('\n');
            }
            text.push_str(&f.content);
            if !f.content.ends_with('\n') && !f.content.is_empty() {
                text.push('\n');
            }
        }
    }
    print!("{text}");
}

fn verify_files(files: &[PathBuf], out: &Out) -> u8 {
    let results: Vec<verify::Verified> = files.iter().map(|f| verify::verify(f)).collect();
    let failed = results.iter().any(|r| !r.errors.is_empty());
    if out.json.is_some() {
        out.print_json(&results);
    } else {
        let (out, err) = verify::render_text(&results);
        eprint!("{err}");
        print!("{out}");
    }
    u8::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("web").unwrap(),
            Target {
                name: "web".into(),
                index: None
            }
        );
        assert_eq!(parse_target("web@3").unwrap().index, Some(3));
        assert_eq!(parse_target("web@3.service").unwrap().index, Some(3));
        assert_eq!(parse_target("a@b@12").unwrap().name, "a@b");
        for bad in [
            "",
            "@1",
            "web@",
            "web@x",
            "web@-1",
            "web@+1",
            "web@99999999999",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["distributectl", "--json", "status", "web"]).unwrap();
        assert_eq!(c.json, Some(JsonMode::Auto));
        let c = Cli::try_parse_from(["distributectl", "list", "--json=short"]).unwrap();
        assert_eq!(c.json, Some(JsonMode::Short));
        let c = Cli::try_parse_from(["distributectl", "--no-pager"]).unwrap();
        assert!(c.command.is_none() && c.no_pager);
        assert!(Cli::try_parse_from(["distributectl", "scale", "web", "x"]).is_err());
        assert!(Cli::try_parse_from(["distributectl", "verify"]).is_err());
    }
}
