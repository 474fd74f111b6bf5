//! TLS 1.3 for the relay: the server's certificate (from files or generated on first start).
//! The fingerprint clients pin ([`CertFingerprint`]) and the client side of TLS are
//! otr-relay-client's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use otr_relay_client::pin::provider;
pub use otr_relay_client::pin::{BadFingerprint, CertFingerprint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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
