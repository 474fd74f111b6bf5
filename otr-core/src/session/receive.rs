//! The receive paths: offers, plaintext, OTR errors, AKE messages, data messages and SMP.

use rand_core::CryptoRng;

use super::routing::version_of;
use super::{AUTO_AKE_INTERVAL_MS, MsgState, Offer, Session};
use crate::ake::AkePhase;
use crate::data::{DataMessage, FLAG_IGNORE_UNREADABLE, Unreadable};
use crate::error::ReceiveError;
use crate::event::{Event, Timestamp};
use crate::message::{self, Header, Versions, kind};
use crate::policy::Policy;
use crate::smp::SmpEvent;
use crate::tlv::{self, Tlv};

/// What we tell a peer whose encrypted message we could not read.
const ERR_UNREADABLE: &str = "The encrypted message received could not be read. Please resend it.";
/// What we tell a peer whose encrypted message was malformed.
const ERR_MALFORMED: &str = "The encrypted message received was malformed.";
/// What we tell a peer that sent encrypted data outside a private conversation.
const ERR_NOT_PRIVATE: &str =
    "The encrypted message received could not be read: there is no private conversation.";

impl Session {
    /// The peer sent an OTR error. Under ERROR_START_AKE we ask for a new key exchange, at
    /// most once per [`AUTO_AKE_INTERVAL_MS`] (so two clients cannot loop). If we thought the
    /// conversation private, the peer evidently cannot read us (it lost its session): new
    /// messages wait for the new keys, and the user learns what recently sent may be lost.
    pub(super) fn on_peer_error(&mut self, now: Timestamp) {
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

    /// The peer offered OTR (query or whitespace tag): start the AKE in the highest version
    /// both sides allow.
    ///
    /// # Errors
    /// [`ReceiveError::RateLimited`] when offers (which anyone can send) arrive faster than
    /// the session starts key exchanges for them.
    pub(super) fn on_offer(
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

    pub(super) fn on_plain(
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

    pub(super) fn on_ake(
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

    pub(super) fn on_data(
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
    pub(super) fn refuse_data(&mut self, now: Timestamp, bytes: &[u8]) -> Result<(), ReceiveError> {
        if is_ignorable(bytes) {
            return Ok(());
        }
        self.send_error(now, ERR_NOT_PRIVATE);
        Err(ReceiveError::NotPrivate)
    }

    pub(super) fn on_smp(&mut self, i: usize, now: Timestamp, t: &Tlv, rng: &mut (impl CryptoRng + ?Sized)) {
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
}

/// Whether data message `bytes` is flagged IGNORE_UNREADABLE (no error reply if unreadable).
pub(super) fn is_ignorable(bytes: &[u8]) -> bool {
    DataMessage::peek_flags(bytes).is_some_and(|f| f & FLAG_IGNORE_UNREADABLE != 0)
}
