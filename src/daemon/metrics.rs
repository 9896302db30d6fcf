//! What `/metrics` says, in the Prometheus text format (version 0.0.4):
//! counters the connection layer keeps (requests and their latency by
//! kind, lock grants and waits, the event loop's lag), and gauges read at
//! scrape time from the supervisor, the lock service, the record store
//! and /proc/self.
//!
//! Counting costs an atomic check when the HTTP listener is off
//! ([`Metrics::enabled`]), and a short mutex when it is on.

use crate::lock::ContainerStatus;
use crate::supervisor::Supervisor;
use crate::supervisor::machine::{ExitStatus, GroupState, Proc};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
];

/// A latency histogram.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Counts per bucket of [`BUCKETS`] (not cumulative), then +Inf.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counting is on (the HTTP listener serves `/metrics`).
    pub enabled: AtomicBool,
    requests: Mutex<BTreeMap<&'static str, Histogram>>,
    lock_waits: Mutex<Histogram>,
    pub lock_grants: AtomicU64,
    /// The event loop's last and largest lag, microseconds.
    pub lag_us: AtomicU64,
    pub lag_max_us: AtomicU64,
}

impl Metrics {
    pub fn on(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// A request of kind `handler` took `d`.
    pub fn request(&self, handler: &'static str, d: Duration) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(handler)
            .or_default()
            .observe(d);
    }

    /// A lock was granted `waited` after it was asked for (`None`: at
    /// once).
    pub fn granted(&self, waited: Option<Duration>) {
        self.lock_grants.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = waited {
            self.lock_waits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .observe(w);
        }
    }

    /// The event loop woke `lag` late.
    pub fn lag(&self, lag: Duration) {
        let us = lag.as_micros() as u64;
        self.lag_us.store(us, Ordering::Relaxed);
        self.lag_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// The daemon process's own figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessStats {
    pub rss_bytes: u64,
    pub fds: u64,
    pub cpu_seconds: f64,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        // SAFETY: as above.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let rss = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * page;
        let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| {
                let rest = &t[t.rfind(')')? + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / tick)
            })
            .unwrap_or(0.0);
        ProcessStats {
            rss_bytes: rss,
            fds,
            cpu_seconds,
        }
    }
}

/// A label value, escaped as the text format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The exit code an exit shows as (a signal N as 128+N, as a shell says).
fn exit_code(st: ExitStatus) -> i64 {
    match st {
        ExitStatus::Code(c) => i64::from(c),
        ExitStatus::Signal(s) => 128 + i64::from(s),
    }
}

/// Everything `/metrics` says.
pub fn render(
    sup: &Supervisor,
    locks: &[ContainerStatus],
    handovers: &Histogram,
    records: &[(String, u64, u64)],
    m: &Metrics,
    me: ProcessStats,
    uptime: f64,
) -> String {
    let mut out = String::with_capacity(256 + 600 * sup.groups().len());
    // Entries.
    let entries: Vec<(String, &crate::supervisor::machine::Slot)> = sup
        .groups()
        .iter()
        .flat_map(|g| {
            let name = label(&g.name);
            g.slots.iter().map(move |s| (name.clone(), s))
        })
        .collect();
    let series = |out: &mut String,
                  name: &str,
                  kind: &str,
                  text: &str,
                  v: &dyn Fn(&crate::supervisor::machine::Slot) -> Option<f64>| {
        help(out, name, kind, text);
        for (g, s) in &entries {
            if let Some(x) = v(s) {
                let _ = writeln!(
                    out,
                    "{name}{{group=\"{g}\",tag=\"{}\"}} {x}",
                    label(&s.spec.tag)
                );
            }
        }
    };
    series(
        &mut out,
        "clinit_entry_up",
        "gauge",
        "1 when the entry's process runs",
        &|s| {
            Some(if matches!(s.proc, Proc::Running { .. }) {
                1.0
            } else {
                0.0
            })
        },
    );
    series(
        &mut out,
        "clinit_entry_starts_total",
        "counter",
        "starts of the entry's process",
        &|s| Some(f64::from(s.stats.starts)),
    );
    series(
        &mut out,
        "clinit_entry_restarts_total",
        "counter",
        "restarts after an exit nobody asked for",
        &|s| Some(f64::from(s.stats.restarts)),
    );
    series(
        &mut out,
        "clinit_entry_last_exit_code",
        "gauge",
        "the last exit's code (128+N for signal N)",
        &|s| s.stats.last_exit.map(|(st, _)| exit_code(st) as f64),
    );
    series(
        &mut out,
        "clinit_entry_throttled",
        "gauge",
        "1 while a respawn waits out its throttle delay",
        &|s| {
            Some(if matches!(s.proc, Proc::Backoff { .. }) {
                1.0
            } else {
                0.0
            })
        },
    );
    series(
        &mut out,
        "clinit_entry_gave_up",
        "gauge",
        "1 when it stopped for too many errors",
        &|s| {
            Some(if matches!(s.proc, Proc::GaveUp { .. }) {
                1.0
            } else {
                0.0
            })
        },
    );
    // Groups.
    help(
        &mut out,
        "clinit_group_level",
        "gauge",
        "1 for the level the group is at or going to",
    );
    for g in sup.groups() {
        if let Some(l) = g.phase.level() {
            let _ = writeln!(
                out,
                "clinit_group_level{{group=\"{}\",level=\"{}\"}} 1",
                label(&g.name),
                label(l)
            );
        }
    }
    help(
        &mut out,
        "clinit_group_state",
        "gauge",
        "1 for the group's state",
    );
    for g in sup.groups() {
        let st: GroupState = g.state();
        let _ = writeln!(
            out,
            "clinit_group_state{{group=\"{}\",state=\"{}\"}} 1",
            label(&g.name),
            st.as_str()
        );
    }
    // Locks.
    help(
        &mut out,
        "clinit_locks_held",
        "gauge",
        "locks that have holders",
    );
    let _ = writeln!(
        out,
        "clinit_locks_held {}",
        locks.iter().filter(|c| !c.holders.is_empty()).count()
    );
    help(
        &mut out,
        "clinit_lock_holders",
        "gauge",
        "grants held, over all locks",
    );
    let _ = writeln!(
        out,
        "clinit_lock_holders {}",
        locks.iter().map(|c| c.holders.len()).sum::<usize>()
    );
    help(
        &mut out,
        "clinit_lock_waiters",
        "gauge",
        "requests waiting, over all locks",
    );
    let _ = writeln!(
        out,
        "clinit_lock_waiters {}",
        locks.iter().map(|c| c.waiters.len()).sum::<usize>()
    );
    help(
        &mut out,
        "clinit_lock_grants_total",
        "counter",
        "locks granted since the daemon started",
    );
    let _ = writeln!(
        out,
        "clinit_lock_grants_total {}",
        m.lock_grants.load(Ordering::Relaxed)
    );
    help(
        &mut out,
        "clinit_lock_wait_seconds",
        "histogram",
        "how long a lock request that had to wait waited until its grant (for a contended lock: the holder's time plus the hand-over)",
    );
    m.lock_waits
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .write(&mut out, "clinit_lock_wait_seconds", "");
    help(
        &mut out,
        "clinit_lock_handover_seconds",
        "histogram",
        "for a lock a waiter got because a holder let go (release, connection closed, lease expired): from the daemon handling that to the waiter's grant passed to its connection",
    );
    handovers.write(&mut out, "clinit_lock_handover_seconds", "");
    // Records.
    help(&mut out, "clinit_records", "gauge", "records per container");
    for (c, n, _) in records {
        let _ = writeln!(out, "clinit_records{{container=\"{}\"}} {n}", label(c));
    }
    help(
        &mut out,
        "clinit_record_bytes",
        "gauge",
        "bytes of values per container",
    );
    for (c, _, b) in records {
        let _ = writeln!(out, "clinit_record_bytes{{container=\"{}\"}} {b}", label(c));
    }
    // Requests.
    help(
        &mut out,
        "clinit_request_seconds",
        "histogram",
        "requests by kind (handler) and how long each took, from its last byte read to its reply written",
    );
    for (h, hist) in m
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        hist.write(&mut out, "clinit_request_seconds", &format!("kind=\"{h}\""));
    }
    // The daemon itself.
    help(
        &mut out,
        "clinit_process_resident_memory_bytes",
        "gauge",
        "the daemon's resident memory",
    );
    let _ = writeln!(out, "clinit_process_resident_memory_bytes {}", me.rss_bytes);
    help(
        &mut out,
        "clinit_process_open_fds",
        "gauge",
        "the daemon's open file descriptors",
    );
    let _ = writeln!(out, "clinit_process_open_fds {}", me.fds);
    help(
        &mut out,
        "clinit_process_cpu_seconds_total",
        "counter",
        "the daemon's CPU time",
    );
    let _ = writeln!(out, "clinit_process_cpu_seconds_total {}", me.cpu_seconds);
    help(
        &mut out,
        "clinit_uptime_seconds",
        "gauge",
        "seconds since the daemon started",
    );
    let _ = writeln!(out, "clinit_uptime_seconds {uptime}");
    help(
        &mut out,
        "clinit_event_loop_lag_seconds",
        "gauge",
        "how late the event loop's last probe (every second) woke",
    );
    let _ = writeln!(
        out,
        "clinit_event_loop_lag_seconds {}",
        m.lag_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    help(
        &mut out,
        "clinit_event_loop_lag_max_seconds",
        "gauge",
        "the largest lag seen since the daemon started",
    );
    let _ = writeln!(
        out,
        "clinit_event_loop_lag_max_seconds {}",
        m.lag_max_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_cumulative_and_counts_everything() {
        let mut h = Histogram::default();
        for us in [10, 70, 70, 3000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let mut out = String::new();
        h.write(&mut out, "x", "kind=\"a\"");
        let rows: &[(&str, &str)] = &[
            ("x_bucket{kind=\"a\",le=\"0.00005\"}", "1"),
            ("x_bucket{kind=\"a\",le=\"0.0001\"}", "3"),
            ("x_bucket{kind=\"a\",le=\"0.005\"}", "4"),
            ("x_bucket{kind=\"a\",le=\"10\"}", "4"),
            ("x_bucket{kind=\"a\",le=\"+Inf\"}", "5"),
            ("x_count{kind=\"a\"}", "5"),
        ];
        for (series, value) in rows {
            let line = out
                .lines()
                .find(|l| l.starts_with(series))
                .unwrap_or_else(|| panic!("{series} in {out}"));
            assert_eq!(line.rsplit(' ').next(), Some(*value), "{line}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
