//! The client side: `#[zbus::proxy]` traits of our two interfaces. The
//! attribute takes literals; a unit test checks them against the constants.

use crate::SocketEntry;
use zbus::zvariant::OwnedObjectPath;

/// `org.distribute1.Manager` at `/org/distribute1`.
#[zbus::proxy(
    interface = "org.distribute1.Manager",
    default_service = "org.distribute1",
    default_path = "/org/distribute1"
)]
pub trait Manager {
    /// Every socket config, `a(soasuus)`.
    fn list_sockets(&self) -> zbus::Result<Vec<SocketEntry>>;
    /// Object path of a socket config.
    fn get_socket(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    /// Re-reads every config (root only).
    fn reload(&self) -> zbus::Result<()>;
    /// Version of the daemon.
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    /// Object paths of every socket config.
    #[zbus(property)]
    fn sockets(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

/// `org.distribute1.Socket` at `/org/distribute1/socket/NAME`
/// ([`crate::socket_path`]). Read all properties at once with
/// [`SocketProxy::properties`] (`GetAll`, into [`crate::SocketInfo`]).
#[zbus::proxy(
    interface = "org.distribute1.Socket",
    default_service = "org.distribute1"
)]
pub trait Socket {
    /// Changes N (root only).
    fn set_distribute(&self, n: u32) -> zbus::Result<()>;
    /// Starts one instance (root only).
    fn start_instance(&self, index: u32) -> zbus::Result<()>;
    /// Stops one instance (root only).
    fn stop_instance(&self, index: u32) -> zbus::Result<()>;
    /// Restarts one instance (root only).
    fn restart_instance(&self, index: u32) -> zbus::Result<()>;
    /// Config name.
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    /// Current N.
    #[zbus(property)]
    fn distribute(&self) -> zbus::Result<u32>;
    /// Files the effective config came from, in the order applied.
    #[zbus(property)]
    fn sources(&self) -> zbus::Result<Vec<String>>;
}

impl SocketProxy<'_> {
    /// Every property (`org.freedesktop.DBus.Properties.GetAll`). A property
    /// an older daemon does not have reads as its default.
    pub async fn properties(&self) -> zbus::Result<crate::SocketInfo> {
        let props = zbus::fdo::PropertiesProxy::builder(self.inner().connection())
            .destination(self.inner().destination().to_owned())?
            .path(self.inner().path().to_owned())?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let all = props
            .get_all(zbus::names::InterfaceName::from_static_str_unchecked(
                crate::SOCKET_INTERFACE,
            ))
            .await?;
        crate::SocketInfo::from_map(all).map_err(zbus::Error::Variant)
    }
}
