//! StartTLS and login on our own rustls configuration.
//!
//! tokio-xmpp's built-in StartTLS connector builds its certificate store itself (the system's
//! or webpki's roots), so a test server's CA or a private deployment's cannot be given to it.
//! This connector does the same StartTLS negotiation (RFC 6120 §5) with a
//! [`rustls::ClientConfig`] made from [`Trust`]: the server's certificate is always verified,
//! against the roots the application chose.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::connect::ServerConnector;
use tokio_xmpp::error::ProtocolError;
use tokio_xmpp::stanzastream::Connection;
use tokio_xmpp::xmlstream::{
    FallibleStreamElement, PendingFeaturesRecv, ReadError, StreamHeader, Timeouts, XmppStream,
    XmppStreamElement, initiate_stream,
};
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::starttls;

use crate::error::ConnectError;

/// Which certificate authorities the client trusts for the server's certificate.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Trust {
    /// The operating system's store (on Debian, `/etc/ssl/certs` from `ca-certificates`).
    System,
    /// The CA certificates (PEM) in this file, and no others: for a private server or a test
    /// server with its own CA.
    CaFile(PathBuf),
    /// These CA certificates (DER), and no others.
    Roots(Vec<CertificateDer<'static>>),
}

impl Trust {
    /// The rustls configuration that verifies server certificates against these roots.
    ///
    /// # Errors
    /// [`ConnectError::Trust`] when the file cannot be read, holds no certificate, or the
    /// system store is empty.
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, ConnectError> {
        let mut roots = RootCertStore::empty();
        let certs: Vec<CertificateDer<'static>> = match self {
            Trust::System => rustls_native_certs::load_native_certs().certs,
            Trust::CaFile(path) => read_pem_certs(path)?,
            Trust::Roots(certs) => certs.clone(),
        };
        let (added, _ignored) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ConnectError::Trust(format!(
                "no usable CA certificate in {}",
                match self {
                    Trust::System => "the system store (install ca-certificates)".to_owned(),
                    Trust::CaFile(p) => p.display().to_string(),
                    Trust::Roots(_) => "the given roots".to_owned(),
                }
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Trust(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConnectError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConnectError::Trust(format!("cannot read CA file {}: {e}", path.display())))?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConnectError::Trust(format!("CA file {} is not PEM certificates: {e}", path.display())))
}

/// A tokio-xmpp [`ServerConnector`]: connects over TCP, negotiates StartTLS and verifies the
/// server's certificate against the configured CAs. [`Client`](crate::Client) uses it; it is
/// public so that plain tokio-xmpp clients (bots, tests) can log in the same way:
/// `tokio_xmpp::Client::new_with_connector(jid, password, connector, Timeouts::default())`.
#[derive(Clone)]
pub struct StartTls {
    /// `host:port` to connect to.
    addr: String,
    /// The name the certificate must be valid for (normally the JID's domain).
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
}

impl StartTls {
    /// The connector for `config`'s server, name and trust.
    ///
    /// # Errors
    /// [`ConnectError::Trust`] when the CAs cannot be loaded, [`ConnectError::Address`] when
    /// the server name is not a valid DNS name or IP address.
    pub fn new(config: &crate::Config) -> Result<Self, ConnectError> {
        let domain = config.jid.domain().as_str();
        let addr = config.server.clone().unwrap_or_else(|| format!("{domain}:5222"));
        let name = config.tls_server_name.clone().unwrap_or_else(|| domain.to_owned());
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| ConnectError::Address(format!("{name}: {e}")))?;
        Ok(Self { addr, server_name, tls: config.trust.client_config()? })
    }
}

impl fmt::Debug for StartTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartTls").field("addr", &self.addr).field("server_name", &self.server_name).finish()
    }
}

impl ServerConnector for StartTls {
    type Stream = BufStream<TlsStream<TcpStream>>;

    async fn connect(
        &self,
        jid: &Jid,
        ns: &'static str,
        timeouts: Timeouts,
    ) -> Result<(PendingFeaturesRecv<Self::Stream>, ChannelBinding), tokio_xmpp::Error> {
        let domain = jid.domain().as_str();
        let header = || StreamHeader { to: Some(Cow::Owned(domain.to_owned())), from: None, id: None };
        let tcp = TcpStream::connect(&self.addr).await?;
        let plain = initiate_stream(BufStream::new(tcp), ns, header(), timeouts).await?;
        let (features, mut plain): (_, XmppStream<_>) = plain.recv_features().await?;
        if !features.can_starttls() {
            // Never continue without TLS: the password and every stanza would be in the clear.
            return Err(ProtocolError::NoTls.into());
        }
        plain.send(&XmppStreamElement::Starttls(starttls::Nonza::Request(starttls::Request))).await?;
        loop {
            match plain.next().await.map(|r| r.and_then(FallibleStreamElement::into_read_error)) {
                Some(Ok(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_)))) => break,
                Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => {}
                Some(Err(ReadError::HardError(e))) => return Err(e.into()),
                Some(Err(ReadError::ParseError(e))) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e).into());
                }
                None | Some(Err(ReadError::StreamFooterReceived)) => {
                    return Err(tokio_xmpp::Error::Disconnected);
                }
            }
        }
        let tcp = plain.into_inner().into_inner();
        let tls = TlsConnector::from(self.tls.clone()).connect(self.server_name.clone(), tcp).await?;
        // SCRAM-*-PLUS binds the login to this TLS session (RFC 9266 tls-exporter, TLS 1.3).
        let binding = match tls.get_ref().1.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => tls
                .get_ref()
                .1
                .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .map(ChannelBinding::TlsExporter)
                .unwrap_or(ChannelBinding::None),
            _ => ChannelBinding::None,
        };
        let secure = initiate_stream(BufStream::new(tls), ns, header(), timeouts).await?;
        Ok((secure, binding))
    }
}

/// Connects, negotiates TLS and authenticates as `jid` (resource binding is left to the
/// stanza stream), as tokio-xmpp's own login does.
pub(crate) async fn login(
    connector: &StartTls,
    jid: &BareJid,
    password: &str,
    timeouts: Timeouts,
) -> Result<Connection, tokio_xmpp::Error> {
    let identity = Jid::from(jid.clone());
    let username = jid.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
    let (pending, binding) = connector.connect(&identity, xmpp_parsers::ns::JABBER_CLIENT, timeouts).await?;
    let (features, stream): (_, XmppStream<_>) = pending.recv_features().await?;
    let creds = Credentials::default()
        .with_username(username)
        .with_password(password.to_owned())
        .with_channel_binding(binding);
    let stream = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds).await?;
    let header =
        StreamHeader { to: Some(Cow::Owned(jid.domain().as_str().to_owned())), from: None, id: None };
    let (mut features, stream): (_, XmppStream<_>) =
        stream.send_header(header).await?.recv_features().await?;
    // No XEP-0198 stream management: when a server no longer knows the stream (it
    // restarted, or its hibernation time passed) Prosody answers a resumption with
    // `<failed/>` without `h`, which xmpp-parsers 0.23 rejects; tokio-xmpp 6 then keeps the
    // stale state and retries the resumption forever. Without it every reconnection is a
    // fresh login, which is what happens after a server restart anyway.
    features.stream_management = None;
    Ok(Connection { stream: stream.box_stream(), features, identity })
}
