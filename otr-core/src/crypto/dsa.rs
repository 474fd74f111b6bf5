//! Long-term identities: DSA-1024/160 key pairs (what OTR v3 and libotr use), their OTR
//! serialization (PUBKEY type 0x0000) and fingerprints.
//!
//! Key generation uses the `dsa` crate. Signing and verification are ours, on crypto-bigint,
//! because OTR signs the whole 256-bit MAC as an integer mod q (libgcrypt's behaviour for a
//! raw MPI), where FIPS 186 implementations take the leftmost 160 bits; doing it ourselves
//! also lets the exponentiations run with 160-bit exponent bounds.

use core::fmt;

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, NonZero, Odd, Resize};
use dsa::{Components, SigningKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::CryptoError;
use crate::wire::{Reader, WireError, Writer};

/// The PUBKEY type field of a DSA key.
const PUBKEY_TYPE_DSA: u16 = 0x0000;
/// Bits of p and q of a DSA-1024/160 key.
const P_BITS: u32 = 1024;
const Q_BITS: u32 = 160;
/// Length of an OTR DSA signature (r and s, 20 bytes each).
pub const SIGNATURE_LEN: usize = 40;

/// The SHA-1 fingerprint of a long-term public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 20]);

impl Fingerprint {
    /// The fingerprint as people compare it: five groups of eight upper-case hex digits.
    pub fn to_human(&self) -> String {
        let hex = format!("{self}").to_uppercase();
        hex.as_bytes()
            .chunks(8)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// 40 lower-case hex digits.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A peer's (or our own) long-term DSA public key, validated and ready to verify with.
#[derive(Clone)]
pub struct DsaPublicKey {
    q: NonZero<BoxedUint>,
    g: BoxedMontyForm,
    y: BoxedMontyForm,
    encoded: Vec<u8>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for DsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsaPublicKey").field("fingerprint", &self.fingerprint).finish()
    }
}

impl PartialEq for DsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for DsaPublicKey {}

fn uint(bytes: &[u8], bits: u32) -> Result<BoxedUint, CryptoError> {
    BoxedUint::from_be_slice(bytes, bits).map_err(|_| CryptoError::BadPublicKey)
}

/// z: the signed value as libotr (libgcrypt) uses it: the whole byte string as an integer,
/// reduced mod q. (Not the leftmost 160 bits FIPS 186 would take: libotr hands libgcrypt a
/// raw MPI, which it does not truncate.)
fn reduce_hash(hash: &[u8], q: &NonZero<BoxedUint>) -> BoxedUint {
    BoxedUint::from_be_slice_vartime(hash).rem_vartime(q).resize_unchecked(q.bits_precision())
}

impl DsaPublicKey {
    /// Reads a PUBKEY (type, then MPIs p, q, g, y) and validates it as a DSA-1024/160 key.
    ///
    /// # Errors
    /// A [`WireError`] when the bytes are malformed or the numbers are not a valid key.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let start = r.position();
        if r.u16()? != PUBKEY_TYPE_DSA {
            return Err(WireError::Invalid("public key type is not DSA"));
        }
        let p = r.mpi(128)?;
        let q = r.mpi(20)?;
        let g = r.mpi(128)?;
        let y = r.mpi(128)?;
        let encoded = r.consumed()[start..].to_vec();
        Self::from_parts(p, q, g, y, encoded).map_err(|_| WireError::Invalid("not a valid DSA-1024 key"))
    }

    /// Checks the numbers: p odd, q 160 bits, 1 < g, y < p, and g and y of order q.
    fn from_parts(p: &[u8], q: &[u8], g: &[u8], y: &[u8], encoded: Vec<u8>) -> Result<Self, CryptoError> {
        let p = Odd::new(uint(p, P_BITS)?).into_option().ok_or(CryptoError::BadPublicKey)?;
        let q = NonZero::new(uint(q, Q_BITS)?).into_option().ok_or(CryptoError::BadPublicKey)?;
        if p.bit_width_vartime() < 512 || q.bit_width_vartime() != Q_BITS {
            return Err(CryptoError::BadPublicKey);
        }
        let (g, y) = (uint(g, P_BITS)?, uint(y, P_BITS)?);
        let one = BoxedUint::one_with_precision(P_BITS);
        for v in [&g, &y] {
            if *v <= one || *v >= *p {
                return Err(CryptoError::BadPublicKey);
            }
        }
        let params = BoxedMontyParams::new_vartime(p);
        let g = BoxedMontyForm::new(g, &params);
        let y = BoxedMontyForm::new(y, &params);
        let q_wide = q.as_ref().clone().resize_unchecked(P_BITS);
        for v in [&g, &y] {
            if v.pow_bounded_exp(&q_wide, Q_BITS).retrieve() != one {
                return Err(CryptoError::BadPublicKey);
            }
        }
        let fingerprint = Fingerprint(super::sha1(&[&encoded[2..]]));
        Ok(Self { q, g, y, encoded, fingerprint })
    }

    /// The OTR PUBKEY serialization, type field included.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-1 over the serialization without its 2-byte type.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Verifies an OTR signature (r ‖ s, 20 bytes each) over `hash` (taken as an integer
    /// mod q, as libotr does).
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] when it does not verify.
    pub fn verify(&self, hash: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), CryptoError> {
        let q = &self.q;
        let r = uint(&sig[..20], Q_BITS).map_err(|_| CryptoError::BadSignature)?;
        let s = uint(&sig[20..], Q_BITS).map_err(|_| CryptoError::BadSignature)?;
        if bool::from(r.is_zero()) || bool::from(s.is_zero()) || r >= **q || s >= **q {
            return Err(CryptoError::BadSignature);
        }
        let w = Option::<BoxedUint>::from(s.invert_mod(q)).ok_or(CryptoError::BadSignature)?;
        let u1 = reduce_hash(hash, q).mul_mod(&w, q);
        let u2 = r.mul_mod(&w, q);
        let v = self
            .g
            .pow_bounded_exp(&u1, Q_BITS)
            .mul(&self.y.pow_bounded_exp(&u2, Q_BITS))
            .retrieve()
            .rem_vartime(q)
            .resize_unchecked(q.bits_precision());
        if v == r { Ok(()) } else { Err(CryptoError::BadSignature) }
    }
}

/// The numbers that make up a DSA key pair, big-endian; `x` is secret and zeroized on drop.
#[derive(Clone)]
pub struct DsaComponents {
    /// The prime modulus.
    pub p: Vec<u8>,
    /// The subgroup order.
    pub q: Vec<u8>,
    /// The generator.
    pub g: Vec<u8>,
    /// The public value g^x.
    pub y: Vec<u8>,
    /// The private exponent.
    pub x: Zeroizing<Vec<u8>>,
}

/// Our long-term DSA key pair. The private exponent zeroizes on drop.
#[derive(Clone)]
pub struct DsaKeyPair {
    x: Zeroizing<BoxedUint>,
    public: DsaPublicKey,
    components: DsaComponents,
}

impl fmt::Debug for DsaKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsaKeyPair").field("fingerprint", &self.public.fingerprint).finish_non_exhaustive()
    }
}

fn encode_public(c: &DsaComponents) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(PUBKEY_TYPE_DSA).mpi(&c.p).mpi(&c.q).mpi(&c.g).mpi(&c.y);
    w.into_vec()
}

impl DsaKeyPair {
    /// Generates a fresh 1024-bit DSA key pair (new domain parameters, as libotr does).
    /// This takes a noticeable moment: prime generation.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        // OTR v3 is defined over DSA-1024/160, which the crate marks deprecated for new
        // designs; interop requires exactly this size.
        #[allow(deprecated)]
        let size = dsa::KeySize::DSA_1024_160;
        let Ok(components) = Components::try_generate_from_rng_with_key_size(rng, size);
        let Ok(signing) = SigningKey::try_generate_from_rng_with_components(rng, components);
        let vk = signing.verifying_key();
        let c = vk.components();
        let min = |v: &BoxedUint| super::group::minimal_be(v);
        let parts = DsaComponents {
            p: min(c.p()),
            q: min(c.q()),
            g: min(c.g()),
            y: min(vk.y()),
            x: Zeroizing::new(min(signing.x())),
        };
        Self::from_components(&parts).expect("freshly generated keys are valid")
    }

    /// Rebuilds a key pair from its numbers (e.g. imported from libotr's key file).
    ///
    /// # Errors
    /// [`CryptoError::BadPublicKey`] when the numbers are not a consistent DSA-1024/160 key.
    pub fn from_components(c: &DsaComponents) -> Result<Self, CryptoError> {
        let encoded = encode_public(c);
        let public = DsaPublicKey::from_parts(&c.p, &c.q, &c.g, &c.y, encoded.clone())?;
        let x = Zeroizing::new(uint(&c.x, Q_BITS)?);
        if bool::from(x.is_zero()) || *x >= *public.q {
            return Err(CryptoError::BadPublicKey);
        }
        // y must really be g^x: otherwise we would sign with a key nobody can verify.
        if public.g.pow_bounded_exp(&x, Q_BITS).retrieve() != public.y.retrieve() {
            return Err(CryptoError::BadPublicKey);
        }
        // Leading zeros stripped from the bytes themselves: no big-integer copy of x to wipe.
        let min = |v: &[u8]| v[v.iter().position(|&b| b != 0).unwrap_or(v.len())..].to_vec();
        let components = DsaComponents {
            p: min(&c.p),
            q: min(&c.q),
            g: min(&c.g),
            y: min(&c.y),
            x: Zeroizing::new(min(&c.x)),
        };
        Ok(Self { x, public, components })
    }

    /// The numbers of this key pair, for storage.
    pub fn components(&self) -> DsaComponents {
        self.components.clone()
    }

    /// Our public key.
    pub fn public(&self) -> &DsaPublicKey {
        &self.public
    }

    /// Our fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// Signs `hash` (as an integer mod q, like libotr) with a fresh random nonce.
    ///
    /// # Errors
    /// [`CryptoError::SigningFailed`] if no usable nonce turns up in many tries (a broken RNG).
    pub fn sign(
        &self,
        hash: &[u8],
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Result<[u8; SIGNATURE_LEN], CryptoError> {
        let pk = &self.public;
        let q = &pk.q;
        let z = reduce_hash(hash, q);
        for _ in 0..64 {
            // k uniform in [1, q-1]: 64 extra bits make the bias of the reduction negligible.
            let mut buf = Zeroizing::new([0u8; 28]);
            rng.fill_bytes(&mut *buf);
            let wide = Zeroizing::new(BoxedUint::from_be_slice(&*buf, 224).expect("sized"));
            let k = Zeroizing::new(wide.rem(q).resize_unchecked(q.bits_precision()));
            if bool::from(k.is_zero()) {
                continue;
            }
            let r =
                pk.g.pow_bounded_exp(&k, Q_BITS)
                    .retrieve()
                    .rem_vartime(q)
                    .resize_unchecked(q.bits_precision());
            let Some(k_inv) = Option::<BoxedUint>::from(k.invert_mod(q)) else {
                continue;
            };
            let k_inv = Zeroizing::new(k_inv);
            // x·r and z + x·r give away x to anyone who knows r and z (both public): wiped.
            let xr = Zeroizing::new(self.x.mul_mod(&r, q));
            let z_xr = Zeroizing::new(z.add_mod(&xr, q));
            let s = k_inv.mul_mod(&z_xr, q);
            if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
                continue;
            }
            let mut out = [0u8; SIGNATURE_LEN];
            let (rb, sb) = (r.to_be_bytes(), s.to_be_bytes());
            // r, s < q < 2^160: their big-endian bytes fit in the last 20 bytes.
            out[..20].copy_from_slice(&rb[rb.len() - 20..]);
            out[20..].copy_from_slice(&sb[sb.len() - 20..]);
            return Ok(out);
        }
        Err(CryptoError::SigningFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn sign_verify_and_reparse() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let kp = DsaKeyPair::generate(&mut rng);
        let hash = [0x42u8; 32];
        let sig = kp.sign(&hash, &mut rng).unwrap();
        kp.public().verify(&hash, &sig).unwrap();
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(kp.public().verify(&hash, &bad).is_err());
        let mut r = Reader::new(kp.public().encoded());
        let parsed = DsaPublicKey::read(&mut r).unwrap();
        assert_eq!(parsed.fingerprint(), kp.fingerprint());
        let again = DsaKeyPair::from_components(&kp.components()).unwrap();
        assert_eq!(again.fingerprint(), kp.fingerprint());
        assert_eq!(kp.fingerprint().to_human().len(), 44);
    }
}
