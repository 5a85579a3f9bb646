//! `cargo xtask install --destdir DIR [--prefix /usr] [--profile release]`: lays
//! out everything a distribution package of systemd-distribute ships, under
//! `DIR/PREFIX`, with paths inside the files rewritten to `PREFIX`.
//!
//! ```text
//! bin/distributectl
//! lib/systemd/systemd-distribute               the daemon
//! lib/systemd/systemd-distribute-exec          exec shim, found next to the daemon
//! lib/systemd/systemd-distribute-handoff       template-mode hand-off helper, next to the daemon
//! lib/systemd-distribute/distribute-{hello,echo}   demo instances
//! lib/systemd/system/systemd-distribute.service
//! share/dbus-1/system.d/org.distribute1.conf
//! share/man/man{1,5,8}/...
//! share/doc/systemd-distribute/{README.md,examples/...}
//! share/bash-completion/completions/distributectl
//! share/zsh/site-functions/_distributectl
//! share/fish/vendor_completions.d/distributectl.fish
//! ```

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the examples' `ExecStart=` expects the demo instances.
const EXAMPLES_LIBEXEC: &str = "/usr/lib/systemd-distribute";

/// The daemon's path in the shipped unit file.
const UNIT_EXEC_START: &str = "/usr/lib/systemd/systemd-distribute";

/// Binaries and where they go, relative to the prefix.
pub const BINARIES: &[(&str, &str)] = &[
    ("systemd-distribute", "lib/systemd"),
    ("systemd-distribute-exec", "lib/systemd"),
    ("systemd-distribute-handoff", "lib/systemd"),
    ("distribute-hello", "lib/systemd-distribute"),
    ("distribute-echo", "lib/systemd-distribute"),
    ("distributectl", "bin"),
];

/// Man pages in `man/`.
pub const MAN_PAGES: &[&str] = &[
    "distributectl.1",
    "distribute.socket.5",
    "systemd-distribute.8",
];

/// Packages that build [`BINARIES`].
const PACKAGES: &[&str] = &["systemd-distribute", "distribute-instance", "distributectl"];

/// Shell completions: (shell, path relative to the prefix).
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "share/bash-completion/completions/distributectl"),
    ("zsh", "share/zsh/site-functions/_distributectl"),
    ("fish", "share/fish/vendor_completions.d/distributectl.fish"),
];

/// What to install and where.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Directory holding the built binaries (`target/release`).
    pub bin_dir: PathBuf,
    /// Where the files are written: `DESTDIR/PREFIX`.
    pub stage: PathBuf,
    /// The prefix as the installed system sees it (`/usr`), for paths inside files.
    pub prefix: String,
}

/// The `install` task: build (unless `no_build`), then [`lay_out`].
pub fn run(destdir: &Path, prefix: &str, profile: &str, no_build: bool) -> Result<()> {
    if !prefix.starts_with('/') {
        bail!("--prefix must be an absolute path, not {prefix:?}");
    }
    if !no_build {
        build(profile)?;
    }
    let destdir = if destdir.is_absolute() {
        destdir.to_path_buf()
    } else {
        std::env::current_dir()?.join(destdir)
    };
    let layout = Layout {
        bin_dir: distribute_sandbox::target_dir().join(profile_dir(profile)),
        stage: destdir.join(prefix.trim_start_matches('/')),
        prefix: prefix.trim_end_matches('/').to_string(),
    };
    let files = lay_out(&layout)?;
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!(
        "installed {} files under {} (prefix {})",
        files.len(),
        layout.stage.display(),
        layout.prefix
    );
    Ok(())
}

/// Builds the binaries of [`BINARIES`] with `profile`; they land in
/// `target/`[`profile_dir`]`(profile)`.
pub fn build(profile: &str) -> Result<()> {
    let mut args = vec!["build", "--profile", profile];
    for p in available_packages() {
        args.extend(["-p", p]);
    }
    crate::cargo(&args)
}

/// Cargo's output directory for a profile.
pub fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        p => p,
    }
}

/// Packages of [`PACKAGES`] that exist in this checkout (distributectl may not yet).
fn available_packages() -> Vec<&'static str> {
    PACKAGES
        .iter()
        .copied()
        .filter(|&p| p != "distributectl" || ctl_exists())
        .collect()
}

/// Whether the workspace has the distributectl crate.
pub fn ctl_exists() -> bool {
    crate::root().join("crates/ctl/Cargo.toml").is_file()
}

/// Writes the whole tree under `layout.stage`; returns the files written,
/// relative to it, sorted.
pub fn lay_out(layout: &Layout) -> Result<Vec<PathBuf>> {
    let root = crate::root();
    let mut w = Writer {
        stage: &layout.stage,
        written: Vec::new(),
    };
    let prefix = &layout.prefix;

    for &(name, dir) in BINARIES {
        let src = layout.bin_dir.join(name);
        if !src.is_file() {
            if name == "distributectl" && !ctl_exists() {
                eprintln!("*** distributectl is not part of this workspace yet: not installed ***");
                continue;
            }
            bail!(
                "{} is missing: build it first (cargo build --profile ... --bins)",
                src.display()
            );
        }
        w.copy(&src, &format!("{dir}/{name}"), 0o755)?;
    }

    let unit = read(&root.join("units/systemd-distribute.service"))?;
    if !unit.contains(&format!("ExecStart={UNIT_EXEC_START}\n")) {
        bail!("units/systemd-distribute.service: no line ExecStart={UNIT_EXEC_START} to rewrite");
    }
    let unit = unit.replace(
        &format!("ExecStart={UNIT_EXEC_START}\n"),
        &format!("ExecStart={prefix}/lib/systemd/systemd-distribute\n"),
    );
    w.write(
        "lib/systemd/system/systemd-distribute.service",
        &unit,
        0o644,
    )?;
    w.copy(
        &root.join("units/org.distribute1.conf"),
        "share/dbus-1/system.d/org.distribute1.conf",
        0o644,
    )?;

    for page in MAN_PAGES {
        let section = page.rsplit('.').next().unwrap_or_default();
        w.copy(
            &root.join("man").join(page),
            &format!("share/man/man{section}/{page}"),
            0o644,
        )?;
    }

    let doc = "share/doc/systemd-distribute";
    if root.join("README.md").is_file() {
        w.copy(&root.join("README.md"), &format!("{doc}/README.md"), 0o644)?;
    }
    for (rel, text) in example_files(&root.join("examples"))? {
        let text = text.replace(
            EXAMPLES_LIBEXEC,
            &format!("{prefix}/lib/systemd-distribute"),
        );
        w.write(&format!("{doc}/examples/{rel}"), &text, 0o644)?;
    }

    let ctl = layout.bin_dir.join("distributectl");
    if ctl.is_file() {
        for &(shell, rel) in COMPLETIONS {
            let out = Command::new(&ctl)
                .args(["completions", shell])
                .output()
                .with_context(|| format!("running {} completions {shell}", ctl.display()))?;
            if !out.status.success() || out.stdout.is_empty() {
                bail!(
                    "distributectl completions {shell} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            w.write_bytes(rel, &out.stdout, 0o644)?;
        }
    }

    w.written.sort();
    Ok(w.written)
}

/// Example files, recursively (`*.socket` and drop-in directories), as
/// (relative path, contents), sorted.
fn example_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if entry.file_type()?.is_dir() {
                stack.push((entry.path(), r));
            } else if name.ends_with(".socket") || name.ends_with(".conf") {
                out.push((r, read(&entry.path())?));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// Writes files under the stage, creating directories 0755.
struct Writer<'a> {
    stage: &'a Path,
    written: Vec<PathBuf>,
}

impl Writer<'_> {
    fn target(&mut self, rel: &str) -> Result<PathBuf> {
        let dest = self.stage.join(rel);
        let parent = dest.parent().expect("a file under the stage");
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        // Directories must be traversable by DynamicUser= instances and dbus-daemon.
        let mut d = parent;
        while d.starts_with(self.stage) {
            fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        let _ = fs::remove_file(&dest);
        self.written.push(PathBuf::from(rel));
        Ok(dest)
    }

    fn copy(&mut self, src: &Path, rel: &str, mode: u32) -> Result<()> {
        let dest = self.target(rel)?;
        fs::copy(src, &dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn write(&mut self, rel: &str, text: &str, mode: u32) -> Result<()> {
        self.write_bytes(rel, text.as_bytes(), mode)
    }

    fn write_bytes(&mut self, rel: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let dest = self.target(rel)?;
        fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The debug binaries `cargo xtask test` builds before running the tests;
    /// `None` (skip, loudly) when they are missing outside CI.
    pub(crate) fn debug_bins() -> Option<PathBuf> {
        let dir = distribute_sandbox::target_dir().join("debug");
        let missing: Vec<&str> = BINARIES
            .iter()
            .map(|&(b, _)| b)
            .filter(|&b| b != "distributectl" || ctl_exists())
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if missing.is_empty() {
            return Some(dir);
        }
        let msg = format!(
            "binaries {missing:?} are not built in {}: run the tests with `cargo xtask test`",
            dir.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
        None
    }

    /// A scratch directory under target/ (never /tmp), emptied first.
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let d = distribute_sandbox::target_dir()
            .join("xtask-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn installs_the_tree_a_package_ships() {
        let Some(bin_dir) = debug_bins() else { return };
        let dest = scratch("install");
        let layout = Layout {
            bin_dir,
            stage: dest.join("usr/local"),
            prefix: "/usr/local".into(),
        };
        let files = lay_out(&layout).unwrap();
        let has = |p: &str| files.iter().any(|f| f == Path::new(p));
        let mut want = vec![
            "lib/systemd/systemd-distribute",
            "lib/systemd/systemd-distribute-exec",
            "lib/systemd-distribute/distribute-hello",
            "lib/systemd-distribute/distribute-echo",
            "lib/systemd/system/systemd-distribute.service",
            "share/dbus-1/system.d/org.distribute1.conf",
            "share/man/man1/distributectl.1",
            "share/man/man5/distribute.socket.5",
            "share/man/man8/systemd-distribute.8",
            "share/doc/systemd-distribute/examples/echo.socket",
            "share/doc/systemd-distribute/examples/http.socket",
            "share/doc/systemd-distribute/examples/http@.service.d/hardening.conf",
        ];
        if ctl_exists() {
            want.extend([
                "bin/distributectl",
                "share/bash-completion/completions/distributectl",
                "share/zsh/site-functions/_distributectl",
                "share/fish/vendor_completions.d/distributectl.fish",
            ]);
        }
        for w in &want {
            assert!(has(w), "{w} not installed; got {files:#?}");
            let p = layout.stage.join(w);
            assert!(p.is_file(), "{} missing", p.display());
        }
        for f in &files {
            assert!(
                layout.stage.join(f).is_file(),
                "{} listed but missing",
                f.display()
            );
        }

        let mode = |p: &str| {
            fs::metadata(layout.stage.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("lib/systemd/systemd-distribute"), 0o755);
        assert_eq!(mode("lib/systemd-distribute/distribute-hello"), 0o755);
        assert_eq!(mode("share/man/man5/distribute.socket.5"), 0o644);
        assert_eq!(
            fs::metadata(layout.stage.join("share/man/man5"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );

        // Paths inside files follow the prefix.
        let unit = read(
            &layout
                .stage
                .join("lib/systemd/system/systemd-distribute.service"),
        )
        .unwrap();
        assert!(
            unit.contains("\nExecStart=/usr/local/lib/systemd/systemd-distribute\n"),
            "{unit}"
        );
        assert!(!unit.contains("ExecStart=/usr/lib/"), "{unit}");
        let http = read(
            &layout
                .stage
                .join("share/doc/systemd-distribute/examples/http.socket"),
        )
        .unwrap();
        assert!(
            http.contains("ExecStart=/usr/local/lib/systemd-distribute/distribute-hello"),
            "{http}"
        );
        // The daemon finds the shim next to itself.
        assert!(layout
            .stage
            .join("lib/systemd/systemd-distribute-exec")
            .is_file());

        // The installed binaries run.
        let out = Command::new(layout.stage.join("lib/systemd/systemd-distribute"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("systemd-distribute "));

        // Installing again over the same tree works (upgrades).
        assert_eq!(lay_out(&layout).unwrap(), files);
        fs::remove_dir_all(&dest).unwrap();
    }
}
