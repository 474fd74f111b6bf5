//! The relay's certificate pin: clients do not use the web PKI, they pin the SHA-256
//! fingerprint of the relay's certificate (which the relay prints at start). A mismatch fails
//! the handshake with [`ClientError::PinMismatch`](crate::ClientError::PinMismatch), naming
//! both fingerprints.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of a DER certificate; shown as 32 colon-separated hex bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint(pub [u8; 32]);

impl CertFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({self})")
    }
}

/// A fingerprint string that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("a certificate fingerprint is 64 hex digits (colons and spaces allowed)")]
pub struct BadFingerprint;

impl FromStr for CertFingerprint {
    type Err = BadFingerprint;

    /// Accepts hex in either case, with or without `:` or spaces between bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = s.bytes().filter(|c| *c != b':' && !c.is_ascii_whitespace()).collect();
        if digits.len() != 64 {
            return Err(BadFingerprint);
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let text = std::str::from_utf8(pair).map_err(|_| BadFingerprint)?;
            *o = u8::from_str_radix(text, 16).map_err(|_| BadFingerprint)?;
        }
        Ok(Self(out))
    }
}

/// The crypto provider the relay and its clients use: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_text_round_trips() {
        let fp = CertFingerprint::of(b"certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert_eq!(text.parse::<CertFingerprint>().unwrap(), fp);
        assert_eq!(text.replace(':', "").to_lowercase().parse::<CertFingerprint>().unwrap(), fp);
        assert!("AB:CD".parse::<CertFingerprint>().is_err());
        assert!("zz".repeat(32).parse::<CertFingerprint>().is_err());
    }
}
