//! The tokio relay client (feature `tokio`): connect with a pinned certificate, log in, send,
//! receive, ack, for any number of peer accounts over one login. For one conversation over
//! the relay, [`connect_tls`] and [`RelayFraming`](crate::RelayFraming) with otr-tokio's
//! `Conversation` are simpler.
//!
//! ```no_run
//! # async fn demo(pin: otr_relay_client::CertFingerprint) -> Result<(), otr_relay_client::ClientError> {
//! use otr_relay_client::{ClientConfig, tokio_client::Client};
//! let config = ClientConfig::new("127.0.0.1:5443", pin, "alice", "alice's secret");
//! let (client, mut inbox) = Client::connect(config).await?;
//! client.send("bob", 1, "?OTRv3?").await?; // returns once the relay stored it
//! while let Some(d) = inbox.next().await {
//!     let d = d?;
//!     // ... hand d.body to the OTR session for d.from ...
//!     client.ack(d.seq).await?; // the relay deletes it
//! }
//! # Ok(()) }
//! ```
//!
//! Acknowledge every delivery, also those from accounts the application does not talk to
//! (drop them, or keep them for later, then ack): the relay sends a connection a bounded
//! window of unacknowledged deliveries, so unacknowledged messages from a stranger would hold
//! back everyone else's.
//!
//! Keep reading the inbox while waiting for `send` to return: deliveries and answers share
//! one connection, and an inbox that nobody reads eventually stops the answers too. The inbox
//! buffer is larger than the server's delivery window, so this only happens to a client that
//! does not read at all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{ClientConfig, ClientError};
use crate::pin::CertFingerprint;
use crate::proto::{
    self, ClientFrame, ErrorCode, FrameError, PROTOCOL_VERSION, PushRegistration, ServerFrame,
};
use crate::verifier::{PinVerifier, client_config, handshake_error, server_name};

/// A message delivered by the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The relay's sequence number; pass it to [`Client::ack`] once handled.
    pub seq: u64,
    /// The sender account.
    pub from: String,
    /// The sender's message id.
    pub id: u64,
    /// The message.
    pub body: String,
}

/// Deliveries, in the order the relay stored them.
#[derive(Debug)]
pub struct Inbox {
    rx: mpsc::Receiver<Result<Delivery, ClientError>>,
}

impl Inbox {
    /// The next delivery; `Some(Err(_))` once if the connection failed, then `None`.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        self.rx.recv().await
    }
}

type Reply = oneshot::Sender<Result<(), ClientError>>;
type Pending = Arc<Mutex<HashMap<u64, Reply>>>;
/// Push (un)registrations waiting for their answer, in the order they were sent (the relay
/// answers them in that order).
type PushPending = Arc<Mutex<VecDeque<Reply>>>;

/// A logged-in connection to the relay. Dropping it closes the connection.
#[derive(Debug)]
pub struct Client {
    tx: mpsc::Sender<ClientFrame>,
    pending: Pending,
    push_pending: PushPending,
    push_turn: tokio::sync::Mutex<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pending_at_login: u64,
}

impl Drop for Client {
    /// The writer finishes what is queued (acks included) and closes the connection; the
    /// reader ends when the relay closes its side or the inbox is dropped.
    fn drop(&mut self) {}
}

impl Client {
    /// Connects over TLS 1.3, checks the pin and logs in as the config's device; then
    /// registers the config's push endpoint, if it has one.
    ///
    /// # Errors
    /// [`ClientError::PinMismatch`] for a wrong certificate, [`ClientError::Login`] when the
    /// relay refuses the account or device, [`ClientError::PushRefused`] when it refuses the
    /// push registration, [`ClientError::Timeout`], [`ClientError::Io`].
    pub async fn connect(config: ClientConfig) -> Result<(Self, Inbox), ClientError> {
        match tokio::time::timeout(config.connect_timeout, Self::connect_inner(&config)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout),
        }
    }

    async fn connect_inner(config: &ClientConfig) -> Result<(Self, Inbox), ClientError> {
        let mut tls = connect_tls(&config.server, config.pin).await?;
        let login = ClientFrame::Login {
            version: PROTOCOL_VERSION,
            account: config.account.clone(),
            secret: config.secret.clone(),
            device: Some(config.device.clone()),
        };
        proto::write_frame(&mut tls, &login).await?;
        let bytes = proto::read_frame(&mut tls, config.max_frame_bytes).await.map_err(|e| match e {
            FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => ClientError::Closed,
            other => other.into(),
        })?;
        let pending_at_login = match proto::decode::<ServerFrame>(&bytes)? {
            ServerFrame::Welcome { pending, .. } => pending,
            ServerFrame::Error { code, message, .. } => return Err(ClientError::Login { code, message }),
            _ => return Err(ClientError::Protocol("expected a welcome")),
        };
        let (rd, wr) = tokio::io::split(tls);
        let (tx, out_rx) = mpsc::channel(64);
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_capacity.max(1));
        let pending: Pending = Arc::default();
        let push_pending: PushPending = Arc::default();
        let r = tokio::spawn(read_loop(
            rd,
            inbox_tx,
            pending.clone(),
            push_pending.clone(),
            config.max_frame_bytes,
        ));
        let w = tokio::spawn(write_loop(wr, out_rx, config.keepalive));
        let client = Self {
            tx,
            pending,
            push_pending,
            push_turn: tokio::sync::Mutex::new(()),
            tasks: vec![r, w],
            pending_at_login,
        };
        if let Some(reg) = &config.push {
            client.register_push(reg).await?;
        }
        Ok((client, Inbox { rx: inbox_rx }))
    }

    /// Registers (or replaces) this device's push endpoint at the relay, which keeps it until
    /// it is unregistered; returns once it is stored.
    ///
    /// # Errors
    /// [`ClientError::PushRefused`] saying what is wrong with `reg` (checked here first, then
    /// by the relay); [`ClientError::Closed`] when the connection ended.
    pub async fn register_push(&self, reg: &PushRegistration) -> Result<(), ClientError> {
        reg.validate().map_err(|message| ClientError::PushRefused { message })?;
        self.push_request(ClientFrame::register_push(reg)).await
    }

    /// Removes this device's push endpoint at the relay (if it had one).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection ended.
    pub async fn unregister_push(&self) -> Result<(), ClientError> {
        self.push_request(ClientFrame::UnregisterPush).await
    }

    async fn push_request(&self, frame: ClientFrame) -> Result<(), ClientError> {
        // One push request at a time, so the answer queue's order is the wire's order.
        let _turn = self.push_turn.lock().await;
        let (reply, answer) = oneshot::channel();
        self.push_pending.lock().unwrap_or_else(|p| p.into_inner()).push_back(reply);
        if self.tx.send(frame).await.is_err() {
            self.push_pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
            return Err(ClientError::Closed);
        }
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// How many messages the relay said were waiting at login.
    pub fn pending_at_login(&self) -> u64 {
        self.pending_at_login
    }

    /// Sends `body` to account `to` and waits until the relay has stored it durably.
    /// `id` is the caller's id for the message (unique among its unanswered sends).
    ///
    /// # Errors
    /// [`ClientError::Refused`] when the relay refuses this message (it was not stored);
    /// [`ClientError::Closed`] or [`ClientError::Server`] when the connection ended.
    pub async fn send(&self, to: &str, id: u64, body: &str) -> Result<(), ClientError> {
        self.send_frame(ClientFrame::Send { to: to.into(), id, body: body.into(), to_device: None }, id).await
    }

    /// Like [`send`](Self::send), but for one device of `to` only: the relay delivers it to
    /// that device and holds it for that device only.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    pub async fn send_to_device(
        &self,
        to: &str,
        device: &str,
        id: u64,
        body: &str,
    ) -> Result<(), ClientError> {
        let frame =
            ClientFrame::Send { to: to.into(), id, body: body.into(), to_device: Some(device.into()) };
        self.send_frame(frame, id).await
    }

    async fn send_frame(&self, frame: ClientFrame, id: u64) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(id, reply);
        if self.tx.send(frame).await.is_err() {
            self.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            return Err(ClientError::Closed);
        }
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Tells the relay that delivery `seq` was handled, so it deletes it.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the connection is gone (the message will be delivered
    /// again at the next login).
    pub async fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.tx.send(ClientFrame::Ack { seq }).await.map_err(|_| ClientError::Closed)
    }

    /// Sends a raw frame (for tests of the server's defences).
    #[doc(hidden)]
    pub async fn send_frame_for_tests(&self, frame: ClientFrame) -> Result<(), ClientError> {
        self.tx.send(frame).await.map_err(|_| ClientError::Closed)
    }

    /// Closes the connection cleanly, after everything queued so far is written.
    pub async fn close(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        let mut tasks = tasks.into_iter();
        let reader = tasks.next();
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        if let Some(r) = reader {
            r.abort();
        }
    }
}

/// Opens a TCP connection to `server` (`host:port`) and completes a TLS 1.3 handshake that
/// accepts only the certificate whose SHA-256 fingerprint is `pin`. [`Client::connect`] does
/// this and then logs in; it is public for tools that speak the frames themselves.
///
/// # Errors
/// [`ClientError::PinMismatch`] when the certificate differs from the pin,
/// [`ClientError::Io`] when the connection or handshake fails.
pub async fn connect_tls(server: &str, pin: CertFingerprint) -> Result<TlsStream<TcpStream>, ClientError> {
    let verifier = Arc::new(PinVerifier::new(pin));
    let tls_config = client_config(verifier.clone()).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(server).await?;
    let _ = tcp.set_nodelay(true);
    connect_tls_over(tcp, server, pin, tls_config, &verifier).await
}

/// Like [`connect_tls`] over a TCP stream the caller opened (e.g. with socket options).
///
/// # Errors
/// As [`connect_tls`].
pub async fn connect_tls_with(
    tcp: TcpStream,
    pin: CertFingerprint,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let verifier = Arc::new(PinVerifier::new(pin));
    let tls_config = client_config(verifier.clone()).map_err(std::io::Error::other)?;
    connect_tls_over(tcp, "otr-relay:0", pin, tls_config, &verifier).await
}

async fn connect_tls_over(
    tcp: TcpStream,
    server: &str,
    pin: CertFingerprint,
    tls_config: Arc<rustls::ClientConfig>,
    verifier: &PinVerifier,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = server_name(server)?;
    TlsConnector::from(tls_config).connect(name, tcp).await.map_err(|e| handshake_error(verifier, pin, e))
}

async fn read_loop(
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    inbox: mpsc::Sender<Result<Delivery, ClientError>>,
    pending: Pending,
    push_pending: PushPending,
    max: usize,
) {
    let fail_all = |pending: &Pending, make: &dyn Fn() -> ClientError| {
        for (_, reply) in pending.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            let _ = reply.send(Err(make()));
        }
        for reply in push_pending.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = reply.send(Err(make()));
        }
    };
    let push_answer = |answer: Result<(), ClientError>| {
        if let Some(r) = push_pending.lock().unwrap_or_else(|p| p.into_inner()).pop_front() {
            let _ = r.send(answer);
        }
    };
    let end = loop {
        let bytes = match proto::read_frame(&mut rd, max).await {
            Ok(b) => b,
            Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break ClientError::Closed;
            }
            Err(e) => break e.into(),
        };
        let frame = match proto::decode::<ServerFrame>(&bytes) {
            Ok(f) => f,
            Err(_) => break ClientError::Protocol("undecodable frame from the relay"),
        };
        match frame {
            ServerFrame::Deliver { seq, from, id, body } => {
                if inbox.send(Ok(Delivery { seq, from, id, body })).await.is_err() {
                    return;
                }
            }
            ServerFrame::Accepted { id } => {
                if let Some(r) = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = r.send(Ok(()));
                }
            }
            ServerFrame::Error { code, id: Some(id), message } => {
                if let Some(r) = pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
                    let _ = r.send(Err(ClientError::Refused { code, message }));
                }
            }
            ServerFrame::PushAck => push_answer(Ok(())),
            ServerFrame::Error { code: ErrorCode::PushRefused, id: None, message } => {
                push_answer(Err(ClientError::PushRefused { message }));
            }
            ServerFrame::Error { code, id: None, message } => {
                if code == ErrorCode::BadFrame {
                    tracing::warn!(message, "the relay could not decode a frame");
                    continue;
                }
                break ClientError::Server { code, message };
            }
            ServerFrame::Pong { .. } => {}
            ServerFrame::Welcome { .. } => break ClientError::Protocol("unexpected welcome"),
        }
    };
    match &end {
        ClientError::Server { code, message } => {
            let (code, message) = (*code, message.clone());
            fail_all(&pending, &|| ClientError::Server { code, message: message.clone() });
        }
        _ => fail_all(&pending, &|| ClientError::Closed),
    }
    let _ = inbox.send(Err(end)).await;
}

async fn write_loop(
    mut wr: WriteHalf<TlsStream<TcpStream>>,
    mut rx: mpsc::Receiver<ClientFrame>,
    keepalive: Duration,
) {
    let mut nonce = 0u64;
    loop {
        let frame = match tokio::time::timeout(keepalive, rx.recv()).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(_) => {
                nonce += 1;
                ClientFrame::Ping { nonce }
            }
        };
        let Ok(bytes) = proto::encode(&frame) else { continue };
        if wr.write_all(&bytes).await.is_err() {
            return;
        }
        // Write whatever else is queued before flushing.
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.flush().await;
    let _ = wr.shutdown().await;
}
