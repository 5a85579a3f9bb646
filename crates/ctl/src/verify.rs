//! `distributectl verify FILE…`: offline checks of config files, no daemon needed.

use distribute_config::{parse_files, ConfigError};
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The outcome for one `NAME.socket` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The file as given.
    pub file: String,
    /// The drop-ins applied after it (`FILE.d/*.conf`, by file name).
    pub dropins: Vec<String>,
    /// Masked (empty, or a symlink to /dev/null): nothing to check.
    pub masked: bool,
    /// Problems, each `file:line: …`; empty if the config is valid.
    pub errors: Vec<Problem>,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// File the problem is in.
    pub file: String,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// Key of the assignment, if any.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The whole `file:line: Key=value: message` text.
    pub text: String,
}

impl From<&ConfigError> for Problem {
    fn from(e: &ConfigError) -> Self {
        Problem {
            file: e.file.display().to_string(),
            line: e.line,
            key: e.key.clone(),
            message: e.message.clone(),
            text: e.to_string(),
        }
    }
}

/// Checks `path` (a `NAME.socket` file) together with its drop-ins in
/// `PATH.d/*.conf`, the way the daemon would load them.
pub fn verify(path: &Path) -> Verified {
    let mut v = Verified {
        file: path.display().to_string(),
        dropins: Vec::new(),
        masked: false,
        errors: Vec::new(),
    };
    let fail = |v: &mut Verified, e: ConfigError| v.errors.push(Problem::from(&e));
    let Some(name) = path
        .file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.strip_suffix(".socket"))
        .filter(|n| !n.is_empty())
    else {
        fail(
            &mut v,
            ConfigError::file(
                path,
                "not a NAME.socket file (configs are named NAME.socket)",
            ),
        );
        return v;
    };
    match is_masked(path) {
        Ok(true) => {
            v.masked = true;
            return v;
        }
        Ok(false) => {}
        Err(e) => {
            fail(&mut v, ConfigError::file(path, format!("cannot read: {e}")));
            return v;
        }
    }
    let dropins = match dropins(path) {
        Ok(d) => d,
        Err(e) => {
            fail(&mut v, e);
            return v;
        }
    };
    let mut files = Vec::new();
    for p in std::iter::once(path.to_path_buf()).chain(dropins.iter().cloned()) {
        match read_text(&p) {
            Ok(text) => files.push((p, text)),
            Err(e) => {
                fail(&mut v, e);
                return v;
            }
        }
    }
    v.dropins = dropins.iter().map(|p| p.display().to_string()).collect();
    let borrowed: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_path(), t.as_str()))
        .collect();
    if let Err(e) = parse_files(name, &borrowed) {
        fail(&mut v, e);
    }
    v
}

/// Unmasked, unhidden `PATH.d/*.conf`, sorted by file name.
fn dropins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut dir = main.as_os_str().to_owned();
    dir.push(".d");
    let dir = PathBuf::from(dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError::file(
                &dir,
                format!("cannot read directory: {e}"),
            ))
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| ConfigError::file(&dir, format!("cannot read directory: {e}")))?;
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if n.starts_with('.') || !n.ends_with(".conf") || n == ".conf" {
            continue;
        }
        let p = entry.path();
        if !is_masked(&p).map_err(|e| ConfigError::file(&p, format!("cannot read: {e}")))? {
            out.push(p);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

fn is_masked(path: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() && fs::read_link(path)? == Path::new("/dev/null") {
        return Ok(true);
    }
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        return Err(io::Error::other("is a directory"));
    }
    use std::os::unix::fs::FileTypeExt;
    Ok(meta.file_type().is_char_device() || (meta.is_file() && meta.len() == 0))
}

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

    fn tmp(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "distributectl-verify-{test}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    const GOOD: &str =
        "[Socket]\nListenStream=8080\nDistribute=2\n\n[Service]\nExecStart=/bin/true\n";

    #[test]
    fn good_file_passes() {
        let d = tmp("good");
        let f = d.join("web.socket");
        fs::write(&f, GOOD).unwrap();
        let v = verify(&f);
        assert!(v.errors.is_empty(), "{v:?}");
        assert!(!v.masked);
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_value_has_file_and_line() {
        let d = tmp("bad");
        let f = d.join("web.socket");
        fs::write(
            &f,
            "[Socket]\nListenStream=8080\nDistribute=0\n[Service]\nExecStart=/bin/true\n",
        )
        .unwrap();
        let v = verify(&f);
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert_eq!(v.errors[0].line, Some(3));
        assert!(
            v.errors[0]
                .text
                .starts_with(&format!("{}:3: Distribute=0:", f.display())),
            "{v:?}"
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn dropins_are_applied_in_order() {
        let d = tmp("dropins");
        let f = d.join("web.socket");
        fs::write(&f, GOOD).unwrap();
        fs::create_dir_all(d.join("web.socket.d")).unwrap();
        fs::write(
            d.join("web.socket.d/20-bad.conf"),
            "[Service]\nNoSuchKey=1\n",
        )
        .unwrap();
        fs::write(
            d.join("web.socket.d/10-ok.conf"),
            "[Socket]\nDistribute=3\n",
        )
        .unwrap();
        fs::write(d.join("web.socket.d/.hidden.conf"), "garbage").unwrap();
        fs::write(d.join("web.socket.d/30-masked.conf"), "").unwrap();
        let v = verify(&f);
        assert_eq!(v.dropins.len(), 2, "{v:?}");
        assert!(v.dropins[0].ends_with("10-ok.conf"));
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert!(v.errors[0].file.ends_with("20-bad.conf"), "{v:?}");
        assert_eq!(v.errors[0].line, Some(2));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn wrong_name_missing_and_masked() {
        let d = tmp("names");
        let f = d.join("web.conf");
        fs::write(&f, GOOD).unwrap();
        assert!(verify(&f).errors[0].message.contains("NAME.socket"));
        let missing = verify(&d.join("nope.socket"));
        assert!(
            missing.errors[0].message.starts_with("cannot read"),
            "{missing:?}"
        );
        let m = d.join("off.socket");
        fs::write(&m, "").unwrap();
        let v = verify(&m);
        assert!(v.masked && v.errors.is_empty());
        fs::remove_dir_all(d).unwrap();
    }
}
