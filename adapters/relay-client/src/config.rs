//! What both client flavours share: how to reach and log in to a relay, and what can go
//! wrong.

use std::time::Duration;

use crate::pin::CertFingerprint;
use crate::proto::{self, ErrorCode, FrameError, PushRegistration};

/// How to reach and log in to a relay. Its `Debug` output shows `secret: "<redacted>"`, so
/// a configuration can be logged without giving the account away.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of the relay.
    pub server: String,
    /// The SHA-256 fingerprint of the relay's certificate, as it printed at start.
    pub pin: CertFingerprint,
    /// The account name.
    pub account: String,
    /// The account secret.
    pub secret: String,
    /// This device's id ([`proto::DEFAULT_DEVICE`] unless set): a short name the client
    /// chooses once (e.g. at random) and keeps in its state, 1 to 64 ASCII letters, digits,
    /// `-`, `_` or `.`. Each device of an account gets its own copy of every message; a second
    /// login with the same id replaces the first connection.
    pub device: String,
    /// A push endpoint registered for this device right after every login (`None`: the
    /// registration stored at the relay, if any, is left as it is).
    pub push: Option<PushRegistration>,
    /// Time allowed for TCP connect, TLS handshake and login together.
    pub connect_timeout: Duration,
    /// A ping is sent after this long without sending anything (keep it below the server's
    /// idle timeout).
    pub keepalive: Duration,
    /// Deliveries buffered for the application (keep it above the server's delivery window).
    pub inbox_capacity: usize,
    /// The largest frame accepted from the server.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("pin", &self.pin)
            .field("account", &self.account)
            .field("secret", &proto::REDACTED)
            .field("device", &self.device)
            .field("push", &self.push)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("inbox_capacity", &self.inbox_capacity)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with default timeouts.
    pub fn new(
        server: impl Into<String>,
        pin: CertFingerprint,
        account: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            server: server.into(),
            pin,
            account: account.into(),
            secret: secret.into(),
            device: proto::DEFAULT_DEVICE.into(),
            push: None,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(30),
            inbox_capacity: 1024,
            max_frame_bytes: 2 * proto::DEFAULT_MAX_FRAME,
        }
    }
}

/// What can go wrong talking to the relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server's certificate is not the pinned one: possibly a different server, or
    /// someone in between. Do not continue.
    #[error(
        "the relay's certificate does not match the pinned fingerprint\n  expected {expected}\n  presented {presented}"
    )]
    PinMismatch {
        /// The pin.
        expected: CertFingerprint,
        /// What the server presented.
        presented: CertFingerprint,
    },
    /// Connecting, the handshake or login took too long.
    #[error("timed out connecting to the relay")]
    Timeout,
    /// The network or TLS failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The relay refused the login (unknown account, wrong secret, too many attempts, version).
    #[error("login refused ({code:?}): {message}")]
    Login {
        /// Why.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The relay refused one message (queue full, rate limit, unknown recipient, ...).
    #[error("message refused ({code:?}): {message}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The relay refused a push registration; the message says what is wrong with it (fix the
    /// endpoint or keys, or register none).
    #[error("push registration refused: {message}")]
    PushRefused {
        /// The server's explanation.
        message: String,
    },
    /// The relay closed the connection with an error.
    #[error("the relay closed the connection ({code:?}): {message}")]
    Server {
        /// Why.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The relay sent something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Self::Io(e),
            FrameError::TooLarge { .. } => Self::Protocol("oversized frame from the relay"),
            _ => Self::Protocol("undecodable frame from the relay"),
        }
    }
}
