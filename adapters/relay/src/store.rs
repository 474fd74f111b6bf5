//! The durable message store (redb): messages waiting for their recipient, nothing else.
//!
//! Writes go through one thread that batches whatever is waiting into a single durable
//! transaction (group commit), so a sender is told "accepted" only after its message is on
//! disk, without one disk sync per message. Reads use redb's concurrent read transactions.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// (recipient, seq) -> postcard [`Record`].
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (expires_at_ms, seq) -> recipient.
const EXPIRY: TableDefinition<(u64, u64), &str> = TableDefinition::new("expiry");
/// "next_seq" -> the next sequence number.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Most commands folded into one write transaction.
const MAX_BATCH: usize = 512;

#[derive(Serialize, Deserialize)]
struct Record {
    from: String,
    id: u64,
    body: String,
    expires_at: u64,
}

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The store's sequence number (increasing in insertion order).
    pub seq: u64,
    /// The sender.
    pub from: String,
    /// The sender's message id.
    pub id: u64,
    /// The opaque body.
    pub body: String,
}

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// redb failed.
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A stored record could not be decoded.
    #[error("store: corrupt record")]
    Corrupt,
    /// The recipient's queue holds too many messages or bytes.
    #[error("queue full")]
    QueueFull,
    /// The store's writer has stopped.
    #[error("store closed")]
    Closed,
}

impl StoreError {
    fn db(e: impl Into<redb::Error>) -> Self {
        Self::Db(e.into())
    }
}

/// Limits on one recipient's queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) max_messages: u64,
    pub(crate) max_bytes: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct QueueStats {
    messages: u64,
    bytes: u64,
}

/// Where a writer command's outcome goes.
type Reply = oneshot::Sender<Result<u64, StoreError>>;

enum Cmd {
    Insert {
        to: String,
        record: Record,
        limits: QueueLimits,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Delete {
        to: String,
        seq: u64,
    },
    Expire {
        now: u64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
}

/// Milliseconds since the Unix epoch (expiry uses the wall clock, which survives restarts).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The store. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Store {
    db: Arc<Database>,
    tx: mpsc::Sender<Cmd>,
    stats: Arc<Mutex<HashMap<String, QueueStats>>>,
    done: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

fn record_size(to: &str, r: &Record) -> u64 {
    (to.len() + r.from.len() + r.body.len() + 32) as u64
}

impl Store {
    /// Opens (or creates) `path` and starts the writer thread, which ends when every clone of
    /// the store is dropped.
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(StoreError::db)?;
        let txn = db.begin_write().map_err(StoreError::db)?;
        let mut stats: HashMap<String, QueueStats> = HashMap::new();
        let next_seq;
        {
            let messages = txn.open_table(MESSAGES).map_err(StoreError::db)?;
            txn.open_table(EXPIRY).map_err(StoreError::db)?;
            let meta = txn.open_table(META).map_err(StoreError::db)?;
            let mut max_seq = 0;
            for entry in messages.iter().map_err(StoreError::db)? {
                let (k, v) = entry.map_err(StoreError::db)?;
                let (to, seq) = k.value();
                let r: Record = postcard::from_bytes(v.value()).map_err(|_| StoreError::Corrupt)?;
                let s = stats.entry(to.to_string()).or_default();
                s.messages += 1;
                s.bytes += record_size(to, &r);
                max_seq = max_seq.max(seq);
            }
            let stored = meta.get("next_seq").map_err(StoreError::db)?.map_or(1, |g| g.value());
            next_seq = stored.max(max_seq + 1);
        }
        txn.commit().map_err(StoreError::db)?;
        let db = Arc::new(db);
        let stats = Arc::new(Mutex::new(stats));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer { db: db.clone(), stats: stats.clone(), next_seq };
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("otr-relay-store".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        Ok(Self { db, tx, stats, done: Arc::new(Mutex::new(Some(done))) })
    }

    /// A signal that fires when the writer thread has stopped and released the database
    /// (after every clone of the store is dropped). Only the first caller gets it.
    pub(crate) fn take_done(&self) -> Option<oneshot::Receiver<()>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Stores a message for `to`; returns its sequence number once it is durable.
    pub(crate) async fn insert(
        &self,
        to: &str,
        from: &str,
        id: u64,
        body: String,
        expires_at: u64,
        limits: QueueLimits,
    ) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        let record = Record { from: from.into(), id, body, expires_at };
        self.tx
            .send(Cmd::Insert { to: to.into(), record, limits, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes message `seq` of `to` (no-op if it is gone). Returns once queued.
    pub(crate) async fn delete(&self, to: &str, seq: u64) -> Result<(), StoreError> {
        self.tx.send(Cmd::Delete { to: to.into(), seq }).await.map_err(|_| StoreError::Closed)
    }

    /// Deletes every message that expired before `now` (Unix ms); returns how many.
    pub(crate) async fn expire(&self, now: u64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Expire { now, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Up to `limit` unexpired messages for `to` with a sequence number above `after`, in order.
    pub(crate) fn pending(
        &self,
        to: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(MESSAGES).map_err(StoreError::db)?;
        let now = unix_ms();
        let mut out = Vec::new();
        let Some(start) = after.checked_add(1) else { return Ok(out) };
        for entry in table.range((to, start)..=(to, u64::MAX)).map_err(StoreError::db)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(StoreError::db)?;
            let r: Record = postcard::from_bytes(v.value()).map_err(|_| StoreError::Corrupt)?;
            if r.expires_at <= now {
                continue;
            }
            out.push(StoredMessage { seq: k.value().1, from: r.from, id: r.id, body: r.body });
        }
        Ok(out)
    }

    /// How many messages wait for `to`.
    pub(crate) fn queued(&self, to: &str) -> u64 {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).get(to).map_or(0, |s| s.messages)
    }

    /// How many messages the store holds in all.
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(StoreError::db)?;
        let table = txn.open_table(MESSAGES).map_err(StoreError::db)?;
        table.len().map_err(StoreError::db)
    }
}

struct Writer {
    db: Arc<Database>,
    stats: Arc<Mutex<HashMap<String, QueueStats>>>,
    next_seq: u64,
}

/// What one batch changes, applied to the shared statistics after it commits.
#[derive(Default)]
struct Delta(HashMap<String, (i64, i64)>);

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Cmd>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.apply(batch);
        }
        tracing::debug!("store writer stopped");
        drop(self);
    }

    fn apply(&mut self, batch: Vec<Cmd>) {
        let seq_before = self.next_seq;
        let mut delta = Delta::default();
        let mut results: Vec<(Reply, Result<u64, StoreError>)> = Vec::new();
        let outcome = (|| -> Result<(), StoreError> {
            let txn = self.db.begin_write().map_err(StoreError::db)?;
            {
                let mut messages = txn.open_table(MESSAGES).map_err(StoreError::db)?;
                let mut expiry = txn.open_table(EXPIRY).map_err(StoreError::db)?;
                let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for cmd in batch {
                    match cmd {
                        Cmd::Insert { to, record, limits, reply } => {
                            let size = record_size(&to, &record);
                            let base = stats.get(&to).copied().unwrap_or_default();
                            let d = delta.0.get(&to).copied().unwrap_or((0, 0));
                            let msgs = base.messages.saturating_add_signed(d.0);
                            let bytes = base.bytes.saturating_add_signed(d.1);
                            if msgs >= limits.max_messages || bytes.saturating_add(size) > limits.max_bytes {
                                results.push((reply, Err(StoreError::QueueFull)));
                                continue;
                            }
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            let bytes_v = postcard::to_allocvec(&record).map_err(|_| StoreError::Corrupt)?;
                            messages
                                .insert((to.as_str(), seq), bytes_v.as_slice())
                                .map_err(StoreError::db)?;
                            expiry.insert((record.expires_at, seq), to.as_str()).map_err(StoreError::db)?;
                            let e = delta.0.entry(to).or_default();
                            e.0 += 1;
                            e.1 += size as i64;
                            results.push((reply, Ok(seq)));
                        }
                        Cmd::Delete { to, seq } => {
                            let removed = messages.remove((to.as_str(), seq)).map_err(StoreError::db)?;
                            if let Some(v) = removed {
                                let r: Record =
                                    postcard::from_bytes(v.value()).map_err(|_| StoreError::Corrupt)?;
                                drop(v);
                                expiry.remove((r.expires_at, seq)).map_err(StoreError::db)?;
                                let e = delta.0.entry(to.clone()).or_default();
                                e.0 -= 1;
                                e.1 -= record_size(&to, &r) as i64;
                            }
                        }
                        Cmd::Expire { now, reply } => {
                            let mut gone = Vec::new();
                            for entry in expiry.range((0, 0)..(now, 0)).map_err(StoreError::db)? {
                                let (k, v) = entry.map_err(StoreError::db)?;
                                gone.push((k.value(), v.value().to_string()));
                            }
                            for ((at, seq), to) in &gone {
                                expiry.remove((*at, *seq)).map_err(StoreError::db)?;
                                if let Some(v) =
                                    messages.remove((to.as_str(), *seq)).map_err(StoreError::db)?
                                {
                                    let r: Record =
                                        postcard::from_bytes(v.value()).map_err(|_| StoreError::Corrupt)?;
                                    let e = delta.0.entry(to.clone()).or_default();
                                    e.0 -= 1;
                                    e.1 -= record_size(to, &r) as i64;
                                }
                            }
                            results.push((reply, Ok(gone.len() as u64)));
                        }
                    }
                }
                let mut meta = txn.open_table(META).map_err(StoreError::db)?;
                meta.insert("next_seq", self.next_seq).map_err(StoreError::db)?;
            }
            txn.commit().map_err(StoreError::db)?;
            Ok(())
        })();
        match outcome {
            Ok(()) => {
                let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
                for (to, (m, b)) in delta.0 {
                    let s = stats.entry(to.clone()).or_default();
                    s.messages = s.messages.saturating_add_signed(m);
                    s.bytes = s.bytes.saturating_add_signed(b);
                    if s.messages == 0 {
                        stats.remove(&to);
                    }
                }
                for (reply, r) in results {
                    let _ = reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed; nothing in it was accepted");
                self.next_seq = seq_before.max(self.next_seq);
                for (reply, _) in results {
                    let _ = reply.send(Err(StoreError::Corrupt));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: QueueLimits = QueueLimits { max_messages: 3, max_bytes: 1 << 20 };

    #[tokio::test]
    async fn insert_pending_delete_expire_and_reopen() {
        let dir = std::env::temp_dir().join(format!("otr-relay-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        let far = unix_ms() + 60_000;
        let done = {
            let s = Store::open(&path).unwrap();
            let a = s.insert("bob", "alice", 1, "one".into(), far, L).await.unwrap();
            let b = s.insert("bob", "alice", 2, "two".into(), far, L).await.unwrap();
            s.insert("bob", "alice", 3, "old".into(), 1, L).await.unwrap();
            assert!(matches!(
                s.insert("bob", "alice", 4, "x".into(), far, L).await,
                Err(StoreError::QueueFull)
            ));
            assert!(a < b);
            let p = s.pending("bob", 0, 10).unwrap();
            assert_eq!(p.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["one", "two"]);
            assert_eq!(s.pending("bob", a, 10).unwrap().len(), 1);
            assert_eq!(s.expire(unix_ms()).await.unwrap(), 1);
            s.delete("bob", a).await.unwrap();
            assert_eq!(s.expire(0).await.unwrap(), 0); // a barrier: the delete is done
            assert_eq!(s.queued("bob"), 1);
            s.take_done().unwrap()
        };
        done.await.unwrap();
        let s = Store::open(&path).unwrap();
        let p = s.pending("bob", 0, 10).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].body, "two");
        assert_eq!(s.len().unwrap(), 1);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
