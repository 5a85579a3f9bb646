//! The D-Bus API: bus name `org.distribute1` on the system bus, as
//! [`distribute_dbus`] describes it (names, paths, wire types, errors).
//!
//! [`objects`] holds the two interfaces (`org.distribute1.Manager` and one
//! `org.distribute1.Socket` per config); [`publish`] follows the daemon's
//! [`Event`]s and keeps the bus in step: objects added and removed, the
//! Manager's signals, `PropertiesChanged`.
//!
//! Every mutating method checks the caller's UID ([`objects::require_root`])
//! on top of the bus policy (`units/org.distribute1.conf`), so a missing or
//! edited policy file does not open them up. The interface structs hold only a
//! [`CommandSender`]: every read and action goes to the single-threaded daemon
//! core through [`crate::control::ask`].

pub mod objects;
pub mod publish;

use crate::control::{CommandSender, Event};
use distribute_dbus::{BUS_NAME, MANAGER_PATH};
use std::collections::HashMap;
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::Connection;

pub use objects::Manager;

/// Publishes the API on `conn` and takes the name `org.distribute1`.
///
/// Serves `/org/distribute1`, then one object per socket config for every
/// [`Event::SocketAdded`] already queued on `events`, then requests the name.
/// It never waits for the daemon core, which may not be answering commands
/// yet. A spawned task then follows `events`: for each batch it first adds and
/// removes objects (no round trip to the core, so the objects of configs bound
/// during startup exist by the time the daemon reports READY=1), then emits
/// the Manager's signals and `PropertiesChanged`. After the first batch it
/// reconciles the objects once against `Request::List`. `GetSocket` and
/// `ListSockets` also serve any missing object before returning its path.
pub async fn serve(
    conn: &Connection,
    commands: CommandSender,
    mut events: UnboundedReceiver<Event>,
) -> zbus::Result<()> {
    let server = conn.object_server();
    server
        .at(MANAGER_PATH, Manager::new(commands.clone()))
        .await?;
    let mut publisher = publish::Publisher {
        conn: conn.clone(),
        commands,
        announced: HashMap::new(),
    };
    // Events queued before we were called: objects only; the reconcile below
    // takes care of their properties.
    while let Ok(event) = events.try_recv() {
        match &event {
            Event::SocketAdded(name) => {
                publisher.add_object(name).await?;
                publisher.announced.insert(name.clone(), None);
            }
            Event::SocketRemoved(name) => {
                publisher.remove_object(name).await?;
            }
            Event::SocketChanged(_) => {}
        }
    }
    conn.request_name(BUS_NAME).await?;
    tracing::info!("serving {BUS_NAME} on the system bus");
    tokio::spawn(async move {
        let mut reconciled = false;
        while let Some(first) = events.recv().await {
            let mut batch = vec![first];
            while let Ok(e) = events.try_recv() {
                batch.push(e);
            }
            if let Err(e) = publisher.handle(batch).await {
                tracing::warn!("D-Bus: publishing a change failed: {e}");
            }
            if !reconciled {
                // After the first batch, whose objects are up before the
                // daemon reports READY=1: the daemon answers List only once
                // its main loop runs.
                publisher.reconcile().await;
                reconciled = true;
            }
        }
        tracing::debug!("D-Bus: the event channel closed");
    });
    Ok(())
}
