//! VAPID (RFC 8292): the relay's P-256 key and the ES256 JWT that identifies it to a push
//! service.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use zeroize::Zeroizing;

/// How long a VAPID token is valid (RFC 8292 §2: at most 24 hours).
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The relay's VAPID key pair (ECDSA P-256). Generate it once, keep [`to_bytes`] in the data
/// directory (it is a secret: mode 0600), and load it with [`from_bytes`] at start, so that
/// push services see the same server key across restarts.
///
/// [`to_bytes`]: VapidKey::to_bytes
/// [`from_bytes`]: VapidKey::from_bytes
pub struct VapidKey {
    pkcs8: Zeroizing<Vec<u8>>,
    pair: EcdsaKeyPair,
}

/// A stored VAPID key that does not load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VapidKeyError {
    /// Not a PKCS#8 ECDSA P-256 private key.
    #[error("not a PKCS#8 P-256 key")]
    Invalid,
    /// The system's random generator failed.
    #[error("no randomness")]
    Random,
}

impl VapidKey {
    /// A new random key pair.
    ///
    /// # Errors
    /// [`VapidKeyError::Random`] when the system's generator fails.
    pub fn generate() -> Result<Self, VapidKeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| VapidKeyError::Random)?;
        Self::from_bytes(doc.as_ref())
    }

    /// Loads a key from [`to_bytes`](Self::to_bytes) (PKCS#8 v1/v2 DER).
    ///
    /// # Errors
    /// [`VapidKeyError::Invalid`] for anything else.
    pub fn from_bytes(pkcs8: &[u8]) -> Result<Self, VapidKeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| VapidKeyError::Invalid)?;
        Ok(VapidKey { pkcs8: Zeroizing::new(pkcs8.to_vec()), pair })
    }

    /// The private key as PKCS#8 DER, to store (secret).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The public key, an uncompressed P-256 point (65 bytes): what a web app passes as
    /// `applicationServerKey` when it subscribes.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key in base64url without padding, as in the `k=` parameter.
    pub fn public_key_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key())
    }

    /// The `Authorization` header value for a request to `audience` (the endpoint's origin):
    /// `vapid t=<JWT>, k=<public key>`, with `exp` 12 hours from `now`.
    pub(super) fn authorization(
        &self,
        audience: &str,
        subject: Option<&str>,
        now: SystemTime,
    ) -> Option<String> {
        let exp = now.checked_add(TOKEN_LIFETIME)?.duration_since(UNIX_EPOCH).ok()?.as_secs();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let mut claims = format!(r#"{{"aud":{},"exp":{exp}"#, json_string(audience));
        if let Some(sub) = subject {
            claims.push_str(&format!(r#","sub":{}"#, json_string(sub)));
        }
        claims.push('}');
        let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
        let sig = self.pair.sign(&SystemRandom::new(), signing_input.as_bytes()).ok()?;
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Some(format!("vapid t={jwt}, k={}", self.public_key_base64()))
    }
}

impl fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VapidKey").field("public", &self.public_key_base64()).finish_non_exhaustive()
    }
}

/// A JSON string literal for `s`.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    #[test]
    fn round_trip_and_signature() {
        let key = VapidKey::generate().expect("key");
        let again = VapidKey::from_bytes(&key.to_bytes()).expect("reload");
        assert_eq!(key.public_key(), again.public_key());
        assert_eq!(key.public_key().len(), 65);
        assert!(VapidKey::from_bytes(b"not a key").is_err());

        let auth = again
            .authorization("https://push.example", Some("mailto:a\"b@c"), SystemTime::now())
            .expect("jwt");
        let rest = auth.strip_prefix("vapid t=").expect("scheme");
        let (jwt, k) = rest.split_once(", k=").expect("k");
        assert_eq!(k, key.public_key_base64());
        let (input, sig) = jwt.rsplit_once('.').expect("sig");
        let sig = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key())
            .verify(input.as_bytes(), &sig)
            .expect("valid signature");
        let claims = URL_SAFE_NO_PAD.decode(input.split_once('.').expect("claims").1).expect("b64");
        let claims = String::from_utf8(claims).expect("utf8");
        assert!(claims.starts_with(r#"{"aud":"https://push.example","exp":"#), "{claims}");
        assert!(claims.ends_with(r#","sub":"mailto:a\"b@c"}"#), "{claims}");
    }
}
