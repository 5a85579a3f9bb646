//! The one error type of this crate.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with one config, located as precisely as we can.
///
/// Displayed in the `file:line: Key=value: message` shape of systemd's own
/// `log_syntax()` messages, so admins (and editors that jump to `file:line`)
/// recognise it:
///
/// ```text
/// /etc/systemd/distribute/web.socket:7: Distribute=0: must be at least 1 (valid: 1 to 1024, or "cpus")
/// /etc/systemd/distribute/web.socket: missing ExecStart= in [Service]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file the problem is in. For problems found only after all files were
    /// applied (e.g. a missing `ExecStart=`), the main `NAME.socket` file.
    pub file: PathBuf,
    /// 1-based line; for a continued line, the line the assignment starts on.
    pub line: Option<usize>,
    /// The key of the assignment, if the problem is in one.
    pub key: Option<String>,
    /// The value of the assignment as written (continuations joined), if any.
    pub value: Option<String>,
    /// What is wrong, and where possible what to write instead.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}={}: ", self.value.as_deref().unwrap_or(""))?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    /// An error about a whole file (no line).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: None,
            value: None,
            message: message.into(),
        }
    }

    /// An error about a line that is not an assignment (section header, missing `=`).
    pub fn line(file: &Path, line: usize, message: impl Into<String>) -> Self {
        ConfigError {
            line: Some(line),
            ..ConfigError::file(file, message)
        }
    }

    /// An error about the assignment `key=value` on `line`.
    pub fn assignment(
        file: &Path,
        line: usize,
        key: &str,
        value: &str,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            key: Some(key.to_string()),
            value: Some(value.to_string()),
            ..ConfigError::line(file, line, message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shapes() {
        let p = Path::new("/etc/systemd/distribute/web.socket");
        let cases = [
            (
                ConfigError::assignment(p, 7, "Distribute", "0", "must be at least 1"),
                "/etc/systemd/distribute/web.socket:7: Distribute=0: must be at least 1",
            ),
            (
                ConfigError::line(p, 3, "invalid section header"),
                "/etc/systemd/distribute/web.socket:3: invalid section header",
            ),
            (
                ConfigError::file(p, "missing ExecStart= in [Service]"),
                "/etc/systemd/distribute/web.socket: missing ExecStart= in [Service]",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
