//! TLS 1.3 for the relay: the server's certificate (from files or generated on first start),
//! and the client's certificate pin.
//!
//! Clients do not use the web PKI: they pin the SHA-256 fingerprint of the server's
//! certificate, which the server prints at start. A mismatch fails the handshake with
//! [`crate::client::ClientError::PinMismatch`], naming both fingerprints.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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

/// Problems with the server's certificate or key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Certificate generation failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificate chain and key.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    fingerprint: CertFingerprint,
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// The fingerprint clients pin (of the first certificate in the chain).
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    /// Loads a PEM certificate chain and key from `cert` and `key`.
    ///
    /// # Errors
    /// [`TlsError`] if a file is missing or holds no certificate or key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pem = |path: &Path, e: rustls::pki_types::pem::Error| match e {
            rustls::pki_types::pem::Error::Io(source) => TlsError::File { path: path.into(), source },
            other => TlsError::Pem { path: path.into(), what: other.to_string() },
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem(cert, e))?;
        let first = chain
            .first()
            .ok_or_else(|| TlsError::Pem { path: cert.into(), what: "no certificate".into() })?;
        let fingerprint = CertFingerprint::of(first);
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e))?;
        Ok(Self { chain, key, fingerprint })
    }

    /// Loads `cert.pem` and `key.pem` from `dir`, generating a self-signed pair there first
    /// if neither exists. Both files are created readable by their owner only (the relay's
    /// data directory holds nothing for other users; clients pin the printed fingerprint).
    ///
    /// # Errors
    /// [`TlsError`] if the files cannot be read, written or parsed.
    pub fn load_or_generate(dir: &Path) -> Result<Self, TlsError> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        if !cert.exists() && !key.exists() {
            let made =
                rcgen::generate_simple_self_signed(vec!["otr-relay".to_string(), "localhost".to_string()])?;
            write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
            write_private(&cert, made.cert.pem().as_bytes())?;
            tracing::info!(path = %cert.display(), "generated a self-signed certificate");
        }
        Self::from_files(&cert, &key)
    }

    /// The server side TLS configuration: TLS 1.3 only, ring provider, no client certificates.
    ///
    /// # Errors
    /// [`TlsError::Rustls`] if rustls rejects the key.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut f = crate::files::private()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| TlsError::File { path: path.into(), source })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|source| TlsError::File { path: path.into(), source })
}

/// The crypto provider used on both sides: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies the server by its certificate's fingerprint only, and remembers what it saw.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pin: CertFingerprint,
    seen: Mutex<Option<CertFingerprint>>,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub(crate) fn new(pin: CertFingerprint) -> Self {
        Self { pin, seen: Mutex::new(None), provider: provider() }
    }

    /// The fingerprint the server presented, if it did not match the pin.
    pub(crate) fn mismatch(&self) -> Option<CertFingerprint> {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertFingerprint::of(end_entity);
        if bool::from(got.0.ct_eq(&self.pin.0)) {
            Ok(ServerCertVerified::assertion())
        } else {
            *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
            Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client configuration (TLS 1.3 only) that trusts exactly the certificate `verifier` pins.
pub(crate) fn client_config(verifier: Arc<PinVerifier>) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
