//! The client side of TLS (features `tokio` and `futures-io`): a rustls verifier that
//! accepts exactly the pinned certificate, and what a failed handshake means.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use subtle::ConstantTimeEq;

use crate::config::ClientError;
use crate::pin::{CertFingerprint, provider};

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

/// What a failed handshake means: a pin mismatch if the verifier saw one, else the I/O error.
pub(crate) fn handshake_error(
    verifier: &PinVerifier,
    pin: CertFingerprint,
    e: std::io::Error,
) -> ClientError {
    match verifier.mismatch() {
        Some(presented) => ClientError::PinMismatch { expected: pin, presented },
        None => ClientError::Io(e),
    }
}

/// The TLS server name for `server` (`host:port`). It is not checked (the pin is), but TLS
/// wants one: an IP address or a DNS name.
pub(crate) fn server_name(server: &str) -> std::io::Result<ServerName<'static>> {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .or_else(|_| ServerName::try_from("otr-relay".to_string()))
        .map_err(std::io::Error::other)
}
