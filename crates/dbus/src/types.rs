//! The data: a socket config as the activator knows it and the
//! `org.distribute1.Socket` object shows it ([`SocketInfo`], whose fields are
//! the object's properties), and the structs inside the D-Bus values, each
//! with its signature fixed by its fields.
//!
//! A new read-only property is a field in [`SocketInfo`] (plus where the
//! activator fills it and its getter there); `PropertiesChanged`, `GetAll`,
//! `distributectl --json` and the signature test follow from the field.

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type, Value, OwnedValue)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type, Value, OwnedValue)]
pub struct StuckInstance {
    /// Index I.
    pub index: u32,
    /// Since when its queue has not drained: µs since the epoch (`CLOCK_REALTIME`).
    pub since_usec: u64,
    /// Why.
    pub why: String,
}

/// One socket config: the properties of its `org.distribute1.Socket` object
/// (`a{sv}` from `GetAll`, keys the field names in PascalCase, plus `Stuck`,
/// which is computed from the instances), and what `distributectl --json
/// status` prints (in field order, with the object path in front).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Value)]
#[zvariant(signature = "dict", rename_all = "PascalCase")]
pub struct SocketInfo {
    /// `Name` (const): config name, `NAME` of `NAME.socket`.
    pub name: String,
    /// `Listen`: `ListenStream=127.0.0.1:8080`-style lines, in config order
    /// (companion listeners, shared by all instances, included:
    /// `ListenStream=/run/x.sock`).
    pub listen: Vec<String>,
    /// `Distribute`: current N.
    pub distribute: u32,
    /// `Service`: template prefix, instances are `SERVICE@I.service`.
    pub service: String,
    /// `State`: `serving`, `draining`, `replacing` (old sockets draining, new
    /// ones not bound yet) or `failed`.
    pub state: String,
    /// `Error`: why the config is failed or degraded ("" if fine), e.g. the
    /// last reload error.
    pub error: String,
    /// `Sources`: files the effective config came from, in the order applied.
    pub sources: Vec<String>,
    /// `Mode`: how instances are started, `transient` (built from
    /// `[Service]`) or `template` (the unit file's own instances); "" for a
    /// config not served.
    pub mode: String,
    /// `UnitFile`: template mode, the template's unit file (systemd's
    /// `FragmentPath`).
    pub unit_file: String,
    /// `Description`: the config's `[Unit]` `Description=` ("" if none).
    pub description: String,
    /// `Instances`, `a(ussuttus)`: the instance slots, by index.
    pub instances: Vec<InstanceInfo>,
}

/// The key of the computed `Stuck` property, `a(uts)`.
const STUCK: &str = "Stuck";

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

    /// The `Stuck` property: the instances running but not accepting.
    pub fn stuck(&self) -> Vec<StuckInstance> {
        self.instances
            .iter()
            .filter(|i| i.stuck_since_usec != 0)
            .map(|i| StuckInstance {
                index: i.index,
                since_usec: i.stuck_since_usec,
                why: i.reason.clone(),
            })
            .collect()
    }

    /// Every property of its object, name → value.
    pub fn to_map(&self) -> HashMap<String, OwnedValue> {
        let Value::Dict(dict) = Value::from(self.clone()) else {
            unreachable!("SocketInfo is a dict")
        };
        let mut map: HashMap<String, OwnedValue> =
            HashMap::try_from(dict).expect("a{sv} converts to a map");
        let stuck = Value::from(self.stuck()).try_into_owned();
        map.insert(STUCK.into(), stuck.expect("no fds in Stuck"));
        map
    }

    /// From the properties of its object (`GetAll`); a missing property (an
    /// older daemon) reads as its default.
    pub fn from_map(map: HashMap<String, OwnedValue>) -> Result<Self, zvariant::Error> {
        let mut all = SocketInfo::default().to_map();
        all.extend(map);
        let stuck: Vec<StuckInstance> = all
            .remove(STUCK)
            .map(Vec::try_from)
            .transpose()?
            .unwrap_or_default();
        let all: HashMap<String, Value<'_>> =
            all.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
        let mut info = SocketInfo::try_from(Value::from(all))?;
        for s in stuck {
            if let Some(i) = info.instances.iter_mut().find(|i| i.index == s.index) {
                i.stuck_since_usec = s.since_usec;
            }
        }
        Ok(info)
    }
}

/// One instance slot: its `Instances` entry and, for a stuck one, since when
/// (which the wire carries in `Stuck`). Reads and writes through to the entry.
/// On the bus it is its entry, `(ussuttus)`.
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

impl Type for InstanceInfo {
    const SIGNATURE: &'static zvariant::Signature = Instance::SIGNATURE;
}

impl From<InstanceInfo> for Value<'_> {
    fn from(i: InstanceInfo) -> Self {
        Value::from(i.instance)
    }
}

impl<'a> TryFrom<Value<'a>> for InstanceInfo {
    type Error = zvariant::Error;
    fn try_from(v: Value<'a>) -> Result<Self, zvariant::Error> {
        Ok(InstanceInfo {
            instance: Instance::try_from(v.try_into_owned()?)?,
            stuck_since_usec: 0,
        })
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
        let mut sigs: Vec<(String, String)> = fixture()
            .to_map()
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
        assert_eq!(info.stuck().len(), 1);
        assert_eq!(SocketInfo::from_map(info.to_map()).unwrap(), info);
    }

    #[test]
    fn a_missing_property_reads_as_its_default() {
        let mut map = fixture().to_map();
        map.remove("Description");
        map.remove("Stuck");
        assert_eq!(SocketInfo::from_map(map).unwrap(), fixture());
    }
}
