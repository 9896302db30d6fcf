//! Record operations, served in the connection task by the record store
//! behind [`crate::store::RecordBackend`]. Values travel base64-encoded.

use crate::daemon::conn::{Shared, error};
use crate::daemon::policy::Peer;
use crate::events::{EventKind, RecordFacts};
use crate::proto::{ErrorCode, RecordOp, RecordWire, Reply};
use crate::records::{Record, RecordError};
use crate::store::{RecordCall, RecordOutcome, Writer};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn record_error(e: &RecordError) -> Reply {
    let code = match e {
        RecordError::Exists { .. } => ErrorCode::Exists,
        RecordError::NoEnt { .. } => ErrorCode::Noent,
        RecordError::Collision { .. } => ErrorCode::Collision,
        RecordError::BadName { .. } => ErrorCode::BadName,
        RecordError::TooLarge { .. } => ErrorCode::TooLarge,
        RecordError::Quota { .. } => ErrorCode::Limit,
        RecordError::StaleToken { .. } => ErrorCode::StaleToken,
        RecordError::Unreachable(_) => ErrorCode::EtcdUnreachable,
        RecordError::Store(_) => ErrorCode::Internal,
    };
    error(code, e.to_string())
}

fn decode(v: &str) -> Result<Vec<u8>, Reply> {
    B64.decode(v)
        .map_err(|e| error(ErrorCode::BadRequest, format!("value is not base64: {e}")))
}

fn wire(r: Record) -> RecordWire {
    RecordWire {
        key: r.key,
        value_b64: B64.encode(&r.value),
        sig: r.sig,
    }
}

/// The request as the record store takes it, written by `by`.
fn to_call(op: RecordOp, by: Writer) -> Result<RecordCall, Reply> {
    Ok(match op {
        RecordOp::Add {
            container,
            key,
            value_b64,
            fence,
        } => RecordCall::Add {
            container,
            key,
            value: decode(&value_b64)?,
            by,
            fence,
        },
        RecordOp::Get { container, key } => RecordCall::Get { container, key },
        RecordOp::Modify {
            container,
            key,
            value_b64,
            sig,
            fence,
        } => RecordCall::Modify {
            container,
            key,
            value: decode(&value_b64)?,
            sig,
            by,
            fence,
        },
        RecordOp::Delete {
            container,
            key,
            sig,
            fence,
        } => RecordCall::Delete {
            container,
            key,
            sig,
            fence,
        },
        RecordOp::List { container } => RecordCall::List { container },
    })
}

/// A record write, for its event.
enum Write {
    Add,
    Modify,
    /// With the signature given (0: any).
    Delete(u64),
}

/// One record operation; a change is an event.
pub(crate) async fn call(shared: &Shared, peer: &Peer, op: RecordOp) -> Reply {
    let by = Writer {
        key: peer.key(),
        limited: !shared.exempt(peer),
    };
    let call = match to_call(op, by) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // What an event would say, taken before the call consumes it.
    let about = match &call {
        RecordCall::Add { container, key, .. } => Some((Write::Add, container, key)),
        RecordCall::Modify { container, key, .. } => Some((Write::Modify, container, key)),
        RecordCall::Delete {
            container,
            key,
            sig,
            ..
        } => Some((Write::Delete(*sig), container, key)),
        RecordCall::Get { .. } | RecordCall::List { .. } | RecordCall::Usage => None,
    }
    .map(|(w, c, k)| (w, c.clone(), k.clone()));
    let list_of = match &call {
        RecordCall::List { container } => container.clone(),
        _ => String::new(),
    };
    let pending = shared.records().call(call);
    let result = match pending.wait().await {
        Some(r) => r,
        None => {
            return error(
                ErrorCode::Internal,
                "the record store stopped before it answered".into(),
            );
        }
    };
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return record_error(&e),
    };
    if let Some((write, container, key)) = about {
        let event = match (write, &outcome) {
            (Write::Add, RecordOutcome::Signature(sig)) => {
                Some(EventKind::RecordAdded(RecordFacts {
                    container,
                    key,
                    sig: *sig,
                }))
            }
            (Write::Modify, RecordOutcome::Signature(sig)) => {
                Some(EventKind::RecordModified(RecordFacts {
                    container,
                    key,
                    sig: *sig,
                }))
            }
            (Write::Delete(given), RecordOutcome::Deleted) => {
                Some(EventKind::RecordDeleted(RecordFacts {
                    container,
                    key,
                    sig: given,
                }))
            }
            _ => None,
        };
        if let Some(e) = event {
            shared.events.push(e);
        }
    }
    match outcome {
        RecordOutcome::Signature(sig) => Reply::Signature { sig },
        RecordOutcome::Record(r) => Reply::Record { record: wire(r) },
        RecordOutcome::Deleted => Reply::Ok,
        // Asked by the HTTP listener only, never by a client's request.
        RecordOutcome::Usage(_) => error(ErrorCode::Internal, "unexpected usage answer".into()),
        RecordOutcome::Records(rs) => {
            // The reply must fit one frame (base64 grows values by 4/3).
            let size: usize = rs
                .iter()
                .map(|r| r.key.len() + r.value.len() * 4 / 3 + 64)
                .sum();
            if size > crate::proto::MAX_FRAME - 4096 {
                return error(
                    ErrorCode::TooLarge,
                    format!(
                        "container {list_of} holds about {size} bytes of records, more than one reply carries ({} bytes); get its records one by one",
                        crate::proto::MAX_FRAME
                    ),
                );
            }
            Reply::Records {
                records: rs.into_iter().map(wire).collect(),
            }
        }
    }
}
