use super::*;
use std::path::Path;

fn p(text: &str) -> Result<Cltab, CltabErrors> {
    parse(Path::new("/etc/cltab"), text)
}

/// (text, expected errors as (line, code))
#[test]
fn every_error_is_reported_with_its_line() {
    let cases: &[(&str, &[(usize, &str)])] = &[
        ("web:a:1:respawn:sleep 1\n", &[]),
        ("web:a:1:respawn\n", &[(1, "CLTAB_TOO_FEW_FIELDS")]),
        ("just text\n", &[(1, "CLTAB_TOO_FEW_FIELDS")]),
        (":a:1:once:true\n", &[(1, "CLTAB_EMPTY_GROUP")]),
        ("web::1:once:true\n", &[(1, "CLTAB_EMPTY_TAG")]),
        ("web:a:1:sometimes:true\n", &[(1, "CLTAB_UNKNOWN_MODE")]),
        ("web:a:1:Respawn:true\n", &[(1, "CLTAB_UNKNOWN_MODE")]),
        // Names that would become paths, or hold control characters.
        (".:/../ESCAPE:1:once:true\n", &[(1, "CLTAB_BAD_NAME")]),
        ("web:a\u{1b}[2J:1:once:true\n", &[(1, "CLTAB_BAD_NAME")]),
        ("web:a\0:1:once:true\n", &[(1, "CLTAB_BAD_NAME")]),
        ("web:a:1:once:tr\0ue\n", &[(1, "CLTAB_NUL_IN_COMMAND")]),
        (":::notifier:lo\0g\n", &[(1, "CLTAB_BAD_SETTING")]),
        ("web:a.b-c_d@e:1:once:true\n", &[]),
        ("., ..:a:1:once:true\n", &[]),
        (
            "web:a:1:once:true\ndb:a:2:once:true\n",
            &[(2, "CLTAB_DUPLICATE_TAG")],
        ),
        (":::bogus:1\n", &[(1, "CLTAB_UNKNOWN_SETTING")]),
        (":::stop_term_after:soon\n", &[(1, "CLTAB_BAD_SETTING")]),
        (":::stop_term_after:-1\n", &[(1, "CLTAB_BAD_SETTING")]),
        (":::socket_mode:999\n", &[(1, "CLTAB_BAD_SETTING")]),
        (":::respawn_burst:x\n", &[(1, "CLTAB_BAD_SETTING")]),
        (":::socket:\n", &[(1, "CLTAB_BAD_SETTING")]),
        // Entry options.
        ("w:a:1:respawn:x\n:a::stop_signal:TERM\n", &[]),
        (":a::notifier:x\nw:a:1:respawn:x\n", &[]),
        (
            "w:a:1:respawn:x\n:b::notifier:x\n",
            &[(2, "CLTAB_OPTION_UNKNOWN_TAG")],
        ),
        (
            "w:a:1:respawn:x\n:a::socket:/x\n",
            &[(2, "CLTAB_UNKNOWN_OPTION")],
        ),
        (
            "w:a:1:respawn:x\n:a::stop_signal:NOPE\n",
            &[(2, "CLTAB_BAD_OPTION")],
        ),
        (
            "w:a:1:respawn:x\n:a::respawn_give_up:-1\n",
            &[(2, "CLTAB_BAD_OPTION")],
        ),
        (
            "w:a:1:respawn:x\n:a::notifier_format:xml\n",
            &[(2, "CLTAB_BAD_OPTION")],
        ),
        (
            "w:a:1:respawn:x\n:a::notifier:x\n:a::notifier:y\n",
            &[(3, "CLTAB_DUPLICATE_OPTION")],
        ),
        (":::schedule:now\n", &[(1, "CLTAB_ENTRY_ONLY_SETTING")]),
        ("w:c:1:cron:x\n", &[(1, "CLTAB_MISSING_SCHEDULE")]),
        (
            "w:c:1:cron:x\n:c::schedule:25:00\n",
            &[(2, "CLTAB_BAD_OPTION")],
        ),
        (
            "w:c:1:once:x\n:c::schedule:now\n",
            &[(1, "CLTAB_SCHEDULE_NOT_CRON")],
        ),
        ("w:c:1:cron:x\n:c::schedule:sat 03:00\n", &[]),
        // Several problems at once, all reported, in line order.
        (
            "# comment\n\nweb:a:1:once:true\n::1:once:x\nweb:b:1:nope:x\nweb:a:2:wait:y\nshort\n",
            &[
                (4, "CLTAB_EMPTY_GROUP"),
                (4, "CLTAB_EMPTY_TAG"),
                (5, "CLTAB_UNKNOWN_MODE"),
                (6, "CLTAB_DUPLICATE_TAG"),
                (7, "CLTAB_TOO_FEW_FIELDS"),
            ],
        ),
    ];
    for (text, expected) in cases {
        let got: Vec<(usize, &str)> = match p(text) {
            Ok(_) => vec![],
            Err(e) => e.errors.iter().map(|e| (e.line, e.kind.code())).collect(),
        };
        assert_eq!(&got, expected, "cltab text {text:?}");
    }
}

#[test]
fn messages_name_file_line_and_both_lines_of_a_duplicate() {
    let err = p("web:a:1:once:true\n\ndb:a:2:once:true\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "/etc/cltab:3: duplicate tag 'a' (first used on line 1) [CLTAB_DUPLICATE_TAG]"
    );
    let err = p("web:x:1:later:true\n").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/etc/cltab:1: unknown mode 'later'")
    );
}

#[test]
fn fields_and_command_with_colons() {
    let tab = p("  # indented comment\nweb:srv:123:respawn:/bin/echo a:b:c  \n").unwrap();
    assert_eq!(tab.entries.len(), 1);
    let e = &tab.entries[0];
    assert_eq!(
        (
            e.group.as_str(),
            e.tag.as_str(),
            e.levels.as_str(),
            e.mode,
            e.command.as_str(),
            e.line
        ),
        ("web", "srv", "123", Mode::Respawn, "/bin/echo a:b:c  ", 2)
    );
}

#[test]
fn every_mode_parses() {
    for (word, mode) in [
        ("wait", Mode::Wait),
        ("once", Mode::Once),
        ("respawn", Mode::Respawn),
        ("off", Mode::Off),
        ("test", Mode::Test),
    ] {
        let tab = p(&format!("g:t:1:{word}:true\n")).unwrap();
        assert_eq!(tab.entries[0].mode, mode);
    }
}

#[test]
fn levels_matching() {
    // (field, level, matches)
    let cases = [
        ("12", "1", true),
        ("12", "2", true),
        ("12", "3", false),
        ("12", "12", true),
        ("12", "", false),
        ("0", "0", true),
        ("long1,long2,5", "long2", true),
        ("long1,long2,5", "5", true),
        ("long1,long2,5", "l", false),
        ("long1,long2,5", "long1,long2,5", true),
        ("solo,", "solo", true),
        ("solo,", "s", false),
        ("solo,", "", false),
        ("abc", "abc", true),
        ("abc", "b", true),
        ("abc", "ab", false),
        ("", "1", false),
        ("é1", "é", true),
    ];
    for (field, level, want) in cases {
        assert_eq!(
            Levels::new(field).contains(level),
            want,
            "field {field:?} level {level:?}"
        );
    }
}

#[test]
fn settings_lines() {
    let tab = p(":::socket:/tmp/s\n:::clstat:/tmp/c\n:::log:/tmp/l\n:::socket_mode:0660\n:::stop_term_after:0.5\n:::respawn_burst:3\n").unwrap();
    let s = &tab.settings;
    assert_eq!(s.socket.as_deref(), Some(Path::new("/tmp/s")));
    assert_eq!(s.clstat.as_deref(), Some(Path::new("/tmp/c")));
    assert_eq!(s.log.as_deref(), Some(Path::new("/tmp/l")));
    assert_eq!(s.socket_mode, Some(0o660));
    assert_eq!(
        s.stop_term_after,
        Some(std::time::Duration::from_millis(500))
    );
    assert_eq!(s.respawn_burst, Some(3));
    assert!(tab.entries.is_empty());
}

#[test]
fn group_zero_and_groups_in_order() {
    let tab = p("0:a:0:once:true\nweb:b:1:once:true\n0:c:1:once:true\n").unwrap();
    assert_eq!(tab.groups(), vec!["0", "web"]);
    assert_eq!(tab.entries_of("0").count(), 2);
    let by: Vec<(&str, Vec<String>)> = tab
        .by_group()
        .into_iter()
        .map(|(g, es)| (g, es.iter().map(|e| e.tag.clone()).collect()))
        .collect();
    assert_eq!(
        by,
        vec![
            ("0", vec!["a".into(), "c".into()]),
            ("web", vec!["b".into()])
        ]
    );
}

#[test]
fn scan_settings_ignores_bad_entries() {
    let s = scan_settings("web:a:1:bogus:x\n:::socket:/run/x.s\n:::nonsense:1\n");
    assert_eq!(s.socket.as_deref(), Some(Path::new("/run/x.s")));
}

#[test]
fn entry_options_override_settings_for_their_entry_only() {
    let tab = p(":::stop_kill_after:7\n:::notifier:global-notify\n\
                 w:a:1:respawn:x\n:a::stop_kill_after:30\n:a::stop_signal:hup\n:a::notifier_format:json\n\
                 w:b:1:respawn:y\n\
                 w:c:1:cron:z\n:c::schedule:*/5 * * * *\n:c::notifier:own\n")
    .unwrap();
    let [a, b, c] = [0, 1, 2].map(|i| &tab.entries[i].opts);
    assert_eq!(a.timing.kill_after, std::time::Duration::from_secs(30));
    assert_eq!(b.timing.kill_after, std::time::Duration::from_secs(7));
    assert_eq!(a.timing.stop_signal, nix::sys::signal::Signal::SIGHUP);
    assert_eq!(b.timing.stop_signal, nix::sys::signal::Signal::SIGINT);
    let notifier = |o: &EntryOpts| o.notifier.as_ref().map(|n| (n.command.clone(), n.format));
    assert_eq!(
        notifier(a),
        Some(("global-notify".into(), NotifierFormat::Json))
    );
    assert_eq!(
        notifier(b),
        Some(("global-notify".into(), NotifierFormat::Bos))
    );
    assert_eq!(notifier(c), Some(("own".into(), NotifierFormat::Bos)));
    assert_eq!(c.schedule.as_ref().map(|s| s.as_str()), Some("*/5 * * * *"));
    assert_eq!(
        a.written,
        vec![
            ("stop_kill_after".to_string(), "30".to_string()),
            ("stop_signal".into(), "hup".into()),
            ("notifier_format".into(), "json".into())
        ]
    );
    assert_eq!(tab.entries[2].mode, Mode::Cron);
}

#[test]
fn which_names_a_group_or_tag_may_have() {
    let long = "x".repeat(256);
    let cases: &[(&str, Option<&str>)] = &[
        ("web", None),
        ("web-1.example_2", None),
        (".", None),
        ("x/y", Some("it holds a '/'")),
        ("/../ESCAPE", Some("it holds a '/'")),
        ("#x", Some("it starts with '#'")),
        ("a:b", Some("it holds a ':'")),
        (
            "a\nb",
            Some("it holds a control character (newline, NUL, ...)"),
        ),
        (
            "a\0",
            Some("it holds a control character (newline, NUL, ...)"),
        ),
        (" a", Some("it starts or ends with blanks")),
        (&long, Some("256 bytes, more than the 255 allowed")),
    ];
    for (name, want) in cases {
        assert_eq!(check_name(name).err().as_deref(), *want, "{name:?}");
    }
}

#[test]
fn a_cltab_of_100_000_entries_parses_and_its_duplicates_are_found() {
    // (Its time is measured in bench/, not here: cargo bench --bench
    // core -- --parse.)
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&format!("g{}:t{i}:1:respawn:sleep 1\n", i % 100));
    }
    text.push_str(":t99999::stop_signal:TERM\n");
    let tab = p(&text).unwrap();
    assert_eq!(tab.entries.len(), 100_000);
    text.push_str("g0:t5:1:once:true\n");
    let e = p(&text).unwrap_err();
    assert_eq!(e.errors[0].kind.code(), "CLTAB_DUPLICATE_TAG");
}

#[test]
fn a_notifier_setting_is_one_string_shared_by_every_entry() {
    let mut text = format!(":::notifier:logger {}\n", "x".repeat(100_000));
    for i in 0..100 {
        text.push_str(&format!("g:t{i}:1:respawn:true\n"));
    }
    text.push_str(":t7::notifier:mail root\n");
    let tab = p(&text).unwrap();
    let first = tab.entries[0]
        .opts
        .notifier
        .as_ref()
        .unwrap()
        .command
        .clone();
    for e in &tab.entries {
        let n = &e.opts.notifier.as_ref().unwrap().command;
        if e.tag == "t7" {
            assert_eq!(&**n, "mail root");
        } else {
            assert!(std::sync::Arc::ptr_eq(n, &first), "{} has a copy", e.tag);
        }
    }
}

/// Group options: (text, expected errors as (line, code)).
#[test]
fn group_options_are_checked_with_their_lines() {
    let cases: &[(&str, &[(usize, &str)])] = &[
        ("web:a:1:respawn:x\nweb:::placement:exclusive\n", &[]),
        ("web:::placement:every\nweb:a:1:respawn:x\n", &[]),
        (
            "web:a:1:respawn:x\nweb:::placement:exclusive\nweb:::nodes:a, b,c\n",
            &[],
        ),
        (
            "web:a:1:respawn:x\nweb:::placement:sometimes\n",
            &[(2, "CLTAB_BAD_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\ndb:::placement:exclusive\n",
            &[(2, "CLTAB_OPTION_UNKNOWN_GROUP")],
        ),
        (
            "web:a:1:respawn:x\nweb:::colour:red\n",
            &[(2, "CLTAB_UNKNOWN_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\nweb:::placement:exclusive\nweb:::placement:every\n",
            &[(3, "CLTAB_DUPLICATE_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\nweb:::placement:exclusive\nweb:::nodes:a,,b\n",
            &[(3, "CLTAB_BAD_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\nweb:::placement:exclusive\nweb:::nodes:a,a\n",
            &[(3, "CLTAB_BAD_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\nweb:::placement:exclusive\nweb:::nodes:a/b\n",
            &[(3, "CLTAB_BAD_GROUP_OPTION")],
        ),
        (
            "web:a:1:respawn:x\nweb:::nodes:a,b\n",
            &[(2, "CLTAB_NODES_NOT_EXCLUSIVE")],
        ),
        // The timing rule: only checked when a group is exclusive.
        (":::lease_ttl:0.5\nweb:a:1:respawn:x\n", &[]),
        (
            ":::lease_ttl:0.5\nweb:a:1:respawn:x\nweb:::placement:exclusive\n",
            &[(3, "CLTAB_FENCE_TIMES")],
        ),
        (
            ":::lease_ttl:3\n:::fence_margin:0.1\nweb:a:1:respawn:x\nweb:::placement:exclusive\n",
            &[(4, "CLTAB_FENCE_TIMES")],
        ),
        (
            ":::lease_ttl:3\n:::fence_margin:1.4\nweb:a:1:respawn:x\nweb:::placement:exclusive\n",
            &[(4, "CLTAB_FENCE_TIMES")],
        ),
        (
            ":::lease_ttl:3\n:::fence_margin:1.3\nweb:a:1:respawn:x\nweb:::placement:exclusive\n",
            &[],
        ),
    ];
    for (text, want) in cases {
        let got: Vec<(usize, &str)> = match p(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.iter().map(|e| (e.line, e.kind.code())).collect(),
        };
        assert_eq!(got, *want, "{text:?}");
    }
    let tab =
        p("web:a:1:respawn:x\ndb:b:1:respawn:x\nweb:::placement:exclusive\nweb:::nodes:n2,n1\n")
            .unwrap();
    assert!(tab.is_exclusive("web") && !tab.is_exclusive("db"));
    assert_eq!(tab.group_opts("web").nodes, ["n2", "n1"]);
    assert!(tab.entries[0].opts.exclusive && !tab.entries[1].opts.exclusive);
    // Errors name the group.
    let e = p("web:a:1:respawn:x\nweb:::placement:sometimes\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("/etc/cltab:2: bad value 'sometimes' for option 'placement' of group 'web'"),
        "{e}"
    );
}

#[test]
fn fence_times_follow_the_rule() {
    use std::time::Duration as D;
    let ms = D::from_millis;
    // (ttl, margin, Ok((renew, stop_at, kill_at)) or Err)
    type Case = (D, Option<D>, Option<(D, D, D)>);
    let table: &[Case] = &[
        (ms(3000), None, Some((ms(1000), ms(1500), ms(2500)))),
        (ms(10000), None, Some((ms(3333), ms(5000), ms(8333)))),
        (ms(1000), None, Some((ms(333), ms(500), ms(800)))),
        (
            ms(3000),
            Some(ms(300)),
            Some((ms(1000), ms(1500), ms(2700))),
        ),
        (ms(999), None, None),
        (ms(3000), Some(ms(199)), None),
        (ms(3000), Some(ms(1301)), None),
    ];
    for (ttl, margin, want) in table {
        let got = FenceTimes::of(*ttl, *margin)
            .ok()
            .map(|t| (t.renew, t.stop_at, t.kill_at));
        // Whole milliseconds: TTL/3 and TTL/6 are not.
        let round = |d: D| ms((d.as_secs_f64() * 1000.0).round() as u64);
        assert_eq!(
            got.map(|(a, b, c)| (round(a), round(b), round(c))),
            *want,
            "{ttl:?} {margin:?}"
        );
    }
}

#[test]
fn a_file_that_is_not_utf8_is_refused_naming_line_and_byte() {
    let dir = tempfile::tempdir().unwrap();
    // (bytes, line, byte of the line)
    let table: &[(&[u8], usize, usize)] = &[
        (b"\xff", 1, 1),
        (b"web:a:1:once:true\nweb:b:1:once:ca\xc3fe\n", 2, 16),
        (b"# ok\n\n:::log:/tmp/\xe2\x82\n", 3, 13),
    ];
    for (bytes, line, byte) in table {
        let path = dir.path().join("cltab");
        std::fs::write(&path, bytes).unwrap();
        let e = Cltab::load(&path).unwrap_err();
        assert_eq!(e.errors.len(), 1);
        assert_eq!(e.errors[0].line, *line, "{bytes:?}");
        assert_eq!(
            e.errors[0].kind,
            ErrorKind::NotUtf8 { byte: *byte },
            "{bytes:?}"
        );
        assert!(e.to_string().ends_with("[CLTAB_NOT_UTF8]"), "{e}");
    }
    // A file over the bound is refused by its size, before it is read.
    let big = dir.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(super::MAX_CLTAB_BYTES + 1).unwrap();
    let e = Cltab::load(&big).unwrap_err();
    assert_eq!(
        e.errors[0].kind,
        ErrorKind::TooLarge {
            size: super::MAX_CLTAB_BYTES + 1
        }
    );
    assert!(e.to_string().ends_with("[CLTAB_TOO_LARGE]"), "{e}");
    assert!(e.to_string().contains(&big.display().to_string()), "{e}");
    std::fs::write(dir.path().join("ok"), "web:a:1:once:caf\u{e9}\n").unwrap();
    assert!(Cltab::load(&dir.path().join("ok")).is_ok());
}

/// An entry's log file `GROUP.TAG.log` must be one file name the system
/// takes (255 bytes): refused when the cltab is read, not when it starts.
#[test]
fn a_group_and_tag_too_long_for_one_log_file_name_are_refused() {
    // (group length, tag length, refused)
    let rows = [
        (125, 125, false),
        (125, 126, true),
        (255, 1, true),
        (1, 249, false),
    ];
    for (g, t, refused) in rows {
        let text = format!("{}:{}:1:once:true\n", "g".repeat(g), "t".repeat(t));
        match p(&text) {
            Ok(_) => assert!(!refused, "{g}+{t} accepted"),
            Err(e) => {
                assert!(refused, "{g}+{t}: {e}");
                assert_eq!(e.errors[0].kind.code(), "CLTAB_LOG_NAME_TOO_LONG", "{e}");
                assert!(
                    e.to_string().contains(&format!("{} bytes", g + t + 5)),
                    "{e}"
                );
            }
        }
    }
}

/// Under `logdir`, two entries whose `GROUP.TAG.log` is one file name are
/// refused, naming both lines; without `logdir` there is no such file.
#[test]
fn two_entries_sharing_a_log_file_under_logdir_are_refused() {
    let rows: &[(&str, Option<usize>)] = &[
        (
            ":::logdir:/l\na.b:c:1:once:true\na:b.c:1:once:true\n",
            Some(3),
        ),
        (
            "a.b:c:1:once:true\na:b.c:1:once:true\n:::logdir:/l\n",
            Some(2),
        ),
        ("a.b:c:1:once:true\na:b.c:1:once:true\n", None),
        (":::logdir:/l\na.b:c:1:once:true\na:d:1:once:true\n", None),
    ];
    for (text, refused_line) in rows {
        match (p(text), refused_line) {
            (Ok(_), None) => {}
            (Err(e), Some(line)) => {
                assert_eq!(e.errors.len(), 1, "{e}");
                assert_eq!(e.errors[0].kind.code(), "CLTAB_LOG_NAME_SHARED", "{e}");
                assert_eq!(e.errors[0].line, *line, "{e}");
                assert!(e.to_string().contains("a.b.c.log"), "{e}");
            }
            (r, want) => panic!("{text:?}: {r:?}, wanted refusal on {want:?}"),
        }
    }
}
