//! The events subscription: a streamed reply on the connection that asked.
//!
//! Frames, all with the request's id: [`Reply::Subscribed`] (the numbers
//! kept and when the daemon started); a [`Reply::Gap`] when the client
//! asked for events no longer kept; [`Reply::Event`]s; and then either
//! [`Reply::EventsEnd`] (without `follow`, or when the daemon exits) or,
//! for a subscriber that fell further behind than the ring keeps, a
//! `LAGGED` error, after which the connection is closed.
//!
//! The subscriber reads the shared ring through its own cursor, so the
//! daemon does no work per subscriber; a write that does not complete
//! within [`WRITE_LIMIT`] (the client stopped reading) closes the
//! connection. While events come fast, writes are gathered for up to
//! [`GATHER`] so that a busy stream costs one write per batch, not one per
//! event.

use crate::daemon::conn::{Conn, Shared, error};
use crate::daemon::listen::Stream;
use crate::daemon::route::EventsQuery;
use crate::events::Event;
use crate::proto::{ErrorCode, Reply};
use std::time::{Duration, Instant};

/// A subscriber whose connection takes no bytes for this long is dropped.
pub const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// After a write, the next one waits up to this long for more events to
/// gather (see [`gather_for`]).
pub const GATHER: Duration = Duration::from_millis(50);
/// Events per write at most.
const BATCH: usize = 4096;

/// How long a subscriber lets events gather before its next write, having
/// just written `sent` events that came over `over`: [`GATHER`], or less
/// when events come so fast that a quarter of the ring (`keep` events)
/// would pass meanwhile, so that waiting never makes a subscriber lag.
pub fn gather_for(sent: usize, over: Duration, keep: usize) -> Duration {
    if sent == 0 {
        return GATHER;
    }
    let fill = over.mul_f64((keep / 4).max(1) as f64 / sent as f64);
    fill.min(GATHER)
}

/// Append one event frame (`{"id":N,"kind":"event","event":{...}}`, as
/// [`crate::proto::encode`] would write it) to `out`, with the event's JSON
/// made once for every subscriber.
pub fn frame_event(out: &mut Vec<u8>, id: u64, e: &Event) {
    if id == crate::events::FRAME_ID {
        out.extend_from_slice(e.frame());
        return;
    }
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"kind\":\"event\",\"event\":");
    out.extend_from_slice(e.json().as_bytes());
    out.push(b'}');
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Serve one subscription; false when the connection must close.
pub(crate) async fn stream<S: Stream>(
    c: &mut Conn<S>,
    id: u64,
    q: EventsQuery,
    shared: &Shared,
) -> bool {
    let mut changed = shared.events.subscribe();
    let mut closing = shared.closing.subscribe();
    let (first, last) = {
        let log = shared.events.lock();
        (log.first(), log.last())
    };
    let header = Reply::Subscribed {
        first,
        last,
        started: shared.events.started(),
    };
    if c.reply(id, header).await.is_err() {
        return false;
    }
    // Without --since: whatever is kept (or its last N), no gap reported.
    let mut cursor = match (q.since, q.last) {
        (Some(since), _) => since,
        (None, Some(n)) => last.saturating_sub(n).max(first - 1),
        (None, None) => first - 1,
    };
    // A number beyond the last one comes from an earlier daemon run:
    // nothing after it is kept.
    if cursor > last {
        let gap = Reply::Gap {
            since: cursor,
            first,
        };
        if c.reply(id, gap).await.is_err() {
            return false;
        }
        cursor = first - 1;
    }
    let group = q.group;
    let keep = |e: &Event| group.as_deref().is_none_or(|g| e.kind.group() == Some(g));
    let mut first_read = true;
    let mut last_write: Option<Instant> = None;
    let mut wait = GATHER;
    let mut buf = Vec::new();
    loop {
        // The frames are made under the lock, without cloning the events.
        buf.clear();
        let scanned = shared
            .events
            .lock()
            .scan(cursor, BATCH, keep, |e| frame_event(&mut buf, id, e));
        match scanned {
            Err(first) if first_read => {
                let gap = Reply::Gap {
                    since: cursor,
                    first,
                };
                if c.reply(id, gap).await.is_err() {
                    return false;
                }
                cursor = first - 1;
                continue;
            }
            Err(first) => {
                let keep = shared.events.lock().last() + 1 - first;
                tracing::warn!(
                    "events subscriber dropped: it fell more than {keep} events behind (at {cursor})"
                );
                let e = error(
                    ErrorCode::Lagged,
                    format!(
                        "dropped: this subscriber fell more than {keep} events (events_keep) behind the daemon; resume with --since {cursor}"
                    ),
                );
                let _ = tokio::time::timeout(WRITE_LIMIT, c.reply(id, e)).await;
                return false;
            }
            Ok(to) => {
                first_read = false;
                if !buf.is_empty() {
                    let sent = (to - cursor) as usize;
                    match tokio::time::timeout(WRITE_LIMIT, c.write(&buf)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return false,
                        Err(_) => {
                            tracing::warn!(
                                "events subscriber dropped: its connection took nothing for {} s",
                                WRITE_LIMIT.as_secs()
                            );
                            return false;
                        }
                    }
                    let now = Instant::now();
                    let over = last_write.map_or(GATHER, |t| now - t);
                    wait = gather_for(sent, over, shared.events.lock().keep());
                    last_write = Some(now);
                }
                cursor = to;
                if to < shared.events.lock().last() {
                    continue;
                }
            }
        }
        if !q.follow || *closing.borrow() {
            return c.reply(id, Reply::EventsEnd { last: cursor }).await.is_ok();
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return false },
            _ = closing.changed() => {}
            _ = c.closed() => return false,
        }
        // Events coming fast: let more gather before the next write.
        if let Some(t) = last_write
            && t.elapsed() < wait
        {
            tokio::time::sleep_until((t + wait).into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::proto::{ResponseFrame, encode};

    #[test]
    fn gathering_never_lets_a_quarter_of_the_ring_pass() {
        let ms = Duration::from_millis;
        // (events sent, over, events_keep, wait)
        let table = [
            (0, ms(50), 10_000, GATHER),
            (10, ms(50), 10_000, GATHER),
            // 2,500 events (a quarter) came in 50 ms: wait 50 ms at most.
            (2_500, ms(50), 10_000, ms(50)),
            // 5,000 in 50 ms: a quarter comes in 25 ms.
            (5_000, ms(50), 10_000, ms(25)),
            (1_000, ms(10), 100, Duration::from_micros(250)),
            (100, ms(100), 100, ms(25)),
            (1, ms(1), 1, ms(1)),
        ];
        for (sent, over, keep, want) in table {
            assert_eq!(
                gather_for(sent, over, keep),
                want,
                "{sent} events over {over:?}, keep {keep}"
            );
        }
    }

    #[test]
    fn an_event_frame_is_what_the_encoder_writes() {
        for id in [crate::events::FRAME_ID, 42] {
            frame_matches_the_encoder(id);
        }
    }

    fn frame_matches_the_encoder(id: u64) {
        let e = Event::new(
            3,
            1.25,
            EventKind::Told {
                group: "web".into(),
                level: "3".into(),
                by: "root (uid 0)".into(),
            },
        );
        let mut out = Vec::new();
        frame_event(&mut out, id, &e);
        let want = encode(&ResponseFrame {
            id,
            reply: Reply::Event {
                event: Box::new(e.clone()),
            },
        });
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        let back: ResponseFrame = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(back.reply, Reply::Event { event: Box::new(e) });
    }
}
