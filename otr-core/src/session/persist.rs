//! Saving a session and restoring it: the mapping between a [`Session`] and the values of
//! its snapshot ([`super::snapshot`] is the byte format).

use rand_core::CryptoRng;

use super::private::{Held, MAX_HELD, MAX_V3_KEYS, MsgState, Private};
use super::snapshot::{HeldParts, InstanceParts, PrivateParts, SessionParts, Snapshot, SnapshotError};
use super::{MAX_INSTANCES, Offer, Session, SessionConfig};
use crate::crypto::dsa::DsaKeyPair;
use crate::event::{Event, Ssid, Timestamp};
use crate::keys::KeyWindow;

impl Offer {
    fn to_byte(self) -> u8 {
        match self {
            Offer::NotSent => 0,
            Offer::Sent => 1,
            Offer::Rejected => 2,
            Offer::Accepted => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Offer::NotSent,
            1 => Offer::Sent,
            2 => Offer::Rejected,
            3 => Offer::Accepted,
            _ => return None,
        })
    }
}

impl Session {
    /// Saves what the session needs to go on after its process is gone: the config, every
    /// private or ended conversation (instance tags, the peer's long-term key, ssid, the DH
    /// key window and its counters, MAC keys still to reveal), held texts, and the version 3
    /// keys seen (downgrade protection). Not saved: key exchanges and SMP runs in progress,
    /// fragments, queued transmits and events (drain them first), MAC keys already revealed,
    /// and our long-term key (the key store keeps it).
    ///
    /// Each call returns the next generation ([`Snapshot::generation`]). The snapshot holds
    /// the DH private keys of the conversation: seal it before it touches a disk, rewrite it
    /// when the keys rotate (after each message exchanged) so old keys do not stay on disk, and
    /// delete it when the conversation ends. See SECURITY.md, "Session snapshots".
    pub fn snapshot(&mut self) -> Snapshot {
        self.generation = self.generation.saturating_add(1);
        let instances = self.instances.iter().filter_map(|inst| {
            let private = match &inst.state {
                MsgState::Plaintext => return None,
                MsgState::Finished => None,
                MsgState::Encrypted(p) => Some(PrivateParts {
                    ssid: p.ssid.0,
                    their_key: p.their_key.clone(),
                    smp_in_progress: p.smp.is_in_progress(),
                    keys: p.keys.to_parts(),
                }),
            };
            Some(InstanceParts {
                tag: inst.tag,
                authenticated: inst.authenticated,
                owes_heartbeat: inst.owes_heartbeat,
                last_active: inst.last_active,
                private,
            })
        });
        let held = self.held.iter().map(|h| HeldParts { to: h.to, for_key: h.for_key, text: h.text.clone() });
        let parts = SessionParts {
            generation: self.generation,
            own: self.identity.fingerprint(),
            account: self.config.account.clone(),
            policy: self.config.policy,
            instance_tag: self.config.instance_tag,
            max_message_size: u64::try_from(self.config.max_message_size).unwrap_or(u64::MAX),
            offer: self.offer.to_byte(),
            activity: self.activity,
            v3_keys: self.v3_keys.clone(),
            instances: instances.collect(),
            held: held.collect(),
        };
        Snapshot { bytes: parts.encode(), generation: self.generation }
    }

    /// The generation of the last snapshot this session took or was restored from (0 for a
    /// session that never was).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Restores a session from [`snapshot`](Self::snapshot)'s bytes, with our long-term key
    /// `identity` (which must be the one the snapshot was made with) and the newest
    /// generation the caller recorded (`newest`; 0 if none). The configuration is the
    /// snapshot's ([`config`](Self::config)).
    ///
    /// The restored session goes on with the same keys: messages the peer sent meanwhile are
    /// read without a new key exchange. Against a snapshot older than what was really last
    /// sent (a crash after the snapshot, or a file rolled back):
    /// - every sending counter of the restored keys moves ahead by a random amount of at
    ///   least 2^40, so no AES-CTR counter is ever used twice with one key;
    /// - a snapshot older than `newest` is refused, so messages received after it cannot be
    ///   accepted a second time. Record [`Snapshot::generation`] where the snapshot file
    ///   cannot roll it back, and take (and record) a new snapshot right after restoring,
    ///   before any input: restoring the same generation twice would accept again what was
    ///   received in between.
    ///
    /// An SMP run that was in progress is lost: for each, the peer is sent an SMP abort and
    /// the application gets [`Event::SmpAborted`] (drain [`poll_transmit`](Self::poll_transmit)
    /// and [`poll_event`](Self::poll_event) as usual).
    ///
    /// # Errors
    /// [`SnapshotError`]: not a snapshot, another format version, damaged, made for another
    /// identity, or older than `newest`. Nothing is restored then; start a new conversation.
    pub fn restore(
        identity: DsaKeyPair,
        bytes: &[u8],
        newest: u64,
        now: Timestamp,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Self, SnapshotError> {
        let parts = SessionParts::decode(bytes)?;
        if parts.own != identity.fingerprint() {
            return Err(SnapshotError::WrongIdentity);
        }
        if parts.generation < newest {
            return Err(SnapshotError::RolledBack { generation: parts.generation, newest });
        }
        if parts.instances.len() > MAX_INSTANCES
            || parts.held.len() > MAX_HELD
            || parts.v3_keys.len() > MAX_V3_KEYS
        {
            return Err(SnapshotError::Invalid("more entries than a session holds"));
        }
        let offer = Offer::from_byte(parts.offer).ok_or(SnapshotError::Invalid("offer state"))?;
        let config = SessionConfig {
            account: parts.account,
            policy: parts.policy,
            instance_tag: parts.instance_tag,
            max_message_size: usize::try_from(parts.max_message_size)
                .map_err(|_| SnapshotError::Invalid("message size limit"))?,
        };
        let mut session = Session::new(config, identity);
        session.generation = parts.generation;
        session.offer = offer;
        session.activity = parts.activity;
        session.v3_keys = parts.v3_keys;
        let mut aborted = Vec::new();
        for inst in parts.instances {
            if session.instances.iter().any(|i| i.tag == inst.tag) {
                return Err(SnapshotError::Invalid("an instance appears twice"));
            }
            let state = match inst.private {
                None => MsgState::Finished,
                Some(p) => {
                    if p.smp_in_progress {
                        aborted.push(inst.tag);
                    }
                    let keys =
                        KeyWindow::from_parts(p.keys, rng).ok_or(SnapshotError::Invalid("DH key window"))?;
                    MsgState::Encrypted(Box::new(Private::new(keys, Ssid(p.ssid), p.their_key)))
                }
            };
            let i = session
                .add_instance(inst.tag, now)
                .map_err(|_| SnapshotError::Invalid("more instances than a session holds"))?;
            let restored = &mut session.instances[i];
            restored.state = state;
            restored.authenticated = inst.authenticated;
            restored.owes_heartbeat = inst.owes_heartbeat;
            restored.last_active = inst.last_active;
        }
        session.held =
            parts.held.into_iter().map(|h| Held { to: h.to, for_key: h.for_key, text: h.text }).collect();
        // Texts held for a private instance waited for its new keys when the snapshot was
        // taken (timestamps are not kept): they wait again, at most RESYNC_TIMEOUT_MS from now,
        // then go out with the keys we have, as they would have before the restart.
        for inst in &mut session.instances {
            let waits = session.held.iter().any(|h| h.to.is_none_or(|t| t == inst.tag));
            if waits && matches!(inst.state, MsgState::Encrypted(_)) {
                inst.resync_since = Some(now);
            }
        }
        for tag in aborted {
            let Some(i) = session.instances.iter().position(|x| x.tag == tag) else { continue };
            let MsgState::Encrypted(p) = &mut session.instances[i].state else { continue };
            let abort = p.smp.abort();
            session.send_tlv(i, now, abort);
            session.events.push_back(Event::SmpAborted { instance: tag, cheated: false });
        }
        Ok(session)
    }
}

impl Snapshot {
    /// Reads the generation of snapshot bytes without restoring them (a look at the header).
    ///
    /// # Errors
    /// [`SnapshotError`] when the bytes are not a snapshot this build reads.
    pub fn generation_of(bytes: &[u8]) -> Result<u64, SnapshotError> {
        super::snapshot::generation_of(bytes)
    }
}
