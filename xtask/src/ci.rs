//! `cargo xtask ci`: everything CI (`.ci/run`) checks, in the order that fails fastest.

use anyhow::Result;

pub fn run() -> Result<()> {
    crate::cargo(&["fmt", "--all", "--check"])?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    crate::cargo(&["xtask", "man", "--check"])?;
    crate::cargo(&["xtask", "units"])?;
    crate::cargo(&["xtask", "fuzz", "--seconds", "60"])?;
    crate::test::run(crate::test::Which::Both, &[])?;
    // The README's other command must keep working on a fresh clone too.
    crate::demo::run()?;
    // The package: build, lintian, install test in the Debian 13 sandbox.
    crate::deb::run(&crate::deb::Options {
        no_build: false,
        check: true,
        test: true,
    })
}
