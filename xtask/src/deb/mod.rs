//! `cargo xtask deb [--no-build] [--check] [--test]`: builds the Debian package
//! `target/deb/systemd-distribute_VERSION_ARCH.deb`, one package for Debian 12
//! and 13 that an admin installs with `apt-get install ./….deb`.
//!
//! The files are the tree of `cargo xtask install` ([`install::lay_out`] with
//! prefix `/usr`), made Debian-shaped: binaries stripped the way `dh_strip`
//! does, man pages and the changelog compressed with `gzip -9n`, the DEP-5
//! copyright, and an empty `/etc/systemd/distribute/` for the admin's configs.
//! The metadata and maintainer scripts live in `packaging/debian/`; dpkg-dev's
//! own tools fill in what depends on the build: `dpkg-shlibdeps` the libc6
//! (and libgcc-s1) versions the binaries' symbols need, `dpkg-gencontrol` the
//! architecture and `Installed-Size`. No debhelper: `dpkg-deb
//! --root-owner-group` builds the archive, so no fakeroot either.
//!
//! Deterministic: `SOURCE_DATE_EPOCH` (default: the time of the last commit) is
//! the mtime of every file and dpkg-deb's archive timestamp, so two builds of
//! one commit with the same toolchain are byte-identical.
//!
//! `--check` runs lintian and fails on any warning or error (overrides, each
//! with its reason, in `packaging/debian/lintian-overrides`). `--test` installs
//! the package into a Debian 13 root booted in the sandbox and follows the
//! README as an admin would, then purges it ([`install_test`]).

mod install_test;

use crate::install::{self, Layout};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// The binary package's name (and the source package's).
pub const PACKAGE: &str = "systemd-distribute";

/// The package ships release binaries (LTO: the activator's footprint is a
/// benchmark target).
const PROFILE: &str = "release";

/// Programs the build runs, with the Debian package that has them.
const TOOLS: &[(&str, &str)] = &[
    ("dpkg-deb", "dpkg"),
    ("dpkg-shlibdeps", "dpkg-dev"),
    ("dpkg-gencontrol", "dpkg-dev"),
    ("strip", "binutils"),
    ("gzip", "gzip"),
    ("md5sum", "coreutils"),
];

/// Maintainer scripts in `packaging/debian/`.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Licences packaging/debian/copyright carries; every crate linked into the
/// binaries must be available under these (see [`license_allows`]).
const LICENSES: &[&str] = &["MIT", "Apache-2.0", "Unicode-3.0"];

pub struct Options {
    /// Package the release binaries already built.
    pub no_build: bool,
    /// Run lintian on the package.
    pub check: bool,
    /// Install, use and purge the package in a sandboxed Debian 13.
    pub test: bool,
}

pub fn run(opts: &Options) -> Result<()> {
    let start = Instant::now();
    if !opts.no_build {
        install::build(PROFILE)?;
    }
    let deb = build()?;
    eprintln!("deb: built in {:.1} s", start.elapsed().as_secs_f64());
    println!("{}", deb.display());
    if opts.check {
        let t = Instant::now();
        lint(&deb)?;
        eprintln!("deb: lintian clean in {:.1} s", t.elapsed().as_secs_f64());
    }
    if opts.test {
        let t = Instant::now();
        install_test::run(&deb)?;
        eprintln!(
            "deb: install test passed in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Builds the package from the release binaries in `target/release`; returns
/// the path of the `.deb`.
pub fn build() -> Result<PathBuf> {
    for &(tool, pkg) in TOOLS {
        if !on_path(tool) {
            bail!("{tool} not found: apt-get install {pkg}");
        }
    }
    let root = crate::root();
    let packaging = root.join("packaging/debian");
    let version = changelog_version(&read(&packaging.join("changelog"))?)?;
    let cargo_version = env!("CARGO_PKG_VERSION");
    if version != cargo_version {
        bail!(
            "packaging/debian/changelog is at {version} but Cargo.toml at {cargo_version}: \
             add a changelog entry for {cargo_version} (dch -v {cargo_version})"
        );
    }
    check_licenses()?;
    let epoch = source_date_epoch()?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let arch = arch.trim();

    // dpkg-shlibdeps and dpkg-gencontrol work in a source tree: debian/control,
    // debian/changelog, and the package's files in debian/PACKAGE/.
    let target = distribute_sandbox::target_dir();
    let out_dir = target.join("deb");
    fs::create_dir_all(&out_dir)?;
    // Canonical, so the path printed is one an admin can paste.
    let out_dir = out_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", out_dir.display()))?;
    let work = out_dir.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let debian = work.join("debian");
    fs::create_dir_all(&debian)?;
    for f in ["control", "changelog"] {
        copy(&packaging.join(f), &debian.join(f), 0o644)?;
    }
    let pkg = debian.join(PACKAGE);

    let bin_dir = target.join(install::profile_dir(PROFILE));
    let files = install::lay_out(&Layout {
        bin_dir: bin_dir.clone(),
        stage: pkg.join("usr"),
        prefix: "/usr".into(),
    })?;
    let mut binaries = Vec::new();
    for &(name, dir) in install::BINARIES {
        let rel = PathBuf::from(format!("{dir}/{name}"));
        if !files.contains(&rel) {
            bail!(
                "{name} was not installed: the package needs every binary (build with \
                 cargo xtask deb, without --no-build)"
            );
        }
        binaries.push(PathBuf::from("usr").join(rel));
    }

    // dh_strip's treatment of executables: no symbols, no .comment/.note.
    for b in &binaries {
        run_tool(
            Command::new("strip")
                .args(["--remove-section=.comment", "--remove-section=.note"])
                .arg(pkg.join(b)),
        )?;
    }
    for page in install::MAN_PAGES {
        let section = page.rsplit('.').next().unwrap_or_default();
        gzip(&pkg.join(format!("usr/share/man/man{section}/{page}")))?;
    }
    // Debian's zsh searches /usr/share/zsh/vendor-completions, not
    // site-functions (that is /usr/local's, and other distributions' choice).
    let zsh = pkg.join("usr/share/zsh");
    if zsh.join("site-functions/_distributectl").is_file() {
        fs::create_dir_all(zsh.join("vendor-completions"))?;
        fs::rename(
            zsh.join("site-functions/_distributectl"),
            zsh.join("vendor-completions/_distributectl"),
        )?;
        fs::remove_dir(zsh.join("site-functions"))?;
    }
    let doc = pkg.join("usr/share/doc").join(PACKAGE);
    copy(&packaging.join("copyright"), &doc.join("copyright"), 0o644)?;
    // A native package (no Debian revision): changelog.gz, not changelog.Debian.gz.
    copy(&packaging.join("changelog"), &doc.join("changelog"), 0o644)?;
    gzip(&doc.join("changelog"))?;
    let overrides = packaging.join("lintian-overrides");
    if overrides.is_file() {
        let dest = pkg.join("usr/share/lintian/overrides").join(PACKAGE);
        fs::create_dir_all(dest.parent().unwrap())?;
        copy(&overrides, &dest, 0o644)?;
    }
    // The admin's configs go here; it exists so that the README's
    // `cp …/examples/http.socket /etc/systemd/distribute/` works. Nothing in it
    // is shipped, so there are no conffiles.
    fs::create_dir_all(pkg.join("etc/systemd/distribute"))?;

    let control_dir = pkg.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    for s in SCRIPTS {
        copy(&packaging.join(s), &control_dir.join(s), 0o755)?;
    }
    normalize_modes(&pkg)?;

    // Depends: the shared libraries the binaries link, at the versions their
    // symbols need (shlibs:Depends), then the control file with Installed-Size.
    let mut shlibdeps = Command::new("dpkg-shlibdeps");
    shlibdeps.arg("-Tdebian/substvars");
    for b in &binaries {
        shlibdeps.arg(format!("-edebian/{PACKAGE}/{}", b.display()));
    }
    run_tool(shlibdeps.current_dir(&work))?;
    run_tool(
        Command::new("dpkg-gencontrol")
            .arg(format!("-p{PACKAGE}"))
            .arg(format!("-Pdebian/{PACKAGE}"))
            .arg("-Tdebian/substvars")
            .current_dir(&work),
    )?;
    fs::set_permissions(
        control_dir.join("control"),
        fs::Permissions::from_mode(0o644),
    )?;
    write_md5sums(&pkg)?;
    set_mtimes(&pkg, epoch)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    let _ = fs::remove_file(&deb);
    run_tool(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&pkg)
            .arg(&deb)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    let control = output(Command::new("dpkg-deb").args(["-f"]).arg(&deb))?;
    for line in control.lines().filter(|l| {
        l.starts_with("Depends:") || l.starts_with("Installed-Size:") || l.starts_with("Version:")
    }) {
        eprintln!("deb: {line}");
    }
    Ok(deb)
}

/// `lintian` on the package: fails on any error or warning; info tags and
/// overrides are shown.
pub fn lint(deb: &Path) -> Result<()> {
    if !on_path("lintian") {
        bail!("lintian not found: apt-get install lintian");
    }
    let status = Command::new("lintian")
        .args([
            "--fail-on",
            "error,warning",
            "--display-info",
            "--show-overrides",
        ])
        .arg(deb)
        .status()
        .context("running lintian")?;
    if !status.success() {
        bail!(
            "lintian found problems in {} ({status}); fix them, or override one in \
             packaging/debian/lintian-overrides with a comment saying why",
            deb.display()
        );
    }
    Ok(())
}

/// The version in the first line of a Debian changelog:
/// `systemd-distribute (0.1.0) unstable; urgency=medium`.
fn changelog_version(text: &str) -> Result<String> {
    let first = text.lines().next().unwrap_or_default();
    let version = first
        .strip_prefix(PACKAGE)
        .and_then(|r| r.trim_start().strip_prefix('('))
        .and_then(|r| r.split_once(')'))
        .map(|(v, _)| v.to_string())
        .with_context(|| {
            format!(
                "packaging/debian/changelog: first line is not `{PACKAGE} (VERSION) …`: {first:?}"
            )
        })?;
    Ok(version)
}

/// `SOURCE_DATE_EPOCH` from the environment, else the committer time of HEAD.
fn source_date_epoch() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"));
    }
    let out = output(
        Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .current_dir(crate::root()),
    )
    .context("no SOURCE_DATE_EPOCH and no git history to take it from")?;
    out.trim()
        .parse()
        .with_context(|| format!("git log -1 --format=%ct printed {out:?}"))
}

/// Every crate linked into the packaged binaries must be available under a
/// licence of [`LICENSES`], whose texts the copyright file carries (it says
/// so). Proc-macro crates and build dependencies run only at build time and
/// are not linked, so neither they nor their dependencies count.
fn check_licenses() -> Result<()> {
    let host = output(Command::new("rustc").arg("-vV"))?;
    let host = host
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV printed no host triple")?
        .to_string();
    let meta = output(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--locked"])
            .args(["--filter-platform", &host])
            .current_dir(crate::root()),
    )?;
    let meta: serde_json::Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    let packages: std::collections::HashMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .context("cargo metadata: no packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("cargo metadata: no resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let is_proc_macro = |p: &serde_json::Value| {
        p["targets"].as_array().is_some_and(|ts| {
            ts.iter().any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
        })
    };
    let roots = ["systemd-distribute", "distribute-instance", "distributectl"];
    let mut stack: Vec<&str> = packages
        .iter()
        .filter(|(_, p)| roots.iter().any(|r| p["name"] == *r))
        .map(|(id, _)| *id)
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut bad = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let p = packages[id];
        let name = p["name"].as_str().unwrap_or("?");
        let license = p["license"].as_str().unwrap_or("");
        if !license_allows(license) {
            bad.push(format!("{name} {} ({license:?})", p["version"]));
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .is_some_and(|ks| ks.iter().any(|k| k["kind"].is_null()));
            let dep_id = dep["pkg"].as_str().unwrap_or_default();
            if normal && !packages.get(dep_id).is_some_and(|p| is_proc_macro(p)) {
                stack.push(dep_id);
            }
        }
    }
    if !bad.is_empty() {
        bail!(
            "crates linked into the packaged binaries under licences that \
             packaging/debian/copyright does not cover ({}); add the licence \
             there and to LICENSES in xtask/src/deb/mod.rs:\n  {}",
            LICENSES.join(", "),
            bad.join("\n  ")
        );
    }
    Ok(())
}

/// Whether an SPDX licence expression can be met with the licences of
/// [`LICENSES`]: `A OR B` if either can, `A AND B` if both can, `A WITH
/// EXCEPTION` if `A` can (an exception only adds permissions). The legacy `/`
/// separator counts as `OR`. Anything unparsable is not covered.
fn license_allows(expr: &str) -> bool {
    let spaced = expr
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let ok = spdx_or(&tokens, &mut pos);
    ok == Some(true) && pos == tokens.len()
}

/// `or := and ("OR" and)*`; `None` on a syntax error.
fn spdx_or(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut ok = spdx_and(t, pos)?;
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        ok |= spdx_and(t, pos)?;
    }
    Some(ok)
}

/// `and := term ("AND" term)*`
fn spdx_and(t: &[&str], pos: &mut usize) -> Option<bool> {
    let mut ok = spdx_term(t, pos)?;
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        ok &= spdx_term(t, pos)?;
    }
    Some(ok)
}

/// `term := "(" or ")" | ID ["WITH" ID]`
fn spdx_term(t: &[&str], pos: &mut usize) -> Option<bool> {
    let tok = *t.get(*pos)?;
    *pos += 1;
    let ok = if tok == "(" {
        let ok = spdx_or(t, pos)?;
        if t.get(*pos) != Some(&")") {
            return None;
        }
        *pos += 1;
        ok
    } else if ["OR", "AND", "WITH", ")"].contains(&tok) {
        return None;
    } else {
        LICENSES.contains(&tok)
    };
    if t.get(*pos) == Some(&"WITH") {
        t.get(*pos + 1)?;
        *pos += 2;
    }
    Some(ok)
}

/// Directories 0755; files must already be 0644 or 0755.
fn normalize_modes(dir: &Path) -> Result<()> {
    for entry in walk(dir)? {
        let meta = fs::symlink_metadata(&entry)?;
        if meta.is_dir() {
            fs::set_permissions(&entry, fs::Permissions::from_mode(0o755))?;
        } else {
            let mode = meta.permissions().mode() & 0o7777;
            if mode != 0o644 && mode != 0o755 {
                bail!("{} has mode {mode:o}, not 644 or 755", entry.display());
            }
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// `DEBIAN/md5sums`: `md5sum` of every file outside `DEBIAN/`, sorted, paths
/// relative to the package root (what `dpkg --verify` and debsums read).
fn write_md5sums(pkg: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = walk(pkg)?
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| p.strip_prefix(pkg).unwrap().to_path_buf())
        .filter(|p| !p.starts_with("DEBIAN"))
        .collect();
    files.sort();
    let sums = output(
        Command::new("md5sum")
            .arg("--")
            .args(&files)
            .current_dir(pkg),
    )?;
    let dest = pkg.join("DEBIAN/md5sums");
    fs::write(&dest, sums).with_context(|| format!("writing {}", dest.display()))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Sets the mtime of everything under `dir` (and `dir`) to `epoch`: tar stores
/// mtimes, and dpkg-deb clamps only the archive members' own timestamps.
fn set_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let mut all = walk(dir)?;
    all.push(dir.to_path_buf());
    for p in all {
        // Opening read-only works for directories too; futimens sets the time.
        fs::File::open(&p)
            .and_then(|f| f.set_modified(when))
            .with_context(|| format!("setting the mtime of {}", p.display()))?;
    }
    Ok(())
}

/// Everything below `dir` (not `dir` itself), depth first; no symlinks expected.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_symlink() {
                bail!("unexpected symlink {}", entry.path().display());
            }
            if ft.is_dir() {
                stack.push(entry.path());
            }
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// `gzip -9n FILE` (no name, no timestamp in the header: reproducible).
fn gzip(file: &Path) -> Result<()> {
    run_tool(Command::new("gzip").args(["-9nf", "--"]).arg(file))
}

fn copy(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn read(p: &Path) -> Result<String> {
    fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// Whether `program` is an executable in `$PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Runs a tool; its output goes to ours; fails on a non-zero exit.
fn run_tool(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a tool and returns its stdout; fails on a non-zero exit, with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_versions() {
        assert_eq!(
            changelog_version("systemd-distribute (0.1.0) unstable; urgency=medium\n").unwrap(),
            "0.1.0"
        );
        assert!(changelog_version("other (1.0) unstable\n").is_err());
        assert!(changelog_version("").is_err());
    }

    #[test]
    fn the_changelog_matches_cargo() {
        let text = read(&crate::root().join("packaging/debian/changelog")).unwrap();
        assert_eq!(changelog_version(&text).unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn licence_expressions() {
        assert!(license_allows("MIT"));
        assert!(license_allows("MIT OR Apache-2.0"));
        assert!(license_allows("Apache-2.0 OR BSD-3-Clause"));
        assert!(license_allows("Unlicense OR MIT"));
        assert!(license_allows("MIT/Apache-2.0"));
        assert!(license_allows(
            "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT"
        ));
        assert!(license_allows("(MIT OR Apache-2.0) AND Unicode-3.0"));
        assert!(!license_allows("(MIT OR Apache-2.0) AND BSD-2-Clause"));
        assert!(!license_allows("GPL-3.0"));
        assert!(!license_allows("GPL-3.0 WITH Classpath-exception-2.0"));
        assert!(!license_allows(""));
        assert!(!license_allows("MIT OR"));
        assert!(!license_allows("(MIT"));
        assert!(!license_allows("MIT Apache-2.0"));
    }
}
