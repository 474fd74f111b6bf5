//! Instances and routing: which remote instance a message concerns, creating and forgetting
//! instances within their bounds, and which instance the user acts on.

use rand_core::CryptoRng;

use super::{KNOWN_AKE_BURST, KNOWN_AKE_REFILL_MS, MAX_INSTANCES, MAX_PENDING_INSTANCES, MsgState, Session};
use crate::ake::{Ake, AkePhase};
use crate::budget::Budget;
use crate::crypto::dsa::Fingerprint;
use crate::error::{ReceiveError, SendError};
use crate::event::Timestamp;
use crate::fragment::Fragment;
use crate::instance::InstanceTag;
use crate::message::{self, Header, Incoming, kind};
use crate::policy::Policy;
use crate::wire::{Reader, WireError};

/// Our state towards one remote instance (one client of the remote account).
pub(super) struct Instance {
    pub(super) tag: InstanceTag,
    pub(super) ake: Ake,
    pub(super) state: MsgState,
    /// Whether a key exchange with it completed in this session.
    pub(super) authenticated: bool,
    /// Its own budget of key exchange work, once authenticated.
    pub(super) budget: Budget,
    /// When the last wait for new keys began (see [`RESYNC_INTERVAL_MS`](super::RESYNC_INTERVAL_MS)).
    pub(super) last_resync: Option<Timestamp>,
    /// When we last exchanged a message with it, as a sequence number (ties in time are
    /// common; the order of events is what matters).
    pub(super) last_active: u64,
    /// When we last sent this instance an encrypted message.
    pub(super) last_sent: Timestamp,
    /// Set when data arrived that our next message (or a heartbeat) should acknowledge.
    pub(super) owes_heartbeat: bool,
    /// Since when a new key exchange with this private instance is expected to replace its
    /// keys (it started one, or it lost its session): new messages wait for it.
    pub(super) resync_since: Option<Timestamp>,
    /// When an encrypted message from it last arrived intact.
    pub(super) last_data_received: Timestamp,
}

impl Instance {
    pub(super) fn rank(&self) -> u8 {
        match self.state {
            MsgState::Encrypted(_) => 2,
            MsgState::Finished => 1,
            MsgState::Plaintext => 0,
        }
    }

    /// The long-term key of its private conversation, if it is private.
    pub(super) fn their_fingerprint(&self) -> Option<Fingerprint> {
        match &self.state {
            MsgState::Encrypted(p) => Some(p.their_key.fingerprint()),
            _ => None,
        }
    }
}

impl Session {
    pub(super) fn on_encoded(
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

    pub(super) fn on_fragment(
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

    /// Whether we speak protocol `version` under our policy.
    pub(super) fn check_version(&self, version: u16) -> Result<(), ReceiveError> {
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
    pub(super) fn on_new_instance(
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
    pub(super) fn add_instance(&mut self, tag: InstanceTag, now: Timestamp) -> Result<usize, ReceiveError> {
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

    pub(super) fn touch(&mut self, i: usize) {
        self.activity += 1;
        self.instances[i].last_active = self.activity;
    }

    pub(super) fn best_index(&self) -> Option<usize> {
        (0..self.instances.len()).max_by_key(|&i| (self.instances[i].rank(), self.instances[i].last_active))
    }

    pub(super) fn best(&self) -> Option<&Instance> {
        self.best_index().map(|i| &self.instances[i])
    }

    /// The private instance to act on: the best one, if it is private.
    pub(super) fn private_index(&self) -> Result<usize, SendError> {
        self.best_index()
            .filter(|&i| matches!(self.instances[i].state, MsgState::Encrypted(_)))
            .ok_or(SendError::NotPrivate)
    }
}

/// The protocol version spoken with remote instance `tag`.
pub(super) fn version_of(tag: InstanceTag) -> u16 {
    if tag.is_v2() { message::VERSION_2 } else { message::VERSION_3 }
}
