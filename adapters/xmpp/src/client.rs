//! The client: one task that owns the XMPP stream and one OTR [`Session`] per contact (in one
//! otr-driver `Driver`: one timer queue, one pump), and
//! the handle ([`Client`]) and event stream ([`Events`]) the application holds.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use otr_core::{
    DsaKeyPair, Event, Fingerprint, InstanceTag, Policy, ReceiveError, Sent, Session, SessionConfig, Ssid,
    Timestamp,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_xmpp::Stanza;
use tokio_xmpp::stanzastream::{Connection, Event as StreamItem, StanzaStream, StreamEvent};
use tokio_xmpp::xmlstream::Timeouts;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::presence::Presence;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use zeroize::Zeroizing;

use crate::contacts::{Contacts, STRANGER_FRAGMENT_BYTES};
use crate::error::{ClientError, ConnectError};
use crate::stanza::{self, Incoming, Rejected};
use crate::tls::{StartTls, Trust, login};

/// The RNG every session uses: the operating system's.
type SystemRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// The default of [`Config::max_strangers`].
pub const MAX_STRANGERS: usize = 4096;

/// Stanzas waiting to be written (they wait while the connection is down).
const STANZA_QUEUE: usize = 256;
/// Events waiting for the application.
const EVENT_QUEUE: usize = 1024;

/// How to connect and which OTR identity to use.
#[derive(Clone)]
pub struct Config {
    /// Our account.
    pub jid: BareJid,
    /// Its password.
    pub password: Zeroizing<String>,
    /// `host:port` of the server; `None`: the JID's domain on port 5222 (no SRV lookup).
    pub server: Option<String>,
    /// The name the server's certificate must carry; `None`: the JID's domain.
    pub tls_server_name: Option<String>,
    /// Which CAs to trust for the server's certificate. The certificate is always verified.
    pub trust: Trust,
    /// Our long-term OTR key.
    pub identity: DsaKeyPair,
    /// Our OTR instance tag (keep it stable for this client across restarts if you can).
    pub instance_tag: InstanceTag,
    /// OTR policy for every contact (default [`Policy::ALWAYS`]: never plaintext).
    pub policy: Policy,
    /// Largest OTR message in one stanza (longer ones are fragmented); 0: no limit.
    pub max_message_size: usize,
    /// How long the first login may take.
    pub connect_timeout: Duration,
    /// First and longest wait between reconnection attempts (it doubles in between).
    pub reconnect_delay: (Duration, Duration),
    /// Most strangers (contacts the application never addressed) with a session at once
    /// (default [`MAX_STRANGERS`]). When yet another one writes, the least recently active
    /// stranger without a private conversation is dropped to make room; only when every
    /// stranger is in a private conversation is the new one rejected
    /// ([`Rejected::TooManyContacts`]). Strangers' fragment buffers are bounded together too
    /// (64 MiB). Contacts the application sends to, starts or otherwise addresses (see
    /// [`Client::add_contact`]) are never dropped and not counted.
    pub max_strangers: usize,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("jid", &self.jid)
            .field("server", &self.server)
            .field("tls_server_name", &self.tls_server_name)
            .field("trust", &self.trust)
            .field("fingerprint", &self.identity.public().fingerprint())
            .field("instance_tag", &self.instance_tag)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A configuration with the defaults: the system's CAs, the JID's domain on port 5222,
    /// [`Policy::ALWAYS`], no fragmentation, 30 s to log in, reconnecting after 0.5 s up to
    /// every 30 s.
    pub fn new(
        jid: BareJid,
        password: impl Into<String>,
        identity: DsaKeyPair,
        instance_tag: InstanceTag,
    ) -> Self {
        Self {
            jid,
            password: Zeroizing::new(password.into()),
            server: None,
            tls_server_name: None,
            trust: Trust::System,
            identity,
            instance_tag,
            policy: Policy::ALWAYS,
            max_message_size: 0,
            connect_timeout: Duration::from_secs(30),
            reconnect_delay: (Duration::from_millis(500), Duration::from_secs(30)),
            max_strangers: MAX_STRANGERS,
        }
    }
}

/// Something the application should show or act on.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// What the OTR session with `peer` reports: a private conversation began, a message
    /// arrived (check `encrypted`), SMP progress, the peer ended, ...
    Otr {
        /// The contact.
        peer: BareJid,
        /// The event.
        event: Event,
    },
    /// A message from `peer` was not accepted by its OTR session (malformed, unreadable).
    /// The session is unharmed; where OTR says so the peer was told. (Messages for another
    /// client of our account are normal when we use several, and not reported.)
    OtrError {
        /// The contact.
        peer: BareJid,
        /// What was wrong.
        error: ReceiveError,
    },
    /// A message we sent to `peer` came back undelivered (no such account, or the server
    /// would not store it for an offline contact).
    Undeliverable {
        /// The contact.
        peer: BareJid,
        /// The reason the server gave.
        condition: Option<DefinedCondition>,
    },
    /// A received message was not given to OTR.
    Rejected {
        /// The sender, if any.
        from: Option<Jid>,
        /// Why.
        reason: Rejected,
    },
    /// The connection to the server was lost. Messages sent meanwhile wait; the client
    /// reconnects by itself ([`ClientEvent::Online`] follows).
    ConnectionLost,
    /// A reconnection attempt failed; the client tries again after `retry_in`.
    ReconnectFailed {
        /// What went wrong.
        error: String,
        /// When it tries next.
        retry_in: Duration,
    },
    /// Connected again (and our presence sent). `resumed`: the server kept our stream
    /// (XEP-0198), so nothing was lost; otherwise messages sent to us while we were away may
    /// be lost or arrive late. OTR sessions are kept either way: a contact whose client
    /// restarted will start a new key exchange, and the user sees a new
    /// [`Event::Secure`].
    Online {
        /// The address the server bound us to.
        jid: Jid,
        /// Whether the stream was resumed without loss.
        resumed: bool,
    },
}

/// The stream of [`ClientEvent`]s. It ends when the client is closed.
///
/// Keep reading it: while 1024 events wait unread, the client stops reading from the server
/// (and calls on [`Client`] wait).
#[derive(Debug)]
pub struct Events(mpsc::Receiver<ClientEvent>);

impl Events {
    /// The next event; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.0.recv().await
    }
}

impl futures_core::Stream for Events {
    type Item = ClientEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ClientEvent>> {
        self.0.poll_recv(cx)
    }
}

/// Who a private conversation is with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Private {
    /// The contact's client (OTR instance).
    pub instance: InstanceTag,
    /// The contact's long-term key, authenticated by the key exchange.
    pub fingerprint: Fingerprint,
    /// The secure session id.
    pub ssid: Ssid,
}

/// A job for the task, run on the session with one contact.
type Job = Box<dyn FnOnce(&mut Session, Timestamp, &mut SystemRng) + Send>;
/// A look at the session with one contact, if there is one.
type Look = Box<dyn FnOnce(Option<&Session>) + Send>;

enum Command {
    /// Runs `job` on the session with `to` (created if new), one of the user's contacts.
    Session {
        to: BareJid,
        job: Job,
    },
    /// Runs `look` on the session with `to`, changing nothing.
    Look {
        to: BareJid,
        look: Look,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// An XMPP account logged in, holding OTR conversations with its contacts. Cheap to clone;
/// every clone drives the same connection. The connection closes when every clone is dropped
/// or [`close`](Self::close) is called.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    jid: Jid,
    fingerprint: Fingerprint,
}

impl Client {
    /// Logs in (TCP, StartTLS with the server's certificate verified, SASL), binds a
    /// resource, sends our presence and waits until the server has it (from then on messages
    /// to our bare JID reach us), and starts the task that runs the conversations.
    ///
    /// # Errors
    /// [`ConnectError`] says what failed: trust setup, certificate, password, network, time.
    pub async fn connect(config: Config) -> Result<(Client, Events), ConnectError> {
        let connector = StartTls::new(&config)?;
        let timeouts = Timeouts::default();
        let limit = config.connect_timeout;

        let first = tokio::time::timeout(limit, login(&connector, &config.jid, &config.password, timeouts))
            .await
            .map_err(|_| ConnectError::Timeout(limit))?
            .map_err(ConnectError::from_xmpp)?;

        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let reconnector = reconnector(first, connector, &config, timeouts, events_tx.clone());
        let mut stream = StanzaStream::new(reconnector, STANZA_QUEUE);

        // Resource binding happens in the stanza stream; wait for it.
        let jid = tokio::time::timeout(limit, async {
            while let Some(item) = stream.next().await {
                if let StreamItem::Stream(StreamEvent::Reset { bound_jid, .. }) = item {
                    return Some(bound_jid);
                }
            }
            None
        })
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
        .ok_or_else(|| ConnectError::Network("the stream closed during resource binding".to_owned()))?;
        // Servers deliver messages to our bare JID only after our initial presence. The
        // server sends it back to us too (RFC 6121 §4.2.2): once it has, messages to our bare
        // JID reach us. What arrives meanwhile is kept for the task.
        let _token = stream.send(Box::new(Presence::available().into())).await;
        let mut early = Vec::new();
        tokio::time::timeout(limit, async {
            while let Some(item) = stream.next().await {
                if let StreamItem::Stanza(Stanza::Presence(p)) = &item {
                    if p.from.as_ref() == Some(&jid) {
                        return;
                    }
                }
                early.push(item);
            }
        })
        .await
        .map_err(|_| ConnectError::Timeout(limit))?;

        let (commands, commands_rx) = mpsc::channel(64);
        let fingerprint = config.identity.public().fingerprint();
        let task = Task {
            stream,
            commands: commands_rx,
            events: events_tx,
            peers: Contacts::new(config.max_strangers, STRANGER_FRAGMENT_BYTES),
            config,
            rng: rand_core::UnwrapErr(getrandom::SysRng),
            epoch: Instant::now(),
            own: jid.clone(),
        };
        tokio::spawn(task.run(early));
        Ok((Client { commands, jid, fingerprint }, Events(events_rx)))
    }

    /// The full JID the server bound us to.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// Our OTR fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Runs `f` on the session with `to` (created if new) inside the task.
    async fn with_session<T: Send + 'static>(
        &self,
        to: &BareJid,
        f: impl FnOnce(&mut Session, Timestamp, &mut SystemRng) -> T + Send + 'static,
    ) -> Result<T, ClientError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |s, now, rng| {
            // The caller may have stopped waiting; the action happened either way.
            let _ = tx.send(f(s, now, rng));
        });
        self.commands
            .send(Command::Session { to: to.clone(), job })
            .await
            .map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Sends `text` to `to` through OTR: encrypted if the conversation is private; held (and
    /// a private conversation requested) if policy requires encryption; plaintext only if
    /// policy allows it.
    ///
    /// # Errors
    /// [`ClientError::Otr`] when OTR refuses (e.g. the contact ended the conversation);
    /// nothing was sent then. [`ClientError::Closed`] when the client is closed.
    pub async fn send(&self, to: &BareJid, text: &str) -> Result<Sent, ClientError> {
        let text = Zeroizing::new(text.to_owned());
        Ok(self.with_session(to, move |s, now, _| s.send(now, &text)).await??)
    }

    /// Sends `text` encrypted to one particular client (OTR instance) of `to`, e.g. the one
    /// an [`Event::Message`] came from.
    ///
    /// # Errors
    /// [`ClientError::Otr`] unless the conversation with that instance is private.
    pub async fn send_to(&self, to: &BareJid, instance: InstanceTag, text: &str) -> Result<(), ClientError> {
        let text = Zeroizing::new(text.to_owned());
        Ok(self.with_session(to, move |s, now, _| s.send_to(now, instance, &text)).await??)
    }

    /// Asks `to` for a private conversation (an OTR query message).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed.
    pub async fn start(&self, to: &BareJid) -> Result<(), ClientError> {
        self.with_session(to, |s, now, _| s.start(now)).await
    }

    /// Ends the private conversation with `to` (the contact is told).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed.
    pub async fn end(&self, to: &BareJid) -> Result<(), ClientError> {
        self.with_session(to, |s, now, _| s.end(now)).await
    }

    /// Starts SMP with `to`: if the contact answers with the same secret, both learn that
    /// the other's key is the right one ([`Event::SmpSucceeded`]).
    ///
    /// # Errors
    /// [`ClientError::Otr`] when the conversation is not private.
    pub async fn smp_start(
        &self,
        to: &BareJid,
        question: Option<&str>,
        secret: &[u8],
    ) -> Result<(), ClientError> {
        let question = question.map(str::to_owned);
        let secret = Zeroizing::new(secret.to_vec());
        Ok(self
            .with_session(to, move |s, now, rng| s.smp_start(now, question.as_deref(), &secret, rng))
            .await??)
    }

    /// Answers `to`'s SMP request ([`Event::SmpRequest`]) with our secret.
    ///
    /// # Errors
    /// [`ClientError::Otr`] when there is no request to answer.
    pub async fn smp_respond(&self, to: &BareJid, secret: &[u8]) -> Result<(), ClientError> {
        let secret = Zeroizing::new(secret.to_vec());
        Ok(self.with_session(to, move |s, now, rng| s.smp_respond(now, &secret, rng)).await??)
    }

    /// Aborts SMP with `to` (the contact is told).
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed.
    pub async fn smp_abort(&self, to: &BareJid) -> Result<(), ClientError> {
        self.with_session(to, |s, now, _| s.smp_abort(now)).await
    }

    /// Makes `to` one of the user's contacts before anything is sent: its session is never
    /// dropped to make room for strangers (see [`Config::max_strangers`]). Sending, starting
    /// and the other calls that name a contact do the same.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed.
    pub async fn add_contact(&self, to: &BareJid) -> Result<(), ClientError> {
        self.with_session(to, |_, _, _| ()).await
    }

    /// Whether the conversation with `to` is private, and with which key. (Asking does not
    /// make `to` one of the user's contacts.)
    ///
    /// # Errors
    /// [`ClientError::Closed`] when the client is closed.
    pub async fn private_with(&self, to: &BareJid) -> Result<Option<Private>, ClientError> {
        let (tx, rx) = oneshot::channel();
        let look: Look = Box::new(move |s| {
            let private = s.and_then(Session::private_with).map(|(instance, key, ssid)| Private {
                instance,
                fingerprint: key.fingerprint(),
                ssid,
            });
            // The caller may have stopped waiting.
            let _ = tx.send(private);
        });
        self.commands.send(Command::Look { to: to.clone(), look }).await.map_err(|_| ClientError::Closed)?;
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Ends every private conversation (the contacts are told), closes the stream cleanly
    /// and stops the task; the [`Events`] stream ends.
    ///
    /// # Errors
    /// [`ClientError::Closed`] when it was closed already.
    pub async fn close(&self) -> Result<(), ClientError> {
        let (done, wait) = oneshot::channel();
        self.commands.send(Command::Close { done }).await.map_err(|_| ClientError::Closed)?;
        wait.await.map_err(|_| ClientError::Closed)
    }
}

/// The reconnection backend for the stanza stream: the first call hands over the connection
/// `connect` already made (so its errors reached the caller); later calls log in again,
/// with growing delays, telling the application about each failure.
fn reconnector(
    first: Connection,
    connector: StartTls,
    config: &Config,
    timeouts: Timeouts,
    events: mpsc::Sender<ClientEvent>,
) -> Box<dyn FnMut(Option<String>, oneshot::Sender<Connection>) + Send + 'static> {
    let mut first = Some(first);
    let jid = config.jid.clone();
    let password = config.password.clone();
    let (min_delay, max_delay) = config.reconnect_delay;
    Box::new(move |_location, slot| {
        if let Some(conn) = first.take() {
            // The stream is being created and waits for this connection; if it is gone, so
            // is the client, and the connection just closes.
            let _ = slot.send(conn);
            return;
        }
        let (connector, jid, password, events) =
            (connector.clone(), jid.clone(), password.clone(), events.clone());
        tokio::spawn(async move {
            let mut delay = min_delay;
            loop {
                tokio::time::sleep(delay).await;
                if slot.is_closed() {
                    return;
                }
                match login(&connector, &jid, &password, timeouts).await {
                    Ok(conn) => {
                        let _ = slot.send(conn);
                        return;
                    }
                    Err(e) => {
                        let error = ConnectError::from_xmpp(e).to_string();
                        delay = (delay * 2).min(max_delay);
                        // Without a reader the event is lost, but the stream still waits for
                        // its connection: the slot is only dropped once the stream is gone.
                        let _ = events.send(ClientEvent::ReconnectFailed { error, retry_in: delay }).await;
                    }
                }
            }
        });
    })
}

/// The task behind a [`Client`].
struct Task {
    stream: StanzaStream,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClientEvent>,
    /// One session per contact. Everything goes to the contact's bare JID: the server hands
    /// it to each of the contact's clients, and OTR instance tags decide which one it is for
    /// (answering only the client that wrote last would starve the others' key exchanges).
    peers: Contacts,
    config: Config,
    rng: SystemRng,
    epoch: Instant,
    own: Jid,
}

impl Task {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The earliest time a session wants [`Session::handle_timeout`] (the driver's one
    /// timer queue).
    fn next_timeout(&mut self) -> Option<Instant> {
        let due = self.peers.driver().poll_timeout()?;
        Some(self.epoch + Duration::from_millis(due.0))
    }

    /// Handles `early` (what arrived while `connect` waited), then runs until closed.
    async fn run(mut self, early: Vec<StreamItem>) {
        for item in early {
            self.on_stream(item).await;
        }
        loop {
            let deadline = self.next_timeout();
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Session { to, job }) => {
                        let now = self.now();
                        let (config, rng) = (&self.config, &mut self.rng);
                        self.peers.user(&to, || new_session(config), |s| job(s, now, rng));
                        self.flush().await;
                    }
                    Some(Command::Look { to, look }) => look(self.peers.get(&to)),
                    Some(Command::Close { done }) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                item = self.stream.next() => match item {
                    Some(item) => self.on_stream(item).await,
                    // The stream only ends when closed locally.
                    None => return,
                },
                () = sleep_until(deadline) => {
                    let now = self.now();
                    self.peers.driver().handle_timeout(now);
                    self.flush().await;
                }
            }
        }
    }

    /// Sends what the sessions have to send, each to its contact's bare JID, then hands
    /// their events to the application.
    async fn flush(&mut self) {
        let driver = self.peers.driver();
        let mut out = Vec::new();
        while let Some((jid, t)) = driver.poll_transmit() {
            out.push((jid, t.message));
        }
        let mut events = Vec::new();
        while let Some(e) = driver.poll_event() {
            events.push(e);
        }
        for (jid, body) in out {
            let msg = stanza::otr_message(jid.into(), body);
            let _token = self.stream.send(Box::new(msg.into())).await;
        }
        for (peer, event) in events {
            self.emit(ClientEvent::Otr { peer, event }).await;
        }
    }

    async fn emit(&self, event: ClientEvent) {
        // If the application dropped its Events, it does not want them.
        let _ = self.events.send(event).await;
    }

    async fn on_stream(&mut self, item: StreamItem) {
        match item {
            StreamItem::Stream(StreamEvent::Suspended) => self.emit(ClientEvent::ConnectionLost).await,
            StreamItem::Stream(StreamEvent::Resumed) => {
                self.emit(ClientEvent::Online { jid: self.own.clone(), resumed: true }).await;
            }
            StreamItem::Stream(StreamEvent::Reset { bound_jid, .. }) => {
                // A new stream: the server forgot our presence.
                let _token = self.stream.send(Box::new(Presence::available().into())).await;
                self.own = bound_jid.clone();
                self.emit(ClientEvent::Online { jid: bound_jid, resumed: false }).await;
            }
            StreamItem::Stanza(Stanza::Message(m)) => self.on_message(m).await,
            StreamItem::Stanza(Stanza::Iq(iq)) => self.on_iq(iq).await,
            // Presence (of contacts who share theirs) changes nothing for OTR.
            StreamItem::Stanza(Stanza::Presence(_)) => {}
        }
    }

    async fn on_message(&mut self, msg: xmpp_parsers::message::Message) {
        match stanza::classify(msg) {
            Incoming::Nothing => {}
            Incoming::Rejected { from, reason } => self.emit(ClientEvent::Rejected { from, reason }).await,
            Incoming::Bounce { from, condition } => {
                let peer = from.to_bare();
                self.emit(ClientEvent::Undeliverable { peer, condition }).await;
            }
            Incoming::Body { from, body } => {
                let jid = from.to_bare();
                let now = self.now();
                let (config, rng) = (&self.config, &mut self.rng);
                let Some(result) =
                    self.peers.writer(&jid, || new_session(config), |s| s.receive(now, &body, rng))
                else {
                    self.emit(ClientEvent::Rejected { from: Some(from), reason: Rejected::TooManyContacts })
                        .await;
                    return;
                };
                self.flush().await;
                self.peers.trim();
                match result {
                    // The contact's other clients see what we send to one of them (all go to
                    // the bare JID): for them it is normal traffic, not an error.
                    Ok(()) | Err(ReceiveError::OtherInstance) => {}
                    Err(error) => self.emit(ClientEvent::OtrError { peer: jid, error }).await,
                }
            }
        }
    }

    /// We answer XEP-0199 pings and offer no other IQ service: other requests get the error
    /// RFC 6120 asks for; answers (to requests we never make) are dropped.
    async fn on_iq(&mut self, iq: Iq) {
        let (from, id, payload) = match &iq {
            Iq::Get { from, id, payload, .. } | Iq::Set { from, id, payload, .. } => {
                (from.clone(), id.clone(), payload)
            }
            Iq::Result { .. } | Iq::Error { .. } => return,
        };
        let mut reply = if matches!(iq, Iq::Get { .. }) && payload.is("ping", xmpp_parsers::ns::PING) {
            Iq::Result { from: None, to: None, id, payload: None }
        } else {
            let error = StanzaError::new(ErrorType::Cancel, DefinedCondition::ServiceUnavailable, "en", "");
            Iq::from_error(id, error)
        };
        if let Some(from) = from {
            reply = reply.with_to(from);
        }
        let _token = self.stream.send(Box::new(reply.into())).await;
    }

    /// Ends every private conversation, sends what that produced, closes the stream.
    async fn shutdown(mut self) {
        let now = self.now();
        let jids: Vec<BareJid> = self.peers.iter().map(|(jid, _)| jid.clone()).collect();
        for jid in jids {
            self.peers.driver().with(&jid, |s| s.end(now));
        }
        self.flush().await;
        self.stream.close().await;
    }
}

/// A fresh OTR session for one contact.
fn new_session(config: &Config) -> Session {
    let mut cfg = SessionConfig::new(config.jid.to_string(), config.policy, config.instance_tag);
    cfg.max_message_size = config.max_message_size;
    Session::new(cfg, config.identity.clone())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
