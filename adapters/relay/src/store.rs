//! The durable message store (redb): messages waiting for their recipient, the devices of
//! each account, and each device's push registration.
//!
//! A message is stored once per recipient account, whatever its number of devices (queue
//! limits and the size cap count it once), with the devices that must acknowledge it (its
//! *holders*): the one it names, or else every device of the recipient that is connected or
//! was seen within the device horizon (the message TTL) when it was stored. Each device's ack
//! is recorded on its own (idempotently; a device cannot ack a message meant for another one),
//! and the message is deleted once every holder has acknowledged it, or has not been seen for
//! longer than the horizon (an abandoned phone does not hold messages back for ever), or the
//! message expires. A message stored for an account that never logged in has no holders: the
//! first device's ack deletes it.
//!
//! Writes go through one thread that batches whatever is waiting into a single durable
//! transaction (group commit), so a sender is told "accepted" only after its message is on
//! disk, without one disk sync per message. Reads use redb's concurrent read transactions.
//!
//! The store holds at most `max_store_bytes` of messages in all (past it, inserts fail with
//! [`StoreError::Full`] while deletes go on), so senders cannot fill the disk. When a write
//! fails anyway (the disk filled up for another reason), redb refuses every later write until
//! the database is opened again: the writer reopens it at once and tries the batch once more,
//! so the store recovers by itself as soon as the disk has room again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use otr_relay_client::proto::PushRegistration;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// (recipient, seq) -> postcard [`Record`].
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// (expires_at_ms, seq) -> recipient.
const EXPIRY: TableDefinition<(u64, u64), &str> = TableDefinition::new("expiry");
/// "next_seq" -> the next sequence number.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (recipient, seq, device) -> (): the devices that acknowledged a message still stored.
const ACKED: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("acked");
/// (account, device) -> last seen (Unix ms): the account's registered devices.
const DEVICES: TableDefinition<(&str, &str), u64> = TableDefinition::new("devices");
/// (account, device) -> postcard [`PushRegistration`].
const PUSH: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("push");

/// Most commands folded into one write transaction.
const MAX_BATCH: usize = 512;

/// Most deletes kept for a retry after failed writes; acks beyond it are dropped (their
/// messages are delivered again at the recipient's next login).
const MAX_RETRIED_DELETES: usize = 65_536;

#[derive(Serialize, Deserialize)]
struct Record {
    from: String,
    id: u64,
    body: String,
    expires_at: u64,
    /// The one device it is meant for, if the sender named one.
    to_device: Option<String>,
    /// The devices that must acknowledge it (filled in by the writer at insert).
    holders: Vec<String>,
}

/// A record as protocol version 1 stored it (one device per account).
#[derive(Deserialize)]
struct RecordV1 {
    from: String,
    id: u64,
    body: String,
    expires_at: u64,
}

fn decode_record(bytes: &[u8]) -> Result<Record, StoreError> {
    if let Ok(r) = postcard::from_bytes::<Record>(bytes) {
        return Ok(r);
    }
    let r: RecordV1 = postcard::from_bytes(bytes).map_err(|_| StoreError::Corrupt)?;
    Ok(Record {
        from: r.from,
        id: r.id,
        body: r.body,
        expires_at: r.expires_at,
        to_device: None,
        holders: Vec::new(),
    })
}

/// A device of an account, as the store remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    /// The device id.
    pub(crate) device: String,
    /// When it last logged in or out (Unix ms).
    pub(crate) last_seen: u64,
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
    /// The store holds its most bytes in all, or the disk is full: nothing more is accepted
    /// until messages are acknowledged, expire, or the disk has room again.
    #[error("relay storage full")]
    Full,
    /// The database could not be opened again after a failed write; the next write retries.
    #[error("store unavailable after a failed write: {0}")]
    Unavailable(String),
    /// The account has the most devices allowed, all seen recently.
    #[error("too many devices")]
    TooManyDevices,
    /// The store's writer has stopped.
    #[error("store closed")]
    Closed,
}

impl StoreError {
    fn db(e: impl Into<redb::Error>) -> Self {
        Self::Db(e.into())
    }

    /// Whether the disk (or the user's quota on it) is full.
    fn is_disk_full(&self) -> bool {
        matches!(self, Self::Db(redb::Error::Io(e))
            if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded))
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
    /// `online`: the recipient's connected devices (they hold the message whatever their
    /// last-seen time).
    Insert {
        to: String,
        record: Record,
        limits: QueueLimits,
        online: Vec<String>,
        reply: Reply,
    },
    /// Outcome 1 when the message was deleted (every holder acknowledged it), else 0.
    Ack {
        to: String,
        device: String,
        seq: u64,
        online: Vec<String>,
        reply: Option<Reply>,
    },
    Expire {
        now: u64,
        reply: Reply,
    },
    /// Records that `device` of `account` was seen now (registering it if new).
    Touch {
        account: String,
        device: String,
        max_devices: usize,
        reply: Reply,
    },
    /// Sets (`Some`) or removes the device's push registration.
    SetPush {
        account: String,
        device: String,
        reg: Option<Vec<u8>>,
        reply: Reply,
    },
}

impl Cmd {
    fn take_reply(self) -> Option<Reply> {
        match self {
            Self::Insert { reply, .. }
            | Self::Expire { reply, .. }
            | Self::Touch { reply, .. }
            | Self::SetPush { reply, .. } => Some(reply),
            Self::Ack { reply, .. } => reply,
        }
    }
}

/// Milliseconds since the Unix epoch (expiry uses the wall clock, which survives restarts).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The open database; `None` only while a reopen after a failed write has not succeeded.
type Slot = Arc<RwLock<Option<Database>>>;

/// The store. Cloning shares it.
#[derive(Clone)]
pub(crate) struct Store {
    db: Slot,
    tx: mpsc::Sender<Cmd>,
    stats: Arc<Mutex<HashMap<String, QueueStats>>>,
    done: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    device_horizon_ms: u64,
}

fn record_size(to: &str, r: &Record) -> u64 {
    let holders: usize = r.holders.iter().map(|h| h.len() + 1).sum();
    (to.len() + r.from.len() + r.body.len() + r.to_device.as_ref().map_or(0, String::len) + holders + 32)
        as u64
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on the open database; the writer waits for it before reopening the database.
fn with_db<T>(slot: &Slot, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
    match slot.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(db) => f(db),
        None => Err(StoreError::Unavailable("the database is not open; the next write reopens it".into())),
    }
}

/// Opens (or creates, `0600`) the database file.
fn open_db(path: &Path) -> Result<Database, StoreError> {
    crate::files::private()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
    Database::create(path).map_err(StoreError::db)
}

impl Store {
    /// Opens (or creates) `path` and starts the writer thread, which ends when every clone of
    /// the store is dropped. The store accepts at most `max_store_bytes` of messages in all; a
    /// device unseen for longer than `device_horizon_ms` no longer holds messages back.
    pub(crate) fn open(
        path: &Path,
        max_store_bytes: u64,
        device_horizon_ms: u64,
    ) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        let txn = db.begin_write().map_err(StoreError::db)?;
        let mut stats: HashMap<String, QueueStats> = HashMap::new();
        let next_seq;
        {
            let messages = txn.open_table(MESSAGES).map_err(StoreError::db)?;
            txn.open_table(EXPIRY).map_err(StoreError::db)?;
            txn.open_table(ACKED).map_err(StoreError::db)?;
            txn.open_table(DEVICES).map_err(StoreError::db)?;
            txn.open_table(PUSH).map_err(StoreError::db)?;
            let meta = txn.open_table(META).map_err(StoreError::db)?;
            let mut max_seq = 0;
            for entry in messages.iter().map_err(StoreError::db)? {
                let (k, v) = entry.map_err(StoreError::db)?;
                let (to, seq) = k.value();
                let r: Record = decode_record(v.value())?;
                let s = stats.entry(to.to_string()).or_default();
                s.messages += 1;
                s.bytes += record_size(to, &r);
                max_seq = max_seq.max(seq);
            }
            let stored = meta.get("next_seq").map_err(StoreError::db)?.map_or(1, |g| g.value());
            next_seq = stored.max(max_seq + 1);
        }
        txn.commit().map_err(StoreError::db)?;
        let total_bytes = stats.values().map(|s| s.bytes).sum();
        let db: Slot = Arc::new(RwLock::new(Some(db)));
        let stats = Arc::new(Mutex::new(stats));
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            db: db.clone(),
            path: path.to_path_buf(),
            stats: stats.clone(),
            next_seq,
            total_bytes,
            max_store_bytes,
            device_horizon_ms,
            retry_acks: Vec::new(),
        };
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("otr-relay-store".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| StoreError::Db(redb::Error::Io(e)))?;
        Ok(Self { db, tx, stats, done: Arc::new(Mutex::new(Some(done))), device_horizon_ms })
    }

    /// A signal that fires when the writer thread has stopped and released the database
    /// (after every clone of the store is dropped). Only the first caller gets it.
    pub(crate) fn take_done(&self) -> Option<oneshot::Receiver<()>> {
        lock(&self.done).take()
    }

    /// Stores a message for `to` (for its device `to_device` only, if given); returns its
    /// sequence number once it is durable. `online` lists the recipient's connected devices.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert(
        &self,
        to: &str,
        from: &str,
        id: u64,
        body: String,
        expires_at: u64,
        to_device: Option<String>,
        online: Vec<String>,
        limits: QueueLimits,
    ) -> Result<u64, StoreError> {
        let record = Record { from: from.into(), id, body, expires_at, to_device, holders: Vec::new() };
        self.command(|reply| Cmd::Insert { to: to.into(), record, limits, online, reply }).await
    }

    /// Records that `device` of `to` acknowledged message `seq`, and deletes the message once
    /// every device holding it has (`online`: the connected devices of `to`, which hold it
    /// whatever their last-seen time). Idempotent; ignored when `seq` is gone or meant for
    /// another device. Returns once queued: the receiver says 1 if it deleted the message.
    pub(crate) async fn ack(
        &self,
        to: &str,
        device: &str,
        seq: u64,
        online: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Ack { to: to.into(), device: device.into(), seq, online, reply: Some(reply) };
        self.tx.send(cmd).await.map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Records that `device` of `account` is seen now, registering it if it is new (durable
    /// when this returns).
    ///
    /// Errors: [`StoreError::TooManyDevices`] when it is new and the account already has
    /// `max_devices` devices seen within the horizon (older ones are forgotten here, with their
    /// push registrations).
    pub(crate) async fn touch_device(
        &self,
        account: &str,
        device: &str,
        max_devices: usize,
    ) -> Result<(), StoreError> {
        self.command(|reply| Cmd::Touch {
            account: account.into(),
            device: device.into(),
            max_devices,
            reply,
        })
        .await
        .map(drop)
    }

    /// Stores (or with `None` removes) the push registration of `device` of `account`;
    /// durable when this returns.
    pub(crate) async fn set_push(
        &self,
        account: &str,
        device: &str,
        reg: Option<&PushRegistration>,
    ) -> Result<(), StoreError> {
        let reg = match reg {
            Some(r) => Some(postcard::to_allocvec(r).map_err(|_| StoreError::Corrupt)?),
            None => None,
        };
        self.command(|reply| Cmd::SetPush { account: account.into(), device: device.into(), reg, reply })
            .await
            .map(drop)
    }

    /// The registered devices of `account`, with when each was last seen.
    pub(crate) fn devices(&self, account: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        with_db(&self.db, |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(DEVICES).map_err(StoreError::db)?;
            let mut out = Vec::new();
            for entry in table.range((account, "")..=(account, "\u{7f}")).map_err(StoreError::db)? {
                let (k, v) = entry.map_err(StoreError::db)?;
                out.push(DeviceInfo { device: k.value().1.to_string(), last_seen: v.value() });
            }
            Ok(out)
        })
    }

    /// The devices of `account` that hold new messages: seen within the horizon, plus `online`.
    pub(crate) fn holding_devices(
        &self,
        account: &str,
        online: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let now = unix_ms();
        let mut out: Vec<String> = self
            .devices(account)?
            .into_iter()
            .filter(|d| d.last_seen.saturating_add(self.device_horizon_ms) > now)
            .map(|d| d.device)
            .collect();
        for d in online {
            if !out.contains(d) {
                out.push(d.clone());
            }
        }
        Ok(out)
    }

    /// The push registration of each of `devices` of `account` that has one, e.g. the devices
    /// with no live connection that the server's `on_stored` hook is told about.
    pub(crate) fn push_registrations(
        &self,
        account: &str,
        devices: &[String],
    ) -> Result<Vec<(String, PushRegistration)>, StoreError> {
        with_db(&self.db, |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(PUSH).map_err(StoreError::db)?;
            let mut out = Vec::new();
            for d in devices {
                if let Some(v) = table.get((account, d.as_str())).map_err(StoreError::db)? {
                    let reg = postcard::from_bytes(v.value()).map_err(|_| StoreError::Corrupt)?;
                    out.push((d.clone(), reg));
                }
            }
            Ok(out)
        })
    }

    /// The push registrations of the devices of `account` that are not in `online` (the
    /// devices with a live connection, which need no wake-up).
    pub(crate) fn offline_push_registrations(
        &self,
        account: &str,
        online: &[String],
    ) -> Result<Vec<(String, PushRegistration)>, StoreError> {
        let offline: Vec<String> =
            self.devices(account)?.into_iter().map(|d| d.device).filter(|d| !online.contains(d)).collect();
        self.push_registrations(account, &offline)
    }

    async fn command(&self, make: impl FnOnce(Reply) -> Cmd) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes every message that expired before `now` (Unix ms); returns how many.
    pub(crate) async fn expire(&self, now: u64) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Expire { now, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Up to `limit` unexpired messages for `device` of `to` with a sequence number above
    /// `after`, in order: those meant for every device or for this one, that this device has
    /// not acknowledged.
    pub(crate) fn pending(
        &self,
        to: &str,
        device: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        with_db(&self.db, |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            let table = txn.open_table(MESSAGES).map_err(StoreError::db)?;
            let acked = txn.open_table(ACKED).map_err(StoreError::db)?;
            let now = unix_ms();
            let mut out = Vec::new();
            let Some(start) = after.checked_add(1) else { return Ok(out) };
            for entry in table.range((to, start)..=(to, u64::MAX)).map_err(StoreError::db)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = entry.map_err(StoreError::db)?;
                let r: Record = decode_record(v.value())?;
                let seq = k.value().1;
                if r.expires_at <= now
                    || r.to_device.as_deref().is_some_and(|d| d != device)
                    || acked.get((to, seq, device)).map_err(StoreError::db)?.is_some()
                {
                    continue;
                }
                out.push(StoredMessage { seq, from: r.from, id: r.id, body: r.body });
            }
            Ok(out)
        })
    }

    /// How many messages wait for `to` (counted once, whatever its number of devices).
    #[allow(dead_code)] // the store's tests; kept for the push wiring (a wake-up's pending count)
    pub(crate) fn queued(&self, to: &str) -> u64 {
        lock(&self.stats).get(to).map_or(0, |s| s.messages)
    }

    /// How many messages wait for `device` of `to` (at most `limit` are counted).
    pub(crate) fn queued_for(&self, to: &str, device: &str, limit: usize) -> Result<u64, StoreError> {
        Ok(self.pending(to, device, 0, limit)?.len() as u64)
    }

    /// How many messages the store holds in all.
    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        with_db(&self.db, |db| {
            let txn = db.begin_read().map_err(StoreError::db)?;
            txn.open_table(MESSAGES).map_err(StoreError::db)?.len().map_err(StoreError::db)
        })
    }
}

/// Removes every device's ack of message `seq` of `to` (the message is gone).
fn remove_acks(
    acked: &mut redb::Table<'_, (&str, u64, &str), ()>,
    to: &str,
    seq: u64,
) -> Result<(), StoreError> {
    let mut devices = Vec::new();
    for entry in acked.range((to, seq, "")..=(to, seq, "\u{7f}")).map_err(StoreError::db)? {
        devices.push(entry.map_err(StoreError::db)?.0.value().2.to_string());
    }
    for d in devices {
        acked.remove((to, seq, d.as_str())).map_err(StoreError::db)?;
    }
    Ok(())
}

struct Writer {
    db: Slot,
    path: PathBuf,
    stats: Arc<Mutex<HashMap<String, QueueStats>>>,
    next_seq: u64,
    /// The bytes of every message in the store (as [`record_size`] counts them).
    total_bytes: u64,
    max_store_bytes: u64,
    device_horizon_ms: u64,
    /// Acks of batches that failed, tried again with the next batch.
    retry_acks: Vec<(String, String, u64, Vec<String>)>,
}

/// What one batch changes: per recipient (messages, bytes), applied to the shared statistics
/// after it commits, and the outcome of each command that has a reply, in batch order.
#[derive(Default)]
struct Delta {
    queues: HashMap<String, (i64, i64)>,
    /// The bytes all queues change by.
    bytes: i64,
    outcomes: Vec<Result<u64, StoreError>>,
}

impl Delta {
    fn add(&mut self, to: &str, messages: i64, bytes: i64) {
        let e = self.queues.entry(to.to_string()).or_default();
        e.0 += messages;
        e.1 += bytes;
        self.bytes += bytes;
    }
}

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

    /// Commits `batch` in one transaction and answers its commands. After a failed write the
    /// database is reopened (redb refuses every later write on the old handle) and the batch
    /// tried once more; if that fails too, nothing in it was accepted, and its deletes wait for
    /// the next batch (an ack must not be lost because the disk was full for a while).
    fn apply(&mut self, mut batch: Vec<Cmd>) {
        let retried = std::mem::take(&mut self.retry_acks);
        batch.splice(
            0..0,
            retried.into_iter().map(|(to, device, seq, online)| Cmd::Ack {
                to,
                device,
                seq,
                online,
                reply: None,
            }),
        );
        let mut outcome = self.transact(&batch);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "store transaction failed; reopening the database and trying again");
            outcome = self.reopen().and_then(|()| self.transact(&batch));
        }
        let mut outcomes = match outcome {
            Ok(delta) => {
                let mut stats = lock(&self.stats);
                for (to, (m, b)) in delta.queues {
                    let s = stats.entry(to.clone()).or_default();
                    s.messages = s.messages.saturating_add_signed(m);
                    s.bytes = s.bytes.saturating_add_signed(b);
                    self.total_bytes = self.total_bytes.saturating_add_signed(b);
                    if s.messages == 0 {
                        stats.remove(&to);
                    }
                }
                delta.outcomes.into_iter()
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed again; nothing in it was accepted");
                for cmd in &batch {
                    if let Cmd::Ack { to, device, seq, online, .. } = cmd {
                        if self.retry_acks.len() == MAX_RETRIED_DELETES {
                            tracing::warn!("too many acks waiting for the store; later acks are dropped");
                            break;
                        }
                        self.retry_acks.push((to.clone(), device.clone(), *seq, online.clone()));
                    }
                }
                let full = e.is_disk_full() || matches!(e, StoreError::Full);
                let why = e.to_string();
                let failed =
                    |_| Err(if full { StoreError::Full } else { StoreError::Unavailable(why.clone()) });
                (0..batch.len()).map(failed).collect::<Vec<_>>().into_iter()
            }
        };
        for cmd in batch {
            if let Some(reply) = cmd.take_reply() {
                let _ = reply.send(outcomes.next().unwrap_or(Err(StoreError::Closed)));
            }
        }
    }

    /// Drops the database handle and opens the file again (redb repairs it if needed).
    fn reopen(&mut self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        *slot = None;
        *slot = Some(open_db(&self.path).map_err(|e| {
            tracing::error!(error = %e, "could not reopen the store; the next write tries again");
            e
        })?);
        tracing::info!("store reopened");
        Ok(())
    }

    /// Runs `batch` in one write transaction; the outcomes are in the returned [`Delta`].
    fn transact(&mut self, batch: &[Cmd]) -> Result<Delta, StoreError> {
        if self.db.read().unwrap_or_else(|p| p.into_inner()).is_none() {
            self.reopen()?;
        }
        let seq_before = self.next_seq;
        let mut delta = Delta::default();
        let slot = self.db.clone();
        let result = with_db(&slot, |db| {
            let txn = db.begin_write().map_err(StoreError::db)?;
            {
                let mut messages = txn.open_table(MESSAGES).map_err(StoreError::db)?;
                let mut expiry = txn.open_table(EXPIRY).map_err(StoreError::db)?;
                let mut acked = txn.open_table(ACKED).map_err(StoreError::db)?;
                let mut devices = txn.open_table(DEVICES).map_err(StoreError::db)?;
                let mut push = txn.open_table(PUSH).map_err(StoreError::db)?;
                let now = unix_ms();
                let horizon = self.device_horizon_ms;
                let recent = |last_seen: u64| last_seen.saturating_add(horizon) > now;
                let stats = lock(&self.stats).clone();
                for cmd in batch {
                    match cmd {
                        Cmd::Insert { to, record, limits, online, .. } => {
                            let mut record = Record {
                                from: record.from.clone(),
                                id: record.id,
                                body: record.body.clone(),
                                expires_at: record.expires_at,
                                to_device: record.to_device.clone(),
                                holders: Vec::new(),
                            };
                            record.holders = match &record.to_device {
                                Some(d) => vec![d.clone()],
                                None => {
                                    let mut h = online.clone();
                                    let end = (to.as_str(), "\u{7f}");
                                    for entry in
                                        devices.range((to.as_str(), "")..=end).map_err(StoreError::db)?
                                    {
                                        let (k, v) = entry.map_err(StoreError::db)?;
                                        let d = k.value().1;
                                        if recent(v.value()) && !h.iter().any(|x| x == d) {
                                            h.push(d.to_string());
                                        }
                                    }
                                    h
                                }
                            };
                            let record = &record;
                            let size = record_size(to, record);
                            let base = stats.get(to).copied().unwrap_or_default();
                            let d = delta.queues.get(to).copied().unwrap_or((0, 0));
                            let msgs = base.messages.saturating_add_signed(d.0);
                            let bytes = base.bytes.saturating_add_signed(d.1);
                            let total = self.total_bytes.saturating_add_signed(delta.bytes);
                            if total.saturating_add(size) > self.max_store_bytes {
                                delta.outcomes.push(Err(StoreError::Full));
                                continue;
                            }
                            if msgs >= limits.max_messages || bytes.saturating_add(size) > limits.max_bytes {
                                delta.outcomes.push(Err(StoreError::QueueFull));
                                continue;
                            }
                            let seq = self.next_seq;
                            self.next_seq += 1;
                            let bytes_v = postcard::to_allocvec(record).map_err(|_| StoreError::Corrupt)?;
                            messages
                                .insert((to.as_str(), seq), bytes_v.as_slice())
                                .map_err(StoreError::db)?;
                            expiry.insert((record.expires_at, seq), to.as_str()).map_err(StoreError::db)?;
                            delta.add(to, 1, size as i64);
                            delta.outcomes.push(Ok(seq));
                        }
                        Cmd::Ack { to, device, seq, online, reply } => {
                            let record = match messages.get((to.as_str(), *seq)).map_err(StoreError::db)? {
                                Some(v) => Some(decode_record(v.value())?),
                                None => None,
                            };
                            let mut deleted = 0;
                            if let Some(r) =
                                record.filter(|r| r.to_device.as_deref().is_none_or(|d| d == device))
                            {
                                acked
                                    .insert((to.as_str(), *seq, device.as_str()), ())
                                    .map_err(StoreError::db)?;
                                let mut done = true;
                                for h in &r.holders {
                                    if h == device
                                        || acked
                                            .get((to.as_str(), *seq, h.as_str()))
                                            .map_err(StoreError::db)?
                                            .is_some()
                                    {
                                        continue;
                                    }
                                    let seen =
                                        devices.get((to.as_str(), h.as_str())).map_err(StoreError::db)?;
                                    if online.contains(h) || seen.is_some_and(|s| recent(s.value())) {
                                        done = false;
                                        break;
                                    }
                                }
                                if done {
                                    messages.remove((to.as_str(), *seq)).map_err(StoreError::db)?;
                                    expiry.remove((r.expires_at, *seq)).map_err(StoreError::db)?;
                                    remove_acks(&mut acked, to, *seq)?;
                                    delta.add(to, -1, -(record_size(to, &r) as i64));
                                    deleted = 1;
                                }
                            }
                            if reply.is_some() {
                                delta.outcomes.push(Ok(deleted));
                            }
                        }
                        Cmd::Touch { account, device, max_devices, .. } => {
                            let known = devices
                                .get((account.as_str(), device.as_str()))
                                .map_err(StoreError::db)?
                                .is_some();
                            if !known {
                                let mut active = 0usize;
                                let mut stale = Vec::new();
                                let end = (account.as_str(), "\u{7f}");
                                for entry in
                                    devices.range((account.as_str(), "")..=end).map_err(StoreError::db)?
                                {
                                    let (k, v) = entry.map_err(StoreError::db)?;
                                    if recent(v.value()) {
                                        active += 1;
                                    } else {
                                        stale.push(k.value().1.to_string());
                                    }
                                }
                                for d in &stale {
                                    devices.remove((account.as_str(), d.as_str())).map_err(StoreError::db)?;
                                    push.remove((account.as_str(), d.as_str())).map_err(StoreError::db)?;
                                }
                                if active >= *max_devices {
                                    delta.outcomes.push(Err(StoreError::TooManyDevices));
                                    continue;
                                }
                            }
                            devices
                                .insert((account.as_str(), device.as_str()), now)
                                .map_err(StoreError::db)?;
                            delta.outcomes.push(Ok(0));
                        }
                        Cmd::SetPush { account, device, reg, .. } => {
                            let key = (account.as_str(), device.as_str());
                            match reg {
                                Some(bytes) => {
                                    push.insert(key, bytes.as_slice()).map_err(StoreError::db)?;
                                }
                                None => {
                                    push.remove(key).map_err(StoreError::db)?;
                                }
                            }
                            delta.outcomes.push(Ok(0));
                        }
                        Cmd::Expire { now, .. } => {
                            let mut gone = Vec::new();
                            for entry in expiry.range((0, 0)..(*now, 0)).map_err(StoreError::db)? {
                                let (k, v) = entry.map_err(StoreError::db)?;
                                gone.push((k.value(), v.value().to_string()));
                            }
                            for ((at, seq), to) in &gone {
                                expiry.remove((*at, *seq)).map_err(StoreError::db)?;
                                let removed =
                                    match messages.remove((to.as_str(), *seq)).map_err(StoreError::db)? {
                                        Some(v) => Some(decode_record(v.value())?),
                                        None => None,
                                    };
                                if let Some(r) = removed {
                                    remove_acks(&mut acked, to, *seq)?;
                                    delta.add(to, -1, -(record_size(to, &r) as i64));
                                }
                            }
                            delta.outcomes.push(Ok(gone.len() as u64));
                        }
                    }
                }
                let mut meta = txn.open_table(META).map_err(StoreError::db)?;
                meta.insert("next_seq", self.next_seq).map_err(StoreError::db)?;
            }
            txn.commit().map_err(StoreError::db)
        });
        match result {
            Ok(()) => Ok(delta),
            Err(e) => {
                // Sequence numbers handed out in the failed transaction are not reused.
                self.next_seq = seq_before.max(self.next_seq);
                Err(e)
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
            let s = Store::open(&path, u64::MAX, 60_000).unwrap();
            let a = s.insert("bob", "alice", 1, "one".into(), far, None, vec![], L).await.unwrap();
            let b = s.insert("bob", "alice", 2, "two".into(), far, None, vec![], L).await.unwrap();
            s.insert("bob", "alice", 3, "old".into(), 1, None, vec![], L).await.unwrap();
            assert!(matches!(
                s.insert("bob", "alice", 4, "x".into(), far, None, vec![], L).await,
                Err(StoreError::QueueFull)
            ));
            assert!(a < b);
            let p = s.pending("bob", "default", 0, 10).unwrap();
            assert_eq!(p.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(), ["one", "two"]);
            assert_eq!(s.pending("bob", "default", a, 10).unwrap().len(), 1);
            assert_eq!(s.expire(unix_ms()).await.unwrap(), 1);
            assert_eq!(s.ack("bob", "default", a, vec![]).await.unwrap().await.unwrap().unwrap(), 1);
            assert_eq!(s.expire(0).await.unwrap(), 0); // a barrier: the delete is done
            assert_eq!(s.queued("bob"), 1);
            s.take_done().unwrap()
        };
        done.await.unwrap();
        let s = Store::open(&path, u64::MAX, 60_000).unwrap();
        let p = s.pending("bob", "default", 0, 10).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].body, "two");
        assert_eq!(s.len().unwrap(), 1);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn protocol_1_records_are_read_and_the_first_ack_deletes_them() {
        let dir = std::env::temp_dir().join(format!("otr-relay-store-v1-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        let far = unix_ms() + 60_000;
        {
            // What protocol 1 wrote: (from, id, body, expires_at), no devices.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let v1 = postcard::to_allocvec(&("alice", 7u64, "?OTR:old.", far)).unwrap();
                txn.open_table(MESSAGES).unwrap().insert(("bob", 1), v1.as_slice()).unwrap();
                txn.open_table(EXPIRY).unwrap().insert((far, 1), "bob").unwrap();
                txn.open_table(META).unwrap().insert("next_seq", 2).unwrap();
            }
            txn.commit().unwrap();
        }
        let s = Store::open(&path, u64::MAX, 60_000).unwrap();
        let p = s.pending("bob", "phone", 0, 10).unwrap();
        assert_eq!(p, [StoredMessage { seq: 1, from: "alice".into(), id: 7, body: "?OTR:old.".into() }]);
        assert_eq!(s.ack("bob", "phone", 1, vec![]).await.unwrap().await.unwrap().unwrap(), 1);
        assert_eq!(s.len().unwrap(), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn each_device_acks_its_own_copy() {
        let dir = std::env::temp_dir().join(format!("otr-relay-store-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = Store::open(&dir.join("db"), u64::MAX, 60_000).unwrap();
        let far = unix_ms() + 60_000;
        s.touch_device("bob", "phone", 2).await.unwrap();
        s.touch_device("bob", "laptop", 2).await.unwrap();
        assert!(matches!(s.touch_device("bob", "tablet", 2).await, Err(StoreError::TooManyDevices)));
        let a = s.insert("bob", "alice", 1, "all".into(), far, None, vec![], L).await.unwrap();
        let b =
            s.insert("bob", "alice", 2, "phone".into(), far, Some("phone".into()), vec![], L).await.unwrap();
        assert_eq!(s.queued("bob"), 2);
        assert_eq!(s.pending("bob", "laptop", 0, 10).unwrap().len(), 1);
        assert_eq!(s.pending("bob", "phone", 0, 10).unwrap().len(), 2);
        let ack = |d: &'static str, seq| {
            let s = s.clone();
            async move { s.ack("bob", d, seq, vec![]).await.unwrap().await.unwrap().unwrap() }
        };
        assert_eq!(ack("laptop", a).await, 0);
        assert_eq!(ack("laptop", a).await, 0); // idempotent
        assert_eq!(ack("laptop", b).await, 0); // not the laptop's: ignored
        assert!(s.pending("bob", "laptop", 0, 10).unwrap().is_empty());
        assert_eq!(s.pending("bob", "phone", 0, 10).unwrap().len(), 2);
        assert_eq!(ack("phone", b).await, 1);
        assert_eq!(ack("phone", a).await, 1);
        assert_eq!(ack("phone", a).await, 0);
        assert_eq!(s.len().unwrap(), 0);
        assert_eq!(s.queued("bob"), 0);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
