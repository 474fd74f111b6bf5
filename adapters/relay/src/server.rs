//! The relay server: accepts TLS 1.3 connections, authenticates accounts, stores messages
//! durably and delivers them in order until acknowledged.
//!
//! An account may be connected on several devices at once, one connection per device id (the
//! login names it; a second login of the same device replaces the first connection, as a
//! reconnect does). Each device that has logged in is registered in the store with its
//! last-seen time, up to `max_devices_per_account`. A message is delivered to every device of
//! its recipient (or to the one `Send::to_device` names), each device acknowledges its own
//! copy, and the message is deleted once every device holding it has acknowledged it or it
//! expires. A device unseen for longer than the message TTL stops holding messages back, so an
//! abandoned phone cannot fill the store; a device that was offline gets its messages, in
//! order, when it comes back (see the store's module docs).
//!
//! Each device may register a push endpoint (`RegisterPush`), kept in the store. After a
//! message is durably stored, the server's `on_stored` hook is told the recipient's devices
//! that hold it and have no live connection (a [`StoredHook`], for the push sender).
//!
//! Per connection there are two tasks: a reader (frames from the client: send, ack, ping) and
//! a writer (answers and deliveries). Senders never write to another client's socket: they
//! store the message and wake the recipient's writer, which reads its queue from the store.
//! So a slow or stuck reader holds up nobody else; its writer gives up after the write
//! timeout and the messages stay stored for the next login.
//!
//! Before a connection costs anything it is counted against two limits, at accept and before
//! the TLS handshake: `max_connections` in all and `max_connections_per_ip` per address (an
//! IPv4 address, or the /64 prefix of an IPv6 one). A connection over its address's limit is
//! told `TooManyConnections` when one of [`POLITE_REFUSALS`] handshakes is free (each within
//! [`REFUSAL_TIMEOUT`]) and closed at once otherwise; it never holds a slot.
//!
//! Logins are checked with Argon2id, [`HASHING_SLOTS`] at a time. Each address has one place
//! in that queue (its other logins wait behind it), and no login waits longer than
//! `login_queue_timeout` (it is told `RateLimited`: the server is busy, retry). Account names
//! that cannot exist are refused before any hash or table entry. Failures count per address
//! (whatever the account name) and per account (an exponential backoff, except for the
//! addresses the account last logged in from); the tables that remember them are bounded by
//! `login_table_entries` each and forget entries after `login_lockout`. See [`Limits`].

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::accounts::{self, AccountError, Accounts, Argon2Params};
use crate::proto::{
    self, ClientFrame, DEFAULT_DEVICE, ErrorCode, FrameError, PROTOCOL_VERSION, PushRegistration, ServerFrame,
};
use crate::push::{EndpointError, PushConfig, PushEndpoint, PushOutcome, PushReport, Pusher, VapidKey};
use crate::store::{QueueLimits, Store, StoreError, unix_ms};
use crate::tls::{CertFingerprint, ServerIdentity, TlsError};

mod throttle;

use throttle::{AddrGroup, Throttle};

/// Argon2id hashes computed at once (each takes its memory cost and one core).
pub const HASHING_SLOTS: usize = 2;

/// Connections over their address's limit that are still told why (a TLS handshake and one
/// `TooManyConnections` frame); beyond these, such connections are closed without a word.
pub const POLITE_REFUSALS: usize = 64;

/// How long a connection refused for its address gets for that handshake and frame.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's limits and timeouts. [`Default`] gives values for a small public relay.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame payload accepted, in bytes; a larger announced frame gets
    /// [`ErrorCode::FrameTooLarge`] and the connection is closed.
    pub max_frame_bytes: usize,
    /// Most messages waiting for one recipient.
    pub queue_max_messages: u64,
    /// Most bytes waiting for one recipient.
    pub queue_max_bytes: u64,
    /// Most bytes of messages the store holds in all (bodies, names and a small overhead per
    /// message), so that senders cannot fill the disk; past it, sends get
    /// [`ErrorCode::StorageFull`] while acks still delete.
    pub max_store_bytes: u64,
    /// Most simultaneous connections from one address (an IPv4 address, or an IPv6 /64),
    /// counted at accept, before the TLS handshake.
    pub max_connections_per_ip: usize,
    /// Most simultaneous connections in all; beyond it new ones are closed without a word.
    pub max_connections: usize,
    /// Messages per second one account may send (sustained).
    pub messages_per_second: u32,
    /// Messages one account may send in a burst.
    pub burst: u32,
    /// A logged-in connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Time for the TLS handshake plus the login frame.
    pub login_timeout: Duration,
    /// A single frame write that takes longer than this means a slow reader: it is
    /// disconnected (its messages stay stored).
    pub write_timeout: Duration,
    /// How long an undelivered message is kept. Also the device horizon: a device unseen for
    /// longer no longer holds messages back (and is forgotten when its account registers a new
    /// device).
    pub message_ttl: Duration,
    /// Most devices one account may have seen within the message TTL; a login from a further
    /// device is refused with [`ErrorCode::TooManyDevices`].
    pub max_devices_per_account: usize,
    /// How often expired messages are swept.
    pub sweep_interval: Duration,
    /// Delay before answering a failed login, or one refused after too many failures.
    pub login_failure_delay: Duration,
    /// Failed logins one account may have before it backs off: then each try must wait
    /// `login_backoff`, doubled with each further failure, up to `login_lockout`, or it is
    /// refused with [`ErrorCode::TooManyAttempts`] unchecked. The addresses the account last
    /// logged in from are exempt (until a login from one of them fails), so strangers cannot
    /// lock out its owner. A successful login ends the backoff.
    pub max_login_failures: u32,
    /// The first wait of an account's backoff (see `max_login_failures`).
    pub login_backoff: Duration,
    /// Failed logins one address (an IPv4 address, or an IPv6 /64) may have within
    /// `login_lockout`, whatever the account names; more are refused unchecked until the
    /// window ends (except for accounts that last logged in from there).
    pub max_login_failures_per_ip: u32,
    /// The per-address failure window, the longest account backoff, and how long failures
    /// are remembered.
    pub login_lockout: Duration,
    /// The longest a login waits for its turn at the Argon2 hash ([`HASHING_SLOTS`] at a
    /// time, one place per address); past it the login is refused with
    /// [`ErrorCode::RateLimited`] ("the server is busy; retry").
    pub login_queue_timeout: Duration,
    /// Entries in each table of login failures (per address, per account) and of the
    /// addresses accounts logged in from; when one is full its oldest entry is forgotten.
    pub login_table_entries: usize,
    /// Undecodable frames tolerated on one connection before it is closed.
    pub max_bad_frames: u32,
    /// Deliveries sent but not yet acknowledged, per connection.
    pub delivery_window: usize,
    /// Frames queued for one connection's writer (the bounded send buffer).
    pub send_buffer_frames: usize,
    /// On shutdown, how long connections get to finish before they are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: proto::DEFAULT_MAX_FRAME,
            queue_max_messages: 1000,
            queue_max_bytes: 8 << 20,
            max_store_bytes: 1 << 30,
            max_connections_per_ip: 16,
            max_connections: 4096,
            messages_per_second: 20,
            burst: 100,
            idle_timeout: Duration::from_secs(120),
            login_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            message_ttl: Duration::from_secs(7 * 24 * 3600),
            max_devices_per_account: 16,
            sweep_interval: Duration::from_secs(60),
            login_failure_delay: Duration::from_secs(1),
            max_login_failures: 5,
            login_backoff: Duration::from_secs(1),
            max_login_failures_per_ip: 20,
            login_lockout: Duration::from_secs(300),
            login_queue_timeout: Duration::from_secs(5),
            login_table_entries: 10_000,
            max_bad_frames: 100,
            delivery_window: 128,
            send_buffer_frames: 64,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How to run a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Directory for the store, the accounts file and a generated certificate.
    pub data_dir: PathBuf,
    /// PEM certificate chain and key; when `None`, `cert.pem`/`key.pem` in `data_dir`
    /// (generated on first start).
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Argon2 parameters of the dummy hash computed for unknown accounts while the accounts
    /// file is empty; once it has accounts, the dummy uses the parameters most of them have,
    /// so that a failed login costs the same whether or not the account exists.
    pub argon2: Argon2Params,
    /// Told what happens to messages (stored, delivered, deleted, expired); `None` by default.
    pub observer: Option<Observer>,
    /// Called after a message is durably stored, with its recipient's devices that hold it
    /// and have no live connection (where push wake-ups plug in); `None` by default.
    pub on_stored: Option<StoredHook>,
    /// Push wake-ups for devices without a live connection, with their policy; `None` (the
    /// default for an embedded server) sends none and refuses registrations.
    pub push: Option<PushConfig>,
}

/// A callback called after a message is durably stored for an account, with the account and
/// those of its devices that hold the message and have no live connection (possibly none).
/// It runs on the sender's connection task, before the sender is answered: keep it quick
/// (hand the work to another task).
#[derive(Clone)]
pub struct StoredHook(Arc<StoredFn>);

/// What a [`StoredHook`] calls: `(account, offline_devices)`.
type StoredFn = dyn Fn(&str, &[String]) + Send + Sync;

impl StoredHook {
    /// Calls `f(account, offline_devices)` after each stored message.
    pub fn new(f: impl Fn(&str, &[String]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for StoredHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredHook")
    }
}

/// What happened to a message in the relay's store, as an [`Observer`] is told. It names
/// accounts and sizes, never contents.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreEvent {
    /// A message was committed to the store (the sender is answered "accepted" next).
    Stored {
        /// The store's sequence number.
        seq: u64,
        /// The sender account.
        from: String,
        /// The recipient account.
        to: String,
        /// The body's length in bytes.
        bytes: usize,
    },
    /// A stored message was written to its recipient's connection.
    Delivered {
        /// The sequence number.
        seq: u64,
        /// The recipient account.
        to: String,
    },
    /// Every device of the recipient that holds `seq` acknowledged it (the last ack is this
    /// event): it is deleted from the store.
    Deleted {
        /// The sequence number.
        seq: u64,
        /// The recipient account.
        to: String,
    },
    /// The sweeper deleted `count` messages whose time to live ran out undelivered.
    Expired {
        /// How many.
        count: u64,
    },
}

/// A callback told every [`StoreEvent`], for demos and monitoring (the chat-pair example shows
/// what the relay held and when it deleted it). It runs on the server's tasks: keep it quick.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(StoreEvent) + Send + Sync>);

impl Observer {
    /// Calls `f` with every event.
    pub fn new(f: impl Fn(StoreEvent) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

impl ServerConfig {
    /// Defaults for `data_dir`, listening on `listen`.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            cert_and_key: None,
            limits: Limits::default(),
            argon2: Argon2Params::default(),
            observer: None,
            on_stored: None,
            push: None,
        }
    }
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Listening or the data directory failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The certificate or key.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The accounts file.
    #[error(transparent)]
    Accounts(#[from] AccountError),
    /// The push sender could not start (its VAPID key in the data directory, or TLS).
    #[error("push wake-ups: {0}")]
    Push(String),
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
    fingerprint: CertFingerprint,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

struct Online {
    conn: u64,
    wake: Arc<Notify>,
    kick: Option<oneshot::Sender<()>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct State {
    limits: Limits,
    acceptor: TlsAcceptor,
    store: Store,
    accounts: Mutex<Accounts>,
    /// account -> device -> its live connection.
    online: Mutex<HashMap<String, HashMap<String, Online>>>,
    per_ip: Mutex<HashMap<AddrGroup, usize>>,
    /// Connections refused for their address that are being told so.
    refusals: Arc<Semaphore>,
    throttle: Mutex<Throttle>,
    buckets: Mutex<HashMap<String, Bucket>>,
    /// Argon2 is memory- and CPU-hungry: at most [`HASHING_SLOTS`] at once.
    hashing: Semaphore,
    /// Each address's place in the hashing queue: one login at a time per address.
    hashing_turns: Mutex<HashMap<AddrGroup, Arc<Semaphore>>>,
    shutdown: watch::Receiver<bool>,
    next_conn: AtomicU64,
    connections: AtomicU64,
    observer: Option<Observer>,
    on_stored: Option<StoredHook>,
    pusher: Option<Pusher>,
}

impl State {
    fn observe(&self, event: impl FnOnce() -> StoreEvent) {
        if let Some(o) = &self.observer {
            (o.0)(event());
        }
    }

    /// The devices of `account` with a live connection.
    fn online_devices(&self, account: &str) -> Vec<String> {
        lock(&self.online).get(account).map(|d| d.keys().cloned().collect()).unwrap_or_default()
    }

    /// Called after a message is durably stored for `account`, with those of its devices
    /// that hold it and have no live connection: where push wake-ups plug in.
    fn on_stored(&self, account: &str, offline_devices: &[String]) {
        tracing::debug!(account, offline = offline_devices.len(), "stored for devices without a connection");
        if let Some(h) = &self.on_stored {
            (h.0)(account, offline_devices);
        }
        let Some(pusher) = &self.pusher else { return };
        let registrations = match self.store.push_registrations(account, offline_devices) {
            Ok(r) => r,
            Err(e) => return tracing::error!(error = %e, "cannot read push registrations"),
        };
        for (device, reg) in registrations {
            // Never blocks: a full queue or a backed-off endpoint only skips this wake-up.
            match push_endpoint(&reg).map(|endpoint| pusher.wake(account, &endpoint)) {
                Ok(Ok(status)) => tracing::debug!(account, device, ?status, "wake-up"),
                Ok(Err(e)) => tracing::warn!(account, device, error = %e, "wake-up not sent"),
                Err(e) => tracing::warn!(account, device, error = %e, "stored push endpoint unusable"),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Server {
    /// Loads or generates the certificate, opens the store and binds the listener.
    ///
    /// # Errors
    /// [`ServerError`] if any of these fails.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        crate::files::secure_dir(&config.data_dir)?;
        let identity = match &config.cert_and_key {
            Some((c, k)) => ServerIdentity::from_files(c, k)?,
            None => ServerIdentity::load_or_generate(&config.data_dir)?,
        };
        let acceptor = TlsAcceptor::from(identity.server_config()?);
        let horizon = u64::try_from(config.limits.message_ttl.as_millis()).unwrap_or(u64::MAX);
        let store =
            Store::open(&config.data_dir.join("messages.redb"), config.limits.max_store_bytes, horizon)?;
        let accounts = Accounts::open(&config.data_dir, config.argon2)?;
        let listener = TcpListener::bind(config.listen).await?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (dropped_tx, dropped) = mpsc::unbounded_channel();
        let pusher = match config.push {
            Some(push) => Some(start_pusher(push, &config.data_dir, dropped_tx)?),
            None => None,
        };
        let state = Arc::new(State {
            throttle: Mutex::new(Throttle::new(&config.limits)),
            limits: config.limits,
            acceptor,
            store,
            accounts: Mutex::new(accounts),
            online: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            refusals: Arc::new(Semaphore::new(POLITE_REFUSALS)),
            buckets: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(HASHING_SLOTS),
            hashing_turns: Mutex::new(HashMap::new()),
            shutdown,
            next_conn: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            observer: config.observer,
            on_stored: config.on_stored,
            pusher,
        });
        tokio::spawn(forget_dropped_endpoints(Arc::downgrade(&state), dropped));
        Ok(Self { listener, state, fingerprint: identity.fingerprint(), shutdown_tx })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// If the OS cannot tell.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The SHA-256 fingerprint of the server certificate, for clients to pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// Serves until `shutdown` completes, then closes every connection (telling each client
    /// [`ErrorCode::ShuttingDown`]), waits for them up to the grace period, and releases the
    /// store. Every message answered with "accepted" is on disk by then.
    ///
    /// # Errors
    /// [`ServerError`] if accepting fails fatally.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Self { listener, state, shutdown_tx, .. } = self;
        let mut tasks = JoinSet::new();
        tasks.spawn(sweeper(state.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => admit(&state, &mut tasks, tcp, peer),
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        tracing::info!("shutting down");
        drop(listener);
        let _ = shutdown_tx.send(true);
        let grace = state.limits.shutdown_grace;
        let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("connections still open after the grace period; dropping them");
            tasks.shutdown().await;
        }
        let done = state.store.take_done();
        drop(state);
        if let Some(done) = done {
            let _ = done.await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Runs the server on the current runtime in the background.
    ///
    /// # Errors
    /// If the local address cannot be read.
    pub fn spawn(self) -> std::io::Result<ServerHandle> {
        let addr = self.local_addr()?;
        let fingerprint = self.fingerprint;
        let store = self.state.store.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        Ok(ServerHandle { addr, fingerprint, stop: Some(tx), task, store: Some(store) })
    }
}

/// A server running in the background (see [`Server::spawn`]).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    fingerprint: CertFingerprint,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
    store: Option<Store>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate fingerprint to pin.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// How many messages the store holds (waiting for delivery or an ack).
    ///
    /// # Errors
    /// If the store cannot be read.
    pub fn stored_messages(&self) -> Result<u64, ServerError> {
        match &self.store {
            Some(s) => Ok(s.len()?),
            None => Ok(0),
        }
    }

    /// The devices `account` has registered (logged in from at least once and not forgotten).
    ///
    /// # Errors
    /// If the store cannot be read.
    pub fn devices(&self, account: &str) -> Result<Vec<String>, ServerError> {
        match &self.store {
            Some(s) => Ok(s.devices(account)?.into_iter().map(|d| d.device).collect()),
            None => Ok(Vec::new()),
        }
    }

    /// The push registrations of `account`'s devices, by device.
    ///
    /// # Errors
    /// If the store cannot be read.
    pub fn push_registrations(&self, account: &str) -> Result<Vec<(String, PushRegistration)>, ServerError> {
        match &self.store {
            Some(s) => Ok(s.offline_push_registrations(account, &[])?),
            None => Ok(Vec::new()),
        }
    }

    /// Shuts the server down gracefully and waits until the store is released.
    ///
    /// # Errors
    /// The server's own error, if it failed.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        self.store = None;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e))),
        }
    }
}

/// Takes a new TCP connection: counts it against the limits and spawns its task. Both limits
/// apply here, before the TLS handshake, so connections over them never hold a slot.
fn admit(state: &Arc<State>, tasks: &mut JoinSet<()>, tcp: TcpStream, peer: SocketAddr) {
    let total = state.connections.load(Ordering::Relaxed);
    if total >= state.limits.max_connections as u64 {
        tracing::warn!(%peer, "connection limit reached; closing");
        return; // dropping `tcp` closes it
    }
    let group = AddrGroup::from(peer.ip());
    let admitted = {
        let mut per_ip = lock(&state.per_ip);
        let n = per_ip.get(&group).copied().unwrap_or(0);
        let admitted = n < state.limits.max_connections_per_ip;
        if admitted {
            per_ip.insert(group, n + 1);
        }
        admitted
    };
    if !admitted {
        refuse(state, tasks, tcp, peer);
        return;
    }
    let guard = ConnGuard { state: state.clone(), group };
    state.connections.fetch_add(1, Ordering::Relaxed);
    let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
    let state = state.clone();
    tasks.spawn(async move {
        let _guard = guard;
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(state.limits.login_timeout, state.acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(conn = id, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(conn = id, %peer, "TLS handshake timed out");
                return;
            }
        };
        connection(state, tls, peer, id).await;
    });
}

/// Refuses a connection over its address's limit: with a `TooManyConnections` frame when one
/// of the [`POLITE_REFUSALS`] is free, else by closing it.
fn refuse(state: &Arc<State>, tasks: &mut JoinSet<()>, tcp: TcpStream, peer: SocketAddr) {
    tracing::debug!(%peer, "too many connections from this address; refusing");
    let Ok(permit) = state.refusals.clone().try_acquire_owned() else { return };
    let state = state.clone();
    tasks.spawn(async move {
        let _permit = permit;
        let refusal = async {
            let mut tls = state.acceptor.accept(tcp).await.ok()?;
            let message = "too many connections from your address; close some or retry later";
            reply_and_close(&mut tls, &state, ErrorCode::TooManyConnections, message).await.ok()
        };
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refusal).await;
    });
}

struct ConnGuard {
    state: Arc<State>,
    group: AddrGroup,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.state.connections.fetch_sub(1, Ordering::Relaxed);
        let mut per_ip = lock(&self.state.per_ip);
        if let Some(n) = per_ip.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.group);
            }
        }
    }
}

/// An address's turn at the login hash: while it is held, other logins from the same address
/// wait (so each address has at most one place in the shared hashing queue).
struct HashingTurn<'a> {
    state: &'a State,
    group: AddrGroup,
    queue: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<'a> HashingTurn<'a> {
    /// Waits until `deadline` for `group`'s turn; `None` if it did not come.
    async fn wait(state: &'a State, group: AddrGroup, deadline: tokio::time::Instant) -> Option<Self> {
        let queue =
            lock(&state.hashing_turns).entry(group).or_insert_with(|| Arc::new(Semaphore::new(1))).clone();
        // Made before waiting, so that a timeout or a cancelled task also cleans up.
        let mut turn = Self { state, group, queue: Some(queue.clone()), permit: None };
        let acquired = tokio::time::timeout_at(deadline, queue.acquire_owned()).await;
        turn.permit = Some(acquired.ok()?.ok()?);
        Some(turn)
    }
}

impl Drop for HashingTurn<'_> {
    fn drop(&mut self) {
        let mut turns = lock(&self.state.hashing_turns);
        // A queue is taken from the map under this lock only, and other copies are dropped
        // after their turn: when the map's copy is the last one, nobody holds or awaits a turn.
        self.permit = None;
        self.queue = None;
        if turns.get(&self.group).is_some_and(|q| Arc::strong_count(q) == 1) {
            turns.remove(&self.group);
        }
    }
}

fn error(code: ErrorCode, id: Option<u64>, message: &str) -> ServerFrame {
    ServerFrame::Error { code, id, message: message.into() }
}

/// Writes an error frame (bounded by the write timeout) and closes the TLS session.
async fn reply_and_close<S: AsyncWrite + Unpin>(
    s: &mut S,
    state: &State,
    code: ErrorCode,
    message: &str,
) -> Result<(), FrameError> {
    let w = state.limits.write_timeout;
    let r = tokio::time::timeout(w, proto::write_frame(s, &error(code, None, message))).await;
    let _ = tokio::time::timeout(w, s.shutdown()).await;
    r.map_err(|_| FrameError::Io(std::io::ErrorKind::TimedOut.into()))?
}

enum Out {
    Frame(ServerFrame),
    Acked(u64),
}

type Tls = TlsStream<TcpStream>;

/// One client connection, from the login frame on.
async fn connection(state: Arc<State>, mut tls: Tls, peer: SocketAddr, id: u64) {
    let Some((account, device)) = login(&state, &mut tls, peer, id).await else { return };
    let span = tracing::info_span!("conn", conn = id, account = %account, device = %device);

    // Register, replacing an older connection of the same device.
    let wake = Arc::new(Notify::new());
    let (kick_tx, kick_rx) = oneshot::channel();
    let old = lock(&state.online)
        .entry(account.clone())
        .or_default()
        .insert(device.clone(), Online { conn: id, wake: wake.clone(), kick: Some(kick_tx) });
    if let Some(mut old) = old {
        if let Some(k) = old.kick.take() {
            let _ = k.send(());
        }
    }
    tracing::info!(parent: &span, %peer, "logged in");

    let (rd, wr) = tokio::io::split(tls);
    let (tx, rx) = mpsc::channel(state.limits.send_buffer_frames.max(1));
    let who = Who { account: account.clone(), device: device.clone() };
    let mut writer = tokio::spawn(writer(state.clone(), who.clone(), wr, rx, wake, kick_rx, span.clone()));
    let reason = reader(&state, &who, rd, &tx, &mut writer).await;
    drop(tx);
    // Let the writer flush a final error frame, bounded by the write timeout.
    if !writer.is_finished() && tokio::time::timeout(state.limits.write_timeout, &mut writer).await.is_err() {
        writer.abort();
    }
    let replaced = {
        let mut online = lock(&state.online);
        let devices = online.get_mut(&account);
        let ours = devices.as_ref().and_then(|d| d.get(&device)).is_some_and(|o| o.conn == id);
        if let (true, Some(devices)) = (ours, devices) {
            devices.remove(&device);
            if devices.is_empty() {
                online.remove(&account);
            }
        }
        !ours
    };
    if !replaced {
        // Last seen now: the device horizon counts from its last connection.
        if let Err(e) = state.store.touch_device(&account, &device, usize::MAX).await {
            tracing::warn!(parent: &span, error = %e, "could not record when the device was last seen");
        }
    }
    tracing::info!(parent: &span, reason, "disconnected");
}

/// A logged-in connection's account and device.
#[derive(Clone)]
struct Who {
    account: String,
    device: String,
}

/// Reads and checks the login frame; answers Welcome or an error. Returns the account and
/// the device.
async fn login(state: &Arc<State>, tls: &mut Tls, peer: SocketAddr, id: u64) -> Option<(String, String)> {
    let limits = &state.limits;
    let frame =
        tokio::time::timeout(limits.login_timeout, proto::read_frame(tls, limits.max_frame_bytes)).await;
    let (account, secret, device) = match frame {
        Err(_) => {
            let _ = reply_and_close(tls, state, ErrorCode::NotLoggedIn, "no login within the login timeout")
                .await;
            return None;
        }
        Ok(Err(FrameError::TooLarge { announced, .. })) => {
            tracing::warn!(conn = id, %peer, announced, "oversized frame before login");
            let _ = reply_and_close(tls, state, ErrorCode::FrameTooLarge, "frame too large").await;
            return None;
        }
        Ok(Err(_)) => return None,
        Ok(Ok(bytes)) if proto::login_version(&bytes).is_some_and(|v| v != PROTOCOL_VERSION) => {
            let v = proto::login_version(&bytes).unwrap_or(0);
            let msg = format!(
                "this relay speaks protocol version {PROTOCOL_VERSION} (several devices per account); \
                 the client speaks version {v}: update the client"
            );
            let _ = reply_and_close(tls, state, ErrorCode::UnsupportedVersion, &msg).await;
            return None;
        }
        Ok(Ok(bytes)) => match proto::decode::<ClientFrame>(&bytes) {
            Ok(ClientFrame::Login { account, secret, device, .. }) => (account, secret, device),
            Ok(_) => {
                let _ = reply_and_close(tls, state, ErrorCode::NotLoggedIn, "log in first").await;
                return None;
            }
            Err(_) => {
                let _ = reply_and_close(tls, state, ErrorCode::BadFrame, "undecodable frame").await;
                return None;
            }
        },
    };
    let device = device.unwrap_or_else(|| DEFAULT_DEVICE.to_string());
    if !proto::valid_device(&device) {
        let msg = format!(
            "the device id must be 1 to {} ASCII letters, digits, '-', '_' or '.'; choose another",
            proto::MAX_DEVICE_LEN
        );
        let _ = reply_and_close(tls, state, ErrorCode::BadDevice, &msg).await;
        return None;
    }
    if !accounts::valid_name(&account) {
        // No account can have this name: refused before any hash or table entry.
        let _ = reply_and_close(tls, state, ErrorCode::AuthFailed, &AccountError::BadName.to_string()).await;
        return None;
    }
    let group = AddrGroup::from(peer.ip());
    let deadline = tokio::time::Instant::now() + limits.login_queue_timeout;
    let busy = "the server is busy checking other logins; retry in a few seconds";
    let Some(turn) = HashingTurn::wait(state, group, deadline).await else {
        tracing::warn!(conn = id, %peer, "login refused: waited too long behind other logins from this address");
        let _ = reply_and_close(tls, state, ErrorCode::RateLimited, busy).await;
        return None;
    };
    let begun = lock(&state.throttle).begin(group, &account, Instant::now());
    let attempt = match begun {
        Ok(attempt) => attempt,
        Err(refusal) => {
            drop(turn);
            tracing::warn!(conn = id, %peer, %refusal, "login refused");
            tokio::time::sleep(limits.login_failure_delay).await;
            let _ = reply_and_close(tls, state, ErrorCode::TooManyAttempts, &refusal.to_string()).await;
            return None;
        }
    };
    let verifier = lock(&state.accounts).verifier(&account);
    let ok = match tokio::time::timeout_at(deadline, state.hashing.acquire()).await {
        Ok(Ok(_permit)) => {
            tokio::task::spawn_blocking(move || verifier.check(&secret)).await.unwrap_or(false)
        }
        _ => {
            lock(&state.throttle).cancelled(attempt, Instant::now());
            drop(turn);
            tracing::warn!(conn = id, %peer, "login refused: waited too long for a hashing slot");
            let _ = reply_and_close(tls, state, ErrorCode::RateLimited, busy).await;
            return None;
        }
    };
    drop(turn);
    if !ok {
        lock(&state.throttle).failed(attempt, Instant::now());
        tracing::warn!(conn = id, %peer, "login failed");
        tokio::time::sleep(limits.login_failure_delay).await;
        let _ = reply_and_close(tls, state, ErrorCode::AuthFailed, "unknown account or wrong secret").await;
        return None;
    }
    lock(&state.throttle).succeeded(attempt, Instant::now());
    match state.store.touch_device(&account, &device, limits.max_devices_per_account).await {
        Ok(()) => {}
        Err(StoreError::TooManyDevices) => {
            let msg = format!(
                "this account already has {} devices seen recently; log out of one, or wait until \
                 one has been unseen for the message TTL",
                limits.max_devices_per_account
            );
            let _ = reply_and_close(tls, state, ErrorCode::TooManyDevices, &msg).await;
            return None;
        }
        Err(e) => {
            tracing::error!(conn = id, error = %e, "could not register the device");
            let msg = "the relay could not record this device; try again later";
            let _ = reply_and_close(tls, state, ErrorCode::Internal, msg).await;
            return None;
        }
    }
    let pending = state
        .store
        .queued_for(&account, &device, usize::try_from(limits.queue_max_messages).unwrap_or(usize::MAX))
        .unwrap_or(0);
    let welcome = ServerFrame::Welcome { version: PROTOCOL_VERSION, pending };
    match tokio::time::timeout(limits.write_timeout, proto::write_frame(tls, &welcome)).await {
        Ok(Ok(())) => Some((account, device)),
        _ => None,
    }
}

/// Takes one token from `account`'s bucket, if there is one.
fn take_token(state: &State, account: &str) -> bool {
    let rate = f64::from(state.limits.messages_per_second.max(1));
    let burst = f64::from(state.limits.burst.max(1));
    let mut buckets = lock(&state.buckets);
    let now = Instant::now();
    let b = buckets.entry(account.to_string()).or_insert(Bucket { tokens: burst, at: now });
    b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// The reader loop; returns why it ended.
async fn reader(
    state: &Arc<State>,
    who: &Who,
    mut rd: ReadHalf<Tls>,
    tx: &mpsc::Sender<Out>,
    writer: &mut tokio::task::JoinHandle<()>,
) -> &'static str {
    let limits = &state.limits;
    let account = who.account.as_str();
    let mut bad = 0u32;
    let send = |f: ServerFrame| async move { tx.send(Out::Frame(f)).await.is_ok() };
    loop {
        let next = tokio::select! {
            r = tokio::time::timeout(limits.idle_timeout, proto::read_frame(&mut rd, limits.max_frame_bytes)) => r,
            _ = &mut *writer => return "writer stopped",
        };
        let bytes = match next {
            Err(_) => {
                send(error(ErrorCode::IdleTimeout, None, "idle for too long")).await;
                return "idle timeout";
            }
            Ok(Err(FrameError::TooLarge { announced, limit })) => {
                tracing::warn!(announced, limit, "oversized frame announced");
                send(error(ErrorCode::FrameTooLarge, None, &format!("frames are limited to {limit} bytes")))
                    .await;
                return "frame too large";
            }
            Ok(Err(_)) => return "closed by client",
            Ok(Ok(bytes)) => bytes,
        };
        let frame = match proto::decode::<ClientFrame>(&bytes) {
            Ok(f) => f,
            Err(_) => {
                bad += 1;
                if bad > limits.max_bad_frames {
                    send(error(ErrorCode::BadFrame, None, "too many undecodable frames")).await;
                    return "too many bad frames";
                }
                if !send(error(ErrorCode::BadFrame, None, "undecodable frame")).await {
                    return "writer stopped";
                }
                continue;
            }
        };
        let ok = match frame {
            ClientFrame::Ping { nonce } => send(ServerFrame::Pong { nonce }).await,
            ClientFrame::Login { .. } => send(error(ErrorCode::BadFrame, None, "already logged in")).await,
            ClientFrame::Ack { seq } => {
                let online = state.online_devices(account);
                let Ok(done) = state.store.ack(account, &who.device, seq, online).await else {
                    return "store closed";
                };
                if state.observer.is_some() {
                    let (state, to) = (state.clone(), account.to_string());
                    tokio::spawn(async move {
                        if let Ok(Ok(1)) = done.await {
                            state.observe(|| StoreEvent::Deleted { seq, to });
                        }
                    });
                }
                tx.send(Out::Acked(seq)).await.is_ok()
            }
            ClientFrame::Send { to, id, body, to_device } => {
                let answer = accept(state, account, to, id, body, to_device).await;
                send(answer).await
            }
            ClientFrame::RegisterPush { endpoint, p256dh, auth } => {
                let reg = PushRegistration { endpoint, p256dh, auth };
                send(register_push(state, who, Some(reg)).await).await
            }
            ClientFrame::UnregisterPush => send(register_push(state, who, None).await).await,
        };
        if !ok {
            return "writer stopped";
        }
    }
}

/// Stores (or removes, with `None`) the push registration of `who`'s device; the answer frame.
async fn register_push(state: &State, who: &Who, reg: Option<PushRegistration>) -> ServerFrame {
    if let Some(Err(why)) = reg.as_ref().map(PushRegistration::validate) {
        return error(ErrorCode::PushRefused, None, &format!("{why}; nothing was registered"));
    }
    // With push on: the relay's own policy (no private addresses, https) and, for UnifiedPush,
    // the discovery GET, so a client cannot aim the relay's POSTs at an arbitrary URL. With
    // push off the registration is only kept (nothing is ever posted to it).
    if let (Some(reg), Some(pusher)) = (&reg, &state.pusher) {
        let checked = match push_endpoint(reg) {
            Ok(endpoint) => match endpoint.check(pusher.config()) {
                Ok(()) if endpoint.web_push_keys().is_some() => Ok(()),
                Ok(()) => pusher.probe(&endpoint).await.map_err(|e| e.to_string()),
                Err(why) => Err(why.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = checked {
            return error(
                ErrorCode::PushRefused,
                None,
                &format!("push endpoint refused: {why}; nothing was registered"),
            );
        }
    }
    match state.store.set_push(&who.account, &who.device, reg.as_ref()).await {
        Ok(()) => {
            tracing::debug!(registered = reg.is_some(), "push registration stored");
            ServerFrame::PushAck
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a push registration");
            error(ErrorCode::PushRefused, None, "the relay could not store the registration; try again later")
        }
    }
}

/// Handles one sent message: limits, store, wake the recipient. Returns the answer frame.
async fn accept(
    state: &Arc<State>,
    account: &str,
    to: String,
    id: u64,
    body: String,
    to_device: Option<String>,
) -> ServerFrame {
    if !take_token(state, account) {
        return error(ErrorCode::RateLimited, Some(id), "sending too fast; try again later");
    }
    if !lock(&state.accounts).exists(&to) {
        return error(ErrorCode::UnknownRecipient, Some(id), "no such account");
    }
    if to_device.as_deref().is_some_and(|d| !proto::valid_device(d)) {
        let msg = "the recipient device id is not valid (1 to 64 ASCII letters, digits, '-', '_' or '.')";
        return error(ErrorCode::BadDevice, Some(id), msg);
    }
    let limits = QueueLimits {
        max_messages: state.limits.queue_max_messages,
        max_bytes: state.limits.queue_max_bytes,
    };
    let ttl = u64::try_from(state.limits.message_ttl.as_millis()).unwrap_or(u64::MAX);
    let expires_at = unix_ms().saturating_add(ttl);
    let bytes = body.len();
    let online = state.online_devices(&to);
    match state.store.insert(&to, account, id, body, expires_at, to_device.clone(), online, limits).await {
        Ok(seq) => {
            tracing::debug!(seq, "stored");
            state.observe(|| StoreEvent::Stored { seq, from: account.to_string(), to: to.clone(), bytes });
            let online = {
                let online = lock(&state.online);
                let devices = online.get(&to);
                for (d, o) in devices.into_iter().flatten() {
                    if to_device.as_ref().is_none_or(|t| t == d) {
                        o.wake.notify_one();
                    }
                }
                devices.map(|d| d.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
            };
            let holders = match &to_device {
                Some(d) => Ok(vec![d.clone()]),
                None => state.store.holding_devices(&to, &online),
            };
            match holders {
                Ok(h) => {
                    let offline: Vec<String> = h.into_iter().filter(|d| !online.contains(d)).collect();
                    state.on_stored(&to, &offline);
                }
                Err(e) => tracing::warn!(error = %e, "could not list the recipient's devices"),
            }
            ServerFrame::Accepted { id }
        }
        Err(StoreError::QueueFull) => error(ErrorCode::QueueFull, Some(id), "the recipient's queue is full"),
        Err(StoreError::Full) => {
            tracing::warn!("relay storage full: a message was refused");
            error(ErrorCode::StorageFull, Some(id), "relay storage full; try again later")
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store a message");
            error(ErrorCode::Internal, Some(id), "the relay could not store the message; try again later")
        }
    }
}

/// The writer loop: answers from the reader, and deliveries from the store within the window.
async fn writer(
    state: Arc<State>,
    who: Who,
    mut wr: WriteHalf<Tls>,
    mut rx: mpsc::Receiver<Out>,
    wake: Arc<Notify>,
    mut kick: oneshot::Receiver<()>,
    span: tracing::Span,
) {
    let limits = &state.limits;
    let Who { account, device } = who;
    let mut shutdown = state.shutdown.clone();
    let mut cursor = 0u64;
    let mut inflight = BTreeSet::new();
    let mut more = true;
    let result: Result<&'static str, FrameError> = async {
        loop {
            if *shutdown.borrow() {
                write(&mut wr, limits, &error(ErrorCode::ShuttingDown, None, "the server is shutting down")).await?;
                return Ok("shutdown");
            }
            // Fill the delivery window from the store.
            while more && inflight.len() < limits.delivery_window {
                let want = limits.delivery_window - inflight.len();
                let batch = match state.store.pending(&account, &device, cursor, want) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(parent: &span, error = %e, "store read failed");
                        return Ok("store failed");
                    }
                };
                more = batch.len() == want;
                for m in batch {
                    cursor = m.seq;
                    inflight.insert(m.seq);
                    let f = ServerFrame::Deliver { seq: m.seq, from: m.from, id: m.id, body: m.body };
                    write(&mut wr, limits, &f).await?;
                    state.observe(|| StoreEvent::Delivered { seq: m.seq, to: account.clone() });
                }
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = &mut kick => {
                    write(&mut wr, limits, &error(ErrorCode::LoggedInElsewhere, None, "this device logged in on another connection, which replaced this one")).await?;
                    return Ok("replaced by a new login");
                }
                out = rx.recv() => match out {
                    None => return Ok("reader stopped"),
                    Some(Out::Frame(f)) => write(&mut wr, limits, &f).await?,
                    Some(Out::Acked(seq)) => {
                        if inflight.remove(&seq) {
                            more = true;
                        }
                    }
                },
                () = wake.notified() => more = true,
            }
        }
    }
    .await;
    match result {
        Ok(why) => tracing::debug!(parent: &span, why, "writer done"),
        Err(e) => tracing::info!(parent: &span, error = %e, "writer stopped (slow or gone reader)"),
    }
    let _ = tokio::time::timeout(limits.write_timeout, wr.shutdown()).await;
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, limits: &Limits, f: &ServerFrame) -> Result<(), FrameError> {
    match tokio::time::timeout(limits.write_timeout, proto::write_frame(w, f)).await {
        Ok(r) => r,
        Err(_) => Err(FrameError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))),
    }
}

/// Deletes expired messages every sweep interval until shutdown.
async fn sweeper(state: Arc<State>) {
    let mut shutdown = state.shutdown.clone();
    let mut tick = tokio::time::interval(state.limits.sweep_interval);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => match state.store.expire(unix_ms()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(expired = n, "expired undelivered messages");
                    state.observe(|| StoreEvent::Expired { count: n });
                }
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            },
        }
    }
}

/// The push sender of [`ServerConfig::push`], with the relay's VAPID key kept in the data
/// directory (`vapid.key`, mode 0600; generated on first start). Endpoints that answer 404 or
/// 410 are sent to `dropped` to be deleted.
fn start_pusher(
    config: PushConfig,
    data_dir: &std::path::Path,
    dropped: mpsc::UnboundedSender<(String, String)>,
) -> Result<Pusher, ServerError> {
    let path = data_dir.join("vapid.key");
    let vapid = match std::fs::read(&path) {
        Ok(bytes) => {
            VapidKey::from_bytes(&bytes).map_err(|e| ServerError::Push(format!("{}: {e}", path.display())))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = VapidKey::generate().map_err(|e| ServerError::Push(e.to_string()))?;
            use std::io::Write as _;
            let mut file = crate::files::private().write(true).create_new(true).open(&path)?;
            file.write_all(&key.to_bytes())?;
            file.sync_all()?;
            key
        }
        Err(e) => return Err(e.into()),
    };
    Pusher::new(config, vapid, move |report: PushReport| {
        if let PushOutcome::Dropped(_) = report.outcome {
            let _ = dropped.send((report.account, report.endpoint.url().to_owned()));
        }
    })
    .map_err(|e| ServerError::Push(e.to_string()))
}

/// Deletes the registrations whose endpoint the push service said is gone (404, 410).
async fn forget_dropped_endpoints(
    state: std::sync::Weak<State>,
    mut dropped: mpsc::UnboundedReceiver<(String, String)>,
) {
    while let Some((account, url)) = dropped.recv().await {
        let Some(state) = state.upgrade() else { return };
        let devices = match state.store.devices(&account) {
            Ok(d) => d.into_iter().map(|d| d.device).collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read devices");
                continue;
            }
        };
        for (device, reg) in state.store.push_registrations(&account, &devices).unwrap_or_default() {
            if reg.endpoint == url {
                tracing::info!(account, device, "push endpoint gone (404/410); registration deleted");
                if let Err(e) = state.store.set_push(&account, &device, None).await {
                    tracing::error!(error = %e, "cannot delete a push registration");
                }
            }
        }
    }
}

/// A stored registration as the push sender's endpoint.
fn push_endpoint(reg: &PushRegistration) -> Result<PushEndpoint, EndpointError> {
    match (&reg.p256dh, &reg.auth) {
        (Some(key), Some(auth)) => PushEndpoint::web_push(&reg.endpoint, key, auth),
        _ => PushEndpoint::unified_push(&reg.endpoint),
    }
}
