//! The install test of `cargo xtask deb --test` (to be written against the
//! Debian 13 sandbox).

use anyhow::{bail, Result};
use std::path::Path;

pub fn run(deb: &Path) -> Result<()> {
    bail!("install test of {} not written yet", deb.display())
}
