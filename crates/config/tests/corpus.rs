//! A corpus of real-world-style `.socket` files (`tests/corpus/NAME.socket`, with
//! optional drop-ins `NAME.socket.d/*.conf`): unit files as people copy them from
//! distributions (knot-resolver, pgbouncer, ssh, cups, nginx, memcached, …), and
//! the same files converted to distribute configs. Each has `NAME.expected`:
//!
//! * `ok` and then the rendered spec, when it must parse;
//! * `error: ` and then the exact error, when it must be rejected.
//!
//! Files are parsed as if they were in `/etc/systemd/distribute/`, so errors show
//! the paths an admin would see. Every outcome also goes through the invariants
//! the fuzzer checks (`support/invariants.rs`). The corpus seeds `cargo xtask fuzz`.
//!
//! `UPDATE_CORPUS=1 cargo test -p distribute-config --test corpus` rewrites the
//! `.expected` files (review the diff: they are the specification).

#[path = "support/invariants.rs"]
mod invariants;

use std::fs;
use std::path::{Path, PathBuf};

use distribute_config::render_spec;

const DIR: &str = "/etc/systemd/distribute";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// `(name, [(path as shown, text)])`, main file first, drop-ins sorted.
fn cases() -> Vec<(String, Vec<(PathBuf, String)>)> {
    let dir = corpus_dir();
    let mut names: Vec<String> = fs::read_dir(&dir)
        .expect("tests/corpus")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".socket").map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let main = format!("{name}.socket");
            let read = |p: &Path| fs::read_to_string(p).expect("corpus file is UTF-8");
            let mut files = vec![(Path::new(DIR).join(&main), read(&dir.join(&main)))];
            let dropin_dir = dir.join(format!("{main}.d"));
            if let Ok(entries) = fs::read_dir(&dropin_dir) {
                let mut dropins: Vec<String> = entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".conf"))
                    .collect();
                dropins.sort();
                for d in dropins {
                    files.push((
                        Path::new(DIR).join(format!("{main}.d")).join(&d),
                        read(&dropin_dir.join(&d)),
                    ));
                }
            }
            (name, files)
        })
        .collect()
}

fn outcome(name: &str, files: &[(PathBuf, String)]) -> String {
    let borrowed: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    match invariants::check_parse(name, &borrowed) {
        Ok(spec) => format!("ok\n{}", render_spec(&spec)),
        Err(e) => format!("error: {e}\n"),
    }
}

#[test]
fn corpus() {
    let update = std::env::var("UPDATE_CORPUS").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 25, "corpus too small: {}", cases.len());
    let (mut ok, mut rejected) = (0, 0);
    let mut failures = Vec::new();
    for (name, files) in &cases {
        let got = outcome(name, files);
        if got.starts_with("ok\n") {
            ok += 1;
        } else {
            rejected += 1;
        }
        let expected = corpus_dir().join(format!("{name}.expected"));
        if update {
            fs::write(&expected, &got).expect("writing .expected");
            continue;
        }
        let want = fs::read_to_string(&expected).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{name}: outcome differs from {}\n--- got ---\n{got}--- want ---\n{want}",
                expected.display()
            ));
        }
    }
    println!("corpus: {ok} parse, {rejected} rejected as expected");
    assert!(ok >= 8 && rejected >= 8, "{ok} ok, {rejected} rejected");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every corpus file with its drop-ins appended as more drop-ins, in every order
/// of two: still no panic, and every rejection still located.
#[test]
fn corpus_pairs_keep_the_invariants() {
    let cases = cases();
    for (_, a) in &cases {
        for (_, b) in &cases {
            let files: Vec<(&Path, &str)> = a
                .iter()
                .map(|(p, t)| (p.as_path(), t.as_str()))
                .chain(std::iter::once((
                    Path::new("/etc/systemd/distribute/web.socket.d/99-other.conf"),
                    b[0].1.as_str(),
                )))
                .collect();
            let _ = invariants::check_parse("web", &files);
        }
    }
}
