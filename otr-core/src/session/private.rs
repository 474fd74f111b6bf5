//! The private state of an instance: the conversation an AKE established, the texts held
//! for it, and what happens when the peer seems to have lost it.

use std::collections::VecDeque;

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::routing::version_of;
use super::{Offer, RECENT_MS, RESYNC_INTERVAL_MS, Sent, Session};
use crate::ake::Established;
use crate::crypto::dsa::{DsaPublicKey, Fingerprint};
use crate::error::SendError;
use crate::event::{Event, Ssid, SsidHalf, Timestamp};
use crate::instance::InstanceTag;
use crate::keys::KeyWindow;
use crate::smp::Smp;
use crate::tlv;

/// The message state of one remote instance.
pub(super) enum MsgState {
    Plaintext,
    Encrypted(Box<Private>),
    Finished,
}

/// An established private conversation.
pub(super) struct Private {
    pub(super) keys: KeyWindow,
    pub(super) ssid: Ssid,
    pub(super) their_key: DsaPublicKey,
    pub(super) smp: Smp,
    /// Plaintexts (text, NUL) sent recently, for [`Event::MaybeNotDelivered`]: the buffer that
    /// was encrypted is kept, not a second copy of the text.
    pub(super) recent: VecDeque<(Timestamp, Zeroizing<Vec<u8>>)>,
}

impl Private {
    pub(super) fn new(keys: KeyWindow, ssid: Ssid, their_key: DsaPublicKey) -> Self {
        Self { keys, ssid, their_key, smp: Smp::new(), recent: VecDeque::new() }
    }
}

/// A text the user typed, waiting for a private conversation.
pub(super) struct Held {
    /// The instance it must go to (`None`: whichever becomes private first).
    pub(super) to: Option<InstanceTag>,
    /// The key of the private conversation it was typed in, if any: it goes to that key only.
    pub(super) for_key: Option<Fingerprint>,
    pub(super) text: Zeroizing<String>,
}

/// Most sent texts remembered per private conversation for that purpose.
const MAX_RECENT: usize = 32;

/// Most messages held while waiting for a private conversation.
pub(super) const MAX_HELD: usize = 100;
/// Most fingerprints remembered as having spoken version 3 (for downgrade detection).
pub(super) const MAX_V3_KEYS: usize = 16;

impl Session {
    pub(super) fn hold(
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
    pub(super) fn send_text(&mut self, i: usize, now: Timestamp, text: &str) {
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
    pub(super) fn flush_held(&mut self, i: usize, now: Timestamp) {
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

    pub(super) fn go_secure(
        &mut self,
        i: usize,
        now: Timestamp,
        est: Established,
        rng: &mut (impl CryptoRng + ?Sized),
    ) {
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

    /// The peer of private instance `i` evidently lost its session (it cannot read us, or it
    /// asks for a new key exchange): what the user types now waits for the new keys, and the
    /// user learns which texts, sent since the peer last wrote, may not have arrived.
    pub(super) fn suspect_lost_session(&mut self, i: usize, now: Timestamp) {
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
}
