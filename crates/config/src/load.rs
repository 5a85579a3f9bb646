//! Finding and reading config files, systemd style.
//!
//! * `NAME.socket` is looked up in each directory in priority order; the first one found
//!   wins and hides same-name files in later directories (so `/etc` overrides `/usr/lib`).
//! * Drop-ins `NAME.socket.d/*.conf` are collected from all directories; a same-name
//!   drop-in in an earlier directory hides later ones. They are applied after the main
//!   file, sorted by file name.
//! * A main file or drop-in that is empty or a symlink to `/dev/null` is masked: a masked
//!   main file disables the config, a masked drop-in is skipped. Either way it also hides
//!   same-name files in later directories, which is how masking works.
//! * Hidden files (starting with `.`) are ignored, like editors' swap files.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::parse::{check_config_name, parse_files};
use crate::spec::SocketSpec;

/// The system's config directories, highest priority first.
pub const SYSTEM_DIRS: [&str; 3] = [
    "/etc/systemd/distribute",
    "/run/systemd/distribute",
    "/usr/lib/systemd/distribute",
];

/// Finds and parses configs in a list of directories under a root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// Prefix for every directory (`/` on a real system; a temporary tree in tests).
    root: PathBuf,
    /// Directories in priority order, as seen from `root`.
    dirs: Vec<PathBuf>,
}

/// A config that is masked (empty, or a symlink to `/dev/null`), and so not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masked {
    /// `NAME` of `NAME.socket`.
    pub name: String,
    /// The masking file.
    pub path: PathBuf,
}

/// Everything [`Loader::load_report`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadReport {
    /// Configs that loaded, sorted by name.
    pub specs: Vec<SocketSpec>,
    /// Configs (or directories) that failed, sorted by config name; one error per config.
    pub errors: Vec<ConfigError>,
    /// Masked configs, sorted by name; worth a log line, nothing more.
    pub masked: Vec<Masked>,
}

impl Loader {
    /// The system loader: root `/`, directories [`SYSTEM_DIRS`].
    pub fn system() -> Self {
        Loader::with_dirs("/", SYSTEM_DIRS)
    }

    /// A loader for `dirs` (priority order) under `root`. Absolute `dirs` are taken
    /// relative to `root`; use root `/` for plain directories (e.g. `--config-dir`).
    pub fn with_dirs<P: Into<PathBuf>>(
        root: impl Into<PathBuf>,
        dirs: impl IntoIterator<Item = P>,
    ) -> Self {
        Loader {
            root: root.into(),
            dirs: dirs.into_iter().map(Into::into).collect(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directories as given, in priority order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The directories as actually read: each under the root.
    pub fn search_paths(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| {
                let relative = d.strip_prefix("/").unwrap_or(d);
                self.root.join(relative)
            })
            .collect()
    }

    /// Loads every config. One bad config does not stop the others: its error is returned
    /// next to the configs that loaded. Masked configs are skipped.
    pub fn load_all(&self) -> (Vec<SocketSpec>, Vec<ConfigError>) {
        let report = self.load_report();
        (report.specs, report.errors)
    }

    /// Like [`Loader::load_all`], also listing masked configs.
    pub fn load_report(&self) -> LoadReport {
        let mut report = LoadReport::default();
        let mut mains: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in self.search_paths() {
            match list_dir(&dir, ".socket") {
                Ok(entries) => {
                    for (stem, path) in entries {
                        mains.entry(stem).or_insert(path);
                    }
                }
                Err(e) => report.errors.push(e),
            }
        }
        for (name, path) in mains {
            match self.load_main(&name, &path) {
                Ok(Some(spec)) => report.specs.push(spec),
                Ok(None) => report.masked.push(Masked { name, path }),
                Err(e) => report.errors.push(e),
            }
        }
        report
    }

    /// Loads the config `name` (`NAME.socket` plus drop-ins). A masked config is an error
    /// here, since the caller asked for it by name.
    pub fn load(&self, name: &str) -> Result<SocketSpec, ConfigError> {
        let file = format!("{name}.socket");
        let paths = self.search_paths();
        let first = paths
            .first()
            .map_or_else(|| PathBuf::from(&file), |d| d.join(&file));
        check_config_name(name).map_err(|e| ConfigError::file(&first, e))?;
        for dir in &paths {
            let path = dir.join(&file);
            match fs::symlink_metadata(&path) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ConfigError::file(&path, format!("cannot read: {e}"))),
            }
            return match self.load_main(name, &path)? {
                Some(spec) => Ok(spec),
                None => Err(ConfigError::file(
                    &path,
                    "config is masked (empty, or a symlink to /dev/null)",
                )),
            };
        }
        let looked: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        Err(ConfigError::file(
            &first,
            format!("no such config: looked in {}", looked.join(", ")),
        ))
    }

    /// Loads a main file and its drop-ins; `None` if the main file is masked.
    fn load_main(&self, name: &str, path: &Path) -> Result<Option<SocketSpec>, ConfigError> {
        if is_masked(path).map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))? {
            return Ok(None);
        }
        let mut files = vec![(path.to_path_buf(), read_text(path)?)];
        for dropin in self.dropins(name)? {
            let text = read_text(&dropin)?;
            files.push((dropin, text));
        }
        let borrowed: Vec<(&Path, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_path(), t.as_str()))
            .collect();
        parse_files(name, &borrowed).map(Some)
    }

    /// Unmasked drop-ins of `name`, in the order they apply.
    fn dropins(&self, name: &str) -> Result<Vec<PathBuf>, ConfigError> {
        let mut by_file: BTreeMap<String, PathBuf> = BTreeMap::new();
        for dir in self.search_paths() {
            for (stem, path) in list_dir(&dir.join(format!("{name}.socket.d")), ".conf")? {
                by_file.entry(stem).or_insert(path);
            }
        }
        let mut out = Vec::with_capacity(by_file.len());
        for path in by_file.into_values() {
            if !is_masked(&path)
                .map_err(|e| ConfigError::file(&path, format!("cannot read: {e}")))?
            {
                out.push(path);
            }
        }
        Ok(out)
    }
}

/// Entries of `dir` named `STEM{suffix}` with a non-empty stem, as `(stem, path)`, not
/// hidden. A missing directory is empty.
fn list_dir(dir: &Path, suffix: &str) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::file(
                dir,
                format!("cannot read directory: {e}"),
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ConfigError::file(dir, format!("cannot read directory: {e}")))?;
        let file_name = entry.file_name();
        let path = entry.path();
        let bytes = file_name.as_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(suffix.as_bytes()) {
            continue;
        }
        let Some(name) = file_name.to_str() else {
            return Err(ConfigError::file(&path, "file name is not valid UTF-8"));
        };
        let stem = &name[..name.len() - suffix.len()];
        if !stem.is_empty() {
            out.push((stem.to_string(), path));
        }
    }
    Ok(out)
}

/// True for an empty file, `/dev/null`, or a symlink to it (also a dangling one, since
/// `/dev/null` may be outside the test root).
fn is_masked(path: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() && fs::read_link(path)? == Path::new("/dev/null") {
        return Ok(true);
    }
    let meta = fs::metadata(path)?;
    Ok(meta.file_type().is_char_device() || (meta.is_file() && meta.len() == 0))
}

/// Reads a file as UTF-8, naming the line of the first invalid byte.
fn read_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = fs::read(path).map_err(|e| ConfigError::file(path, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::line(path, line, "not valid UTF-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_are_under_root() {
        let l = Loader::with_dirs("/tmp/x", ["/etc/a", "rel"]);
        assert_eq!(
            l.search_paths(),
            [PathBuf::from("/tmp/x/etc/a"), PathBuf::from("/tmp/x/rel")]
        );
        assert_eq!(
            Loader::system().search_paths(),
            SYSTEM_DIRS.map(PathBuf::from)
        );
    }
}
