//! Diffie-Hellman key pairs over the RFC 3526 group, with 320-bit secret exponents as libotr
//! uses, and the shared secret serialized the way every OTR key derivation consumes it.

use rand_core::CryptoRng;
use zeroize::Zeroizing;

use super::group::{Element, Exponent, MODULUS_BYTES};

/// Bits of a DH secret exponent (libotr: 40 random bytes).
pub const SECRET_BITS: u32 = 320;
/// Bytes of a DH secret exponent.
pub const SECRET_BYTES: usize = 40;

/// An ephemeral DH key pair; the secret half is zeroized on drop.
#[derive(Clone)]
pub struct DhKeyPair {
    secret: Exponent,
    public: Element,
    /// `public` as an MPI: every data message we send carries it, so it is encoded once.
    public_mpi: Vec<u8>,
}

impl core::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DhKeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

impl DhKeyPair {
    /// A fresh key pair from the caller's RNG.
    pub fn generate(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        let secret = Exponent::random(SECRET_BITS, rng);
        let public = Element::generator_pow(&secret);
        let public_mpi = public.to_mpi();
        Self { secret, public, public_mpi }
    }

    /// Our public value g^x.
    pub fn public(&self) -> &Element {
        &self.public
    }

    /// Our public value as an OTR MPI (length included).
    pub fn public_mpi(&self) -> &[u8] {
        &self.public_mpi
    }

    /// The private exponent, big-endian at its fixed width (40 bytes). Secret: for test
    /// vectors and debugging only.
    #[cfg(feature = "trace")]
    pub fn private_bytes(&self) -> Vec<u8> {
        self.secret_bytes().to_vec()
    }

    /// The private exponent, big-endian at its fixed width ([`SECRET_BYTES`]), for session
    /// snapshots; wiped on drop.
    pub(crate) fn secret_bytes(&self) -> Zeroizing<[u8; SECRET_BYTES]> {
        let wide = Zeroizing::new(self.secret.to_be_bytes());
        let mut out = Zeroizing::new([0u8; SECRET_BYTES]);
        // The exponent is SECRET_BITS wide: its bytes are exactly SECRET_BYTES long.
        let start = wide.len().saturating_sub(SECRET_BYTES);
        let tail = &wide[start..];
        out[SECRET_BYTES - tail.len()..].copy_from_slice(tail);
        out
    }

    /// The key pair of a private exponent saved by [`Self::secret_bytes`]; `None` for an
    /// all-zero exponent, which no generated key has.
    pub(crate) fn from_secret_bytes(bytes: &[u8; SECRET_BYTES]) -> Option<Self> {
        if bytes.iter().all(|&b| b == 0) {
            return None;
        }
        let secret = Exponent::from_be_bytes(bytes);
        let public = Element::generator_pow(&secret);
        let public_mpi = public.to_mpi();
        Some(Self { secret, public, public_mpi })
    }

    /// The shared secret with `theirs`, as the OTR MPI encoding of g^xy. Every copy of g^xy
    /// made on the way (the integer, its bytes) is wiped, and the MPI is written into a buffer
    /// sized for it, so that no reallocation leaves a copy behind.
    pub fn shared_secret(&self, theirs: &Element) -> SharedSecret {
        let s = Zeroizing::new(theirs.pow(&self.secret));
        let bytes = Zeroizing::new(s.to_be_bytes());
        let mut w = crate::wire::Writer::with_capacity(4 + MODULUS_BYTES);
        w.mpi(&bytes);
        SharedSecret(Zeroizing::new(w.into_vec()))
    }
}

/// g^xy encoded as an MPI (length included), zeroized on drop.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    /// The MPI bytes that key derivations hash.
    pub fn mpi(&self) -> &[u8] {
        &self.0
    }
}
