//! Shared pieces of the integration tests: a sandboxed systemd running the
//! activator from the shipped unit file, and small loopback clients.

use anyhow::{bail, Context, Result};
use distribute_sandbox::{boot_for_test, target_dir, Sandbox};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Binaries the tests install into the sandbox.
pub const BINARIES: &[&str] = &[
    "systemd-distribute",
    "systemd-distribute-exec",
    "distribute-hello",
    "distribute-echo",
    "distributectl",
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A built binary of the workspace; panics with instructions when missing.
pub fn binary(name: &str) -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let p = target_dir().join(profile).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo xtask test`, which builds the workspace's binaries first",
        p.display()
    );
    p
}

/// A sandbox with the activator running.
pub struct Activator {
    /// The private systemd.
    pub sb: Sandbox,
    /// Inner path of the installed binaries directory.
    pub bin: String,
}

impl Activator {
    /// Boots a sandbox, installs the binaries, writes `configs` (name, text) into
    /// the activator's config dir (`@BIN@` in a config is replaced with the
    /// inner bin directory), and starts `systemd-distribute.service` from the
    /// shipped unit file. `None` when the test is skipped (not under CI).
    pub fn start(test: &str, configs: &[(&str, &str)]) -> Option<Activator> {
        let sb = boot_for_test(test, &[workspace().join("units/org.distribute1.conf")])?;
        let mut bin = String::new();
        for b in BINARIES {
            let inner = sb.install_file(&binary(b)).expect("installing binary");
            bin = inner.rsplit_once('/').unwrap().0.to_string();
        }
        let a = Activator { sb, bin };
        for (name, text) in configs {
            a.write_config(name, text);
        }
        let unit = std::fs::read_to_string(workspace().join("units/systemd-distribute.service"))
            .expect("units/systemd-distribute.service");
        let unit = unit.replace(
            "ExecStart=/usr/lib/systemd/systemd-distribute",
            &format!(
                "ExecStart={}/systemd-distribute --config-dir {}\nEnvironment=SYSTEMD_DISTRIBUTE_LOG=debug",
                a.bin,
                a.sb.inside("config")
            ),
        );
        a.sb.install_unit("systemd-distribute.service", &unit)
            .expect("installing unit");
        if let Err(e) = a.sb.systemctl(&["start", "systemd-distribute.service"]) {
            panic!(
                "starting systemd-distribute failed: {e:#}\n--- journal ---\n{}",
                a.sb.journal(None)
            );
        }
        Some(a)
    }

    /// Writes `NAME.socket` into the config dir.
    pub fn write_config(&self, name: &str, text: &str) {
        self.sb
            .write_file(
                &format!("config/{name}.socket"),
                &text.replace("@BIN@", &self.bin),
            )
            .expect("writing config");
    }

    /// `systemctl reload systemd-distribute` (SIGHUP), then waits until the
    /// daemon logged that the reload is done.
    pub fn reload(&self) {
        let before = self.log().matches("SIGHUP: ").count();
        self.sb
            .systemctl(&["reload", "systemd-distribute.service"])
            .expect("systemctl reload");
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.log().matches("SIGHUP: ").count() <= before {
            assert!(
                Instant::now() < deadline,
                "reload did not finish:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `pred(log)` holds; false on timeout.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(&self.log()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The activator's journal.
    pub fn log(&self) -> String {
        self.sb.journal(Some("systemd-distribute.service"))
    }

    /// Loaded units matching `pattern` with their active state.
    pub fn instances(&self, pattern: &str) -> Vec<(String, String)> {
        self.sb.loaded_units(pattern).unwrap_or_default()
    }

    /// Waits until no unit matching `pattern` is loaded; false on timeout.
    pub fn wait_no_instances(&self, pattern: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.instances(pattern).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// What the demo HTTP instance answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// `DISTRIBUTE_INSTANCE` of the instance.
    pub instance: String,
    /// Its PID (in the sandbox's PID namespace).
    pub pid: u32,
}

/// One `GET /` on a fresh connection, `Connection: close`.
pub fn get_hello(addr: SocketAddr, timeout: Duration) -> Result<Hello> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).context("connect")?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .context("write")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).context("read")?;
    parse_hello(&resp)
}

/// Parses `instance=I pid=P` out of an HTTP response.
pub fn parse_hello(resp: &str) -> Result<Hello> {
    if !resp.starts_with("HTTP/1.1 200") {
        bail!("unexpected response: {resp:?}");
    }
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    let mut instance = None;
    let mut pid = None;
    for word in body.split_whitespace() {
        if let Some(v) = word.strip_prefix("instance=") {
            instance = Some(v.to_string());
        } else if let Some(v) = word.strip_prefix("pid=") {
            pid = v.parse().ok();
        }
    }
    match (instance, pid) {
        (Some(instance), Some(pid)) => Ok(Hello { instance, pid }),
        _ => bail!("no instance/pid in body {body:?}"),
    }
}

/// Client-side failure counts, printed by every load test.
#[derive(Debug, Default, Clone)]
pub struct Failures {
    /// Connection refused.
    pub refused: u64,
    /// Connection reset.
    pub reset: u64,
    /// Timed out (connect or read).
    pub timeout: u64,
    /// Anything else (bad response, EOF).
    pub other: u64,
}

impl Failures {
    /// Classifies one failed attempt.
    pub fn count(&mut self, e: &anyhow::Error) {
        let io = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>());
        match io.map(|e| e.kind()) {
            Some(std::io::ErrorKind::ConnectionRefused) => self.refused += 1,
            Some(std::io::ErrorKind::ConnectionReset) => self.reset += 1,
            Some(std::io::ErrorKind::TimedOut) | Some(std::io::ErrorKind::WouldBlock) => {
                self.timeout += 1
            }
            _ => self.other += 1,
        }
    }

    /// Adds another thread's counts.
    pub fn add(&mut self, o: &Failures) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.other += o.other;
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }
}

/// Clients that keep a steady stream of short connections going in the
/// background until stopped (or until a hard time bound), counting failures.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Failures)>>,
}

impl SteadyLoad {
    /// Starts `clients` threads against `addr`, each pausing `gap` between requests.
    pub fn start(addr: SocketAddr, clients: usize, gap: Duration) -> SteadyLoad {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let hard_stop = Instant::now() + Duration::from_secs(300);
                    let mut ok = 0;
                    let mut failures = Failures::default();
                    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                        match get_hello(addr, Duration::from_secs(10)) {
                            Ok(_) => ok += 1,
                            Err(e) => {
                                eprintln!("steady load: request failed: {e:#}");
                                failures.count(&e);
                            }
                        }
                        std::thread::sleep(gap);
                    }
                    (ok, failures)
                })
            })
            .collect();
        SteadyLoad { stop, threads }
    }

    /// Stops the clients; returns (answered, failures).
    pub fn finish(self) -> (u64, Failures) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        let mut failures = Failures::default();
        for t in self.threads {
            let (o, f) = t.join().expect("load thread");
            ok += o;
            failures.add(&f);
        }
        (ok, failures)
    }
}

/// Tally of which instance (and PID) served how many requests.
pub fn tally(hellos: &[Hello]) -> BTreeMap<String, BTreeMap<u32, usize>> {
    let mut t: BTreeMap<String, BTreeMap<u32, usize>> = BTreeMap::new();
    for h in hellos {
        *t.entry(h.instance.clone())
            .or_default()
            .entry(h.pid)
            .or_default() += 1;
    }
    t
}

/// A port for one test: fixed per test so failures are reproducible, spread so
/// parallel tests never collide.
pub fn port(offset: u16) -> u16 {
    47_000 + offset
}

/// Small deterministic PRNG (xorshift) for spacing connections.
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hello_bodies() {
        let h = parse_hello("HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\ninstance=3 pid=42\n")
            .unwrap();
        assert_eq!(
            h,
            Hello {
                instance: "3".into(),
                pid: 42
            }
        );
        assert!(parse_hello("HTTP/1.1 400 Bad\r\n\r\n").is_err());
        assert!(parse_hello("HTTP/1.1 200 OK\r\n\r\nnothing").is_err());
    }
}
