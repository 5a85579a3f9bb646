//! `cargo xtask test`: the README's test command.
//!
//! The integration tests install the workspace's binaries (activator, exec shim,
//! demo instances) into a sandboxed systemd, so they are built first.

use anyhow::Result;

pub fn run(extra: &[String]) -> Result<()> {
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let mut args = vec!["test", "--workspace"];
    args.extend(extra.iter().map(String::as_str));
    crate::cargo(&args)
}
