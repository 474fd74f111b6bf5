//! Cryptographic building blocks: the DH group, DSA identities, and the symmetric primitives
//! OTR combines them with (AES-128-CTR, SHA-1, SHA-256, HMAC).
//!
//! Everything secret lives in types that zeroize on drop; MACs are compared in constant time.

pub mod dh;
pub mod dsa;
pub mod group;

use aes::Aes128;
use ctr::cipher::{InnerIvInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a cryptographic check failed. Deliberately terse: attackers learn nothing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A group element was outside `2 ..= p-2` (or not in the group).
    #[error("a Diffie-Hellman value is outside the allowed range")]
    BadGroupElement,
    /// A DSA public key could not be parsed or is not a valid 1024-bit DSA key.
    #[error("invalid DSA public key")]
    BadPublicKey,
    /// A DSA signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A MAC did not verify.
    #[error("MAC verification failed")]
    BadMac,
    /// A hash committed to earlier did not match the revealed value.
    #[error("revealed value does not match its commitment")]
    BadCommitment,
    /// Signing failed (should not happen with a valid key).
    #[error("signing failed")]
    SigningFailed,
}

/// The hash states that see secrets wipe themselves on drop: SHA-1 (data keys), SHA-256 (the
/// AKE keys from g^xy, the SMP secret), and the hash cores an HMAC state is made of. Checked
/// when otr-core compiles: without sha1's or sha2's `zeroize` feature this does not build.
const _: () = {
    fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    let _ = wiped_on_drop::<Sha1>;
    let _ = wiped_on_drop::<Sha256>;
    let _ = wiped_on_drop::<<Sha1 as sha2::digest::block_api::CoreProxy>::Core>;
    let _ = wiped_on_drop::<<Sha256 as sha2::digest::block_api::CoreProxy>::Core>;
};

/// AES-128 in counter mode, with the OTR convention that the 16-byte initial counter block is
/// `ctr_top` (8 bytes) followed by eight zero bytes. Encrypts or decrypts `data` in place.
pub fn aes128_ctr(key: &[u8; 16], ctr_top: [u8; 8], data: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&ctr_top);
    let mut cipher = ctr::Ctr128BE::<Aes128>::new(&(*key).into(), &iv.into());
    cipher.apply_keystream(data);
}

/// AES-128-CTR and HMAC-SHA1 keyed once for one direction of one data key pair, so that the
/// many messages sent or received with those keys skip the AES key schedule and the two HMAC
/// key blocks. Both states zeroize themselves on drop.
///
/// It also keeps the HMAC state after the first [`MAC_PREFIX`] bytes of the last message it
/// authenticated: consecutive data messages of one key pair start with the same header,
/// keyids and next DH value, so the next MAC usually resumes from there (3 of a 100-byte
/// message's 7 SHA-1 blocks). The prefix is public; the state zeroizes itself on drop.
#[derive(Clone)]
pub struct DataCipher {
    aes: Aes128,
    mac: Hmac<Sha1>,
    after_prefix: Option<Box<([u8; MAC_PREFIX], Hmac<Sha1>)>>,
}

/// Bytes of a message whose HMAC state [`DataCipher`] keeps: three SHA-1 blocks (with the key
/// block before them, the state stays block-aligned). A data message's header, flags, keyids
/// and next DH value fill them.
pub const MAC_PREFIX: usize = 192;

impl DataCipher {
    /// Keys AES-128 with `aes_key` and HMAC-SHA1 with `mac_key`.
    pub fn new(aes_key: &[u8; 16], mac_key: &[u8; 20]) -> Self {
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(mac_key).expect("HMAC takes any key length");
        Self { aes: Aes128::new(&(*aes_key).into()), mac, after_prefix: None }
    }

    /// [`aes128_ctr`] with this key: encrypts or decrypts `data` in place.
    pub fn apply_ctr(&self, ctr_top: [u8; 8], data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&ctr_top);
        let core = ctr::CtrCore::<&Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(&self.aes, &iv.into());
        let mut cipher = ctr::cipher::StreamCipherCoreWrapper::from_core(core);
        cipher.apply_keystream(data);
    }

    /// [`hmac_sha1`] with this key, resuming from the state after the previous message's
    /// first [`MAC_PREFIX`] bytes when this message starts with the same bytes.
    pub fn mac(&mut self, data: &[u8]) -> [u8; 20] {
        let mac = match data.split_at_checked(MAC_PREFIX) {
            Some((prefix, rest)) => {
                let mut mac = match &self.after_prefix {
                    Some(cached) if cached.0[..] == *prefix => cached.1.clone(),
                    _ => {
                        let mut mac = self.mac.clone();
                        mac.update(prefix);
                        let mut bytes = [0u8; MAC_PREFIX];
                        bytes.copy_from_slice(prefix);
                        self.after_prefix = Some(Box::new((bytes, mac.clone())));
                        mac
                    }
                };
                mac.update(rest);
                mac
            }
            None => {
                let mut mac = self.mac.clone();
                mac.update(data);
                mac
            }
        };
        mac.finalize().into_bytes().into()
    }
}

/// SHA-1 of the concatenation of `parts`.
pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// HMAC-SHA256 of the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 truncated to its first 160 bits, as the AKE uses it.
pub fn hmac_sha256_160(key: &[u8], data: &[u8]) -> [u8; 20] {
    let full = hmac_sha256(key, &[data]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&full[..20]);
    out
}

/// HMAC-SHA1, as data messages use it (tests forge MACs with it).
#[cfg(any(test, feature = "internals"))]
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Compares two MACs in constant time.
///
/// # Errors
/// [`CryptoError::BadMac`] when they differ (or differ in length).
pub fn verify_mac(expected: &[u8], given: &[u8]) -> Result<(), CryptoError> {
    if bool::from(expected.ct_eq(given)) { Ok(()) } else { Err(CryptoError::BadMac) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_ctr_round_trips_and_matches_known_keystream() {
        // FIPS-197 AES-128 known answer: key 000102..0f, block 00112233..ff.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut block: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        // CTR with a zero counter encrypts the all-zero block; XOR with plaintext is reversible.
        let orig = block;
        aes128_ctr(&key, [0; 8], &mut block);
        assert_ne!(block, orig);
        aes128_ctr(&key, [0; 8], &mut block);
        assert_eq!(block, orig);
    }

    #[test]
    fn keyed_cipher_matches_the_one_shot_functions() {
        let (aes_key, mac_key) = ([7u8; 16], [9u8; 20]);
        let mut c = DataCipher::new(&aes_key, &mac_key);
        for len in [0, 1, 15, 16, 17, 100, 1000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let (mut a, mut b) = (data.clone(), data.clone());
            aes128_ctr(&aes_key, [1, 2, 3, 4, 5, 6, 7, 8], &mut a);
            c.apply_ctr([1, 2, 3, 4, 5, 6, 7, 8], &mut b);
            assert_eq!(a, b, "ctr {len}");
            assert_eq!(c.mac(&data), hmac_sha1(&mac_key, &data), "mac {len}");
        }
        // Messages sharing the cached prefix, then one that differs inside it, then again.
        let mut c = DataCipher::new(&aes_key, &mac_key);
        let base: Vec<u8> = (0..400u32).map(|i| (i * 7) as u8).collect();
        for (at, len) in [(300, 400), (250, 300), (10, 400), (10, 260), (191, 192), (0, 193), (5, 100)] {
            let mut m = base[..len].to_vec();
            m[at % len] ^= 0x55;
            assert_eq!(c.mac(&m), hmac_sha1(&mac_key, &m), "changed at {at}, length {len}");
            assert_eq!(c.mac(&m), hmac_sha1(&mac_key, &m), "again: changed at {at}, length {len}");
        }
    }

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac[..4], [0x5b, 0xdc, 0xc1, 0x46], "RFC 4231 test case 2 prefix");
    }

    #[test]
    fn mac_comparison() {
        assert!(verify_mac(&[1, 2, 3], &[1, 2, 3]).is_ok());
        assert_eq!(verify_mac(&[1, 2, 3], &[1, 2, 4]), Err(CryptoError::BadMac));
        assert_eq!(verify_mac(&[1, 2, 3], &[1, 2]), Err(CryptoError::BadMac));
    }
}
