//! Golden tests: each `tests/NN-name/` directory is a root file system with config
//! directories (`etc/systemd/distribute/…`, `run/…`, `usr/lib/…`, drop-ins) and an
//! `expected` file holding the rendered load report. Paths in the output are shown
//! relative to the case directory, i.e. as they would appear on a real system.
//!
//! An optional `instances` file holding a number N adds the `[Service]` of instances
//! 0..N with specifiers expanded.
//!
//! `UPDATE_GOLDEN=1 cargo test -p distribute-config --test golden` rewrites `expected`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use distribute_config::{render_report, Loader, SYSTEM_DIRS};

/// Case directories: `NN-name`, sorted.
fn cases() -> Vec<PathBuf> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut cases: Vec<PathBuf> = fs::read_dir(&base)
        .expect("tests directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            p.is_dir()
                && name.len() > 3
                && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
                && name.as_bytes()[2] == b'-'
        })
        .collect();
    cases.sort();
    cases
}

/// The rendered report of one case, with the case directory stripped from paths.
fn render_case(case: &Path) -> String {
    let loader = Loader::with_dirs(case, SYSTEM_DIRS);
    let report = loader.load_report();
    let mut out = render_report(&report);

    if let Ok(n) = fs::read_to_string(case.join("instances")) {
        let n: u32 = n.trim().parse().expect("instances: a number");
        for spec in &report.specs {
            for i in 0..n {
                let e = spec.exec.for_instance(&spec.name, i);
                let _ = writeln!(out, "\n[{}] instance {i}", spec.instance_unit(i));
                let _ = writeln!(out, "exec_start = {:?}", e.exec_start);
                let _ = writeln!(out, "environment = {:?}", e.environment);
                let _ = writeln!(out, "user = {:?}", e.user);
                let _ = writeln!(out, "group = {:?}", e.group);
                let _ = writeln!(out, "working_directory = {:?}", e.working_directory);
                let _ = writeln!(out, "fd_name = {:?}", spec.fd_name());
            }
        }
    }
    out.replace(&case.display().to_string(), "")
}

#[test]
fn golden() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let cases = cases();
    assert!(cases.len() >= 10, "golden cases missing: {cases:?}");

    let mut failures = Vec::new();
    for case in &cases {
        let got = render_case(case);
        let expected_path = case.join("expected");
        if update {
            fs::write(&expected_path, &got).expect("write expected");
            continue;
        }
        let want = fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}: output differs from {}\n--- got ---\n{got}--- want ---\n{want}",
                case.display(),
                expected_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(run with UPDATE_GOLDEN=1 to accept)",
        failures.join("\n")
    );
}

/// `load(name)` agrees with `load_all()` on the same trees.
#[test]
fn load_by_name_matches_load_all() {
    for case in cases() {
        let loader = Loader::with_dirs(&case, SYSTEM_DIRS);
        let report = loader.load_report();
        for spec in &report.specs {
            assert_eq!(
                loader.load(&spec.name).as_ref(),
                Ok(spec),
                "{}",
                case.display()
            );
        }
        for m in &report.masked {
            let err = loader.load(&m.name).unwrap_err();
            assert!(err.message.contains("masked"), "{err}");
        }
    }
}
