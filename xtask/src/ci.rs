//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.
//! This is the one list of CI steps: `.ci/run` installs what they need and
//! then runs this (a CI step is one edit here).

use anyhow::Result;

pub fn run() -> Result<()> {
    // Formatting, lints (`--locked`: Cargo.lock must be up to date, not
    // rewritten by the build), man pages (mandoc lint, no drift from the
    // code), the generated benchmark page (no drift from
    // bench/results/*.json) and unit files (systemd-analyze verify, security
    // exposure), then the README's test command.
    crate::cargo(&["fmt", "--all", "--check"])?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])?;
    crate::cargo(&["xtask", "man", "--check"])?;
    crate::cargo(&["xtask", "bench", "--render", "--check"])?;
    crate::cargo(&["xtask", "units"])?;
    // A bounded, coverage-guided fuzz run of the config parser (cargo-fuzz on
    // the stable toolchain; installs cargo-fuzz first if needed): about 3
    // minutes with the install and build. Fails on a panic, a hang, or a
    // rejection without file:line.
    crate::cargo(&["xtask", "fuzz", "--seconds", "60"])?;
    // Every test on the host's systemd (252), then the sandboxed tests again
    // on the systemd of a Debian 13 root (257, the native fd hand-off); the
    // first run on a machine builds that root with mmdebstrap (about a
    // minute).
    crate::test::run(crate::test::Which::Both, &[])?;
    // The README's other command: the demo must keep working on a fresh
    // clone too.
    crate::demo::run()?;
    // The Debian package (README, "Installing"): release build, lintian (no
    // errors or warnings), and its install test, which installs it into the
    // sandbox's Debian 13 root, follows the README's tour and purges it again.
    crate::deb::run(&crate::deb::Options {
        no_build: false,
        check: true,
        test: true,
    })
}
