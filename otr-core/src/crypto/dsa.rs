//! Long-term identities: DSA-1024/160 key pairs (what OTR v3 and libotr use), their OTR
//! serialization (PUBKEY type 0x0000) and fingerprints.

use core::fmt;

use crypto_bigint::BoxedUint;
use dsa::{Components, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
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

/// A peer's (or our own) long-term DSA public key.
#[derive(Clone)]
pub struct DsaPublicKey {
    key: VerifyingKey,
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

fn uint(bytes: &[u8], bits: u32) -> Result<BoxedUint, CryptoError> {
    BoxedUint::from_be_slice(bytes, bits).map_err(|_| CryptoError::BadPublicKey)
}

impl DsaPublicKey {
    /// Reads a PUBKEY (type, then MPIs p, q, g, y) and validates it as a DSA-1024/160 key.
    ///
    /// # Errors
    /// A [`WireError`] when the bytes are malformed, [`CryptoError::BadPublicKey`] (as
    /// `WireError::Invalid`) when the numbers are not a valid key.
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

    fn from_parts(p: &[u8], q: &[u8], g: &[u8], y: &[u8], encoded: Vec<u8>) -> Result<Self, CryptoError> {
        let components = Components::from_components(uint(p, P_BITS)?, uint(q, Q_BITS)?, uint(g, P_BITS)?)
            .map_err(|_| CryptoError::BadPublicKey)?;
        let key = VerifyingKey::from_components(components, uint(y, P_BITS)?).map_err(|_| CryptoError::BadPublicKey)?;
        let fingerprint = Fingerprint(super::sha1(&[&encoded[2..]]));
        Ok(Self { key, encoded, fingerprint })
    }

    fn from_key(key: VerifyingKey) -> Self {
        let c = key.components();
        let mut w = Writer::new();
        w.u16(PUBKEY_TYPE_DSA)
            .mpi(&c.p().to_be_bytes())
            .mpi(&c.q().to_be_bytes())
            .mpi(&c.g().to_be_bytes())
            .mpi(&key.y().to_be_bytes());
        let encoded = w.into_vec();
        let fingerprint = Fingerprint(super::sha1(&[&encoded[2..]]));
        Self { key, encoded, fingerprint }
    }

    /// The OTR PUBKEY serialization, type field included.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// SHA-1 over the serialization without its 2-byte type.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Verifies an OTR signature (r ‖ s, 20 bytes each) over `hash`, of which DSA uses the
    /// leftmost 160 bits as libotr does.
    ///
    /// # Errors
    /// [`CryptoError::BadSignature`] when it does not verify.
    pub fn verify(&self, hash: &[u8], sig: &[u8; SIGNATURE_LEN]) -> Result<(), CryptoError> {
        let r = uint(&sig[..20], Q_BITS).map_err(|_| CryptoError::BadSignature)?;
        let s = uint(&sig[20..], Q_BITS).map_err(|_| CryptoError::BadSignature)?;
        let sig = dsa::Signature::from_components(r, s).ok_or(CryptoError::BadSignature)?;
        self.key.verify_prehash(hash, &sig).map_err(|_| CryptoError::BadSignature)
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

/// Our long-term DSA key pair. The private part zeroizes on drop (inside `dsa::SigningKey`).
#[derive(Clone)]
pub struct DsaKeyPair {
    signing: SigningKey,
    public: DsaPublicKey,
}

impl fmt::Debug for DsaKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsaKeyPair").field("fingerprint", &self.public.fingerprint).finish_non_exhaustive()
    }
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
        let public = DsaPublicKey::from_key(signing.verifying_key().clone());
        Self { signing, public }
    }

    /// Rebuilds a key pair from its numbers (e.g. imported from libotr's key file).
    ///
    /// # Errors
    /// [`CryptoError::BadPublicKey`] when the numbers are not a consistent DSA-1024/160 key.
    pub fn from_components(c: &DsaComponents) -> Result<Self, CryptoError> {
        let components =
            Components::from_components(uint(&c.p, P_BITS)?, uint(&c.q, Q_BITS)?, uint(&c.g, P_BITS)?)
                .map_err(|_| CryptoError::BadPublicKey)?;
        let vk = VerifyingKey::from_components(components, uint(&c.y, P_BITS)?).map_err(|_| CryptoError::BadPublicKey)?;
        let signing = SigningKey::from_components(vk.clone(), uint(&c.x, Q_BITS)?).map_err(|_| CryptoError::BadPublicKey)?;
        // y must really be g^x: otherwise we would sign with a key nobody can verify.
        let c2 = vk.components();
        let y = crypto_bigint::modular::BoxedMontyForm::new(
            (**c2.g()).clone(),
            &crypto_bigint::modular::BoxedMontyParams::new_vartime(c2.p().clone()),
        )
        .pow(signing.x())
        .retrieve();
        if y != **vk.y() {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(Self { public: DsaPublicKey::from_key(vk), signing })
    }

    /// The numbers of this key pair, for storage.
    pub fn components(&self) -> DsaComponents {
        let vk = self.signing.verifying_key();
        let c = vk.components();
        let min = |v: &BoxedUint| super::group::minimal_be(v);
        DsaComponents {
            p: min(c.p()),
            q: min(c.q()),
            g: min(c.g()),
            y: min(vk.y()),
            x: Zeroizing::new(min(self.signing.x())),
        }
    }

    /// Our public key.
    pub fn public(&self) -> &DsaPublicKey {
        &self.public
    }

    /// Our fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.public.fingerprint
    }

    /// Signs `hash` (its leftmost 160 bits) with a fresh random nonce from `rng`.
    ///
    /// # Errors
    /// [`CryptoError::SigningFailed`] in the negligible case that the nonce is unusable.
    pub fn sign(&self, hash: &[u8], rng: &mut (impl CryptoRng + ?Sized)) -> Result<[u8; SIGNATURE_LEN], CryptoError> {
        let sig = self.signing.sign_prehash_with_rng(rng, hash).map_err(|_| CryptoError::SigningFailed)?;
        let mut out = [0u8; SIGNATURE_LEN];
        let r = sig.r().to_be_bytes();
        let s = sig.s().to_be_bytes();
        // r, s < q < 2^160, so their big-endian bytes fit in the last 20 bytes.
        out[..20].copy_from_slice(&r[r.len() - 20..]);
        out[20..].copy_from_slice(&s[s.len() - 20..]);
        Ok(out)
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
