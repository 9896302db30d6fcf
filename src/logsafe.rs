//! Client-supplied strings in log lines.
//!
//! A name, a holder description or a message from a client goes into
//! root's log. Written raw, a newline in it forges a log line and a 3 MB
//! name writes 3 MB. [`Safe`] writes such a string escaped (control
//! characters as `\n`, `\u{1b}`, ...; backslashes doubled) and cut to
//! [`MAX_LOGGED`] bytes with a note of the full length.

use std::fmt;

/// At most this many bytes of one client-supplied string go into a log
/// line (before escaping).
pub const MAX_LOGGED: usize = 200;

/// A client-supplied string, safe to log: `format!("{}", Safe(name))`.
pub struct Safe<'a>(pub &'a str);

impl fmt::Display for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut cut = s.len().min(MAX_LOGGED);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        for c in s[..cut].chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        if cut < s.len() {
            write!(f, "...({} bytes)", s.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Safe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_strings_are_escaped_and_cut() {
        let long = "x".repeat(3000);
        let cases: &[(&str, String)] = &[
            ("web", "web".into()),
            ("a\nb", "a\\nb".into()),
            (
                "a\r\n2026 INFO shutdown",
                "a\\r\\n2026 INFO shutdown".into(),
            ),
            ("tab\there", "tab\\there".into()),
            ("esc\u{1b}[31m", "esc\\u{1b}[31m".into()),
            ("nul\0", "nul\\u{0}".into()),
            ("back\\n", "back\\\\n".into()),
            ("émoji ✓", "émoji ✓".into()),
            (&long, format!("{}...(3000 bytes)", "x".repeat(200))),
        ];
        for (input, want) in cases {
            assert_eq!(Safe(input).to_string(), *want, "{input:?}");
        }
        // A cut never splits a character.
        let wide = "é".repeat(150);
        let out = Safe(&wide).to_string();
        assert!(
            out.starts_with(&"é".repeat(100)) && out.ends_with("...(300 bytes)"),
            "{out}"
        );
    }
}
