//! Checks that need the whole config: after the main file and all drop-ins are applied,
//! since any of them may add or reset what is checked here.

use std::path::Path;

use crate::error::ConfigError;
use crate::spec::SocketSpec;

/// Validates a fully applied spec. Errors name `main`, the `NAME.socket` file: the thing
/// is missing from all files, so there is no line to point at.
pub(crate) fn finish(main: &Path, spec: SocketSpec) -> Result<SocketSpec, ConfigError> {
    if let (true, Some(first)) = (spec.listen.is_empty(), spec.companions.first()) {
        // Something to listen on, but nothing the kernel can spread over N sockets.
        return Err(ConfigError::assignment(
            &first.origin.file,
            first.origin.line,
            first.kind.key(),
            &first.path,
            "no TCP or UDP listener to distribute: AF_UNIX sockets and FIFOs are bound once \
             and shared by all instances, which only makes sense next to a ListenStream= or \
             ListenDatagram= address; for this config use a plain systemd socket unit",
        ));
    }
    let in_fs = spec
        .companions
        .iter()
        .filter(|c| !c.is_abstract())
        .collect::<Vec<_>>();
    if !spec.options.symlinks.is_empty() && in_fs.len() > 1 {
        let second = in_fs[1];
        return Err(ConfigError::assignment(
            &second.origin.file,
            second.origin.line,
            second.kind.key(),
            &second.path,
            "Symlinks= needs exactly one AF_UNIX socket or FIFO in the file system (as in \
             systemd), and this is the second",
        ));
    }
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
