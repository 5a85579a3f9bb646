//! Checks that need the whole config: after the main file and all drop-ins are applied,
//! since any of them may add or reset what is checked here.

use std::path::Path;

use crate::error::ConfigError;
use crate::spec::SocketSpec;

/// Validates a fully applied spec. Errors name `main`, the `NAME.socket` file: the thing
/// is missing from all files, so there is no line to point at.
pub(crate) fn finish(main: &Path, spec: SocketSpec) -> Result<SocketSpec, ConfigError> {
    if spec.listen.is_empty() {
        return Err(ConfigError::file(
            main,
            "missing ListenStream= or ListenDatagram= in [Socket]: nothing to listen on",
        ));
    }
    // No [Service] at all: the instances are a template unit file's (template
    // mode), which only the activator can look up in systemd's unit path.
    if spec.service_section.is_some() && spec.exec.exec_start.is_empty() {
        return Err(ConfigError::file(
            main,
            "missing ExecStart= in [Service]: nothing to run",
        ));
    }
    Ok(spec)
}
