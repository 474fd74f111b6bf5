//! Web Push message encryption (RFC 8291) in the `aes128gcm` content coding (RFC 8188):
//! one record, sent from a fresh ephemeral P-256 key to the subscription's key.

use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::agreement::{self, ECDH_P256, EphemeralPrivateKey, UnparsedPublicKey};
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

/// The record size written in the header: the whole body is one record well below it.
const RECORD_SIZE: u32 = 4096;

/// Why a body could not be encrypted.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum EncryptError {
    /// `p256dh` is not a point on P-256.
    BadKey,
    /// The system's random generator failed, or the plaintext does not fit one record.
    Internal,
}

/// `plaintext` encrypted to the subscription (`ua_public`, `auth`): the `aes128gcm` body.
pub(super) fn encrypt(
    ua_public: &[u8; 65],
    auth: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| EncryptError::Internal)?;
    let as_private = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| EncryptError::Internal)?;
    let as_public = as_private.compute_public_key().map_err(|_| EncryptError::Internal)?;
    let as_public: [u8; 65] = as_public.as_ref().try_into().map_err(|_| EncryptError::Internal)?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, ua_public);
    let ecdh_secret: [u8; 32] = agreement::agree_ephemeral(as_private, &peer, |s| s.try_into())
        .map_err(|_| EncryptError::BadKey)?
        .map_err(|_| EncryptError::Internal)?;
    encrypt_with(&ecdh_secret, ua_public, &as_public, auth, &salt, plaintext)
}

/// The deterministic rest of [`encrypt`], from the ECDH secret on (RFC 8291 §3.3, §3.4).
fn encrypt_with(
    ecdh_secret: &[u8; 32],
    ua_public: &[u8; 65],
    as_public: &[u8; 65],
    auth: &[u8; 16],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, EncryptError> {
    // PRK_key = HMAC(auth, ecdh); IKM = HKDF-Expand(PRK_key, "WebPush: info" 0 ua as, 32).
    let prk_key = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, auth), ecdh_secret);
    let mut key_info = Vec::with_capacity(14 + 65 + 65 + 1);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    key_info.push(1);
    let ikm = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk_key.as_ref()), &key_info);
    // RFC 8188: PRK = HMAC(salt, IKM); CEK and NONCE by HKDF-Expand, one block each.
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm.as_ref());
    let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
    let cek = hmac::sign(&prk, b"Content-Encoding: aes128gcm\0\x01");
    let nonce = hmac::sign(&prk, b"Content-Encoding: nonce\0\x01");
    let cek = cek.as_ref().get(..16).ok_or(EncryptError::Internal)?;
    let nonce: [u8; 12] =
        nonce.as_ref().get(..12).and_then(|n| n.try_into().ok()).ok_or(EncryptError::Internal)?;

    let record_len = plaintext.len().checked_add(1 + 16).ok_or(EncryptError::Internal)?;
    if record_len > RECORD_SIZE as usize {
        return Err(EncryptError::Internal);
    }
    // The only (so last) record: plaintext, delimiter 2, no padding; sequence 0 so the nonce
    // is used as derived.
    let mut record = Vec::with_capacity(record_len);
    record.extend_from_slice(plaintext);
    record.push(2);
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, cek).map_err(|_| EncryptError::Internal)?);
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut record)
        .map_err(|_| EncryptError::Internal)?;

    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn b64<const N: usize>(s: &str) -> [u8; N] {
        URL_SAFE_NO_PAD.decode(s).expect("base64url").try_into().expect("length")
    }

    /// RFC 8291 Appendix A, from the ECDH secret on (ring cannot import the fixed ephemeral
    /// private key of the example; the shared secret is the one the appendix gives).
    #[test]
    fn rfc8291_appendix_a() {
        let body = encrypt_with(
            &b64("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"),
            &b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
            &b64("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"),
            &b64("BTBZMqHH6r4Tts7J_aSIgg"),
            &b64("DGv6ra1nlYgDCS1FRnbzlw"),
            b"When I grow up, I want to be a watermelon",
        )
        .expect("encrypts");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6Tlz\
             AC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn refuses_a_point_off_the_curve() {
        let mut bad = [0u8; 65];
        bad[0] = 4;
        assert_eq!(encrypt(&bad, &[0; 16], b"x"), Err(EncryptError::BadKey));
    }
}
