//! The [`Session`]: one local account talking to one remote account, over any transport.

use std::collections::VecDeque;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::ake::{Ake, AkePhase, Established};
use crate::budget::Budget;
use crate::crypto::dsa::{DsaKeyPair, DsaPublicKey, Fingerprint};
use crate::data::{self, DataMessage, FLAG_IGNORE_UNREADABLE, Unreadable};
use crate::error::{ReceiveError, SendError};
use crate::event::{Event, Ssid, SsidHalf, Timestamp, Transmit};
use crate::fragment::{self, Fragment, Reassembler};
use crate::instance::InstanceTag;
use crate::keys::KeyWindow;
use crate::message::{self, Header, Incoming, Versions, kind};
use crate::policy::Policy;
use crate::smp::{Smp, SmpEvent};
use crate::tlv::{self, Tlv};
use crate::wire::{Reader, WireError};

/// After receiving data, how long (ms) we stay silent before sending a heartbeat (libotr's
/// HEARTBEAT_INTERVAL is 60 s).
pub const HEARTBEAT_MS: u64 = 60_000;

/// Least time (ms) between two OTR error replies we send: two clients that cannot read each
/// other never bounce errors back and forth faster than this.
pub const ERROR_REPLY_INTERVAL_MS: u64 = 5_000;
/// Least time (ms) between two key exchanges we start by ourselves after an OTR error.
pub const AUTO_AKE_INTERVAL_MS: u64 = 30_000;
/// How long (ms) we remember what we sent, to tell the user what may not have arrived when the
/// peer turns out to have lost its session.
pub const RECENT_MS: u64 = 60_000;
/// How long (ms) messages to an instance wait for a key exchange it started (or we started
/// because it lost its session) before they go out with the keys we have. Short, because
/// what starts the wait (a query, an OTR error, a D-H Commit) is not authenticated: anyone on
/// the network can send one (see SECURITY.md, "Active attackers").
pub const RESYNC_TIMEOUT_MS: u64 = 5_000;
/// Least time (ms) between two such waits for one instance: an attacker repeating the trigger
/// delays that conversation's messages by at most [`RESYNC_TIMEOUT_MS`] per interval.
pub const RESYNC_INTERVAL_MS: u64 = 30_000;

/// Most instances without a private or ended conversation (key exchanges in progress,
/// plaintext clients); beyond it the least recently active of them is forgotten.
pub const MAX_PENDING_INSTANCES: usize = 16;
/// Most instances of one remote account in all; a private or ended conversation is never
/// forgotten to make room (a new client is refused instead).
pub const MAX_INSTANCES: usize = 64;
/// Key exchange work unauthenticated input may cause (queries, whitespace tags, AKE messages
/// from clients that never completed one): a burst of this many messages...
pub const AKE_BURST: u32 = 16;
/// ...then one per this many milliseconds (4 per second).
pub const AKE_REFILL_MS: u64 = 250;
/// The same for each client that completed a key exchange in this session (its re-keys do
/// not compete with strangers' floods): a burst of this many...
pub const KNOWN_AKE_BURST: u32 = 8;
/// ...then one per this many milliseconds (2 per second).
pub const KNOWN_AKE_REFILL_MS: u64 = 500;
/// Most sent texts remembered per private conversation for that purpose.
const MAX_RECENT: usize = 32;

/// Most messages held while waiting for a private conversation.
const MAX_HELD: usize = 100;
/// Most fingerprints remembered as having spoken version 3 (for downgrade detection).
const MAX_V3_KEYS: usize = 16;

/// What we tell a peer whose encrypted message we could not read.
const ERR_UNREADABLE: &str = "The encrypted message received could not be read. Please resend it.";
/// What we tell a peer whose encrypted message was malformed.
const ERR_MALFORMED: &str = "The encrypted message received was malformed.";
/// What we tell a peer that sent encrypted data outside a private conversation.
const ERR_NOT_PRIVATE: &str =
    "The encrypted message received could not be read: there is no private conversation.";

/// How a session is set up.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our account name (shown to the peer in query messages).
    pub account: String,
    /// When to offer, start and require encryption.
    pub policy: Policy,
    /// Our instance tag; keep it stable for an account across restarts if possible.
    pub instance_tag: InstanceTag,
    /// The largest transport message the network carries, in bytes; longer OTR messages are
    /// split into fragments. 0 means no limit.
    pub max_message_size: usize,
}

impl SessionConfig {
    /// A configuration without a message size limit.
    pub fn new(account: impl Into<String>, policy: Policy, instance_tag: InstanceTag) -> Self {
        Self { account: account.into(), policy, instance_tag, max_message_size: 0 }
    }
}

/// How [`Session::send`] handled a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Sent encrypted in the private conversation.
    Encrypted,
    /// Sent as plaintext (policy allows it and no private conversation exists).
    Plaintext,
    /// Held: it will be sent encrypted as soon as the private conversation starts (a query
    /// went out, or an AKE is already under way). Nothing left in plaintext.
    Held,
}

/// The message state of one remote instance.
enum MsgState {
    Plaintext,
    Encrypted(Box<Private>),
    Finished,
}

/// An established private conversation.
struct Private {
    keys: KeyWindow,
    ssid: Ssid,
    their_key: DsaPublicKey,
    smp: Smp,
    /// Plaintexts (text, NUL) sent recently, for [`Event::MaybeNotDelivered`]: the buffer that
    /// was encrypted is kept, not a second copy of the text.
    recent: VecDeque<(Timestamp, Zeroizing<Vec<u8>>)>,
}

impl Private {
    fn new(keys: KeyWindow, ssid: Ssid, their_key: DsaPublicKey) -> Self {
        Self { keys, ssid, their_key, smp: Smp::new(), recent: VecDeque::new() }
    }
}

/// Our state towards one remote instance (one client of the remote account).
struct Instance {
    tag: InstanceTag,
    ake: Ake,
    state: MsgState,
    /// Whether a key exchange with it completed in this session.
    authenticated: bool,
    /// Its own budget of key exchange work, once authenticated.
    budget: Budget,
    /// When the last wait for new keys began (see [`RESYNC_INTERVAL_MS`]).
    last_resync: Option<Timestamp>,
    /// When we last exchanged a message with it, as a sequence number (ties in time are
    /// common; the order of events is what matters).
    last_active: u64,
    /// When we last sent this instance an encrypted message.
    last_sent: Timestamp,
    /// Set when data arrived that our next message (or a heartbeat) should acknowledge.
    owes_heartbeat: bool,
    /// Since when a new key exchange with this private instance is expected to replace its
    /// keys (it started one, or it lost its session): new messages wait for it.
    resync_since: Option<Timestamp>,
    /// When an encrypted message from it last arrived intact.
    last_data_received: Timestamp,
}

impl Instance {
    fn rank(&self) -> u8 {
        match self.state {
            MsgState::Encrypted(_) => 2,
            MsgState::Finished => 1,
            MsgState::Plaintext => 0,
        }
    }

    /// The long-term key of its private conversation, if it is private.
    fn their_fingerprint(&self) -> Option<Fingerprint> {
        match &self.state {
            MsgState::Encrypted(p) => Some(p.their_key.fingerprint()),
            _ => None,
        }
    }
}

/// A text the user typed, waiting for a private conversation.
struct Held {
    /// The instance it must go to (`None`: whichever becomes private first).
    to: Option<InstanceTag>,
    /// The key of the private conversation it was typed in, if any: it goes to that key only.
    for_key: Option<Fingerprint>,
    text: Zeroizing<String>,
}

/// Whether we have offered OTR with a whitespace tag and how the peer reacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Offer {
    NotSent,
    Sent,
    Rejected,
    Accepted,
}

/// An OTR conversation between our account and one remote account (all its instances).
///
/// Sans-IO: feed it transport messages with [`receive`](Self::receive) and user actions with
/// [`send`](Self::send), [`start`](Self::start) and [`end`](Self::end); then drain
/// [`poll_transmit`](Self::poll_transmit) (strings for the network, in order) and
/// [`poll_event`](Self::poll_event) (what to show the user). Time and randomness come from
/// the caller, so a run with a seeded RNG and a fake clock replays exactly.
///
/// ```
/// # use otr_core::*;
/// # use rand_chacha::ChaCha20Rng; use rand_core::SeedableRng;
/// let mut rng = ChaCha20Rng::seed_from_u64(1);
/// let now = Timestamp(0);
/// let tag = InstanceTag::random(&mut rng);
/// let mut alice = Session::new(SessionConfig::new("alice", Policy::MANUAL, tag), DsaKeyPair::generate(&mut rng));
/// let tag = InstanceTag::random(&mut rng);
/// let mut bob = Session::new(SessionConfig::new("bob", Policy::MANUAL, tag), DsaKeyPair::generate(&mut rng));
/// alice.start(now);
/// // Route messages until both sides are quiet.
/// loop {
///     let mut moved = false;
///     while let Some(t) = alice.poll_transmit() { bob.receive(now, &t.message, &mut rng).unwrap(); moved = true; }
///     while let Some(t) = bob.poll_transmit() { alice.receive(now, &t.message, &mut rng).unwrap(); moved = true; }
///     if !moved { break; }
/// }
/// assert!(matches!(alice.poll_event(), Some(Event::Secure { .. })));
/// alice.send(now, "hola").unwrap();
/// let wire = alice.poll_transmit().unwrap();
/// bob.receive(now, &wire.message, &mut rng).unwrap();
/// # let _ = bob.poll_event();
/// assert!(matches!(bob.poll_event(), Some(Event::Message { encrypted: true, .. })));
/// ```
pub struct Session {
    config: SessionConfig,
    identity: DsaKeyPair,
    /// The AKE we started by answering a query or tag, before knowing the peer's instance.
    master: Ake,
    /// The protocol version of the master AKE's D-H Commit.
    master_version: u16,
    instances: Vec<Instance>,
    outgoing: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Messages waiting for a private conversation.
    held: VecDeque<Held>,
    /// Key exchange work that unauthenticated input may still cause.
    ake_budget: Budget,
    /// When we last sent an OTR error reply.
    last_error_reply: Option<Timestamp>,
    /// When we last started a key exchange by ourselves because of an OTR error.
    last_auto_ake: Option<Timestamp>,
    offer: Offer,
    /// Long-term keys that completed a version 3 exchange in this session: a version 2
    /// exchange with one of them is a downgrade by the network, and refused.
    v3_keys: Vec<Fingerprint>,
    fragments: Reassembler,
    /// Counts message exchanges, to tell which instance was active most recently.
    activity: u64,
    /// Whether intermediate secrets are recorded (feature `trace` only).
    #[cfg(feature = "trace")]
    tracing: bool,
    /// Recorded intermediate secrets, oldest first (feature `trace` only).
    #[cfg(feature = "trace")]
    traces: VecDeque<crate::trace::Trace>,
}

impl Session {
    /// A session for `config.account` with long-term key `identity`.
    pub fn new(config: SessionConfig, identity: DsaKeyPair) -> Self {
        Self {
            config,
            identity,
            master: Ake::default(),
            master_version: message::VERSION_3,
            instances: Vec::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            held: VecDeque::new(),
            ake_budget: Budget::new(AKE_BURST, AKE_REFILL_MS),
            last_error_reply: None,
            last_auto_ake: None,
            offer: Offer::NotSent,
            v3_keys: Vec::new(),
            fragments: Reassembler::default(),
            activity: 0,
            #[cfg(feature = "trace")]
            tracing: false,
            #[cfg(feature = "trace")]
            traces: VecDeque::new(),
        }
    }

    /// Starts (or stops) recording the intermediate secrets the engine computes: DH private
    /// keys, shared secrets, AKE and data keys, SMP secrets. Off by default.
    ///
    /// For test vectors and debugging only: these values are secret, and a build with the
    /// `trace` feature must never handle real conversations.
    #[cfg(feature = "trace")]
    pub fn set_tracing(&mut self, on: bool) {
        self.tracing = on;
        if !on {
            self.traces.clear();
        }
    }

    /// The next recorded intermediate value (see [`set_tracing`](Self::set_tracing) and
    /// [`crate::trace`]), in the order the engine computed them.
    #[cfg(feature = "trace")]
    pub fn poll_trace(&mut self) -> Option<crate::trace::Trace> {
        self.traces.pop_front()
    }

    /// Moves what instance `i`'s AKE and key window computed into the trace queue.
    #[cfg(feature = "trace")]
    fn collect_traces(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        let mut pending = inst.ake.take_traces();
        if let MsgState::Encrypted(p) = &mut inst.state {
            pending.extend(p.keys.take_traces());
        }
        if self.tracing {
            let tag = inst.tag;
            self.traces.extend(pending.into_iter().map(|value| crate::trace::Trace { instance: tag, value }));
        }
    }

    /// Without the `trace` feature there is nothing to collect.
    #[cfg(not(feature = "trace"))]
    #[inline(always)]
    fn collect_traces(&mut self, _i: usize) {}

    /// Records SMP's compared secret (feature `trace` only).
    #[cfg(feature = "trace")]
    fn trace_smp_secret(
        &mut self,
        i: usize,
        initiator: &Fingerprint,
        responder: &Fingerprint,
        secret: &[u8],
    ) {
        let inst = &self.instances[i];
        let MsgState::Encrypted(p) = &inst.state else { return };
        if self.tracing {
            let ssid = p.ssid.0;
            let digest = crate::smp::secret_digest(initiator, responder, &ssid, secret);
            self.traces.push_back(crate::trace::Trace {
                instance: inst.tag,
                value: crate::trace::Value::SmpSecret {
                    initiator: initiator.0,
                    responder: responder.0,
                    ssid,
                    user_secret: secret.to_vec(),
                    secret: *digest,
                },
            });
        }
    }

    /// Our instance tag.
    pub fn instance_tag(&self) -> InstanceTag {
        self.config.instance_tag
    }

    /// Our long-term key.
    pub fn identity(&self) -> &DsaKeyPair {
        &self.identity
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// Whether the conversation with the best instance is private, and with whom.
    pub fn private_with(&self) -> Option<(InstanceTag, &DsaPublicKey, Ssid)> {
        let best = self.best()?;
        match &best.state {
            MsgState::Encrypted(p) => Some((best.tag, &p.their_key, p.ssid)),
            _ => None,
        }
    }

    /// The next transport message to send, in order.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outgoing.pop_front()
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: a heartbeat is
    /// due, or a partial fragmented message expires.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let heartbeats = self
            .instances
            .iter()
            .filter(|i| i.owes_heartbeat && matches!(i.state, MsgState::Encrypted(_)))
            .map(|i| i.last_sent.plus_millis(HEARTBEAT_MS));
        let resyncs =
            self.instances.iter().filter_map(|i| i.resync_since).map(|t| t.plus_millis(RESYNC_TIMEOUT_MS));
        heartbeats.chain(resyncs).chain(self.fragments.next_expiry()).min()
    }

    /// Does the time-based work that is due: heartbeats (an empty encrypted message, flagged
    /// IGNORE_UNREADABLE, to an instance that sent us data and heard nothing back for
    /// a minute, so its keys rotate as libotr's do), sending messages that waited too
    /// long for a key exchange, and dropping stale fragments.
    /// Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.fragments.expire(now);
        for i in 0..self.instances.len() {
            if self.instances[i].resync_since.is_some_and(|t| t.plus_millis(RESYNC_TIMEOUT_MS) <= now) {
                // The new key exchange did not finish: send what waited with the keys we have.
                self.instances[i].resync_since = None;
                if matches!(self.instances[i].state, MsgState::Encrypted(_)) {
                    self.flush_held(i, now);
                }
            }
            let inst = &self.instances[i];
            if inst.owes_heartbeat
                && matches!(inst.state, MsgState::Encrypted(_))
                && inst.last_sent.plus_millis(HEARTBEAT_MS) <= now
            {
                let plain = tlv::join_plaintext(b"", &[]);
                self.send_to_instance(i, now, FLAG_IGNORE_UNREADABLE, &plain);
            }
        }
    }

    /// Asks the peer to start a private conversation (sends an OTR query message).
    /// Does nothing when the policy allows no version.
    pub fn start(&mut self, _now: Timestamp) {
        let versions = Versions::allowed_by(self.config.policy);
        if versions.v2 || versions.v3 {
            let q = message::query_message(&self.config.account, versions);
            self.outgoing.push_back(Transmit { message: q });
        }
    }

    /// Ends the private conversation with every instance: each encrypted one is told with a
    /// "disconnected" TLV. Afterwards the session is in plaintext; messages held for the
    /// private conversation are dropped.
    pub fn end(&mut self, now: Timestamp) {
        self.master.reset();
        self.held.clear();
        for i in 0..self.instances.len() {
            self.instances[i].ake.reset();
            let tag = self.instances[i].tag;
            match self.instances[i].state {
                MsgState::Encrypted(_) => {
                    self.send_tlv(i, now, Tlv::new(tlv::kind::DISCONNECTED, Vec::new()));
                }
                MsgState::Finished => {}
                MsgState::Plaintext => continue,
            }
            self.instances[i].state = MsgState::Plaintext;
            self.events.push_back(Event::Ended { instance: tag });
        }
    }

    /// Sends a message typed by the user.
    ///
    /// # Errors
    /// [`SendError`] when the state or policy refuses it; nothing is transmitted then.
    pub fn send(&mut self, now: Timestamp, text: &str) -> Result<Sent, SendError> {
        if text.contains('\0') {
            return Err(SendError::ContainsNul);
        }
        let target = self.best_index();
        if let Some(i) = target {
            let resyncing = self.instances[i].resync_since.is_some();
            match &self.instances[i].state {
                MsgState::Finished => return Err(SendError::Finished),
                MsgState::Encrypted(_) if resyncing => {
                    // Its keys are about to be replaced: send it once, with the new ones (and
                    // only if they belong to the same long-term key).
                    let inst = &self.instances[i];
                    return self.hold(Some(inst.tag), inst.their_fingerprint(), text);
                }
                MsgState::Encrypted(_) => {
                    self.touch(i);
                    self.send_text(i, now, text);
                    return Ok(Sent::Encrypted);
                }
                MsgState::Plaintext => {}
            }
        }
        let ake_running = self.master.phase() != AkePhase::None
            || self.instances.iter().any(|i| i.ake.phase() != AkePhase::None);
        let require = self.config.policy.contains(Policy::REQUIRE_ENCRYPTION);
        if require || ake_running {
            let held = self.hold(None, None, text)?;
            if require && !ake_running {
                self.start(now);
            }
            return Ok(held);
        }
        let mut out = text.to_owned();
        let versions = Versions::allowed_by(self.config.policy);
        if self.config.policy.contains(Policy::SEND_WHITESPACE_TAG)
            && (versions.v2 || versions.v3)
            && matches!(self.offer, Offer::NotSent | Offer::Sent)
        {
            out.push_str(&message::whitespace_tag(versions));
            self.offer = Offer::Sent;
        }
        self.outgoing.push_back(Transmit { message: out });
        Ok(Sent::Plaintext)
    }

    fn hold(
        &mut self,
        to: Option<InstanceTag>,
        for_key: Option<Fingerprint>,
        text: &str,
    ) -> Result<Sent, SendError> {
        if self.held.len() >= MAX_HELD {
            return Err(SendError::QueueFull);
        }
        self.held.push_back(Held { to, for_key, text: Zeroizing::new(text.to_owned()) });
        Ok(Sent::Held)
    }

    /// Encrypts a user's text to private instance `i`, remembering it for a while.
    fn send_text(&mut self, i: usize, now: Timestamp, text: &str) {
        let plain = Zeroizing::new(tlv::join_plaintext(text.as_bytes(), &[]));
        self.send_to_instance(i, now, 0, &plain);
        if let MsgState::Encrypted(p) = &mut self.instances[i].state {
            while p.recent.len() >= MAX_RECENT
                || p.recent.front().is_some_and(|(t, _)| t.plus_millis(RECENT_MS) < now)
            {
                p.recent.pop_front();
            }
            p.recent.push_back((now, plain));
        }
    }

    /// Sends the held messages meant for instance `i` (or for anyone), once, encrypted; those
    /// typed for another long-term key than the one instance `i` is now private with go back
    /// to the application ([`Event::HeldReturned`]), never to this key.
    fn flush_held(&mut self, i: usize, now: Timestamp) {
        let tag = self.instances[i].tag;
        let Some(key) = self.instances[i].their_fingerprint() else { return };
        let (mine, others): (VecDeque<_>, VecDeque<_>) =
            core::mem::take(&mut self.held).into_iter().partition(|h| h.to.is_none_or(|t| t == tag));
        self.held = others;
        let mut returned: Vec<(Fingerprint, Vec<String>)> = Vec::new();
        for held in mine {
            match held.for_key {
                Some(intended) if intended != key => {
                    match returned.iter_mut().find(|(k, _)| *k == intended) {
                        Some((_, texts)) => texts.push(held.text.to_string()),
                        None => returned.push((intended, vec![held.text.to_string()])),
                    }
                }
                _ => self.send_text(i, now, &held.text),
            }
        }
        for (intended, texts) in returned {
            self.events.push_back(Event::HeldReturned { intended, texts });
        }
    }

    /// Uses the extra symmetric key: sends the peer an empty encrypted message carrying TLV 8
    /// (`use_` big-endian, then `usedata`) and returns the 32-byte key of the key pair that
    /// message used; the peer gets the same key in an [`Event::ExtraSymmetricKey`]. What the
    /// key is for is the application's business (`use_` tells the peer).
    ///
    /// # Errors
    /// [`SendError::NotPrivate`] when there is no private conversation;
    /// [`SendError::NeedsVersion3`] when it is a version 2 conversation;
    /// [`SendError::TooLong`] when `usedata` does not fit in a TLV.
    pub fn extra_symmetric_key(
        &mut self,
        now: Timestamp,
        use_: u32,
        usedata: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, SendError> {
        let i = self.private_index()?;
        if self.instances[i].tag.is_v2() {
            return Err(SendError::NeedsVersion3);
        }
        if usedata.len() > usize::from(u16::MAX) - 4 {
            return Err(SendError::TooLong);
        }
        let mut value = use_.to_be_bytes().to_vec();
        value.extend_from_slice(usedata);
        self.send_tlv(i, now, Tlv::new(tlv::kind::EXTRA_SYMMETRIC_KEY, value)).ok_or(SendError::NotPrivate)
    }

    /// Starts the Socialist Millionaires' Protocol with the private instance: if the peer
    /// answers with the same `secret`, both sides learn that they talk to whom they think
    /// (an [`Event::SmpSucceeded`] carries the fingerprint that was verified). The optional
    /// `question` is shown to the peer. Restarts an SMP already under way.
    ///
    /// # Errors
    /// [`SendError::NotPrivate`] when there is no private conversation.
    pub fn smp_start(
        &mut self,
        now: Timestamp,
        question: Option<&str>,
        secret: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), SendError> {
        let i = self.private_index()?;
        let ours = self.identity.fingerprint();
        let MsgState::Encrypted(p) = &mut self.instances[i].state else { return Err(SendError::NotPrivate) };
        let theirs = p.their_key.fingerprint();
        let t = p.smp.start(&ours, &theirs, &p.ssid.0, secret, question, rng);
        #[cfg(feature = "trace")]
        self.trace_smp_secret(i, &ours, &theirs, secret);
        self.send_tlv(i, now, t);
        Ok(())
    }

    /// Answers the peer's SMP request (see [`Event::SmpRequest`]) with our `secret`.
    ///
    /// # Errors
    /// [`SendError::NoSmpRequest`] when no instance has a pending request.
    pub fn smp_respond(
        &mut self,
        now: Timestamp,
        secret: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), SendError> {
        let ours = self.identity.fingerprint();
        let i = (0..self.instances.len())
            .filter(|&i| matches!(&self.instances[i].state, MsgState::Encrypted(p) if p.smp.has_pending_request()))
            .max_by_key(|&i| self.instances[i].last_active)
            .ok_or(SendError::NoSmpRequest)?;
        let MsgState::Encrypted(p) = &mut self.instances[i].state else {
            return Err(SendError::NoSmpRequest);
        };
        let theirs = p.their_key.fingerprint();
        let t = match p.smp.respond(&theirs, &ours, &p.ssid.0, secret, rng) {
            Ok(t) => t,
            Err(_) => p.smp.abort(),
        };
        #[cfg(feature = "trace")]
        self.trace_smp_secret(i, &theirs, &ours, secret);
        self.send_tlv(i, now, t);
        Ok(())
    }

    /// Aborts every SMP under way (or pending request); the peer is told.
    pub fn smp_abort(&mut self, now: Timestamp) {
        for i in 0..self.instances.len() {
            let MsgState::Encrypted(p) = &mut self.instances[i].state else { continue };
            if p.smp.is_in_progress() {
                let t = p.smp.abort();
                self.send_tlv(i, now, t);
            }
        }
    }

    /// Bytes held in partially reassembled fragmented messages (bounded per sender and in total).
    pub fn buffered_fragment_bytes(&self) -> usize {
        self.fragments.held_bytes()
    }

    /// The instances of the remote account we know, with whether each is private.
    pub fn instances(&self) -> impl Iterator<Item = (InstanceTag, bool)> + '_ {
        self.instances.iter().map(|i| (i.tag, matches!(i.state, MsgState::Encrypted(_))))
    }

    /// Sends an encrypted message to one particular instance of the remote account.
    ///
    /// # Errors
    /// [`SendError::NotPrivate`] unless that instance is in a private conversation.
    pub fn send_to(&mut self, now: Timestamp, instance: InstanceTag, text: &str) -> Result<(), SendError> {
        if text.contains('\0') {
            return Err(SendError::ContainsNul);
        }
        let i = self
            .instances
            .iter()
            .position(|i| i.tag == instance && matches!(i.state, MsgState::Encrypted(_)));
        let i = i.ok_or(SendError::NotPrivate)?;
        self.touch(i);
        if self.instances[i].resync_since.is_some() {
            let key = self.instances[i].their_fingerprint();
            self.hold(Some(instance), key, text)?;
        } else {
            self.send_text(i, now, text);
        }
        Ok(())
    }

    /// Handles a transport message from the remote account.
    ///
    /// # Errors
    /// [`ReceiveError`] when the message is malformed, unreadable or not for us. The session
    /// stays usable; where OTR says so, an error message was queued for the peer.
    pub fn receive(
        &mut self,
        now: Timestamp,
        msg: &str,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        match message::classify(msg)? {
            Incoming::Encoded(bytes) => self.on_encoded(now, &bytes, rng),
            Incoming::Fragment(f) => self.on_fragment(now, &f, rng),
            Incoming::Query(v) => self.on_offer(now, v, rng),
            Incoming::Error(text) => {
                self.events.push_back(Event::ErrorReceived { text });
                self.on_peer_error(now);
                Ok(())
            }
            Incoming::Plain { text, tag } => {
                self.on_plain(now, text, tag, rng);
                Ok(())
            }
        }
    }

    /// The peer sent an OTR error. Under ERROR_START_AKE we ask for a new key exchange, at
    /// most once per [`AUTO_AKE_INTERVAL_MS`] (so two clients cannot loop). If we thought the
    /// conversation private, the peer evidently cannot read us (it lost its session): new
    /// messages wait for the new keys, and the user learns what recently sent may be lost.
    fn on_peer_error(&mut self, now: Timestamp) {
        if !self.config.policy.contains(Policy::ERROR_START_AKE)
            || self.last_auto_ake.is_some_and(|t| t.plus_millis(AUTO_AKE_INTERVAL_MS) > now)
        {
            return;
        }
        self.last_auto_ake = Some(now);
        self.start(now);
        if let Some(i) = self.best_index() {
            self.suspect_lost_session(i, now);
        }
    }

    /// The peer of private instance `i` evidently lost its session (it cannot read us, or it
    /// asks for a new key exchange): what the user types now waits for the new keys, and the
    /// user learns which texts, sent since the peer last wrote, may not have arrived.
    fn suspect_lost_session(&mut self, i: usize, now: Timestamp) {
        let inst = &mut self.instances[i];
        let MsgState::Encrypted(p) = &mut inst.state else { return };
        // What triggers this is unauthenticated, so the wait it starts is short and rare: an
        // attacker repeating the trigger cannot keep the conversation waiting.
        if inst.resync_since.is_none()
            && inst.last_resync.is_none_or(|t| t.plus_millis(RESYNC_INTERVAL_MS) <= now)
        {
            inst.resync_since = Some(now);
            inst.last_resync = Some(now);
        }
        let since = inst.last_data_received;
        let texts: Vec<String> = p
            .recent
            .drain(..)
            .filter(|(t, _)| t.plus_millis(RECENT_MS) >= now && *t >= since)
            .map(|(_, plain)| String::from_utf8_lossy(tlv::split_plaintext(&plain).0).into_owned())
            .collect();
        if !texts.is_empty() {
            self.events.push_back(Event::MaybeNotDelivered { instance: inst.tag, texts });
        }
    }

    fn on_fragment(
        &mut self,
        now: Timestamp,
        msg: &str,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        let f = Fragment::parse(msg)?;
        // Dropped on arrival, never buffered: fragments of a version the policy refuses, from
        // an invalid instance tag, or for another instance.
        self.check_version(f.version)?;
        if f.version == message::VERSION_3 && InstanceTag::new(f.sender).is_none() {
            return Err(WireError::Invalid("sender instance tag below 0x100").into());
        }
        if f.receiver != 0 && f.receiver != self.config.instance_tag.get() {
            return Err(ReceiveError::OtherInstance);
        }
        let Some(whole) = self.fragments.add(&f, now)? else {
            return Ok(());
        };
        match message::classify(&whole)? {
            Incoming::Encoded(bytes) => self.on_encoded(now, &bytes, rng),
            _ => Err(WireError::Invalid("a fragmented message must be an encoded OTR message").into()),
        }
    }

    /// The peer offered OTR (query or whitespace tag): start the AKE in the highest version
    /// both sides allow.
    ///
    /// # Errors
    /// [`ReceiveError::RateLimited`] when offers (which anyone can send) arrive faster than
    /// the session starts key exchanges for them.
    fn on_offer(
        &mut self,
        now: Timestamp,
        v: Versions,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        if let Some(version) = v.best_with(Versions::allowed_by(self.config.policy)) {
            if !self.ake_budget.take(now) {
                return Err(ReceiveError::RateLimited);
            }
            self.offer = Offer::Accepted;
            // A query while we think the conversation private: the peer lost its session (or
            // refreshes it). New keys are coming either way. (An offer without the version of
            // our private instance comes from another client of the account.)
            if let Some(i) = self.best_index() {
                let offered = if self.instances[i].tag.is_v2() { v.v2 } else { v.v3 };
                if offered {
                    self.suspect_lost_session(i, now);
                }
            }
            let commit = self.master.start(rng);
            // This exchange supersedes every other one under way: the peer keeps only the
            // newest commit (a Reveal Signature for an older one could never verify), and an
            // instance waiting on an old exchange of its own would ignore the D-H Key that
            // answers this one. An instance without an exchange continues from this commit.
            for inst in &mut self.instances {
                inst.ake.reset();
            }
            self.master_version = version;
            let header = match version {
                message::VERSION_2 => Header::v2(commit.kind),
                _ => Header::v3(commit.kind, self.config.instance_tag, None),
            };
            self.send_encoded(header, &commit.body);
        }
        Ok(())
    }

    fn on_plain(
        &mut self,
        now: Timestamp,
        text: String,
        tag: Option<Versions>,
        rng: &mut (impl CryptoRng + ?Sized),
    ) {
        match tag {
            Some(v) if self.config.policy.contains(Policy::WHITESPACE_START_AKE) => {
                // A tag beyond the flood budget starts nothing; its text is still delivered.
                let _ = self.on_offer(now, v, rng);
            }
            Some(_) => {}
            None if self.offer == Offer::Sent => self.offer = Offer::Rejected,
            None => {}
        }
        if text.is_empty() {
            return;
        }
        let private = self.instances.iter().any(|i| !matches!(i.state, MsgState::Plaintext));
        if private || self.config.policy.contains(Policy::REQUIRE_ENCRYPTION) {
            self.events.push_back(Event::UnencryptedReceived { text });
        } else {
            self.events.push_back(Event::Message { instance: None, text, encrypted: false });
        }
    }

    fn on_encoded(
        &mut self,
        now: Timestamp,
        bytes: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        let version = Reader::new(bytes).u16()?;
        self.check_version(version)?;
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        let sender = if version == message::VERSION_2 {
            // Version 2 has no instance tags: one conversation per remote account.
            InstanceTag::V2
        } else {
            let sender = InstanceTag::new(header.sender)
                .ok_or(WireError::Invalid("sender instance tag below 0x100"))?;
            let ours = self.config.instance_tag.get();
            let addressed =
                header.receiver == ours || (header.kind == kind::DH_COMMIT && header.receiver == 0);
            if !addressed {
                return Err(ReceiveError::OtherInstance);
            }
            sender
        };
        let body = &bytes[r.position()..];
        let Some(i) = self.instances.iter().position(|i| i.tag == sender) else {
            return self.on_new_instance(now, sender, header.kind, bytes, body, rng);
        };
        self.touch(i);
        match header.kind {
            kind::DATA => self.on_data(i, now, bytes, rng),
            kind::DH_COMMIT | kind::DH_KEY | kind::REVEAL_SIGNATURE | kind::SIGNATURE => {
                self.on_ake(i, now, header.kind, body, rng)
            }
            other => Err(ReceiveError::UnknownType(other)),
        }
    }

    /// Whether we speak protocol `version` under our policy.
    fn check_version(&self, version: u16) -> Result<(), ReceiveError> {
        let allowed = match version {
            message::VERSION_2 => Policy::ALLOW_V2,
            message::VERSION_3 => Policy::ALLOW_V3,
            _ => return Err(ReceiveError::UnsupportedVersion(version)),
        };
        if self.config.policy.contains(allowed) {
            Ok(())
        } else {
            Err(ReceiveError::UnsupportedVersion(version))
        }
    }

    /// A message from an instance we hold no state for. Only a D-H Commit, or a D-H Key
    /// answering our own commit, makes a new instance (within the bounds and the flood budget);
    /// anything else is answered without keeping state.
    fn on_new_instance(
        &mut self,
        now: Timestamp,
        tag: InstanceTag,
        msg_kind: u8,
        bytes: &[u8],
        body: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        let answers_us = msg_kind == kind::DH_KEY
            && self.master.phase() == AkePhase::AwaitingDhKey
            && self.master_version == version_of(tag);
        match msg_kind {
            kind::DH_COMMIT => {}
            kind::DH_KEY if answers_us => {}
            kind::DATA => return self.refuse_data(now, bytes),
            // No exchange with it is under way: nothing to continue.
            kind::DH_KEY | kind::REVEAL_SIGNATURE | kind::SIGNATURE => return Ok(()),
            other => return Err(ReceiveError::UnknownType(other)),
        }
        let i = self.add_instance(tag, now)?;
        self.touch(i);
        let result = self.on_ake(i, now, msg_kind, body, rng);
        if matches!(result, Err(ReceiveError::RateLimited)) {
            // Over the flood budget: keep nothing of it either.
            self.instances.remove(i);
        }
        result
    }

    /// Adds an instance for `tag`, first forgetting the least recently active one without a
    /// private or ended conversation if [`MAX_PENDING_INSTANCES`] are pending. Private and
    /// ended conversations are never forgotten: past [`MAX_INSTANCES`] of them the new
    /// instance is refused.
    fn add_instance(&mut self, tag: InstanceTag, now: Timestamp) -> Result<usize, ReceiveError> {
        let pending =
            || self.instances.iter().enumerate().filter(|(_, x)| matches!(x.state, MsgState::Plaintext));
        if pending().count() >= MAX_PENDING_INSTANCES || self.instances.len() >= MAX_INSTANCES {
            let oldest = pending().min_by_key(|(_, x)| x.last_active).map(|(i, _)| i);
            let oldest = oldest.ok_or(ReceiveError::TooManyInstances)?;
            self.instances.remove(oldest);
        }
        self.instances.push(Instance {
            tag,
            ake: Ake::default(),
            state: MsgState::Plaintext,
            authenticated: false,
            budget: Budget::new(KNOWN_AKE_BURST, KNOWN_AKE_REFILL_MS),
            last_resync: None,
            last_active: 0,
            last_sent: now,
            owes_heartbeat: false,
            resync_since: None,
            last_data_received: now,
        });
        Ok(self.instances.len() - 1)
    }

    fn on_ake(
        &mut self,
        i: usize,
        now: Timestamp,
        msg_kind: u8,
        body: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        let inst = &mut self.instances[i];
        // A D-H Key answering the commit we sent before we knew this instance (and a commit
        // crossing it) continue from that commit's state, when this instance has no exchange
        // of its own (a repeated D-H Key must meet the state it created: same Reveal Signature).
        //
        // In v2, a D-H Key that reaches the instance after it yielded to the peer's crossing
        // commit answers our commit all the same: libotr's master context (where every v2
        // exchange runs) always yields to a crossing commit, so without this both sides would
        // wait for a Reveal Signature forever. We continue as the initiator; libotr ignores our
        // D-H Key. (Not in v3: there libotr resolves the crossing by the spec's comparison.)
        let yielded =
            msg_kind == kind::DH_KEY && inst.tag.is_v2() && inst.ake.phase() == AkePhase::AwaitingRevealSig;
        let fresh = matches!(msg_kind, kind::DH_KEY | kind::DH_COMMIT) && inst.ake.phase() == AkePhase::None;
        let continues_master = (fresh || yielded) && self.master_version == version_of(inst.tag);
        if continues_master {
            if let Some(copy) = self.master.clone_awaiting_dh_key() {
                inst.ake = copy;
            }
        }
        // Messages that make us compute (a D-H key pair, a shared secret, a signature) are
        // paid from a budget: the instance's own once it authenticated, else the one all
        // unauthenticated input shares. Those the AKE ignores in its state cost nothing.
        let phase = inst.ake.phase();
        let costly = match msg_kind {
            kind::DH_COMMIT => true,
            kind::DH_KEY => phase == AkePhase::AwaitingDhKey,
            kind::REVEAL_SIGNATURE => phase == AkePhase::AwaitingRevealSig,
            _ => phase == AkePhase::AwaitingSig,
        };
        let budget = if inst.authenticated { &mut inst.budget } else { &mut self.ake_budget };
        if costly && !budget.take(now) {
            return Err(ReceiveError::RateLimited);
        }
        let step = inst.ake.handle(msg_kind, body, &self.identity, rng)?;
        if step.established.as_ref().is_some_and(|e| e.their_key.fingerprint() == self.identity.fingerprint())
        {
            // Our own messages reflected back (with rewritten instance tags): never private
            // with ourselves.
            inst.ake.reset();
            return Err(ReceiveError::OwnKey);
        }
        if msg_kind == kind::DH_COMMIT && matches!(inst.state, MsgState::Encrypted(_)) && step.reply.is_some()
        {
            // The peer asks for new keys while we are private: a refresh, or it lost its session.
            self.suspect_lost_session(i, now);
        }
        self.collect_traces(i);
        let inst = &mut self.instances[i];
        let tag = inst.tag;
        if let Some(reply) = step.reply {
            self.send_encoded(self.header_to(tag, reply.kind), &reply.body);
        }
        if let Some(est) = step.established {
            self.go_secure(i, now, est, rng);
        }
        Ok(())
    }

    fn go_secure(&mut self, i: usize, now: Timestamp, est: Established, rng: &mut (impl CryptoRng + ?Sized)) {
        self.master.reset();
        self.offer = Offer::Accepted;
        let fingerprint = est.their_key.fingerprint();
        if self.instances[i].tag.is_v2() && self.v3_keys.contains(&fingerprint) {
            self.events.push_back(Event::DowngradeRefused { fingerprint });
            return;
        }
        if !self.instances[i].tag.is_v2() && !self.v3_keys.contains(&fingerprint) {
            if self.v3_keys.len() == MAX_V3_KEYS {
                self.v3_keys.remove(0);
            }
            self.v3_keys.push(fingerprint);
        }
        let inst = &mut self.instances[i];
        let previous = inst.their_fingerprint();
        // A refresh keeps the key; a new key is a new conversation, and the user must know.
        let refreshed = previous == Some(fingerprint);
        if let Some(previous) = previous.filter(|p| *p != fingerprint) {
            self.events.push_back(Event::FingerprintChanged { instance: inst.tag, previous, fingerprint });
        }
        inst.authenticated = true;
        let ssid = Ssid(est.ssid);
        let bold = if est.we_revealed { SsidHalf::First } else { SsidHalf::Second };
        let keys = KeyWindow::after_ake(est.our_dh, est.their_dh, est.their_keyid, rng);
        inst.state = MsgState::Encrypted(Box::new(Private::new(keys, ssid, est.their_key)));
        let version = version_of(inst.tag);
        self.events.push_back(Event::Secure {
            instance: inst.tag,
            fingerprint,
            ssid,
            bold,
            refreshed,
            version,
        });
        self.collect_traces(i);
        self.instances[i].resync_since = None;
        self.flush_held(i, now);
    }

    fn on_data(
        &mut self,
        i: usize,
        now: Timestamp,
        bytes: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<(), ReceiveError> {
        let ignore = is_ignorable(bytes);
        let inst = &mut self.instances[i];
        let tag = inst.tag;
        let MsgState::Encrypted(private) = &mut inst.state else {
            return self.refuse_data(now, bytes);
        };
        let opened = DataMessage::read(bytes)
            .map_err(ReceiveError::from)
            .and_then(|m| m.open(&mut private.keys, rng).map_err(ReceiveError::from));
        self.collect_traces(i);
        let (plain, extra) = match opened {
            Ok(v) => v,
            Err(_) if ignore => return Ok(()),
            // The network repeated a message we already read: nothing to tell anyone.
            Err(ReceiveError::Unreadable(Unreadable::Duplicate)) => return Ok(()),
            Err(e) => {
                let reply =
                    if matches!(e, ReceiveError::Unreadable(_)) { ERR_UNREADABLE } else { ERR_MALFORMED };
                self.send_error(now, reply);
                return Err(e);
            }
        };
        self.instances[i].last_data_received = now;
        let (text, tlvs) = tlv::split_plaintext(&plain);
        if !text.is_empty() {
            // Validating UTF-8 is much faster than the lossy conversion, which is only for
            // the rare invalid text.
            let text = match core::str::from_utf8(text) {
                Ok(valid) => valid.to_owned(),
                Err(_) => String::from_utf8_lossy(text).into_owned(),
            };
            self.events.push_back(Event::Message { instance: Some(tag), text, encrypted: true });
        }
        // Like libotr: real messages (not heartbeats or TLV carriers) call for a heartbeat.
        self.instances[i].owes_heartbeat |= !text.is_empty();
        for t in tlvs {
            match t.kind {
                tlv::kind::DISCONNECTED => {
                    self.instances[i].state = MsgState::Finished;
                    self.events.push_back(Event::RemoteEnded { instance: tag });
                    break;
                }
                // The extra symmetric key is a version 3 feature (libotr does not check).
                tlv::kind::EXTRA_SYMMETRIC_KEY if t.value.len() >= 4 && !tag.is_v2() => {
                    let use_ = u32::from_be_bytes([t.value[0], t.value[1], t.value[2], t.value[3]]);
                    let usedata = t.value[4..].to_vec();
                    self.events.push_back(Event::ExtraSymmetricKey {
                        instance: tag,
                        key: extra.clone(),
                        use_,
                        usedata,
                    });
                }
                tlv::kind::SMP1..=tlv::kind::SMP1Q => self.on_smp(i, now, &t, rng),
                _ => {}
            }
        }
        self.handle_timeout(now);
        Ok(())
    }

    /// A data message outside a private conversation: the peer is told (OTR error reply),
    /// unless the message is flagged IGNORE_UNREADABLE.
    fn refuse_data(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), ReceiveError> {
        if is_ignorable(bytes) {
            return Ok(());
        }
        self.send_error(now, ERR_NOT_PRIVATE);
        Err(ReceiveError::NotPrivate)
    }

    fn on_smp(&mut self, i: usize, now: Timestamp, t: &Tlv, rng: &mut (impl CryptoRng + ?Sized)) {
        let tag = self.instances[i].tag;
        let MsgState::Encrypted(p) = &mut self.instances[i].state else { return };
        let (reply, event) = p.smp.handle(t, rng);
        let fingerprint = p.their_key.fingerprint();
        if let Some(reply) = reply {
            self.send_tlv(i, now, reply);
        }
        let event = match event {
            None => return,
            Some(SmpEvent::Request { question }) => Event::SmpRequest { instance: tag, question },
            Some(SmpEvent::Success) => Event::SmpSucceeded { instance: tag, fingerprint },
            Some(SmpEvent::Failure) => Event::SmpFailed { instance: tag },
            Some(SmpEvent::Aborted) => Event::SmpAborted { instance: tag, cheated: false },
            Some(SmpEvent::Cheated) => Event::SmpAborted { instance: tag, cheated: true },
        };
        self.events.push_back(event);
    }

    /// Sends an empty-text data message carrying `t` (flagged IGNORE_UNREADABLE, as libotr
    /// sends its SMP and symmetric-key carriers).
    fn send_tlv(&mut self, i: usize, now: Timestamp, t: Tlv) -> Option<Zeroizing<[u8; 32]>> {
        let plain = Zeroizing::new(tlv::join_plaintext(b"", &[t]));
        self.send_to_instance(i, now, FLAG_IGNORE_UNREADABLE, &plain)
    }

    /// The private instance to act on: the best one, if it is private.
    fn private_index(&self) -> Result<usize, SendError> {
        self.best_index()
            .filter(|&i| matches!(self.instances[i].state, MsgState::Encrypted(_)))
            .ok_or(SendError::NotPrivate)
    }

    /// Encrypts `plaintext` to instance `i` (which must be private) and returns the extra
    /// symmetric key of the key pair used.
    fn send_to_instance(
        &mut self,
        i: usize,
        now: Timestamp,
        flags: u8,
        plaintext: &[u8],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let tag = self.instances[i].tag;
        let mut state = core::mem::replace(&mut self.instances[i].state, MsgState::Plaintext);
        let extra = match &mut state {
            MsgState::Encrypted(p) => Some(self.send_data(tag, p, flags, plaintext)),
            _ => None,
        };
        let inst = &mut self.instances[i];
        inst.state = state;
        inst.last_sent = now;
        inst.owes_heartbeat = false;
        self.collect_traces(i);
        extra
    }

    fn send_data(
        &mut self,
        tag: InstanceTag,
        p: &mut Private,
        flags: u8,
        plaintext: &[u8],
    ) -> Zeroizing<[u8; 32]> {
        let header = self.header_to(tag, kind::DATA);
        let (bytes, extra) = data::seal(header, flags, &mut p.keys, plaintext);
        self.push_encoded(&bytes, &header);
        extra
    }

    /// The header of a message of type `msg_kind` to remote instance `tag` (in its version).
    fn header_to(&self, tag: InstanceTag, msg_kind: u8) -> Header {
        if tag.is_v2() {
            Header::v2(msg_kind)
        } else {
            Header::v3(msg_kind, self.config.instance_tag, Some(tag))
        }
    }

    fn send_encoded(&mut self, header: Header, body: &[u8]) {
        let mut w = crate::wire::Writer::new();
        header.write(&mut w);
        w.raw(body);
        self.push_encoded(w.as_slice(), &header);
    }

    /// Queues an encoded message, split into fragments (of `header`'s version) if it exceeds
    /// the size limit.
    fn push_encoded(&mut self, bytes: &[u8], header: &Header) {
        let whole = message::encode_envelope(bytes);
        let tags = (header.version == message::VERSION_3).then_some((header.sender, header.receiver));
        match fragment::split(&whole, self.config.max_message_size, tags) {
            None => self.outgoing.push_back(Transmit { message: whole }),
            Some(pieces) => self.outgoing.extend(pieces.into_iter().map(|message| Transmit { message })),
        }
    }

    /// Queues an OTR error reply, at most one per [`ERROR_REPLY_INTERVAL_MS`].
    fn send_error(&mut self, now: Timestamp, text: &str) {
        if self.last_error_reply.is_some_and(|t| t.plus_millis(ERROR_REPLY_INTERVAL_MS) > now) {
            return;
        }
        self.last_error_reply = Some(now);
        self.outgoing.push_back(Transmit { message: message::error_message(text) });
    }

    fn touch(&mut self, i: usize) {
        self.activity += 1;
        self.instances[i].last_active = self.activity;
    }

    fn best_index(&self) -> Option<usize> {
        (0..self.instances.len()).max_by_key(|&i| (self.instances[i].rank(), self.instances[i].last_active))
    }

    fn best(&self) -> Option<&Instance> {
        self.best_index().map(|i| &self.instances[i])
    }
}

/// Whether data message `bytes` is flagged IGNORE_UNREADABLE (no error reply if unreadable).
fn is_ignorable(bytes: &[u8]) -> bool {
    DataMessage::peek_flags(bytes).is_some_and(|f| f & FLAG_IGNORE_UNREADABLE != 0)
}

/// The protocol version spoken with remote instance `tag`.
fn version_of(tag: InstanceTag) -> u16 {
    if tag.is_v2() { message::VERSION_2 } else { message::VERSION_3 }
}
