//! `distributectl verify FILE…`: offline checks of config files, no daemon needed.

use distribute_config::{load_file, ConfigError};
use serde::Serialize;
use std::path::Path;

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
/// `PATH.d/*.conf`, the way the daemon would load them ([`load_file`]).
pub fn verify(path: &Path) -> Verified {
    let load = load_file(path);
    let errors = match &load.result {
        Err(e) if !load.masked => vec![Problem::from(e)],
        _ => Vec::new(),
    };
    Verified {
        file: path.display().to_string(),
        dropins: load
            .dropins
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        masked: load.masked,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

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
