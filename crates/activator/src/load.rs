//! A load signal for `Steering=warm` that sees keep-alive work: the CPU time
//! of each instance's cgroup (`cpu.stat`, `usage_usec`).
//!
//! Warm steering grows its pool when the warm instances fall behind. The
//! accept queue only shows new connections waiting; an instance busy with
//! long-lived keep-alive connections accepts the few new ones at once and
//! never looks behind. Its CPU time does show it, for any instance, with no
//! help from the instance: the cgroup is systemd's (`ControlGroup`), read
//! with one `pread` per instance per window on a file kept open for the
//! instance's life. Instances without a readable `cpu.stat` (no cgroup2, a
//! unit without a cgroup of its own) fall back to the queue alone.

use crate::supervisor::{Slot, SystemdLink};
use crate::systemd::ServiceProxy;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::time::Duration;
use tokio::time::Instant;

/// Where cgroup2 is mounted (hybrid systems: the unified hierarchy).
const CGROUP_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

#[derive(Default)]
struct Meter {
    /// The instance life (the slot's activation count) this is about.
    life: u64,
    looked_up: bool,
    file: Option<File>,
    last: Option<(Instant, u64)>,
    busy: Option<f64>,
}

/// The CPU use of the instances of one config, as a share of one CPU.
#[derive(Default)]
pub struct CpuMeter {
    meters: HashMap<String, Meter>,
}

impl CpuMeter {
    /// Forgets everything (all instances stopped).
    pub fn clear(&mut self) {
        self.meters.clear();
    }

    /// The share of a CPU each of `slots` (running) used over about the
    /// last `window`; `None` while unknown. Reads `cpu.stat` at most once
    /// per `window` per instance; asks systemd for the cgroup once per
    /// instance life.
    pub async fn sample(
        &mut self,
        shared: &SystemdLink,
        slots: &[Rc<Slot>],
        window: Duration,
    ) -> Vec<Option<f64>> {
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            let life = slot.status.borrow().activations;
            let m = self.meters.entry(slot.unit.clone()).or_default();
            if m.life != life {
                *m = Meter {
                    life,
                    ..Meter::default()
                };
            }
            if !m.looked_up {
                m.looked_up = true;
                m.file = open_cpu_stat(shared, &slot.unit).await;
            }
            if let Some(f) = &m.file {
                let now = Instant::now();
                if m.last.is_none_or(|(t, _)| now.duration_since(t) >= window) {
                    if let Some(usage) = usage_usec(f) {
                        if let Some((t, u)) = m.last {
                            let dt = now.duration_since(t).as_micros().max(1) as f64;
                            m.busy = Some(usage.saturating_sub(u) as f64 / dt);
                        }
                        m.last = Some((now, usage));
                    }
                }
            }
            out.push(m.busy);
        }
        out
    }
}

async fn open_cpu_stat(shared: &SystemdLink, unit: &str) -> Option<File> {
    let manager = shared.manager();
    let proxy = ServiceProxy::builder(manager.inner().connection())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .path(crate::supervisor::unit_object_path(unit))
        .ok()?
        .build()
        .await
        .ok()?;
    let cgroup = proxy.control_group().await.ok()?;
    if cgroup.is_empty() {
        return None;
    }
    CGROUP_ROOTS
        .iter()
        .find_map(|root| File::open(format!("{root}{cgroup}/cpu.stat")).ok())
}

/// `usage_usec` of a `cpu.stat` file.
fn usage_usec(f: &File) -> Option<u64> {
    let mut buf = [0u8; 512];
    let n = f.read_at(&mut buf, 0).ok()?;
    parse_usage(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_usage(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_stat() {
        let text = "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n";
        assert_eq!(parse_usage(text), Some(123456));
        assert_eq!(parse_usage("user_usec 1\n"), None);
    }

    #[test]
    fn reads_our_own_cgroup() {
        // Whatever cgroup this test runs in: the file reads like cpu.stat.
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            return;
        };
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            return;
        };
        let Some(f) = CGROUP_ROOTS
            .iter()
            .find_map(|r| File::open(format!("{r}{path}/cpu.stat")).ok())
        else {
            return;
        };
        assert!(usage_usec(&f).is_some());
    }
}
