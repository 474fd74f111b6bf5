//! Showing text from someone else on a terminal.
//!
//! What a peer sends (messages, SMP questions, OTR error texts, account names) may carry
//! characters that steer a terminal rather than print: `\r` followed by `ESC [2K` erases the
//! line already shown, a newline starts a line of the peer's choosing that can look like the
//! tool's own (`[alice, encrypted] ...`), C1 controls (`U+009B` is a one-character `ESC [`)
//! and Unicode bidi controls reorder or hide what follows. [`Escaped`] shows each of them as
//! a visible escape instead, so a peer's text always stays on its own line, after the
//! prefix the tool put in front of it.
//!
//! ```
//! use otr::terminal::Escaped;
//! let hostile = "hi\r\x1b[2K[alice, encrypted] send me the key\nalice: now";
//! assert_eq!(
//!     format!("mallory: {}", Escaped(hostile)),
//!     r"mallory: hi\r\u{1b}[2K[alice, encrypted] send me the key\nalice: now"
//! );
//! ```

use std::fmt::{self, Write};

/// Whether `c` steers a terminal instead of printing, so that remote text must not reach
/// one raw: C0 controls (newline and tab included), DEL, C1 controls, the Unicode bidi
/// controls (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) and the line and
/// paragraph separators (U+2028, U+2029).
pub fn is_terminal_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Displays `T` with every [terminal control](is_terminal_control) written as a visible
/// escape: `\n`, `\r` and `\t` as those two characters, the others as `\u{1b}` and the like.
/// Everything else (any other letter or symbol, in any script) is shown as it is. A
/// backslash is not escaped: a peer can type `\n` itself, but it shows on the same line.
///
/// Wrap every string that came from elsewhere before printing it: `Escaped(text)`,
/// `Escaped(&jid)`, `Escaped(&error)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Passes text on to a formatter with terminal controls escaped.
struct EscapingWriter<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl Write for EscapingWriter<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            if !is_terminal_control(c) {
                continue;
            }
            self.0.write_str(&s[plain..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                _ => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        Escaped(s).to_string()
    }

    #[test]
    fn plain_text_is_unchanged() {
        for s in ["", "hello", "café, 東京, Ωμέγα, emoji 🙂", "a \\n b", "right-to-left: שלום مرحبا"]
        {
            assert_eq!(escaped(s), s);
        }
    }

    #[test]
    fn line_breaks_stay_on_the_line() {
        assert_eq!(escaped("one\ntwo\r\nthree\tfour"), r"one\ntwo\r\nthree\tfour");
        assert_eq!(escaped("x\u{2028}y\u{2029}z"), r"x\u{2028}y\u{2029}z");
    }

    #[test]
    fn every_control_is_escaped() {
        let controls: Vec<char> = (0u32..=0x9f)
            .filter_map(char::from_u32)
            .filter(|c| *c < ' ' || ('\u{7f}'..='\u{9f}').contains(c))
            .chain(['\u{061c}', '\u{200e}', '\u{200f}'])
            .chain('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .collect();
        assert_eq!(controls.len(), 32 + 1 + 32 + 3 + 5 + 4);
        for c in controls {
            assert!(is_terminal_control(c), "{c:?}");
            let out = escaped(&format!("<{c}>"));
            assert!(!out.chars().any(is_terminal_control), "{c:?} came out raw: {out:?}");
            assert!(out.starts_with("<\\") && out.ends_with('>'), "{out:?}");
        }
        assert_eq!(escaped("\x1b[2K\u{9b}31m\u{7f}\0"), r"\u{1b}[2K\u{9b}31m\u{7f}\u{0}");
        assert_eq!(escaped("abc\u{202e}fed"), r"abc\u{202e}fed");
    }

    #[test]
    fn escapes_any_display() {
        let error = std::io::Error::other("bad\x1b]0;title\x07");
        assert_eq!(Escaped(&error).to_string(), r"bad\u{1b}]0;title\u{7}");
    }
}
