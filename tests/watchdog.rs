//! The fencing watchdog process (`clinit watchdog`) on its own: it kills
//! an armed group at its deadline (also after its input ended: the daemon
//! died), not a disarmed or re-armed one, and feeds a watchdog device while
//! armed, closing it with the magic 'V' after.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn watchdog(device: Option<&std::path::Path>) -> Child {
    let mut c = Command::new(bin());
    c.arg("watchdog");
    if let Some(d) = device {
        c.arg("--device").arg(d);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A process in a process group of its own.
fn victim() -> Child {
    Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap()
}

fn say(w: &mut Child, line: &str) {
    let stdin = w.stdin.as_mut().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
}

#[test]
fn an_armed_group_is_killed_at_its_deadline_even_after_the_daemon_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let dev = dir.path().join("dev");
    std::fs::write(&dev, "").unwrap();
    let mut w = watchdog(Some(&dev));
    let mut a = victim();
    let mut b = victim();
    let mut c = victim();
    let far = mono_ns() + 3_600_000_000_000;
    // a: armed for 0.3 s, then the daemon is gone.
    say(&mut w, &format!("pgid a {}", a.id()));
    say(&mut w, &format!("arm a {}", mono_ns() + 300_000_000));
    // b: armed, then disarmed. c: armed far away.
    say(&mut w, &format!("pgid b {}", b.id()));
    say(&mut w, &format!("arm b {}", mono_ns() + 300_000_000));
    say(&mut w, "disarm b");
    say(&mut w, &format!("pgid c {}", c.id()));
    say(&mut w, &format!("arm c {far}"));
    let a_status = wait_exit(&mut a, "a killed at its deadline");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&a_status),
        Some(9)
    );
    assert!(
        try_wait_for(&mut b, Duration::from_millis(200)).is_none(),
        "b was disarmed"
    );
    // The device was fed while armed.
    assert!(std::fs::read(&dev).unwrap().contains(&0u8));
    // Re-armed to now: c goes too; the input ends; with nothing armed the
    // watchdog closes the device with 'V' and exits.
    say(&mut w, &format!("arm c {}", mono_ns() + 100_000_000));
    drop(w.stdin.take());
    wait_exit(&mut c, "c killed at its new deadline");
    let st = wait_exit(&mut w, "the watchdog exits with nothing armed and no input");
    assert!(st.success());
    assert_eq!(std::fs::read(&dev).unwrap().last(), Some(&b'V'));
    let _ = b.kill();
    let _ = b.wait();
}

#[test]
fn a_watchdog_whose_input_ends_waits_for_the_deadline_before_killing() {
    let mut w = watchdog(None);
    let mut a = victim();
    say(&mut w, &format!("pgid a {}", a.id()));
    say(&mut w, &format!("arm a {}", mono_ns() + 1_000_000_000));
    drop(w.stdin.take());
    // Not before the deadline.
    assert!(try_wait_for(&mut a, Duration::from_millis(500)).is_none());
    wait_exit(&mut a, "a killed at its deadline");
    assert!(wait_exit(&mut w, "the watchdog exits").success());
    let mut err = String::new();
    std::io::Read::read_to_string(w.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("group a: not fed before its deadline"),
        "{err}"
    );
}

#[test]
fn a_process_told_after_the_deadline_is_killed_at_once_until_armed_again() {
    let mut w = watchdog(None);
    let deadline = mono_ns() + 50_000_000;
    say(&mut w, &format!("arm a {deadline}"));
    let mut late = victim();
    // Past the deadline (the watchdog fires, with nothing to kill), a
    // process told of the group dies at once (the clock is waited for,
    // not the watchdog).
    while mono_ns() <= deadline {
        std::thread::yield_now();
    }
    say(&mut w, &format!("pgid a {}", late.id()));
    wait_exit(&mut late, "a late process killed on arrival");
    // Armed again: a process told of it waits for the new deadline.
    let mut next = victim();
    say(&mut w, &format!("arm a {}", mono_ns() + 3_600_000_000_000));
    say(&mut w, &format!("pgid a {}", next.id()));
    say(&mut w, "disarm a");
    drop(w.stdin.take());
    assert!(wait_exit(&mut w, "the watchdog exits").success());
    assert!(
        next.try_wait().unwrap().is_none(),
        "killed though armed anew"
    );
    let _ = next.kill();
    let _ = next.wait();
}
