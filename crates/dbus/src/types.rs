//! The data: what the activator knows about a socket config
//! ([`SocketInfo`]), what the `org.distribute1.Socket` object shows of it
//! ([`SocketProperties`]) and the structs inside the D-Bus values, each with
//! its signature fixed by its fields.
//!
//! A new read-only property: a field in [`SocketInfo`] and one in
//! [`SocketProperties`] (and the line in each conversion below), a getter in
//! the activator's `org.distribute1.Socket`. `PropertiesChanged`, `GetAll`,
//! `distributectl --json` and the tests' signature checks follow from these.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use zbus::zvariant::{self, OwnedObjectPath, OwnedValue, Type, Value};

/// One entry of `ListSockets()`, `(soasuus)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SocketEntry {
    /// Config name.
    pub name: String,
    /// Its object path ([`crate::socket_path`]).
    pub path: OwnedObjectPath,
    /// Listen lines.
    pub listen: Vec<String>,
    /// N.
    pub distribute: u32,
    /// Running instances (stuck ones too).
    pub running: u32,
    /// `serving`, `draining`, `replacing` or `failed`.
    pub state: String,
}

/// One entry of the `Instances` property, `(ussuttus)`.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Type,
    zvariant::Value,
    zvariant::OwnedValue,
)]
pub struct Instance {
    /// Index I.
    pub index: u32,
    /// `SERVICE@I.service`.
    pub unit: String,
    /// `listening`, `starting`, `running`, `stuck` (running, but not
    /// accepting: new connections go to the others), `backoff`, `failed`,
    /// or `draining`.
    pub state: String,
    /// Main PID, 0 if none.
    pub main_pid: u32,
    /// Successful starts.
    pub activations: u64,
    /// Failed starts and exits.
    pub failures: u64,
    /// Connections waiting in the accept queue (read live).
    pub queue_depth: u32,
    /// Why backoff/failed/stuck ("" = none).
    pub reason: String,
}

/// One entry of the `Stuck` property, `(uts)`.
#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    Type,
    zvariant::Value,
    zvariant::OwnedValue,
)]
pub struct StuckInstance {
    /// Index I.
    pub index: u32,
    /// Since when its queue has not drained: µs since the epoch (`CLOCK_REALTIME`).
    pub since_usec: u64,
    /// Why.
    pub why: String,
}

/// The properties of `org.distribute1.Socket`, as `GetAll` returns them
/// (`a{sv}`, the keys are the field names in PascalCase). The activator
/// computes `PropertiesChanged` from two of these; clients read them with
/// [`crate::SocketProxy::properties`].
#[derive(Debug, Clone, Default, PartialEq, zvariant::Value, zvariant::OwnedValue)]
#[zvariant(signature = "dict", rename_all = "PascalCase")]
pub struct SocketProperties {
    /// `Name` (const): config name, `NAME` of `NAME.socket`.
    pub name: String,
    /// `Description`: the config's `[Unit]` `Description=`, "" if none.
    pub description: String,
    /// `Listen`: `ListenStream=…`/`ListenDatagram=…` lines, config order.
    pub listen: Vec<String>,
    /// `Distribute`: current N.
    pub distribute: u32,
    /// `Service`: template prefix, instances are `SERVICE@I.service`.
    pub service: String,
    /// `State`: `serving`, `draining`, `replacing` or `failed`.
    pub state: String,
    /// `Error`: why failed or degraded, "" if fine.
    pub error: String,
    /// `Sources`: files the effective config came from, in the order applied.
    pub sources: Vec<String>,
    /// `Mode`: `transient` or `template`, "" if not served.
    pub mode: String,
    /// `UnitFile`: template mode, the template's unit file.
    pub unit_file: String,
    /// `Instances`, `a(ussuttus)`.
    pub instances: Vec<Instance>,
    /// `Stuck`, `a(uts)`: the instances running but not accepting.
    pub stuck: Vec<StuckInstance>,
}

impl SocketProperties {
    /// As a property map, name → value.
    pub fn to_map(&self) -> HashMap<String, OwnedValue> {
        let Value::Dict(dict) = Value::from(self.clone()) else {
            unreachable!("SocketProperties is a dict")
        };
        HashMap::try_from(dict).expect("a{sv} converts to a map")
    }

    /// From a property map (`GetAll`); a missing property (an older daemon)
    /// reads as its default.
    pub fn from_map(map: HashMap<String, OwnedValue>) -> Result<Self, zvariant::Error> {
        let mut all = SocketProperties::default().to_map();
        all.extend(map);
        let all: HashMap<String, Value<'_>> =
            all.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
        SocketProperties::try_from(Value::from(all))
    }
}

/// One socket config as the activator knows it and `distributectl` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SocketInfo {
    /// Config name.
    pub name: String,
    /// `ListenStream=127.0.0.1:8080`-style lines, in config order (companion
    /// listeners, shared by all instances, included: `ListenStream=/run/x.sock`).
    pub listen: Vec<String>,
    /// Current N.
    pub distribute: u32,
    /// Template prefix: instances are `SERVICE@I.service`.
    pub service: String,
    /// `serving`, `draining`, `replacing` (old sockets draining, new ones not
    /// bound yet) or `failed`.
    pub state: String,
    /// Why the config is failed or degraded ("" if fine), e.g. the last reload error.
    pub error: String,
    /// Files the effective config came from, in the order applied.
    pub sources: Vec<String>,
    /// How instances are started: `transient` (built from `[Service]`) or
    /// `template` (the unit file's own instances); "" for a config not served.
    pub mode: String,
    /// Template mode: the template's unit file (systemd's `FragmentPath`).
    pub unit_file: String,
    /// `[Unit]` `Description=` of the config ("" if none).
    pub description: String,
    /// Instance slots, by index.
    pub instances: Vec<InstanceInfo>,
}

/// One instance slot: its `Instances` entry and, for a stuck one, since when
/// (which the wire carries in `Stuck`). Reads and writes through to the entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// The entry of `Instances`.
    #[serde(flatten)]
    pub instance: Instance,
    /// `stuck`: since when its queue has not drained, µs since the epoch
    /// (`CLOCK_REALTIME`); 0 otherwise.
    pub stuck_since_usec: u64,
}

impl std::ops::Deref for InstanceInfo {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

impl std::ops::DerefMut for InstanceInfo {
    fn deref_mut(&mut self) -> &mut Instance {
        &mut self.instance
    }
}

impl SocketInfo {
    /// Instances currently running (stuck ones too).
    pub fn running(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.state == "running" || i.state == "stuck")
            .count()
    }

    /// Its row of `ListSockets()`.
    pub fn entry(&self) -> SocketEntry {
        SocketEntry {
            name: self.name.clone(),
            path: crate::socket_path(&self.name),
            listen: self.listen.clone(),
            distribute: self.distribute,
            running: self.running() as u32,
            state: self.state.clone(),
        }
    }
}

impl From<&SocketInfo> for SocketProperties {
    fn from(s: &SocketInfo) -> Self {
        SocketProperties {
            name: s.name.clone(),
            description: s.description.clone(),
            listen: s.listen.clone(),
            distribute: s.distribute,
            service: s.service.clone(),
            state: s.state.clone(),
            error: s.error.clone(),
            sources: s.sources.clone(),
            mode: s.mode.clone(),
            unit_file: s.unit_file.clone(),
            instances: s.instances.iter().map(|i| i.instance.clone()).collect(),
            stuck: s
                .instances
                .iter()
                .filter(|i| i.stuck_since_usec != 0)
                .map(|i| StuckInstance {
                    index: i.index,
                    since_usec: i.stuck_since_usec,
                    why: i.reason.clone(),
                })
                .collect(),
        }
    }
}

impl From<SocketProperties> for SocketInfo {
    fn from(p: SocketProperties) -> Self {
        let stuck = p.stuck;
        SocketInfo {
            name: p.name,
            listen: p.listen,
            distribute: p.distribute,
            service: p.service,
            state: p.state,
            error: p.error,
            sources: p.sources,
            mode: p.mode,
            unit_file: p.unit_file,
            description: p.description,
            instances: p
                .instances
                .into_iter()
                .map(|instance| InstanceInfo {
                    stuck_since_usec: stuck
                        .iter()
                        .find(|s| s.index == instance.index)
                        .map_or(0, |s| s.since_usec),
                    instance,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fixture() -> SocketInfo {
        SocketInfo {
            name: "web".into(),
            listen: vec!["ListenStream=127.0.0.1:8080".into()],
            distribute: 2,
            service: "web".into(),
            state: "serving".into(),
            sources: vec!["/etc/systemd/distribute/web.socket".into()],
            mode: "transient".into(),
            instances: (0..2)
                .map(|index| InstanceInfo {
                    instance: Instance {
                        index,
                        unit: format!("web@{index}.service"),
                        state: "listening".into(),
                        ..Default::default()
                    },
                    stuck_since_usec: 0,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn signatures_are_the_documented_ones() {
        assert_eq!(SocketEntry::SIGNATURE.to_string(), "(soasuus)");
        assert_eq!(Instance::SIGNATURE.to_string(), "(ussuttus)");
        assert_eq!(StuckInstance::SIGNATURE.to_string(), "(uts)");
        let map = SocketProperties::from(&fixture()).to_map();
        let mut sigs: Vec<(String, String)> = map
            .iter()
            .map(|(k, v)| (k.clone(), v.value_signature().to_string()))
            .collect();
        sigs.sort();
        let want = [
            ("Description", "s"),
            ("Distribute", "u"),
            ("Error", "s"),
            ("Instances", "a(ussuttus)"),
            ("Listen", "as"),
            ("Mode", "s"),
            ("Name", "s"),
            ("Service", "s"),
            ("Sources", "as"),
            ("State", "s"),
            ("Stuck", "a(uts)"),
            ("UnitFile", "s"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(sigs, want);
    }

    #[test]
    fn entry_of_a_socket() {
        let e = fixture().entry();
        assert_eq!(e.path.as_str(), "/org/distribute1/socket/web");
        assert_eq!((e.distribute, e.running), (2, 0));
    }

    #[test]
    fn properties_round_trip_with_stuck_instances() {
        let mut info = fixture();
        info.instances[1].state = "stuck".into();
        info.instances[1].reason = "accept queue 9 has not drained".into();
        info.instances[1].stuck_since_usec = 1_700_000_000_000_000;
        let props = SocketProperties::from(&info);
        assert_eq!(props.stuck.len(), 1);
        let back = SocketProperties::from_map(props.to_map()).unwrap();
        assert_eq!(back, props);
        assert_eq!(SocketInfo::from(back), info);
    }

    #[test]
    fn a_missing_property_reads_as_its_default() {
        let mut map = SocketProperties::from(&fixture()).to_map();
        map.remove("Description");
        map.remove("Stuck");
        let p = SocketProperties::from_map(map).unwrap();
        assert_eq!(p, SocketProperties::from(&fixture()));
    }
}
