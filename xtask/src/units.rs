//! `cargo xtask units`: checks the unit files the way a distribution would.
//!
//! 1. Installs the tree ([`crate::install`]) under `target/xtask-units/` with
//!    that directory as the prefix, so every `ExecStart=` points at a real file.
//! 2. `systemd-analyze verify --man=no` on the installed
//!    `systemd-distribute.service`, and on an instance unit made from each
//!    example config together with its example drop-ins
//!    (`examples/NAME@.service.d/*.conf`), the way the activator would start it.
//!    Any message counts as a failure: verify reports unknown keys but exits 0.
//! 3. `systemd-analyze security --offline=yes` on the installed service, failing
//!    above [`MAX_EXPOSURE`].
//!
//! Nothing is installed on the host: verify and security read the files from
//! `target/`. The test below also runs the installed tree in the sandboxed
//! systemd (crates/sandbox) and measures the exposure of loaded units there.

use crate::install::{self, Layout};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Highest acceptable `systemd-analyze security` exposure of
/// systemd-distribute.service, in tenths (2.0 today: CAP_CHOWN and @chown for SocketUser=/SocketGroup= cost 0.3; see README.md).
pub const MAX_EXPOSURE: u32 = 20;

pub fn run() -> Result<()> {
    crate::cargo(&["build", "--bins"])?;
    // Canonical: paths in ExecStart= must be normalized (no "..").
    let target = distribute_sandbox::target_dir().canonicalize()?;
    let work = target.join("xtask-units");
    let _ = fs::remove_dir_all(&work);
    let stage = work.join("usr");
    let layout = Layout {
        bin_dir: target.join("debug"),
        prefix: stage.to_str().context("non-UTF-8 target dir")?.to_string(),
        stage: stage.clone(),
    };
    install::lay_out(&layout)?;

    let service = stage.join("lib/systemd/system/systemd-distribute.service");
    let mut problems = verify(&service)?;
    for (name, unit) in instance_units(&layout, &work.join("instances"))? {
        eprintln!("units: verifying {name} with its example drop-ins");
        problems.extend(verify(&unit)?);
    }

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(format!("--threshold={MAX_EXPOSURE}"))
        .arg(&service)
        .output()
        .context("running systemd-analyze security")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let overall = overall_exposure(&text).unwrap_or_else(|| "(no figure)".into());
    eprintln!("units: systemd-distribute.service exposure: {overall}");
    if !out.status.success() {
        problems.push(format!(
            "systemd-analyze security: exposure {overall} is above {}.{} (MAX_EXPOSURE):\n{text}{}",
            MAX_EXPOSURE / 10,
            MAX_EXPOSURE % 10,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("units: {p}");
        }
        bail!("{} problem(s) in the unit files", problems.len());
    }
    eprintln!("units: systemd-analyze verify clean");
    Ok(())
}

/// `systemd-analyze verify --man=no UNIT`; every line it prints is a problem.
fn verify(unit: &Path) -> Result<Vec<String>> {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--no-pager"])
        .arg(unit)
        .output()
        .context("running systemd-analyze verify")?;
    let mut problems: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("verify {}: {l}", unit.display()))
        .collect();
    if !out.status.success() && problems.is_empty() {
        problems.push(format!("verify {} failed: {}", unit.display(), out.status));
    }
    Ok(problems)
}

/// For each installed example `NAME.socket`: a unit `SERVICE@0.service` in `dir`
/// (from a template `SERVICE@.service` with the config's `[Service]` section and
/// the properties the activator adds, the command behind the exec shim), next
/// to a copy of the example drop-ins `SERVICE@.service.d/`. Returns
/// (config name, path of the instance unit to verify).
fn instance_units(layout: &Layout, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let examples = layout.stage.join("share/doc/systemd-distribute/examples");
    fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(&examples)? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".socket"))
        else {
            continue;
        };
        let text = fs::read_to_string(&path)?;
        let spec = distribute_config::parse_str(name, &path, &text)
            .map_err(|e| anyhow::anyhow!("example {}: {e}", path.display()))?;
        let service = text
            .split("[Service]")
            .nth(1)
            .context("example without [Service]")?
            .lines()
            .filter(|l| !l.trim_start().starts_with("ExecStart="))
            .collect::<Vec<_>>()
            .join("\n")
            // systemd's %N is the unit name; the activator's is the config name.
            .replace("%N", name);
        let argv: Vec<String> = spec.exec.exec_start.iter().map(|w| quote(w)).collect();
        let unit = format!(
            "[Unit]\nDescription={name} instance %i (systemd-distribute)\n\
             CollectMode=inactive-or-failed\n\n[Service]\n\
             ExecStart={prefix}/lib/systemd/systemd-distribute-exec {argv}\n\
             StandardOutput=journal\nStandardError=journal\n\
             Environment=DISTRIBUTE_INSTANCE=%i DISTRIBUTE_NAME={name}\n{service}\n",
            prefix = layout.prefix,
            argv = argv.join(" "),
        );
        let template = format!("{}@.service", spec.service);
        fs::write(dir.join(&template), unit)?;
        let dropins = examples.join(format!("{template}.d"));
        if dropins.is_dir() {
            let dest = dir.join(format!("{template}.d"));
            fs::create_dir_all(&dest)?;
            for d in fs::read_dir(&dropins)? {
                let d = d?;
                fs::copy(d.path(), dest.join(d.file_name()))?;
            }
        }
        out.push((
            name.to_string(),
            dir.join(format!("{}@0.service", spec.service)),
        ));
    }
    out.sort();
    Ok(out)
}

/// A word for an `ExecStart=` line.
fn quote(w: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.=:,@+".contains(c))
    {
        w.to_string()
    } else {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// "1.7 OK" from the last line of `systemd-analyze security`.
pub fn overall_exposure(text: &str) -> Option<String> {
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let rest = line.rsplit_once(": ")?.1;
    // Drop the emoji.
    Some(
        rest.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::tests::debug_bins;
    use distribute_sandbox::{boot_for_test, INNER_DIR};
    use distribute_tests::get_hello;
    use std::net::SocketAddr;
    use std::time::Duration;

    const PORT: u16 = 47_800;

    #[test]
    fn exposure_line() {
        let text =
            "✓ UMask= ...\n\n→ Overall exposure level for systemd-distribute.service: 1.7 OK 🙂\n";
        assert_eq!(overall_exposure(text).as_deref(), Some("1.7 OK"));
        assert_eq!(overall_exposure("nothing"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("/usr/bin/x"), "/usr/bin/x");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
    }

    /// The installed tree, unchanged, in a real (sandboxed) systemd: the shipped
    /// unit with its hardening starts, serves examples/http.socket from
    /// /run/systemd/distribute with the example hardening drop-in applied to the
    /// instances, and `systemd-analyze security` rates both.
    #[test]
    fn installed_tree_runs_in_the_sandbox_with_hardened_instances() {
        let Some(bin_dir) = debug_bins() else { return };
        let root = crate::root();
        let Some(sb) = boot_for_test(
            "xtask-installed-tree",
            &[root.join("units/org.distribute1.conf")],
        ) else {
            return;
        };
        let layout = Layout {
            bin_dir,
            stage: sb.dir().join("usr"),
            prefix: format!("{INNER_DIR}/usr"),
        };
        install::lay_out(&layout).unwrap();
        let unit = fs::read_to_string(
            layout
                .stage
                .join("lib/systemd/system/systemd-distribute.service"),
        )
        .unwrap();
        assert!(unit.contains(&format!(
            "ExecStart={INNER_DIR}/usr/lib/systemd/systemd-distribute\n"
        )));
        sb.install_unit("systemd-distribute.service", &unit)
            .unwrap();

        // The example config, in the runtime config directory, on a test port
        // and with an idle timeout long enough to look at the running instance.
        let docs = layout.stage.join("share/doc/systemd-distribute/examples");
        let config = fs::read_to_string(docs.join("http.socket"))
            .unwrap()
            .replace(
                "ListenStream=8080",
                &format!("ListenStream=127.0.0.1:{PORT}"),
            )
            .replace("--idle-timeout 5s", "--idle-timeout 60s");
        assert!(config.contains(&format!("127.0.0.1:{PORT}")), "{config}");
        let conf_dir = sb.host_path("/run/systemd/distribute");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::write(conf_dir.join("http.socket"), config).unwrap();
        let dropin_dir = sb.unit_dir().join("http@.service.d");
        fs::create_dir_all(&dropin_dir).unwrap();
        fs::copy(
            docs.join("http@.service.d/hardening.conf"),
            dropin_dir.join("hardening.conf"),
        )
        .unwrap();
        sb.systemctl(&["daemon-reload"]).unwrap();
        if let Err(e) = sb.systemctl(&["start", "systemd-distribute.service"]) {
            panic!("{e:#}\n{}", sb.journal(None));
        }

        let target = SocketAddr::from(([127, 0, 0, 1], PORT));
        let hello = match get_hello(target, Duration::from_secs(10)) {
            Ok(h) => h,
            Err(e) => panic!(
                "no answer from a hardened instance: {e:#}\n{}",
                sb.journal(None)
            ),
        };
        let instance = format!("http@{}.service", hello.instance);
        let show = sb
            .systemctl(&[
                "show",
                "-p",
                "PrivateNetwork",
                "-p",
                "DynamicUser",
                "-p",
                "DropInPaths",
                &instance,
            ])
            .unwrap();
        assert!(show.contains("PrivateNetwork=yes"), "{show}");
        assert!(show.contains("DynamicUser=yes"), "{show}");
        assert!(show.contains("hardening.conf"), "{show}");

        let security = |unit: &str| {
            let text = sb
                .run("systemd-analyze", &["security", "--no-pager", unit])
                .unwrap_or_else(|e| panic!("systemd-analyze security {unit}: {e:#}"));
            overall_exposure(&text).unwrap_or_else(|| panic!("no figure in:\n{text}"))
        };
        let daemon = security("systemd-distribute.service");
        let inst = security(&instance);
        eprintln!("exposure: systemd-distribute.service {daemon}; {instance} {inst}");
        let tenths = |s: &str| -> u32 {
            let n: f64 = s.split_whitespace().next().unwrap().parse().unwrap();
            (n * 10.0).round() as u32
        };
        assert!(
            tenths(&daemon) <= MAX_EXPOSURE,
            "systemd-distribute.service: {daemon}"
        );
        assert!(tenths(&inst) <= 5, "{instance}: {inst}");
        let active = sb
            .systemctl(&["is-active", "systemd-distribute.service"])
            .unwrap();
        assert_eq!(active.trim(), "active");
    }
}
