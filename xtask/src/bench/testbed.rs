//! The test bed: a private systemd with systemd-distribute and the configs of
//! the load scenarios, what it can tell about its processes, and the servers
//! started by hand next to it.

use super::{activation, datapath, models, release_bin, steering, Profile, SERVER_CPU};
use anyhow::{bail, Context, Result};
use distribute_sandbox::{Sandbox, Systemd};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Installs the release builds of `names` into `sb`; returns the directory
/// they are in, as seen inside the sandbox.
pub(super) fn install_release_bins(sb: &Sandbox, names: &[&str]) -> Result<String> {
    let mut bin = String::new();
    for b in names {
        let inner = sb.install_file(&release_bin(b))?;
        bin = inner
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
    }
    Ok(bin)
}

/// Installs the shipped `systemd-distribute.service` into `sb`, running the
/// binary from `bin` with the sandbox's config directory (not started).
pub(super) fn install_activator_unit(sb: &Sandbox, bin: &str) -> Result<()> {
    let unit = std::fs::read_to_string(crate::root().join("units/systemd-distribute.service"))?;
    let unit = unit.replace(
        "ExecStart=/usr/lib/systemd/systemd-distribute",
        &format!(
            "ExecStart={bin}/systemd-distribute --config-dir {}",
            sb.inside("config")
        ),
    );
    sb.install_unit(ACTIVATOR, &unit)
}

/// The sandbox with the activator and every config of the load scenarios.
pub(super) struct Bed {
    pub(super) sb: Sandbox,
    /// Where the release binaries are inside the sandbox.
    pub(super) bin: String,
}

pub(super) const ACTIVATOR: &str = "systemd-distribute.service";

impl Bed {
    /// Boots `systemd` with the activator and the configs of every scenario
    /// (also on a systemd that runs only some of them: the same set of
    /// sockets everywhere).
    pub(super) fn boot(profile: &Profile, systemd: Systemd) -> Result<Bed> {
        let sb = Sandbox::boot_on(
            &format!("bench-{systemd}"),
            &[crate::root().join("units/org.distribute1.conf")],
            systemd,
        )?;
        let bin = install_release_bins(
            &sb,
            &[
                "systemd-distribute",
                "systemd-distribute-exec",
                "systemd-distribute-handoff",
                "distribute-hello",
                "distribute-bench-server",
            ],
        )?;
        install_activator_unit(&sb, &bin)?;
        // Unit files the configs refer to: the activator decides a config's
        // mode (transient or template) when it reads it, so they go first.
        for (name, text) in activation::units(&bin) {
            sb.install_unit(&name, &text)?;
        }
        let bed = Bed { sb, bin };
        bed.set_configs(&bed.load_configs(profile))?;
        bed.start_activator()?;
        Ok(bed)
    }

    /// The configs every load scenario expects the activator to serve.
    pub(super) fn load_configs(&self, p: &Profile) -> Vec<(String, String)> {
        let bin = &self.bin;
        let mut configs = vec![datapath::config(bin, p), models::config(bin, p)];
        configs.extend(activation::configs(bin));
        configs.extend(steering::configs(bin, p));
        configs
    }

    /// Replaces every config in the activator's config dir.
    fn set_configs(&self, configs: &[(String, String)]) -> Result<()> {
        let dir = self.sb.dir().join("config");
        let _ = std::fs::remove_dir_all(&dir);
        for (name, text) in configs {
            self.sb.write_file(&format!("config/{name}.socket"), text)?;
        }
        if configs.is_empty() {
            std::fs::create_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Stops the activator, replaces its configs and starts it again; returns
    /// how long `systemctl start` took.
    pub(super) fn restart_with(&self, configs: &[(String, String)]) -> Result<Duration> {
        self.sb.systemctl(&["stop", ACTIVATOR])?;
        self.set_configs(configs)?;
        self.start_activator()
    }

    fn start_activator(&self) -> Result<Duration> {
        let t = Instant::now();
        if let Err(e) = self.sb.systemctl(&["start", ACTIVATOR]) {
            bail!(
                "starting systemd-distribute failed: {e:#}\n--- journal ---\n{}",
                self.sb.journal(Some(ACTIVATOR))
            );
        }
        Ok(t.elapsed())
    }

    pub(super) fn show(&self, unit: &str, prop: &str) -> String {
        self.sb
            .systemctl(&["show", "-p", prop, "--value", unit])
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    pub(super) fn main_pid(&self, unit: &str) -> Result<u32> {
        let pid: u32 = self.show(unit, "MainPID").parse().unwrap_or(0);
        if pid == 0 {
            bail!("{unit} has no main PID");
        }
        Ok(pid)
    }

    /// `/proc/PID/status` of a process inside the sandbox.
    fn status(&self, pid: u32) -> Result<String> {
        let p = self.sb.host_path(&format!("/proc/{pid}/status"));
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    pub(super) fn rss_kb(&self, pid: u32) -> Result<u64> {
        status_field(&self.status(pid)?, "VmRSS")
    }

    /// Voluntary + involuntary context switches of every thread of PID.
    pub(super) fn ctxt_switches(&self, pid: u32) -> Result<(u64, usize)> {
        let dir = self.sb.host_path(&format!("/proc/{pid}/task"));
        let mut total = 0;
        let mut threads = 0;
        for e in std::fs::read_dir(&dir)? {
            let s = std::fs::read_to_string(e?.path().join("status"))?;
            total += status_field(&s, "voluntary_ctxt_switches")?
                + status_field(&s, "nonvoluntary_ctxt_switches")?;
            threads += 1;
        }
        Ok((total, threads))
    }

    pub(super) fn pid1_rss_kb(&self) -> Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.sb.pid1()))?;
        status_field(&s, "VmRSS")
    }
}

fn status_field(status: &str, key: &str) -> Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in /proc/PID/status"))
}

/// A server started by hand (pinned to the server CPU); killed on drop.
pub(super) struct HostServer(Child);

impl HostServer {
    /// `distribute-bench-server ARGS`, once it listens on `port`.
    pub(super) fn start(args: &[&str], port: u16) -> Result<HostServer> {
        let mut cmd = Command::new(release_bin("distribute-bench-server"));
        cmd.args(["--cpus", SERVER_CPU])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        let s = HostServer(cmd.spawn().context("starting distribute-bench-server")?);
        wait_port(port)?;
        Ok(s)
    }

    /// The host PID of the server (the parent of forked workers).
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        // SIGKILL to the parent; its workers die with it (PR_SET_PDEATHSIG).
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn wait_port(port: u16) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
