//! Data messages: building, authenticating and decrypting them with a [`KeyWindow`].

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::crypto::group::{Element, MODULUS_BYTES};
use crate::crypto::{self};
use crate::keys::{CounterCheck, KeyWindow};
use crate::message::{Header, kind};
use crate::wire::{Reader, WireError, Writer};

/// The flag asking the receiver not to complain if it cannot read the message.
pub const FLAG_IGNORE_UNREADABLE: u8 = 0x01;

/// Why an authentic-looking data message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unreadable {
    /// The message names keys we do not hold (too old, or never existed).
    #[error("the message uses keys this session does not hold")]
    UnknownKeyId,
    /// The MAC did not verify.
    #[error("the message failed authentication")]
    BadMac,
    /// The counter is older than the replay window: a replay, or a message delayed too long.
    #[error("the message counter is too old (replayed or long-delayed message)")]
    Replayed,
    /// An exact duplicate of a message already decrypted (the network repeated it).
    #[error("duplicate of a message already received")]
    Duplicate,
}

/// What opening a data message gives: the plaintext (message, NUL, TLVs) and the extra
/// symmetric key of the key pair it used.
pub type Opened = (Zeroizing<Vec<u8>>, Zeroizing<[u8; 32]>);

/// A parsed (not yet authenticated) data message.
#[derive(Debug)]
pub struct DataMessage<'a> {
    /// The header it came with.
    #[allow(dead_code, reason = "read by tests and tools; the session checks the header before")]
    pub header: Header,
    /// Message flags.
    pub flags: u8,
    /// The sender's keyid.
    pub sender_keyid: u32,
    /// Our keyid the sender used.
    pub recipient_keyid: u32,
    /// The sender's next DH public value: its big-endian magnitude, already checked to be in
    /// the group. It becomes a group element only if [`open`](Self::open) takes it (the first
    /// message with a new sender key; the others repeat a value we already hold).
    pub next_dh: &'a [u8],
    /// Top half of the AES counter.
    pub ctr: [u8; 8],
    /// The encrypted plaintext.
    pub encrypted: &'a [u8],
    /// The MAC over everything from the header to the encrypted data.
    pub mac: [u8; 20],
    /// Old MAC keys the sender reveals (not authenticated, by design).
    #[allow(dead_code, reason = "nothing to do with them but let them be seen: tests read them")]
    pub revealed: &'a [u8],
    authenticated: &'a [u8],
}

impl<'a> DataMessage<'a> {
    /// Parses a whole data message (header included).
    ///
    /// # Errors
    /// [`WireError`] on any malformation, including a `next_dh` outside the group.
    pub fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r)?;
        if header.kind != kind::DATA {
            return Err(WireError::Invalid("not a data message"));
        }
        let flags = r.u8()?;
        let sender_keyid = r.u32()?;
        let recipient_keyid = r.u32()?;
        let next_dh = r.mpi(MODULUS_BYTES)?;
        Element::check_bytes(next_dh).map_err(|_| WireError::Invalid("next DH value out of range"))?;
        let ctr = r.array()?;
        let encrypted = r.data()?;
        let authenticated = r.consumed();
        let mac = r.array()?;
        let revealed = r.data()?;
        r.finish()?;
        Ok(Self {
            header,
            flags,
            sender_keyid,
            recipient_keyid,
            next_dh,
            ctr,
            encrypted,
            mac,
            revealed,
            authenticated,
        })
    }

    /// The flags byte of a data message, read even if the rest is malformed.
    pub fn peek_flags(bytes: &[u8]) -> Option<u8> {
        let mut r = Reader::new(bytes);
        let header = Header::read(&mut r).ok()?;
        (header.kind == kind::DATA).then(|| r.u8().ok()).flatten()
    }

    /// Authenticates and decrypts with `window`, then rotates keys as the message says.
    /// Returns the plaintext and the extra symmetric key of the pair it used.
    ///
    /// # Errors
    /// [`Unreadable`] when the keys are unknown, the MAC fails or the counter is replayed;
    /// the window is unchanged then.
    pub fn open(
        self,
        window: &mut KeyWindow,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Opened, Unreadable> {
        let keys = window
            .receiving(self.sender_keyid, self.recipient_keyid)
            .map_err(|_| Unreadable::UnknownKeyId)?;
        crypto::verify_mac(&keys.recv_cipher().mac(self.authenticated), &self.mac)
            .map_err(|_| Unreadable::BadMac)?;
        let ctr = u64::from_be_bytes(self.ctr);
        match keys.check_counter(ctr) {
            CounterCheck::Fresh => keys.accept_counter(ctr),
            CounterCheck::Duplicate => return Err(Unreadable::Duplicate),
            CounterCheck::TooOld => return Err(Unreadable::Replayed),
        }
        keys.mark_recv_used();
        let mut plain = Zeroizing::new(self.encrypted.to_vec());
        keys.recv_cipher().apply_ctr(self.ctr, &mut plain);
        let extra = Zeroizing::new(keys.extra);
        let next_dh = self.next_dh;
        window.rotate(self.sender_keyid, self.recipient_keyid, || Element::from_checked_bytes(next_dh), rng);
        Ok((plain, extra))
    }
}

/// Builds an encrypted data message carrying `plaintext` (message, NUL, TLVs). Returns the
/// message bytes and the extra symmetric key of the pair used.
pub fn seal(
    header: Header,
    flags: u8,
    window: &mut KeyWindow,
    plaintext: &[u8],
) -> (Vec<u8>, Zeroizing<[u8; 32]>) {
    let s = window.sending();
    // Header, flags, keyids, next DH, counter, encrypted data, MAC, revealed keys: one
    // allocation, and the plaintext is encrypted where it lies in the output.
    let len =
        header.encoded_len() + 1 + 8 + s.next_dh.len() + 8 + 4 + plaintext.len() + 20 + 4 + s.reveal.len();
    let mut w = Writer::with_capacity(len);
    header.write(&mut w);
    w.u8(flags).u32(s.sender_keyid).u32(s.recipient_keyid);
    w.raw(s.next_dh);
    let ctr = s.keys.send_ctr.to_be_bytes();
    w.raw(&ctr);
    w.data(plaintext);
    let cipher = s.keys.send_cipher();
    cipher.apply_ctr(ctr, w.last_mut(plaintext.len()));
    let mac = cipher.mac(w.as_slice());
    w.raw(&mac).data(&s.reveal);
    (w.into_vec(), Zeroizing::new(s.keys.extra))
}
