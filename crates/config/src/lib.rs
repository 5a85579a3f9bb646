//! Parser and loader for systemd-distribute configs: `NAME.socket` files in systemd
//! unit-file syntax with a `[Socket]` section (where and how to listen, `Distribute=N`) and
//! an optional `[Service]` section (what each transient instance `NAME@i.service` runs;
//! without it the instances are those of the template unit file `NAME@.service`).
//!
//! This crate is pure: text in, typed [`SocketSpec`] or a [`ConfigError`] with
//! `file:line` out. The only I/O is reading files, in [`Loader`] and [`load_file`].
//!
//! ```
//! use std::path::Path;
//! use distribute_config::{parse_str, Distribute};
//!
//! let text = "[Socket]\nListenStream=8080\nDistribute=4\n\n\
//!             [Service]\nExecStart=/usr/bin/server --id=%i\n";
//! let spec = parse_str("web", Path::new("web.socket"), text).unwrap();
//! assert_eq!(spec.distribute, Distribute::Count(4));
//! assert_eq!(spec.exec.for_instance("web", 2).exec_start, ["/usr/bin/server", "--id=2"]);
//!
//! let err = parse_str("web", Path::new("web.socket"), "[Socket]\nDistribute=0\n").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "web.socket:2: Distribute=0: must be at least 1 (valid: 1 to 1024, or \"cpus\")"
//! );
//! ```
//!
//! Modules by responsibility: `lexer` (unit-file syntax), `words` (quoting), `values`
//! (one validator per value syntax), `specifier` (`%i`, `%N`), `parse` (keys → fields),
//! `validate` (whole-config checks), `load` (directories, drop-ins, masking), `render`
//! (stable text form).

#![deny(missing_docs)]

mod error;
mod lexer;
mod load;
mod parse;
mod render;
mod spec;
mod specifier;
mod validate;
pub mod values;
pub use values::check_distribute;
mod words;

pub use error::ConfigError;
pub use load::{load_file, FileLoad, LoadReport, Loader, Masked, SYSTEM_DIRS};
pub use parse::{
    check_config_name, parse_files, parse_files_all, parse_str, service_keys,
    unsupported_socket_key, IGNORED_UNIT_KEYS, INSTALL_KEYS, SOCKET_KEYS, UNIT_KEYS,
    UNSUPPORTED_SOCKET_KEYS,
};
pub use render::{render, render_report, render_spec};
pub use spec::{
    Activation, BindIpv6Only, Companion, CompanionKind, Distribute, FdRef, Listen, ListenKind,
    Notice, Origin, PassthroughValue, ServiceSpec, SocketOptions, SocketProtocol, SocketSpec,
    Steering, Timestamping, DEFAULT_DIRECTORY_MODE, DEFAULT_SOCKET_MODE, MAX_DISTRIBUTE,
};
pub use specifier::expand_specifiers;
