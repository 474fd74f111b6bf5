//! The [`Session`]: one local account talking to one remote account, over any transport.

use std::collections::VecDeque;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::ake::{Ake, AkePhase};
use crate::budget::Budget;
use crate::crypto::dsa::{DsaKeyPair, DsaPublicKey, Fingerprint};
use crate::data::FLAG_IGNORE_UNREADABLE;
use crate::error::{ReceiveError, SendError};
use crate::event::{Event, Ssid, Timestamp, Transmit};
use crate::fragment::Reassembler;
use crate::instance::InstanceTag;
use crate::message::{self, Incoming, Versions};
use crate::policy::Policy;
use crate::tlv::{self, Tlv};

mod output;
mod persist;
mod private;
mod receive;
mod routing;
pub mod snapshot;

pub use snapshot::{Snapshot, SnapshotError};

use private::{Held, MsgState};
use routing::Instance;

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
    /// The generation of the last snapshot taken or restored (see [`Session::snapshot`]).
    generation: u64,
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
            generation: 0,
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

    /// Our instance tag.
    pub fn instance_tag(&self) -> InstanceTag {
        self.config.instance_tag
    }

    /// Our long-term key.
    pub fn identity(&self) -> &DsaKeyPair {
        &self.identity
    }

    /// The configuration the session runs with (after [`restore`](Self::restore): the one the
    /// snapshot recorded).
    pub fn config(&self) -> &SessionConfig {
        &self.config
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
}
