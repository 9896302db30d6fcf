//! The record store of a cluster: records in etcd, with the signature
//! rules of [`crate::records`] (random 16-bit generation, 48-bit counter;
//! `EXISTS`, `NOENT`, `COLLISION`; delete with signature 0), each write one
//! etcd transaction that compares the record key's revision, and fencing
//! tokens checked and raised in the same transaction.
//!
//! Keys: `/<cluster>/records/<container>/<key>`, the container with `%`
//! and `/` percent-encoded (so that no container can take another's keys),
//! the key as it is; the value is the signature (8 bytes, big-endian)
//! followed by the record's value. The highest token per lock is
//! `/<cluster>/fence/<lock>` (lock with `%` and `/` encoded), 20 decimal
//! digits, so that etcd's bytewise comparison is the numeric one.

use super::ClusterConfig;
use crate::proto::Fence;
use crate::records::{Record, RecordError, check, first_signature, next_signature, random16};
use crate::store::{Pending, RecordBackend, RecordCall, RecordOutcome};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

/// Records in etcd, for every node of the cluster.
pub struct EtcdRecords {
    cfg: ClusterConfig,
    /// One connection, made at the first use and again after a failure.
    client: Arc<AsyncMutex<Option<etcd_client::Client>>>,
    /// Most records one container may hold (`record_container_max`).
    container_max: u64,
}

pub(crate) fn encode(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

/// The name [`encode`] made `enc` of (`None`: not made by it).
pub(crate) fn decode(enc: &str) -> Option<String> {
    let mut out = String::with_capacity(enc.len());
    let mut rest = enc;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i..i + 3)?;
        out.push(match code {
            "%25" => '%',
            "%2F" => '/',
            _ => return None,
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn token_text(token: u64) -> String {
    format!("{token:020}")
}

impl EtcdRecords {
    pub fn new(cfg: ClusterConfig, container_max: u64) -> EtcdRecords {
        EtcdRecords {
            cfg,
            client: Default::default(),
            container_max,
        }
    }
}

impl RecordBackend for EtcdRecords {
    fn call(&mut self, call: RecordCall) -> Pending<Result<RecordOutcome, RecordError>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cfg = self.cfg.clone();
        let client = self.client.clone();
        let max = self.container_max;
        tokio::spawn(async move {
            let work = async {
                // Not connecting under the lock: callers do not queue
                // behind one another's connection attempts.
                let known = client.lock().await.clone();
                let c = match known {
                    Some(c) => c,
                    None => {
                        let c = cfg
                            .connect()
                            .await
                            .map_err(|e| RecordError::Unreachable(e.to_string()))?;
                        *client.lock().await = Some(c.clone());
                        c
                    }
                };
                Op { cfg: &cfg, c, max }.run(call).await
            };
            let r = match tokio::time::timeout(super::CLIENT_DEADLINE, work).await {
                Ok(r) => r,
                Err(_) => Err(RecordError::Unreachable(
                    cfg.unreachable("no answer within 10 s").to_string(),
                )),
            };
            if matches!(r, Err(RecordError::Unreachable(_))) {
                *client.lock().await = None;
            }
            let _ = tx.send(r);
        });
        Pending::Later(rx)
    }
}

struct Op<'a> {
    cfg: &'a ClusterConfig,
    c: etcd_client::Client,
    max: u64,
}

/// A stored value: the signature, then the record's value.
fn unpack(v: &[u8]) -> (u64, Vec<u8>) {
    if v.len() < 8 {
        return (0, Vec::new());
    }
    let mut sig = [0u8; 8];
    sig.copy_from_slice(&v[..8]);
    (u64::from_be_bytes(sig), v[8..].to_vec())
}

fn pack(sig: u64, value: &[u8]) -> Vec<u8> {
    let mut v = sig.to_be_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

impl Op<'_> {
    fn prefix(&self, container: &str) -> String {
        format!("/{}/records/{}/", self.cfg.cluster, encode(container))
    }

    fn key(&self, container: &str, key: &str) -> String {
        format!("{}{key}", self.prefix(container))
    }

    fn fence_key(&self, lock: &str) -> String {
        format!("/{}/fence/{}", self.cfg.cluster, encode(lock))
    }

    fn down(&self, e: etcd_client::Error) -> RecordError {
        RecordError::Unreachable(self.cfg.unreachable(e).to_string())
    }

    async fn run(mut self, call: RecordCall) -> Result<RecordOutcome, RecordError> {
        match call {
            RecordCall::Get { container, key } => {
                check(&container, &key, None)?;
                let r = self
                    .c
                    .get(self.key(&container, &key), None)
                    .await
                    .map_err(|e| self.down(e))?;
                match r.kvs().first() {
                    Some(kv) => {
                        let (sig, value) = unpack(kv.value());
                        Ok(RecordOutcome::Record(Record { key, value, sig }))
                    }
                    None => Err(no_ent(&container, &key)),
                }
            }
            RecordCall::List { container } => {
                crate::records::check_name("container", &container)?;
                let prefix = self.prefix(&container);
                let r = self
                    .c
                    .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(|e| self.down(e))?;
                let mut out: Vec<Record> = r
                    .kvs()
                    .iter()
                    .filter_map(|kv| {
                        let key = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&prefix)?;
                        let (sig, value) = unpack(kv.value());
                        Some(Record {
                            key: key.to_string(),
                            value,
                            sig,
                        })
                    })
                    .collect();
                out.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
                Ok(RecordOutcome::Records(out))
            }
            RecordCall::Usage => {
                // Every record key, without values: counted per container.
                let prefix = format!("/{}/records/", self.cfg.cluster);
                let r = self
                    .c
                    .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                    .await
                    .map_err(|e| self.down(e))?;
                let mut per: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
                for kv in r.kvs() {
                    let Some(rest) = std::str::from_utf8(kv.key())
                        .ok()
                        .and_then(|k| k.strip_prefix(&prefix))
                    else {
                        continue;
                    };
                    let Some(c) = rest.split('/').next().and_then(decode) else {
                        continue;
                    };
                    let e = per.entry(c).or_default();
                    e.0 += 1;
                    e.1 += unpack(kv.value()).1.len() as u64;
                }
                Ok(RecordOutcome::Usage(
                    per.into_iter().map(|(c, (n, b))| (c, n, b)).collect(),
                ))
            }
            RecordCall::Add {
                container,
                key,
                value,
                fence,
                ..
            } => {
                check(&container, &key, Some(&value))?;
                let count = self
                    .c
                    .get(
                        self.prefix(&container),
                        Some(GetOptions::new().with_prefix().with_count_only()),
                    )
                    .await
                    .map_err(|e| self.down(e))?
                    .count() as u64;
                if count >= self.max {
                    return Err(RecordError::Quota {
                        container,
                        key,
                        why: format!(
                            "the container holds {count} records, the most record_container_max allows"
                        ),
                    });
                }
                let sig = first_signature(random16());
                let k = self.key(&container, &key);
                let absent = Compare::version(k.clone(), CompareOp::Equal, 0);
                let write = TxnOp::put(k, pack(sig, &value), None);
                match self.write(&container, &key, absent, write, fence).await? {
                    Written::Done => Ok(RecordOutcome::Signature(sig)),
                    Written::Record(_) => Err(RecordError::Exists { container, key }),
                    // Absent, yet the add's compare failed: it raced with
                    // a delete; the caller may try again.
                    Written::Missing => Err(RecordError::Unreachable(format!(
                        "record {key:?} in container {container:?}: changed during the add; try again"
                    ))),
                }
            }
            RecordCall::Modify {
                container,
                key,
                value,
                sig,
                fence,
                ..
            } => {
                check(&container, &key, Some(&value))?;
                let k = self.key(&container, &key);
                let (current, rev) = self.current(&container, &key).await?;
                if current != sig {
                    return Err(collision(&container, &key, current, sig));
                }
                let new = next_signature(sig);
                let same = Compare::mod_revision(k.clone(), CompareOp::Equal, rev);
                let write = TxnOp::put(k, pack(new, &value), None);
                match self.write(&container, &key, same, write, fence).await? {
                    Written::Done => Ok(RecordOutcome::Signature(new)),
                    Written::Record(now) => Err(collision(&container, &key, now, sig)),
                    Written::Missing => Err(no_ent(&container, &key)),
                }
            }
            RecordCall::Delete {
                container,
                key,
                sig,
                fence,
            } => {
                check(&container, &key, None)?;
                let k = self.key(&container, &key);
                // Signature 0 deletes whatever the record is: a write that
                // came between the read and the delete is no collision,
                // only a reason to read again.
                let mut tries = 0;
                loop {
                    tries += 1;
                    let (current, rev) = self.current(&container, &key).await?;
                    if sig != 0 && current != sig {
                        return Err(collision(&container, &key, current, sig));
                    }
                    let same = Compare::mod_revision(k.clone(), CompareOp::Equal, rev);
                    let write = TxnOp::delete(k.clone(), None);
                    match self
                        .write(&container, &key, same, write, fence.clone())
                        .await?
                    {
                        Written::Done => return Ok(RecordOutcome::Deleted),
                        Written::Record(_) if sig == 0 && tries < 8 => continue,
                        Written::Record(now) => return Err(collision(&container, &key, now, sig)),
                        Written::Missing => return Err(no_ent(&container, &key)),
                    }
                }
            }
        }
    }

    /// The record's signature and mod revision; `NOENT` if it is absent.
    async fn current(&mut self, container: &str, key: &str) -> Result<(u64, i64), RecordError> {
        let r = self
            .c
            .get(self.key(container, key), None)
            .await
            .map_err(|e| self.down(e))?;
        match r.kvs().first() {
            Some(kv) => Ok((unpack(kv.value()).0, kv.mod_revision())),
            None => Err(no_ent(container, key)),
        }
    }

    /// One transaction: if `cond` holds (and the fence's token is not
    /// stale), `write` (and raise the fence); else what the record is now.
    /// The fence is read first and compared by revision in the
    /// transaction (etcd compares no value of an absent key), tried again
    /// if another write raised it meanwhile.
    async fn write(
        &mut self,
        container: &str,
        key: &str,
        cond: Compare,
        write: TxnOp,
        fence: Option<Fence>,
    ) -> Result<Written, RecordError> {
        let k = self.key(container, key);
        if let Some(f) = &fence
            && let Err(why) = crate::lock::validate_name(&f.lock)
        {
            return Err(RecordError::BadName {
                what: "lock",
                name: f.lock.clone(),
                why: why.to_string(),
            });
        }
        for _ in 0..8 {
            let mut when = vec![cond.clone()];
            let mut then = vec![write.clone()];
            if let Some(f) = &fence {
                let fk = self.fence_key(&f.lock);
                let r = self
                    .c
                    .get(fk.clone(), None)
                    .await
                    .map_err(|e| self.down(e))?;
                let (seen, rev) = match r.kvs().first() {
                    Some(kv) => (
                        std::str::from_utf8(kv.value())
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok())
                            .unwrap_or(0),
                        kv.mod_revision(),
                    ),
                    None => (0, 0),
                };
                if seen > f.token {
                    return Err(RecordError::StaleToken {
                        container: container.to_string(),
                        key: key.to_string(),
                        lock: f.lock.clone(),
                        token: f.token,
                        highest: seen,
                    });
                }
                when.push(Compare::mod_revision(fk.clone(), CompareOp::Equal, rev));
                then.push(TxnOp::put(fk, token_text(f.token), None));
            }
            let r = self
                .c
                .txn(
                    Txn::new()
                        .when(when)
                        .and_then(then)
                        .or_else([TxnOp::get(k.clone(), None)]),
                )
                .await
                .map_err(|e| self.down(e))?;
            if r.succeeded() {
                return Ok(Written::Done);
            }
            let record = r.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| unpack(kv.value()).0)),
                _ => None,
            });
            // Did the record's condition fail, or only the fence's?
            let check = self
                .c
                .txn(Txn::new().when([cond.clone()]))
                .await
                .map_err(|e| self.down(e))?;
            if !check.succeeded() || fence.is_none() {
                return Ok(match record.flatten() {
                    Some(sig) => Written::Record(sig),
                    None => Written::Missing,
                });
            }
        }
        Err(RecordError::Unreachable(format!(
            "record {key:?} in container {container:?}: the fence kept changing; try again"
        )))
    }
}

/// A write's outcome: done, or refused with the record as it is now.
enum Written {
    Done,
    /// The record exists, with this signature.
    Record(u64),
    Missing,
}

fn no_ent(container: &str, key: &str) -> RecordError {
    RecordError::NoEnt {
        container: container.to_string(),
        key: key.to_string(),
    }
}

fn collision(container: &str, key: &str, current: u64, given: u64) -> RecordError {
    RecordError::Collision {
        container: container.to_string(),
        key: key.to_string(),
        current,
        given,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_so_no_container_takes_anothers_keys() {
        let rows = [
            ("a/b", "a%2Fb"),
            ("a%2Fb", "a%252Fb"),
            ("plain", "plain"),
            ("%", "%25"),
        ];
        for (name, want) in rows {
            assert_eq!(encode(name), want);
        }
        assert_ne!(encode("a/b"), encode("a%2Fb"));
        for name in ["a/b", "a%2Fb", "%", "%%2F/", "plain", ""] {
            assert_eq!(decode(&encode(name)).as_deref(), Some(name), "{name}");
        }
        assert_eq!(decode("a%2"), None);
        assert_eq!(decode("a%41"), None);
        for t in [0u64, 7, 10, u64::MAX - 1] {
            assert!(token_text(t) < token_text(t + 1), "{t}");
            assert_eq!(token_text(t).len(), 20);
        }
        assert_eq!(
            unpack(&pack(0xdead_beef, b"v")),
            (0xdead_beef, b"v".to_vec())
        );
    }
}
