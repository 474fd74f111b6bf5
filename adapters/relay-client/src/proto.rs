//! The relay's wire protocol: length-delimited frames over TLS, each a postcard-encoded
//! [`ClientFrame`] or [`ServerFrame`].
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of payload. A connection
//! starts with [`ClientFrame::Login`], which carries the protocol version and the device; the
//! server answers [`ServerFrame::Welcome`] or an [`ServerFrame::Error`] and closes. Bodies are
//! opaque strings (OTR messages): the relay never interprets them.
//!
//! Version 2 added devices: an account may be logged in on several devices at once (one
//! connection per device id, see [`valid_device`]); a message is delivered to every device of
//! its recipient (or to the one [`ClientFrame::Send::to_device`] names), and each device
//! acknowledges its own copy. Version 2 also added push registrations
//! ([`ClientFrame::RegisterPush`], [`ClientFrame::UnregisterPush`]). A version-1 client is told
//! [`ErrorCode::UnsupportedVersion`] (the server reads the version before the rest of the login,
//! see [`login_version`]).

use serde::{Deserialize, Serialize};
#[cfg(feature = "tokio")]
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// The device a login names when its client gives none.
pub const DEFAULT_DEVICE: &str = "default";

/// The longest device id, in bytes.
pub const MAX_DEVICE_LEN: usize = 64;

/// The longest push endpoint URL, in bytes.
pub const MAX_PUSH_ENDPOINT_LEN: usize = 2048;

/// Whether `device` can name a device: 1 to [`MAX_DEVICE_LEN`] bytes of ASCII letters, digits,
/// `-`, `_` and `.`.
pub fn valid_device(device: &str) -> bool {
    !device.is_empty()
        && device.len() <= MAX_DEVICE_LEN
        && device.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A push endpoint for one device, as [`ClientFrame::RegisterPush`] carries it and the relay
/// stores it: a UnifiedPush or Web Push endpoint URL and, for Web Push (RFC 8291), the
/// subscription's public key and authentication secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRegistration {
    /// The endpoint URL (`https://` or `http://`, at most [`MAX_PUSH_ENDPOINT_LEN`] bytes).
    pub endpoint: String,
    /// The subscription's P-256 public key, uncompressed (65 bytes), for Web Push encryption.
    pub p256dh: Option<Vec<u8>>,
    /// The subscription's authentication secret (16 bytes), for Web Push encryption.
    pub auth: Option<Vec<u8>>,
}

impl std::fmt::Debug for PushRegistration {
    /// Shows the endpoint's scheme and host only: the rest of a push URL is a capability.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.endpoint.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        f.debug_struct("PushRegistration")
            .field("endpoint", &format!("{shown}/..."))
            .field("p256dh", &self.p256dh.as_ref().map(Vec::len))
            .field("auth", &self.auth.as_ref().map(Vec::len))
            .finish()
    }
}

impl PushRegistration {
    /// A registration without Web Push keys (a UnifiedPush endpoint).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self { endpoint: endpoint.into(), p256dh: None, auth: None }
    }

    /// Checks what the relay checks: the URL's length, scheme and host, and the key lengths.
    ///
    /// # Errors
    /// A sentence saying what is wrong and what a valid registration looks like.
    pub fn validate(&self) -> Result<(), String> {
        let url = &self.endpoint;
        if url.len() > MAX_PUSH_ENDPOINT_LEN {
            return Err(format!(
                "the push endpoint is {} bytes long; at most {MAX_PUSH_ENDPOINT_LEN} are accepted",
                url.len()
            ));
        }
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            &url[8..]
        } else if lower.starts_with("http://") {
            &url[7..]
        } else {
            return Err("the push endpoint must be an https:// (or http://) URL".into());
        };
        if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err("the push endpoint contains spaces or control characters".into());
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains('@') {
            return Err("the push endpoint must name a host (and no user name) after the scheme".into());
        }
        match (&self.p256dh, &self.auth) {
            (None, None) => Ok(()),
            (Some(k), Some(a)) => {
                if k.len() != 65 || k[0] != 4 {
                    return Err(format!(
                        "the Web Push key (p256dh) must be an uncompressed P-256 point of 65 bytes, got {} bytes",
                        k.len()
                    ));
                }
                if a.len() != 16 {
                    return Err(format!(
                        "the Web Push authentication secret must be 16 bytes, got {}",
                        a.len()
                    ));
                }
                Ok(())
            }
            _ => Err("give both the Web Push key (p256dh) and its authentication secret, or neither".into()),
        }
    }
}

/// The protocol version a login frame announces, read before the rest of the frame (whose
/// shape may differ between versions); `None` when `payload` does not start like a login.
pub fn login_version(payload: &[u8]) -> Option<u16> {
    #[derive(Deserialize)]
    enum Prefix {
        Login { version: u16 },
    }
    match postcard::take_from_bytes::<Prefix>(payload) {
        Ok((Prefix::Login { version }, _)) => Some(version),
        Err(_) => None,
    }
}

/// The default largest frame payload, in bytes (64 KiB).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// What `Debug` output shows in place of a secret.
pub(crate) const REDACTED: &str = "<redacted>";

/// What a client sends. Its `Debug` output shows a login's secret as `"<redacted>"`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame of a connection: who we are and which protocol we speak.
    Login {
        /// Must be [`PROTOCOL_VERSION`]; the server reads it first (see [`login_version`]).
        version: u16,
        /// The account name.
        account: String,
        /// The account's secret.
        secret: String,
        /// This device's id (see [`valid_device`]); `None` means [`DEFAULT_DEVICE`]. A login
        /// of a device that is already connected replaces that connection.
        device: Option<String>,
    },
    /// Store `body` for `to`; the server answers [`ServerFrame::Accepted`] with the same `id`
    /// once it is durably stored, or an error carrying that `id`.
    Send {
        /// The recipient account.
        to: String,
        /// The sender's id for this message, echoed in the answer and in the delivery.
        id: u64,
        /// The message (an OTR string; opaque to the relay).
        body: String,
        /// Deliver to this device of the recipient only (and hold it for that device only);
        /// `None` delivers to every device.
        to_device: Option<String>,
    },
    /// The message delivered with `seq` was handled on this device: the server deletes this
    /// device's copy (the message itself once every device holding it has acknowledged it).
    /// Idempotent; an ack of a message this device does not hold is ignored.
    Ack {
        /// The `seq` of a [`ServerFrame::Deliver`].
        seq: u64,
    },
    /// Keeps an idle connection open; answered by [`ServerFrame::Pong`].
    Ping {
        /// Echoed back.
        nonce: u64,
    },
    /// Registers (or replaces) this device's push endpoint; answered by
    /// [`ServerFrame::PushAck`] once stored, or an [`ErrorCode::PushRefused`] error that says
    /// what is wrong (the connection stays open).
    RegisterPush {
        /// The endpoint URL (see [`PushRegistration::validate`]).
        endpoint: String,
        /// The Web Push subscription key (65 bytes), if the endpoint wants encryption.
        p256dh: Option<Vec<u8>>,
        /// The Web Push authentication secret (16 bytes), with `p256dh`.
        auth: Option<Vec<u8>>,
    },
    /// Removes this device's push endpoint (if any); answered by [`ServerFrame::PushAck`].
    UnregisterPush,
}

impl ClientFrame {
    /// The [`ClientFrame::RegisterPush`] frame for `reg`.
    pub fn register_push(reg: &PushRegistration) -> Self {
        Self::RegisterPush {
            endpoint: reg.endpoint.clone(),
            p256dh: reg.p256dh.clone(),
            auth: reg.auth.clone(),
        }
    }
}

impl std::fmt::Debug for ClientFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Login { version, account, secret: _, device } => f
                .debug_struct("Login")
                .field("version", version)
                .field("account", account)
                .field("secret", &REDACTED)
                .field("device", device)
                .finish(),
            Self::Send { to, id, body, to_device } => f
                .debug_struct("Send")
                .field("to", to)
                .field("id", id)
                .field("body", body)
                .field("to_device", to_device)
                .finish(),
            Self::Ack { seq } => f.debug_struct("Ack").field("seq", seq).finish(),
            Self::Ping { nonce } => f.debug_struct("Ping").field("nonce", nonce).finish(),
            Self::RegisterPush { endpoint, p256dh, auth } => {
                let reg = PushRegistration {
                    endpoint: endpoint.clone(),
                    p256dh: p256dh.clone(),
                    auth: auth.clone(),
                };
                f.debug_tuple("RegisterPush").field(&reg).finish()
            }
            Self::UnregisterPush => f.write_str("UnregisterPush"),
        }
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// Login succeeded.
    Welcome {
        /// The server's protocol version.
        version: u16,
        /// How many messages are waiting for this device.
        pending: u64,
    },
    /// The message the client sent with `id` is stored and will be delivered.
    Accepted {
        /// The client's message id.
        id: u64,
    },
    /// A message for this account. It is delivered again after a reconnect until acked.
    Deliver {
        /// The server's sequence number: ack it with [`ClientFrame::Ack`].
        seq: u64,
        /// The sender account.
        from: String,
        /// The sender's message id.
        id: u64,
        /// The message.
        body: String,
    },
    /// Something went wrong. With `id`, it concerns that sent message only; without, the
    /// connection as a whole (the server usually closes it after this frame).
    Error {
        /// What went wrong.
        code: ErrorCode,
        /// The message id concerned, if any.
        id: Option<u64>,
        /// A human-readable explanation (never message contents).
        message: String,
    },
    /// The answer to [`ClientFrame::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The [`ClientFrame::RegisterPush`] or [`ClientFrame::UnregisterPush`] before it is done
    /// (durably stored).
    PushAck,
}

/// Error codes of [`ServerFrame::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The client speaks a protocol version the server does not.
    UnsupportedVersion,
    /// The frame could not be decoded, or was not expected here.
    BadFrame,
    /// The announced frame is larger than the server accepts; the connection is closed.
    FrameTooLarge,
    /// Unknown account or wrong secret.
    AuthFailed,
    /// Too many failed logins: try again later.
    TooManyAttempts,
    /// The first frame must be a login, sent within the login timeout.
    NotLoggedIn,
    /// The recipient account does not exist.
    UnknownRecipient,
    /// The recipient's queue is full (messages or bytes): try again later.
    QueueFull,
    /// The account sends faster than allowed: try again later.
    RateLimited,
    /// Too many connections from this address.
    TooManyConnections,
    /// Nothing arrived for too long.
    IdleTimeout,
    /// The same device of this account logged in on another connection, which replaced this
    /// one (other devices are not affected).
    LoggedInElsewhere,
    /// The server is shutting down.
    ShuttingDown,
    /// The server could not store the message; nothing was accepted.
    Internal,
    /// The relay's storage is full (its size cap or its disk): the message was not stored;
    /// try again later (acknowledged messages free room).
    StorageFull,
    /// The login's device id is not valid (see [`valid_device`]); nothing was changed.
    BadDevice,
    /// The account has as many devices as the relay allows, all seen recently: log out of one
    /// (a device unseen for longer than the message TTL is forgotten).
    TooManyDevices,
    /// A push registration was refused (the message says why); the connection stays open.
    PushRefused,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer announced a frame larger than allowed.
    #[error("frame of {announced} bytes announced, limit is {limit}")]
    TooLarge {
        /// The announced length.
        announced: u64,
        /// The limit.
        limit: usize,
    },
    /// The connection closed or failed (also mid-frame).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The payload is not a valid frame.
    #[error("undecodable frame")]
    Decode,
}

/// Encodes `frame` as length + payload.
///
/// # Errors
/// [`FrameError::Decode`] if serialization fails (it does not for these types).
pub fn encode<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(frame, vec![0u8; 4]).map_err(|_| FrameError::Decode)?;
    let len = u32::try_from(out.len().saturating_sub(4)).map_err(|_| FrameError::Decode)?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Decodes a frame payload (as `read_frame` or [`take_frame`] return it).
///
/// # Errors
/// [`FrameError::Decode`] when `payload` is not exactly one valid frame.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(payload) {
        Ok((frame, [])) => Ok(frame),
        _ => Err(FrameError::Decode),
    }
}

/// Reads one frame payload of at most `limit` bytes (feature `tokio`).
///
/// # Errors
/// [`FrameError::TooLarge`] before reading any payload when the announced length exceeds
/// `limit`; [`FrameError::Io`] when the stream ends or fails, also in the middle of a frame.
#[cfg(feature = "tokio")]
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; 4];
    r.read_exact(&mut head).await?;
    let mut buf = vec![0u8; frame_len(head, limit)?];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The payload length a frame header announces.
///
/// # Errors
/// [`FrameError::TooLarge`] when it exceeds `limit`.
pub fn frame_len(head: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(head);
    match usize::try_from(len) {
        Ok(n) if n <= limit => Ok(n),
        _ => Err(FrameError::TooLarge { announced: len.into(), limit }),
    }
}

/// Takes one whole frame payload off the front of `buf` (for readers that buffer bytes
/// themselves, such as the futures-io client); `None` until the whole frame is there.
///
/// # Errors
/// [`FrameError::TooLarge`] as soon as the header announces more than `limit`.
pub fn take_frame(buf: &mut Vec<u8>, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let Some(head) = buf.first_chunk::<4>() else { return Ok(None) };
    let n = frame_len(*head, limit)?;
    if buf.len() - 4 < n {
        return Ok(None);
    }
    let payload = buf[4..4 + n].to_vec();
    buf.drain(..4 + n);
    Ok(Some(payload))
}

/// Writes one encoded frame and flushes (feature `tokio`).
///
/// # Errors
/// [`FrameError::Io`] when the stream fails.
#[cfg(feature = "tokio")]
pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    frame: &T,
) -> Result<(), FrameError> {
    let bytes = encode(frame)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = ClientFrame::Send { to: "bob".into(), id: 7, body: "?OTR:AAMD".into(), to_device: None };
        let bytes = encode(&f).unwrap();
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        assert_eq!(decode::<ClientFrame>(&bytes[4..]).unwrap(), f);
        let e = ServerFrame::Error { code: ErrorCode::QueueFull, id: Some(3), message: "full".into() };
        let bytes = encode(&e).unwrap();
        assert_eq!(decode::<ServerFrame>(&bytes[4..]).unwrap(), e);
    }

    #[test]
    fn login_version_is_read_before_the_rest() {
        #[derive(Serialize)]
        enum V1 {
            Login { version: u16, account: String, secret: String },
        }
        let old = encode(&V1::Login { version: 1, account: "a".into(), secret: "s".into() }).unwrap();
        assert!(decode::<ClientFrame>(&old[4..]).is_err());
        assert_eq!(login_version(&old[4..]), Some(1));
        let new = ClientFrame::Login {
            version: PROTOCOL_VERSION,
            account: "a".into(),
            secret: "s".into(),
            device: None,
        };
        assert_eq!(login_version(&encode(&new).unwrap()[4..]), Some(PROTOCOL_VERSION));
        assert_eq!(login_version(&encode(&ClientFrame::Ping { nonce: 1 }).unwrap()[4..]), None);
    }

    #[test]
    fn devices_and_push_registrations_are_validated() {
        assert!(valid_device("default") && valid_device("phone-2.a_b"));
        assert!(!valid_device("") && !valid_device("a b") && !valid_device(&"x".repeat(65)));
        let ok = PushRegistration::new("https://push.example/u/abc");
        assert_eq!(ok.validate(), Ok(()));
        let web =
            PushRegistration { p256dh: Some([4u8; 65].to_vec()), auth: Some(vec![0; 16]), ..ok.clone() };
        assert_eq!(web.validate(), Ok(()));
        for bad in [
            PushRegistration::new("ftp://push.example/x"),
            PushRegistration::new("https:///x"),
            PushRegistration::new(format!("https://h/{}", "a".repeat(2048))),
            PushRegistration { p256dh: Some(vec![4; 64]), ..web.clone() },
            PushRegistration { auth: Some(vec![0; 15]), ..web.clone() },
            PushRegistration { auth: None, ..web.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(!format!("{web:?}").contains("/u/abc"));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_rejected() {
        let mut bytes = encode(&ClientFrame::Ack { seq: 1 }).unwrap();
        bytes.push(0);
        assert!(decode::<ClientFrame>(&bytes[4..]).is_err());
        assert!(decode::<ClientFrame>(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode::<ClientFrame>(&[]).is_err());
    }

    #[test]
    fn take_frame_waits_for_whole_frames() {
        let mut wire = encode(&ClientFrame::Ack { seq: 9 }).unwrap();
        wire.extend(encode(&ClientFrame::Ping { nonce: 1 }).unwrap());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(p) = take_frame(&mut buf, DEFAULT_MAX_FRAME).unwrap() {
                got.push(decode::<ClientFrame>(&p).unwrap());
            }
        }
        assert_eq!(got, [ClientFrame::Ack { seq: 9 }, ClientFrame::Ping { nonce: 1 }]);
        let mut huge = 100_000_000u32.to_be_bytes().to_vec();
        assert!(matches!(take_frame(&mut huge, DEFAULT_MAX_FRAME), Err(FrameError::TooLarge { .. })));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn oversized_frame_is_refused_before_reading() {
        let mut input: &[u8] = &100_000_000u32.to_be_bytes();
        let err = read_frame(&mut input, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { announced: 100_000_000, .. }));
    }
}
