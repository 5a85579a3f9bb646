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
//! * Every file read must be a regular file in UTF-8; a directory (or a FIFO) where a
//!   file is expected is an error.
//!
//! [`Loader`] applies these rules to the config directories, [`load_file`] to one file
//! given by path and its `PATH.d/*.conf`; both go through the same functions below.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;
use crate::parse::{check_config_name, parse_files_all};
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
    /// Config directories that exist but could not be listed (permissions, I/O):
    /// what they held is unknown, so a daemon keeps serving the configs it had
    /// from them rather than dropping them (each also has an entry in `errors`).
    pub unreadable_dirs: Vec<PathBuf>,
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
                Ok((entries, bad)) => {
                    for (stem, path) in entries {
                        mains.entry(stem).or_insert(path);
                    }
                    // One bad entry costs only itself, not its directory.
                    report.errors.extend(bad);
                }
                Err(e) => {
                    report.errors.push(e);
                    report.unreadable_dirs.push(dir);
                }
            }
        }
        // Template prefix → the config that claimed it first (by name).
        let mut claimed: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
        for (name, path) in mains {
            let load = self.load_main(&name, &path);
            if load.masked {
                report.masked.push(Masked { name, path });
                continue;
            }
            match load.result {
                Ok(spec) => match claimed.get(&spec.service) {
                    // Both would start (and own) the same SERVICE@….service
                    // units, or write the same template drop-in.
                    Some((other, other_path)) => report.errors.push(ConfigError::file(
                        &path,
                        format!(
                            "{}@.service is already the template of config \"{other}\" ({}); \
                             two configs cannot share instances: give this one another \
                             Service=",
                            spec.service,
                            other_path.display()
                        ),
                    )),
                    None => {
                        claimed.insert(spec.service.clone(), (name, path));
                        report.specs.push(spec);
                    }
                },
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
                Err(e) => return Err(cannot_read(&path, &e)),
            }
            return self.load_main(name, &path).result;
        }
        let looked: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        Err(ConfigError::file(
            &first,
            format!("no such config: looked in {}", looked.join(", ")),
        ))
    }

    /// Loads the main file `path` of config `name` with its drop-ins from every directory.
    fn load_main(&self, name: &str, path: &Path) -> FileLoad {
        let file = format!("{name}.socket");
        let dropin_dirs: Vec<PathBuf> = self
            .search_paths()
            .iter()
            .map(|dir| dropin_dir(&dir.join(&file)))
            .collect();
        load_config(name, path, &dropin_dirs)
    }
}

/// What [`load_file`] found: the files applied and the outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct FileLoad {
    /// The main file, as given.
    pub path: PathBuf,
    /// The unmasked drop-ins applied after the main file, in that order. Known once every
    /// file was read: empty if the config is masked or a file could not be read.
    pub dropins: Vec<PathBuf>,
    /// The main file is masked (empty, or a symlink to `/dev/null`): the daemon skips
    /// it, and nothing else was read. `result` is then an error saying so.
    pub masked: bool,
    /// The config, or the first problem found, naming its file and, where it has one,
    /// its line.
    pub result: Result<SocketSpec, ConfigError>,
    /// Every problem found (the first is `result`'s error): each refused assignment,
    /// not only the first, so that a copied unit's problems show at once.
    pub errors: Vec<ConfigError>,
}

/// Loads one config file given by path, with its drop-ins `PATH.d/*.conf`, by the rules
/// the daemon applies to a config in its directories (see [`Loader`]): `path` must be
/// named `NAME.socket`; if it is masked nothing else is read; drop-ins that are hidden,
/// not `*.conf` or masked are skipped, the others apply after it sorted by file name;
/// every file must be a readable regular file in UTF-8. Only `PATH.d` is searched for
/// drop-ins, not the daemon's other directories. For checking a file offline
/// (`distributectl verify`); the daemon itself uses [`Loader`].
///
/// ```
/// use std::path::Path;
/// use distribute_config::load_file;
///
/// let load = load_file(Path::new("/nonexistent/web.socket"));
/// assert!(!load.masked && load.dropins.is_empty());
/// assert_eq!(
///     load.result.unwrap_err().to_string(),
///     "/nonexistent/web.socket: cannot read: No such file or directory (os error 2)"
/// );
/// ```
pub fn load_file(path: &Path) -> FileLoad {
    let name = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".socket"))
        .filter(|n| !n.is_empty());
    match name {
        Some(name) => load_config(name, path, &[dropin_dir(path)]),
        None => {
            let e = ConfigError::file(
                path,
                "not a NAME.socket file (configs are named NAME.socket)",
            );
            FileLoad {
                path: path.to_path_buf(),
                dropins: Vec::new(),
                masked: false,
                result: Err(e.clone()),
                errors: vec![e],
            }
        }
    }
}

/// Loads config `name` from its main file `path` and the drop-ins in `dropin_dirs`
/// (priority order): the one implementation of masking, reading and drop-in rules.
fn load_config(name: &str, path: &Path, dropin_dirs: &[PathBuf]) -> FileLoad {
    let mut masked = false;
    let mut dropins = Vec::new();
    let mut all_errors = Vec::new();
    let result = match is_masked(path) {
        Ok(true) => {
            masked = true;
            Err(ConfigError::file(
                path,
                "config is masked (empty, or a symlink to /dev/null)",
            ))
        }
        Err(e) => Err(cannot_read(path, &e)),
        Ok(false) => read_files(path, dropin_dirs).and_then(|files| {
            dropins = files[1..].iter().map(|(p, _)| p.clone()).collect();
            let borrowed: Vec<(&Path, &str)> = files
                .iter()
                .map(|(p, t)| (p.as_path(), t.as_str()))
                .collect();
            parse_files_all(name, &borrowed).map_err(|errors| {
                all_errors = errors;
                all_errors[0].clone()
            })
        }),
    };
    if all_errors.is_empty() && !masked {
        if let Err(e) = &result {
            all_errors.push(e.clone());
        }
    }
    FileLoad {
        path: path.to_path_buf(),
        dropins,
        masked,
        result,
        errors: all_errors,
    }
}

/// The texts of the main file and then of its unmasked drop-ins, in the order they apply.
fn read_files(path: &Path, dropin_dirs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, ConfigError> {
    let mut files = vec![(path.to_path_buf(), read_text(path)?)];
    for dropin in dropins(dropin_dirs)? {
        let text = read_text(&dropin)?;
        files.push((dropin, text));
    }
    Ok(files)
}

/// The drop-in directory of a main file: `PATH.d`.
fn dropin_dir(main: &Path) -> PathBuf {
    let mut dir = main.as_os_str().to_owned();
    dir.push(".d");
    PathBuf::from(dir)
}

/// Unmasked drop-ins `*.conf` in `dirs` (priority order; a file hides same-name files in
/// later directories), sorted by file name as systemd does.
fn dropins(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut by_file: BTreeMap<OsString, PathBuf> = BTreeMap::new();
    for dir in dirs {
        let (entries, mut bad) = list_dir(dir, ".conf")?;
        if !bad.is_empty() {
            // A drop-in that cannot be named cannot be applied: the config
            // is not what its files say, so it is an error, not a skip.
            return Err(bad.remove(0));
        }
        for (_, path) in entries {
            let file_name = path.file_name().unwrap_or_default().to_owned();
            by_file.entry(file_name).or_insert(path);
        }
    }
    let mut out = Vec::with_capacity(by_file.len());
    for path in by_file.into_values() {
        if !is_masked(&path).map_err(|e| cannot_read(&path, &e))? {
            out.push(path);
        }
    }
    Ok(out)
}

/// Entries of `dir` named `STEM{suffix}` with a non-empty stem, as `(stem, path)`, not
/// hidden. A missing directory is empty.
/// The entries of `dir` ending in `suffix`, as (stem, path), and an error for
/// each entry that cannot be used; `Err` only if the directory itself cannot
/// be read (a missing one is empty).
#[allow(clippy::type_complexity)]
fn list_dir(
    dir: &Path,
    suffix: &str,
) -> Result<(Vec<(String, PathBuf)>, Vec<ConfigError>), ConfigError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => {
            return Err(ConfigError::file(
                dir,
                format!("cannot read directory: {e}"),
            ))
        }
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                bad.push(ConfigError::file(
                    dir,
                    format!("cannot read directory: {e}"),
                ));
                continue;
            }
        };
        let file_name = entry.file_name();
        let path = entry.path();
        let bytes = file_name.as_bytes();
        if bytes.starts_with(b".") || !bytes.ends_with(suffix.as_bytes()) {
            continue;
        }
        let Some(name) = file_name.to_str() else {
            bad.push(ConfigError::file(&path, "file name is not valid UTF-8"));
            continue;
        };
        let stem = &name[..name.len() - suffix.len()];
        if !stem.is_empty() {
            out.push((stem.to_string(), path));
        }
    }
    Ok((out, bad))
}

/// True for an empty file, a character device such as `/dev/null`, or a symlink to
/// `/dev/null` (also a dangling one, since `/dev/null` may be outside the test root).
/// An error for what cannot be a config: a directory, or another file that is not a
/// regular one (a FIFO would block the read).
fn is_masked(path: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() && fs::read_link(path)? == Path::new("/dev/null") {
        return Ok(true);
    }
    let meta = fs::metadata(path)?;
    if meta.file_type().is_char_device() {
        return Ok(true);
    }
    if meta.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(meta.len() == 0)
}

/// The error for a file that cannot be read.
fn cannot_read(path: &Path, e: &io::Error) -> ConfigError {
    ConfigError::file(path, format!("cannot read: {e}"))
}

/// Reads a file as UTF-8, naming the line of the first invalid byte.
/// Largest config file or drop-in read (a unit-style file is a few KiB): a
/// bigger one is a mistake, and reading it whole would stall the daemon.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| cannot_read(path, &e))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ConfigError::file(
            path,
            format!(
                "larger than {} KiB: not a config file",
                MAX_FILE_SIZE / 1024
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::line(path, line, "not valid UTF-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Distribute;
    use std::ffi::OsStr;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const GOOD: &str =
        "[Socket]\nListenStream=8080\nDistribute=2\n[Service]\nExecStart=/bin/true\n";

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "distribute-config-load-{test}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes `rel` (creating its directory) and returns its path.
        fn write(&self, rel: impl AsRef<Path>, text: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn file_names(paths: &[PathBuf]) -> Vec<&str> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect()
    }

    /// Asserts that `load` failed with `FILE{rest}`, e.g. `FILE:3: not valid UTF-8`.
    fn assert_error(load: FileLoad, file: &Path, rest: &str) {
        let got = load.result.unwrap_err().to_string();
        assert_eq!(got, format!("{}{rest}", file.display()));
    }

    #[test]
    fn file_with_dropins_in_file_name_order() {
        let t = TempDir::new("order");
        let main = t.write("web.socket", GOOD);
        // systemd sorts by the whole file name: "10-x.conf" before "10.conf".
        t.write("web.socket.d/10.conf", "[Socket]\nDistribute=4\n");
        t.write("web.socket.d/10-x.conf", "[Socket]\nDistribute=3\n");
        t.write("web.socket.d/05-a.conf", "[Socket]\nDistribute=9\n");
        let load = load_file(&main);
        assert!(!load.masked);
        assert_eq!(load.path, main);
        assert_eq!(
            file_names(&load.dropins),
            ["05-a.conf", "10-x.conf", "10.conf"]
        );
        let spec = load.result.unwrap();
        assert_eq!(spec.name, "web");
        assert_eq!(spec.distribute, Distribute::Count(4), "the last one wins");
        assert_eq!(spec.sources[0], main);
        assert_eq!(spec.sources[1..], load.dropins[..]);
    }

    #[test]
    fn loader_sorts_dropins_by_file_name_too() {
        let t = TempDir::new("loader-order");
        t.write("etc/web.socket", GOOD);
        t.write("etc/web.socket.d/10.conf", "[Socket]\nDistribute=4\n");
        t.write("usr/web.socket.d/10-x.conf", "[Socket]\nDistribute=3\n");
        t.write("usr/web.socket.d/10.conf", "[Socket]\nDistribute=5\n");
        let spec = Loader::with_dirs(&t.0, ["etc", "usr"]).load("web").unwrap();
        assert_eq!(
            spec.sources,
            [
                t.0.join("etc/web.socket"),
                t.0.join("usr/web.socket.d/10-x.conf"),
                t.0.join("etc/web.socket.d/10.conf"),
            ]
        );
        assert_eq!(spec.distribute, Distribute::Count(4));
    }

    #[test]
    fn masked_main_file_reads_nothing_else() {
        let t = TempDir::new("masked-main");
        let empty = t.write("empty.socket", "");
        let null = t.0.join("null.socket");
        symlink("/dev/null", &null).unwrap();
        for main in [empty, null] {
            // Not read: the drop-ins of a masked config do not matter.
            t.write(dropin_dir(&main).join("10-bad.conf"), b"\xff");
            let load = load_file(&main);
            assert!(load.masked, "{load:?}");
            assert!(load.dropins.is_empty(), "{load:?}");
            assert_error(
                load,
                &main,
                ": config is masked (empty, or a symlink to /dev/null)",
            );
        }
    }

    #[test]
    fn masked_hidden_and_other_dropins_are_skipped() {
        let t = TempDir::new("skipped");
        let main = t.write("web.socket", GOOD);
        t.write("web.socket.d/10-ok.conf", "[Socket]\nDistribute=3\n");
        t.write("web.socket.d/20-masked.conf", "");
        symlink("/dev/null", t.0.join("web.socket.d/30-null.conf")).unwrap();
        for ignored in [".hidden.conf", ".conf", "README", "40.conf~", "50.conf.bak"] {
            t.write(Path::new("web.socket.d").join(ignored), "garbage\n");
        }
        let load = load_file(&main);
        assert_eq!(file_names(&load.dropins), ["10-ok.conf"]);
        assert_eq!(load.result.unwrap().distribute, Distribute::Count(3));
    }

    #[test]
    fn invalid_utf8_names_file_and_line() {
        let t = TempDir::new("utf8");
        let main = t.write("latin1.socket", b"[Socket]\nListenStream=80\n# caf\xe9\n");
        let load = load_file(&main);
        assert_error(load, &main, ":3: not valid UTF-8");

        let main = t.write("web.socket", GOOD);
        let dropin = t.write("web.socket.d/10.conf", b"\n[Socket]\xff\n");
        let load = load_file(&main);
        assert!(load.dropins.is_empty(), "not applied: {load:?}");
        assert_error(load, &dropin, ":2: not valid UTF-8");

        // A drop-in whose name is not UTF-8 is an error, not silently skipped.
        t.write("bytes.socket", GOOD);
        let name = OsStr::from_bytes(b"10-\xff.conf");
        let dropin = t.write(Path::new("bytes.socket.d").join(name), "[Socket]\n");
        let load = load_file(&t.0.join("bytes.socket"));
        assert_error(load, &dropin, ": file name is not valid UTF-8");
    }

    #[test]
    fn huge_files_are_refused_without_reading_them_whole() {
        let t = TempDir::new("huge");
        let mut text = GOOD.to_string();
        text.push_str(&"#".repeat(MAX_FILE_SIZE as usize));
        let main = t.write("web.socket", text);
        assert_error(
            load_file(&main),
            &main,
            ": larger than 1024 KiB: not a config file",
        );
    }

    #[test]
    fn one_bad_entry_costs_only_itself() {
        // A config whose file name is not UTF-8 next to good ones: the good
        // ones still load (a daemon would otherwise drop them all on reload).
        let t = TempDir::new("bad-entry");
        t.write("etc/a.socket", GOOD);
        t.write("etc/b.socket", GOOD);
        let bad = t.write(
            Path::new("etc").join(OsStr::from_bytes(b"\xff.socket")),
            GOOD,
        );
        let report = Loader::with_dirs(&t.0, ["/etc"]).load_report();
        let names: Vec<&str> = report.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert_eq!(
            report.errors[0].to_string(),
            format!("{}: file name is not valid UTF-8", bad.display())
        );
        assert!(report.unreadable_dirs.is_empty());
    }

    #[test]
    fn an_unreadable_directory_is_reported_as_such() {
        // Permissions do not stop root (the tests' usual user): a file where
        // the directory should be cannot be listed by anyone.
        let t = TempDir::new("unreadable");
        t.write("run/a.socket", GOOD);
        t.write("etc", "not a directory");
        let report = Loader::with_dirs(&t.0, ["/etc", "/run"]).load_report();
        assert_eq!(report.unreadable_dirs, [t.0.join("etc")]);
        assert!(
            report.errors[0]
                .to_string()
                .contains("cannot read directory"),
            "{report:?}"
        );
    }

    #[test]
    fn directories_and_other_non_files_are_errors() {
        let t = TempDir::new("dirs");
        let dir = t.0.join("dir.socket");
        fs::create_dir(&dir).unwrap();
        assert_error(load_file(&dir), &dir, ": cannot read: is a directory");

        let main = t.write("web.socket", GOOD);
        let sub = t.0.join("web.socket.d/10-dir.conf");
        fs::create_dir_all(&sub).unwrap();
        assert_error(load_file(&main), &sub, ": cannot read: is a directory");
        fs::remove_dir(&sub).unwrap();

        // A FIFO would block the read; a socket is the same kind of mistake.
        let sock = t.0.join("web.socket.d/20-sock.conf");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_error(load_file(&main), &sock, ": cannot read: not a regular file");
    }

    #[test]
    fn missing_or_misnamed_file() {
        let t = TempDir::new("missing");
        let missing = t.0.join("nope.socket");
        let load = load_file(&missing);
        assert!(!load.masked && load.dropins.is_empty());
        assert_error(
            load,
            &missing,
            ": cannot read: No such file or directory (os error 2)",
        );
        for name in ["web.conf", ".socket", "web.socket~"] {
            let path = t.write(name, GOOD);
            assert_error(
                load_file(&path),
                &path,
                ": not a NAME.socket file (configs are named NAME.socket)",
            );
        }
    }

    #[test]
    fn config_errors_name_the_dropin_and_line() {
        let t = TempDir::new("errors");
        let main = t.write("web.socket", GOOD);
        let dropin = t.write(
            "web.socket.d/50-typo.conf",
            "[Service]\n\nExecStrat=/bin/false\n",
        );
        let load = load_file(&main);
        assert_eq!(file_names(&load.dropins), ["50-typo.conf"], "applied");
        let e = load.result.unwrap_err();
        assert_eq!((e.file.as_path(), e.line), (dropin.as_path(), Some(3)));
    }

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
