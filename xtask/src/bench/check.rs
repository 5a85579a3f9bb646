//! `cargo xtask bench --render --check`: docs/benchmarks.md and its charts are
//! generated from bench/results/*.json and must not be edited by hand; this
//! renders them into a scratch directory and fails if the committed files
//! differ, like `cargo xtask man --check` does for the man pages.
//!
//! The charts are compared byte for byte too: plotters' SVG backend (without
//! its `ttf` feature, so no font metrics from the machine) writes the same
//! bytes for the same data, checked by rendering the committed results twice.

use anyhow::{bail, Result};
use std::collections::BTreeSet;
use std::path::Path;

pub(super) fn run() -> Result<()> {
    let root = crate::root();
    let docs = root.join("docs");
    let scratch = root.join("target/bench-render-check");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    let fresh = scratch.join("docs");
    std::fs::create_dir_all(&fresh)?;
    super::report::render_to(&fresh)?;

    let mut problems = Vec::new();
    compare(
        &docs.join("benchmarks.md"),
        &fresh.join("benchmarks.md"),
        &mut problems,
    );
    let (have, want) = (
        svgs(&docs.join("benchmarks"))?,
        svgs(&fresh.join("benchmarks"))?,
    );
    for name in want.difference(&have) {
        problems.push(format!("docs/benchmarks/{name}: missing"));
    }
    for name in have.difference(&want) {
        problems.push(format!(
            "docs/benchmarks/{name}: no longer rendered from bench/results (stale)"
        ));
    }
    for name in want.intersection(&have) {
        compare(
            &docs.join("benchmarks").join(name),
            &fresh.join("benchmarks").join(name),
            &mut problems,
        );
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "docs/benchmarks.md or its charts differ from what bench/results/*.json render to \
             (see `diff -ru docs target/bench-render-check/docs`); they are generated: run \
             `cargo xtask bench --render` and commit the result, or change the renderer \
             (xtask/src/bench/report.rs), not the page"
        );
    }
    std::fs::remove_dir_all(&scratch)?;
    println!("docs/benchmarks.md and docs/benchmarks/*.svg match bench/results/*.json");
    Ok(())
}

/// The `*.svg` file names in `dir` (none if it does not exist).
fn svgs(dir: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".svg") {
            out.insert(name);
        }
    }
    Ok(out)
}

/// Adds a problem if `committed` differs from `rendered`: for text, the first
/// line that differs.
fn compare(committed: &Path, rendered: &Path, problems: &mut Vec<String>) {
    let shown = committed
        .strip_prefix(crate::root())
        .unwrap_or(committed)
        .display()
        .to_string();
    let (Ok(have), Ok(want)) = (std::fs::read(committed), std::fs::read(rendered)) else {
        problems.push(format!("{shown}: missing"));
        return;
    };
    if have == want {
        return;
    }
    let (have, want) = (
        String::from_utf8_lossy(&have),
        String::from_utf8_lossy(&want),
    );
    let (mut h, mut w) = (have.lines(), want.lines());
    let mut n = 1;
    loop {
        match (h.next(), w.next()) {
            (Some(a), Some(b)) if a == b => n += 1,
            (None, None) => {
                problems.push(format!("{shown}: differs in line endings"));
                return;
            }
            (a, b) => {
                problems.push(format!(
                    "{shown}:{n}: differs\n  committed: {}\n  rendered:  {}",
                    a.unwrap_or("(end of file)"),
                    b.unwrap_or("(end of file)")
                ));
                return;
            }
        }
    }
}
