//! Errors of the XMPP client.

use std::error::Error as _;

use otr_core::SendError;

/// Why [`Client::connect`](crate::Client::connect) failed. Nothing is left running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The CA certificates to trust could not be loaded.
    #[error("TLS trust: {0}")]
    Trust(String),
    /// The server's address or name is not usable.
    #[error("bad server address or name: {0}")]
    Address(String),
    /// The server's certificate did not verify against the trusted CAs, or does not name the
    /// server. Check the server name, or give the server's CA (`Trust::CaFile`).
    #[error("the server's TLS certificate is not trusted: {0}; check the server name or give its CA")]
    Certificate(String),
    /// The server refused the account name or password.
    #[error("login refused by the server: {0}; check the JID and password")]
    Auth(String),
    /// The server does not offer StartTLS; we never log in without TLS.
    #[error("the server does not offer StartTLS; refusing to continue without TLS")]
    NoTls,
    /// The connection failed or closed (server down, wrong port, network).
    #[error("cannot connect to the XMPP server: {0}")]
    Network(String),
    /// The server did not complete the login in time.
    #[error("the XMPP server did not finish the login within {0:?}")]
    Timeout(std::time::Duration),
}

impl ConnectError {
    /// Sorts a tokio-xmpp error into what the user can act on.
    pub(crate) fn from_xmpp(e: tokio_xmpp::Error) -> Self {
        match e {
            tokio_xmpp::Error::Auth(a) => ConnectError::Auth(a.to_string()),
            tokio_xmpp::Error::Protocol(tokio_xmpp::error::ProtocolError::NoTls) => ConnectError::NoTls,
            tokio_xmpp::Error::Io(io) => {
                let tls = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
                match tls {
                    Some(rustls::Error::InvalidCertificate(c)) => ConnectError::Certificate(format!("{c:?}")),
                    _ => ConnectError::Network(describe(&io)),
                }
            }
            other => ConnectError::Network(other.to_string()),
        }
    }
}

/// An I/O error with its sources, on one line.
fn describe(e: &std::io::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

/// Why a [`Client`](crate::Client) call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The OTR session refused the action; nothing was sent.
    #[error(transparent)]
    Otr(#[from] SendError),
    /// The client was closed (by [`Client::close`](crate::Client::close), or because the
    /// stream ended for good). Connect again.
    #[error("the XMPP client is closed; connect again")]
    Closed,
}
