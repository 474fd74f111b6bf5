//! Errors of the session API.

use crate::ake::AkeError;
use crate::data::Unreadable;
use crate::wire::WireError;

/// Why a received transport message was not accepted. The session stays usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The message is malformed.
    #[error("malformed OTR message: {0}")]
    Malformed(#[from] WireError),
    /// An AKE message failed its checks and was ignored.
    #[error("key exchange message rejected: {0}")]
    Ake(#[from] AkeError),
    /// A data message could not be read; the peer was told unless it asked us not to.
    #[error("unreadable encrypted message: {0}")]
    Unreadable(#[from] Unreadable),
    /// An encrypted message arrived while no private conversation is established with that
    /// instance. Start one (or wait for the peer's) and ask the peer to resend.
    #[error("received an encrypted message, but there is no private conversation with the sender")]
    NotPrivate,
    /// The message was addressed to another instance (another client) of our account.
    #[error("message addressed to another client of this account; ignored")]
    OtherInstance,
    /// The message uses a protocol version we do not speak or our policy does not allow.
    #[error("OTR protocol version {0} is not allowed by policy or not supported")]
    UnsupportedVersion(u16),
    /// A fragment was malformed or out of bounds, and dropped.
    #[error("fragment dropped: {0}")]
    Fragment(#[from] crate::fragment::FragmentError),
    /// An encoded message of an unknown type.
    #[error("unknown OTR message type {0:#04x}")]
    UnknownType(u8),
    /// A key exchange authenticated our own long-term key: someone reflected our own messages
    /// back at us. Nothing became private.
    #[error(
        "key exchange refused: the peer presented our own long-term key (our messages were reflected back)"
    )]
    OwnKey,
    /// Key exchange messages arrived faster than the session handles them (a flood, see
    /// SECURITY.md): this one was dropped without any work or reply. A real peer gets through
    /// once the flood stops; known peers have their own budget.
    #[error("key exchange message dropped: too many arrived in a short time (flood protection)")]
    RateLimited,
    /// Every instance slot holds a private or ended conversation, so a new client of the
    /// remote account cannot be added; end some conversations first.
    #[error("too many clients of the remote account hold private conversations; new one refused")]
    TooManyInstances,
}

/// Why a message could not be sent. Nothing was transmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The remote ended the private conversation. End it too (`end`) to send in plaintext,
    /// or start a new private conversation.
    #[error("the remote ended the private conversation; end it too or start a new one before sending")]
    Finished,
    /// Too many messages are waiting for the private conversation to start.
    #[error("too many messages are waiting for the private conversation to start; wait or end it")]
    QueueFull,
    /// There is no private conversation (with that instance) to do this in. Start one first.
    #[error("there is no private conversation; start one first")]
    NotPrivate,
    /// There is no SMP request to answer.
    #[error("there is no SMP request to answer")]
    NoSmpRequest,
    /// The data is too long for one TLV.
    #[error("data too long for one OTR TLV (at most 65531 bytes)")]
    TooLong,
    /// The extra symmetric key exists only in OTR version 3, and this conversation is v2.
    #[error("the extra symmetric key needs OTR version 3, and this private conversation uses version 2")]
    NeedsVersion3,
    /// A message text contained a NUL character, which OTR cannot carry.
    #[error("message contains a NUL character, which OTR cannot carry")]
    ContainsNul,
}
