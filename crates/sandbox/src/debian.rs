//! The Debian 13 (trixie, systemd 257) root that [`crate::Systemd::Debian13`]
//! boots.
//!
//! The harness builds it itself with `mmdebstrap` from the machine's own apt
//! mirror and caches it outside the repository, under [`CACHE_DIR`] (or
//! `$`[`CACHE_ENV`]), keyed by everything that shapes its content (variant,
//! suite, package list, and a recipe version). A sandbox never writes to it:
//! each boot mounts an overlay with the cached root as its read-only lower
//! layer.

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Packages of the cached Debian 13 root, on top of `--variant=minbase`
/// (which already has apt, dpkg, coreutils and util-linux).
///
/// systemd and dbus are what the sandbox boots; python3, curl, man-db,
/// ca-certificates and procps are what an admin following the README (and
/// the package test) uses; iproute2 has `ss`, which tests run inside.
pub const DEBIAN13_PACKAGES: &[&str] = &[
    "systemd",
    "dbus",
    "python3",
    "curl",
    "man-db",
    "ca-certificates",
    "procps",
    "iproute2",
];

/// The Debian suite of [`DEBIAN13_PACKAGES`].
pub const DEBIAN13_SUITE: &str = "trixie";

/// Where built roots are cached: outside the repository, so every checkout
/// and worktree on the machine shares one copy, and `cargo clean` keeps it.
pub const CACHE_DIR: &str = "/var/cache/distribute-sandbox";

/// Environment variable naming another cache directory than [`CACHE_DIR`]
/// (another disk, or a fresh directory to check a build from scratch).
pub const CACHE_ENV: &str = "DISTRIBUTE_SANDBOX_CACHE";

/// Bumped when the way the root is built changes, so an old cache is not reused.
const RECIPE: &str = "mmdebstrap-minbase-1";

/// mmdebstrap normally needs about 30-80 s; a hung mirror must not hang the tests.
const BUILD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The outcome of preparing the root, once per process: every test thread of a
/// test binary waits for the first one instead of building (or failing) again.
static ROOT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);

/// The cached Debian 13 root, built first if needed (serialised across
/// processes with a lock file, so parallel test binaries build it once).
///
/// An `Err` is a reason the root cannot be had on this machine (mmdebstrap
/// cannot be installed, the mirror is unreachable, …): callers treat it like a
/// missing tool, a skip, or a failure under `CI=true`.
pub fn debian13_root() -> Result<PathBuf, String> {
    let mut slot = ROOT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = slot.as_ref() {
        return r.clone();
    }
    let r = prepare_root().map_err(|e| format!("{e:#}"));
    *slot = Some(r.clone());
    r
}

/// The cache key: a stable hash (FNV-1a, not std's `DefaultHasher`, whose
/// output may change between Rust releases) of what goes into the root.
pub fn cache_key() -> String {
    let mut text = format!("{RECIPE}\nminbase\n{DEBIAN13_SUITE}\n");
    for p in DEBIAN13_PACKAGES {
        text.push_str(p);
        text.push('\n');
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("debian13-{h:016x}")
}

fn prepare_root() -> Result<PathBuf> {
    let cache = std::env::var_os(CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(CACHE_DIR), PathBuf::from);
    let cache = cache.as_path();
    let key = cache_key();
    let dest = cache.join(&key);
    if dest.join("usr/lib/systemd/systemd").exists() {
        return Ok(dest);
    }
    fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let lock_path = cache.join(format!("{key}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("locking {}", lock_path.display()));
    }
    // Another process may have built it while we waited for the lock.
    if dest.join("usr/lib/systemd/systemd").exists() {
        return Ok(dest);
    }
    ensure_mmdebstrap()?;
    let mirror = mirror()?;
    // Built next to its final place (same file system) and renamed when
    // complete, so a root under CACHE_DIR/KEY is always whole.
    let tmp = cache.join(format!(".{key}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let log_path = cache.join(format!("{key}.log"));
    eprintln!(
        "sandbox: building the Debian 13 root {} from {mirror} (once per machine, about a minute; log in {})",
        dest.display(),
        log_path.display()
    );
    let started = Instant::now();
    let log = fs::File::create(&log_path)?;
    let mut child = Command::new("mmdebstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", DEBIAN13_PACKAGES.join(",")))
        .arg(DEBIAN13_SUITE)
        .arg(&tmp)
        .arg(&mirror)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning mmdebstrap")?;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            // Our own child, by PID.
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_dir_all(&tmp);
            bail!(
                "mmdebstrap did not finish within {:?} (mirror {mirror}); log:\n{}",
                BUILD_TIMEOUT,
                log_tail(&log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "mmdebstrap {DEBIAN13_SUITE} from {mirror} failed ({status}); log:\n{}",
            log_tail(&log_path)
        );
    }
    if !tmp.join("usr/lib/systemd/systemd").exists() {
        bail!("mmdebstrap succeeded but {} has no systemd", tmp.display());
    }
    fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    eprintln!("sandbox: Debian 13 root ready in {:.0?}", started.elapsed());
    Ok(dest)
}

fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Installs mmdebstrap with apt-get when it is missing (waiting for another
/// apt-get to release the dpkg lock rather than failing at once).
fn ensure_mmdebstrap() -> Result<()> {
    if Path::new("/usr/bin/mmdebstrap").exists() {
        return Ok(());
    }
    eprintln!("sandbox: mmdebstrap is missing, installing it with apt-get");
    let install = || {
        Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "-qq",
                "mmdebstrap",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
    };
    let mut out = install().context("running apt-get")?;
    if !out.status.success() {
        // Package lists may be missing or stale on a fresh machine.
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"])
            .stdin(Stdio::null())
            .output();
        out = install().context("running apt-get")?;
    }
    if !out.status.success() || !Path::new("/usr/bin/mmdebstrap").exists() {
        bail!(
            "mmdebstrap is missing and apt-get install mmdebstrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The Debian archive this machine's apt uses (never a hard-coded host): the
/// first `URIs:` of a deb822 `.sources` stanza, or the first `deb` line of
/// sources.list, that is not a security or updates suite.
pub fn mirror() -> Result<String> {
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sources"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for f in &files {
        if let Some(m) = fs::read_to_string(f)
            .ok()
            .and_then(|t| mirror_from_deb822(&t))
        {
            return Ok(m);
        }
    }
    let mut lists = vec![PathBuf::from("/etc/apt/sources.list")];
    let mut more: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list"))
                .collect()
        })
        .unwrap_or_default();
    more.sort();
    lists.extend(more);
    for f in &lists {
        if let Some(m) = fs::read_to_string(f)
            .ok()
            .and_then(|t| mirror_from_sources_list(&t))
        {
            return Ok(m);
        }
    }
    bail!("no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list")
}

/// Security and updates suites live in other archives (or are not full ones).
fn is_main_suite(suite: &str) -> bool {
    !suite.contains("security") && !suite.ends_with("-updates") && !suite.ends_with("-backports")
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if field("Enabled").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            continue;
        }
        if !field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        let suites = field("Suites").unwrap_or_default();
        if !suites.split_whitespace().any(is_main_suite) {
            continue;
        }
        if let Some(uri) = field("URIs").and_then(|u| u.split_whitespace().next().map(String::from))
        {
            return Some(uri);
        }
    }
    None
}

fn mirror_from_sources_list(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? != "deb" {
            return None;
        }
        let mut uri = w.next()?;
        if uri.starts_with('[') {
            // Options: `[arch=amd64 signed-by=…]`, possibly several words.
            while !uri.ends_with(']') {
                uri = w.next()?;
            }
            uri = w.next()?;
        }
        let suite = w.next()?;
        is_main_suite(suite).then(|| uri.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_skips_security() {
        let text = "Types: deb\n# a comment\nURIs: http://deb.debian.org/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n\n\
                    Types: deb deb-src\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_deb822("Types: deb-src\nURIs: http://x/\nSuites: a\n"),
            None
        );
    }

    #[test]
    fn sources_list_with_options() {
        let text = "# deb http://old/ bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://sec/ bookworm-security main\n\
                    deb [ trusted=yes ] http://mirror.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_sources_list(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn cache_key_is_stable() {
        let k = cache_key();
        assert!(
            k.starts_with("debian13-") && k.len() == "debian13-".len() + 16,
            "{k}"
        );
        assert_eq!(k, cache_key());
    }
}
