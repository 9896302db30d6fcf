//! CPU time and resident memory of process trees, from /proc: what
//! `clinit survey` shows for each running entry (its process and every
//! descendant still attached to it).

use std::collections::HashMap;

/// One process as /proc/PID/stat says.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stat {
    ppid: i32,
    /// utime + stime, clock ticks.
    ticks: u64,
    /// Resident pages.
    rss: u64,
}

/// Parse the fields of /proc/PID/stat that matter (the command name, in
/// parentheses, may hold spaces and parentheses: fields are counted after
/// its last `)`).
fn parse_stat(text: &str) -> Option<(i32, Stat)> {
    let pid = text.split_whitespace().next()?.parse().ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12) ... rss(21).
    Some((
        pid,
        Stat {
            ppid: f.get(1)?.parse().ok()?,
            ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
            rss: f.get(21)?.parse().ok()?,
        },
    ))
}

fn tree_sums(procs: &HashMap<i32, Stat>, roots: &[i32]) -> HashMap<i32, (u64, u64)> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, s) in procs {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut out = HashMap::new();
    for &root in roots {
        let Some(first) = procs.get(&root) else {
            continue;
        };
        let (mut ticks, mut rss) = (first.ticks, first.rss);
        let mut todo: Vec<i32> = children.get(&root).cloned().unwrap_or_default();
        while let Some(p) = todo.pop() {
            if let Some(s) = procs.get(&p) {
                ticks += s.ticks;
                rss += s.rss;
            }
            if let Some(c) = children.get(&p) {
                todo.extend(c);
            }
        }
        out.insert(root, (ticks, rss));
    }
    out
}

/// CPU seconds and RSS (KiB) of the trees under each of `roots`.
pub fn of_trees(roots: &[i32]) -> HashMap<i32, (f64, u64)> {
    if roots.is_empty() {
        return HashMap::new();
    }
    let mut procs = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{n}/stat"))
                && let Some((pid, s)) = parse_stat(&text)
            {
                procs.insert(pid, s);
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    tree_sums(&procs, roots)
        .into_iter()
        .map(|(pid, (ticks, rss))| (pid, (ticks as f64 / tick, rss * page / 1024)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_past_odd_command_names() {
        let rows: &[(&str, Option<(i32, Stat)>)] = &[
            (
                "42 (sh) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 250 18446744073709551615",
                Some((
                    42,
                    Stat {
                        ppid: 1,
                        ticks: 10,
                        rss: 250,
                    },
                )),
            ),
            (
                "7 (a) b) (c) R 5 7 7 0 -1 0 0 0 0 0 1 1 0 0 20 0 1 0 9 9 3 0",
                Some((
                    7,
                    Stat {
                        ppid: 5,
                        ticks: 2,
                        rss: 3,
                    },
                )),
            ),
            ("garbage", None),
        ];
        for (text, want) in rows {
            assert_eq!(parse_stat(text), *want, "{text}");
        }
    }

    #[test]
    fn a_tree_sums_its_descendants_only() {
        let s = |ppid, ticks, rss| Stat { ppid, ticks, rss };
        let procs: HashMap<i32, Stat> = [
            (10, s(1, 5, 100)),
            (11, s(10, 2, 10)),
            (12, s(11, 1, 1)),
            (20, s(1, 9, 9)),
        ]
        .into_iter()
        .collect();
        let got = tree_sums(&procs, &[10, 20, 99]);
        assert_eq!(got.get(&10), Some(&(8, 111)));
        assert_eq!(got.get(&20), Some(&(9, 9)));
        assert_eq!(got.get(&99), None);
    }

    #[test]
    fn this_process_has_a_size() {
        let me = std::process::id() as i32;
        let got = of_trees(&[me]);
        assert!(got.get(&me).is_some_and(|(_, rss)| *rss > 0));
    }
}
