//! Table tests of the entry and group machines. Time is simulated: every
//! `now` is a base instant plus an offset, nothing sleeps.

use super::*;
use crate::cltab::{Entry, EntryOpts, Levels, Mode};
use crate::config::Timing;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn entry(group: &str, tag: &str, levels: &str, mode: Mode) -> Arc<Entry> {
    Arc::new(Entry {
        group: group.into(),
        tag: tag.into(),
        levels: Levels::new(levels),
        mode,
        command: format!("run-{tag}"),
        line: 1,
        opts: EntryOpts::default(),
    })
}

/// The exit of process `pid` with `status`.
fn exited(pid: i32, status: ExitStatus) -> ProcEvent {
    ProcEvent::Exited { pid, status }
}

fn timing() -> Timing {
    Timing::default()
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn kinds(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Spawn { spec, level } => format!("spawn {} @{level}", spec.tag),
            Action::Signal {
                tag, pid, signal, ..
            } => format!("signal {tag} {pid} {}", signal.as_str()),
            Action::ArmTimer { timer, .. } => match &timer.kind {
                TimerKind::Escalate { to, .. } => format!("timer {} escalate {:?}", timer.tag, to),
                TimerKind::Backoff { .. } => format!("timer {} backoff", timer.tag),
                TimerKind::Cron { .. } => format!("timer {} cron", timer.tag),
            },
            Action::SweepLeftovers { tag, .. } => format!("sweep {tag}"),
            Action::Log { level, .. } => format!("log {level:?}"),
            Action::Notify(n) => format!("notify {} goal {}", n.tag, n.goal),
        })
        .collect()
}

#[test]
fn entry_transitions() {
    let base = Instant::now();
    let ctx = Ctx {
        level: "1",
        unix: 1_000_000,
    };
    let running = |mode| Slot {
        spec: entry("g", "a", "1", mode),
        proc: Proc::Running {
            pid: 10,
            since: base,
        },
        stats: Stats::default(),
        ..Slot::new(entry("g", "a", "1", mode))
    };
    let with = |mode, proc| Slot {
        spec: entry("g", "a", "1", mode),
        proc,
        stats: Stats::default(),
        ..Slot::new(entry("g", "a", "1", mode))
    };
    let stopping = |phase| Proc::Stopping {
        pid: 10,
        since: base,
        phase,
    };
    // (from, event, expected state name, expected actions)
    let cases: Vec<(Slot, ProcEvent, &str, Vec<&str>)> = vec![
        (
            with(Mode::Once, Proc::Idle),
            ProcEvent::Start,
            "starting",
            vec!["spawn a @1"],
        ),
        (
            with(
                Mode::Once,
                Proc::Spawning {
                    stop_pending: false,
                },
            ),
            ProcEvent::Spawned { pid: 10 },
            "running",
            vec![],
        ),
        (
            with(
                Mode::Once,
                Proc::Spawning {
                    stop_pending: false,
                },
            ),
            ProcEvent::Stop,
            "starting",
            vec![],
        ),
        (
            with(Mode::Once, Proc::Spawning { stop_pending: true }),
            ProcEvent::Spawned { pid: 10 },
            "stopping",
            vec!["signal a 10 SIGINT", "timer a escalate Term"],
        ),
        (
            with(
                Mode::Once,
                Proc::Spawning {
                    stop_pending: false,
                },
            ),
            ProcEvent::SpawnFailed,
            "exited",
            vec![],
        ),
        (
            with(Mode::Once, Proc::Spawning { stop_pending: true }),
            ProcEvent::SpawnFailed,
            "idle",
            vec![],
        ),
        (
            running(Mode::Once),
            exited(10, ExitStatus::Code(0)),
            "exited",
            vec![],
        ),
        (
            running(Mode::Once),
            exited(11, ExitStatus::Code(0)),
            "running",
            vec![],
        ),
        (
            running(Mode::Respawn),
            exited(10, ExitStatus::Signal(9)),
            "starting",
            vec!["spawn a @1"],
        ),
        (
            running(Mode::Once),
            ProcEvent::Stop,
            "stopping",
            vec!["signal a 10 SIGINT", "timer a escalate Term"],
        ),
        (running(Mode::Once), ProcEvent::Start, "running", vec![]),
        (
            with(Mode::Once, stopping(StopPhase::First)),
            ProcEvent::Timer(TimerKind::Escalate {
                pid: 10,
                to: StopPhase::Term,
            }),
            "stopping",
            vec!["signal a 10 SIGTERM", "timer a escalate Kill", "log Warn"],
        ),
        (
            with(Mode::Once, stopping(StopPhase::Term)),
            ProcEvent::Timer(TimerKind::Escalate {
                pid: 10,
                to: StopPhase::Kill,
            }),
            "stopping",
            vec!["signal a 10 SIGKILL", "log Warn"],
        ),
        // Stale timers: wrong pid, wrong phase.
        (
            with(Mode::Once, stopping(StopPhase::First)),
            ProcEvent::Timer(TimerKind::Escalate {
                pid: 9,
                to: StopPhase::Term,
            }),
            "stopping",
            vec![],
        ),
        (
            with(Mode::Once, stopping(StopPhase::Term)),
            ProcEvent::Timer(TimerKind::Escalate {
                pid: 10,
                to: StopPhase::Term,
            }),
            "stopping",
            vec![],
        ),
        (
            with(Mode::Respawn, stopping(StopPhase::First)),
            exited(10, ExitStatus::Signal(2)),
            "idle",
            vec!["sweep a"],
        ),
        (
            with(
                Mode::Once,
                Proc::Exited {
                    status: ExitStatus::Code(0),
                    at: base,
                },
            ),
            ProcEvent::Start,
            "exited",
            vec![],
        ),
        (
            with(
                Mode::Once,
                Proc::Exited {
                    status: ExitStatus::Code(0),
                    at: base,
                },
            ),
            ProcEvent::Stop,
            "idle",
            vec!["sweep a"],
        ),
        (
            with(
                Mode::Respawn,
                Proc::Backoff {
                    until: at(base, 5),
                    status: ExitStatus::Code(1),
                },
            ),
            ProcEvent::Stop,
            "idle",
            vec![],
        ),
        (
            with(
                Mode::Respawn,
                Proc::Backoff {
                    until: at(base, 5),
                    status: ExitStatus::Code(1),
                },
            ),
            ProcEvent::Timer(TimerKind::Backoff { until: at(base, 5) }),
            "starting",
            vec!["log Info", "spawn a @1"],
        ),
        (
            with(
                Mode::Respawn,
                Proc::Backoff {
                    until: at(base, 5),
                    status: ExitStatus::Code(1),
                },
            ),
            ProcEvent::Timer(TimerKind::Backoff { until: at(base, 4) }),
            "throttled",
            vec![],
        ),
        (
            with(Mode::Once, Proc::Idle),
            ProcEvent::Stop,
            "idle",
            vec![],
        ),
    ];
    for (i, (slot, ev, want_state, want_actions)) in cases.into_iter().enumerate() {
        let (s, a) = step_proc(slot, ev.clone(), at(base, 100), &ctx);
        assert_eq!(s.proc.name(), want_state, "case {i}: {ev:?}");
        assert_eq!(kinds(&a), want_actions, "case {i}: {ev:?}");
    }
}

#[test]
fn respawn_backoff_table() {
    let t = timing(); // fast 1s, burst 5, delay 1s doubling to 60s, reset 10s
    let ms = Duration::from_millis;
    // (rapid before, run length, rapid after, delay)
    let cases = [
        (0, ms(100), 1, None),
        (4, ms(100), 5, None),
        (5, ms(100), 6, Some(ms(1000))),
        (6, ms(100), 7, Some(ms(2000))),
        (8, ms(100), 9, Some(ms(8000))),
        (11, ms(100), 12, Some(ms(60_000))),
        (40, ms(100), 41, Some(ms(60_000))),
        (7, ms(5000), 7, Some(ms(2000))), // neither rapid nor stable
        (7, ms(10_000), 0, None),         // a stable run resets
    ];
    for (before, ran, after, delay) in cases {
        assert_eq!(
            respawn_delay(before, ran, &t),
            (after, delay),
            "rapid {before} ran {ran:?}"
        );
    }
}

const UNIX: i64 = 1_000_000;

fn group(entries: &[(&str, &str, Mode)]) -> Group {
    Group::new(
        "g",
        entries.iter().map(|(tag, lv, m)| entry("g", tag, lv, *m)),
        &|_| false,
    )
}

fn tell(g: Group, level: &str, now: Instant) -> (Group, Vec<Action>) {
    g.step(
        GroupEvent::Tell {
            level: level.into(),
        },
        now,
        UNIX,
    )
}

fn ev(g: Group, tag: &str, e: ProcEvent, now: Instant) -> (Group, Vec<Action>) {
    g.step(
        GroupEvent::Proc {
            tag: tag.into(),
            ev: e,
        },
        now,
        UNIX,
    )
}

#[test]
fn group_starts_in_file_order_and_waits_for_foreground() {
    let b = Instant::now();
    let g = group(&[
        ("w", "1", Mode::Wait),
        ("r", "1", Mode::Respawn),
        ("o", "2", Mode::Once),
    ]);
    let (g, a) = tell(g, "1", b);
    assert_eq!(kinds(&a), ["spawn w @1"]);
    assert_eq!(g.state(), GroupState::Starting);
    let (g, a) = ev(g, "w", ProcEvent::Spawned { pid: 1 }, b);
    assert!(a.is_empty());
    let (g, a) = ev(g, "w", exited(1, ExitStatus::Code(0)), b);
    assert_eq!(kinds(&a), ["spawn r @1"]);
    assert_eq!(g.state(), GroupState::Starting);
    let (g, _) = ev(g, "r", ProcEvent::Spawned { pid: 2 }, b);
    assert_eq!(g.state(), GroupState::Done);
    assert_eq!(g.phase.level(), Some("1"));
}

#[test]
fn group_states_table() {
    let b = Instant::now();
    let code = |c| ExitStatus::Code(c);
    // (entries, exits of the foreground entries in order, final state)
    type Case<'a> = (Vec<(&'a str, &'a str, Mode)>, Vec<i32>, GroupState);
    let cases: Vec<Case> = vec![
        (vec![], vec![], GroupState::Done),
        (vec![("x", "2", Mode::Once)], vec![], GroupState::Done),
        (
            vec![("t1", "1", Mode::Test), ("t2", "1", Mode::Test)],
            vec![0, 0],
            GroupState::Passed,
        ),
        (
            vec![("t1", "1", Mode::Test), ("t2", "1", Mode::Test)],
            vec![0, 3],
            GroupState::Failed,
        ),
        (
            vec![("t1", "1", Mode::Test), ("w", "1", Mode::Wait)],
            vec![0, 0],
            GroupState::Done,
        ),
        (
            vec![("t1", "1", Mode::Test), ("w", "1", Mode::Wait)],
            vec![1, 0],
            GroupState::Failed,
        ),
        (vec![("w", "1", Mode::Wait)], vec![5], GroupState::Done),
        (vec![("off", "1", Mode::Off)], vec![], GroupState::Done),
    ];
    for (i, (entries, exits, want)) in cases.into_iter().enumerate() {
        let mut g = group(&entries);
        let (g2, _) = tell(g, "1", b);
        g = g2;
        for (pid, c) in (101..).zip(exits) {
            let tag = g
                .slots
                .iter()
                .find(|s| matches!(s.proc, Proc::Spawning { .. }))
                .map(|s| s.spec.tag.clone())
                .expect("a foreground entry is being started");
            let (g2, _) = ev(g, &tag, ProcEvent::Spawned { pid }, b);
            let (g2, _) = ev(g2, &tag, exited(pid, code(c)), b);
            g = g2;
        }
        assert_eq!(g.state(), want, "case {i}");
    }
}

#[test]
fn switching_levels_stops_others_first_and_keeps_shared_entries() {
    let b = Instant::now();
    let g = group(&[
        ("a", "12", Mode::Respawn),
        ("b", "1", Mode::Respawn),
        ("c", "2", Mode::Once),
        ("w", "12", Mode::Wait),
    ]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 1 }, b);
    let (g, _) = ev(g, "b", ProcEvent::Spawned { pid: 2 }, b);
    let (g, a) = ev(g, "w", ProcEvent::Spawned { pid: 3 }, b);
    assert!(a.is_empty());
    let (g, _) = ev(g, "w", exited(3, ExitStatus::Code(0)), b);
    assert_eq!(g.state(), GroupState::Done);

    // To level 2: b is stopped first; a keeps running; w already ran.
    let (g, a) = tell(g, "2", at(b, 10));
    assert_eq!(kinds(&a), ["signal b 2 SIGINT", "timer b escalate Term"]);
    assert_eq!(g.state(), GroupState::Stopping);
    let (g, a) = ev(g, "b", exited(2, ExitStatus::Signal(2)), at(b, 20));
    assert_eq!(kinds(&a), ["sweep b", "spawn c @2"]);
    let (g, _) = ev(g, "c", ProcEvent::Spawned { pid: 4 }, at(b, 20));
    assert_eq!(g.state(), GroupState::Done);
    assert_eq!(g.slots[0].proc, Proc::Running { pid: 1, since: b });
    assert!(matches!(g.slots[3].proc, Proc::Exited { .. }));

    // A tell may arrive in any state: to level 3 while nothing of it exists.
    let (g, a) = tell(g, "3", at(b, 30));
    assert_eq!(
        kinds(&a),
        [
            "signal a 1 SIGINT",
            "timer a escalate Term",
            "signal c 4 SIGINT",
            "timer c escalate Term",
            "sweep w"
        ]
    );
    assert_eq!(g.state(), GroupState::Stopping);
}

#[test]
fn tell_during_start_takes_over() {
    let b = Instant::now();
    let g = group(&[("w", "1", Mode::Wait), ("r", "1", Mode::Respawn)]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "w", ProcEvent::Spawned { pid: 7 }, b);
    let (g, a) = tell(g, "2", b);
    assert_eq!(kinds(&a), ["signal w 7 SIGINT", "timer w escalate Term"]);
    let (g, a) = ev(g, "w", exited(7, ExitStatus::Signal(2)), b);
    assert_eq!(kinds(&a), ["sweep w"]);
    assert_eq!(g.state(), GroupState::Done);
    assert_eq!(g.phase.level(), Some("2"));
}

#[test]
fn reread_retires_changed_entries_and_keeps_unchanged() {
    let b = Instant::now();
    let g = group(&[("a", "1", Mode::Respawn), ("b", "1", Mode::Respawn)]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 1 }, b);
    let (g, _) = ev(g, "b", ProcEvent::Spawned { pid: 2 }, b);
    let mut changed = (*entry("g", "b", "1", Mode::Respawn)).clone();
    changed.command = "new".into();
    let (g, a) = g.reconfigure(
        vec![entry("g", "a", "1", Mode::Respawn), Arc::new(changed)],
        b,
        UNIX,
        &|_| false,
    );
    // The changed entry is stopped; its new version waits until the old
    // one has stopped, so both never run at once.
    assert_eq!(kinds(&a), ["signal b 2 SIGINT", "timer b escalate Term"]);
    assert_eq!(g.retired.len(), 1);
    assert_eq!(g.slots[0].proc, Proc::Running { pid: 1, since: b });
    assert_eq!(g.slots[1].proc, Proc::Idle);
    assert_eq!(g.state(), GroupState::Starting);
    // The retired one's exit is routed by pid, it disappears, and the new
    // version starts.
    let (g, a) = ev(g, "b", exited(2, ExitStatus::Signal(2)), b);
    assert!(g.retired.is_empty());
    assert_eq!(kinds(&a), ["sweep b", "spawn b @1"]);
    let (g, _) = ev(g, "b", ProcEvent::Spawned { pid: 3 }, b);
    assert_eq!(g.state(), GroupState::Done);
}

#[test]
fn halt_stops_everything() {
    let b = Instant::now();
    let g = group(&[("a", "1", Mode::Respawn)]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 1 }, b);
    assert!(!g.is_quiet());
    let (g, a) = g.step(GroupEvent::Halt, b, UNIX);
    assert_eq!(kinds(&a), ["signal a 1 SIGINT", "timer a escalate Term"]);
    assert_eq!(g.state(), GroupState::Stopping);
    let (g, _) = ev(g, "a", exited(1, ExitStatus::Signal(2)), b);
    assert!(g.is_quiet());
}

fn with_opts(tag: &str, levels: &str, mode: Mode, f: impl FnOnce(&mut EntryOpts)) -> Arc<Entry> {
    let mut e = (*entry("g", tag, levels, mode)).clone();
    f(&mut e.opts);
    Arc::new(e)
}

fn notifier() -> crate::cltab::Notifier {
    crate::cltab::Notifier {
        command: "notify".into(),
        format: crate::cltab::NotifierFormat::Bos,
    }
}

#[test]
fn error_exits_as_bos_counts_them() {
    // (status, requested by clinit, error)
    let cases = [
        (ExitStatus::Code(0), false, false),
        (ExitStatus::Code(3), false, true),
        (ExitStatus::Code(3), true, false),
        (ExitStatus::Signal(libc::SIGTERM), false, false),
        (ExitStatus::Signal(libc::SIGQUIT), false, false),
        (ExitStatus::Signal(libc::SIGKILL), false, false),
        (ExitStatus::Signal(libc::SIGSEGV), false, true),
        (ExitStatus::Signal(libc::SIGINT), false, true),
        (ExitStatus::Signal(libc::SIGINT), true, false),
    ];
    for (st, requested, want) in cases {
        assert_eq!(st.is_error(requested), want, "{st:?} requested {requested}");
    }
}

#[test]
fn every_exit_updates_stats_and_notifies_once() {
    let b = Instant::now();
    let spec = with_opts("a", "1", Mode::Respawn, |o| o.notifier = Some(notifier()));
    let g = Group::new("g", [spec], &|_| false);
    let (g, _) = g.step(GroupEvent::Tell { level: "1".into() }, b, UNIX);
    let (g, _) = g.step(
        GroupEvent::Proc {
            tag: "a".into(),
            ev: ProcEvent::Spawned { pid: 5 },
        },
        b,
        UNIX,
    );
    // An error exit: notified with goal 1 and the window's count before the
    // restart; then restarted and the count goes up.
    let (g, a) = g.step(
        GroupEvent::Proc {
            tag: "a".into(),
            ev: exited(5, ExitStatus::Code(3)),
        },
        at(b, 5000),
        UNIX + 5,
    );
    assert_eq!(kinds(&a), ["notify a goal true", "spawn a @1"]);
    let Action::Notify(n) = &a[0] else { panic!() };
    assert_eq!(
        (n.pid, n.status, n.at, n.error),
        (5, ExitStatus::Code(3), UNIX + 5, true)
    );
    assert_eq!(n.stats.rs_time, UNIX + 5);
    assert_eq!(n.stats.rs_count, 0);
    assert_eq!(n.stats.last_error, Some((ExitStatus::Code(3), UNIX + 5)));
    assert_eq!(n.stats.last_start, Some(UNIX));
    assert_eq!(g.slots[0].stats.rs_count, 1);
    // A stop clinit asked for: not an error, goal 0, the last error kept.
    let (g, _) = g.step(
        GroupEvent::Proc {
            tag: "a".into(),
            ev: ProcEvent::Spawned { pid: 6 },
        },
        at(b, 5000),
        UNIX + 5,
    );
    let (g, _) = g.step(
        GroupEvent::Control {
            tag: "a".into(),
            op: Control::Stop { temporary: false },
        },
        at(b, 6000),
        UNIX + 6,
    );
    let (g, a) = g.step(
        GroupEvent::Proc {
            tag: "a".into(),
            ev: exited(6, ExitStatus::Signal(2)),
        },
        at(b, 7000),
        UNIX + 7,
    );
    assert_eq!(kinds(&a), ["notify a goal false", "sweep a"]);
    let Action::Notify(n) = &a[0] else { panic!() };
    assert!(!n.error);
    assert_eq!(n.stats.last_error, Some((ExitStatus::Code(3), UNIX + 5)));
    assert_eq!(n.stats.rs_count, 1);
    assert_eq!(g.slots[0].proc, Proc::Idle);
    // A window older than 60 s starts anew at the next exit.
    let mut slot = g.slots[0].clone();
    slot.proc = Proc::Running { pid: 7, since: b };
    let ctx = Ctx {
        level: "1",
        unix: UNIX + 100,
    };
    let (slot, _) = step_proc(slot, exited(7, ExitStatus::Code(0)), at(b, 100_000), &ctx);
    // The window restarted at this exit; the restart it causes is its first.
    assert_eq!((slot.stats.rs_time, slot.stats.rs_count), (UNIX + 100, 1));
}

#[test]
fn operator_stop_start_and_restart() {
    let b = Instant::now();
    let ctl = |g: Group, op| {
        g.step(
            GroupEvent::Control {
                tag: "a".into(),
                op,
            },
            b,
            UNIX,
        )
    };
    let g = group(&[("a", "1", Mode::Respawn), ("w", "1", Mode::Wait)]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 1 }, b);
    // (op, enable after, actions)
    let (g, a) = ctl(g, Control::Stop { temporary: true });
    assert_eq!(kinds(&a), ["signal a 1 SIGINT", "timer a escalate Term"]);
    assert_eq!(g.slots[0].enable.describe(), Some("temporarily disabled"));
    let (g, _) = ev(g, "a", exited(1, ExitStatus::Signal(2)), b);
    assert_eq!(g.slots[0].proc, Proc::Idle);
    // A level switch does not start a disabled entry.
    let (g, a) = tell(g, "1", b);
    assert!(kinds(&a).iter().all(|k| !k.contains("spawn a")), "{a:?}");
    let (g, _) = ctl(g, Control::Stop { temporary: false });
    assert_eq!(g.slots[0].enable.describe(), Some("disabled"));
    let (g, a) = ctl(g, Control::Start { temporary: true });
    assert_eq!(g.slots[0].enable.describe(), Some("temporarily enabled"));
    assert_eq!(kinds(&a), ["spawn a @1"]);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 2 }, b);
    let (g, a) = ctl(g, Control::Start { temporary: false });
    assert_eq!(g.slots[0].enable.describe(), None);
    assert!(a.is_empty(), "start of a running entry does nothing");
    // Restart: stop, then start again as soon as it has exited.
    let (g, a) = ctl(g, Control::Restart);
    assert_eq!(kinds(&a), ["signal a 2 SIGINT", "timer a escalate Term"]);
    let (g, a) = ev(g, "a", exited(2, ExitStatus::Signal(2)), b);
    assert_eq!(kinds(&a), ["sweep a", "spawn a @1"]);
    assert!(matches!(g.slots[0].proc, Proc::Spawning { .. }));
    // A disabled entry in the start sequence no longer holds it up.
    let g = group(&[("a", "1", Mode::Wait), ("b", "1", Mode::Respawn)]);
    let (g, _) = tell(g, "1", b);
    let (g, _) = ev(g, "a", ProcEvent::Spawned { pid: 3 }, b);
    let (g, a) = ctl(g, Control::Stop { temporary: true });
    assert_eq!(
        kinds(&a),
        ["signal a 3 SIGINT", "timer a escalate Term", "spawn b @1"]
    );
    let (g, a) = ev(g, "a", exited(3, ExitStatus::Signal(2)), b);
    assert_eq!(kinds(&a), ["sweep a"]);
    let (g, _) = ev(g, "b", ProcEvent::Spawned { pid: 4 }, b);
    assert_eq!(g.state(), GroupState::Done);
}

#[test]
fn give_up_after_too_many_rapid_restarts_until_started() {
    let b = Instant::now();
    let spec = with_opts("a", "1", Mode::Respawn, |o| {
        o.timing.respawn.give_up = Some(2);
        o.timing.respawn.burst = 10;
    });
    let g = Group::new("g", [spec], &|_| false);
    let (mut g, _) = g.step(GroupEvent::Tell { level: "1".into() }, b, UNIX);
    let mut last = Vec::new();
    for pid in 1..=3 {
        let (g2, _) = ev(g, "a", ProcEvent::Spawned { pid }, b);
        let (g2, a) = ev(
            g2,
            "a",
            ProcEvent::Exited {
                pid,
                status: ExitStatus::Code(1),
            },
            at(b, 10),
        );
        g = g2;
        last = kinds(&a);
    }
    assert_eq!(last, ["log Warn"]);
    assert_eq!(
        g.slots[0].proc,
        Proc::GaveUp {
            status: ExitStatus::Code(1)
        }
    );
    assert_eq!(g.slots[0].stats.starts, 3);
    let (g, a) = g.step(
        GroupEvent::Control {
            tag: "a".into(),
            op: Control::Start { temporary: false },
        },
        b,
        UNIX,
    );
    assert_eq!(kinds(&a), ["spawn a @1"]);
    assert_eq!(g.slots[0].stats.rapid, 0);
}

#[test]
fn cron_entries_wait_for_their_time_and_never_overlap() {
    let b = Instant::now();
    let every5 = crate::schedule::Schedule::parse("*/5 * * * *").unwrap();
    let spec = with_opts("c", "1", Mode::Cron, |o| o.schedule = Some(every5.clone()));
    let g = Group::new("g", [spec], &|_| false);
    // UNIX is 100 s past a five-minute mark: the next run is in 200 s.
    let (g, a) = g.step(GroupEvent::Tell { level: "1".into() }, b, UNIX);
    assert_eq!(kinds(&a), ["timer c cron"]);
    assert_eq!(g.slots[0].proc, Proc::Scheduled);
    assert_eq!(
        g.state(),
        GroupState::Done,
        "a cron entry does not hold up the level"
    );
    let first = g.slots[0].next_run.unwrap();
    assert_eq!((first.unix, first.at), (UNIX + 200, at(b, 200_000)));
    // A stale timer does nothing; the due one spawns and schedules the next.
    let (g, a) = ev(g, "c", ProcEvent::Timer(TimerKind::Cron { at: b }), b);
    assert!(a.is_empty());
    let (g, a) = g.step(
        GroupEvent::Proc {
            tag: "c".into(),
            ev: ProcEvent::Timer(TimerKind::Cron { at: first.at }),
        },
        first.at,
        first.unix,
    );
    assert_eq!(kinds(&a), ["timer c cron", "spawn c @1"]);
    let second = g.slots[0].next_run.unwrap();
    assert_eq!(second.unix, UNIX + 500);
    let (g, _) = g.step(
        GroupEvent::Proc {
            tag: "c".into(),
            ev: ProcEvent::Spawned { pid: 9 },
        },
        first.at,
        first.unix,
    );
    // Still running at the next time: not started twice, logged, and the
    // schedule goes on.
    let (g, a) = g.step(
        GroupEvent::Proc {
            tag: "c".into(),
            ev: ProcEvent::Timer(TimerKind::Cron { at: second.at }),
        },
        second.at,
        second.unix,
    );
    assert_eq!(kinds(&a), ["timer c cron", "log Warn"]);
    assert_eq!(g.slots[0].proc.pid(), Some(9));
    // A failed run is not restarted: back to waiting.
    let (g, a) = g.step(
        GroupEvent::Proc {
            tag: "c".into(),
            ev: exited(9, ExitStatus::Code(2)),
        },
        second.at,
        second.unix,
    );
    assert!(a.is_empty(), "{a:?}");
    assert_eq!(g.slots[0].proc, Proc::Scheduled);
    assert_eq!(
        g.slots[0].stats.last_error.map(|e| e.0),
        Some(ExitStatus::Code(2))
    );
    // Leaving the level forgets the schedule.
    let (g, _) = tell(g, "2", second.at);
    assert_eq!(
        (g.slots[0].proc.clone(), g.slots[0].next_run),
        (Proc::Idle, None)
    );

    // `now` runs at once, once.
    let now = crate::schedule::Schedule::parse("now").unwrap();
    let spec = with_opts("n", "1", Mode::Cron, |o| o.schedule = Some(now));
    let g = Group::new("g", [spec], &|_| false);
    let (g, a) = g.step(GroupEvent::Tell { level: "1".into() }, b, UNIX);
    assert_eq!(kinds(&a), ["spawn n @1"]);
    let (g, _) = ev(g, "n", ProcEvent::Spawned { pid: 3 }, b);
    let (g, a) = ev(g, "n", exited(3, ExitStatus::Code(0)), b);
    assert!(a.is_empty());
    assert!(matches!(g.slots[0].proc, Proc::Exited { .. }));
}
