//! Pure text edits of a cltab, for `clinit create` and `clinit delete`.
//!
//! The edits work on the text, not on a parsed [`Cltab`](super::Cltab), so
//! everything the model does not keep survives: comments, blank lines, the
//! order of lines and their line ends. Lines are classified the way
//! [`parse`](super::parse) reads them:
//!
//! - blank lines and lines whose first non-blank character is `#` are
//!   comments, whatever follows the `#`;
//! - a line with fewer than five `:`-separated fields is neither an entry nor
//!   an option line;
//! - fields are trimmed, a `\r` at the end of the line is ignored;
//! - `group:tag:levels:mode:command` with a non-empty group and tag is the
//!   entry line of `tag`;
//! - `:tag::name:value` (empty group, non-empty tag, empty levels) is an
//!   option line of the entry `tag`, wherever it stands in the file;
//! - `:::name:value` is a setting and belongs to no entry.

/// What one line of a cltab is, as far as the edits care.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// The entry line of `tag` in `group`.
    Entry { group: &'a str, tag: &'a str },
    /// An option line of the entry `tag`.
    Option { tag: &'a str },
    /// Comments, blank lines, settings and lines that are not valid.
    Other,
}

/// Classify one line, given without its `\n`.
fn classify(line: &str) -> Line<'_> {
    let line = line.trim_end_matches('\r');
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Line::Other;
    }
    let Some([group, tag, levels, _, _]) = super::split_fields(line) else {
        return Line::Other;
    };
    let (group, tag, levels) = (group.trim(), tag.trim(), levels.trim());
    match (group.is_empty(), tag.is_empty(), levels.is_empty()) {
        (false, false, _) => Line::Entry { group, tag },
        (true, false, true) => Line::Option { tag },
        _ => Line::Other,
    }
}

/// The lines of `text`, each with its line end (`\n` or `\r\n`; the last line
/// may have none), paired with its classification.
fn split_lines(text: &str) -> Vec<(&str, Line<'_>)> {
    text.split_inclusive('\n')
        .map(|raw| (raw, classify(raw.strip_suffix('\n').unwrap_or(raw))))
        .collect()
}

/// The line end to use for new lines: `\r\n` if the first line of `text`
/// ends with it, `\n` otherwise.
fn line_end(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if text[..i].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

/// Insert `lines` (an entry line followed by its option lines, each without
/// newline) into cltab text: right after the last line that belongs to
/// `group` (an entry line of that group, or an option line of one of that
/// group's tags), or at the end of the file if the group has no entry yet
/// (adding a newline first if the text does not end with one).
///
/// Every other byte of the text is kept: comments, blank lines, order, CRLF
/// line ends of other lines. The new lines end with `\r\n` if the file's first
/// line does, with `\n` otherwise; the result always ends with a line end.
/// The lines are not checked: the caller builds valid ones.
pub fn insert_entry(text: &str, group: &str, lines: &[String]) -> String {
    let all = split_lines(text);
    let tags: Vec<&str> = all
        .iter()
        .filter_map(|(_, l)| match l {
            Line::Entry { group: g, tag } if *g == group => Some(*tag),
            _ => None,
        })
        .collect();
    let belongs = |l: &Line<'_>| match l {
        Line::Entry { group: g, .. } => *g == group,
        Line::Option { tag } => tags.contains(tag),
        Line::Other => false,
    };
    // Byte offset just past the last line of the group, or the end of text.
    let at = if tags.is_empty() {
        text.len()
    } else {
        let last = all.iter().rposition(|(_, l)| belongs(l)).unwrap_or(0);
        all[..=last].iter().map(|(raw, _)| raw.len()).sum()
    };
    let nl = line_end(text);
    let mut out =
        String::with_capacity(text.len() + lines.iter().map(|l| l.len() + 2).sum::<usize>() + 2);
    out.push_str(&text[..at]);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
    for l in lines {
        out.push_str(l);
        out.push_str(nl);
    }
    out.push_str(&text[at..]);
    out
}

/// Remove the entry line of `tag` and all its option lines; None if there is
/// no entry line with that tag.
///
/// Everything else is kept byte for byte (comments, including a comment line
/// right above the entry, stay). A file with the tag on several entry lines
/// (invalid, the parser rejects it) loses all of them.
pub fn remove_entry(text: &str, tag: &str) -> Option<String> {
    let all = split_lines(text);
    if !all
        .iter()
        .any(|(_, l)| matches!(l, Line::Entry { tag: t, .. } if *t == tag))
    {
        return None;
    }
    Some(
        all.iter()
            .filter(|(_, l)| match l {
                Line::Entry { tag: t, .. } | Line::Option { tag: t } => *t != tag,
                Line::Other => true,
            })
            .map(|(raw, _)| *raw)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lines_are_classified_as_the_parser_reads_them() {
        let cases: &[(&str, Line<'_>)] = &[
            (
                "web:web1:3:respawn:x",
                Line::Entry {
                    group: "web",
                    tag: "web1",
                },
            ),
            (
                " web : web1 : 3 : respawn : a:b:c\r",
                Line::Entry {
                    group: "web",
                    tag: "web1",
                },
            ),
            // The mode is not checked: the line is still the entry of its tag.
            (
                "web:web1:3:bogus:x",
                Line::Entry {
                    group: "web",
                    tag: "web1",
                },
            ),
            (
                "web:web1:::",
                Line::Entry {
                    group: "web",
                    tag: "web1",
                },
            ),
            (
                ":web1::notifier:/usr/local/bin/notify",
                Line::Option { tag: "web1" },
            ),
            (
                ":backup::schedule:sat 03:00",
                Line::Option { tag: "backup" },
            ),
            (" : web1 : :notifier:x\r", Line::Option { tag: "web1" }),
            ("# web:web1:3:respawn:x", Line::Other),
            ("   # web:web1:3:respawn:x", Line::Other),
            ("#:web1::notifier:x", Line::Other),
            ("", Line::Other),
            ("  \t ", Line::Other),
            ("\r", Line::Other),
            (":::socket:/run/clinit.sock", Line::Other),
            // Fewer than five fields.
            ("web:web1:3:respawn", Line::Other),
            (":web1::notifier", Line::Other),
            ("just text", Line::Other),
            // Empty tag, or empty group with levels: neither entry nor option.
            ("web::3:once:x", Line::Other),
            (":web1:3:once:x", Line::Other),
        ];
        for (line, want) in cases {
            assert_eq!(&classify(line), want, "line {line:?}");
        }
    }

    #[test]
    fn insert_entry_cases() {
        // (name, text, group, lines, expected)
        let cases: &[(&str, &str, &str, &[&str], &str)] = &[
            (
                "existing group in the middle of the file",
                "# cluster\n:::socket:/run/c.sock\n\nweb:web1:3:respawn:a\n# second web\nweb:web2:3:respawn:b\n\n# databases\ndb:db1:3:respawn:c\n",
                "web",
                &["web:web3:3:respawn:new", ":web3::notifier:/bin/n"],
                "# cluster\n:::socket:/run/c.sock\n\nweb:web1:3:respawn:a\n# second web\nweb:web2:3:respawn:b\nweb:web3:3:respawn:new\n:web3::notifier:/bin/n\n\n# databases\ndb:db1:3:respawn:c\n",
            ),
            (
                "new group at the end",
                "web:web1:3:respawn:a\n# trailing comment\n",
                "db",
                &["db:db1:3:once:c"],
                "web:web1:3:respawn:a\n# trailing comment\ndb:db1:3:once:c\n",
            ),
            (
                "new group, text without trailing newline",
                "web:web1:3:respawn:a\n# end",
                "db",
                &["db:db1:3:once:c"],
                "web:web1:3:respawn:a\n# end\ndb:db1:3:once:c\n",
            ),
            (
                "existing group on the last line, without trailing newline",
                "web:web1:3:respawn:a",
                "web",
                &["web:web2:3:respawn:b"],
                "web:web1:3:respawn:a\nweb:web2:3:respawn:b\n",
            ),
            (
                "empty text",
                "",
                "web",
                &["web:web1:3:respawn:a", ":web1::notifier:/bin/n"],
                "web:web1:3:respawn:a\n:web1::notifier:/bin/n\n",
            ),
            (
                "group whose last line is an option line",
                "web:web1:3:respawn:a\n:web1::notifier:/bin/n\n\ndb:db1:3:once:c\n",
                "web",
                &["web:web2:3:respawn:b"],
                "web:web1:3:respawn:a\n:web1::notifier:/bin/n\nweb:web2:3:respawn:b\n\ndb:db1:3:once:c\n",
            ),
            (
                "an option line of the group far from its entry counts",
                "web:web1:3:respawn:a\ndb:db1:3:once:c\n:web1::schedule:sat 03:00\n# end\n",
                "web",
                &["web:web2:3:respawn:b"],
                "web:web1:3:respawn:a\ndb:db1:3:once:c\n:web1::schedule:sat 03:00\nweb:web2:3:respawn:b\n# end\n",
            ),
            (
                "comments that look like entries of the group do not count",
                "web:web1:3:respawn:a\ndb:db1:3:once:c\n# web:web9:3:respawn:x\n#:web1::notifier:x\n",
                "web",
                &["web:web2:3:respawn:b"],
                "web:web1:3:respawn:a\nweb:web2:3:respawn:b\ndb:db1:3:once:c\n# web:web9:3:respawn:x\n#:web1::notifier:x\n",
            ),
            (
                "a group only named in a comment is a new group",
                "# web:web9:3:respawn:x\ndb:db1:3:once:c\n",
                "web",
                &["web:web1:3:respawn:a"],
                "# web:web9:3:respawn:x\ndb:db1:3:once:c\nweb:web1:3:respawn:a\n",
            ),
            (
                "option lines of another group's tag do not count",
                "web:web1:3:respawn:a\ndb:db1:3:once:c\n:db1::notifier:x\n",
                "web",
                &["web:web2:3:respawn:b"],
                "web:web1:3:respawn:a\nweb:web2:3:respawn:b\ndb:db1:3:once:c\n:db1::notifier:x\n",
            ),
            (
                "CRLF file, existing group",
                "# c\r\nweb:web1:3:respawn:a\r\n\r\ndb:db1:3:once:c\r\n",
                "web",
                &["web:web2:3:respawn:b", ":web2::notifier:/bin/n"],
                "# c\r\nweb:web1:3:respawn:a\r\nweb:web2:3:respawn:b\r\n:web2::notifier:/bin/n\r\n\r\ndb:db1:3:once:c\r\n",
            ),
            (
                "CRLF file without trailing line end, new group",
                "web:web1:3:respawn:a\r\ndb:db1:3:once:c",
                "x",
                &["x:x1:3:once:d"],
                "web:web1:3:respawn:a\r\ndb:db1:3:once:c\r\nx:x1:3:once:d\r\n",
            ),
        ];
        for (name, text, group, lines, want) in cases {
            let got = insert_entry(text, group, &v(lines));
            assert_eq!(&got, want, "case: {name}");
        }
    }

    #[test]
    fn remove_entry_cases() {
        // (name, text, tag, expected)
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "option lines before and after the entry",
                "# web servers\n:web1::notifier:/bin/n\nweb:web1:3:respawn:a\n:web1::schedule:sat 03:00\nweb:web2:3:respawn:b\n",
                "web1",
                Some("# web servers\nweb:web2:3:respawn:b\n"),
            ),
            (
                "a tag only in a comment",
                "# web:web1:3:respawn:a\nweb:web2:3:respawn:b\n",
                "web1",
                None,
            ),
            (
                "a tag with option lines but no entry line",
                ":web1::notifier:/bin/n\nweb:web2:3:respawn:b\n",
                "web1",
                None,
            ),
            ("empty text", "", "web1", None),
            (
                "the other entries' option lines stay",
                ":web2::notifier:/bin/n2\nweb:web1:3:respawn:a\n:web1::notifier:/bin/n1\nweb:web2:3:respawn:b\n:web2::schedule:sat 03:00\n",
                "web1",
                Some(":web2::notifier:/bin/n2\nweb:web2:3:respawn:b\n:web2::schedule:sat 03:00\n"),
            ),
            (
                "comments, blanks and settings stay byte for byte",
                "# top\n:::socket:/run/c.sock\n\n  # about web1\nweb:web1:3:respawn:a\n\n# web:web1:3:respawn:old\ndb:db1:3:once:c\n",
                "web1",
                Some(
                    "# top\n:::socket:/run/c.sock\n\n  # about web1\n\n# web:web1:3:respawn:old\ndb:db1:3:once:c\n",
                ),
            ),
            (
                "fields are trimmed, colons in the command kept",
                " web : web1 : 3 : respawn : a:b:c\n db:db1:3:once:c\n",
                "web1",
                Some(" db:db1:3:once:c\n"),
            ),
            (
                "last line without trailing newline",
                "db:db1:3:once:c\nweb:web1:3:respawn:a",
                "web1",
                Some("db:db1:3:once:c\n"),
            ),
            (
                "CRLF file",
                "# c\r\nweb:web1:3:respawn:a\r\n:web1::notifier:x\r\ndb:db1:3:once:c\r\n",
                "web1",
                Some("# c\r\ndb:db1:3:once:c\r\n"),
            ),
            (
                "a tag that is a prefix of another",
                "web:web1:3:respawn:a\nweb:web10:3:respawn:b\n:web10::notifier:x\n",
                "web1",
                Some("web:web10:3:respawn:b\n:web10::notifier:x\n"),
            ),
        ];
        for (name, text, tag, want) in cases {
            assert_eq!(remove_entry(text, tag).as_deref(), *want, "case: {name}");
        }
    }

    #[test]
    fn insert_then_remove_gives_back_the_text() {
        let text = "# c\nweb:web1:3:respawn:a\n\ndb:db1:3:once:c\n";
        let added = insert_entry(
            text,
            "web",
            &v(&["web:web2:3:respawn:b", ":web2::notifier:/bin/n"]),
        );
        assert_eq!(remove_entry(&added, "web2").as_deref(), Some(text));
    }
}
