//! `cargo xtask test`: the README's test command.
//!
//! The integration tests install the workspace's binaries (activator, exec shim,
//! demo instances) into a sandboxed systemd, so they are built first. Then every
//! test runs against the host's systemd (252 on Debian 12), and the tests that
//! boot a sandbox run again against the systemd of a Debian 13 root (257), where
//! the activator hands sockets over natively (`ExtraFileDescriptors`) instead of
//! through the exec shim.

use anyhow::{bail, Result};
use distribute_sandbox::{skip_log, Systemd, SYSTEMD_ENV};
use std::process::Command;
use std::time::{Duration, Instant};

/// Which systemd(s) `cargo xtask test` runs the sandboxed tests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// The host's systemd: every test of the workspace.
    Host,
    /// The Debian 13 root's systemd: the tests that boot a sandbox.
    Debian13,
    /// Both, host first.
    Both,
}

/// The packages whose tests boot a sandbox, run again on every other systemd
/// than the host's (the rest of the workspace does not depend on it).
const SANDBOX_PACKAGES: &[&str] = &["distribute-tests", "distribute-sandbox", "xtask"];

pub fn run(which: Which, extra: &[String]) -> Result<()> {
    let started = Instant::now();
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let build = started.elapsed();
    let systemds: &[Systemd] = match which {
        Which::Host => &[Systemd::Host],
        Which::Debian13 => &[Systemd::Debian13],
        Which::Both => &Systemd::ALL,
    };
    let mut parts: Vec<(Systemd, Duration, bool, Vec<String>)> = Vec::new();
    for &systemd in systemds {
        let mut args = vec!["test"];
        match systemd {
            Systemd::Host => args.push("--workspace"),
            _ => {
                for p in SANDBOX_PACKAGES {
                    args.extend(["-p", p]);
                }
            }
        }
        args.extend(extra.iter().map(String::as_str));
        eprintln!(
            "\n======== cargo xtask test: {} ({SYSTEMD_ENV}={}) ========\n",
            describe(systemd),
            systemd.as_str()
        );
        let t = Instant::now();
        let _ = std::fs::remove_file(skip_log());
        // Both parts run even if the first fails: a failure on one systemd
        // only is worth knowing as such.
        let ok = cargo_on(systemd, &args)?;
        let took = t.elapsed();
        // A skipped sandbox test passes, and the harness hides what it
        // printed: say it here, where nobody can miss it.
        let skipped: Vec<String> = std::fs::read_to_string(skip_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        eprintln!(
            "\n======== {}: {} in {:.0?} ========\n",
            describe(systemd),
            if ok { "passed" } else { "FAILED" },
            took
        );
        parts.push((systemd, took, ok, skipped));
    }
    eprintln!("cargo xtask test: build {build:.0?}");
    for (systemd, took, ok, skipped) in &parts {
        eprintln!(
            "cargo xtask test: {:<40} {:>6.0?}  {}{}",
            describe(*systemd),
            took,
            if *ok { "passed" } else { "FAILED" },
            if skipped.is_empty() {
                String::new()
            } else {
                format!(", {} sandbox tests SKIPPED", skipped.len())
            }
        );
        for line in skipped {
            eprintln!("cargo xtask test:   *** {line} ***");
        }
    }
    let failed: Vec<&str> = parts
        .iter()
        .filter(|p| !p.2)
        .map(|p| p.0.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("tests failed on systemd: {}", failed.join(", "));
    }
    Ok(())
}

/// `cargo ARGS` in the workspace root with [`SYSTEMD_ENV`] set; whether it passed.
fn cargo_on(systemd: Systemd, args: &[&str]) -> Result<bool> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!(
        "$ {SYSTEMD_ENV}={} cargo {}",
        systemd.as_str(),
        args.join(" ")
    );
    let status = Command::new(cargo)
        .args(args)
        .env(SYSTEMD_ENV, systemd.as_str())
        .current_dir(crate::root())
        .status()?;
    Ok(status.success())
}

fn describe(systemd: Systemd) -> &'static str {
    match systemd {
        Systemd::Host => "host systemd, every test",
        Systemd::Debian13 => "Debian 13 systemd, sandboxed tests",
    }
}
