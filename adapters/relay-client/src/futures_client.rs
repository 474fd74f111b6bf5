//! The relay client for futures-io runtimes (async-std, smol, ...), feature `futures-io`,
//! without tokio: [`connect_tls`] opens TLS 1.3 with the pinned certificate over a TCP stream
//! the caller opened with its runtime; with [`RelayFraming`], otr-futures' `Conversation`
//! talks to one peer account through the relay.
//!
//! ```no_run
//! # async fn demo(pin: otr_relay_client::CertFingerprint) -> Result<(), Box<dyn std::error::Error>> {
//! use otr_relay_client::{ClientConfig, futures_client::{RelayFraming, connect_tls}};
//! let config = ClientConfig::new("127.0.0.1:5443", pin, "alice", "alice's secret");
//! let tcp = async_std::net::TcpStream::connect(&config.server).await?; // or smol's
//! let tls = connect_tls(tcp, &config.server, config.pin).await?;
//! let framing = RelayFraming::new(&config, "bob");
//! // Then, with otr-futures (the framing logs in first, then carries the OTR messages):
//! // let mut conv = otr_futures::Conversation::new(session, tls, framing, rng)?;
//! // conv.start().await?;
//! # let _ = (tls, framing);
//! # Ok(()) }
//! ```

use std::sync::Arc;

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use futures_rustls::client::TlsStream;

use crate::config::ClientError;
pub use crate::framing::RelayFraming;
use crate::pin::CertFingerprint;
use crate::verifier::{PinVerifier, client_config, handshake_error, server_name};

/// Completes a TLS 1.3 handshake over `tcp` that accepts only the certificate whose SHA-256
/// fingerprint is `pin`; `server` is the `host:port` it was opened to.
///
/// # Errors
/// [`ClientError::PinMismatch`] when the certificate differs from the pin,
/// [`ClientError::Io`] when the handshake fails.
pub async fn connect_tls<S>(tcp: S, server: &str, pin: CertFingerprint) -> Result<TlsStream<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let verifier = Arc::new(PinVerifier::new(pin));
    let tls_config = client_config(verifier.clone()).map_err(std::io::Error::other)?;
    TlsConnector::from(tls_config)
        .connect(server_name(server)?, tcp)
        .await
        .map_err(|e| handshake_error(&verifier, pin, e))
}
