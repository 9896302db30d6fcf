//! Change events as values: what happened in the daemon, numbered, kept in
//! a ring of the last `events_keep`, and followed by subscribers
//! (`clinit events`).
//!
//! The supervisor and the lock service hand out their changes as values
//! ([`crate::supervisor::Change`], [`crate::store::LockChange`]); the
//! daemon turns each into an [`EventKind`] and [`Events::push`]es it. The
//! ring is the only buffer: a subscriber is a cursor (the last sequence
//! number it has seen) and reads what follows it. Pushing costs the same
//! whatever the number of subscribers (one `watch` update wakes those that
//! wait); a subscriber that falls more than the ring's length behind finds
//! its cursor overwritten and is told so — it never slows the daemon.
//!
//! Invariants: sequence numbers start at 1 in each daemon run and increase
//! by one per event; the ring holds a contiguous run of them, the newest
//! last.

use crate::lock::{HolderInfo, LockMode, LostWhy};
use crate::supervisor::Change;
use crate::supervisor::machine::{ExitStatus, GroupState};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use tokio::sync::watch;

/// How many events the daemon keeps by default (`events_keep`).
pub const DEFAULT_KEEP: usize = 10_000;

/// One event: its number, its wall-clock time (Unix seconds) and what.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time: f64,
    #[serde(flatten)]
    pub kind: EventKind,
    /// This event as a streamed reply's frame to request [`FRAME_ID`]
    /// (the first request of a connection, as `clinit events` sends it),
    /// made once for every subscriber; [`Event::json`] is its middle.
    #[serde(skip)]
    frame: OnceLock<Box<[u8]>>,
}

/// The request id whose event frames are made once and shared.
pub const FRAME_ID: u64 = 1;

/// What comes before an event's JSON in its frame (after the length).
const FRAME_HEAD: &[u8] = b"{\"id\":1,\"kind\":\"event\",\"event\":";

impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        (self.seq, self.time, &self.kind) == (other.seq, other.time, &other.kind)
    }
}

impl Event {
    pub fn new(seq: u64, time: f64, kind: EventKind) -> Event {
        Event {
            seq,
            time,
            kind,
            frame: OnceLock::new(),
        }
    }

    /// The whole frame of this event as a reply to request [`FRAME_ID`]:
    /// 4 bytes of length, then `{"id":1,"kind":"event","event":JSON}`.
    pub fn frame(&self) -> &[u8] {
        self.frame.get_or_init(|| {
            let mut out = Vec::with_capacity(224);
            out.extend_from_slice(&[0; 4]);
            out.extend_from_slice(FRAME_HEAD);
            self.write_json(&mut out);
            out.push(b'}');
            let len = (out.len() - 4) as u32;
            out[..4].copy_from_slice(&len.to_be_bytes());
            out.into_boxed_slice()
        })
    }

    /// The event as one JSON object, `{"seq":..,"time":..,"kind":..,...}`
    /// (made once, then shared).
    pub fn json(&self) -> &str {
        let f = self.frame();
        // The frame was written from UTF-8 JSON; the fallback never runs.
        std::str::from_utf8(&f[4 + FRAME_HEAD.len()..f.len() - 1]).unwrap_or("{}")
    }

    /// The same bytes as serde's `{"seq":..,"time":..,<kind's fields>}`,
    /// without the flatten serializer's detour (measured on the busy path
    /// of a lock stream).
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        out.extend_from_slice(b",\"time\":");
        let _ = serde_json::to_writer(&mut *out, &self.time);
        out.push(b',');
        // The kind serializes as {"kind":..,...}: drop its opening brace.
        let brace = out.len();
        if serde_json::to_writer(&mut *out, &self.kind).is_ok() {
            out.remove(brace);
        } else {
            out.truncate(brace - 1);
            out.push(b'}');
        }
    }
}

/// A lock event's facts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockFacts {
    pub name: String,
    pub mode: LockMode,
    pub token: u64,
    pub holder: HolderInfo,
}

/// A record event's facts; `sig` is the record's new signature (for a
/// delete: the signature given, 0 for any).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordFacts {
    pub container: String,
    pub key: String,
    pub sig: u64,
}

/// What happened. Serialized with its name as `kind`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    DaemonStarted {
        pid: u32,
        version: String,
    },
    DaemonShutdown {
        by: String,
    },
    /// Maintenance mode turned on or off.
    Maintenance {
        on: bool,
        by: String,
    },
    /// A group's level or state changed.
    GroupState {
        group: String,
        old_level: Option<String>,
        level: Option<String>,
        old: GroupState,
        state: GroupState,
    },
    /// An operator told a group a level.
    Told {
        group: String,
        level: String,
        by: String,
    },
    Started {
        group: String,
        tag: String,
        pid: i32,
    },
    /// A process ended; `requested`: during a stop clinit asked for.
    Exited {
        group: String,
        tag: String,
        pid: i32,
        status: ExitStatus,
        ran_ms: u64,
        requested: bool,
    },
    SpawnFailed {
        group: String,
        tag: String,
    },
    /// A respawn entry waits `delay_ms` (until `until`) after `rapid`
    /// rapid restarts in a row.
    Throttled {
        group: String,
        tag: String,
        delay_ms: u64,
        until: f64,
        rapid: u32,
    },
    GaveUp {
        group: String,
        tag: String,
        rapid: u32,
        status: ExitStatus,
    },
    /// A cron run was skipped because the previous one still runs.
    RunSkipped {
        group: String,
        tag: String,
    },
    /// `clinit stop|start|restart TAG`.
    Operator {
        group: String,
        tag: String,
        action: String,
        temporary: bool,
        by: String,
    },
    /// `clinit restart --group G` (group) or `--all` (no group).
    RestartGroup {
        group: Option<String>,
        by: String,
    },
    /// A reread was applied: the tags it added, changed and removed.
    Reread {
        added: Vec<String>,
        changed: Vec<String>,
        removed: Vec<String>,
        by: String,
    },
    /// `clinit create` or `clinit delete` edited the cltab.
    CltabEdit {
        op: String,
        group: String,
        tag: String,
        by: String,
    },
    LockGranted(LockFacts),
    LockReleased(LockFacts),
    /// The holder's lease expired.
    LockExpired(LockFacts),
    /// The holder's connection closed.
    LockHolderDied(LockFacts),
    /// The holder's lease was revoked.
    LockRevoked(LockFacts),
    /// The grant was taken back: its token could not be reserved.
    LockNotReserved(LockFacts),
    /// Cluster mode: this node's claim in etcd was at risk.
    LockClaimLost(LockFacts),
    RecordAdded(RecordFacts),
    RecordModified(RecordFacts),
    RecordDeleted(RecordFacts),
    /// Cluster mode: this node became the owner of an exclusive group.
    GroupOwned {
        group: String,
        node: String,
        token: i64,
    },
    /// Cluster mode: this node gave up an exclusive group (`why`: moved,
    /// failed, not eligible, lost).
    GroupReleased {
        group: String,
        node: String,
        token: i64,
        why: String,
    },
}

impl EventKind {
    /// The group an event is about, if any (`clinit events --group`).
    pub fn group(&self) -> Option<&str> {
        match self {
            EventKind::GroupOwned { group, .. } | EventKind::GroupReleased { group, .. } => {
                Some(group)
            }
            EventKind::GroupState { group, .. }
            | EventKind::Told { group, .. }
            | EventKind::Started { group, .. }
            | EventKind::Exited { group, .. }
            | EventKind::SpawnFailed { group, .. }
            | EventKind::Throttled { group, .. }
            | EventKind::GaveUp { group, .. }
            | EventKind::RunSkipped { group, .. }
            | EventKind::Operator { group, .. }
            | EventKind::CltabEdit { group, .. } => Some(group),
            EventKind::RestartGroup { group, .. } => group.as_deref(),
            EventKind::DaemonStarted { .. }
            | EventKind::DaemonShutdown { .. }
            | EventKind::Maintenance { .. }
            | EventKind::Reread { .. }
            | EventKind::LockGranted(_)
            | EventKind::LockReleased(_)
            | EventKind::LockExpired(_)
            | EventKind::LockHolderDied(_)
            | EventKind::LockRevoked(_)
            | EventKind::LockNotReserved(_)
            | EventKind::LockClaimLost(_)
            | EventKind::RecordAdded(_)
            | EventKind::RecordModified(_)
            | EventKind::RecordDeleted(_) => None,
        }
    }

    /// The entry an event is about, if any.
    pub fn tag(&self) -> Option<&str> {
        match self {
            EventKind::Started { tag, .. }
            | EventKind::Exited { tag, .. }
            | EventKind::SpawnFailed { tag, .. }
            | EventKind::Throttled { tag, .. }
            | EventKind::GaveUp { tag, .. }
            | EventKind::RunSkipped { tag, .. }
            | EventKind::Operator { tag, .. }
            | EventKind::CltabEdit { tag, .. } => Some(tag),
            _ => None,
        }
    }

    /// The event in a sentence, for `clinit events` without `--json`.
    pub fn describe(&self) -> String {
        let by = |by: &str| {
            if by.is_empty() {
                String::new()
            } else {
                format!(" by {by}")
            }
        };
        let level = |l: &Option<String>| l.clone().unwrap_or_else(|| "-".into());
        match self {
            EventKind::DaemonStarted { pid, version } => {
                format!("daemon started, pid {pid}, {version}")
            }
            EventKind::DaemonShutdown { by: b } => format!("daemon shutting down{}", by(b)),
            EventKind::Maintenance { on, by: b } => format!(
                "maintenance mode {}{}",
                if *on { "on" } else { "off" },
                by(b)
            ),
            EventKind::GroupState {
                group,
                old_level,
                level: new_level,
                old,
                state,
            } => {
                if old_level == new_level {
                    format!(
                        "group {group} at level {}: {} -> {}",
                        level(new_level),
                        old.as_str(),
                        state.as_str()
                    )
                } else {
                    format!(
                        "group {group}: level {} {} -> level {} {}",
                        level(old_level),
                        old.as_str(),
                        level(new_level),
                        state.as_str()
                    )
                }
            }
            EventKind::Told {
                group,
                level,
                by: b,
            } => format!("group {group} told level {level}{}", by(b)),
            EventKind::Started { group, tag, pid } => format!("{group}:{tag} started, pid {pid}"),
            EventKind::Exited {
                group,
                tag,
                pid,
                status,
                ran_ms,
                requested,
            } => format!(
                "{group}:{tag} (pid {pid}) exited with {status} after {:.1} s{}",
                *ran_ms as f64 / 1000.0,
                if *requested { ", as asked" } else { "" }
            ),
            EventKind::SpawnFailed { group, tag } => {
                format!("{group}:{tag} could not be started")
            }
            EventKind::Throttled {
                group,
                tag,
                delay_ms,
                rapid,
                ..
            } => format!(
                "{group}:{tag} throttled: next start in {:.1} s after {rapid} rapid restarts",
                *delay_ms as f64 / 1000.0
            ),
            EventKind::GaveUp {
                group,
                tag,
                rapid,
                status,
            } => format!(
                "{group}:{tag} gave up after {rapid} rapid restarts in a row (last {status})"
            ),
            EventKind::RunSkipped { group, tag } => {
                format!("{group}:{tag} still running: its scheduled run is skipped")
            }
            EventKind::Operator {
                group,
                tag,
                action,
                temporary,
                by: b,
            } => format!(
                "{group}:{tag} {action}{}{}",
                if *temporary { " (temporary)" } else { "" },
                by(b)
            ),
            EventKind::RestartGroup { group, by: b } => match group {
                Some(g) => format!("group {g} restarted{}", by(b)),
                None => format!("every group restarted{}", by(b)),
            },
            EventKind::Reread {
                added,
                changed,
                removed,
                by: b,
            } => {
                let list = |what: &str, v: &[String]| {
                    if v.is_empty() {
                        None
                    } else {
                        Some(format!("{what} {}", v.join(",")))
                    }
                };
                let parts: Vec<String> = [
                    list("added", added),
                    list("changed", changed),
                    list("removed", removed),
                ]
                .into_iter()
                .flatten()
                .collect();
                format!(
                    "cltab reread{}: {}",
                    by(b),
                    if parts.is_empty() {
                        "no entry changed".to_string()
                    } else {
                        parts.join("; ")
                    }
                )
            }
            EventKind::CltabEdit {
                op,
                group,
                tag,
                by: b,
            } => format!("cltab edit: {op} {group}:{tag}{}", by(b)),
            EventKind::LockGranted(f) => lock_line("granted", f),
            EventKind::LockReleased(f) => lock_line("released", f),
            EventKind::LockExpired(f) => lock_line("released: its lease expired", f),
            EventKind::LockHolderDied(f) => lock_line("released: its holder died", f),
            EventKind::LockRevoked(f) => lock_line("released: its lease was revoked", f),
            EventKind::LockNotReserved(f) => {
                lock_line("taken back: its token could not be reserved", f)
            }
            EventKind::LockClaimLost(f) => {
                lock_line("released: this node's claim in etcd was at risk", f)
            }
            EventKind::RecordAdded(r) => record_line("added", r),
            EventKind::RecordModified(r) => record_line("modified", r),
            EventKind::RecordDeleted(r) => record_line("deleted", r),
            EventKind::GroupOwned { group, node, token } => {
                format!("exclusive group {group}: owned by node {node}, token {token}")
            }
            EventKind::GroupReleased {
                group,
                node,
                token,
                why,
            } => format!("exclusive group {group}: released by node {node} (token {token}): {why}"),
        }
    }
}

fn lock_line(what: &str, f: &LockFacts) -> String {
    let mut who = Vec::new();
    if let Some(pid) = f.holder.pid {
        who.push(format!("pid {pid}"));
    }
    if let Some(uid) = f.holder.uid {
        who.push(format!("uid {uid}"));
    }
    if !f.holder.what.is_empty() {
        who.push(f.holder.what.to_string());
    }
    format!(
        "lock {} {what} ({}, token {}{}{})",
        f.name,
        f.mode.as_str(),
        f.token,
        if who.is_empty() { "" } else { ", " },
        who.join(", ")
    )
}

fn record_line(what: &str, r: &RecordFacts) -> String {
    format!(
        "record {:?} in container {:?} {what} (signature {})",
        r.key, r.container, r.sig
    )
}

impl From<Change> for EventKind {
    fn from(c: Change) -> EventKind {
        match c {
            Change::Group {
                group,
                old_level,
                level,
                old,
                state,
            } => EventKind::GroupState {
                group,
                old_level,
                level,
                old,
                state,
            },
            Change::Started { group, tag, pid } => EventKind::Started { group, tag, pid },
            Change::Exited {
                group,
                tag,
                pid,
                status,
                ran,
                requested,
            } => EventKind::Exited {
                group,
                tag,
                pid,
                status,
                ran_ms: ran.as_millis() as u64,
                requested,
            },
            Change::SpawnFailed { group, tag } => EventKind::SpawnFailed { group, tag },
            Change::Throttled {
                group,
                tag,
                delay,
                until,
                rapid,
            } => EventKind::Throttled {
                group,
                tag,
                delay_ms: delay.as_millis() as u64,
                until,
                rapid,
            },
            Change::GaveUp {
                group,
                tag,
                rapid,
                status,
            } => EventKind::GaveUp {
                group,
                tag,
                rapid,
                status,
            },
            Change::RunSkipped { group, tag } => EventKind::RunSkipped { group, tag },
        }
    }
}

impl From<crate::store::LockChange> for EventKind {
    fn from(c: crate::store::LockChange) -> EventKind {
        use crate::store::LockChange;
        match c {
            LockChange::Granted {
                name,
                mode,
                token,
                holder,
            } => EventKind::LockGranted(LockFacts {
                name,
                mode,
                token,
                holder,
            }),
            LockChange::Released {
                name,
                mode,
                token,
                holder,
            } => EventKind::LockReleased(LockFacts {
                name,
                mode,
                token,
                holder,
            }),
            LockChange::Lost {
                name,
                mode,
                token,
                holder,
                why,
            } => {
                let f = LockFacts {
                    name,
                    mode,
                    token,
                    holder,
                };
                match why {
                    LostWhy::HolderGone => EventKind::LockHolderDied(f),
                    LostWhy::LeaseExpired => EventKind::LockExpired(f),
                    LostWhy::LeaseRevoked => EventKind::LockRevoked(f),
                    LostWhy::NotReserved => EventKind::LockNotReserved(f),
                    LostWhy::ClaimLost => EventKind::LockClaimLost(f),
                }
            }
        }
    }
}

/// What follows a cursor.
#[derive(Debug, PartialEq)]
pub enum Batch {
    /// Events after the cursor are no longer kept: the oldest kept is
    /// `first`.
    Gap { first: u64 },
    /// The next events that pass the filter (perhaps none), and the
    /// sequence number the cursor moves to (past those that did not pass).
    Events { events: Vec<Arc<Event>>, to: u64 },
}

/// The ring of recent events.
pub struct EventLog {
    ring: VecDeque<Arc<Event>>,
    keep: usize,
    /// The number the next event gets.
    next: u64,
    /// The last number pushed, for those waiting for more.
    tx: watch::Sender<u64>,
}

impl EventLog {
    pub fn new(keep: usize) -> EventLog {
        EventLog {
            ring: VecDeque::with_capacity(keep.min(DEFAULT_KEEP)),
            keep: keep.max(1),
            next: 1,
            tx: watch::Sender::new(0),
        }
    }

    /// Keep `kind`, numbered and timed; returns its number.
    pub fn push(&mut self, kind: EventKind, time: f64) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.ring.len() == self.keep {
            self.ring.pop_front();
        }
        self.ring.push_back(Arc::new(Event::new(seq, time, kind)));
        // Subscribers subscribe under this log's lock, so none misses a
        // push this skips.
        if self.tx.receiver_count() > 0 {
            self.tx.send_replace(seq);
        }
        seq
    }

    /// How many events are kept (`events_keep`).
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Keep `keep` events from now on (at least 1); the oldest go when
    /// there are more.
    pub fn set_keep(&mut self, keep: usize) {
        self.keep = keep.max(1);
        while self.ring.len() > self.keep {
            self.ring.pop_front();
        }
    }

    /// The oldest number kept (the next one when none is).
    pub fn first(&self) -> u64 {
        self.ring.front().map_or(self.next, |e| e.seq)
    }

    /// The last number handed out (0 before the first event).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// Up to `max` events after `since` that pass `filter`.
    pub fn after(&self, since: u64, max: usize, filter: impl Fn(&Event) -> bool) -> Batch {
        let mut events = Vec::new();
        match self.scan(since, max, filter, |e| events.push(e.clone())) {
            Err(first) => Batch::Gap { first },
            Ok(to) => Batch::Events { events, to },
        }
    }

    /// Hand `visit` up to `max` events after `since` that pass `filter`
    /// (without cloning them); `Ok` with the number the cursor moves to, or
    /// `Err(first)` when events after `since` are no longer kept.
    pub fn scan(
        &self,
        since: u64,
        max: usize,
        filter: impl Fn(&Event) -> bool,
        mut visit: impl FnMut(&Arc<Event>),
    ) -> Result<u64, u64> {
        let first = self.first();
        if since + 1 < first {
            return Err(first);
        }
        let mut to = since.min(self.last());
        let start = ((since + 1 - first) as usize).min(self.ring.len());
        let mut n = 0;
        for e in self.ring.range(start..) {
            if n == max {
                break;
            }
            to = e.seq;
            if filter(e) {
                visit(e);
                n += 1;
            }
        }
        Ok(to)
    }

    /// The newest kept events that pass `filter`, newest first, at most
    /// `max`.
    pub fn recent(&self, max: usize, filter: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        self.ring
            .iter()
            .rev()
            .filter(|e| filter(e))
            .take(max)
            .cloned()
            .collect()
    }
}

/// The daemon's events, shared by the event loop and the connection tasks
/// (all on the daemon's one thread: the lock is never contended).
#[derive(Clone)]
pub struct Events {
    log: Arc<Mutex<EventLog>>,
    /// Unix time at which this daemon run started (in every subscription's
    /// header, so that a client can tell a restarted daemon).
    pub started: f64,
}

/// The wall clock, Unix seconds with fraction.
pub fn wall_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Events {
    pub fn new(keep: usize) -> Events {
        Events {
            log: Arc::new(Mutex::new(EventLog::new(keep))),
            started: wall_now(),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, EventLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep one event, now.
    pub fn push(&self, kind: EventKind) -> u64 {
        self.lock().push(kind, wall_now())
    }

    /// Keep several events, now, in order.
    pub fn push_all(&self, kinds: impl IntoIterator<Item = EventKind>) {
        let mut kinds = kinds.into_iter().peekable();
        if kinds.peek().is_none() {
            return;
        }
        let time = wall_now();
        let mut log = self.lock();
        for k in kinds {
            log.push(k, time);
        }
    }

    /// A receiver that changes whenever an event is pushed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.lock().tx.subscribe()
    }

    pub fn started(&self) -> f64 {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn told(g: &str) -> EventKind {
        EventKind::Told {
            group: g.into(),
            level: "1".into(),
            by: String::new(),
        }
    }

    fn seqs(b: &Batch) -> Vec<u64> {
        match b {
            Batch::Events { events, .. } => events.iter().map(|e| e.seq).collect(),
            Batch::Gap { .. } => panic!("gap"),
        }
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_reports_a_gap() {
        let mut log = EventLog::new(3);
        assert_eq!((log.first(), log.last()), (1, 0));
        assert_eq!(
            log.after(0, 10, |_| true),
            Batch::Events {
                events: vec![],
                to: 0
            }
        );
        for g in ["a", "b", "c", "d", "e"] {
            log.push(told(g), 1.0);
        }
        assert_eq!((log.first(), log.last()), (3, 5));
        // (since, max) -> the events, or a gap.
        let rows: &[(u64, usize, Option<&[u64]>)] = &[
            (0, 10, None),
            (1, 10, None),
            (2, 10, Some(&[3, 4, 5])),
            (3, 10, Some(&[4, 5])),
            (3, 1, Some(&[4])),
            (5, 10, Some(&[])),
            // A number from the future (an earlier daemon run) reads as
            // caught up; the handler reports it as a gap.
            (9, 10, Some(&[])),
        ];
        for (since, max, want) in rows {
            let b = log.after(*since, *max, |_| true);
            match want {
                None => assert_eq!(b, Batch::Gap { first: 3 }, "since {since}"),
                Some(w) => assert_eq!(seqs(&b), *w, "since {since}"),
            }
        }
    }

    #[test]
    fn a_filter_skips_events_and_still_moves_the_cursor() {
        let mut log = EventLog::new(10);
        for g in ["a", "b", "a", "b", "b"] {
            log.push(told(g), 1.0);
        }
        let only_a = |e: &Event| e.kind.group() == Some("a");
        match log.after(0, 10, only_a) {
            Batch::Events { events, to } => {
                assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
                assert_eq!(to, 5);
            }
            b => panic!("{b:?}"),
        }
        match log.after(0, 1, only_a) {
            Batch::Events { events, to } => {
                assert_eq!(events.len(), 1);
                // Stopped at the first match: the cursor does not pass
                // events it has not looked at.
                assert_eq!(to, 1);
            }
            b => panic!("{b:?}"),
        }
        assert_eq!(
            log.recent(5, only_a)
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            [3, 1]
        );
    }

    #[test]
    fn events_serialize_flat_with_their_kind() {
        let e = Event::new(
            7,
            1.5,
            EventKind::Exited {
                group: "web".into(),
                tag: "app".into(),
                pid: 12,
                status: ExitStatus::Signal(9),
                ran_ms: 2500,
                requested: false,
            },
        );
        assert_eq!(
            e.json(),
            r#"{"seq":7,"time":1.5,"kind":"exited","group":"web","tag":"app","pid":12,"status":{"signal":9},"ran_ms":2500,"requested":false}"#
        );
        let back: Event = serde_json::from_str(e.json()).unwrap();
        assert_eq!(back, e);
        let lock = Event::new(
            8,
            2.0,
            EventKind::LockGranted(LockFacts {
                name: "vol".into(),
                mode: LockMode::Exclusive,
                token: 3,
                holder: HolderInfo::default(),
            }),
        );
        assert!(
            lock.json()
                .starts_with(r#"{"seq":8,"time":2.0,"kind":"lock_granted","name":"vol""#),
            "{}",
            lock.json()
        );
        assert_eq!(
            e.kind.describe(),
            "web:app (pid 12) exited with signal 9 after 2.5 s"
        );
    }
}
