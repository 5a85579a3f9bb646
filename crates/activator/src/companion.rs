//! Companion listeners: the `Listen*=` lines the kernel cannot distribute
//! (AF_UNIX stream, datagram and seqpacket sockets, FIFOs) in a config that
//! also has TCP/UDP listeners.
//!
//! Each is bound once, as systemd binds it for a socket unit (parent
//! directories with `DirectoryMode=`, the node with `SocketMode=`, owned by
//! `SocketUser=`/`SocketGroup=`, `Symlinks=` next to it), kept in the
//! activator's fd store under `CONFIG/shared/K` (K = its index among the
//! config's companions; `shared` cannot be a listen index, so the names never
//! collide with the slots' `CONFIG/LISTEN/INDEX`), and handed to every
//! instance next to the instance's own sockets, in config order
//! ([`distribute_config::SocketSpec::fd_order`]). All instances share one
//! file description, so whichever runs accepts; when none runs, something
//! queued on a companion starts instance 0 (see `group`). `RemoveOnStop=`
//! removes the files when the config goes away or the daemon stops (not when
//! it restarts: the fd store keeps the sockets, and their files must stay).

use crate::fdstore::FdStore;
use distribute_config::{
    Companion, CompanionKind, SocketOptions, SocketSpec, DEFAULT_DIRECTORY_MODE,
    DEFAULT_SOCKET_MODE,
};
use socket2::{Domain, SockAddr, Socket, Type};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// A bound companion listener.
#[derive(Debug)]
pub struct CompanionSocket {
    /// The socket or FIFO.
    pub fd: OwnedFd,
}

/// The fd store name of companion `k` of `config`.
pub fn fd_name(config: &str, k: usize) -> String {
    format!("{config}/shared/{k}")
}

/// Whether `name` is a companion's fd store name (see [`fd_name`]).
pub fn is_fd_name(name: &str) -> bool {
    let mut it = name.rsplitn(3, '/');
    let k = it.next().and_then(|k| k.parse::<usize>().ok());
    k.is_some() && it.next() == Some("shared") && it.next().is_some_and(|c| !c.is_empty())
}

/// Why a companion could not be bound: `ListenStream=/run/x.sock: op: error`.
#[derive(Debug, thiserror::Error)]
#[error("{key}={path}: {op}: {err}")]
pub struct CompanionError {
    key: &'static str,
    path: String,
    op: String,
    err: io::Error,
}

/// Binds (or takes back from the fd store) every companion of `spec`. All or
/// nothing: on error the ones already bound are closed (and removed from the store).
pub fn bind_all(
    spec: &SocketSpec,
    store: &FdStore,
) -> Result<Vec<CompanionSocket>, CompanionError> {
    let mut out = Vec::with_capacity(spec.companions.len());
    for (k, c) in spec.companions.iter().enumerate() {
        let name = fd_name(&spec.name, k);
        let stored = store.take(&name);
        let had_stored = stored.is_some();
        let reused = stored.filter(|fd| matches(c, fd));
        let fd = match reused {
            Some(fd) => {
                // The config may have changed owner or mode since.
                if !c.is_abstract() {
                    if let Err(e) = set_owner_and_mode(Path::new(&c.path), &spec.options) {
                        tracing::warn!("{name}: {}: {e}", c.path);
                    }
                }
                fd
            }
            None => {
                if had_stored {
                    tracing::info!(
                        "{name}: the stored {} no longer matches; replacing it",
                        c.path
                    );
                    store.remove(&name);
                }
                match bind_one(c, &spec.options) {
                    Ok(fd) => {
                        store.store(&name, fd.as_fd());
                        fd
                    }
                    Err(e) => {
                        drop(out);
                        for k in 0..k {
                            store.remove(&fd_name(&spec.name, k));
                        }
                        return Err(e);
                    }
                }
            }
        };
        if !c.is_abstract() {
            make_symlinks(c, &spec.options);
        }
        out.push(CompanionSocket { fd });
    }
    Ok(out)
}

/// Drops the companions of `spec` from the fd store and, with `RemoveOnStop=`,
/// removes their files and symlinks (the sockets themselves close with their
/// last owner).
pub fn forget(spec: &SocketSpec, store: &FdStore, remove_files: bool) {
    for k in 0..spec.companions.len() {
        store.remove(&fd_name(&spec.name, k));
    }
    if remove_files {
        remove_on_stop(spec);
    }
}

/// `RemoveOnStop=yes`: removes the companions' files and `Symlinks=`.
pub fn remove_on_stop(spec: &SocketSpec) {
    if !spec.options.remove_on_stop {
        return;
    }
    for c in spec.companions.iter().filter(|c| !c.is_abstract()) {
        for link in &spec.options.symlinks {
            if std::fs::read_link(link).is_ok_and(|t| t == Path::new(&c.path)) {
                let _ = std::fs::remove_file(link);
            }
        }
        match std::fs::remove_file(&c.path) {
            Ok(()) => tracing::info!("{}: removed {} (RemoveOnStop=yes)", spec.name, c.path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: removing {}: {e}", spec.name, c.path),
        }
    }
}

/// Whether a stored fd is still what `c` asks for.
fn matches(c: &Companion, fd: &OwnedFd) -> bool {
    if c.kind == CompanionKind::Fifo {
        let (Ok(ours), Ok(theirs)) = (
            nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(fd)),
            std::fs::metadata(&c.path),
        ) else {
            return false;
        };
        return theirs.file_type().is_fifo()
            && ours.st_dev == theirs.dev()
            && ours.st_ino == theirs.ino();
    }
    let Ok(socket) = fd.try_clone().map(Socket::from) else {
        return false;
    };
    let Ok(ty) = socket.r#type() else {
        return false;
    };
    if ty != sock_type(c.kind) {
        return false;
    }
    let Ok(addr) = socket.local_addr() else {
        return false;
    };
    match c.path.strip_prefix('@') {
        Some(name) => addr.as_abstract_namespace() == Some(name.as_bytes()),
        // Still bound there, and the file is still there (someone may have
        // removed it, making the socket unreachable).
        None => {
            addr.as_pathname() == Some(Path::new(&c.path))
                && std::fs::symlink_metadata(&c.path).is_ok_and(|m| m.file_type().is_socket())
        }
    }
}

fn sock_type(kind: CompanionKind) -> Type {
    match kind {
        CompanionKind::Stream | CompanionKind::Fifo => Type::STREAM,
        CompanionKind::Datagram => Type::DGRAM,
        CompanionKind::SequentialPacket => Type::SEQPACKET,
    }
}

/// Binds one companion as systemd would for a socket unit.
pub fn bind_one(c: &Companion, opts: &SocketOptions) -> Result<OwnedFd, CompanionError> {
    let fail = |op: &str, err: io::Error| CompanionError {
        key: c.kind.key(),
        path: c.path.clone(),
        op: op.to_string(),
        err,
    };
    let path = Path::new(&c.path);
    if !c.is_abstract() {
        make_parents(path, opts.directory_mode.unwrap_or(DEFAULT_DIRECTORY_MODE))
            .map_err(|e| fail("creating its directory", e))?;
    }
    if c.kind == CompanionKind::Fifo {
        let fd = open_fifo(path, opts).map_err(|(op, e)| fail(op, e))?;
        set_owner_and_mode(path, opts).map_err(|e| {
            let _ = std::fs::remove_file(path);
            fail("owner and mode", e)
        })?;
        return Ok(fd);
    }
    let socket = Socket::new(Domain::UNIX, sock_type(c.kind).cloexec(), None)
        .map_err(|e| fail("socket", e))?;
    let int = |level, name, op: &str| {
        crate::sockets::set_int_opt(&socket, level, name, 1).map_err(|e| fail(op, e))
    };
    if opts.pass_credentials {
        int(libc::SOL_SOCKET, libc::SO_PASSCRED, "SO_PASSCRED")?;
    }
    if opts.pass_security {
        int(libc::SOL_SOCKET, libc::SO_PASSSEC, "SO_PASSSEC")?;
    }
    if let Some(size) = opts.receive_buffer {
        socket
            .set_recv_buffer_size(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| fail("SO_RCVBUF", e))?;
    }
    if let Some(size) = opts.send_buffer {
        socket
            .set_send_buffer_size(usize::try_from(size).unwrap_or(usize::MAX))
            .map_err(|e| fail("SO_SNDBUF", e))?;
    }
    let addr = match c.path.strip_prefix('@') {
        Some(name) => {
            let mut bytes = vec![0u8];
            bytes.extend_from_slice(name.as_bytes());
            SockAddr::unix(OsStr::from_bytes(&bytes))
        }
        None => {
            // A stale socket from an earlier run is replaced, as systemd does;
            // anything else at that path is not ours to remove.
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    std::fs::remove_file(path).map_err(|e| fail("removing the old socket", e))?
                }
                Ok(_) => {
                    return Err(fail(
                        "bind",
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "the path exists and is not a socket",
                        ),
                    ))
                }
                Err(_) => {}
            }
            SockAddr::unix(path)
        }
    }
    .map_err(|e| fail("address", e))?;
    socket.bind(&addr).map_err(|e| fail("bind", e))?;
    if !c.is_abstract() {
        if let Err(e) = set_owner_and_mode(path, opts) {
            // Not left behind half-configured.
            let _ = std::fs::remove_file(path);
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (SocketUser=/SocketGroup= need CAP_CHOWN)"
            } else {
                ""
            };
            return Err(fail(&format!("owner and mode{hint}"), e));
        }
    }
    if c.kind != CompanionKind::Datagram {
        let backlog = opts
            .backlog
            .unwrap_or(crate::sockets::DEFAULT_BACKLOG)
            .min(i32::MAX as u32) as i32;
        socket.listen(backlog).map_err(|e| fail("listen", e))?;
    }
    Ok(socket.into())
}

/// Creates or reuses the FIFO at `path` and opens it read-write (so it never
/// sees EOF), non-blocking, like systemd.
fn open_fifo(path: &Path, opts: &SocketOptions) -> Result<OwnedFd, (&'static str, io::Error)> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let mode = Mode::from_bits_truncate(opts.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE));
    match nix::unistd::mkfifo(path, mode) {
        Ok(()) => {}
        Err(nix::errno::Errno::EEXIST) => {
            let is_fifo = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo());
            if !is_fifo {
                return Err((
                    "mkfifo",
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists and is not a FIFO",
                    ),
                ));
            }
        }
        Err(e) => return Err(("mkfifo", e.into())),
    }
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| ("open", io::Error::from(e)))?;
    // SAFETY: open() just returned this fd; we own it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if let Some(size) = opts.pipe_size {
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as libc::c_int),
        )
        .map_err(|e| ("F_SETPIPE_SZ (PipeSize=)", io::Error::from(e)))?;
    }
    Ok(fd)
}

/// Creates the missing parent directories of `path` with exactly `mode` (not
/// narrowed by the daemon's `UMask=`, as systemd's own are not).
fn make_parents(path: &Path, mode: u32) -> io::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `SocketMode=` (default 0666) and `SocketUser=`/`SocketGroup=` on the node.
fn set_owner_and_mode(path: &Path, opts: &SocketOptions) -> io::Result<()> {
    let mode = opts.socket_mode.unwrap_or(DEFAULT_SOCKET_MODE);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let uid = opts.socket_user.as_deref().map(resolve_user).transpose()?;
    let gid = opts
        .socket_group
        .as_deref()
        .map(resolve_group)
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        nix::unistd::fchownat(
            None,
            path,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    Ok(())
}

fn resolve_user(name: &str) -> io::Result<nix::unistd::Uid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Uid::from_raw(n));
    }
    match nix::unistd::User::from_name(name)? {
        Some(u) => Ok(u.uid),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("SocketUser={name}: no such user"),
        )),
    }
}

fn resolve_group(name: &str) -> io::Result<nix::unistd::Gid> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(nix::unistd::Gid::from_raw(n));
    }
    match nix::unistd::Group::from_name(name)? {
        Some(g) => Ok(g.gid),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("SocketGroup={name}: no such group"),
        )),
    }
}

/// `Symlinks=`: aliases of the companion's path; a failure is logged, not fatal
/// (as in systemd).
fn make_symlinks(c: &Companion, opts: &SocketOptions) {
    for link in &opts.symlinks {
        let link = Path::new(link);
        if std::fs::read_link(link).is_ok_and(|t| t == Path::new(&c.path)) {
            continue;
        }
        let r = make_parents(link, opts.directory_mode.unwrap_or(DEFAULT_DIRECTORY_MODE))
            .and_then(|()| match std::fs::symlink_metadata(link) {
                Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(link),
                _ => Ok(()),
            })
            .and_then(|()| std::os::unix::fs::symlink(&c.path, link));
        if let Err(e) = r {
            tracing::warn!(
                "Symlinks={}: {e} (the socket is served anyway)",
                link.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names_do_not_collide_with_slot_names() {
        assert_eq!(fd_name("web", 2), "web/shared/2");
        assert!(is_fd_name("web/shared/2"));
        for other in ["web/0/2", "web/shared/x", "shared/2", "/shared/2"] {
            assert!(!is_fd_name(other), "{other}");
        }
        assert_eq!(crate::fdstore::parse_fd_name("web/shared/2"), None);
    }

    fn tmp(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "distribute-companion-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn unix_socket_and_fifo_as_systemd_creates_them() {
        let d = tmp("bind");
        let sock = d.join("sub/web.sock");
        let fifo = d.join("sub/web.fifo");
        let text = format!(
            "[Socket]\nListenStream=80\nListenStream={}\nListenFIFO={}\nSocketMode=0640\n\
             DirectoryMode=0750\nRemoveOnStop=yes\nSocketGroup=0\n[Service]\nExecStart=/bin/true\n",
            sock.display(),
            fifo.display()
        );
        let spec = distribute_config::parse_str("web", Path::new("web.socket"), &text).unwrap();
        let store = FdStore::disabled();
        let bound = bind_all(&spec, &store).unwrap();
        assert_eq!(bound.len(), 2);
        let m = std::fs::metadata(&sock).unwrap();
        assert!(m.file_type().is_socket());
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(
            std::fs::metadata(d.join("sub")).unwrap().mode() & 0o7777,
            0o750
        );
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        let _c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        assert!(crate::sockets::queued(bound[0].fd.as_fd()).unwrap());
        // A second bind (another run) replaces the stale socket file.
        drop(bound);
        let again = bind_all(&spec, &store).unwrap();
        assert!(matches(&spec.companions[0], &again[0].fd));
        remove_on_stop(&spec);
        assert!(!sock.exists() && !fifo.exists());
        std::fs::remove_dir_all(d).unwrap();
    }
}
