//! A private, real systemd for integration tests and the demo.
//!
//! The machines we develop on do not run systemd as PID 1, so the harness boots
//! one: a fresh cgroup, then `unshare` into new PID, mount, cgroup, UTS and IPC
//! namespaces, tmpfs on /run, /tmp and /var/tmp, a cgroup2 mount of the new
//! cgroup namespace, and `/lib/systemd/systemd --system` with a unit path that
//! only the harness owns (see [`units`] for why that matters). The network
//! namespace is shared, so tests reach instances on 127.0.0.1 from outside.
//!
//! The systemd booted is the host's ([`Systemd::Host`], Debian 12: 252) or
//! that of a cached Debian 13 root ([`Systemd::Debian13`]: 257), as the root of
//! the same namespaces on a per-sandbox overlay (see [`debian`]); the
//! environment variable [`SYSTEMD_ENV`] picks one for the tests.
//!
//! Everything the harness creates lives under `target/sandbox/` and in its own
//! cgroup; dropping a [`Sandbox`] kills the namespace's PID 1 (which takes every
//! process in it down), removes the cgroup tree and the sandbox's overlay layer.

#![deny(missing_docs)]

pub mod debian;
pub mod units;

pub use debian::DEBIAN13_PACKAGES;

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Environment variable that turns a skipped sandbox test into a failure.
pub const CI_ENV: &str = "CI";

/// Where the harness directory appears inside the sandbox.
pub const INNER_DIR: &str = "/run/distribute-harness";

/// Environment variable that picks the systemd of [`Sandbox::boot`] and
/// [`boot_for_test`]: `host` (the default) or `debian13`.
pub const SYSTEMD_ENV: &str = "DISTRIBUTE_SANDBOX_SYSTEMD";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Which systemd a sandbox boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Systemd {
    /// The host's own `/lib/systemd/systemd` (252 on Debian 12).
    Host,
    /// The systemd of a cached Debian 13 root (257), booted on an overlay of it
    /// made the root of the sandbox's mount namespace.
    Debian13,
}

impl Systemd {
    /// Every variant, in the order `cargo xtask test` runs them.
    pub const ALL: [Systemd; 2] = [Systemd::Host, Systemd::Debian13];

    /// From [`SYSTEMD_ENV`]; unset or empty is [`Systemd::Host`].
    ///
    /// # Panics
    /// On any other value than `host` or `debian13`: a typo must not silently
    /// test the wrong systemd.
    pub fn from_env() -> Systemd {
        match std::env::var(SYSTEMD_ENV) {
            Err(std::env::VarError::NotPresent) => Systemd::Host,
            Ok(v) if v.is_empty() => Systemd::Host,
            Ok(v) => Systemd::parse(&v).unwrap_or_else(|| {
                panic!("{SYSTEMD_ENV}={v:?} is not valid: use \"host\" or \"debian13\"")
            }),
            Err(e) => panic!("{SYSTEMD_ENV}: {e}: use \"host\" or \"debian13\""),
        }
    }

    /// The inverse of [`Systemd::as_str`].
    pub fn parse(s: &str) -> Option<Systemd> {
        Systemd::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// `host` or `debian13`, as in [`SYSTEMD_ENV`].
    pub fn as_str(&self) -> &'static str {
        match self {
            Systemd::Host => "host",
            Systemd::Debian13 => "debian13",
        }
    }
}

impl std::fmt::Display for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A running private systemd.
pub struct Sandbox {
    name: String,
    dir: PathBuf,
    cgroup: PathBuf,
    unshare: Child,
    pid1: i32,
    systemd: Systemd,
    version: u32,
}

/// Why the sandbox of [`Systemd::from_env`] cannot run on this machine (not
/// root, tools missing, no Debian 13 root).
pub fn unavailable_reason() -> Option<String> {
    unavailable_reason_on(Systemd::from_env())
}

/// Why a sandbox booting `systemd` cannot run on this machine. For
/// [`Systemd::Debian13`] this builds the cached root first if needed (about a
/// minute, once per machine), since a root that cannot be built (mmdebstrap
/// not installable, mirror unreachable) is a missing prerequisite like a
/// missing tool.
pub fn unavailable_reason_on(systemd: Systemd) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("the sandbox needs root (namespaces, cgroups, mounts)".into());
    }
    let tools: &[&str] = match systemd {
        Systemd::Host => &[
            "/lib/systemd/systemd",
            "/usr/bin/dbus-daemon",
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
        ],
        // systemd and dbus-daemon come from the root.
        Systemd::Debian13 => &[
            "/usr/bin/unshare",
            "/usr/bin/nsenter",
            "/usr/sbin/pivot_root",
        ],
    };
    for tool in tools {
        if !Path::new(tool).exists() {
            return Some(format!(
                "{tool} is missing (apt-get install systemd dbus util-linux coreutils)"
            ));
        }
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified".into());
    }
    if systemd == Systemd::Debian13 {
        if let Err(e) = debian::debian13_root() {
            return Some(format!("no Debian 13 root: {e}"));
        }
    }
    None
}

/// Boots a sandbox (systemd from [`Systemd::from_env`]) for a test, or reports
/// loudly that the test is skipped.
///
/// Under `CI=true` a machine that cannot run the sandbox is a failure, not a skip.
/// A boot failure on a capable machine always panics: that is a real bug.
pub fn boot_for_test(name: &str, dbus_policies: &[PathBuf]) -> Option<Sandbox> {
    let systemd = Systemd::from_env();
    if let Some(reason) = unavailable_reason_on(systemd) {
        if std::env::var(CI_ENV).as_deref() == Ok("true") {
            panic!("sandbox test {name} ({systemd} systemd) cannot run under CI=true: {reason}");
        }
        let line = format!("SKIPPED {name} ({systemd} systemd): {reason}");
        eprintln!("\n*** {line} ***\n");
        record_skip(&line);
        return None;
    }
    match Sandbox::boot_on(name, dbus_policies, systemd) {
        Ok(s) => Some(s),
        Err(e) => {
            panic!("sandbox test {name}: booting the private systemd ({systemd}) failed: {e:#}")
        }
    }
}

/// Where skipped sandbox tests are listed, one line each: the test harness
/// captures a passing test's output, so `cargo xtask test` reads this file to
/// say in its summary which tests did not run.
pub fn skip_log() -> PathBuf {
    target_dir().join("sandbox-skipped.txt")
}

fn record_skip(line: &str) {
    use std::io::Write;
    let appended = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(e) = appended {
        eprintln!("(cannot record the skip in {}: {e})", skip_log().display());
    }
}

fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && is_cgroup2(p))
}

fn is_cgroup2(p: &Path) -> bool {
    // cgroup2 has cgroup.controllers; a v1 hierarchy does not.
    p.join("cgroup.controllers").exists()
}

/// The workspace's target directory, where the harness keeps its state.
pub fn target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// The script run as PID 1 of the new namespaces before it execs systemd.
///
/// The harness directory is bind-mounted at [`INNER_DIR`] before /tmp is covered,
/// so the sandbox sees the harness's files (units, configs, binaries) wherever
/// the checkout lives: under /tmp (hidden by the fresh tmpfs) or under /root
/// (hidden from `DynamicUser=` services by `ProtectHome=`).
const INIT_SCRIPT: &str = r#"set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/distribute-harness
mount --bind "$SANDBOX_HARNESS_DIR" /run/distribute-harness
unset SANDBOX_HARNESS_DIR
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp
# StateDirectory=/CacheDirectory= of instances (and DynamicUser='s private/
# directories) must not land on the host.
mount -t tmpfs -o mode=755 tmpfs /var/lib
mount -t tmpfs -o mode=755 tmpfs /var/cache
if [ -d /var/log/journal ]; then mount -t tmpfs -o mode=755 tmpfs /var/log/journal; fi
mkdir -p /run/systemd/system /run/dbus /run/systemd/journald.conf.d
printf '%s' "$SANDBOX_JOURNALD_CONF" > /run/systemd/journald.conf.d/50-sandbox.conf
unset SANDBOX_JOURNALD_CONF
umount -l /sys/fs/cgroup
mount -t cgroup2 none /sys/fs/cgroup
exec /lib/systemd/systemd --system --unit=harness.target
"#;

/// PID 1 of the new namespaces for [`Systemd::Debian13`]: the design's chroot
/// recipe, on an overlay so the cached root stays pristine, and with
/// pivot_root instead of chroot (see the end of the script).
///
/// Unlike the host's systemd, /var/lib and /var/cache stay the root's own
/// (apt and dpkg need them): the overlay already keeps every write, instances'
/// StateDirectory= included, away from the cache and the host.
const CHROOT_INIT_SCRIPT: &str = r#"set -e
R="$SANDBOX_ROOT"
# Writable and pristine: the cached root read-only below, this sandbox's own
# upper layer (under its harness directory) on top.
mount -t overlay overlay -o "lowerdir=$SANDBOX_LOWER,upperdir=$SANDBOX_UPPER,workdir=$SANDBOX_WORK" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount --make-rslave "$R/sys"
mount --rbind /dev "$R/dev"
mount --make-rslave "$R/dev"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mkdir -p "$R/run/distribute-harness"
# Not recursive: the overlay, mounted on a directory of the harness directory,
# does not show up again inside itself.
mount --bind "$SANDBOX_HARNESS_DIR" "$R/run/distribute-harness"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=1777 tmpfs "$R/var/tmp"
if [ -d "$R/var/log/journal" ]; then mount -t tmpfs -o mode=755 tmpfs "$R/var/log/journal"; fi
mkdir -p "$R/run/systemd/system" "$R/run/dbus" "$R/run/systemd/journald.conf.d"
printf '%s' "$SANDBOX_JOURNALD_CONF" > "$R/run/systemd/journald.conf.d/50-sandbox.conf"
# The rbind brought the host's cgroup mounts along; the sandbox gets a cgroup2
# mount of its own cgroup namespace instead.
umount -l "$R/sys/fs/cgroup"
mount -t cgroup2 none "$R/sys/fs/cgroup"
unset SANDBOX_ROOT SANDBOX_LOWER SANDBOX_UPPER SANDBOX_WORK SANDBOX_HARNESS_DIR SANDBOX_JOURNALD_CONF
# pivot_root rather than chroot: the kernel refuses new user namespaces to a
# chrooted process, so PrivateUsers= (e.g. the example hardening drop-in) would
# fail with "Failed to set up user namespacing: Operation not permitted".
# `pivot_root . .` stacks the old root on the new one; the lazy unmount drops it
# (in this mount namespace only), so nothing of the host's tree stays visible.
cd "$R"
/usr/sbin/pivot_root . .
umount -l .
cd /
exec /lib/systemd/systemd --system --unit=harness.target
"#;

impl Sandbox {
    /// Boots a private systemd, the one [`Systemd::from_env`] picks.
    /// `dbus_policies` are extra dbus-daemon policy files (e.g.
    /// `units/org.distribute1.conf`) made visible to the sandbox's bus.
    pub fn boot(name: &str, dbus_policies: &[PathBuf]) -> Result<Sandbox> {
        Sandbox::boot_on(name, dbus_policies, Systemd::from_env())
    }

    /// Boots a private `systemd` (see [`Sandbox::boot`]).
    pub fn boot_on(name: &str, dbus_policies: &[PathBuf], systemd: Systemd) -> Result<Sandbox> {
        if let Some(reason) = unavailable_reason_on(systemd) {
            bail!("cannot boot the sandbox ({systemd} systemd): {reason}");
        }
        let id = format!(
            "{}-{}-{}",
            name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let dir = target_dir().join("sandbox").join(&id);
        let dir = {
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()?
        };
        let unit_dir = dir.join("units");
        let empty_dir = dir.join("empty");
        fs::create_dir_all(&unit_dir)?;
        fs::create_dir_all(&empty_dir)?;
        // Services run under DynamicUser must be able to traverse to binaries and configs.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        write_harness_units(&unit_dir, &dir, dbus_policies)?;

        let root = cgroup2_root().context("no cgroup2 hierarchy")?;
        reap_orphans(&root);
        reap_orphan_overlays(&target_dir().join("sandbox"));
        let cgroup = root.join(format!("{CGROUP_PREFIX}{id}"));
        fs::create_dir(&cgroup).with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let procs = cgroup.join("cgroup.procs");

        let log = fs::File::create(dir.join("systemd.log"))?;
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args([
            "--pid",
            "--fork",
            "--mount",
            "--cgroup",
            "--uts",
            "--ipc",
            "--propagation",
            "private",
            "--mount-proc",
            "/bin/sh",
            "-c",
            match systemd {
                Systemd::Host => INIT_SCRIPT,
                Systemd::Debian13 => CHROOT_INIT_SCRIPT,
            },
        ])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("SANDBOX_HARNESS_DIR", &dir)
        // systemd's own runtime directories (all on the sandbox's tmpfs /run):
        // transient units (without it a daemon-reload loses the running
        // transient instances' unit files) and run-time property changes,
        // then the harness's units, then /run/systemd/system, where drop-ins
        // written at run time (e.g. the activator's hand-off drop-ins for
        // template units) must be found. Never /lib/systemd/system (see
        // `units`), and no trailing ':' (that would append the default path).
        .env(
            "SYSTEMD_UNIT_PATH",
            format!(
                "/run/systemd/system.control:/run/systemd/transient:{INNER_DIR}/units:/run/systemd/system"
            ),
        )
        // No generators: their output could mount or start host things.
        .env("SYSTEMD_GENERATOR_PATH", format!("{INNER_DIR}/empty"))
        .env(
            "SYSTEMD_ENVIRONMENT_GENERATOR_PATH",
            format!("{INNER_DIR}/empty"),
        )
        .env("container", "distribute-sandbox")
        .env("SANDBOX_JOURNALD_CONF", units::JOURNALD_CONF)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        if systemd == Systemd::Debian13 {
            let lower = debian::debian13_root().map_err(anyhow::Error::msg)?;
            let mount_root = dir.join("root");
            let upper = dir.join(OVERLAY_DIR).join("upper");
            let work = dir.join(OVERLAY_DIR).join("work");
            for d in [&mount_root, &upper, &work] {
                fs::create_dir_all(d)?;
            }
            for p in [&lower, &upper, &work] {
                // overlayfs separates its options with ',' and lower layers with ':'.
                if p.to_string_lossy().contains([',', ':']) {
                    bail!(
                        "{}: overlayfs cannot take a path with ',' or ':'",
                        p.display()
                    );
                }
            }
            cmd.env("SANDBOX_ROOT", &mount_root)
                .env("SANDBOX_LOWER", &lower)
                .env("SANDBOX_UPPER", &upper)
                .env("SANDBOX_WORK", &work);
        }
        let procs_c = std::ffi::CString::new(procs.as_os_str().as_encoded_bytes())?;
        // SAFETY: between fork and exec we only call async-signal-safe functions
        // (open, write, close) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = cmd.spawn().context("spawning unshare")?;
        let mut sb = Sandbox {
            name: name.to_string(),
            dir,
            cgroup,
            pid1: 0,
            unshare,
            systemd,
            version: 0,
        };
        sb.wait_booted().with_context(|| {
            format!(
                "sandbox ({systemd} systemd) did not boot; systemd's output:\n{}",
                fs::read_to_string(sb.dir.join("systemd.log")).unwrap_or_default()
            )
        })?;
        // Asked of the running manager, not of a binary: that is what the
        // activator sees too.
        let v = sb.systemctl(&["show", "-p", "Version", "--value"])?;
        sb.version = parse_version(&v)
            .with_context(|| format!("unexpected systemd Version property {v:?}"))?;
        Ok(sb)
    }

    fn wait_booted(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let upid = self.unshare.id();
        // PID 1 of the namespace is unshare's only child.
        while self.pid1 == 0 {
            if let Some(status) = self.unshare.try_wait()? {
                bail!("unshare exited early: {status}");
            }
            let children = fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
                .unwrap_or_default();
            if let Some(p) = children.split_whitespace().next() {
                self.pid1 = p.parse()?;
            } else if Instant::now() > deadline {
                bail!("namespace PID 1 did not appear");
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let private = self.host_path("/run/systemd/private");
        while !private.exists() {
            if let Some(status) = self.unshare.try_wait()? {
                bail!("systemd exited early: {status}");
            }
            if Instant::now() > deadline {
                bail!("{} did not appear", private.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        loop {
            let out = self
                .command("systemctl")
                .args(["is-active", "harness.target", "dbus.socket"])
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "harness.target not active: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Which systemd this sandbox runs.
    pub fn systemd(&self) -> Systemd {
        self.systemd
    }

    /// The major version of the running systemd, e.g. 252 or 257.
    pub fn systemd_version(&self) -> u32 {
        self.version
    }

    /// The test or demo name this sandbox was booted for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The harness-owned directory on the host; inside the sandbox it is [`INNER_DIR`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path inside the sandbox of `rel` under the harness directory.
    pub fn inside(&self, rel: &str) -> String {
        format!("{INNER_DIR}/{}", rel.trim_start_matches('/'))
    }

    /// Makes a host file (e.g. a built binary) available inside the sandbox under
    /// `bin/`, readable and executable by every user; returns its inner path.
    pub fn install_file(&self, host: &Path) -> Result<String> {
        let name = host
            .file_name()
            .with_context(|| format!("{} has no file name", host.display()))?;
        let bin = self.dir.join("bin");
        fs::create_dir_all(&bin)?;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
        let dest = bin.join(name);
        let _ = fs::remove_file(&dest);
        if fs::hard_link(host, &dest).is_err() {
            fs::copy(host, &dest)
                .with_context(|| format!("copying {} into the sandbox", host.display()))?;
        }
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        Ok(self.inside(&format!("bin/{}", name.to_string_lossy())))
    }

    /// Writes a file under the harness directory (e.g. a config) and returns its
    /// inner path. Directories are created world-readable.
    pub fn write_file(&self, rel: &str, text: &str) -> Result<String> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
            fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
        }
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(self.inside(rel))
    }

    /// The harness's unit directory (first on the sandboxed systemd's unit path,
    /// before the sandbox's own `/run/systemd/system`).
    pub fn unit_dir(&self) -> PathBuf {
        self.dir.join("units")
    }

    /// Host PID of the sandbox's systemd (PID 1 inside).
    pub fn pid1(&self) -> i32 {
        self.pid1
    }

    /// A path inside the sandbox's mount namespace, reachable from the host.
    /// Same as [`Sandbox::root_host_path`].
    pub fn host_path(&self, inner: &str) -> PathBuf {
        self.root_host_path(inner)
    }

    /// A path inside the sandbox's root (for [`Systemd::Debian13`] the Debian
    /// root's overlay, e.g. its `/usr/share/doc`), reachable from the host:
    /// through PID 1's root directory.
    pub fn root_host_path(&self, inner: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{}", self.pid1, inner))
    }

    /// The system bus address, usable from the host.
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path={}",
            self.host_path("/run/dbus/system_bus_socket").display()
        )
    }

    /// A command that runs inside all of the sandbox's namespaces.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("/usr/bin/nsenter");
        // -r -w: PID 1's root and working directory, so under Debian13 the
        // program (systemctl, busctl, apt-get, …) is the Debian root's own.
        c.arg("-t")
            .arg(self.pid1.to_string())
            .args(["-a", "-r", "-w"])
            .arg(program);
        c
    }

    /// Runs a command inside the sandbox and returns its stdout; fails with its
    /// stderr when it exits non-zero.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.command(program).args(args).output()?;
        check(program, args, out)
    }

    /// `systemctl ARGS` inside the sandbox.
    pub fn systemctl(&self, args: &[&str]) -> Result<String> {
        self.run("systemctl", args)
    }

    /// Writes a unit file into the sandbox's unit directory and reloads systemd.
    /// Paths inside the unit must be inner paths (see [`Sandbox::inside`]).
    pub fn install_unit(&self, name: &str, text: &str) -> Result<()> {
        fs::write(self.unit_dir().join(name), text)?;
        self.systemctl(&["daemon-reload"])?;
        Ok(())
    }

    /// The journal of one unit (or everything with `None`), for diagnostics.
    pub fn journal(&self, unit: Option<&str>) -> String {
        let mut args = vec!["--no-pager", "-o", "short-monotonic"];
        if let Some(u) = unit {
            args.extend(["-u", u]);
        }
        match self.command("journalctl").args(&args).output() {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(journalctl failed: {e})"),
        }
    }

    /// Units whose name matches `pattern` (e.g. `echo@*`) and are loaded.
    pub fn loaded_units(&self, pattern: &str) -> Result<Vec<(String, String)>> {
        let out = self.systemctl(&[
            "list-units",
            "--all",
            "--plain",
            "--no-legend",
            "--no-pager",
            pattern,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let unit = w.next()?.to_string();
                let _load = w.next()?;
                let active = w.next()?.to_string();
                Some((unit, active))
            })
            .collect())
    }

    /// Kills every process in the sandbox and removes its cgroup tree.
    pub fn shutdown(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        if self.pid1 > 0 {
            // SIGKILL on the namespace's PID 1 kills every process in the namespace.
            // SAFETY: plain syscall on a PID we spawned (by PID, never by name).
            unsafe { libc::kill(self.pid1, libc::SIGKILL) };
            self.pid1 = 0;
        }
        // unshare reaps the namespace's PID 1 and then exits; give it the chance
        // so no zombie is left behind, then make sure.
        let reap_deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.unshare.try_wait(), Ok(None)) && Instant::now() < reap_deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        remove_cgroup_tree_within(&self.cgroup, Duration::from_secs(10))?;
        // Every process is gone, so is the mount namespace and the overlay
        // mounted in it: only the upper layer's files remain (possibly a
        // whole apt-get install), the logs beside them are kept.
        remove_overlay(&self.dir)
    }
}

/// Where a Debian13 sandbox's overlay upper and work directories live, under
/// its harness directory.
const OVERLAY_DIR: &str = "overlay";

fn remove_overlay(dir: &Path) -> Result<()> {
    let overlay = dir.join(OVERLAY_DIR);
    match fs::remove_dir_all(&overlay) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", overlay.display()))
        }
        _ => Ok(()),
    }
}

/// `257.9-1~deb13u1` → 257.
fn parse_version(v: &str) -> Option<u32> {
    let v = v.trim();
    let end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    v[..end].parse().ok()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("sandbox {}: teardown: {e:#}", self.name);
        }
    }
}

/// Cgroups of sandboxes are `PREFIX` + `NAME-PID-N`, PID being the harness
/// process that booted it.
const CGROUP_PREFIX: &str = "distribute-sandbox-";

/// Tears down the sandboxes of harness processes that are gone (killed before
/// a [`Sandbox`] was dropped): every process in their cgroups, then the cgroups.
/// Sandboxes of live harnesses, this one included, are left alone.
fn reap_orphans(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CGROUP_PREFIX))
            .and_then(|id| id.rsplit('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue;
        }
        let cgroup = entry.path();
        eprintln!(
            "sandbox: tearing down {}, left behind by process {owner}, which is gone",
            cgroup.display()
        );
        let result = kill_cgroup(&cgroup)
            .and_then(|()| remove_cgroup_tree_within(&cgroup, Duration::from_secs(10)));
        if let Err(e) = result {
            eprintln!("sandbox: {e:#}");
        }
    }
}

/// Removes the overlay layers of this target directory's sandboxes whose
/// harness process is gone (killed before its [`Sandbox`] was dropped). Runs
/// after [`reap_orphans`], so their processes, and with them their mount
/// namespaces, are gone.
fn reap_orphan_overlays(sandboxes: &Path) {
    let Ok(entries) = fs::read_dir(sandboxes) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(owner) = entry
            .file_name()
            .to_str()
            .and_then(|id| id.rsplit('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !entry.path().join(OVERLAY_DIR).exists()
            || Path::new("/proc").join(owner.to_string()).exists()
        {
            continue;
        }
        if let Err(e) = remove_overlay(&entry.path()) {
            eprintln!("sandbox: {e:#}");
        }
    }
}

/// SIGKILLs every process in the cgroup tree `p`: through `cgroup.kill`
/// (Linux >= 5.14), else by the PIDs in each `cgroup.procs`.
fn kill_cgroup(p: &Path) -> Result<()> {
    if fs::write(p.join("cgroup.kill"), "1").is_ok() {
        return Ok(());
    }
    for pid in fs::read_to_string(p.join("cgroup.procs"))?.lines() {
        if let Ok(pid) = pid.parse::<libc::pid_t>() {
            // SAFETY: plain syscall; the PID is read from the cgroup, never found by name.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    for entry in fs::read_dir(p)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            kill_cgroup(&entry.path())?;
        }
    }
    Ok(())
}

/// Removes the cgroup tree `p`, retrying until its killed processes are gone
/// (a cgroup with processes cannot be removed) or `timeout` passes.
fn remove_cgroup_tree_within(p: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match remove_cgroup_tree(p) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!("removing cgroup {}", p.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn remove_cgroup_tree(p: &Path) -> Result<()> {
    if !p.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(p)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(p)?;
    Ok(())
}

fn check(program: &str, args: &[&str], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn write_harness_units(unit_dir: &Path, dir: &Path, dbus_policies: &[PathBuf]) -> Result<()> {
    for t in units::STUB_TARGETS {
        fs::write(
            unit_dir.join(format!("{t}.target")),
            format!("[Unit]\nDescription={t}.target (sandbox stub)\nDefaultDependencies=no\n"),
        )?;
    }
    fs::write(unit_dir.join("harness.target"), units::HARNESS_TARGET)?;
    fs::write(unit_dir.join("dbus.socket"), units::DBUS_SOCKET)?;
    let policy_dir = dir.join("dbus-policy");
    fs::create_dir_all(&policy_dir)?;
    let mut policies = Vec::new();
    for p in dbus_policies {
        let name = p.file_name().context("dbus policy file has no name")?;
        fs::copy(p, policy_dir.join(name))
            .with_context(|| format!("copying dbus policy {}", p.display()))?;
        policies.push(format!(
            "{INNER_DIR}/dbus-policy/{}",
            name.to_string_lossy()
        ));
    }
    fs::write(dir.join("dbus-system.conf"), units::dbus_config(&policies))?;
    fs::write(
        unit_dir.join("dbus.service"),
        units::dbus_service(&format!("{INNER_DIR}/dbus-system.conf")),
    )?;
    fs::write(
        unit_dir.join("systemd-journald.socket"),
        units::JOURNALD_SOCKET,
    )?;
    fs::write(
        unit_dir.join("systemd-journald.service"),
        units::JOURNALD_SERVICE,
    )?;
    Ok(())
}
