//! `distributectl verify FILE…`: offline checks of config files, no daemon needed.

use distribute_config::{load_file, ConfigError, SocketSpec};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The unit directories an admin or a package puts a template in, searched in
/// systemd's order (the first hit is the one systemd loads). The daemon asks
/// systemd itself; offline, this is the best guess.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// The outcome for one `NAME.socket` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The file as given.
    pub file: String,
    /// The drop-ins applied after it (`FILE.d/*.conf`, by file name).
    pub dropins: Vec<String>,
    /// Masked (empty, or a symlink to /dev/null): nothing to check.
    pub masked: bool,
    /// Problems, each `file:line: …`; empty if the config is valid.
    pub errors: Vec<Problem>,
    /// How the instances would start: `transient` (the config has `[Service]`)
    /// or `template` (it has none); "" if the config is invalid or masked.
    pub mode: String,
    /// The template's unit file found in [`UNIT_DIRS`], if any.
    pub unit_file: Option<String>,
    /// What the mode means for this config, one line for people.
    pub summary: String,
    /// What is used, one line each: the description and every listener with
    /// what becomes of it (distributed over N sockets, or a shared companion).
    pub used: Vec<String>,
    /// What is accepted and ignored (`[Unit]` ordering and dependencies,
    /// `[Install]`), each `file:line: …`.
    pub ignored: Vec<String>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// File the problem is in.
    pub file: String,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// Key of the assignment, if any.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The whole `file:line: Key=value: message` text.
    pub text: String,
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Self {
        Problem {
            file: e.file.display().to_string(),
            line: e.line,
            key: e.key.clone(),
            message: e.message.clone(),
            text: e.to_string(),
        }
    }
}

/// Checks `path` (a `NAME.socket` file) together with its drop-ins in
/// `PATH.d/*.conf`, the way the daemon would load them ([`load_file`]).
pub fn verify(path: &Path) -> Verified {
    verify_in(path, Path::new("/"))
}

/// [`verify`], with the unit directories looked up under `root`.
pub fn verify_in(path: &Path, root: &Path) -> Verified {
    let load = load_file(path);
    // Every refused key, not only the first: a copied unit shows all at once.
    let mut errors: Vec<Problem> = if load.masked {
        Vec::new()
    } else {
        load.errors.iter().map(Problem::from).collect()
    };
    let (mut mode, mut unit_file, mut summary) = (String::new(), None, String::new());
    let (mut used, mut ignored) = (Vec::new(), Vec::new());
    if let (Ok(spec), false) = (&load.result, load.masked) {
        used = uses(spec);
        ignored = spec.notices.iter().map(ToString::to_string).collect();
        unit_file = find_unit_file(root, &spec.template_unit()).map(|p| p.display().to_string());
        match describe_mode(spec, unit_file.as_deref()) {
            Ok((m, s)) => (mode, summary) = (m.to_string(), s),
            Err(problem) => errors.push(problem),
        }
    }
    Verified {
        file: path.display().to_string(),
        dropins: load
            .dropins
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        masked: load.masked,
        errors,
        mode,
        unit_file,
        summary,
        used,
        ignored,
    }
}

/// What of `spec` is used, for people.
fn uses(spec: &SocketSpec) -> Vec<String> {
    let n = match spec.distribute {
        distribute_config::Distribute::Count(n) => format!("{n}"),
        distribute_config::Distribute::Cpus => "one per CPU".to_string(),
    };
    let mut out = Vec::new();
    if let Some(d) = &spec.description {
        out.push(format!("Description={d}"));
    }
    for d in &spec.documentation {
        out.push(format!("Documentation={d}"));
    }
    for r in spec.fd_order() {
        out.push(match r {
            distribute_config::FdRef::Distributed(i) => {
                let l = &spec.listen[i];
                let key = l.kind.key();
                format!(
                    "{key}={}: distributed, one SO_REUSEPORT socket per instance ({n} instances)",
                    l.original
                )
            }
            distribute_config::FdRef::Companion(i) => {
                let c = &spec.companions[i];
                format!(
                    "{}={}: companion, bound once and shared by every instance (the kernel \
                     cannot distribute it)",
                    c.kind.key(),
                    c.path
                )
            }
        });
    }
    out
}

/// The text output of `distributectl verify`: (stdout, stderr). Stdout has, per
/// valid config, its mode, what is used and what is ignored; stderr every
/// problem (`file:line: Key=value: message`) and masked configs.
pub fn render_text(results: &[Verified]) -> (String, String) {
    let (mut out, mut err) = (String::new(), String::new());
    for r in results {
        if r.masked {
            err.push_str(&format!(
                "{}: config is masked (empty, or a symlink to /dev/null); not checked\n",
                r.file
            ));
        }
        for e in &r.errors {
            err.push_str(&e.text);
            err.push('\n');
        }
        if r.errors.is_empty() && !r.summary.is_empty() {
            out.push_str(&format!("{}: {}\n", r.file, r.summary));
            for u in &r.used {
                out.push_str(&format!("  used: {u}\n"));
            }
            for i in &r.ignored {
                out.push_str(&format!("  note: {i}\n"));
            }
        }
    }
    (out, err)
}

/// The template's unit file under `root`, in systemd's search order.
fn find_unit_file(root: &Path, template: &str) -> Option<PathBuf> {
    UNIT_DIRS
        .iter()
        .map(|d| root.join(d.trim_start_matches('/')).join(template))
        .find(|p| p.is_file())
}

/// The mode and its one-line summary, or the daemon's "both" refusal.
fn describe_mode(
    spec: &SocketSpec,
    unit_file: Option<&str>,
) -> Result<(&'static str, String), Problem> {
    let first = spec.instance_unit(0);
    let template = spec.template_unit();
    match (&spec.service_section, unit_file) {
        (Some(origin), Some(file)) => {
            let message = format!(
                "a [Service] section, but {file} exists too: systemd refuses transient \
                 instances of a template that has a unit file; remove the [Service] section \
                 (template mode) or remove or rename {file} (transient mode)"
            );
            Err(Problem {
                file: origin.file.display().to_string(),
                line: Some(origin.line),
                key: None,
                text: format!("{origin}: {message}"),
                message,
            })
        }
        (Some(_), None) => Ok((
            "transient",
            format!("transient mode: {first}, … are built from [Service]"),
        )),
        (None, Some(file)) => Ok((
            "template",
            format!("template mode: {first}, … are instances of {file}"),
        )),
        (None, None) => Ok((
            "template",
            format!(
                "template mode: no [Service] section, so {first}, … must be instances of a \
                 unit file {template}, and none was found in {}; systemd-distribute refuses \
                 the config until systemd can load one",
                UNIT_DIRS.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn tmp(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "distributectl-verify-{test}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const GOOD: &str =
        "[Socket]\nListenStream=8080\nDistribute=2\n\n[Service]\nExecStart=/bin/true\n";

    /// Golden: `tests/verify/NAME.socket` (socket units as distributions ship
    /// them, copied with `Distribute=` added or not) against `NAME.expected`,
    /// the exact text `distributectl verify` prints (stdout, then stderr), with
    /// templates looked up in `tests/verify/root`. `UPDATE_GOLDEN=1` rewrites.
    #[test]
    fn verify_output_golden() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify");
        let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "socket"))
            .collect();
        names.sort();
        assert!(names.len() >= 4, "{names:?}");
        let mut failures = Vec::new();
        for file in names {
            let v = verify_in(&file, &dir.join("root"));
            let (out, err) = render_text(&[v]);
            let got = format!("--- stdout\n{out}--- stderr\n{err}")
                .replace(&format!("{}/", dir.display()), "");
            let expected = file.with_extension("expected");
            if update {
                fs::write(&expected, &got).unwrap();
                continue;
            }
            let want = fs::read_to_string(&expected).unwrap_or_default();
            if got != want {
                failures.push(format!("{}:\n{got}\nwant:\n{want}", file.display()));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn good_file_passes() {
        let d = tmp("good");
        let f = d.join("web.socket");
        fs::write(&f, GOOD).unwrap();
        let v = verify(&f);
        assert!(v.errors.is_empty(), "{v:?}");
        assert!(!v.masked);
        assert_eq!(v.mode, "transient");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn modes_follow_the_service_section_and_the_unit_file() {
        let d = tmp("modes");
        let units = d.join("root/usr/lib/systemd/system");
        fs::create_dir_all(&units).unwrap();
        let tpl = "[Socket]\nListenStream=8080\nService=app@shop-%i.service\n";
        fs::write(d.join("shop.socket"), tpl).unwrap();
        let v = verify_in(&d.join("shop.socket"), &d.join("root"));
        assert_eq!((v.mode.as_str(), v.errors.len()), ("template", 0), "{v:?}");
        assert!(v.summary.contains("none was found"), "{v:?}");
        fs::write(
            units.join("app@.service"),
            "[Service]\nExecStart=/bin/app\n",
        )
        .unwrap();
        let v = verify_in(&d.join("shop.socket"), &d.join("root"));
        assert_eq!(
            v.summary,
            format!(
                "template mode: app@shop-0.service, … are instances of {}",
                units.join("app@.service").display()
            )
        );
        // [Service] too: the daemon's refusal, at the section's first line.
        fs::write(
            d.join("shop.socket"),
            format!("{tpl}[Service]\nExecStart=/bin/true\n"),
        )
        .unwrap();
        let v = verify_in(&d.join("shop.socket"), &d.join("root"));
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert_eq!(v.errors[0].line, Some(5));
        assert!(v.errors[0].message.contains("exists too"), "{v:?}");
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_value_has_file_and_line() {
        let d = tmp("bad");
        let f = d.join("web.socket");
        fs::write(
            &f,
            "[Socket]\nListenStream=8080\nDistribute=0\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let v = verify(&f);
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert_eq!(v.errors[0].line, Some(3));
        assert!(
            v.errors[0]
                .text
                .starts_with(&format!("{}:3: Distribute=0:", f.display())),
            "{v:?}"
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn dropins_are_applied_in_order() {
        let d = tmp("dropins");
        let f = d.join("web.socket");
        fs::write(&f, GOOD).unwrap();
        fs::create_dir_all(d.join("web.socket.d")).unwrap();
        fs::write(
            d.join("web.socket.d/20-bad.conf"),
            "[Service]\nNoSuchKey=1\n",
        )
        .unwrap();
        fs::write(
            d.join("web.socket.d/10-ok.conf"),
            "[Socket]\nDistribute=3\n",
        )
        .unwrap();
        fs::write(d.join("web.socket.d/.hidden.conf"), "garbage").unwrap();
        fs::write(d.join("web.socket.d/30-masked.conf"), "").unwrap();
        let v = verify(&f);
        assert_eq!(v.dropins.len(), 2, "{v:?}");
        assert!(v.dropins[0].ends_with("10-ok.conf"));
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert!(v.errors[0].file.ends_with("20-bad.conf"), "{v:?}");
        assert_eq!(v.errors[0].line, Some(2));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn wrong_name_missing_and_masked() {
        let d = tmp("names");
        let f = d.join("web.conf");
        fs::write(&f, GOOD).unwrap();
        assert!(verify(&f).errors[0].message.contains("NAME.socket"));
        let missing = verify(&d.join("nope.socket"));
        assert!(
            missing.errors[0].message.starts_with("cannot read"),
            "{missing:?}"
        );
        let m = d.join("off.socket");
        fs::write(&m, "").unwrap();
        let v = verify(&m);
        assert!(v.masked && v.errors.is_empty());
        fs::remove_dir_all(d).unwrap();
    }
}
