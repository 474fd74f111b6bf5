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
    pub header: Header,
    /// Message flags.
    pub flags: u8,
    /// The sender's keyid.
    pub sender_keyid: u32,
    /// Our keyid the sender used.
    pub recipient_keyid: u32,
    /// The sender's next DH public value.
    pub next_dh: Element,
    /// Top half of the AES counter.
    pub ctr: [u8; 8],
    /// The encrypted plaintext.
    pub encrypted: &'a [u8],
    /// The MAC over everything from the header to the encrypted data.
    pub mac: [u8; 20],
    /// Old MAC keys the sender reveals (not authenticated, by design).
    pub revealed: &'a [u8],
    authenticated: &'a [u8],
}

/// A data message as the receiving path needs it: parsed, its next DH value range-checked but
/// turned into a group element only if the message introduces it (the first message with a
/// new sender key; the others repeat a value we already hold).
#[derive(Debug)]
pub struct IncomingData<'a> {
    next_dh: &'a [u8],
    sealed: Sealed<'a>,
}

/// What authenticating and decrypting a data message reads.
#[derive(Debug, Clone, Copy)]
struct Sealed<'a> {
    sender_keyid: u32,
    recipient_keyid: u32,
    ctr: [u8; 8],
    encrypted: &'a [u8],
    mac: [u8; 20],
    authenticated: &'a [u8],
}

/// Every field of a data message, the next DH value as its checked MPI magnitude.
struct Fields<'a> {
    header: Header,
    flags: u8,
    next_dh: &'a [u8],
    revealed: &'a [u8],
    sealed: Sealed<'a>,
}

impl<'a> Fields<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
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
        let sealed = Sealed { sender_keyid, recipient_keyid, ctr, encrypted, mac, authenticated };
        Ok(Self { header, flags, next_dh, revealed, sealed })
    }
}

impl Sealed<'_> {
    /// Authenticates and decrypts with `window`, then rotates keys as the message says,
    /// calling `next_dh` only if the message introduces the peer's next key.
    fn open(
        self,
        window: &mut KeyWindow,
        next_dh: impl FnOnce() -> Element,
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
        window.rotate_with(self.sender_keyid, self.recipient_keyid, next_dh, rng);
        Ok((plain, extra))
    }
}

impl<'a> IncomingData<'a> {
    /// Parses a whole data message (header included).
    ///
    /// # Errors
    /// [`WireError`] on any malformation, including a `next_dh` outside the group.
    pub fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let f = Fields::read(bytes)?;
        Ok(Self { next_dh: f.next_dh, sealed: f.sealed })
    }

    /// As [`DataMessage::open`].
    ///
    /// # Errors
    /// As [`DataMessage::open`].
    pub fn open(
        self,
        window: &mut KeyWindow,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Opened, Unreadable> {
        let next_dh = self.next_dh;
        self.sealed.open(window, || Element::from_checked_bytes(next_dh), rng)
    }
}

impl<'a> DataMessage<'a> {
    /// Parses a whole data message (header included).
    ///
    /// # Errors
    /// [`WireError`] on any malformation, including a `next_dh` outside the group.
    pub fn read(bytes: &'a [u8]) -> Result<Self, WireError> {
        let f = Fields::read(bytes)?;
        let s = f.sealed;
        Ok(Self {
            header: f.header,
            flags: f.flags,
            sender_keyid: s.sender_keyid,
            recipient_keyid: s.recipient_keyid,
            next_dh: Element::from_checked_bytes(f.next_dh),
            ctr: s.ctr,
            encrypted: s.encrypted,
            mac: s.mac,
            revealed: f.revealed,
            authenticated: s.authenticated,
        })
    }

    /// The flags byte of a v3 data message, read even if the rest is malformed.
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
        let sealed = Sealed {
            sender_keyid: self.sender_keyid,
            recipient_keyid: self.recipient_keyid,
            ctr: self.ctr,
            encrypted: self.encrypted,
            mac: self.mac,
            authenticated: self.authenticated,
        };
        let next_dh = self.next_dh;
        sealed.open(window, || next_dh, rng)
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
    let len = 11 + 1 + 8 + s.next_dh.len() + 8 + 4 + plaintext.len() + 20 + 4 + s.reveal.len();
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
