//! `cargo xtask fuzz [--seconds N]`: a bounded, coverage-guided run of the config
//! parser's fuzz target (`fuzz/fuzz_targets/parse.rs`, cargo-fuzz/libFuzzer).
//!
//! * Installs `cargo-fuzz` from crates.io if it is missing.
//! * Builds on the toolchain at hand with `RUSTC_BOOTSTRAP=1`: cargo-fuzz needs
//!   nightly-only flags (`-Zsanitizer=address`), and these machines have one
//!   stable toolchain with no way to fetch a nightly; the stable toolchain ships
//!   the sanitizer runtimes, so only the feature gate is in the way.
//! * Seeds libFuzzer with the real-world corpus (`crates/config/tests/corpus`,
//!   drop-ins joined to their main file with the target's 0xFF separator) and
//!   the golden test configs; new inputs accumulate in `fuzz/corpus/parse`
//!   (ignored by git) from run to run.
//! * Fails on any crash: a panic, an invariant of
//!   `crates/config/tests/support/invariants.rs` (every rejection names the file
//!   and a line), an input that takes more than 5 s (`-timeout`: a hang), or an
//!   ASan report. The whole run is bounded by a watchdog as well.

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Per-input time limit: anything slower is reported as a hang.
const INPUT_TIMEOUT_SECS: u64 = 5;
/// Largest input libFuzzer generates (a long config with drop-ins).
const MAX_LEN: usize = 16 * 1024;

pub fn run(seconds: u64) -> Result<()> {
    let root = crate::root().canonicalize()?;
    let fuzz_dir = root.join("fuzz");
    ensure_cargo_fuzz()?;

    let seeds = root.join("target/fuzz-seeds/parse");
    let n = write_seeds(&root, &seeds)?;
    let corpus = fuzz_dir.join("corpus/parse");
    fs::create_dir_all(&corpus)?;
    let artifacts = fuzz_dir.join("artifacts/parse");
    fs::create_dir_all(&artifacts)?;
    println!(
        "fuzz: {n} seeds from the config corpus and golden tests, {} inputs kept from earlier runs",
        fs::read_dir(&corpus)?.count()
    );

    let cargo_fuzz = |args: &[&str]| {
        let mut c = Command::new(cargo_bin());
        c.arg("fuzz")
            .args(args)
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1");
        c
    };
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz build parse --debug-assertions");
    let status = cargo_fuzz(&["build", "parse", "--debug-assertions"]).status()?;
    if !status.success() {
        bail!("building the fuzz target failed: {status}");
    }

    let log_path = root.join("target/fuzz-parse.log");
    let log = fs::File::create(&log_path)?;
    let libfuzzer_args = [
        format!("-max_total_time={seconds}"),
        format!("-timeout={INPUT_TIMEOUT_SECS}"),
        format!("-max_len={MAX_LEN}"),
        "-rss_limit_mb=2048".to_string(),
        "-print_final_stats=1".to_string(),
    ];
    let mut args: Vec<String> = [
        "run",
        "parse",
        "--debug-assertions",
        &corpus.display().to_string(),
        &seeds.display().to_string(),
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(libfuzzer_args);
    let shown: Vec<&str> = args.iter().map(String::as_str).collect();
    eprintln!("$ RUSTC_BOOTSTRAP=1 cargo fuzz {}", shown.join(" "));
    let started = Instant::now();
    let mut child = cargo_fuzz(&shown)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        // Own process group, so the watchdog can end cargo-fuzz and the target.
        .process_group(0)
        .spawn()
        .context("running cargo fuzz")?;
    // libFuzzer stops itself after -max_total_time; the watchdog covers a
    // target stuck outside libFuzzer's control.
    let limit = Duration::from_secs(seconds + 2 * INPUT_TIMEOUT_SECS + 60);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    let Some(status) = status else {
        tail(&text, 40);
        bail!(
            "the fuzz run did not end within {limit:?}; log: {}",
            log_path.display()
        );
    };
    if !status.success() {
        highlights(&text);
        let found: Vec<PathBuf> = fs::read_dir(&artifacts)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        bail!(
            "the fuzzer found a failing input ({status}); artifacts: {found:?}; full log: {}\n\
             reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run parse --debug-assertions ARTIFACT",
            log_path.display()
        );
    }
    let done = text
        .lines()
        .rev()
        .find(|l| l.starts_with("Done "))
        .unwrap_or("(no summary line)");
    let cov = text
        .lines()
        .rev()
        .find(|l| l.contains(" DONE ") || l.contains("\tDONE "))
        .unwrap_or("");
    println!("fuzz: {done}; {}", cov.trim());
    println!(
        "fuzz: no panic, no hang (> {INPUT_TIMEOUT_SECS} s per input), every rejection located; corpus now {} inputs",
        fs::read_dir(&corpus)?.count()
    );
    Ok(())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let have = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("$ cargo install cargo-fuzz --locked");
        let status = Command::new(cargo_bin())
            .args(["install", "cargo-fuzz", "--locked"])
            .status()?;
        if !status.success() {
            bail!("cargo install cargo-fuzz failed: {status}");
        }
    }
    Ok(())
}

/// Writes one seed per corpus case (main file, then each drop-in after a 0xFF
/// byte) and per golden config file; returns how many.
fn write_seeds(root: &Path, seeds: &Path) -> Result<usize> {
    let _ = fs::remove_dir_all(seeds);
    fs::create_dir_all(seeds)?;
    let mut n = 0;
    let corpus = root.join("crates/config/tests/corpus");
    for entry in fs::read_dir(&corpus).with_context(|| format!("{}", corpus.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".socket") || !path.is_file() {
            continue;
        }
        let mut seed = fs::read(&path)?;
        let mut dropins: Vec<PathBuf> = fs::read_dir(corpus.join(format!("{name}.d")))
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dropins.sort();
        for d in dropins {
            seed.push(0xff);
            seed.extend(fs::read(&d)?);
        }
        fs::write(seeds.join(format!("corpus-{name}")), seed)?;
        n += 1;
    }
    // The golden cases: every regular config file and drop-in, one seed each.
    let mut stack = vec![root.join("crates/config/tests")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() && path != corpus {
                stack.push(path);
            } else if ft.is_file()
                && path
                    .extension()
                    .is_some_and(|e| e == "socket" || e == "conf")
                && !path.starts_with(&corpus)
            {
                n += 1;
                fs::write(seeds.join(format!("golden-{n}")), fs::read(&path)?)?;
            }
        }
    }
    Ok(n)
}

/// What matters in a failed run's log: the panic message (the violated
/// invariant and the input), libFuzzer's verdict and where the input went.
fn highlights(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            for l in lines[i..].iter().take(4) {
                eprintln!("{l}");
            }
        } else if l.contains("ERROR: libFuzzer")
            || l.starts_with("SUMMARY:")
            || l.contains("Test unit written to")
            || l.starts_with("==") && l.contains("ERROR")
        {
            eprintln!("{l}");
        }
    }
}

fn tail(text: &str, lines: usize) {
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines)..] {
        eprintln!("{l}");
    }
}
