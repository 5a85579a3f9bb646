//! What must hold for every outcome of `parse_files`, whatever the input: shared by
//! the corpus test (`tests/corpus.rs`) and the cargo-fuzz target (`fuzz/`, which
//! includes this file by path), so the fuzzer checks exactly what CI checks.
//!
//! * A rejection names one of the input files, and a line in it (1-based, within
//!   the file), and renders as `FILE:LINE: …`. The only errors without a line are
//!   the two about something missing from every file (nothing to listen on,
//!   nothing to run): there is no line to point at, so they name the main file.
//! * An acceptance is a spec the activator can use as is: something to listen on
//!   (port != 0), an absolute command (or no `[Service]` at all: template mode),
//!   N in range, and the helpers the activator calls on it (instance names and
//!   their inverse, fd names, specifier expansion for every instance index,
//!   rendering) do not panic.
//! * Parsing is deterministic.

use std::path::Path;

use distribute_config::{
    parse_files, render_spec, ConfigError, Distribute, SocketSpec, MAX_DISTRIBUTE,
};

/// The whole-config errors: nothing to point at, so no line.
pub const LINELESS: &[&str] = &[
    "missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
    "missing ExecStart= in [Service]: nothing to run",
];

/// Parses `files` (main file first, then drop-ins) as config `name` and checks
/// every invariant; panics with the input on a violation. Returns the outcome.
pub fn check_parse(name: &str, files: &[(&Path, &str)]) -> Result<SocketSpec, ConfigError> {
    let outcome = parse_files(name, files);
    let again = parse_files(name, files);
    assert_eq!(outcome, again, "parsing is not deterministic: {files:?}");
    match &outcome {
        Ok(spec) => check_accepted(spec, files),
        Err(e) => check_rejected(e, files),
    }
    outcome
}

/// Invariants of a rejection.
pub fn check_rejected(e: &ConfigError, files: &[(&Path, &str)]) {
    let shown = e.to_string();
    let Some(&(_, text)) = files.iter().find(|(p, _)| *p == e.file.as_path()) else {
        panic!("error names a file that is not an input: {shown:?}\ninput: {files:?}");
    };
    assert!(!e.message.is_empty(), "empty message: {shown:?}");
    match e.line {
        Some(line) => {
            // `lines()` ignores a final newline, as an editor does; a line
            // number may still point just past it (an error at end of file).
            let last = text.split('\n').count();
            assert!(
                (1..=last).contains(&line),
                "line {line} is outside {} (1..={last}): {shown:?}\ninput: {files:?}",
                e.file.display()
            );
            let prefix = format!("{}:{line}: ", e.file.display());
            assert!(
                shown.starts_with(&prefix),
                "{shown:?} does not start with {prefix:?}"
            );
        }
        None => {
            assert!(
                LINELESS.contains(&e.message.as_str()),
                "rejection without a line: {shown:?}\ninput: {files:?}"
            );
            assert_eq!(
                e.file.as_path(),
                files[0].0,
                "a whole-config error names the main file"
            );
        }
    }
    if let Some(key) = &e.key {
        // A key may span a continued line (the backslash-newline becomes a
        // space), so look for each of its words.
        assert!(
            key.split_whitespace().all(|w| text.contains(w)),
            "error names key {key:?}, which is not in {}: {shown:?}",
            e.file.display()
        );
    }
}

/// Invariants of an acceptance.
pub fn check_accepted(spec: &SocketSpec, files: &[(&Path, &str)]) {
    let sources: Vec<&Path> = files.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        spec.sources.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        sources
    );
    assert!(
        !spec.listen.is_empty(),
        "accepted with nothing to listen on"
    );
    assert!(spec.listen.iter().all(|l| l.addr.port() != 0));
    match spec.exec.exec_start.first() {
        Some(first) => assert!(
            first.starts_with('/'),
            "relative command accepted: {first:?}"
        ),
        None => assert!(
            spec.service_section.is_none(),
            "accepted a [Service] section without ExecStart="
        ),
    }
    let n = match spec.distribute {
        Distribute::Count(n) => {
            assert!((1..=MAX_DISTRIBUTE).contains(&n), "Distribute={n} accepted");
            n
        }
        Distribute::Cpus => 4,
    };
    assert!(!spec.service.is_empty() && !spec.service.contains('@'));
    assert!(!spec.fd_name().is_empty());
    for i in [0, 1, n - 1, MAX_DISTRIBUTE - 1] {
        let unit = spec.instance_unit(i);
        assert_eq!(
            unit,
            format!(
                "{}@{}.service",
                spec.service,
                spec.instance.replacen("%i", &i.to_string(), 1)
            )
        );
        assert!(unit.len() <= 255, "instance name too long: {unit}");
        assert_eq!(spec.instance_index(&unit), Some(i), "{unit}");
        let exec = spec.exec.for_instance(&spec.name, i);
        assert_eq!(exec.exec_start.len(), spec.exec.exec_start.len());
        assert!(exec.exec_start.iter().take(1).all(|a| a.starts_with('/')));
    }
    assert!(render_spec(spec).contains("exec_start = "));
    assert_eq!(
        spec.instance_index(&format!("{}@x.service", spec.service)),
        None
    );
}
