//! Keys as text: one escaping for files that hold one key per line, and one for terminals.
//!
//! Keys are arbitrary UTF-8 (file names may hold line breaks). Files of one key per line (the
//! keys files of `index import` and `index export`, a DATA folder's `paths.txt`) write a key with
//! [`escape_line`] and read it back with [`unescape_line`]:
//!
//! - `\` is written `\\`, a line feed `\n`, a carriage return `\r`;
//! - any other backslash is read as itself, so files written before this escaping (Windows paths
//!   such as `C:\photos\a.png`) still read the same unless they hold `\\`, `\n` or `\r`.
//!
//! Human-readable output passes keys through [`for_terminal`], so that a file name holding escape
//! sequences cannot move the cursor or clear the screen.

use std::borrow::Cow;

/// `key` as one line of a text file: backslashes, line feeds and carriage returns escaped.
pub fn escape_line(key: &str) -> Cow<'_, str> {
    if !key.contains(['\\', '\n', '\r']) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The key that [`escape_line`] wrote as `line`.
pub fn unescape_line(line: &str) -> Cow<'_, str> {
    if !line.contains('\\') {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            // Not an escape: the backslash stands for itself.
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars.next();
    }
    Cow::Owned(out)
}

/// `text` with control characters (C0, DEL, C1) shown as escapes such as `\n`, `\u{1b}`, safe to
/// print to a terminal.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for key in [
            "a.png",
            "",
            "two\nlines",
            "cr\r\nlf",
            "C:\\photos\\a.png",
            "\\n literally",
            "ends with \\",
            "\\",
            "ünï\u{1b}[2J",
        ] {
            let line = escape_line(key);
            assert!(!line.contains(['\n', '\r']), "{key:?} -> {line:?}");
            assert_eq!(unescape_line(&line), key, "{key:?} -> {line:?}");
        }
    }

    #[test]
    fn lone_backslashes_read_as_themselves() {
        assert_eq!(unescape_line("C:\\photos\\a.png"), "C:\\photos\\a.png");
        assert_eq!(unescape_line("a\\"), "a\\");
        assert_eq!(unescape_line("a\\nb"), "a\nb");
    }

    #[test]
    fn control_characters_are_escaped_for_terminals() {
        assert_eq!(for_terminal("plain ünï"), "plain ünï");
        let shown = for_terminal("a\u{1b}[2Jb\nc\u{7f}\u{9b}");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(shown, "a\\u{1b}[2Jb\\nc\\u{7f}\\u{9b}");
    }
}
