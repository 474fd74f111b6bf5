//! The Socialist Millionaires' Protocol (SMP, version 1), as OTR v3 specifies it and libotr 4
//! runs it: two parties learn whether they typed the same secret, and nothing more.
//!
//! [`Smp`] is a sans-IO state machine over the SMP TLVs (types 2 to 7). The initiator calls
//! [`Smp::start`] and sends the SMP1 (or SMP1Q) TLV; the responder feeds it to
//! [`Smp::handle`], which verifies it and reports [`SmpEvent::Request`]; once the user has
//! typed the answer, [`Smp::respond`] yields SMP2. From there [`Smp::handle`] produces SMP3
//! and SMP4 on its own. As in libotr, the responder learns the outcome when SMP3 arrives (and
//! sends SMP4 whether or not the secrets matched), the initiator when SMP4 arrives.
//!
//! Everything received is checked before it is used: every group element must lie in
//! `2 ..= p-2`, every proof response in `1 ..= q-1`, and every zero-knowledge proof must
//! verify; a message that fails (including a malformed one) resets the state, is answered with
//! an abort TLV and is reported as [`SmpEvent::Cheated`]. An SMP message that arrives in the
//! wrong state resets the state, is answered with an abort TLV and is reported as
//! [`SmpEvent::Aborted`] (libotr reports it as an error, and its applications answer it with
//! an abort).
//!
//! Wire format (libotr's `serialize_mpi_array`): an INT count of MPIs, then the MPIs. The
//! proofs hash `SHA-256(version byte || MPI || MPI)` with the version bytes 1 to 8 the spec
//! assigns. Random exponents are 1536 bits wide, as libotr draws them (`SM_MOD_LEN_BYTES`
//! random bytes, not reduced). The compared secret is `SHA-256(0x01 || initiator fingerprint
//! || responder fingerprint || ssid || user secret)`.
//!
//! Secret exponents are [`Exponent`]s, which zeroize on drop; so every secret held in a state
//! is wiped when the state is left or the [`Smp`] dropped.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::crypto::dsa::Fingerprint;
use crate::crypto::group::{Element, Exponent, MODULUS_BITS};
use crate::crypto::{CryptoError, sha256};
use crate::tlv::{Tlv, kind};
use crate::wire::{Reader, WireError, Writer};

/// Bits of every random SMP exponent (libotr: `SM_MOD_LEN_BYTES` = 192 random bytes).
pub const EXPONENT_BITS: u32 = MODULUS_BITS;

/// The version byte that starts the hashed secret (the spec's SMP version 1).
pub const SECRET_VERSION: u8 = 1;

/// The longest question [`Smp::start`] sends: a TLV value is at most 65535 bytes and must
/// also hold the NUL and the SMP1 body. Longer questions are cut (at a character boundary).
pub const MAX_QUESTION_LEN: usize = u16::MAX as usize - 1 - MAX_SMP1_LEN;

/// The longest SMP1 body we produce: count, two full-size elements, two full-size responses,
/// two 32-byte challenges, each MPI with its 4-byte length.
const MAX_SMP1_LEN: usize = 4 + 4 * (4 + 192) + 2 * (4 + DIGEST_LEN);

/// Bytes of a SHA-256 digest, the largest challenge a proof can carry.
const DIGEST_LEN: usize = 32;

/// What the application learns from SMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmpEvent {
    /// The peer started SMP; answer with [`Smp::respond`] (the question is from SMP1Q, if
    /// any).
    Request {
        /// The question the peer attached (SMP1Q), lossily decoded as UTF-8.
        question: Option<String>,
    },
    /// The secrets matched. The responder learns this on SMP3, the initiator on SMP4.
    Success,
    /// The secrets differed. Learnt at the same points as [`SmpEvent::Success`].
    Failure,
    /// The peer aborted (abort TLV), or sent an SMP message the state did not expect (then an
    /// abort TLV is the reply). SMP is back to idle.
    Aborted,
    /// A received SMP message was malformed or failed a check (a value out of range, a proof
    /// that did not verify). SMP is back to idle and an abort TLV is the reply.
    Cheated,
}

/// Why an SMP call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SmpError {
    /// [`Smp::respond`] was called without a pending request from the peer.
    #[error("there is no SMP request to respond to")]
    NoRequest,
    /// A computation produced a degenerate group element. This happens with probability
    /// around 2^-1500; SMP was reset, and the caller should send [`Smp::abort`]'s TLV.
    #[error("SMP computation produced a degenerate value")]
    Computation,
}

/// The SMP state of one conversation. [`Default`] is idle (the spec's `SMPSTATE_EXPECT1`).
///
/// Must be reset (with [`Smp::reset`], or by replacing it) whenever the conversation leaves
/// the encrypted state.
///
/// Not `Clone` (a copy of its secret exponents would outlive a reset), except in tests and
/// fuzz builds (`cfg(fuzzing)`), whose `smp` target clones a started exchange per input.
#[derive(Default)]
#[cfg_attr(any(test, fuzzing), derive(Clone))]
pub struct Smp {
    state: State,
}

#[derive(Default)]
#[cfg_attr(any(test, fuzzing), derive(Clone))]
enum State {
    /// `SMPSTATE_EXPECT1` with nothing pending.
    #[default]
    Idle,
    /// Still `SMPSTATE_EXPECT1`: SMP1 arrived and verified; waiting for our user's secret.
    Requested(Box<Requested>),
    /// We sent SMP1 and expect SMP2.
    Expect2(Box<Expect2>),
    /// We sent SMP2 and expect SMP3.
    Expect3(Box<Expect3>),
    /// We sent SMP3 and expect SMP4.
    Expect4(Box<Expect4>),
}

#[cfg_attr(any(test, fuzzing), derive(Clone))]
struct Requested {
    question: Option<String>,
    g3a: Element,
    g2: Element,
    g3: Element,
    b2: Exponent,
    b3: Exponent,
}

#[cfg_attr(any(test, fuzzing), derive(Clone))]
struct Expect2 {
    x: Exponent,
    a2: Exponent,
    a3: Exponent,
}

#[cfg_attr(any(test, fuzzing), derive(Clone))]
struct Expect3 {
    g3a: Element,
    g2: Element,
    g3: Element,
    b3: Exponent,
    pb: Element,
    qb: Element,
}

#[cfg_attr(any(test, fuzzing), derive(Clone))]
struct Expect4 {
    g3b: Element,
    pab: Element,
    qab: Element,
    a3: Exponent,
}

impl core::fmt::Debug for Smp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let state = match &self.state {
            State::Idle => "Idle",
            State::Requested(_) => "Requested",
            State::Expect2(_) => "Expect2",
            State::Expect3(_) => "Expect3",
            State::Expect4(_) => "Expect4",
        };
        f.debug_struct("Smp").field("state", &state).finish_non_exhaustive()
    }
}

/// A received message failed a check (or one of our computations degenerated).
struct Bad;

impl From<CryptoError> for Bad {
    fn from(_: CryptoError) -> Self {
        Bad
    }
}

impl From<WireError> for Bad {
    fn from(_: WireError) -> Self {
        Bad
    }
}

impl Smp {
    /// An idle SMP state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts SMP as the initiator and returns the SMP1 TLV (SMP1Q with a question).
    ///
    /// `initiator_fp` is our fingerprint, `responder_fp` the peer's, `ssid` the session's
    /// secure session id. Any exchange in progress (or pending request) is dropped, as libotr
    /// does; to tell the peer, send [`Smp::abort`]'s TLV first. A question is sent up to its
    /// first NUL (as libotr's C string would be) and at most [`MAX_QUESTION_LEN`] bytes.
    pub fn start(
        &mut self,
        initiator_fp: &Fingerprint,
        responder_fp: &Fingerprint,
        ssid: &[u8; 8],
        secret: &[u8],
        question: Option<&str>,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Tlv {
        self.state = State::Idle;
        let x = combined_secret(initiator_fp, responder_fp, ssid, secret);
        let a2 = Exponent::random(EXPONENT_BITS, rng);
        let a3 = Exponent::random(EXPONENT_BITS, rng);
        let g2a = Element::generator_pow(&a2);
        let (c2, d2) = prove_log(1, &a2, rng);
        let g3a = Element::generator_pow(&a3);
        let (c3, d3) = prove_log(2, &a3, rng);
        let body =
            serialize(&[&g2a.to_bytes(), &c2, &d2.to_be_bytes(), &g3a.to_bytes(), &c3, &d3.to_be_bytes()]);
        self.state = State::Expect2(Box::new(Expect2 { x, a2, a3 }));
        match question {
            None => Tlv::new(kind::SMP1, body),
            Some(q) => {
                let q = q.split('\0').next().unwrap_or_default();
                let q = truncate_to_char_boundary(q, MAX_QUESTION_LEN);
                let mut value = Vec::with_capacity(q.len() + 1 + body.len());
                value.extend_from_slice(q.as_bytes());
                value.push(0);
                value.extend_from_slice(&body);
                Tlv::new(kind::SMP1Q, value)
            }
        }
    }

    /// Answers the pending request with our secret and returns the SMP2 TLV.
    ///
    /// `initiator_fp` is the peer's fingerprint, `responder_fp` ours.
    ///
    /// # Errors
    /// [`SmpError::NoRequest`] when no verified SMP1 is waiting (the state is unchanged);
    /// [`SmpError::Computation`] in the negligible case of a degenerate value (SMP is reset).
    pub fn respond(
        &mut self,
        initiator_fp: &Fingerprint,
        responder_fp: &Fingerprint,
        ssid: &[u8; 8],
        secret: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<Tlv, SmpError> {
        if !matches!(self.state, State::Requested(_)) {
            return Err(SmpError::NoRequest);
        }
        let State::Requested(req) = core::mem::take(&mut self.state) else {
            return Err(SmpError::NoRequest);
        };
        let y = combined_secret(initiator_fp, responder_fp, ssid, secret);
        let (tlv, next) = step2b(*req, &y, rng).map_err(|Bad| SmpError::Computation)?;
        self.state = State::Expect3(Box::new(next));
        Ok(tlv)
    }

    /// Aborts any exchange: resets to idle and returns the abort TLV to send.
    pub fn abort(&mut self) -> Tlv {
        self.reset();
        abort_tlv()
    }

    /// Resets to idle without telling the peer (for when the conversation leaves the
    /// encrypted state).
    pub fn reset(&mut self) {
        self.state = State::Idle;
    }

    /// Whether an exchange is under way: we started one, answered one, or a request from the
    /// peer awaits our answer.
    pub fn is_in_progress(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Whether a verified request from the peer awaits [`Smp::respond`].
    pub fn has_pending_request(&self) -> bool {
        matches!(self.state, State::Requested(_))
    }

    /// Handles one received TLV. Returns the reply TLV to send (if any) and the event for the
    /// user (if any). TLVs that are not SMP (types other than 2 to 7) are ignored.
    ///
    /// - Abort (type 6): reset; [`SmpEvent::Aborted`], no reply (also when idle, as libotr).
    /// - SMP1/SMP1Q while idle or with a request pending (libotr's `EXPECT1`): verified, then
    ///   [`SmpEvent::Request`]; a newer request replaces a pending one.
    /// - SMP2 (we expect it): verified; the reply is SMP3, no event.
    /// - SMP3 (we expect it): verified; the reply is SMP4 and the event the outcome.
    /// - SMP4 (we expect it): verified; no reply, the event is the outcome.
    /// - SMP1 to SMP4 in any other state: reset; reply abort, [`SmpEvent::Aborted`].
    /// - Any check failing (malformed body, value out of range, proof not verifying): reset;
    ///   reply abort, [`SmpEvent::Cheated`].
    pub fn handle(
        &mut self,
        tlv: &Tlv,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> (Option<Tlv>, Option<SmpEvent>) {
        let state = core::mem::take(&mut self.state);
        let result = match (tlv.kind, state) {
            (kind::SMP_ABORT, _) => return (None, Some(SmpEvent::Aborted)),
            (kind::SMP1 | kind::SMP1Q, State::Idle | State::Requested(_)) => step2a(tlv, rng).map(|req| {
                let question = req.question.clone();
                self.state = State::Requested(Box::new(req));
                (None, Some(SmpEvent::Request { question }))
            }),
            (kind::SMP2, State::Expect2(st)) => step3(&tlv.value, &st, rng).map(|(reply, next)| {
                self.state = State::Expect4(Box::new(next));
                (Some(reply), None)
            }),
            (kind::SMP3, State::Expect3(st)) => {
                step4(&tlv.value, &st, rng).map(|(reply, matched)| (Some(reply), Some(outcome(matched))))
            }
            (kind::SMP4, State::Expect4(st)) => {
                step5(&tlv.value, &st).map(|matched| (None, Some(outcome(matched))))
            }
            (kind::SMP1 | kind::SMP1Q | kind::SMP2 | kind::SMP3 | kind::SMP4, _) => {
                return (Some(abort_tlv()), Some(SmpEvent::Aborted));
            }
            (_, state) => {
                self.state = state;
                return (None, None);
            }
        };
        result.unwrap_or_else(|Bad| {
            self.state = State::Idle;
            (Some(abort_tlv()), Some(SmpEvent::Cheated))
        })
    }
}

fn outcome(matched: bool) -> SmpEvent {
    if matched { SmpEvent::Success } else { SmpEvent::Failure }
}

fn abort_tlv() -> Tlv {
    Tlv::new(kind::SMP_ABORT, Vec::new())
}

fn truncate_to_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The compared secret: SHA-256(0x01 || initiator fp || responder fp || ssid || secret).
fn combined_secret(
    initiator_fp: &Fingerprint,
    responder_fp: &Fingerprint,
    ssid: &[u8; 8],
    secret: &[u8],
) -> Exponent {
    let digest = secret_digest(initiator_fp, responder_fp, ssid, secret);
    Exponent::from_be_bytes(&digest[..])
}

/// The digest [`combined_secret`] uses as the exponent (visible to the `trace` feature).
pub(crate) fn secret_digest(
    initiator_fp: &Fingerprint,
    responder_fp: &Fingerprint,
    ssid: &[u8; 8],
    secret: &[u8],
) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(sha256(&[&[SECRET_VERSION], &initiator_fp.0, &responder_fp.0, ssid, secret]))
}

/// libotr's `otrl_sm_hash`: SHA-256 of the version byte and one or two MPIs.
fn hash(version: u8, a: &Element, b: Option<&Element>) -> [u8; DIGEST_LEN] {
    let a = a.to_mpi();
    let b = b.map(Element::to_mpi).unwrap_or_default();
    sha256(&[&[version], &a, &b])
}

/// An INT count, then each value as an MPI.
fn serialize(values: &[&[u8]]) -> Vec<u8> {
    let mut w = Writer::new();
    let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
    w.u32(count);
    for v in values {
        w.mpi(v);
    }
    w.into_vec()
}

/// Splits a body into exactly `N` MPI magnitudes (leading zeros stripped, as libotr reads
/// them as integers). Nothing is allocated; every length is checked against what remains.
fn parse<const N: usize>(body: &[u8]) -> Result<[&[u8]; N], Bad> {
    let mut r = Reader::new(body);
    if usize::try_from(r.u32()?).ok() != Some(N) {
        return Err(Bad);
    }
    let mut out: [&[u8]; N] = [&[]; N];
    for slot in &mut out {
        let len = usize::try_from(r.u32()?).map_err(|_| Bad)?;
        let bytes = r.take(len)?;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        *slot = &bytes[start..];
    }
    r.finish()?;
    Ok(out)
}

/// A received group element: `2 <= v <= p-2`.
fn element(bytes: &[u8]) -> Result<Element, Bad> {
    Ok(Element::from_bytes(bytes)?)
}

/// A received proof response: `1 <= v <= q-1` (libotr's `check_expon`).
fn response(bytes: &[u8]) -> Result<Exponent, Bad> {
    Exponent::from_be_bytes_nonzero_below_q(bytes).ok_or(Bad)
}

/// A received challenge: a hash value, so at most 32 bytes (anything longer cannot match).
fn challenge(bytes: &[u8]) -> Result<Challenge<'_>, Bad> {
    if bytes.len() > DIGEST_LEN {
        return Err(Bad);
    }
    Ok(Challenge { bytes, exp: Exponent::from_be_bytes(bytes) })
}

struct Challenge<'a> {
    /// Minimal magnitude, as received.
    bytes: &'a [u8],
    exp: Exponent,
}

impl Challenge<'_> {
    /// Compares with a recomputed hash, as integers.
    fn matches(&self, digest: &[u8; DIGEST_LEN]) -> Result<(), Bad> {
        let start = digest.iter().position(|&b| b != 0).unwrap_or(DIGEST_LEN);
        if &digest[start..] == self.bytes { Ok(()) } else { Err(Bad) }
    }
}

/// Proof of knowledge of `x` with `g^x` public: `c = H(v, g^r)`, `D = r - x c mod q`.
fn prove_log(version: u8, x: &Exponent, rng: &mut (impl CryptoRng + ?Sized)) -> ([u8; DIGEST_LEN], Exponent) {
    let r = Exponent::random(EXPONENT_BITS, rng);
    let c = hash(version, &Element::generator_pow(&r), None);
    let d = r.sub_mul_mod_q(x, &Exponent::from_be_bytes(&c));
    (c, d)
}

/// Checks `c = H(v, g^D X^c)`.
fn check_log(version: u8, c: &Challenge<'_>, d: &Exponent, x: &Element) -> Result<(), Bad> {
    let t = Element::generator_pow(d).mul(&x.pow_elem(&c.exp)?)?;
    c.matches(&hash(version, &t, None))
}

/// Proof that `P = g3^r` and `Q = g^r g2^s`: `c = H(v, g3^r5, g^r5 g2^r6)`, `D5 = r5 - r c`,
/// `D6 = r6 - s c`.
fn prove_coords(
    version: u8,
    g2: &Element,
    g3: &Element,
    r: &Exponent,
    s: &Exponent,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<([u8; DIGEST_LEN], Exponent, Exponent), Bad> {
    let r5 = Exponent::random(EXPONENT_BITS, rng);
    let r6 = Exponent::random(EXPONENT_BITS, rng);
    let t1 = g3.pow_elem(&r5)?;
    let t2 = Element::generator_pow(&r5).mul(&g2.pow_elem(&r6)?)?;
    let c = hash(version, &t1, Some(&t2));
    let ce = Exponent::from_be_bytes(&c);
    Ok((c, r5.sub_mul_mod_q(r, &ce), r6.sub_mul_mod_q(s, &ce)))
}

/// Checks `c = H(v, g3^D5 P^c, g^D5 g2^D6 Q^c)`.
#[allow(clippy::too_many_arguments)]
fn check_coords(
    version: u8,
    c: &Challenge<'_>,
    d5: &Exponent,
    d6: &Exponent,
    p: &Element,
    q: &Element,
    g2: &Element,
    g3: &Element,
) -> Result<(), Bad> {
    let t1 = g3.pow_elem(d5)?.mul(&p.pow_elem(&c.exp)?)?;
    let t2 = Element::generator_pow(d5).mul(&g2.pow_elem(d6)?)?.mul(&q.pow_elem(&c.exp)?)?;
    c.matches(&hash(version, &t1, Some(&t2)))
}

/// Proof that `R = qab^x3` where `g3o = g^x3`: `c = H(v, g^r7, qab^r7)`, `D7 = r7 - x3 c`.
fn prove_logs(
    version: u8,
    qab: &Element,
    x3: &Exponent,
    rng: &mut (impl CryptoRng + ?Sized),
) -> Result<([u8; DIGEST_LEN], Exponent), Bad> {
    let r7 = Exponent::random(EXPONENT_BITS, rng);
    let c = hash(version, &Element::generator_pow(&r7), Some(&qab.pow_elem(&r7)?));
    let d = r7.sub_mul_mod_q(x3, &Exponent::from_be_bytes(&c));
    Ok((c, d))
}

/// Checks `c = H(v, g^D7 g3o^c, qab^D7 R^c)`, with `g3o` the peer's DH half of g3.
fn check_logs(
    version: u8,
    c: &Challenge<'_>,
    d7: &Exponent,
    r: &Element,
    g3o: &Element,
    qab: &Element,
) -> Result<(), Bad> {
    let t1 = Element::generator_pow(d7).mul(&g3o.pow_elem(&c.exp)?)?;
    let t2 = qab.pow_elem(d7)?.mul(&r.pow_elem(&c.exp)?)?;
    c.matches(&hash(version, &t1, Some(&t2)))
}

/// Responder: verify SMP1 (or SMP1Q) and prepare g2, g3 (libotr's `otrl_sm_step2a`).
fn step2a(tlv: &Tlv, rng: &mut (impl CryptoRng + ?Sized)) -> Result<Requested, Bad> {
    let (question, body) = if tlv.kind == kind::SMP1Q {
        let nul = tlv.value.iter().position(|&b| b == 0).ok_or(Bad)?;
        let q = String::from_utf8_lossy(&tlv.value[..nul]).into_owned();
        (Some(q), &tlv.value[nul + 1..])
    } else {
        (None, &tlv.value[..])
    };
    let [g2a, c2, d2, g3a, c3, d3] = parse::<6>(body)?;
    let (g2a, c2, d2) = (element(g2a)?, challenge(c2)?, response(d2)?);
    let (g3a, c3, d3) = (element(g3a)?, challenge(c3)?, response(d3)?);
    check_log(1, &c2, &d2, &g2a)?;
    check_log(2, &c3, &d3, &g3a)?;
    let b2 = Exponent::random(EXPONENT_BITS, rng);
    let b3 = Exponent::random(EXPONENT_BITS, rng);
    let g2 = g2a.pow_elem(&b2)?;
    let g3 = g3a.pow_elem(&b3)?;
    Ok(Requested { question, g3a, g2, g3, b2, b3 })
}

/// Responder: build SMP2 from our secret `y` (libotr's `otrl_sm_step2b`).
fn step2b(req: Requested, y: &Exponent, rng: &mut (impl CryptoRng + ?Sized)) -> Result<(Tlv, Expect3), Bad> {
    let g2b = Element::generator_pow(&req.b2);
    let (c2, d2) = prove_log(3, &req.b2, rng);
    let g3b = Element::generator_pow(&req.b3);
    let (c3, d3) = prove_log(4, &req.b3, rng);
    let r4 = Exponent::random(EXPONENT_BITS, rng);
    let pb = req.g3.pow_elem(&r4)?;
    let qb = Element::generator_pow(&r4).mul(&req.g2.pow_elem(y)?)?;
    let (cp, d5, d6) = prove_coords(5, &req.g2, &req.g3, &r4, y, rng)?;
    let body = serialize(&[
        &g2b.to_bytes(),
        &c2,
        &d2.to_be_bytes(),
        &g3b.to_bytes(),
        &c3,
        &d3.to_be_bytes(),
        &pb.to_bytes(),
        &qb.to_bytes(),
        &cp,
        &d5.to_be_bytes(),
        &d6.to_be_bytes(),
    ]);
    let Requested { g3a, g2, g3, b3, .. } = req;
    Ok((Tlv::new(kind::SMP2, body), Expect3 { g3a, g2, g3, b3, pb, qb }))
}

/// Initiator: verify SMP2, build SMP3 (libotr's `otrl_sm_step3`).
fn step3(body: &[u8], st: &Expect2, rng: &mut (impl CryptoRng + ?Sized)) -> Result<(Tlv, Expect4), Bad> {
    let [g2b, c2, d2, g3b, c3, d3, pb, qb, cp, d5, d6] = parse::<11>(body)?;
    let (g2b, c2, d2) = (element(g2b)?, challenge(c2)?, response(d2)?);
    let (g3b, c3, d3) = (element(g3b)?, challenge(c3)?, response(d3)?);
    let (pb, qb) = (element(pb)?, element(qb)?);
    let (cp, d5, d6) = (challenge(cp)?, response(d5)?, response(d6)?);
    check_log(3, &c2, &d2, &g2b)?;
    check_log(4, &c3, &d3, &g3b)?;
    let g2 = g2b.pow_elem(&st.a2)?;
    let g3 = g3b.pow_elem(&st.a3)?;
    check_coords(5, &cp, &d5, &d6, &pb, &qb, &g2, &g3)?;

    let r4 = Exponent::random(EXPONENT_BITS, rng);
    let pa = g3.pow_elem(&r4)?;
    let qa = Element::generator_pow(&r4).mul(&g2.pow_elem(&st.x)?)?;
    let (cp, d5, d6) = prove_coords(6, &g2, &g3, &r4, &st.x, rng)?;
    let pab = pa.mul(&pb.invert()?)?;
    let qab = qa.mul(&qb.invert()?)?;
    let ra = qab.pow_elem(&st.a3)?;
    let (cr, d7) = prove_logs(7, &qab, &st.a3, rng)?;
    let body = serialize(&[
        &pa.to_bytes(),
        &qa.to_bytes(),
        &cp,
        &d5.to_be_bytes(),
        &d6.to_be_bytes(),
        &ra.to_bytes(),
        &cr,
        &d7.to_be_bytes(),
    ]);
    Ok((Tlv::new(kind::SMP3, body), Expect4 { g3b, pab, qab, a3: st.a3.clone() }))
}

/// Responder: verify SMP3, build SMP4 and learn the outcome (libotr's `otrl_sm_step4`).
fn step4(body: &[u8], st: &Expect3, rng: &mut (impl CryptoRng + ?Sized)) -> Result<(Tlv, bool), Bad> {
    let [pa, qa, cp, d5, d6, ra, cr, d7] = parse::<8>(body)?;
    let (pa, qa, ra) = (element(pa)?, element(qa)?, element(ra)?);
    let (cp, d5, d6) = (challenge(cp)?, response(d5)?, response(d6)?);
    let (cr, d7) = (challenge(cr)?, response(d7)?);
    check_coords(6, &cp, &d5, &d6, &pa, &qa, &st.g2, &st.g3)?;
    let pab = pa.mul(&st.pb.invert()?)?;
    let qab = qa.mul(&st.qb.invert()?)?;
    check_logs(7, &cr, &d7, &ra, &st.g3a, &qab)?;

    let rb = qab.pow_elem(&st.b3)?;
    let (cr, d7) = prove_logs(8, &qab, &st.b3, rng)?;
    let body = serialize(&[&rb.to_bytes(), &cr, &d7.to_be_bytes()]);
    let rab = ra.pow_elem(&st.b3)?;
    Ok((Tlv::new(kind::SMP4, body), rab == pab))
}

/// Initiator: verify SMP4 and learn the outcome (libotr's `otrl_sm_step5`).
fn step5(body: &[u8], st: &Expect4) -> Result<bool, Bad> {
    let [rb, cr, d7] = parse::<3>(body)?;
    let (rb, cr, d7) = (element(rb)?, challenge(cr)?, response(d7)?);
    check_logs(8, &cr, &d7, &rb, &st.g3b, &st.qab)?;
    let rab = rb.pow_elem(&st.a3)?;
    Ok(rab == st.pab)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crypto::group::modulus;
    use crypto_bigint::BoxedUint;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::sync::OnceLock;
    use std::time::Instant;

    const ALICE_FP: Fingerprint = Fingerprint([0xa1; 20]);
    const BOB_FP: Fingerprint = Fingerprint([0xb0; 20]);
    const SSID: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    /// The TLVs and states of one complete honest run (Alice initiates).
    #[derive(Clone)]
    struct Run {
        smp1: Tlv,
        smp2: Tlv,
        smp3: Tlv,
        smp4: Tlv,
        /// Alice after sending SMP1 (expects SMP2).
        alice_e2: Smp,
        /// Alice after sending SMP3 (expects SMP4).
        alice_e4: Smp,
        /// Bob after receiving SMP1 (request pending).
        bob_req: Smp,
        /// Bob after sending SMP2 (expects SMP3).
        bob_e3: Smp,
        bob_event: Option<SmpEvent>,
        alice_event: Option<SmpEvent>,
    }

    fn run(alice_secret: &[u8], bob_secret: &[u8], question: Option<&str>, seed: u64) -> Run {
        let mut r = rng(seed);
        let mut alice = Smp::new();
        let mut bob = Smp::new();
        let smp1 = alice.start(&ALICE_FP, &BOB_FP, &SSID, alice_secret, question, &mut r);
        let alice_e2 = alice.clone();
        let (reply, ev) = bob.handle(&smp1, &mut r);
        assert_eq!(reply, None);
        assert_eq!(ev, Some(SmpEvent::Request { question: question.map(str::to_owned) }));
        assert!(bob.has_pending_request());
        let bob_req = bob.clone();
        let smp2 = bob.respond(&ALICE_FP, &BOB_FP, &SSID, bob_secret, &mut r).expect("request pending");
        let bob_e3 = bob.clone();
        let (smp3, ev) = alice.handle(&smp2, &mut r);
        assert_eq!(ev, None);
        let smp3 = smp3.expect("SMP3");
        assert_eq!(smp3.kind, kind::SMP3);
        let alice_e4 = alice.clone();
        let (smp4, bob_event) = bob.handle(&smp3, &mut r);
        let smp4 = smp4.expect("SMP4");
        assert_eq!(smp4.kind, kind::SMP4);
        let (reply, alice_event) = alice.handle(&smp4, &mut r);
        assert_eq!(reply, None);
        assert!(!alice.is_in_progress() && !bob.is_in_progress());
        Run { smp1, smp2, smp3, smp4, alice_e2, alice_e4, bob_req, bob_e3, bob_event, alice_event }
    }

    /// One honest run with equal secrets, shared by the tests that tamper with it.
    fn honest() -> &'static Run {
        static RUN: OnceLock<Run> = OnceLock::new();
        RUN.get_or_init(|| run(b"shared secret", b"shared secret", None, 7))
    }

    fn mpis(body: &[u8]) -> Vec<Vec<u8>> {
        let mut r = Reader::new(body);
        let n = r.u32().unwrap();
        let v = (0..n).map(|_| r.mpi(1000).unwrap().to_vec()).collect();
        r.finish().unwrap();
        v
    }

    fn with_mpi(tlv: &Tlv, index: usize, value: &[u8]) -> Tlv {
        let mut v = mpis(&tlv.value);
        v[index] = value.to_vec();
        let refs: Vec<&[u8]> = v.iter().map(Vec::as_slice).collect();
        Tlv::new(tlv.kind, serialize(&refs))
    }

    fn assert_cheated(state: &Smp, tlv: &Tlv, what: &str) {
        let mut s = state.clone();
        let (reply, ev) = s.handle(tlv, &mut rng(99));
        assert_eq!(ev, Some(SmpEvent::Cheated), "{what}");
        assert_eq!(reply, Some(abort_tlv()), "{what}");
        assert!(!s.is_in_progress(), "{what}");
    }

    #[test]
    fn same_secret_succeeds_on_both_sides() {
        let start = Instant::now();
        let run = run(b"the same", b"the same", None, 1);
        eprintln!("full SMP run: {:?}", start.elapsed());
        assert_eq!(run.bob_event, Some(SmpEvent::Success));
        assert_eq!(run.alice_event, Some(SmpEvent::Success));
        assert_eq!(run.smp1.kind, kind::SMP1);
        assert_eq!(run.smp2.kind, kind::SMP2);
        assert_eq!(mpis(&run.smp1.value).len(), 6);
        assert_eq!(mpis(&run.smp2.value).len(), 11);
        assert_eq!(mpis(&run.smp3.value).len(), 8);
        assert_eq!(mpis(&run.smp4.value).len(), 3);
    }

    #[test]
    fn different_secrets_fail_on_both_sides() {
        let run = run(b"apples", b"oranges", None, 2);
        assert_eq!(run.bob_event, Some(SmpEvent::Failure));
        assert_eq!(run.alice_event, Some(SmpEvent::Failure));
    }

    #[test]
    fn secret_is_bound_to_fingerprints_and_ssid() {
        // Same user secret, but Bob believes a different session id: a MitM would see this.
        let mut r = rng(3);
        let (mut alice, mut bob) = (Smp::new(), Smp::new());
        let smp1 = alice.start(&ALICE_FP, &BOB_FP, &SSID, b"pw", None, &mut r);
        bob.handle(&smp1, &mut r);
        let smp2 = bob.respond(&ALICE_FP, &BOB_FP, &[9; 8], b"pw", &mut r).unwrap();
        let (smp3, _) = alice.handle(&smp2, &mut r);
        let (smp4, ev) = bob.handle(&smp3.unwrap(), &mut r);
        assert_eq!(ev, Some(SmpEvent::Failure));
        assert_eq!(alice.handle(&smp4.unwrap(), &mut r).1, Some(SmpEvent::Failure));
    }

    #[test]
    fn question_reaches_the_responder() {
        let run = run(b"blue", b"blue", Some("Favourite colour? ✓"), 4);
        assert_eq!(run.smp1.kind, kind::SMP1Q);
        assert!(run.smp1.value.starts_with("Favourite colour? ✓\0".as_bytes()));
        assert_eq!(run.alice_event, Some(SmpEvent::Success));
        assert_eq!(run.bob_event, Some(SmpEvent::Success));
    }

    #[test]
    fn question_is_cut_at_nul_and_to_fit() {
        let mut s = Smp::new();
        let t = s.start(&ALICE_FP, &BOB_FP, &SSID, b"x", Some("a\0b"), &mut rng(5));
        assert!(t.value.starts_with(b"a\0\0\0\0\x06"));
        let long = "é".repeat(40_000);
        let t = s.start(&ALICE_FP, &BOB_FP, &SSID, b"x", Some(&long), &mut rng(5));
        assert!(t.value.len() <= usize::from(u16::MAX));
        let mut bob = Smp::new();
        let (_, ev) = bob.handle(&t, &mut rng(6));
        let Some(SmpEvent::Request { question: Some(q) }) = ev else { panic!("{ev:?}") };
        assert!(q.len() <= MAX_QUESTION_LEN && q.len() > MAX_QUESTION_LEN - 2);
        assert!(q.chars().all(|c| c == 'é'));
    }

    #[test]
    fn empty_question_and_missing_nul() {
        let mut r = rng(8);
        let mut a = Smp::new();
        let t = a.start(&ALICE_FP, &BOB_FP, &SSID, b"x", Some(""), &mut r);
        let (_, ev) = Smp::new().handle(&t, &mut r);
        assert_eq!(ev, Some(SmpEvent::Request { question: Some(String::new()) }));
        // SMP1Q without a NUL, or empty: malformed.
        assert_cheated(&Smp::new(), &Tlv::new(kind::SMP1Q, b"no nul".to_vec()), "no NUL");
        assert_cheated(&Smp::new(), &Tlv::new(kind::SMP1Q, vec![]), "empty SMP1Q");
        // SMP1 body sent as SMP1Q with the NUL as its last byte.
        let mut v = honest().smp1.value.clone();
        v.push(0);
        assert_cheated(&Smp::new(), &Tlv::new(kind::SMP1Q, v), "NUL last");
    }

    #[test]
    fn abort_midway_then_a_second_run_succeeds() {
        let mut r = rng(10);
        let (mut alice, mut bob) = (Smp::new(), Smp::new());
        let smp1 = alice.start(&ALICE_FP, &BOB_FP, &SSID, b"s", None, &mut r);
        bob.handle(&smp1, &mut r);
        let smp2 = bob.respond(&ALICE_FP, &BOB_FP, &SSID, b"s", &mut r).unwrap();
        // Alice aborts instead of answering SMP2.
        let abort = alice.abort();
        assert_eq!(abort, Tlv::new(kind::SMP_ABORT, vec![]));
        assert!(!alice.is_in_progress());
        assert_eq!(bob.handle(&abort, &mut r), (None, Some(SmpEvent::Aborted)));
        assert!(!bob.is_in_progress());
        // A late SMP2 is now unexpected: Alice answers with an abort.
        assert_eq!(alice.handle(&smp2, &mut r), (Some(abort_tlv()), Some(SmpEvent::Aborted)));
        // Responding after the abort is refused.
        assert_eq!(bob.respond(&ALICE_FP, &BOB_FP, &SSID, b"s", &mut r), Err(SmpError::NoRequest));
        // A second run, this time Bob initiating, succeeds.
        let smp1 = bob.start(&BOB_FP, &ALICE_FP, &SSID, b"s", None, &mut r);
        alice.handle(&smp1, &mut r);
        let smp2 = alice.respond(&BOB_FP, &ALICE_FP, &SSID, b"s", &mut r).unwrap();
        let (smp3, _) = bob.handle(&smp2, &mut r);
        let (smp4, ev) = alice.handle(&smp3.unwrap(), &mut r);
        assert_eq!(ev, Some(SmpEvent::Success));
        assert_eq!(bob.handle(&smp4.unwrap(), &mut r), (None, Some(SmpEvent::Success)));
    }

    #[test]
    fn out_of_order_messages_abort_and_reset() {
        let run = honest();
        let mut r = rng(11);
        // SMP3 when idle.
        let mut s = Smp::new();
        assert_eq!(s.handle(&run.smp3, &mut r), (Some(abort_tlv()), Some(SmpEvent::Aborted)));
        assert!(!s.is_in_progress());
        // SMP2, SMP3 or SMP4 while a request is pending, SMP1 while expecting SMP2, ...
        let cases = [
            (&run.bob_req, &run.smp2),
            (&run.bob_req, &run.smp4),
            (&run.alice_e2, &run.smp1),
            (&run.alice_e2, &run.smp3),
            (&run.bob_e3, &run.smp1),
            (&run.bob_e3, &run.smp2),
            (&run.bob_e3, &run.smp4),
            (&run.alice_e4, &run.smp2),
            (&run.alice_e4, &run.smp3),
        ];
        for (state, tlv) in cases {
            let mut s = state.clone();
            assert_eq!(
                s.handle(tlv, &mut r),
                (Some(abort_tlv()), Some(SmpEvent::Aborted)),
                "{state:?} given type {}",
                tlv.kind
            );
            assert!(!s.is_in_progress());
        }
        // A replayed SMP1 while a request is pending replaces the request (libotr: still
        // EXPECT1), and a received abort while idle is reported.
        let mut s = run.bob_req.clone();
        assert_eq!(s.handle(&run.smp1, &mut r).1, Some(SmpEvent::Request { question: None }));
        assert_eq!(Smp::new().handle(&abort_tlv(), &mut r), (None, Some(SmpEvent::Aborted)));
        // Non-SMP TLVs are ignored and leave the state alone.
        let mut s = run.alice_e2.clone();
        assert_eq!(s.handle(&Tlv::new(kind::PADDING, vec![0; 3]), &mut r), (None, None));
        assert_eq!(s.handle(&Tlv::new(kind::DISCONNECTED, vec![]), &mut r), (None, None));
        assert!(s.is_in_progress() && !s.has_pending_request());
    }

    #[test]
    fn respond_needs_a_request() {
        let run = honest();
        for state in [&Smp::new(), &run.alice_e2, &run.bob_e3, &run.alice_e4] {
            let mut s = state.clone();
            let before = format!("{s:?}");
            assert_eq!(s.respond(&ALICE_FP, &BOB_FP, &SSID, b"x", &mut rng(12)), Err(SmpError::NoRequest));
            assert_eq!(format!("{s:?}"), before);
        }
    }

    #[test]
    fn start_restarts_an_exchange_in_progress() {
        let run = honest();
        let mut r = rng(13);
        let mut alice = run.alice_e4.clone();
        let smp1 = alice.start(&ALICE_FP, &BOB_FP, &SSID, b"again", None, &mut r);
        let mut bob = Smp::new();
        bob.handle(&smp1, &mut r);
        let smp2 = bob.respond(&ALICE_FP, &BOB_FP, &SSID, b"again", &mut r).unwrap();
        let (smp3, _) = alice.handle(&smp2, &mut r);
        let (smp4, ev) = bob.handle(&smp3.unwrap(), &mut r);
        assert_eq!(ev, Some(SmpEvent::Success));
        assert_eq!(alice.handle(&smp4.unwrap(), &mut r).1, Some(SmpEvent::Success));
    }

    fn out_of_range_values() -> Vec<(String, Vec<u8>)> {
        let one = BoxedUint::one_with_precision(MODULUS_BITS);
        let p: &BoxedUint = modulus();
        let bytes = |v: BoxedUint| v.to_be_bytes().to_vec();
        vec![
            ("0".into(), vec![]),
            ("1".into(), vec![1]),
            ("p-1".into(), bytes(p.wrapping_sub(&one))),
            ("p".into(), bytes(p.clone())),
            ("p+1".into(), bytes(p.wrapping_add(&one))),
            ("2^1536-1".into(), vec![0xff; 192]),
            ("193 bytes".into(), [&[1][..], &[0; 192]].concat()),
        ]
    }

    #[test]
    fn out_of_range_elements_are_cheating() {
        let run = honest();
        let sites = [
            (&Smp::new(), &run.smp1, &[0usize, 3][..]),
            (&run.alice_e2, &run.smp2, &[0, 3, 6, 7][..]),
            (&run.bob_e3, &run.smp3, &[0, 1, 5][..]),
            (&run.alice_e4, &run.smp4, &[0][..]),
        ];
        for (state, tlv, indexes) in sites {
            for &i in indexes {
                for (name, v) in out_of_range_values() {
                    let what = format!("type {} element {i} = {name}", tlv.kind);
                    assert_cheated(state, &with_mpi(tlv, i, &v), &what);
                }
            }
        }
    }

    #[test]
    fn out_of_range_responses_are_cheating() {
        let run = honest();
        let q = crate::crypto::group::order().to_be_bytes().to_vec();
        let sites = [
            (&Smp::new(), &run.smp1, &[2usize, 5][..]),
            (&run.alice_e2, &run.smp2, &[2, 5, 9, 10][..]),
            (&run.bob_e3, &run.smp3, &[3, 4, 7][..]),
            (&run.alice_e4, &run.smp4, &[2][..]),
        ];
        for (state, tlv, indexes) in sites {
            for &i in indexes {
                for v in [vec![], q.clone(), vec![0xff; 192]] {
                    assert_cheated(state, &with_mpi(tlv, i, &v), &format!("D {i} {v:x?}"));
                }
            }
        }
    }

    #[test]
    fn forged_proofs_are_cheating() {
        let run = honest();
        // (state, message, indexes of the c and D values)
        let sites = [
            (&Smp::new(), &run.smp1, &[1usize, 2, 4, 5][..]),
            (&run.alice_e2, &run.smp2, &[1, 2, 4, 5, 8, 9, 10][..]),
            (&run.bob_e3, &run.smp3, &[2, 3, 4, 6, 7][..]),
            (&run.alice_e4, &run.smp4, &[1, 2][..]),
        ];
        for (state, tlv, indexes) in sites {
            for &i in indexes {
                let mut v = mpis(&tlv.value)[i].clone();
                *v.last_mut().unwrap() ^= 0x01;
                assert_cheated(state, &with_mpi(tlv, i, &v), &format!("type {} flip {i}", tlv.kind));
            }
        }
        // Valid elements that were not the ones proven (swap two elements of SMP2/SMP3).
        let v = mpis(&run.smp2.value);
        assert_cheated(&run.alice_e2, &with_mpi(&run.smp2, 6, &v[7]), "Pb := Qb");
        let v = mpis(&run.smp3.value);
        assert_cheated(&run.bob_e3, &with_mpi(&run.smp3, 5, &v[0]), "Ra := Pa");
        // A message replayed into the other direction's proof (version bytes differ).
        let v1 = mpis(&run.smp1.value);
        let mut v2 = mpis(&run.smp2.value);
        v2[..6].clone_from_slice(&v1);
        let refs: Vec<&[u8]> = v2.iter().map(Vec::as_slice).collect();
        assert_cheated(&run.alice_e2, &Tlv::new(kind::SMP2, serialize(&refs)), "SMP1 proofs in SMP2");
    }

    #[test]
    fn stored_states_replay_the_honest_run() {
        // Honest messages still succeed from the stored states (sanity check of the fixture).
        let run = honest();
        let mut r = rng(14);
        assert_eq!(run.alice_event, Some(SmpEvent::Success));
        assert_eq!(run.bob_e3.clone().handle(&run.smp3, &mut r).1, Some(SmpEvent::Success));
        assert_eq!(run.alice_e4.clone().handle(&run.smp4, &mut r).1, Some(SmpEvent::Success));
    }

    #[test]
    fn leading_zeros_are_accepted_as_libotr_does() {
        // libotr reads MPIs as integers; a zero-padded (but otherwise honest) value verifies.
        let run = honest();
        let v = mpis(&run.smp4.value);
        let mut w = Writer::new();
        w.u32(3);
        for x in &v {
            w.data(&[&[0u8, 0][..], x].concat());
        }
        let padded = Tlv::new(kind::SMP4, w.into_vec());
        assert_eq!(run.alice_e4.clone().handle(&padded, &mut rng(15)).1, Some(SmpEvent::Success));
    }

    #[test]
    fn malformed_bodies_are_cheating_without_panic() {
        let run = honest();
        let sites = [
            (&Smp::new(), &run.smp1),
            (&run.alice_e2, &run.smp2),
            (&run.bob_e3, &run.smp3),
            (&run.alice_e4, &run.smp4),
        ];
        for (state, tlv) in sites {
            // Every truncation.
            for n in 0..tlv.value.len() {
                let t = Tlv::new(tlv.kind, tlv.value[..n].to_vec());
                assert_cheated(state, &t, &format!("type {} cut at {n}", tlv.kind));
            }
            // Trailing bytes.
            let t = Tlv::new(tlv.kind, [&tlv.value[..], &[0]].concat());
            assert_cheated(state, &t, "trailing byte");
            // Wrong and huge MPI counts.
            let n = u32::try_from(mpis(&tlv.value).len()).unwrap();
            for count in [0, n - 1, n + 1, 0x7fff_ffff, u32::MAX] {
                let mut v = tlv.value.clone();
                v[..4].copy_from_slice(&count.to_be_bytes());
                assert_cheated(state, &Tlv::new(tlv.kind, v), &format!("count {count}"));
            }
            // A huge MPI length.
            let mut v = tlv.value.clone();
            v[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
            assert_cheated(state, &Tlv::new(tlv.kind, v), "huge MPI length");
            // Too-long challenge (33 bytes) in place of a hash.
            let c_index = if tlv.kind == kind::SMP3 { 2 } else { 1 };
            assert_cheated(state, &with_mpi(tlv, c_index, &[1; 33]), "33-byte c");
        }
    }

    /// States to fuzz: idle, request pending, expecting SMP2, SMP3, SMP4.
    fn fuzz_states() -> [&'static Smp; 5] {
        static IDLE: Smp = Smp { state: State::Idle };
        let run = honest();
        [&IDLE, &run.bob_req, &run.alice_e2, &run.bob_e3, &run.alice_e4]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random bytes as any SMP TLV in any state: no panic, never an outcome.
        #[test]
        fn random_tlvs_never_panic_or_succeed(
            state in 0usize..5,
            k in 2u16..=7,
            value in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut s = fuzz_states()[state].clone();
            let (reply, ev) = s.handle(&Tlv::new(k, value), &mut rng(16));
            prop_assert!(!matches!(ev, Some(SmpEvent::Success | SmpEvent::Failure)));
            if k != kind::SMP_ABORT {
                prop_assert_eq!(reply, Some(abort_tlv()));
            }
            prop_assert!(!s.is_in_progress());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Well-formed bodies (right MPI count) of random values, so that the range checks
        /// and proof verification run on garbage: never an outcome, never a panic.
        #[test]
        fn random_values_never_panic_or_succeed(
            state in 0usize..5,
            k in 2u16..=5,
            values in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..=193), 11),
            valid_elements in any::<bool>(),
        ) {
            let (n, challenges): (usize, &[usize]) =
                [(6, &[1, 4][..]), (11, &[1, 4, 8]), (8, &[2, 6]), (3, &[1])][usize::from(k - 2)];
            let mut values = values[..n].to_vec();
            if valid_elements {
                // Keep every value in range so that the proofs are actually computed.
                for (i, v) in values.iter_mut().enumerate() {
                    v.truncate(if challenges.contains(&i) { 31 } else { 191 });
                    v.insert(0, 1);
                }
            }
            let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let mut s = fuzz_states()[state].clone();
            let (reply, ev) = s.handle(&Tlv::new(k, serialize(&refs)), &mut rng(17));
            prop_assert!(!matches!(ev, Some(SmpEvent::Success | SmpEvent::Failure)));
            prop_assert_eq!(reply, Some(abort_tlv()));
            prop_assert!(!s.is_in_progress());
        }
    }
}
