//! Splitting values into words with systemd's quoting rules, as used by `ExecStart=` and
//! `Environment=` (systemd's `extract_first_word()` with `EXTRACT_UNQUOTE |
//! EXTRACT_CUNESCAPE`).
//!
//! * words are separated by spaces and tabs;
//! * `"…"` and `'…'` quote (anywhere in a word: `a"b c"d` is one word `ab cd`); `""` is an
//!   empty word;
//! * backslash escapes are C escapes (`\n`, `\t`, `\\`, `\"`, `\'`, `\s` for a space,
//!   `\xNN`, `\NNN` octal, `\uNNNN`, `\UNNNNNNNN`), inside quotes and outside;
//! * in `ExecStart=`, `\;` is a literal `;` (a bare `;` would separate commands).

/// One word of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    /// The word after unquoting and unescaping.
    pub text: String,
    /// True if the word was written without quotes or escapes, so that e.g. a `-` at its
    /// start is syntax (an `ExecStart=` prefix) and not data.
    pub bare: bool,
}

/// Splits `s` into words. `semicolon_escape` allows `\;` (for `ExecStart=`).
pub(crate) fn split_words(s: &str, semicolon_escape: bool) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut text = String::new();
        let mut bare = true;
        let mut quote: Option<char> = None;
        loop {
            let Some(c) = chars.next() else {
                if let Some(q) = quote {
                    return Err(format!("unbalanced quotes: missing closing {q}"));
                }
                break;
            };
            match (quote, c) {
                (_, '\\') => {
                    bare = false;
                    text.push(unescape_one(&mut chars, semicolon_escape)?);
                }
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => text.push(c),
                (None, '"' | '\'') => {
                    bare = false;
                    quote = Some(c);
                }
                (None, ' ' | '\t') => break,
                (None, c) => text.push(c),
            }
        }
        words.push(Word { text, bare });
    }
}

/// Decodes the escape after a backslash (systemd's `cunescape_one()`).
fn unescape_one(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    semicolon_escape: bool,
) -> Result<char, String> {
    let Some(c) = chars.next() else {
        return Err("trailing backslash".into());
    };
    let simple = match c {
        'a' => Some('\u{7}'),
        'b' => Some('\u{8}'),
        'f' => Some('\u{c}'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\u{b}'),
        's' => Some(' '),
        '\\' | '"' | '\'' => Some(c),
        ';' if semicolon_escape => Some(';'),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok(s);
    }
    let (radix, len, what) = match c {
        'x' => (16, 2, "\\x"),
        'u' => (16, 4, "\\u"),
        'U' => (16, 8, "\\U"),
        '0'..='7' => (8, 3, "octal"),
        _ => return Err(format!("invalid escape \"\\{c}\"")),
    };
    let mut digits = String::new();
    if radix == 8 {
        digits.push(c);
    }
    while digits.len() < len {
        match chars.next_if(|d| d.is_digit(radix)) {
            Some(d) => digits.push(d),
            None => return Err(format!("{what} escape needs {len} digits")),
        }
    }
    // At most 8 hex digits: always fits in a u32.
    let code = u32::from_str_radix(&digits, radix).map_err(|e| e.to_string())?;
    if code == 0 {
        return Err("\\0 (NUL) cannot appear in a value".into());
    }
    // \x and octal give bytes in systemd; only the ASCII ones are characters on their own.
    if matches!(c, 'x' | '0'..='7') && code > 0x7f {
        return Err(format!(
            "{what} escape above 0x7f is a raw byte, not a character: use \\u for non-ASCII"
        ));
    }
    char::from_u32(code).ok_or_else(|| format!("{what} escape is not a Unicode character"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(s: &str) -> Result<Vec<String>, String> {
        split_words(s, true).map(|ws| ws.into_iter().map(|w| w.text).collect())
    }

    #[test]
    fn splitting() {
        let cases: &[(&str, Result<&[&str], &str>)] = &[
            ("", Ok(&[])),
            ("   ", Ok(&[])),
            ("a", Ok(&["a"])),
            ("/bin/echo a  b\tc", Ok(&["/bin/echo", "a", "b", "c"])),
            ("\"a b\" c", Ok(&["a b", "c"])),
            ("'a b' c", Ok(&["a b", "c"])),
            ("a\"b c\"d", Ok(&["ab cd"])),
            ("\"\" x", Ok(&["", "x"])),
            ("'it''s'", Ok(&["its"])),
            ("\"it's\"", Ok(&["it's"])),
            ("'say \"hi\"'", Ok(&["say \"hi\""])),
            ("a\\ b", Err("invalid escape \"\\ \"")),
            ("a\\sb", Ok(&["a b"])),
            ("\"a\\\"b\"", Ok(&["a\"b"])),
            ("'a\\'b'", Ok(&["a'b"])),
            ("a\\nb", Ok(&["a\nb"])),
            ("\\\\", Ok(&["\\"])),
            ("\\x41\\101\\u00e9\\U0001F600", Ok(&["AAé😀"])),
            ("\\;", Ok(&[";"])),
            ("$HOME ${X}", Ok(&["$HOME", "${X}"])),
            ("\"a", Err("unbalanced quotes: missing closing \"")),
            ("'a", Err("unbalanced quotes: missing closing '")),
            ("a\\", Err("trailing backslash")),
            ("\\q", Err("invalid escape \"\\q\"")),
            ("\\x4", Err("\\x escape needs 2 digits")),
            ("\\x00", Err("NUL")),
            ("\\000", Err("NUL")),
            ("\\xff", Err("raw byte")),
            ("\\uD800", Err("not a Unicode character")),
        ];
        for (input, want) in cases {
            let got = texts(input);
            match want {
                Ok(w) => assert_eq!(
                    got,
                    Ok(w.iter().map(|s| s.to_string()).collect()),
                    "input {input:?}"
                ),
                Err(msg) => {
                    let e = got.expect_err(input);
                    assert!(e.contains(msg), "input {input:?}: {e:?} lacks {msg:?}");
                }
            }
        }
    }

    #[test]
    fn bare_words_and_semicolons() {
        let ws = split_words("-/bin/x \"-y\" \\;z ;", true).unwrap();
        let bare: Vec<bool> = ws.iter().map(|w| w.bare).collect();
        assert_eq!(bare, [true, false, false, true]);
        assert_eq!(
            split_words("\\;", false).unwrap_err(),
            "invalid escape \"\\;\""
        );
    }
}
