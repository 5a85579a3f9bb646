//! The two ways instances come to be, and the runtime drop-in of template mode.
//!
//! - **Transient mode**: the config has a `[Service]` section and no unit file
//!   `SERVICE@.service` exists; the activator builds each instance with
//!   `StartTransientUnit` ([`crate::unit`]).
//! - **Template mode**: the config has no `[Service]` and systemd can load the
//!   template unit file `SERVICE@.service` (packaged or the admin's, with its
//!   own drop-ins). The activator starts the real instance with `StartUnit`,
//!   and a runtime drop-in `/run/systemd/system/SERVICE@.service.d/`
//!   [`DROPIN_NAME`] lets it fetch its sockets ([`crate::handoff`]).
//!
//! Both at once cannot work (systemd refuses transient instances of a template
//! that has a unit file), and neither gives nothing to start: both are errors
//! that name the files involved and how to choose.

use crate::systemd::{unit_at, ManagerProxy};
use distribute_config::SocketSpec;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where systemd looks for runtime units and drop-ins.
pub const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";
/// Our drop-in's name: late in the order, so it sees (and adds to) what every
/// other drop-in of the template set.
pub const DROPIN_NAME: &str = "99-systemd-distribute.conf";
/// First line of every drop-in we write: only files with it are ever removed.
const MARKER: &str = "# Written by systemd-distribute";
/// Where transient units live; a fragment there is not a unit file.
const TRANSIENT_DIR: &str = "/run/systemd/transient/";

/// How a config's instances are started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// Transient units built from the config's `[Service]`.
    #[default]
    Transient,
    /// The template unit file's own instances.
    Template {
        /// The unit file systemd loads the instances from (`FragmentPath`).
        unit_file: String,
    },
}

impl Mode {
    /// `transient` or `template`, as the control plane shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Transient => "transient",
            Mode::Template { .. } => "template",
        }
    }

    /// The template's unit file, or "" in transient mode.
    pub fn unit_file(&self) -> &str {
        match self {
            Mode::Transient => "",
            Mode::Template { unit_file } => unit_file,
        }
    }
}

/// Asks systemd whether `spec`'s template has a unit file and decides the mode
/// (see the module docs); the error says what to change.
pub async fn detect(manager: &ManagerProxy<'_>, spec: &SocketSpec) -> Result<Mode, String> {
    let unit_file = unit_file_of(manager, spec).await?;
    let config = spec
        .sources
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("{}.socket", spec.name));
    let template = spec.template_unit();
    match (unit_file, &spec.service_section) {
        (Some(unit_file), None) => Ok(Mode::Template { unit_file }),
        (None, Some(_)) => Ok(Mode::Transient),
        (Some(unit_file), Some(origin)) => Err(format!(
            "{origin}: a [Service] section, but {unit_file} exists too: systemd refuses \
             transient instances of a template that has a unit file, so only one of them can \
             define {template}'s instances. To start the unit file's instances (template \
             mode), remove the [Service] section from {config}; to keep the transient \
             instances built from [Service], remove or rename {unit_file} and run `systemctl \
             daemon-reload`"
        )),
        (None, None) => Err(format!(
            "{config}: no [Service] section, and systemd finds no unit file {template}: add \
             a [Service] section with ExecStart= (transient instances), or install {template} \
             in a unit directory such as /etc/systemd/system and run `systemctl daemon-reload` \
             (template mode)"
        )),
    }
}

/// The unit file systemd loads instance 0 of `spec` from, if any.
async fn unit_file_of(
    manager: &ManagerProxy<'_>,
    spec: &SocketSpec,
) -> Result<Option<String>, String> {
    let unit = spec.instance_unit(0);
    let path = manager
        .load_unit(&unit)
        .await
        .map_err(|e| format!("asking systemd for {unit}: {e}"))?;
    let proxy = unit_at(manager.inner().connection(), path)
        .await
        .map_err(|e| e.to_string())?;
    let fragment = proxy.fragment_path().await.map_err(|e| e.to_string())?;
    if !fragment.is_empty() && !fragment.starts_with(TRANSIENT_DIR) {
        return Ok(Some(fragment));
    }
    if fragment.is_empty() {
        return Ok(None);
    }
    // Instance 0 is one of our transient units right now: a template file
    // installed since would only show in the unit path.
    let template = spec.template_unit();
    let files = manager
        .list_unit_files_by_patterns(&[], &[template.as_str()])
        .await
        .map_err(|e| format!("asking systemd for {template}: {e}"))?;
    Ok(files.into_iter().map(|(path, _)| path).next())
}

/// What the template's own files already say about the keys our drop-in sets,
/// so the drop-in adds to them instead of weakening them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnSettings {
    /// `NotifyAccess=` (last assignment), if set.
    pub notify_access: Option<String>,
    /// `FileDescriptorStoreMax=` (last assignment), 0 if unset.
    pub fd_store_max: u32,
}

impl OwnSettings {
    /// Applies one file's `[Service]` assignments (systemd syntax: comments,
    /// continuation lines, sections).
    pub fn apply(&mut self, text: &str) {
        let mut section = String::new();
        let mut logical = String::new();
        for raw in text.lines() {
            let line = raw.trim();
            if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
                continue;
            }
            if let Some(cont) = line.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let full = std::mem::take(&mut logical);
            let full = full.trim();
            if full.starts_with('[') && full.ends_with(']') {
                section = full[1..full.len() - 1].to_string();
                continue;
            }
            if section != "Service" {
                continue;
            }
            let Some((key, value)) = full.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "NotifyAccess" => {
                    self.notify_access = (!value.is_empty()).then(|| value.to_string());
                }
                "FileDescriptorStoreMax" => self.fd_store_max = value.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
}

/// Reads the template's unit file and its drop-ins (all but ours) as systemd
/// lists them for instance 0.
pub async fn own_settings(manager: &ManagerProxy<'_>, spec: &SocketSpec) -> OwnSettings {
    let mut own = OwnSettings::default();
    let Ok(path) = manager.load_unit(&spec.instance_unit(0)).await else {
        return own;
    };
    let Ok(proxy) = unit_at(manager.inner().connection(), path).await else {
        return own;
    };
    let fragment = proxy.fragment_path().await.unwrap_or_default();
    let dropins = proxy.drop_in_paths().await.unwrap_or_default();
    for file in std::iter::once(fragment).chain(dropins) {
        if file.is_empty() || file.ends_with(&format!("/{DROPIN_NAME}")) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&file) {
            own.apply(&text);
        }
    }
    own
}

/// The drop-in for `spec`'s template. `helper` is the hand-off helper's path,
/// `socket` the activator's hand-off socket.
pub fn dropin_text(spec: &SocketSpec, own: &OwnSettings, helper: &str, socket: &Path) -> String {
    // The instance's own sockets and the shared companions.
    let fds = (spec.listen.len() + spec.companions.len()) as u32;
    let mut s = format!(
        "{MARKER} for {}.socket (template mode).\n\
         # The helper fetches this instance's listening sockets from the activator and\n\
         # puts them in the fd store, which systemd passes to the main process as\n\
         # $LISTEN_FDS. Removed when the config goes away.\n\
         [Service]\n",
        spec.name
    );
    // Room for our sockets on top of what the unit stores itself.
    s.push_str(&format!(
        "FileDescriptorStoreMax={}\n",
        own.fd_store_max.saturating_add(fds)
    ));
    // The helper is a control process: `exec` lets it (and the main process)
    // notify. `all` already does; `exec` is what we need otherwise.
    if !matches!(own.notify_access.as_deref(), Some("exec" | "all")) {
        s.push_str("NotifyAccess=exec\n");
    }
    s.push_str(&format!(
        "ExecStartPre=+{helper} --socket {} %n\n",
        socket.display()
    ));
    s
}

/// The drop-in's path for `template` (`app@.service`) under `unit_dir`.
pub fn dropin_path(unit_dir: &Path, template: &str) -> PathBuf {
    unit_dir.join(format!("{template}.d")).join(DROPIN_NAME)
}

/// Writes the drop-in if its content differs; returns whether it changed (the
/// caller then reloads systemd once for all changes).
pub fn write_dropin(unit_dir: &Path, template: &str, text: &str) -> std::io::Result<bool> {
    let path = dropin_path(unit_dir, template);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("conf.tmp");
    std::fs::write(&tmp, text)?;
    // 0644 like any unit file, not what the daemon's UMask=0077 leaves:
    // systemd logs "is marked world-inaccessible" for a 0600 drop-in each
    // time it loads the instance, i.e. on every start of an idle-exit
    // instance (the churn benchmark saw one such line per activation).
    // Nothing in it is secret.
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    std::fs::rename(&tmp, &path)?;
    Ok(true)
}

/// Removes our drop-ins of templates not in `keep`; returns whether any went.
/// Only files that start with our marker are touched.
pub fn remove_dropins_except(unit_dir: &Path, keep: &BTreeSet<String>) -> bool {
    let Ok(entries) = std::fs::read_dir(unit_dir) else {
        return false;
    };
    let mut removed = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(template) = name.to_str().and_then(|n| n.strip_suffix(".d")) else {
            continue;
        };
        if keep.contains(template) {
            continue;
        }
        let path = entry.path().join(DROPIN_NAME);
        let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(MARKER));
        if ours && std::fs::remove_file(&path).is_ok() {
            tracing::info!(
                "removed {}: no config uses {template} any more",
                path.display()
            );
            // Leaves the directory if the admin has files there too.
            let _ = std::fs::remove_dir(entry.path());
            removed = true;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> SocketSpec {
        distribute_config::parse_str("app", Path::new("/etc/systemd/distribute/app.socket"), text)
            .unwrap()
    }

    #[test]
    fn own_settings_follow_systemd_syntax() {
        for (files, want) in [
            (vec![""], OwnSettings::default()),
            (
                vec!["[Service]\nNotifyAccess=all\nFileDescriptorStoreMax=4\n"],
                OwnSettings {
                    notify_access: Some("all".into()),
                    fd_store_max: 4,
                },
            ),
            // Other sections, comments and continuations.
            (
                vec!["[Unit]\nNotifyAccess=all\n[Service]\n# NotifyAccess=all\nExecStart=/bin/x \\\n  --y\nNotifyAccess=main\n"],
                OwnSettings {
                    notify_access: Some("main".into()),
                    fd_store_max: 0,
                },
            ),
            // A later drop-in resets.
            (
                vec!["[Service]\nNotifyAccess=all\n", "[Service]\nNotifyAccess=\n"],
                OwnSettings::default(),
            ),
        ] {
            let mut own = OwnSettings::default();
            for f in &files {
                own.apply(f);
            }
            assert_eq!(own, want, "{files:?}");
        }
    }

    #[test]
    fn dropin_adds_to_the_units_own_settings() {
        let s = spec("[Socket]\nListenStream=80\nListenDatagram=80\nService=app@.service\n");
        let helper = "/usr/lib/systemd/systemd-distribute-handoff";
        let sock = Path::new("/run/systemd-distribute/handoff");
        let plain = dropin_text(&s, &OwnSettings::default(), helper, sock);
        assert!(plain.starts_with(MARKER));
        assert!(plain.contains("\nFileDescriptorStoreMax=2\nNotifyAccess=exec\n"));
        assert!(plain.ends_with(
            "ExecStartPre=+/usr/lib/systemd/systemd-distribute-handoff --socket /run/systemd-distribute/handoff %n\n"
        ));
        let own = OwnSettings {
            notify_access: Some("all".into()),
            fd_store_max: 5,
        };
        let text = dropin_text(&s, &own, helper, sock);
        assert!(text.contains("FileDescriptorStoreMax=7\n"));

        assert!(
            !text.contains("NotifyAccess"),
            "must not weaken NotifyAccess=all"
        );
        // Companion listeners count too.
        let s = spec(
            "[Socket]\nListenStream=80\nListenStream=/run/app.sock\nListenFIFO=/run/app.fifo\n",
        );
        let shared = dropin_text(&s, &OwnSettings::default(), helper, sock);
        assert!(shared.contains("\nFileDescriptorStoreMax=3\n"), "{shared}");
    }

    #[test]
    fn dropins_are_written_once_and_only_ours_removed() {
        let dir = std::env::temp_dir().join(format!("distribute-dropins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let text = format!("{MARKER} for app.socket\n[Service]\n");
        assert!(write_dropin(&dir, "app@.service", &text).unwrap());
        assert!(!write_dropin(&dir, "app@.service", &text).unwrap());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dropin_path(&dir, "app@.service"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o644, "readable like a unit file");
        // Someone else's file of the same name is left alone.
        let foreign = dropin_path(&dir, "other@.service");
        std::fs::create_dir_all(foreign.parent().unwrap()).unwrap();
        std::fs::write(&foreign, "[Service]\n").unwrap();
        let keep: BTreeSet<String> = ["app@.service".to_string()].into();
        assert!(!remove_dropins_except(&dir, &keep));
        assert!(remove_dropins_except(&dir, &BTreeSet::new()));
        assert!(!dropin_path(&dir, "app@.service").exists());
        assert!(!dir.join("app@.service.d").exists());
        assert!(foreign.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
