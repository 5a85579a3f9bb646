//! `%` specifiers in `[Service]` values.
//!
//! Only three exist here: `%i` (instance index), `%N` (config name) and `%%`. Values are
//! stored unexpanded in [`ServiceSpec`](crate::ServiceSpec); the activator expands them per
//! instance with [`ServiceSpec::for_instance`](crate::ServiceSpec::for_instance). systemd
//! does not expand specifiers in transient-unit properties, so this is the only place
//! they are expanded.

use crate::spec::{PassthroughValue, ServiceSpec};

/// The message listing the valid specifiers, shared by all specifier errors.
const VALID: &str =
    "valid specifiers are %i (instance index), %N (config name) and %% (a literal %)";

/// Expands `%i` to `index`, `%N` to `name` and `%%` to `%`.
///
/// Anything else after a `%` is kept as written; the parser has already refused such
/// values, so this only matters for strings that did not come from a parsed config.
pub fn expand_specifiers(s: &str, name: &str, index: u32) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') => out.push_str(&index.to_string()),
            Some('N') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

impl ServiceSpec {
    /// This spec with the specifiers of instance `index` of config `name` expanded in every
    /// string: `ExecStart=` words, `User=`, `Group=`, `Environment=`,
    /// `WorkingDirectory=`, and string passthrough values.
    pub fn for_instance(&self, name: &str, index: u32) -> ServiceSpec {
        let x = |s: &String| expand_specifiers(s, name, index);
        ServiceSpec {
            exec_start: self.exec_start.iter().map(x).collect(),
            user: self.user.as_ref().map(x),
            group: self.group.as_ref().map(x),
            dynamic_user: self.dynamic_user,
            environment: self.environment.iter().map(x).collect(),
            working_directory: self.working_directory.as_ref().map(x),
            cpu_affinity: self.cpu_affinity.clone(),
            extra: self
                .extra
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        PassthroughValue::Str(s) => PassthroughValue::Str(x(s)),
                        other => other.clone(),
                    };
                    (k.clone(), v)
                })
                .collect(),
        }
    }
}

/// Checks that every `%` in `s` starts a valid specifier.
pub(crate) fn check_specifiers(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('i' | 'N' | '%') => {}
            Some(other) => {
                return Err(format!("unknown specifier \"%{other}\": {VALID}"));
            }
            None => {
                return Err(format!("\"%\" at the end of the value: {VALID}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand() {
        let cases = [
            ("", ""),
            ("plain", "plain"),
            ("%i", "7"),
            ("web-%i", "web-7"),
            ("%N@%i", "web@7"),
            ("100%%", "100%"),
            ("%%i", "%i"),
            ("%%%i", "%7"),
            // invalid ones are left alone
            ("%n", "%n"),
            ("50%", "50%"),
            ("é%Né", "éwebé"),
        ];
        for (input, want) in cases {
            assert_eq!(expand_specifiers(input, "web", 7), want, "input {input:?}");
        }
    }

    #[test]
    fn check() {
        let cases: [(&str, Result<(), &str>); 8] = [
            ("", Ok(())),
            ("%i %N %%", Ok(())),
            ("%%n", Ok(())),
            ("%n", Err("unknown specifier \"%n\"")),
            ("%p", Err("unknown specifier \"%p\"")),
            ("%é", Err("unknown specifier \"%é\"")),
            ("50%", Err("\"%\" at the end")),
            ("%%%", Err("\"%\" at the end")),
        ];
        for (input, want) in cases {
            match (check_specifiers(input), want) {
                (Ok(()), Ok(())) => {}
                (Err(e), Err(w)) => assert!(e.contains(w), "input {input:?}: {e}"),
                (got, _) => panic!("input {input:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(check_specifiers("%x").unwrap_err().ends_with(VALID));
    }

    #[test]
    fn for_instance_expands_all_strings() {
        let spec = ServiceSpec {
            exec_start: vec!["/usr/bin/%N".into(), "--id=%i".into(), "100%%".into()],
            user: Some("u%i".into()),
            group: Some("g%N".into()),
            dynamic_user: Some(true),
            environment: vec!["INDEX=%i".into()],
            working_directory: Some("/srv/%N/%i".into()),
            cpu_affinity: vec![1],
            extra: vec![
                ("X".into(), PassthroughValue::Str("%i".into())),
                ("Nice".into(), PassthroughValue::I32(3)),
            ],
        };
        let got = spec.for_instance("web", 3);
        assert_eq!(got.exec_start, ["/usr/bin/web", "--id=3", "100%"]);
        assert_eq!(got.user.as_deref(), Some("u3"));
        assert_eq!(got.group.as_deref(), Some("gweb"));
        assert_eq!(got.environment, ["INDEX=3"]);
        assert_eq!(got.working_directory.as_deref(), Some("/srv/web/3"));
        assert_eq!(got.extra[0].1, PassthroughValue::Str("3".into()));
        assert_eq!(got.extra[1].1, PassthroughValue::I32(3));
        assert_eq!(got.cpu_affinity, [1]);
    }
}
