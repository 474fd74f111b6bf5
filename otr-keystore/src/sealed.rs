//! Small secrets sealed under a key store's key, without running Argon2 again: what an
//! application keeps beside the store, such as session snapshots.
//!
//! # Format (version 1)
//! ```text
//! magic       8 bytes  "OTRRSSEL"
//! version     u16      1
//! salt        16 bytes the salt of the store key it was sealed under
//! nonce       12 bytes
//! ciphertext  AES-256-GCM, the 16-byte tag at the end
//! ```
//! The AES key is HMAC-SHA256(store key, "otr-rs sealed blob v1"), so a sealed blob and the
//! store file never share a key. The associated data is the header followed by the caller's
//! label (what the blob is and whom it concerns), so a blob moved to another label, or any bit
//! changed, fails to open.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::bytes::Reader;
use crate::store::{SALT_LEN, SealKey};

const MAGIC: [u8; 8] = *b"OTRRSSEL";
const VERSION: u16 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 8 + 2 + SALT_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Why a sealed blob could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealedError {
    /// Too short, or not a sealed blob at all.
    #[error("not a sealed otr-rs file (wrong magic bytes or truncated); it was replaced or damaged")]
    NotSealed,
    /// A format version this build does not read.
    #[error("sealed file format version {0} is not supported by this version of otr-rs")]
    UnsupportedVersion(u16),
    /// Sealed under another store key: the passphrase was changed since, or the file belongs
    /// to another key store.
    #[error(
        "the file was sealed under another key store passphrase (changed since?), so it cannot be opened"
    )]
    OtherKey,
    /// Authentication failed: the file was modified or damaged, or belongs to another label.
    #[error("the sealed file was modified, damaged, or belongs to something else")]
    Corrupted,
}

impl SealKey {
    fn blob_cipher(&self) -> Aes256Gcm {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(self.key_bytes()).expect("HMAC takes any key length");
        mac.update(b"otr-rs sealed blob v1");
        let key = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        Aes256Gcm::new(&(*key).into())
    }

    /// Seals `plaintext` for `label` (e.g. `b"snapshot\0alice\0bob"`).
    pub fn seal_blob(&self, label: &[u8], plaintext: &[u8], rng: &mut (impl CryptoRng + ?Sized)) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(self.salt());
        out.extend_from_slice(&nonce);
        let aad = [&out[..], label].concat();
        let mut body = plaintext.to_vec();
        // AES-GCM refuses only inputs over 64 GiB, which no caller seals.
        self.blob_cipher()
            .encrypt_in_place(&Nonce::from(nonce), &aad, &mut body)
            .expect("a sealed blob is far below AES-GCM's length limit");
        out.extend_from_slice(&body);
        out
    }

    /// Opens a blob sealed by [`seal_blob`](Self::seal_blob) for the same `label`.
    ///
    /// # Errors
    /// [`SealedError`]: not a sealed blob, another version, another store key, or modified.
    pub fn open_blob(&self, label: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealedError> {
        let mut r = Reader::new(sealed);
        let magic: [u8; 8] = r.array().map_err(|_| SealedError::NotSealed)?;
        if magic != MAGIC {
            return Err(SealedError::NotSealed);
        }
        let version = r.u16().map_err(|_| SealedError::NotSealed)?;
        if version != VERSION {
            return Err(SealedError::UnsupportedVersion(version));
        }
        let salt: [u8; SALT_LEN] = r.array().map_err(|_| SealedError::NotSealed)?;
        if salt != *self.salt() {
            return Err(SealedError::OtherKey);
        }
        let nonce: [u8; NONCE_LEN] = r.array().map_err(|_| SealedError::NotSealed)?;
        let body = r.take(sealed.len() - HEADER_LEN).map_err(|_| SealedError::NotSealed)?;
        if body.len() < TAG_LEN {
            return Err(SealedError::NotSealed);
        }
        let aad = [&sealed[..HEADER_LEN], label].concat();
        let mut plain = Zeroizing::new(body.to_vec());
        self.blob_cipher()
            .decrypt_in_place(&Nonce::from(nonce), &aad, &mut *plain)
            .map_err(|_| SealedError::Corrupted)?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::KdfParams;

    fn key(pass: &[u8], rng: &mut ChaCha20Rng) -> SealKey {
        SealKey::derive(pass, KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }, rng).unwrap()
    }

    #[test]
    fn a_blob_opens_only_with_its_key_and_label_and_unchanged() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = key(b"pw", &mut rng);
        let sealed = k.seal_blob(b"snapshot\0alice\0bob", b"secret state", &mut rng);
        assert_eq!(&**k.open_blob(b"snapshot\0alice\0bob", &sealed).unwrap(), b"secret state");
        assert_eq!(k.open_blob(b"snapshot\0alice\0carol", &sealed), Err(SealedError::Corrupted));
        assert_eq!(
            key(b"pw", &mut rng).open_blob(b"snapshot\0alice\0bob", &sealed),
            Err(SealedError::OtherKey)
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(k.open_blob(b"snapshot\0alice\0bob", &bad).is_err(), "bit flip at {i} accepted");
        }
        for n in 0..sealed.len() {
            assert!(
                k.open_blob(b"snapshot\0alice\0bob", &sealed[..n]).is_err(),
                "truncation to {n} accepted"
            );
        }
        assert_eq!(k.open_blob(b"x", b"OTRRSKEY........................"), Err(SealedError::NotSealed));
    }
}
