//! What kind of OTR message a transport string is, without a session: for logs, relays and
//! user interfaces that show what travels (never its content).

use crate::data::{DataMessage, FLAG_IGNORE_UNREADABLE};
use crate::message::{self, Header, Incoming, kind};
use crate::wire::Reader;

/// The kind of a transport message, as [`inspect`] reads it from its outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageKind {
    /// A query message (`?OTRv3?`): an offer to talk OTR.
    Query,
    /// AKE 1/4, the D-H Commit message.
    DhCommit,
    /// AKE 2/4, the D-H Key message.
    DhKey,
    /// AKE 3/4, the Reveal Signature message.
    RevealSignature,
    /// AKE 4/4, the Signature message.
    Signature,
    /// An encrypted data message; the key ids show the keys rotating.
    Data {
        /// The sender's DH key id.
        sender_keyid: u32,
        /// The recipient's DH key id.
        recipient_keyid: u32,
        /// A control message (heartbeat, disconnect, SMP) the receiver may drop silently.
        ignore_unreadable: bool,
    },
    /// One fragment of a longer OTR message.
    Fragment,
    /// An OTR error message (`?OTR Error:`).
    Error,
    /// Not OTR: plaintext, possibly carrying the whitespace tag.
    Plaintext {
        /// Whether it carried the whitespace tag (an offer to talk OTR).
        tagged: bool,
    },
    /// An encoded OTR message of a type this engine does not know.
    Unknown,
    /// Looks like OTR but does not decode.
    Malformed,
}

/// Reads the kind of `msg` from its outside: the envelope and the header, no keys.
///
/// ```
/// use otr_core::{MessageKind, inspect};
/// assert_eq!(inspect("?OTRv3?"), MessageKind::Query);
/// assert_eq!(inspect("hello"), MessageKind::Plaintext { tagged: false });
/// assert_eq!(inspect("?OTR:AAMK"), MessageKind::Malformed);
/// ```
pub fn inspect(msg: &str) -> MessageKind {
    match message::classify(msg) {
        Ok(Incoming::Query(_)) => MessageKind::Query,
        Ok(Incoming::Encoded(bytes)) => encoded(&bytes),
        Ok(Incoming::Fragment(_)) => MessageKind::Fragment,
        Ok(Incoming::Error(_)) => MessageKind::Error,
        Ok(Incoming::Plain { tag, .. }) => MessageKind::Plaintext { tagged: tag.is_some() },
        Err(_) => MessageKind::Malformed,
    }
}

fn encoded(bytes: &[u8]) -> MessageKind {
    let Ok(header) = Header::read(&mut Reader::new(bytes)) else { return MessageKind::Malformed };
    match header.kind {
        kind::DH_COMMIT => MessageKind::DhCommit,
        kind::DH_KEY => MessageKind::DhKey,
        kind::REVEAL_SIGNATURE => MessageKind::RevealSignature,
        kind::SIGNATURE => MessageKind::Signature,
        kind::DATA => match DataMessage::read(bytes) {
            Ok(d) => MessageKind::Data {
                sender_keyid: d.sender_keyid,
                recipient_keyid: d.recipient_keyid,
                ignore_unreadable: d.flags & FLAG_IGNORE_UNREADABLE != 0,
            },
            Err(_) => MessageKind::Malformed,
        },
        _ => MessageKind::Unknown,
    }
}
