//! Project automation, run as `cargo xtask <task>` (alias in .cargo/config.toml).

mod ci;
mod demo;
mod test;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build every binary, then run every test (unit, golden, sandboxed systemd).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot a private systemd, run the activator with examples/http.socket
    /// (Distribute=4), fire connections and show who served them, idle exit and
    /// re-activation.
    Demo,
    /// What CI runs: formatting, clippy with warnings denied, then `test`.
    Ci,
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { args } => test::run(&args),
        Task::Demo => demo::run(),
        Task::Ci => ci::run(),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `cargo ARGS` in the workspace root, failing on a non-zero exit.
pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo).args(args).current_dir(root()).status()?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
