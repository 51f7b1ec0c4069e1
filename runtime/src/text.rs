//! Outside text made safe to keep and to show: file names as keys whatever their encoding,
//! control characters escaped before they reach a log line or a terminal, and messages from
//! CDF or an identity provider cut to a bounded size.
//!
//! File names on Unix are bytes. A name that is UTF-8 is its own key; in one that is not, each
//! byte that is not part of a UTF-8 character is written `\xNN` and a backslash `\\`, so two
//! different names never get the same key (a UTF-8 name that itself spells `\xNN` could, in
//! principle: the built-in extractors check a listing for that and name both files).

use std::borrow::Cow;
use std::path::Path;

/// The longest message from CDF or an identity provider that the runtime keeps, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// `path` as text: itself when it is UTF-8; otherwise with every byte that is not UTF-8
/// written `\xNN` and every backslash `\\` (lossless: distinct paths give distinct text).
///
/// ```
/// use std::os::unix::ffi::OsStrExt as _;
/// use extractor_runtime::text::path_text;
/// let latin1 = std::path::Path::new(std::ffi::OsStr::from_bytes(b"caf\xe9.csv"));
/// assert_eq!(path_text(latin1), r"caf\xE9.csv");
/// assert_eq!(path_text(std::path::Path::new("café.csv")), "café.csv");
/// ```
pub fn path_text(path: &Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// Whether `c` must not reach a terminal or a log line as it is: control characters (C0, DEL,
/// C1) and the bidirectional overrides that reorder what a reader sees.
fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters (newlines, escape sequences, ...) and bidirectional
/// overrides escaped as Rust writes them (`\n`, `\u{1b}`): safe to print on one line.
/// [`escape_lines`] keeps the newlines of a text that is several lines on purpose.
///
/// ```
/// use extractor_runtime::text::escape;
/// assert_eq!(escape("a\nb\x1b[2J"), r"a\nb\u{1b}[2J");
/// assert_eq!(escape("plain"), "plain");
/// ```
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, unsafe_char)
}

/// [`escape`], but newlines stay: for a message of several lines of our own (a config error,
/// a sign-in prompt) that quotes outside text, which can then add no escape sequence.
///
/// ```
/// use extractor_runtime::text::escape_lines;
/// assert_eq!(escape_lines("open:\nhttp://x\x1b[2J"), "open:\nhttp://x\\u{1b}[2J");
/// ```
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && unsafe_char(c))
}

fn escape_where(text: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A path for a log line or a message: [`path_text`], then [`escape`]d.
#[derive(Clone, Copy)]
pub struct Shown<'a>(pub &'a Path);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape(&path_text(self.0)))
    }
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with how much was cut.
///
/// ```
/// use extractor_runtime::text::cut;
/// let long = "x".repeat(5000);
/// assert_eq!(cut(&long, 10), "xxxxxxxxxx... (4990 bytes cut)");
/// assert_eq!(cut("short", 10), "short");
/// ```
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}... ({} bytes cut)",
        &text[..end],
        text.len() - end
    ))
}

/// [`cut`] to [`MAX_MESSAGE_BYTES`], owned: for a message from CDF or an identity provider.
pub(crate) fn cut_message(message: impl Into<String>) -> String {
    let message = message.into();
    match cut(&message, MAX_MESSAGE_BYTES) {
        Cow::Borrowed(_) => message,
        Cow::Owned(cut) => cut,
    }
}

/// Writes what it is given with every unsafe character of each write escaped, except a
/// line's final newline: every log line is one line, whatever a file name or an answer held.
pub(crate) struct EscapingWriter<W>(pub(crate) W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, newline) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (buf, false),
        };
        let text = String::from_utf8_lossy(body);
        let escaped = escape(&text);
        if matches!((&text, &escaped), (Cow::Borrowed(_), Cow::Borrowed(_))) {
            self.0.write_all(buf)?;
        } else {
            let mut line = escaped.into_owned().into_bytes();
            if newline {
                line.push(b'\n');
            }
            self.0.write_all(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt as _;

    #[test]
    fn path_text_is_lossless() {
        let names: [&[u8]; 5] = [
            b"plain.csv",
            b"caf\xe9.csv",
            b"caf\\xE9.csv",
            b"a\\b\xff",
            b"a\\\\b\xff",
        ];
        let texts: Vec<String> = names
            .iter()
            .map(|n| path_text(Path::new(OsStr::from_bytes(n))).into_owned())
            .collect();
        assert_eq!(texts[1], r"caf\xE9.csv");
        assert_eq!(texts[3], r"a\\b\xFF");
        // Only a UTF-8 name that spells an escape can meet a non-UTF-8 one.
        let distinct: std::collections::HashSet<_> = [&texts[0], &texts[1], &texts[3], &texts[4]]
            .into_iter()
            .collect();
        assert_eq!(distinct.len(), 4, "{texts:?}");
        assert_eq!(texts[2], texts[1], "the documented case the listing checks");
    }

    #[test]
    fn escape_covers_controls_and_bidi_overrides() {
        assert_eq!(escape("x\r\ny\t\u{7f}\u{9b}"), r"x\r\ny\t\u{7f}\u{9b}");
        assert_eq!(escape("evil\u{202E}fdp.exe"), r"evil\u{202e}fdp.exe");
        assert!(matches!(escape("ünïcode ok"), Cow::Borrowed(_)));
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let text = "é".repeat(10); // 2 bytes each
        assert_eq!(cut(&text, 5), "éé... (16 bytes cut)");
        assert_eq!(cut_message("y".repeat(10_000)).len(), 2048 + 20);
    }

    #[test]
    fn the_log_writer_keeps_each_line_one_line() {
        let mut w = EscapingWriter(Vec::new());
        w.write_all(b"INFO file=x\nFORGED ERROR \x1b]0;title\x07 done\n")
            .unwrap();
        w.write_all(b"plain\n").unwrap();
        assert_eq!(
            String::from_utf8(w.0).unwrap(),
            "INFO file=x\\nFORGED ERROR \\u{1b}]0;title\\u{7} done\nplain\n"
        );
    }
}
