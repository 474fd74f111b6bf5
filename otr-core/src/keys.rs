//! The sliding window of Diffie-Hellman keys that data messages use.
//!
//! We keep our two most recent key pairs (keyids `our_keyid - 1` and `our_keyid`) and the
//! peer's two most recent public values (`their_keyid - 1` and `their_keyid`). Messages are
//! sent with our older key (the newest the peer has acknowledged) and the peer's newest one,
//! announcing our newest public value as `next_dh`. A received message that uses our newest
//! key retires our oldest; one that uses the peer's newest introduces its `next_dh`. Keys of
//! retired pairs whose MAC keys were used are revealed in the next message we send.
//!
//! Session keys are derived lazily: a pair nobody uses costs no exponentiation.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::dh::{DhKeyPair, SECRET_BYTES, SharedSecret};
use crate::crypto::group::Element;
use crate::crypto::{self, DataCipher};

/// The keys derived from one (our key pair, their public value) combination.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// AES-128 key for messages we send.
    pub send_aes: [u8; 16],
    /// HMAC-SHA1 key for messages we send.
    pub send_mac: [u8; 20],
    /// AES-128 key for messages we receive.
    pub recv_aes: [u8; 16],
    /// HMAC-SHA1 key for messages we receive.
    pub recv_mac: [u8; 20],
    /// The extra symmetric key of this pair.
    pub extra: [u8; 32],
    /// The top half of the last counter we sent.
    pub send_ctr: u64,
    /// The highest counter (top half) accepted so far.
    recv_ctr: u64,
    /// Bit i set: counter `recv_ctr - i` was accepted (the replay window).
    recv_seen: u64,
    send_mac_used: bool,
    recv_mac_used: bool,
    /// AES and HMAC keyed with the sending keys (zeroize themselves on drop).
    #[zeroize(skip)]
    send_cipher: DataCipher,
    /// AES and HMAC keyed with the receiving keys (zeroize themselves on drop).
    #[zeroize(skip)]
    recv_cipher: DataCipher,
}

impl SessionKeys {
    /// Derives the keys of a pair: SHA-1(b ‖ MPI(s)) with b = 1 for the side whose public
    /// value is larger, 2 for the other; the extra key is SHA-256(0xff ‖ MPI(s)).
    #[cfg(any(test, feature = "internals"))]
    pub fn derive(ours: &DhKeyPair, theirs: &Element) -> Self {
        Self::from_shared(ours.public(), theirs, &ours.shared_secret(theirs))
    }

    /// The keys of a pair whose shared secret `s` is already computed.
    fn from_shared(our_public: &Element, theirs: &Element, s: &SharedSecret) -> Self {
        let (send_byte, recv_byte) = if our_public.value() > theirs.value() { (1u8, 2u8) } else { (2, 1) };
        let half = |b: u8| {
            let h = Zeroizing::new(crypto::sha1(&[&[b], s.mpi()]));
            let mut k = [0u8; 16];
            k.copy_from_slice(&h[..16]);
            k
        };
        let send_aes = half(send_byte);
        let recv_aes = half(recv_byte);
        let send_mac = crypto::sha1(&[&send_aes]);
        let recv_mac = crypto::sha1(&[&recv_aes]);
        Self {
            send_cipher: DataCipher::new(&send_aes, &send_mac),
            recv_cipher: DataCipher::new(&recv_aes, &recv_mac),
            send_mac,
            recv_mac,
            send_aes,
            recv_aes,
            extra: crypto::sha256(&[&[0xff], s.mpi()]),
            send_ctr: 0,
            recv_ctr: 0,
            recv_seen: 0,
            send_mac_used: false,
            recv_mac_used: false,
        }
    }

    /// How a received counter relates to the ones already accepted for this key pair.
    ///
    /// OTR asks for strictly increasing counters; libotr rejects any message that arrives
    /// after a later one. We also accept a counter within [`REPLAY_WINDOW`] below the highest
    /// if it was never seen (the network reordered it), and recognise an exact duplicate,
    /// which the session drops silently. Each counter is still accepted at most once.
    pub fn check_counter(&self, ctr: u64) -> CounterCheck {
        if ctr > self.recv_ctr {
            return CounterCheck::Fresh;
        }
        let behind = self.recv_ctr - ctr;
        if ctr == 0 || behind >= REPLAY_WINDOW {
            CounterCheck::TooOld
        } else if self.recv_seen & (1 << behind) != 0 {
            CounterCheck::Duplicate
        } else {
            CounterCheck::Fresh
        }
    }

    /// Records that a message with counter `ctr` (checked [`CounterCheck::Fresh`]) was accepted.
    pub fn accept_counter(&mut self, ctr: u64) {
        if ctr > self.recv_ctr {
            let shift = ctr - self.recv_ctr;
            self.recv_seen = if shift >= REPLAY_WINDOW { 0 } else { self.recv_seen << shift };
            self.recv_seen |= 1;
            self.recv_ctr = ctr;
        } else {
            self.recv_seen |= 1 << (self.recv_ctr - ctr);
        }
    }

    /// AES and HMAC keyed with [`Self::send_aes`] and [`Self::send_mac`].
    pub fn send_cipher(&mut self) -> &mut DataCipher {
        &mut self.send_cipher
    }

    /// AES and HMAC keyed with [`Self::recv_aes`] and [`Self::recv_mac`].
    pub fn recv_cipher(&mut self) -> &mut DataCipher {
        &mut self.recv_cipher
    }

    /// Notes that the sending MAC key authenticated a message (so it is revealed later).
    pub fn mark_send_used(&mut self) {
        self.send_mac_used = true;
    }

    /// Notes that the receiving MAC key verified a message.
    pub fn mark_recv_used(&mut self) {
        self.recv_mac_used = true;
    }
}

/// How many counters below the highest one may still arrive (out of order) per key pair.
pub const REPLAY_WINDOW: u64 = 64;

/// The verdict on a received counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterCheck {
    /// Never seen and recent enough: accept.
    Fresh,
    /// Exactly a counter already accepted: a duplicate of a message we decrypted.
    Duplicate,
    /// Older than the window (or 0): refuse as a replay.
    TooOld,
}

/// Why no keys exist for the keyids a message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownKeyId;

/// Index 0 = newest, 1 = previous; `sessions[ours][theirs]`.
type Slot = Option<Box<SessionKeys>>;

/// Our and the peer's current DH keys and the session keys between them.
pub struct KeyWindow {
    our_keyid: u32,
    our: [DhKeyPair; 2],
    their_keyid: u32,
    their: [Option<Element>; 2],
    sessions: [[Slot; 2]; 2],
    reveal: Zeroizing<Vec<u8>>,
    /// Per key of ours (index as in `our`): the counter after which a pair with it, derived
    /// from now on, starts sending. 0, except for keys restored from a snapshot: their pairs
    /// may have sent under counters the snapshot does not know (see [`WindowParts`]).
    send_floor: [u64; 2],
    /// Keys computed since the session last looked (feature `trace` only).
    #[cfg(feature = "trace")]
    traces: Vec<crate::trace::Value>,
}

/// Everything needed to build one outgoing data message.
pub struct Sending<'a> {
    /// Our keyid (the older of our two keys).
    pub sender_keyid: u32,
    /// The peer's newest keyid.
    pub recipient_keyid: u32,
    /// Our newest public value as an MPI, announced to the peer.
    pub next_dh: &'a [u8],
    /// The keys of this pair (counter already advanced).
    pub keys: &'a mut SessionKeys,
    /// Old MAC keys to reveal (taken: they go out with this message).
    pub reveal: Zeroizing<Vec<u8>>,
}

impl KeyWindow {
    /// The window right after an AKE: our AKE key is keyid 1 and a fresh key is keyid 2.
    pub fn after_ake(
        ake_dh: DhKeyPair,
        their_dh: Element,
        their_keyid: u32,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        let next = DhKeyPair::generate(rng);
        #[allow(unused_mut)]
        let mut window = Self {
            our_keyid: crate::ake::AKE_KEYID + 1,
            our: [next, ake_dh],
            their_keyid,
            their: [Some(their_dh), None],
            sessions: Default::default(),
            reveal: Zeroizing::new(Vec::new()),
            send_floor: [0; 2],
            #[cfg(feature = "trace")]
            traces: Vec::new(),
        };
        #[cfg(feature = "trace")]
        {
            window.trace_key(1, crate::ake::AKE_KEYID);
            window.trace_key(0, crate::ake::AKE_KEYID + 1);
        }
        window
    }

    fn slot(&mut self, o: usize, t: usize) -> Option<&mut SessionKeys> {
        if self.sessions[o][t].is_none() {
            let theirs = self.their[t].as_ref()?;
            let s = self.our[o].shared_secret(theirs);
            let mut keys = SessionKeys::from_shared(self.our[o].public(), theirs, &s);
            keys.send_ctr = self.send_floor[o];
            #[cfg(feature = "trace")]
            self.traces.push(crate::trace::Value::SessionKeys {
                our_keyid: self.our_keyid - o as u32,
                their_keyid: self.their_keyid - t as u32,
                shared_secret: s.mpi().to_vec(),
                send_aes: keys.send_aes,
                send_mac: keys.send_mac,
                recv_aes: keys.recv_aes,
                recv_mac: keys.recv_mac,
                extra: keys.extra,
            });
            self.sessions[o][t] = Some(Box::new(keys));
        }
        self.sessions[o][t].as_deref_mut()
    }

    #[cfg(feature = "trace")]
    fn trace_key(&mut self, o: usize, keyid: u32) {
        let private = self.our[o].private_bytes();
        let public = self.our[o].public().to_bytes();
        self.traces.push(crate::trace::Value::DhKey { keyid, private, public });
    }

    /// The keys computed since the last call (feature `trace` only; secret).
    #[cfg(feature = "trace")]
    pub(crate) fn take_traces(&mut self) -> Vec<crate::trace::Value> {
        core::mem::take(&mut self.traces)
    }

    /// Keys for the next message we send; advances that pair's counter.
    ///
    /// # Panics
    /// Never: the peer's newest value always exists once the window is built.
    pub fn sending(&mut self) -> Sending<'_> {
        let sender_keyid = self.our_keyid - 1;
        let recipient_keyid = self.their_keyid;
        let reveal = core::mem::take(&mut self.reveal);
        self.slot(1, 0).expect("their newest key is always present");
        let keys = self.sessions[1][0].as_deref_mut().expect("derived above");
        keys.send_ctr += 1;
        keys.mark_send_used();
        Sending { sender_keyid, recipient_keyid, next_dh: self.our[0].public_mpi(), keys, reveal }
    }

    /// The keys a received message names, if we still hold them.
    ///
    /// # Errors
    /// [`UnknownKeyId`] when either keyid is outside the window.
    pub fn receiving(
        &mut self,
        sender_keyid: u32,
        recipient_keyid: u32,
    ) -> Result<&mut SessionKeys, UnknownKeyId> {
        let o = self.our_keyid.checked_sub(recipient_keyid).filter(|&d| d < 2 && recipient_keyid > 0);
        let t = self.their_keyid.checked_sub(sender_keyid).filter(|&d| d < 2 && sender_keyid > 0);
        match (o, t) {
            (Some(o), Some(t)) => self.slot(o as usize, t as usize).ok_or(UnknownKeyId),
            _ => Err(UnknownKeyId),
        }
    }

    /// After a message authenticated: rotate our keys if it used our newest, and take its
    /// `next_dh` if it used the peer's newest (built only then: most messages repeat a value
    /// we already hold).
    ///
    /// Keyids never wrap: a side whose keyid reached `u32::MAX` (the peer chose its AKE keyid,
    /// so it can start there) keeps its newest key instead of numbering a next one 0, which
    /// is invalid. The conversation goes on; that side's keys simply stop rotating.
    pub fn rotate(
        &mut self,
        sender_keyid: u32,
        recipient_keyid: u32,
        next_dh: impl FnOnce() -> Element,
        rng: &mut (impl CryptoRng + ?Sized),
    ) {
        if let Some(next_keyid) = self.our_keyid.checked_add(1).filter(|_| recipient_keyid == self.our_keyid)
        {
            let a = self.sessions[1][0].take();
            let b = self.sessions[1][1].take();
            self.reveal_used(a);
            self.reveal_used(b);
            self.sessions.swap(0, 1);
            let fresh = DhKeyPair::generate(rng);
            let newest = core::mem::replace(&mut self.our[0], fresh);
            self.our[1] = newest;
            self.send_floor = [0, self.send_floor[0]];
            self.our_keyid = next_keyid;
            #[cfg(feature = "trace")]
            self.trace_key(0, self.our_keyid);
        }
        if let Some(next_keyid) = self.their_keyid.checked_add(1).filter(|_| sender_keyid == self.their_keyid)
        {
            let t0 = self.sessions[0][1].take();
            let t1 = self.sessions[1][1].take();
            self.reveal_used(t0);
            self.reveal_used(t1);
            for row in &mut self.sessions {
                row.swap(0, 1);
            }
            let old = self.their[0].replace(next_dh());
            self.their[1] = old;
            self.their_keyid = next_keyid;
        }
    }

    fn reveal_used(&mut self, keys: Slot) {
        if let Some(k) = keys {
            if k.recv_mac_used {
                self.reveal.extend_from_slice(&k.recv_mac);
            }
            if k.send_mac_used {
                self.reveal.extend_from_slice(&k.send_mac);
            }
        }
    }
}

/// The counters of one (our key, their key) pair, as a snapshot keeps them: the keys
/// themselves are derived again from the DH values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairCounters {
    /// The top half of the last counter we sent.
    pub(crate) send_ctr: u64,
    /// The highest counter accepted so far.
    pub(crate) recv_ctr: u64,
    /// The replay window below it.
    pub(crate) recv_seen: u64,
    /// Whether the sending MAC key authenticated a message.
    pub(crate) send_mac_used: bool,
    /// Whether the receiving MAC key verified a message.
    pub(crate) recv_mac_used: bool,
}

/// Everything a [`KeyWindow`] needs to go on after a restart, as plain values for the
/// snapshot format (`crate::snapshot`): the DH values (our private exponents), the counters of
/// the pairs that were used, the MAC keys still to reveal. Derived keys are not kept.
pub(crate) struct WindowParts {
    /// Our newest keyid.
    pub(crate) our_keyid: u32,
    /// Our private exponents, newest first.
    pub(crate) our: [Zeroizing<[u8; SECRET_BYTES]>; 2],
    /// The peer's newest keyid.
    pub(crate) their_keyid: u32,
    /// The peer's public values, newest first.
    pub(crate) their: [Option<Element>; 2],
    /// Counters of the pairs that were derived, `[ours][theirs]`, newest first.
    pub(crate) pairs: [[Option<PairCounters>; 2]; 2],
    /// Per key of ours: the counter pairs derived later start from.
    pub(crate) send_floor: [u64; 2],
    /// MAC keys of retired pairs not yet revealed (20 bytes each).
    pub(crate) reveal: Zeroizing<Vec<u8>>,
}

impl KeyWindow {
    /// The window as plain values, for a snapshot.
    pub(crate) fn to_parts(&self) -> WindowParts {
        let pairs = self.sessions.each_ref().map(|row| {
            row.each_ref().map(|slot| {
                slot.as_deref().map(|k| PairCounters {
                    send_ctr: k.send_ctr,
                    recv_ctr: k.recv_ctr,
                    recv_seen: k.recv_seen,
                    send_mac_used: k.send_mac_used,
                    recv_mac_used: k.recv_mac_used,
                })
            })
        });
        WindowParts {
            our_keyid: self.our_keyid,
            our: self.our.each_ref().map(DhKeyPair::secret_bytes),
            their_keyid: self.their_keyid,
            their: self.their.clone(),
            pairs,
            send_floor: self.send_floor,
            reveal: self.reveal.clone(),
        }
    }

    /// A window from a snapshot's values, moving every sending counter of our restored keys
    /// ahead by a random `skip` in `[2^40, 2^41)`, drawn per key of ours.
    ///
    /// The snapshot cannot know what was sent after it was taken (or, if it was rolled back,
    /// in the timeline that was lost): sending again from its counters would reuse AES-CTR
    /// keystream. Fewer than 2^40 messages go out under one pair in any real conversation, so
    /// the counters of a restored snapshot's pairs go past anything sent after it, and two
    /// restores of the same snapshot pick different counters except with probability about
    /// n / 2^40 for n messages sent. Pairs with keys of ours made after the restore are new.
    /// The peer accepts any increasing counter.
    ///
    /// `None` when an exponent is zero, the peer's newest value is missing, or a sending
    /// counter is past [`MAX_RESTORED_SEND_COUNTER`].
    pub(crate) fn from_parts(parts: WindowParts, rng: &mut (impl CryptoRng + ?Sized)) -> Option<Self> {
        let sends = parts.pairs.iter().flatten().flatten().map(|c| c.send_ctr).chain(parts.send_floor);
        if sends.into_iter().any(|c| c > MAX_RESTORED_SEND_COUNTER) {
            return None;
        }
        let our =
            [DhKeyPair::from_secret_bytes(&parts.our[0])?, DhKeyPair::from_secret_bytes(&parts.our[1])?];
        parts.their[0].as_ref()?;
        let mut window = Self {
            our_keyid: parts.our_keyid,
            our,
            their_keyid: parts.their_keyid,
            their: parts.their,
            sessions: Default::default(),
            reveal: parts.reveal,
            send_floor: [0; 2],
            #[cfg(feature = "trace")]
            traces: Vec::new(),
        };
        for o in 0..2 {
            let skip = restore_skip(rng);
            window.send_floor[o] = parts.send_floor[o].saturating_add(skip);
            for t in 0..2 {
                let Some(c) = parts.pairs[o][t] else { continue };
                let keys = window.slot(o, t)?;
                keys.send_ctr = c.send_ctr.max(parts.send_floor[o]).saturating_add(skip);
                keys.recv_ctr = c.recv_ctr;
                keys.recv_seen = c.recv_seen;
                keys.send_mac_used = c.send_mac_used;
                keys.recv_mac_used = c.recv_mac_used;
            }
        }
        #[cfg(feature = "trace")]
        window.traces.clear();
        Some(window)
    }
}

/// Largest sending counter a window is restored with (2^62): far beyond any real
/// conversation, and with room for 2^21 restores' skips before the 64-bit counter ends.
pub(crate) const MAX_RESTORED_SEND_COUNTER: u64 = 1 << 62;

/// The random amount a restored key's sending counters move ahead: `[2^40, 2^41)`.
fn restore_skip(rng: &mut (impl CryptoRng + ?Sized)) -> u64 {
    let mut b = [0u8; 8];
    rng.fill_bytes(&mut b);
    (1u64 << 40) | (u64::from_be_bytes(b) & ((1u64 << 40) - 1))
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let (a, b) = (DhKeyPair::generate(&mut rng), DhKeyPair::generate(&mut rng));
        let mut k = SessionKeys::derive(&a, b.public());
        assert_eq!(k.check_counter(0), CounterCheck::TooOld);
        for ctr in [5, 3, 4, 1, 70, 10] {
            assert_eq!(k.check_counter(ctr), CounterCheck::Fresh, "{ctr}");
            k.accept_counter(ctr);
            assert_eq!(k.check_counter(ctr), CounterCheck::Duplicate, "{ctr}");
        }
        assert_eq!(k.check_counter(2), CounterCheck::TooOld, "below the window");
        assert_eq!(k.check_counter(6), CounterCheck::TooOld, "70 - 6 >= 64");
        assert_eq!(k.check_counter(7), CounterCheck::Fresh, "70 - 7 < 64");
        assert_eq!(k.check_counter(69), CounterCheck::Fresh);
        k.accept_counter(1000);
        assert_eq!(k.check_counter(70), CounterCheck::TooOld);
        assert_eq!(k.check_counter(1000), CounterCheck::Duplicate);
    }
}
