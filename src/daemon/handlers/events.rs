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
use crate::events::{Batch, Event};
use crate::proto::{ErrorCode, Reply};
use std::time::{Duration, Instant};

/// A subscriber whose connection takes no bytes for this long is dropped.
pub const WRITE_LIMIT: Duration = Duration::from_secs(10);
/// After a write, the next one waits this long for more events to gather.
pub const GATHER: Duration = Duration::from_millis(2);
/// Events per write at most.
const BATCH: usize = 512;

/// Append one event frame (`{"id":N,"kind":"event","event":{...}}`, as
/// [`crate::proto::encode`] would write it) to `out`, with the event's JSON
/// made once for every subscriber.
pub fn frame_event(out: &mut Vec<u8>, id: u64, e: &Event) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
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
    let mut buf = Vec::new();
    loop {
        let batch = shared.events.lock().after(cursor, BATCH, keep);
        match batch {
            Batch::Gap { first } if first_read => {
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
            Batch::Gap { first } => {
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
            Batch::Events { events, to } => {
                first_read = false;
                if !events.is_empty() {
                    buf.clear();
                    for e in &events {
                        frame_event(&mut buf, id, e);
                    }
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
                    last_write = Some(Instant::now());
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
            && t.elapsed() < GATHER
        {
            tokio::time::sleep_until((t + GATHER).into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::proto::{ResponseFrame, encode};

    #[test]
    fn an_event_frame_is_what_the_encoder_writes() {
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
        frame_event(&mut out, 42, &e);
        let want = encode(&ResponseFrame {
            id: 42,
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
