//! The session snapshot format: what a [`Session`](crate::Session) needs to go on with its
//! private conversations after the process that held it is gone.
//!
//! [`Session::snapshot`](crate::Session::snapshot) writes one and
//! [`Session::restore`](crate::Session::restore) reads it back; this module is the byte
//! format alone. A snapshot holds secrets (our DH private keys: whoever reads it reads the
//! conversation's messages until the keys rotate), so store it sealed (the key store does)
//! and remove it when the conversation ends.
//!
//! # Format, version 1
//!
//! Big-endian, with the OTR data types of [`crate::wire`]:
//!
//! ```text
//! magic "OTR-SNAP" (8)  format version SHORT (1)  generation (8)  our fingerprint (20)
//! account DATA  policy INT  instance tag INT  max message size (8)
//! offer BYTE  activity (8)
//! v3 keys: count BYTE, fingerprints (20 each)
//! instances: count BYTE, each:
//!   tag INT  state BYTE (1 private, 2 finished)  flags BYTE  last active (8)
//!   private only: ssid (8)  peer's PUBKEY  key window
//! key window: our keyid INT, our two private exponents (40 each, newest first),
//!   their keyid INT, presence BYTE (bit 0 newest, bit 1 previous) and those MPIs,
//!   our two send floors (8 each), four pairs [ours][theirs]: present BYTE, then
//!   send counter (8), receive counter (8), replay window (8), flags BYTE;
//!   MAC keys to reveal DATA (20 each)
//! held texts: count BYTE, each: flags BYTE, [to INT], [for key (20)], text DATA
//! ```
//!
//! Not in it, on purpose: MAC keys already revealed, derived session keys (derived again),
//! AKEs and SMP runs in progress (a restore reports each SMP run as aborted), fragments being
//! reassembled, texts remembered for [`Event::MaybeNotDelivered`](crate::Event), timestamps
//! (the caller's clock may restart), rate-limit buckets.
//!
//! Decoding checks every length against what remains and every count against a bound before
//! anything is allocated, and every value against its range: a truncated, corrupted or foreign
//! snapshot is a [`SnapshotError`], never a panic.

use zeroize::Zeroizing;

use crate::crypto::dh::SECRET_BYTES;
use crate::crypto::dsa::{DsaPublicKey, Fingerprint};
use crate::crypto::group::{Element, MODULUS_BYTES};
use crate::instance::InstanceTag;
use crate::keys::{PairCounters, WindowParts};
use crate::policy::Policy;
use crate::wire::{Reader, WireError, Writer};

/// The first bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"OTR-SNAP";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Largest counter a snapshot may hold (2^63). A restore refuses sending counters past 2^62
/// and moves them ahead by less than 2^41, so a restored session never comes near the end of
/// the 64-bit counter space, and its own snapshots decode.
pub const MAX_COUNTER: u64 = 1 << 63;
/// Most bytes of MAC keys still to reveal that a snapshot keeps (200 keys); beyond it the
/// oldest are dropped (they will never be revealed: a small loss of deniability, no loss of
/// security).
pub const MAX_REVEAL_BYTES: usize = 200 * 20;
/// Longest account name in a snapshot.
pub const MAX_ACCOUNT_BYTES: usize = 1024;

/// Why a snapshot could not be read or restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a session snapshot (another file, or garbage).
    #[error("not an OTR session snapshot")]
    NotASnapshot,
    /// A snapshot of a format version this build does not read.
    #[error("session snapshot format version {0} is not supported")]
    UnsupportedVersion(u16),
    /// The snapshot is truncated or a field is malformed.
    #[error("session snapshot is damaged: {0}")]
    Malformed(#[from] WireError),
    /// A field holds a value no session produces (corrupted, or forged).
    #[error("session snapshot is damaged: {0}")]
    Invalid(&'static str),
    /// The snapshot belongs to another long-term key than the one given to restore it.
    #[error("session snapshot was made for another identity")]
    WrongIdentity,
    /// The snapshot is older than the newest one the caller knows of: a rolled-back file.
    #[error("session snapshot generation {generation} is older than the newest known ({newest})")]
    RolledBack {
        /// The snapshot's generation.
        generation: u64,
        /// The newest generation the caller recorded.
        newest: u64,
    },
}

/// A session snapshot's bytes (secret: wiped on drop) and its generation.
pub struct Snapshot {
    pub(crate) bytes: Zeroizing<Vec<u8>>,
    pub(crate) generation: u64,
}

impl core::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The encoded snapshot, to seal and store.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Its generation: one more than the previous snapshot of the same session. Record the
    /// newest one where a rolled-back snapshot file cannot roll it back too (the key store),
    /// and pass it to [`Session::restore`](crate::Session::restore).
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Reads a snapshot's generation without restoring it (see [`Snapshot::generation_of`]).
pub(crate) fn generation_of(bytes: &[u8]) -> Result<u64, SnapshotError> {
    let mut r = Reader::new(bytes);
    read_header(&mut r)
}

/// Everything a snapshot holds, as plain values (see the module docs for the byte layout).
pub(crate) struct SessionParts {
    pub(crate) generation: u64,
    pub(crate) own: Fingerprint,
    pub(crate) account: String,
    pub(crate) policy: Policy,
    pub(crate) instance_tag: InstanceTag,
    pub(crate) max_message_size: u64,
    pub(crate) offer: u8,
    pub(crate) activity: u64,
    pub(crate) v3_keys: Vec<Fingerprint>,
    pub(crate) instances: Vec<InstanceParts>,
    pub(crate) held: Vec<HeldParts>,
}

/// One remote instance with a private or ended conversation.
pub(crate) struct InstanceParts {
    pub(crate) tag: InstanceTag,
    pub(crate) authenticated: bool,
    pub(crate) owes_heartbeat: bool,
    pub(crate) last_active: u64,
    /// `None`: the peer ended the conversation (FINISHED).
    pub(crate) private: Option<PrivateParts>,
}

/// A private conversation.
pub(crate) struct PrivateParts {
    pub(crate) ssid: [u8; 8],
    pub(crate) their_key: DsaPublicKey,
    pub(crate) smp_in_progress: bool,
    pub(crate) keys: WindowParts,
}

/// A text waiting for a private conversation.
pub(crate) struct HeldParts {
    pub(crate) to: Option<InstanceTag>,
    pub(crate) for_key: Option<Fingerprint>,
    pub(crate) text: Zeroizing<String>,
}

const STATE_PRIVATE: u8 = 1;
const STATE_FINISHED: u8 = 2;
const FLAG_AUTHENTICATED: u8 = 1;
const FLAG_OWES_HEARTBEAT: u8 = 2;
const FLAG_SMP: u8 = 4;
const FLAG_SEND_MAC_USED: u8 = 1;
const FLAG_RECV_MAC_USED: u8 = 2;
const FLAG_TO: u8 = 1;
const FLAG_FOR_KEY: u8 = 2;

/// The flag byte with the `bit`s whose condition holds.
fn flag_byte(set: &[(bool, u8)]) -> u8 {
    set.iter().filter(|(on, _)| *on).fold(0, |acc, (_, bit)| acc | bit)
}

/// A count as the BYTE that precedes a list.
fn count(n: usize) -> u8 {
    // Callers bound their lists far below 256 (instances, held texts, v3 keys).
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl SessionParts {
    /// The snapshot's bytes.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Sized up front, so that no reallocation leaves a copy of the secrets behind.
        let held: usize = self.held.iter().map(|h| h.text.len() + 32).sum();
        let instances: usize = self
            .instances
            .iter()
            .map(|i| 1024 + i.private.as_ref().map_or(0, |p| p.keys.reveal.len().min(MAX_REVEAL_BYTES)))
            .sum();
        let mut w = Writer::with_capacity(256 + self.account.len() + instances + held);
        w.raw(&MAGIC).u16(FORMAT_VERSION).raw(&self.generation.to_be_bytes()).raw(&self.own.0);
        w.data(self.account.as_bytes())
            .u32(self.policy.bits())
            .u32(self.instance_tag.get())
            .raw(&self.max_message_size.to_be_bytes());
        w.u8(self.offer).raw(&self.activity.to_be_bytes());
        let v3 = &self.v3_keys[..self.v3_keys.len().min(usize::from(u8::MAX))];
        w.u8(count(v3.len()));
        for k in v3 {
            w.raw(&k.0);
        }
        w.u8(count(self.instances.len()));
        for inst in self.instances.iter().take(usize::from(u8::MAX)) {
            write_instance(&mut w, inst);
        }
        w.u8(count(self.held.len()));
        for h in self.held.iter().take(usize::from(u8::MAX)) {
            w.u8(flag_byte(&[(h.to.is_some(), FLAG_TO), (h.for_key.is_some(), FLAG_FOR_KEY)]));
            if let Some(to) = h.to {
                w.u32(to.get());
            }
            if let Some(k) = h.for_key {
                w.raw(&k.0);
            }
            w.data(h.text.as_bytes());
        }
        Zeroizing::new(w.into_vec())
    }

    /// Parses a snapshot, checking every field (but not whose it is: see
    /// [`Session::restore`](crate::Session::restore)).
    ///
    /// # Errors
    /// [`SnapshotError`] for anything but a well-formed snapshot of this format.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let mut r = Reader::new(bytes);
        let generation = read_header(&mut r)?;
        let own = Fingerprint(r.array()?);
        let account = r.data()?;
        if account.len() > MAX_ACCOUNT_BYTES {
            return Err(SnapshotError::Invalid("account name too long"));
        }
        let account = String::from_utf8(account.to_vec())
            .map_err(|_| SnapshotError::Invalid("account name not UTF-8"))?;
        let policy = Policy::from_bits(r.u32()?);
        let instance_tag = InstanceTag::new(r.u32()?).ok_or(SnapshotError::Invalid("our instance tag"))?;
        let max_message_size = u64::from_be_bytes(r.array()?);
        let offer = r.u8()?;
        let activity = u64::from_be_bytes(r.array()?);
        let n = usize::from(r.u8()?);
        let mut v3_keys = Vec::with_capacity(n);
        for _ in 0..n {
            v3_keys.push(Fingerprint(r.array()?));
        }
        let n = usize::from(r.u8()?);
        let mut instances = Vec::with_capacity(n);
        for _ in 0..n {
            instances.push(read_instance(&mut r)?);
        }
        let n = usize::from(r.u8()?);
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let flags = r.u8()?;
            if flags & !(FLAG_TO | FLAG_FOR_KEY) != 0 {
                return Err(SnapshotError::Invalid("held text flags"));
            }
            let to = if flags & FLAG_TO != 0 { Some(read_tag(&mut r)?) } else { None };
            let for_key = if flags & FLAG_FOR_KEY != 0 { Some(Fingerprint(r.array()?)) } else { None };
            let text =
                core::str::from_utf8(r.data()?).map_err(|_| SnapshotError::Invalid("held text not UTF-8"))?;
            if text.contains('\0') {
                return Err(SnapshotError::Invalid("held text contains NUL"));
            }
            held.push(HeldParts { to, for_key, text: Zeroizing::new(text.to_owned()) });
        }
        r.finish()?;
        Ok(Self {
            generation,
            own,
            account,
            policy,
            instance_tag,
            max_message_size,
            offer,
            activity,
            v3_keys,
            instances,
            held,
        })
    }
}

/// Magic and version; returns the generation.
fn read_header(r: &mut Reader<'_>) -> Result<u64, SnapshotError> {
    if r.take(MAGIC.len()).map_err(|_| SnapshotError::NotASnapshot)? != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = r.u16()?;
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    Ok(u64::from_be_bytes(r.array()?))
}

/// A remote instance tag: a valid v3 tag, or 0 for the version 2 conversation.
fn read_tag(r: &mut Reader<'_>) -> Result<InstanceTag, SnapshotError> {
    match r.u32()? {
        0 => Ok(InstanceTag::V2),
        v => InstanceTag::new(v).ok_or(SnapshotError::Invalid("instance tag below 0x100")),
    }
}

fn write_instance(w: &mut Writer, inst: &InstanceParts) {
    let state = if inst.private.is_some() { STATE_PRIVATE } else { STATE_FINISHED };
    let smp = inst.private.as_ref().is_some_and(|p| p.smp_in_progress);
    let flags = flag_byte(&[
        (inst.authenticated, FLAG_AUTHENTICATED),
        (inst.owes_heartbeat, FLAG_OWES_HEARTBEAT),
        (smp, FLAG_SMP),
    ]);
    w.u32(inst.tag.get()).u8(state).u8(flags).raw(&inst.last_active.to_be_bytes());
    let Some(p) = &inst.private else { return };
    w.raw(&p.ssid).raw(p.their_key.encoded());
    let k = &p.keys;
    w.u32(k.our_keyid).raw(&k.our[0][..]).raw(&k.our[1][..]).u32(k.their_keyid);
    w.u8(flag_byte(&[(k.their[0].is_some(), 1), (k.their[1].is_some(), 2)]));
    for e in k.their.iter().flatten() {
        w.mpi(&e.to_bytes());
    }
    for floor in k.send_floor {
        w.raw(&floor.to_be_bytes());
    }
    for pair in k.pairs.iter().flatten() {
        match pair {
            None => {
                w.u8(0);
            }
            Some(c) => {
                let flags = flag_byte(&[
                    (c.send_mac_used, FLAG_SEND_MAC_USED),
                    (c.recv_mac_used, FLAG_RECV_MAC_USED),
                ]);
                w.u8(1)
                    .raw(&c.send_ctr.to_be_bytes())
                    .raw(&c.recv_ctr.to_be_bytes())
                    .raw(&c.recv_seen.to_be_bytes())
                    .u8(flags);
            }
        }
    }
    // Keep whole keys only, the newest ones (they were appended last).
    let keep = k.reveal.len().min(MAX_REVEAL_BYTES) / 20 * 20;
    w.data(&k.reveal[k.reveal.len() - keep..]);
}

fn read_instance(r: &mut Reader<'_>) -> Result<InstanceParts, SnapshotError> {
    let tag = read_tag(r)?;
    let state = r.u8()?;
    let flags = r.u8()?;
    if flags & !(FLAG_AUTHENTICATED | FLAG_OWES_HEARTBEAT | FLAG_SMP) != 0 {
        return Err(SnapshotError::Invalid("instance flags"));
    }
    let last_active = u64::from_be_bytes(r.array()?);
    let private = match state {
        STATE_FINISHED if flags & FLAG_SMP == 0 => None,
        STATE_PRIVATE => Some(read_private(r, flags & FLAG_SMP != 0)?),
        _ => return Err(SnapshotError::Invalid("instance state")),
    };
    Ok(InstanceParts {
        tag,
        authenticated: flags & FLAG_AUTHENTICATED != 0,
        owes_heartbeat: flags & FLAG_OWES_HEARTBEAT != 0,
        last_active,
        private,
    })
}

fn read_private(r: &mut Reader<'_>, smp_in_progress: bool) -> Result<PrivateParts, SnapshotError> {
    let ssid = r.array()?;
    let their_key = DsaPublicKey::read(r)?;
    let our_keyid = r.u32()?;
    let our = [secret(r)?, secret(r)?];
    let their_keyid = r.u32()?;
    // Keyids as a live window has them: ours >= 2 (the AKE key is 1, the next 2), theirs >= 1;
    // the previous value of theirs exists only if its keyid does.
    if our_keyid < 2 || their_keyid == 0 {
        return Err(SnapshotError::Invalid("key ids"));
    }
    let present = r.u8()?;
    if present & !3 != 0 || present & 1 == 0 || (present & 2 != 0 && their_keyid < 2) {
        return Err(SnapshotError::Invalid("peer's DH values"));
    }
    let mut their = [None, None];
    for (t, slot) in their.iter_mut().enumerate() {
        if present & (1 << t) != 0 {
            let v = r.mpi(MODULUS_BYTES)?;
            *slot = Some(Element::from_bytes(v).map_err(|_| SnapshotError::Invalid("peer's DH value"))?);
        }
    }
    let send_floor = [counter(r)?, counter(r)?];
    let mut pairs = [[None; 2]; 2];
    for row in &mut pairs {
        for (pair, theirs) in row.iter_mut().zip(&their) {
            match r.u8()? {
                0 => {}
                1 if theirs.is_some() => {
                    let send_ctr = counter(r)?;
                    let recv_ctr = counter(r)?;
                    let recv_seen = u64::from_be_bytes(r.array()?);
                    let flags = r.u8()?;
                    if flags & !(FLAG_SEND_MAC_USED | FLAG_RECV_MAC_USED) != 0 {
                        return Err(SnapshotError::Invalid("key pair flags"));
                    }
                    *pair = Some(PairCounters {
                        send_ctr,
                        recv_ctr,
                        recv_seen,
                        send_mac_used: flags & FLAG_SEND_MAC_USED != 0,
                        recv_mac_used: flags & FLAG_RECV_MAC_USED != 0,
                    });
                }
                _ => return Err(SnapshotError::Invalid("key pair")),
            }
        }
    }
    let reveal = r.data()?;
    if reveal.len() > MAX_REVEAL_BYTES || reveal.len() % 20 != 0 {
        return Err(SnapshotError::Invalid("MAC keys to reveal"));
    }
    let keys = WindowParts {
        our_keyid,
        our,
        their_keyid,
        their,
        pairs,
        send_floor,
        reveal: Zeroizing::new(reveal.to_vec()),
    };
    Ok(PrivateParts { ssid, their_key, smp_in_progress, keys })
}

/// A DH private exponent: 40 bytes, not all zero.
fn secret(r: &mut Reader<'_>) -> Result<Zeroizing<[u8; SECRET_BYTES]>, SnapshotError> {
    let s = Zeroizing::new(r.array::<SECRET_BYTES>()?);
    if s.iter().all(|&b| b == 0) {
        return Err(SnapshotError::Invalid("DH private key"));
    }
    Ok(s)
}

/// A counter, at most [`MAX_COUNTER`].
fn counter(r: &mut Reader<'_>) -> Result<u64, SnapshotError> {
    let c = u64::from_be_bytes(r.array()?);
    if c > MAX_COUNTER {
        return Err(SnapshotError::Invalid("counter out of range"));
    }
    Ok(c)
}

/// Decodes `bytes` and encodes the result again (for the fuzz target: a snapshot that decodes
/// must encode back to the same bytes).
///
/// # Errors
/// As the decoder.
#[cfg(feature = "internals")]
pub fn fuzz_reencode(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, SnapshotError> {
    Ok(SessionParts::decode(bytes)?.encode())
}
