//! The errors of our methods and their D-Bus names.

/// Errors of the `org.distribute1` methods, by D-Bus error name.
///
/// Our own names carry the `org.distribute1.Error` prefix; bad arguments,
/// refusals and failures use the standard `org.freedesktop.DBus.Error.*` names
/// that `busctl` and every D-Bus binding recognise. The derive joins `prefix`
/// and a variant's `name` with a dot, so the prefix is the part both share.
/// A client turns a `zbus::Error` into this with `From`.
#[derive(Debug, Clone, PartialEq, zbus::DBusError)]
#[zbus(prefix = "org", impl_display = false)]
pub enum Error {
    /// Not one of ours: whatever else went wrong on the client side.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `org.distribute1.Error.NoSuchSocket`: no socket config of that name.
    #[zbus(name = "distribute1.Error.NoSuchSocket")]
    NoSuchSocket(String),
    /// `org.freedesktop.DBus.Error.InvalidArgs`: an argument is out of range.
    #[zbus(name = "freedesktop.DBus.Error.InvalidArgs")]
    InvalidArgs(String),
    /// `org.freedesktop.DBus.Error.Failed`: valid, but could not be carried out.
    #[zbus(name = "freedesktop.DBus.Error.Failed")]
    Failed(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`: only root may change anything.
    #[zbus(name = "freedesktop.DBus.Error.AccessDenied")]
    AccessDenied(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ZBus(e) => e.fmt(f),
            Error::NoSuchSocket(m)
            | Error::InvalidArgs(m)
            | Error::Failed(m)
            | Error::AccessDenied(m) => f.write_str(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn names_are_unchanged() {
        for (e, name) in [
            (
                Error::NoSuchSocket("x".into()),
                "org.distribute1.Error.NoSuchSocket",
            ),
            (
                Error::InvalidArgs("x".into()),
                "org.freedesktop.DBus.Error.InvalidArgs",
            ),
            (
                Error::Failed("x".into()),
                "org.freedesktop.DBus.Error.Failed",
            ),
            (
                Error::AccessDenied("x".into()),
                "org.freedesktop.DBus.Error.AccessDenied",
            ),
        ] {
            assert_eq!(e.name().as_str(), name);
            assert_eq!(e.description(), Some("x"));
            assert_eq!(e.to_string(), "x");
        }
    }

    #[test]
    fn a_client_error_converts_by_name() {
        let fdo = zbus::Error::FDO(Box::new(zbus::fdo::Error::InvalidArgs("n".into())));
        assert_eq!(Error::from(fdo), Error::InvalidArgs("n".into()));
    }
}
