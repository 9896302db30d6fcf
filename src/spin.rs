//! Busy-waiting for the next message before sleeping, on both ends of a
//! connection: a client waiting for its reply, and the daemon's connection
//! task waiting for the next request after it has answered one.
//!
//! Most of a request's round trip on a multi-core machine is the kernel
//! waking the sleeping side on another CPU (measured on the 2-core
//! development VM: a raw UNIX-socket round trip is 4.5 µs with both ends on
//! one CPU, and across CPUs 9-16 µs, moving with the machine's load). A
//! side that is still polling when the message arrives is not woken: the
//! message finds it running. So each side polls its socket without
//! blocking for up to [`budget`] before it sleeps.
//!
//! The client yields its CPU (`sched_yield`) between polls, so a runnable
//! daemon or client on the same CPU goes first (without it, 8 clients on 2
//! CPUs lost 20-30% of their rate). The daemon yields only to its own
//! runtime, which serves its other connections in between; one connection
//! spins at a time, and never longer than [`DAEMON_MAX`]. A spin that
//! finds nothing makes that side sleep at once for the next 1, 2, 4 ... up
//! to [`BACKOFF_MAX`] waits ([`Backoff`]), so a lock that waits long, an
//! idle connection or a loaded machine costs little. The measurements are
//! in docs/architecture.md.

use std::io::Write;
use std::time::Duration;

/// The spin budget when `CLINIT_SPIN_US` is unset.
pub const DEFAULT: Duration = Duration::from_micros(30);

/// The longest the daemon spins for a connection's next request, whatever
/// `CLINIT_SPIN_US` says: a lock daemon started on demand inherits the
/// variable from whichever `clinit lock` started it, and a long spin would
/// keep a CPU busy for every quiet connection.
pub const DAEMON_MAX: Duration = Duration::from_millis(1);

/// The most waits without spinning after a spin that found nothing.
pub const BACKOFF_MAX: u32 = 64;

/// This process's spin budget: `CLINIT_SPIN_US` (whole microseconds; 0
/// never spins) or [`DEFAULT`], and zero when this process may use only
/// one CPU (the other side could not run while this one spins). A value
/// that is not a number is reported on stderr once and the default used.
pub fn budget() -> Duration {
    static BUDGET: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *BUDGET.get_or_init(|| {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return Duration::ZERO;
        }
        let Some(v) = std::env::var_os("CLINIT_SPIN_US") else {
            return DEFAULT;
        };
        parse_us(&v).unwrap_or_else(|| {
            // Not eprintln!: it panics when standard error fails.
            let _ = writeln!(
                std::io::stderr(),
                "clinit: ignoring CLINIT_SPIN_US={v:?}: not a number of microseconds from 0 to {}; spinning up to {} us",
                u64::MAX,
                DEFAULT.as_micros()
            );
            DEFAULT
        })
    })
}

/// A `CLINIT_SPIN_US` value: whole microseconds, surrounding blanks
/// allowed; `None` when it is not one.
fn parse_us(v: &std::ffi::OsStr) -> Option<Duration> {
    v.to_str()?.trim().parse().ok().map(Duration::from_micros)
}

/// When to spin: after a spin that found nothing, skip spinning for the
/// next 1, 2, 4 ... [`BACKOFF_MAX`] waits; a spin that finds its message
/// resets that. One per connection end.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    budget: Duration,
    /// Waits left without spinning.
    skip: u32,
    /// What `skip` was last set to after a failed spin (0 after a success).
    backoff: u32,
}

impl Backoff {
    pub fn new(budget: Duration) -> Backoff {
        Backoff {
            budget,
            skip: 0,
            backoff: 0,
        }
    }

    /// As after `misses` spins in a row that found nothing, with the skips
    /// they caused already used up (for tests).
    #[cfg(test)]
    pub(crate) fn after_misses(budget: Duration, misses: u32) -> Backoff {
        let mut b = Backoff::new(budget);
        for _ in 0..misses {
            b.record(false);
            b.skip = 0;
        }
        b
    }

    /// How long one spin may last.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether to spin for this wait (counts a skipped one).
    pub fn try_now(&mut self) -> bool {
        if self.budget.is_zero() {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// What the spin found: a message (`true`) or none within the budget.
    pub fn record(&mut self, arrived: bool) {
        if arrived {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, BACKOFF_MAX);
            self.skip = self.backoff;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: the outcomes of the spins made so far (in order), then
    /// whether the next `try_now` calls spin.
    #[test]
    fn spin_backs_off_after_a_spin_that_found_nothing() {
        let us = Duration::from_micros(30);
        let rows: &[(&str, Duration, &[bool], &[bool])] = &[
            (
                "no budget never spins",
                Duration::ZERO,
                &[],
                &[false, false],
            ),
            ("a fresh end spins", us, &[], &[true, true]),
            ("after a success it spins again", us, &[true], &[true]),
            ("one miss skips one wait", us, &[false], &[false, true]),
            (
                "two misses skip two",
                us,
                &[false, false],
                &[false, false, true],
            ),
            (
                "a success resets the backoff",
                us,
                &[false, false, true, false],
                &[false, true],
            ),
        ];
        for (what, budget, outcomes, expect) in rows {
            let mut s = Backoff::new(*budget);
            for &arrived in *outcomes {
                // Spins only happen when try_now allows them: skip past
                // the waits that sleep.
                while !s.try_now() {}
                s.record(arrived);
            }
            let got: Vec<bool> = expect.iter().map(|_| s.try_now()).collect();
            assert_eq!(&got, expect, "{what}");
        }
    }

    #[test]
    fn spin_backoff_is_bounded() {
        let mut s = Backoff::new(Duration::from_micros(30));
        for _ in 0..20 {
            while !s.try_now() {}
            s.record(false);
        }
        let skipped = (0..1000).take_while(|_| !s.try_now()).count();
        assert_eq!(skipped, BACKOFF_MAX as usize);
        // after_misses gives the same state with the skips used up.
        let mut s = Backoff::after_misses(Duration::from_micros(30), 3);
        assert!(s.try_now());
        s.record(false);
        assert_eq!((0..100).take_while(|_| !s.try_now()).count(), 8);
    }

    #[test]
    fn spin_budget_from_the_environment() {
        use std::ffi::OsStr;
        let us = Duration::from_micros;
        let rows: &[(&str, Option<Duration>)] = &[
            ("30", Some(us(30))),
            (" 0 ", Some(Duration::ZERO)),
            ("18446744073709551615", Some(us(u64::MAX))),
            ("18446744073709551616", None),
            ("-1", None),
            ("2.5", None),
            ("30us", None),
            ("", None),
        ];
        for (v, want) in rows {
            assert_eq!(parse_us(OsStr::new(v)), *want, "{v:?}");
        }
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(parse_us(OsStr::from_bytes(b"3\xff")), None);
    }
}
