//! Change publishing: follows the daemon's [`Event`]s and keeps the bus in
//! step (objects, the Manager's `Socket*` signals, `PropertiesChanged`).
//!
//! `PropertiesChanged` is computed from [`SocketInfo::to_map`] as a whole, so a
//! new property is announced without an edit here.

use super::objects::{add_object, describe, list, remove_object, Manager};
use crate::control::{CommandSender, Event, SocketInfo};
use distribute_dbus::{socket_path, MANAGER_PATH, SOCKET_INTERFACE};
use std::borrow::Cow;
use std::collections::HashMap;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{fdo, Connection};

/// Follows the daemon's events and keeps the bus in step. The object server
/// is the record of which objects exist; `announced` only remembers property
/// values for `PropertiesChanged`.
pub struct Publisher {
    pub(super) conn: Connection,
    pub(super) commands: CommandSender,
    /// What was last announced about each socket (`None`: nothing yet).
    pub(super) announced: HashMap<String, Option<Announced>>,
}

/// What was last announced for a socket, to put only real changes into
/// `PropertiesChanged`: its properties without the queue depth, which
/// changes all the time and is read live.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced(HashMap<String, OwnedValue>);

impl Announced {
    /// What `info` announces.
    pub fn of(info: &SocketInfo) -> Self {
        let mut quiet = info.clone();
        for i in &mut quiet.instances {
            i.queue_depth = 0;
        }
        Announced(quiet.to_map())
    }

    /// The `PropertiesChanged` payload from `old` (`None`: nothing was
    /// announced yet, so every value is news) to `info`: the properties whose
    /// values changed, with their current values (live queue depth included).
    /// `Name` is const and never announced.
    pub fn changes(old: Option<&Announced>, info: &SocketInfo) -> HashMap<String, OwnedValue> {
        let new = Announced::of(info);
        info.to_map()
            .into_iter()
            .filter(|(k, _)| k != "Name")
            .filter(|(k, _)| old.and_then(|o| o.0.get(k)) != new.0.get(k))
            .collect()
    }
}

impl Publisher {
    fn manager_emitter(&self) -> zbus::Result<SignalEmitter<'static>> {
        SignalEmitter::new(&self.conn, MANAGER_PATH)
    }

    /// Serves the object of `name`; true if it is new.
    pub async fn add_object(&mut self, name: &str) -> zbus::Result<bool> {
        add_object(self.conn.object_server(), &self.commands, name).await
    }

    /// Drops the object of `name`; true if it was served.
    pub async fn remove_object(&mut self, name: &str) -> zbus::Result<bool> {
        self.announced.remove(name);
        remove_object(self.conn.object_server(), name).await
    }

    /// Objects first, for the whole batch (no round trip to the daemon core,
    /// so they exist as soon as possible), then the signals, which need
    /// `Describe`/`List` answers.
    pub async fn handle(&mut self, batch: Vec<Event>) -> zbus::Result<()> {
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut changed: Vec<String> = Vec::new();
        for event in batch {
            match event {
                Event::SocketAdded(name) | Event::SocketChanged(name) => {
                    if self.add_object(&name).await? {
                        removed.retain(|n| n != &name);
                        added.push(name.clone());
                    }
                    if !changed.contains(&name) {
                        changed.push(name);
                    }
                }
                Event::SocketRemoved(name) => {
                    if self.remove_object(&name).await? {
                        added.retain(|n| n != &name);
                        changed.retain(|n| n != &name);
                        removed.push(name);
                    }
                }
            }
        }
        let emitter = self.manager_emitter()?;
        for name in &removed {
            Manager::socket_removed(&emitter, name, socket_path(name).as_ref()).await?;
        }
        for name in &added {
            Manager::socket_added(&emitter, name, socket_path(name).as_ref()).await?;
        }
        if !added.is_empty() || !removed.is_empty() {
            self.sockets_changed().await?;
        }
        for name in &changed {
            self.announce_changed(name).await?;
        }
        Ok(())
    }

    /// `PropertiesChanged` of the Manager's `Sockets`.
    async fn sockets_changed(&self) -> zbus::Result<()> {
        let iface = self
            .conn
            .object_server()
            .interface::<_, Manager>(MANAGER_PATH)
            .await?;
        let manager = iface.get().await;
        let result = manager.sockets_changed(iface.signal_emitter()).await;
        drop(manager);
        result
    }

    /// `PropertiesChanged` (only what changed) and `SocketChanged`.
    async fn announce_changed(&mut self, name: &str) -> zbus::Result<()> {
        let info = match describe(&self.commands, name).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("D-Bus: describing {name} failed: {e}");
                return Ok(());
            }
        };
        let path = socket_path(name);
        let old = self.announced.get(name).cloned().flatten();
        let changed = Announced::changes(old.as_ref(), &info);
        self.announced
            .insert(name.to_string(), Some(Announced::of(&info)));
        let emitter = SignalEmitter::new(&self.conn, path.clone())?;
        if !changed.is_empty() {
            let mut values = HashMap::new();
            for (k, v) in &changed {
                values.insert(k.as_str(), Value::from(v.try_clone()?));
            }
            fdo::Properties::properties_changed(
                &emitter,
                InterfaceName::from_static_str_unchecked(SOCKET_INTERFACE),
                values,
                Cow::Borrowed(&[]),
            )
            .await?;
        }
        let manager = self.manager_emitter()?;
        Manager::socket_changed(&manager, name, path.as_ref()).await
    }

    /// Makes the served objects match the daemon's list, once the core answers.
    pub async fn reconcile(&mut self) {
        let sockets = match list(&self.commands).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("D-Bus: listing sockets failed: {e}");
                return;
            }
        };
        let mut changed = false;
        for s in &sockets {
            match self.add_object(&s.name).await {
                Ok(true) => {
                    changed = true;
                    if let Ok(emitter) = self.manager_emitter() {
                        let path = socket_path(&s.name);
                        let _ = Manager::socket_added(&emitter, &s.name, path.as_ref()).await;
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("D-Bus: serving {}: {e}", s.name),
            }
            self.announced
                .insert(s.name.clone(), Some(Announced::of(s)));
        }
        let stale: Vec<String> = self
            .announced
            .keys()
            .filter(|k| !sockets.iter().any(|s| &s.name == *k))
            .cloned()
            .collect();
        for name in stale {
            if let Ok(true) = self.remove_object(&name).await {
                changed = true;
            }
        }
        if changed {
            let _ = self.sockets_changed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Instance, InstanceInfo};

    fn fixture() -> SocketInfo {
        let mut info = SocketInfo {
            name: "web".into(),
            ..Default::default()
        };
        for index in 0..2 {
            let state = "listening".to_string();
            let instance = Instance {
                index,
                state,
                ..Default::default()
            };
            info.instances.push(InstanceInfo {
                instance,
                stuck_since_usec: 0,
            });
        }
        info
    }

    fn keys(c: &HashMap<String, OwnedValue>) -> Vec<&str> {
        let mut keys: Vec<&str> = c.keys().map(String::as_str).collect();
        keys.sort();
        keys
    }

    #[test]
    fn properties_changed_carries_only_changes() {
        let mut info = fixture();
        // Nothing announced yet: every property but the const `Name`.
        let all = Announced::changes(None, &info);
        let mut want: Vec<String> = info.to_map().into_keys().collect();
        want.retain(|k| k != "Name");
        want.sort();
        assert_eq!(keys(&all), want);
        let old = Announced::of(&info);
        assert!(Announced::changes(Some(&old), &info).is_empty());
        // Queue depth alone is not a change worth a signal.
        info.instances[0].queue_depth = 5;
        assert!(Announced::changes(Some(&old), &info).is_empty());
        info.instances[1].state = "running".into();
        info.instances[1].main_pid = 42;
        let c = Announced::changes(Some(&old), &info);
        assert_eq!(keys(&c), ["Instances"]);
        assert_eq!(c["Instances"].value_signature().to_string(), "a(ussuttus)");
        info.instances[1].state = "stuck".into();
        info.instances[1].reason = "accept queue 9 has not drained".into();
        info.instances[1].stuck_since_usec = 1_700_000_000_000_000;
        let c = Announced::changes(Some(&Announced::of(&fixture())), &info);
        assert_eq!(keys(&c), ["Instances", "Stuck"]);
        assert_eq!(c["Stuck"].value_signature().to_string(), "a(uts)");
    }
}
