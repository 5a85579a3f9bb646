//! Project automation, run as `cargo xtask <task>` (alias in .cargo/config.toml).

mod bench;
mod ci;
mod deb;
mod demo;
mod fuzz;
mod install;
mod man;
mod soak;
mod test;
mod units;

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
    /// Build every binary, then run every test (unit, golden, sandboxed
    /// systemd) on the host's systemd, and the sandboxed ones again on the
    /// systemd of a Debian 13 root (built and cached on first use).
    Test {
        /// Which systemd the sandboxed tests boot.
        #[arg(long, value_enum, default_value = "both")]
        systemd: test::Which,
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Boot a private systemd, run the activator with examples/http.socket
    /// (Distribute=4), fire connections and show who served them, idle exit and
    /// re-activation.
    Demo,
    /// What CI (`.ci/run`) runs once the packages are installed: formatting,
    /// clippy with warnings denied, the man page, benchmark page and unit
    /// checks, a 60 s fuzz run, `test`, `demo`, then `deb --check --test`.
    Ci,
    /// Benchmarks: data-path overhead, distribution models, cold activation,
    /// scale and footprint, steering; writes bench/results/*.json and
    /// docs/benchmarks.md.
    Bench {
        /// The long profile (more rounds, longer runs, 1,000 activations).
        #[arg(long)]
        full: bool,
        /// Only these scenarios, comma-separated; the others' earlier results
        /// stay and are rendered too.
        // The possible values are bench::SCENARIOS: the help lists every
        // scenario, and any other name is rejected with that list.
        #[arg(
            long,
            value_delimiter = ',',
            value_parser = clap::builder::PossibleValuesParser::new(bench::SCENARIOS.iter().copied())
        )]
        only: Vec<String>,
        /// Which systemd the activation scenario boots: the host's (252,
        /// hand-off through the exec shim), a Debian 13 root's (257, native
        /// ExtraFileDescriptors=), or both one after the other. The other
        /// scenarios always run on the host's systemd.
        #[arg(long, value_enum, default_value = "both")]
        systemd: bench::Which,
        /// Only regenerate docs/benchmarks.md from bench/results/*.json.
        #[arg(long)]
        render: bool,
        /// With --render: write nothing, fail if docs/benchmarks.md or its
        /// charts differ from what bench/results/*.json render to.
        #[arg(long, requires = "render")]
        check: bool,
        /// Idle-exit cycles per variant of the churn scenario instead of the
        /// profile's (20,000 in both), e.g. for a shorter check.
        #[arg(long)]
        churn_cycles: Option<usize>,
    },
    /// Man pages: render them to target/man/, or with --check lint them and
    /// check that every config key, daemon option and distributectl command
    /// they should document is there.
    Man {
        /// Lint and check for drift instead of rendering.
        #[arg(long)]
        check: bool,
    },
    /// Build (release by default) and lay out binaries, units, D-Bus policy,
    /// man pages, examples and completions under DESTDIR/PREFIX, as a
    /// distribution package would.
    Install {
        /// Staging directory; files go to DESTDIR/PREFIX.
        #[arg(long, value_name = "DIR")]
        destdir: PathBuf,
        /// Installation prefix, as the installed system sees it.
        #[arg(long, value_name = "DIR", default_value = "/usr")]
        prefix: String,
        /// Cargo profile to build and install (dev, release, ...).
        #[arg(long, default_value = "release")]
        profile: String,
        /// Install the binaries already built for --profile.
        #[arg(long)]
        no_build: bool,
    },
    /// Build the Debian package target/deb/systemd-distribute_VERSION_ARCH.deb
    /// (release binaries, unit, D-Bus policy, man pages, completions,
    /// examples, maintainer scripts) and print its path.
    Deb {
        /// Package the release binaries already built.
        #[arg(long)]
        no_build: bool,
        /// Run lintian on the package; fail on any warning or error.
        #[arg(long)]
        check: bool,
        /// Install the package into a Debian 13 root booted in the sandbox,
        /// follow the README's tour, then purge it and check nothing is left.
        #[arg(long)]
        test: bool,
    },
    /// Check the unit files: systemd-analyze verify on the installed units
    /// and example drop-ins, and the security exposure of the service.
    Units,
    /// Fuzz the config parser (cargo-fuzz, libFuzzer) for a bounded time:
    /// fails on a panic, a hang or a rejection without file and line.
    Fuzz {
        /// How long to fuzz, after the build.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Soak test in a private systemd: steady loopback load plus random
    /// instance kills, reloads, rescales and activator restarts; prints
    /// failed connections, and RSS and fd counts at start and end.
    Soak {
        /// How long to run the load.
        #[arg(long, default_value_t = 2)]
        minutes: u64,
        /// Seed for the random schedule of disruptions.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Never restart the activator, so one process lives through the
        /// whole run (its RSS and fd count at start and end compare directly).
        #[arg(long)]
        no_restarts: bool,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Test { systemd, args } => test::run(systemd, &args),
        Task::Demo => demo::run(),
        Task::Ci => ci::run(),
        Task::Bench {
            full,
            only,
            systemd,
            render,
            check,
            churn_cycles,
        } => bench::run(bench::Options {
            full,
            only,
            systemd,
            render_only: render,
            check,
            churn_cycles,
        }),
        Task::Man { check } => man::run(check),
        Task::Install {
            destdir,
            prefix,
            profile,
            no_build,
        } => install::run(&destdir, &prefix, &profile, no_build),
        Task::Deb {
            no_build,
            check,
            test,
        } => deb::run(&deb::Options {
            no_build,
            check,
            test,
        }),
        Task::Units => units::run(),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::Soak {
            minutes,
            seed,
            no_restarts,
        } => soak::run(minutes, seed, !no_restarts),
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
    let status = Command::new(cargo)
        .args(args)
        .current_dir(root())
        .status()?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    Ok(())
}
