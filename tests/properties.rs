//! Properties of the cltab parser and editor over generated files
//! (proptest): what a table of cases cannot cover.
//!
//! - A parsed cltab printed back (entry lines and their option lines)
//!   parses to the same entries, options and settings.
//! - `create` then `delete` of an entry (the editor's `insert_entry` and
//!   `remove_entry`) restores the file byte for byte, whatever comments,
//!   blank lines, options and line ends it has.

use clinit::cltab::{self, edit};
use proptest::prelude::*;
use std::path::Path;

/// A group name of a small alphabet (groups shared by several entries).
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["web", "db", "a", "b", "x1", "long.name-2", "0"])
        .prop_map(str::to_string)
}

/// One item of a generated cltab.
#[derive(Clone, Debug)]
enum Item {
    Blank,
    Comment(String),
    Setting(&'static str),
    /// group, levels, mode, command: its tag is made unique when the file
    /// is put together.
    Entry(String, &'static str, &'static str, String),
    /// An option of the n-th entry (modulo their number).
    Opt(usize, &'static str),
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        1 => Just(Item::Blank),
        1 => "[ -~]{0,20}".prop_map(Item::Comment),
        1 => prop::sample::select(vec![":::stop_term_after:2", ":::notifier:logger -t x", ":::respawn_burst:3"])
            .prop_map(Item::Setting),
        3 => (
            name(),
            prop::sample::select(vec!["1", "12", "3", "a,b", "0"]),
            prop::sample::select(vec!["once", "respawn", "wait", "off", "test"]),
            "[a-z /:=-]{1,20}"
        )
            .prop_map(|(g, l, m, c)| Item::Entry(g, l, m, c)),
        2 => (0usize..50, prop::sample::select(vec!["stop_signal:TERM", "stop_kill_after:7", "notifier:n -x"]))
            .prop_map(|(n, o)| Item::Opt(n, o)),
    ]
}

/// A cltab that parses (unique tags, each option once per entry, options
/// only of entries that exist), with comments, blank lines, settings and
/// LF or CRLF line ends.
fn file() -> impl Strategy<Value = String> {
    (prop::collection::vec(item(), 0..30), any::<bool>()).prop_map(|(items, crlf)| {
        let end = if crlf { "\r\n" } else { "\n" };
        let tags = items
            .iter()
            .filter(|i| matches!(i, Item::Entry(..)))
            .count();
        let mut k = 0;
        let mut given: Vec<(usize, &str)> = Vec::new();
        let mut out = String::new();
        for i in &items {
            let line = match i {
                Item::Blank => String::new(),
                Item::Comment(c) => format!("# {c}"),
                Item::Setting(s) => s.to_string(),
                Item::Entry(g, l, m, c) => {
                    k += 1;
                    format!("{g}:t{k}:{l}:{m}:{c}")
                }
                Item::Opt(n, o) if tags > 0 => {
                    let t = n % tags + 1;
                    let key = o.split(':').next().unwrap_or_default();
                    if given.contains(&(t, key)) {
                        continue;
                    }
                    given.push((t, key));
                    format!(":t{t}::{o}")
                }
                Item::Opt(..) => continue,
            };
            out.push_str(&line);
            out.push_str(end);
        }
        out
    })
}

/// Print a parsed cltab: settings as written, each entry and its options.
fn print(tab: &cltab::Cltab) -> String {
    let mut out = String::new();
    for l in tab.text.lines() {
        let l = l.trim_end_matches('\r');
        if l.starts_with(":::") {
            out.push_str(l);
            out.push('\n');
        }
    }
    for e in &tab.entries {
        out.push_str(&format!(
            "{}:{}:{}:{}:{}\n",
            e.group,
            e.tag,
            e.levels.as_str(),
            e.mode,
            e.command
        ));
        for (n, v) in &e.opts.written {
            out.push_str(&format!(":{}::{n}:{v}\n", e.tag));
        }
    }
    out
}

type Seen = Vec<(
    String,
    String,
    String,
    String,
    String,
    Vec<(String, String)>,
)>;

fn entries(tab: &cltab::Cltab) -> Seen {
    tab.entries
        .iter()
        .map(|e| {
            (
                e.group.clone(),
                e.tag.clone(),
                e.levels.as_str().to_string(),
                e.mode.to_string(),
                e.command.clone(),
                e.opts.written.clone(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_printed_cltab_parses_to_the_same_entries(text in file()) {
        let path = Path::new("/etc/cltab");
        let tab = cltab::parse(path, &text).expect("the generator makes valid cltabs");
        let again = cltab::parse(path, &print(&tab)).expect("a printed cltab parses");
        prop_assert_eq!(entries(&again), entries(&tab));
        prop_assert_eq!(again.settings, tab.settings);
    }

    #[test]
    fn create_then_delete_restores_the_file_byte_for_byte(
        text in file(),
        group in name(),
        opts in prop::collection::vec(prop::sample::select(vec!["stop_signal:TERM", "notifier:x y"]), 0..3),
    ) {
        // A tag the file does not use.
        let tag = "new-tag";
        let mut lines = vec![format!("{group}:{tag}:1:once:true")];
        lines.extend(opts.iter().map(|o| format!(":{tag}::{o}")));
        let created = edit::insert_entry(&text, &group, &lines);
        prop_assert!(created.contains(&lines[0]));
        let back = edit::remove_entry(&created, tag).expect("the created entry is found");
        prop_assert_eq!(back, text);
    }
}
