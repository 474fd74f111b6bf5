//! The authenticated key exchange: D-H Commit, D-H Key, Reveal Signature, Signature.
//!
//! [`Ake`] is an explicit state machine. Each received AKE message either moves it on (and
//! yields a reply to send), or is ignored as the spec says; a message that fails a check
//! leaves the state untouched, so an attacker cannot derail an AKE in progress. When the
//! exchange completes, [`Step::established`] carries everything the data phase needs.

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::crypto::dh::{DhKeyPair, SharedSecret};
use crate::crypto::dsa::{DsaKeyPair, DsaPublicKey, SIGNATURE_LEN};
use crate::crypto::group::{Element, MODULUS_BYTES};
use crate::crypto::{self, CryptoError};
use crate::message::kind;
use crate::wire::{Reader, WireError, Writer};

/// Why an AKE message was rejected. The AKE state is unchanged when this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AkeError {
    /// The message is malformed.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A value or signature did not check out.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The keyid of the DH key used in the AKE (libotr always uses 1).
pub const AKE_KEYID: u32 = 1;

/// An AKE message to send: its type byte and body (the header is added by the session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The message type byte.
    pub kind: u8,
    /// The body after the header.
    pub body: Vec<u8>,
}

/// The result of a completed AKE.
pub struct Established {
    /// The secure session id both sides display.
    pub ssid: [u8; 8],
    /// The peer's long-term key, authenticated by its signature.
    pub their_key: DsaPublicKey,
    /// The keyid the peer gave its AKE DH key.
    pub their_keyid: u32,
    /// The peer's AKE DH public value.
    pub their_dh: Element,
    /// Our AKE DH key pair (keyid [`AKE_KEYID`]).
    pub our_dh: DhKeyPair,
    /// Whether we sent the Reveal Signature (we started with the D-H Commit): decides which
    /// half of the ssid we show in bold.
    pub we_revealed: bool,
}

/// What handling one message produced.
#[derive(Default)]
pub struct Step {
    /// A message to send back.
    pub reply: Option<Outgoing>,
    /// Set when this message completed the AKE.
    pub established: Option<Established>,
}

/// Keys derived from the AKE's shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
struct AkeKeys {
    ssid: [u8; 8],
    c: [u8; 16],
    c_prime: [u8; 16],
    m1: [u8; 32],
    m2: [u8; 32],
    m1_prime: [u8; 32],
    m2_prime: [u8; 32],
}

impl AkeKeys {
    fn derive(s: &SharedSecret) -> Self {
        let h2 = |b: u8| Zeroizing::new(crypto::sha256(&[&[b], s.mpi()]));
        let mut ssid = [0; 8];
        ssid.copy_from_slice(&h2(0)[..8]);
        let cc = h2(1);
        let mut c = [0; 16];
        let mut c_prime = [0; 16];
        c.copy_from_slice(&cc[..16]);
        c_prime.copy_from_slice(&cc[16..]);
        Self { ssid, c, c_prime, m1: *h2(2), m2: *h2(3), m1_prime: *h2(4), m2_prime: *h2(5) }
    }

    /// These keys and where they came from, for the `trace` feature.
    #[cfg(feature = "trace")]
    fn trace(&self, ours: &DhKeyPair, theirs: &Element, s: &SharedSecret) -> crate::trace::Value {
        crate::trace::Value::AkeKeys {
            our_private: ours.private_bytes(),
            our_public: ours.public().to_bytes(),
            their_public: theirs.to_bytes(),
            shared_secret: s.mpi().to_vec(),
            ssid: self.ssid,
            c: self.c,
            c_prime: self.c_prime,
            m1: self.m1,
            m2: self.m2,
            m1_prime: self.m1_prime,
            m2_prime: self.m2_prime,
        }
    }
}

struct AwaitDhKey {
    r: Zeroizing<[u8; 16]>,
    dh: DhKeyPair,
    hash_gx: [u8; 32],
    commit: Outgoing,
}

struct AwaitRevealSig {
    dh: DhKeyPair,
    enc_gx: Vec<u8>,
    hash_gx: [u8; 32],
    dh_key: Outgoing,
}

struct AwaitSig {
    dh: DhKeyPair,
    their_dh: Element,
    keys: AkeKeys,
    reveal: Outgoing,
}

#[derive(Default)]
enum State {
    #[default]
    None,
    AwaitingDhKey(Box<AwaitDhKey>),
    AwaitingRevealSig(Box<AwaitRevealSig>),
    AwaitingSig(Box<AwaitSig>),
}

/// The AKE state of one instance (or of the not-yet-addressed master).
#[derive(Default)]
pub struct Ake {
    state: State,
    /// The keyid our X announces when not [`AKE_KEYID`] (tests and fuzz seeds only).
    keyid: Option<u32>,
    /// Keys derived since the session last looked (feature `trace` only).
    #[cfg(feature = "trace")]
    traces: Vec<crate::trace::Value>,
}

/// Where the AKE stands, for diagnostics and vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkePhase {
    /// No AKE in progress.
    None,
    /// We sent a D-H Commit.
    AwaitingDhKey,
    /// We sent a D-H Key.
    AwaitingRevealSig,
    /// We sent a Reveal Signature.
    AwaitingSig,
}

impl Ake {
    /// Whether an exchange is under way.
    pub fn phase(&self) -> AkePhase {
        match self.state {
            State::None => AkePhase::None,
            State::AwaitingDhKey(_) => AkePhase::AwaitingDhKey,
            State::AwaitingRevealSig(_) => AkePhase::AwaitingRevealSig,
            State::AwaitingSig(_) => AkePhase::AwaitingSig,
        }
    }

    /// Starts (or restarts) an exchange: a fresh DH key and a D-H Commit.
    pub fn start(&mut self, rng: &mut (impl CryptoRng + ?Sized)) -> Outgoing {
        let mut r = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(&mut *r);
        let dh = DhKeyPair::generate(rng);
        let gx = dh.public_mpi().to_vec();
        let mut enc = gx.clone();
        crypto::aes128_ctr(&r, [0; 8], &mut enc);
        let hash_gx = crypto::sha256(&[&gx]);
        let mut w = Writer::new();
        w.data(&enc).data(&hash_gx);
        let commit = Outgoing { kind: kind::DH_COMMIT, body: w.into_vec() };
        self.state = State::AwaitingDhKey(Box::new(AwaitDhKey { r, dh, hash_gx, commit: commit.clone() }));
        commit
    }

    /// A copy of a pending D-H Commit state, for an instance that answers the commit we
    /// sent before knowing its tag. `None` unless we await a D-H Key.
    pub fn clone_awaiting_dh_key(&self) -> Option<Self> {
        match &self.state {
            State::AwaitingDhKey(a) => Some(Self {
                state: State::AwaitingDhKey(Box::new(AwaitDhKey {
                    r: a.r.clone(),
                    dh: a.dh.clone(),
                    hash_gx: a.hash_gx,
                    commit: a.commit.clone(),
                })),
                keyid: self.keyid,
                #[cfg(feature = "trace")]
                traces: Vec::new(),
            }),
            _ => None,
        }
    }

    /// The keys derived since the last call (feature `trace` only; secret).
    #[cfg(feature = "trace")]
    pub(crate) fn take_traces(&mut self) -> Vec<crate::trace::Value> {
        core::mem::take(&mut self.traces)
    }

    /// Makes our X announce `keyid` instead of [`AKE_KEYID`]. Only for tests and fuzz seeds
    /// that play a peer with an unusual keyid: a session always announces 1, as libotr does.
    #[cfg(feature = "internals")]
    pub fn announce_keyid(&mut self, keyid: u32) {
        self.keyid = Some(keyid);
    }

    /// The keyid our X announces.
    fn our_keyid(&self) -> u32 {
        self.keyid.unwrap_or(AKE_KEYID)
    }

    /// Forgets any exchange in progress.
    pub fn reset(&mut self) {
        self.state = State::None;
    }

    /// Handles a received AKE message of type `msg_kind`.
    ///
    /// # Errors
    /// [`AkeError`] when the message is malformed or fails verification; the state is then
    /// unchanged.
    pub fn handle(
        &mut self,
        msg_kind: u8,
        body: &[u8],
        identity: &DsaKeyPair,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Step, AkeError> {
        match msg_kind {
            kind::DH_COMMIT => self.on_commit(body, rng),
            kind::DH_KEY => self.on_dh_key(body, identity, rng),
            kind::REVEAL_SIGNATURE => self.on_reveal(body, identity, rng),
            kind::SIGNATURE => self.on_signature(body),
            _ => Err(WireError::Invalid("not an AKE message").into()),
        }
    }

    fn on_commit(&mut self, body: &[u8], rng: &mut (impl CryptoRng + ?Sized)) -> Result<Step, AkeError> {
        let mut r = Reader::new(body);
        let enc_gx = r.data()?;
        if enc_gx.len() > MODULUS_BYTES + 4 {
            return Err(WireError::TooLong.into());
        }
        let hash: [u8; 32] =
            r.data()?.try_into().map_err(|_| WireError::Invalid("hashed g^x is not 32 bytes"))?;
        r.finish()?;
        match &mut self.state {
            State::AwaitingDhKey(ours) if ours.hash_gx > hash => {
                // Collision, and our commit wins: ignore theirs and resend ours.
                Ok(Step { reply: Some(ours.commit.clone()), established: None })
            }
            State::AwaitingRevealSig(a) => {
                a.enc_gx = enc_gx.to_vec();
                a.hash_gx = hash;
                Ok(Step { reply: Some(a.dh_key.clone()), established: None })
            }
            _ => {
                let dh = DhKeyPair::generate(rng);
                let mut w = Writer::new();
                w.raw(dh.public_mpi());
                let dh_key = Outgoing { kind: kind::DH_KEY, body: w.into_vec() };
                self.state = State::AwaitingRevealSig(Box::new(AwaitRevealSig {
                    dh,
                    enc_gx: enc_gx.to_vec(),
                    hash_gx: hash,
                    dh_key: dh_key.clone(),
                }));
                Ok(Step { reply: Some(dh_key), established: None })
            }
        }
    }

    fn on_dh_key(
        &mut self,
        body: &[u8],
        identity: &DsaKeyPair,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Step, AkeError> {
        let mut r = Reader::new(body);
        let gy = Element::from_bytes(r.mpi(MODULUS_BYTES)?)?;
        r.finish()?;
        match &self.state {
            State::AwaitingDhKey(a) => {
                let s = a.dh.shared_secret(&gy);
                let keys = AkeKeys::derive(&s);
                let mut w = Writer::new();
                w.data(&a.r[..]);
                let x = SignedX { enc: &keys.c, sign: &keys.m1, mac: &keys.m2 };
                w.raw(&x.seal(a.dh.public(), &gy, identity, self.our_keyid(), rng)?);
                let reveal = Outgoing { kind: kind::REVEAL_SIGNATURE, body: w.into_vec() };
                let dh = a.dh.clone();
                #[cfg(feature = "trace")]
                self.traces.push(keys.trace(&dh, &gy, &s));
                self.state =
                    State::AwaitingSig(Box::new(AwaitSig { dh, their_dh: gy, keys, reveal: reveal.clone() }));
                Ok(Step { reply: Some(reveal), established: None })
            }
            // A repeated D-H Key gets the same Reveal Signature; a different one is ignored.
            State::AwaitingSig(a) if a.their_dh == gy => {
                Ok(Step { reply: Some(a.reveal.clone()), established: None })
            }
            _ => Ok(Step::default()),
        }
    }

    fn on_reveal(
        &mut self,
        body: &[u8],
        identity: &DsaKeyPair,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Step, AkeError> {
        let mut rd = Reader::new(body);
        let r: [u8; 16] =
            rd.data()?.try_into().map_err(|_| WireError::Invalid("revealed key is not 16 bytes"))?;
        let r = Zeroizing::new(r);
        let sealed = Sealed::read(&mut rd)?;
        rd.finish()?;
        let State::AwaitingRevealSig(a) = &self.state else {
            return Ok(Step::default());
        };
        let mut gx_mpi = a.enc_gx.clone();
        crypto::aes128_ctr(&r, [0; 8], &mut gx_mpi);
        crypto::verify_mac(&crypto::sha256(&[&gx_mpi]), &a.hash_gx)
            .map_err(|_| CryptoError::BadCommitment)?;
        let mut gr = Reader::new(&gx_mpi);
        let gx = Element::from_bytes(gr.mpi(MODULUS_BYTES)?)?;
        gr.finish()?;
        let s = a.dh.shared_secret(&gx);
        let keys = AkeKeys::derive(&s);
        let theirs = SignedX { enc: &keys.c, sign: &keys.m1, mac: &keys.m2 };
        let (their_key, their_keyid) = theirs.open(&sealed, &gx, a.dh.public())?;
        let ours = SignedX { enc: &keys.c_prime, sign: &keys.m1_prime, mac: &keys.m2_prime };
        let body = ours.seal(a.dh.public(), &gx, identity, self.our_keyid(), rng)?;
        #[cfg(feature = "trace")]
        let trace = keys.trace(&a.dh, &gx, &s);
        let State::AwaitingRevealSig(a) = core::mem::take(&mut self.state) else {
            unreachable!("state matched above")
        };
        let established = Established {
            ssid: keys.ssid,
            their_key,
            their_keyid,
            their_dh: gx,
            our_dh: a.dh,
            we_revealed: false,
        };
        #[cfg(feature = "trace")]
        self.traces.push(trace);
        Ok(Step { reply: Some(Outgoing { kind: kind::SIGNATURE, body }), established: Some(established) })
    }

    fn on_signature(&mut self, body: &[u8]) -> Result<Step, AkeError> {
        let mut rd = Reader::new(body);
        let sealed = Sealed::read(&mut rd)?;
        rd.finish()?;
        let State::AwaitingSig(a) = &self.state else {
            return Ok(Step::default());
        };
        let theirs = SignedX { enc: &a.keys.c_prime, sign: &a.keys.m1_prime, mac: &a.keys.m2_prime };
        let (their_key, their_keyid) = theirs.open(&sealed, &a.their_dh, a.dh.public())?;
        let State::AwaitingSig(a) = core::mem::take(&mut self.state) else {
            unreachable!("state matched above")
        };
        let established = Established {
            ssid: a.keys.ssid,
            their_key,
            their_keyid,
            their_dh: a.their_dh.clone(),
            our_dh: a.dh.clone(),
            we_revealed: true,
        };
        Ok(Step { reply: None, established: Some(established) })
    }
}

/// The encrypted, MACed signature block of a Reveal Signature or Signature message.
struct Sealed<'a> {
    /// The DATA encoding (length included) of the encrypted block: what the MAC covers.
    data: &'a [u8],
    mac: [u8; 20],
}

impl<'a> Sealed<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let start = r.position();
        let enc = r.data()?;
        if enc.len() > 2048 {
            return Err(WireError::TooLong);
        }
        let data = &r.consumed()[start..];
        let mac = r.array()?;
        Ok(Self { data, mac })
    }
}

/// One side's X = (pubkey, keyid, sig(M)) with the keys that protect it.
struct SignedX<'k> {
    enc: &'k [u8; 16],
    sign: &'k [u8; 32],
    mac: &'k [u8; 32],
}

impl SignedX<'_> {
    fn m(&self, signer_dh: &Element, other_dh: &Element, pubkey: &[u8], keyid: u32) -> [u8; 32] {
        crypto::hmac_sha256(
            self.sign,
            &[&signer_dh.to_mpi(), &other_dh.to_mpi(), pubkey, &keyid.to_be_bytes()],
        )
    }

    /// Builds DATA(AES(X)) ‖ MAC for our side (`ours` is our DH public value).
    fn seal(
        &self,
        ours: &Element,
        theirs: &Element,
        identity: &DsaKeyPair,
        keyid: u32,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Vec<u8>, CryptoError> {
        let pubkey = identity.public().encoded();
        let m = self.m(ours, theirs, pubkey, keyid);
        let sig = identity.sign(&m, rng)?;
        let mut x = Writer::new();
        x.raw(pubkey).u32(keyid).raw(&sig);
        let mut x = Zeroizing::new(x.into_vec());
        crypto::aes128_ctr(self.enc, [0; 8], &mut x);
        let mut w = Writer::new();
        w.data(&x);
        let mac = crypto::hmac_sha256_160(self.mac, w.as_slice());
        w.raw(&mac);
        Ok(w.into_vec())
    }

    /// Checks the MAC, decrypts, parses and verifies the peer's X (`signer` is their DH value).
    fn open(
        &self,
        sealed: &Sealed<'_>,
        signer: &Element,
        ours: &Element,
    ) -> Result<(DsaPublicKey, u32), AkeError> {
        crypto::verify_mac(&crypto::hmac_sha256_160(self.mac, sealed.data), &sealed.mac)?;
        let mut x = Zeroizing::new(sealed.data[4..].to_vec());
        crypto::aes128_ctr(self.enc, [0; 8], &mut x);
        let mut r = Reader::new(&x);
        let key = DsaPublicKey::read(&mut r)?;
        let keyid = r.u32()?;
        let sig: [u8; SIGNATURE_LEN] = r.array()?;
        r.finish()?;
        if keyid == 0 {
            return Err(WireError::Invalid("keyid 0").into());
        }
        let m = self.m(signer, ours, key.encoded(), keyid);
        key.verify(&m, &sig)?;
        Ok((key, keyid))
    }
}
