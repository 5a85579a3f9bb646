//! Fuzz target: `distribute_config::parse_files` (and so `parse_str`) on arbitrary
//! bytes, cut into a main file and up to three drop-ins at 0xFF bytes (which never
//! occur in UTF-8, so a seed config stays one file).
//!
//! A panic anywhere, a hang (libFuzzer's -timeout), or a violated invariant of
//! `crates/config/tests/support/invariants.rs` (every rejection names an input
//! file and a line in it; every acceptance is usable) is a crash.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/config/tests/support/invariants.rs"]
mod invariants;

const MAIN: &str = "/etc/systemd/distribute/web.socket";
const DROPINS: [&str; 3] = [
    "/etc/systemd/distribute/web.socket.d/10-a.conf",
    "/run/systemd/distribute/web.socket.d/20-b.conf",
    "/usr/lib/systemd/distribute/web.socket.d/30-c.conf",
];

fuzz_target!(|data: &[u8]| {
    let texts: Vec<String> = data
        .split(|&b| b == 0xff)
        .take(1 + DROPINS.len())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect();
    let paths = std::iter::once(MAIN).chain(DROPINS);
    let files: Vec<(&Path, &str)> = paths
        .zip(&texts)
        .map(|(p, t)| (Path::new(p), t.as_str()))
        .collect();
    let _ = invariants::check_parse("web", &files);
});
