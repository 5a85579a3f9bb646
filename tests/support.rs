//! Shared pieces of the integration tests: a sandboxed systemd running the
//! activator from the shipped unit file, configs for it, commands run inside
//! the sandbox (distributectl, busctl), and small loopback clients.

use anyhow::{bail, Context, Result};
use distribute_sandbox::{boot_for_test, target_dir, Sandbox};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Binaries the tests install into the sandbox.
pub const BINARIES: &[&str] = &[
    "systemd-distribute",
    "systemd-distribute-exec",
    "systemd-distribute-handoff",
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

/// The activator's unit.
pub const SERVICE: &str = "systemd-distribute.service";

/// The activator's D-Bus names (`BUS`, `MANAGER_PATH`, `MANAGER` and `SOCKET`
/// interfaces) and the object path of a config ([`socket_path`]), from the
/// D-Bus contract.
pub use distribute_dbus::{
    socket_path, BUS_NAME as BUS, MANAGER_INTERFACE as MANAGER, MANAGER_PATH,
    SOCKET_INTERFACE as SOCKET,
};

/// Run a command in the sandbox as root.
pub const ROOT: Option<u32> = None;
/// Run a command in the sandbox as the unprivileged user `nobody`.
pub const NOBODY: Option<u32> = Some(65534);

/// A config file: `ListenStream=127.0.0.1:PORT`, `Distribute=N` and the
/// `socket_extra` lines in `[Socket]`; `ExecStart=EXEC` and the
/// `service_extra` lines in `[Service]`.
pub fn socket_config(
    port: u16,
    n: u32,
    socket_extra: &str,
    exec: &str,
    service_extra: &str,
) -> String {
    format!(
        "[Socket]\nListenStream=127.0.0.1:{port}\nDistribute={n}\n{socket_extra}\n[Service]\nExecStart={exec}\n{service_extra}"
    )
}

/// A config served by the demo HTTP instance (`distribute-hello
/// --idle-timeout IDLE`, `DynamicUser=yes`); lines appended to it go to
/// `[Service]`.
pub fn hello_config(port: u16, n: u32, idle: &str) -> String {
    socket_config(
        port,
        n,
        "",
        &format!("@BIN@/distribute-hello --idle-timeout {idle}"),
        "DynamicUser=yes\n",
    )
}

/// A `Distribute=1` config whose instance runs `script` under `/bin/sh -c`
/// (no `$` in it: systemd would expand it).
pub fn script_config(port: u16, socket_extra: &str, script: &str, service_extra: &str) -> String {
    socket_config(
        port,
        1,
        socket_extra,
        &format!("/bin/sh -c '{script}'"),
        service_extra,
    )
}

/// `127.0.0.1:PORT`.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Polls `pred` every 50 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Asserts that `text` contains every one of `needles`.
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
}

/// `n` connections to `127.0.0.1:PORT` that are left waiting in its accept
/// queue (those that could connect).
pub fn queue_connections(port: u16, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect(addr(port)).ok())
        .collect()
}

/// What a command run in the sandbox left behind.
#[derive(Debug)]
pub struct Run {
    /// The command line (and the user), for messages.
    pub what: String,
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts that the command succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "command failed: {self:?}");
        self
    }

    /// Asserts that the command exited with `code` and said `message` on stderr.
    pub fn fails_with(self, code: i32, message: &str) -> Run {
        assert_eq!(self.code, code, "exit code: {self:?}");
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}: {self:?}"
        );
        self
    }

    /// Standard output, then standard error.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
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
        Activator::start_with_policies(test, configs, &[])
    }

    /// [`Activator::start`], with `extra_policies` given to the sandbox's bus
    /// after the project's own policy (they can loosen it, for tests of what
    /// the daemon checks itself).
    pub fn start_with_policies(
        test: &str,
        configs: &[(&str, &str)],
        extra_policies: &[PathBuf],
    ) -> Option<Activator> {
        let mut policies = vec![workspace().join("units/org.distribute1.conf")];
        policies.extend_from_slice(extra_policies);
        let sb = boot_for_test(test, &policies)?;
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
        a.sb.install_unit(SERVICE, &unit).expect("installing unit");
        if let Err(e) = a.sb.systemctl(&["start", SERVICE]) {
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
        if let Err(e) = self.try_reload() {
            panic!("{e:#}");
        }
    }

    /// [`Activator::reload`] for callers that report instead of panicking
    /// (the soak, which saves the journal first).
    pub fn try_reload(&self) -> Result<()> {
        let before = self.log().matches("SIGHUP: ").count();
        self.sb
            .systemctl(&["reload", SERVICE])
            .context("systemctl reload")?;
        if !wait_until(Duration::from_secs(20), || {
            self.log().matches("SIGHUP: ").count() > before
        }) {
            bail!("reload did not finish:\n{}", self.log());
        }
        Ok(())
    }

    /// `systemctl stop systemd-distribute.service`.
    pub fn stop(&self) {
        self.sb
            .systemctl(&["stop", SERVICE])
            .expect("systemctl stop");
    }

    /// Asserts that systemd-distribute.service is active.
    pub fn assert_active(&self) {
        assert!(
            self.sb.systemctl(&["is-active", SERVICE]).is_ok(),
            "{SERVICE} is not active:\n{}",
            self.sb.journal(None)
        );
    }

    /// `systemctl show -p PROPERTY --value UNIT`, trimmed.
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.sb
            .systemctl(&["show", "-p", property, "--value", unit])
            .unwrap_or_else(|e| panic!("systemctl show -p {property} {unit}: {e:#}"))
            .trim()
            .to_string()
    }

    /// The activator's unique bus name (it changes with every restart).
    pub fn unique_name(&self) -> String {
        self.sb
            .run(
                "busctl",
                &[
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "GetNameOwner",
                    "s",
                    BUS,
                ],
            )
            .unwrap_or_default()
            // `s ":1.5"`
            .trim()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string()
    }

    /// The activator's PID (in the sandbox's PID namespace).
    pub fn main_pid(&self) -> u32 {
        self.unit_property(SERVICE, "MainPID")
            .parse()
            .expect("MainPID is a number")
    }

    /// For a failure message: each thread of the activator with the kernel
    /// function it sleeps in (`wchan`: e.g. `unix_wait_for_peer` is a send to
    /// a full datagram socket) and its kernel stack.
    pub fn where_blocked(&self) -> String {
        let pid = self.main_pid();
        let script = format!(
            "for t in /proc/{pid}/task/*; do echo \"$t $(cat $t/comm) wchan=$(cat $t/wchan) \
             state=$(grep State $t/status)\"; cat $t/stack 2>/dev/null; done"
        );
        self.sb
            .run("/bin/sh", &["-c", &script])
            .unwrap_or_else(|e| format!("(cannot read /proc/{pid}: {e:#})"))
    }

    /// Waits until `pred(log)` holds; false on timeout.
    pub fn wait_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || pred(&self.log()))
    }

    /// Asserts that the activator has logged `text`.
    pub fn assert_logged(&self, text: &str) {
        let log = self.log();
        assert!(log.contains(text), "the log lacks {text:?}:\n{log}");
    }

    /// Waits until the activator has logged `text`; panics after `timeout`.
    pub fn assert_logged_within(&self, timeout: Duration, text: &str) {
        assert!(
            self.wait_log(timeout, |l| l.contains(text)),
            "the log lacks {text:?} after {timeout:?}:\n{}",
            self.log()
        );
    }

    /// The activator's journal.
    pub fn log(&self) -> String {
        self.sb.journal(Some(SERVICE))
    }

    /// Loaded units matching `pattern` with their active state.
    pub fn instances(&self, pattern: &str) -> Vec<(String, String)> {
        self.sb.loaded_units(pattern).unwrap_or_default()
    }

    /// Waits until a unit matching `pattern` is active; false on timeout.
    pub fn wait_active(&self, pattern: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.instances(pattern).iter().any(|(_, s)| s == "active")
        })
    }

    /// Waits until no unit matching `pattern` is loaded; false on timeout
    /// (for callers that report rather than panic, like the demo and the soak).
    pub fn wait_no_instances(&self, pattern: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.instances(pattern).is_empty())
    }

    /// Waits until no unit matching `pattern` is loaded; panics after
    /// `timeout` with `why`, the units left and systemd's journal.
    pub fn assert_no_instances_within(&self, pattern: &str, timeout: Duration, why: &str) {
        assert!(
            self.wait_no_instances(pattern, timeout),
            "{why}: {:?}\n{}",
            self.instances(pattern),
            self.sb.journal(None)
        );
    }

    /// `PROGRAM ARGS` inside the sandbox, as root ([`ROOT`]) or as the user and
    /// group `uid` (e.g. [`NOBODY`]), without the caller's colour settings
    /// (`NO_COLOR`, `SYSTEMD_COLORS`); prints the command and its output.
    pub fn run_as(&self, uid: Option<u32>, program: &str, args: &[&str]) -> Run {
        let mut cmd = match uid {
            None => self.sb.command(program),
            Some(uid) => {
                let mut c = self.sb.command("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(program);
                c
            }
        };
        cmd.args(args)
            .env_remove("NO_COLOR")
            .env_remove("SYSTEMD_COLORS");
        let out = cmd.output().expect("running a command in the sandbox");
        let name = program.rsplit('/').next().unwrap_or(program);
        let run = Run {
            what: format!("{name} {} (uid {uid:?})", args.join(" ")),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        println!(
            "$ {} -> {}\n{}{}",
            run.what, run.code, run.stdout, run.stderr
        );
        run
    }

    /// `distributectl ARGS` inside the sandbox, as root.
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_as(ROOT, args)
    }

    /// `distributectl ARGS` inside the sandbox, as root or as `uid`.
    pub fn ctl_as(&self, uid: Option<u32>, args: &[&str]) -> Run {
        self.run_as(uid, &format!("{}/distributectl", self.bin), args)
    }

    /// `busctl call org.distribute1 PATH INTERFACE METHOD [SIGNATURE ARGS...]`,
    /// as root or as `uid`.
    pub fn bus_call(
        &self,
        uid: Option<u32>,
        path: &str,
        interface: &str,
        method: &str,
        args: &[&str],
    ) -> Run {
        let mut full = vec!["call", BUS, path, interface, method];
        full.extend_from_slice(args);
        self.run_as(uid, "busctl", &full)
    }

    /// `busctl get-property` of `PROPERTY` of config `name`'s object
    /// (`org.distribute1.Socket`), as root or as `uid`, which may fail.
    pub fn socket_property_run(&self, uid: Option<u32>, name: &str, property: &str) -> Run {
        let path = socket_path(name);
        self.run_as(
            uid,
            "busctl",
            &["get-property", BUS, path.as_str(), SOCKET, property],
        )
    }

    /// `PROPERTY` of config `name`'s object, as root or as `uid`, which must
    /// succeed: the value as busctl prints it (`u 2`).
    pub fn socket_property(&self, uid: Option<u32>, name: &str, property: &str) -> String {
        self.socket_property_run(uid, name, property)
            .ok()
            .stdout
            .trim()
            .to_string()
    }

    /// `busctl get-property org.distribute1 PATH INTERFACE PROPERTY`, as root or
    /// as `uid`, which must succeed: the value as busctl prints it (`u 2`).
    pub fn bus_property(
        &self,
        uid: Option<u32>,
        path: &str,
        interface: &str,
        property: &str,
    ) -> String {
        self.run_as(
            uid,
            "busctl",
            &["get-property", BUS, path, interface, property],
        )
        .ok()
        .stdout
        .trim()
        .to_string()
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

/// `n` requests one after the other with [`get_hello`] (10 s timeout), each
/// of which must be answered.
pub fn get_hellos(addr: SocketAddr, n: usize) -> Vec<Hello> {
    (1..=n)
        .map(|i| {
            get_hello(addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("request {i} of {n} to {addr}: {e:#}"))
        })
        .collect()
}

/// An HTTP/1.1 keep-alive connection: the stream and a reader over it.
pub struct KeepAlive {
    /// The connection (for writing, and for reading what the reader left).
    pub stream: TcpStream,
    reader: std::io::BufReader<TcpStream>,
}

impl KeepAlive {
    /// Connects to `addr`; reads time out after 10 s.
    pub fn connect(addr: SocketAddr) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let reader = std::io::BufReader::new(stream.try_clone()?);
        Ok(KeepAlive { stream, reader })
    }

    /// One `GET /` on the connection: `Some((status line, body))` once
    /// answered, `None` if the server closed the connection before any byte
    /// of an answer (an idle keep-alive connection it ended).
    pub fn get(&mut self) -> std::io::Result<Option<(String, String)>> {
        use std::io::BufRead;
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut status = String::new();
        if self.reader.read_line(&mut status)? == 0 {
            return Ok(None);
        }
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body)?;
        Ok(Some((status, String::from_utf8_lossy(&body).into_owned())))
    }
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

/// `refused=R reset=S timeout=T other=O`.
impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused={} reset={} timeout={} other={}",
            self.refused, self.reset, self.timeout, self.other
        )
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
                                // Monotonic seconds, as the journal's
                                // short-monotonic timestamps show them.
                                eprintln!(
                                    "[{:.2}] steady load: request failed: {e:#}",
                                    monotonic_secs()
                                );
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

/// Runs `per_thread` sequential requests on each of `threads` threads, sleeping
/// a random 0..`max_gap` between requests; returns answers and failures.
pub fn fire(
    target: SocketAddr,
    threads: u64,
    per_thread: u64,
    max_gap: Duration,
) -> (Vec<Hello>, Failures) {
    let hellos = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Failures::default()));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let hellos = hellos.clone();
            let failures = failures.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(0x5eed + t);
                let mut local = Failures::default();
                for _ in 0..per_thread {
                    match get_hello(target, Duration::from_secs(10)) {
                        Ok(h) => hellos.lock().unwrap().push(h),
                        Err(e) => {
                            eprintln!("request failed: {e:#}");
                            local.count(&e);
                        }
                    }
                    let gap = max_gap.as_micros() as u64;
                    if gap > 0 {
                        std::thread::sleep(Duration::from_micros(rng.below(gap)));
                    }
                }
                failures.lock().unwrap().add(&local);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let hellos = std::sync::Arc::try_unwrap(hellos)
        .unwrap()
        .into_inner()
        .unwrap();
    let failures = std::sync::Arc::try_unwrap(failures)
        .unwrap()
        .into_inner()
        .unwrap();
    (hellos, failures)
}

/// Seconds since boot (`/proc/uptime`, 10 ms resolution), the clock of
/// `journalctl -o short-monotonic`, so client-side events line up with the
/// sandbox's journal.
pub fn monotonic_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
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

/// `busctl` arguments that forge systemd's "UNIT is failed" signal
/// (`PropertiesChanged` of `ActiveState` on `unit_path`), sent straight to
/// the bus name `destination`: what an unprivileged user could try.
pub fn forged_failed_signal(destination: &str, unit_path: &str) -> Vec<String> {
    [
        "emit",
        &format!("--destination={destination}"),
        unit_path,
        "org.freedesktop.DBus.Properties",
        "PropertiesChanged",
        "sa{sv}as",
        "org.freedesktop.systemd1.Unit",
        "1",
        "ActiveState",
        "s",
        "failed",
        "0",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
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
