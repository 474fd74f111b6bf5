//! How transport messages (OTR strings) travel as bytes on a stream.
//!
//! A [`Link`](crate::Link) (and so every adapter's conversation) keeps the bytes read in a
//! buffer and asks its [`Framing`] to cut messages off the front; it writes what the framing
//! encodes. [`LengthPrefixed`] is the plain choice for a socket between two peers; a service
//! with its own protocol (otr-relay-client's `RelayFraming`, for one) implements [`Framing`]
//! too, and may answer frames itself (acknowledgements, keep-alives) without the conversation
//! knowing. Framing is sans-IO: the same value serves every runtime.

/// What [`Framing::decode`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded {
    /// A transport message for the session (its bytes were removed from the buffer).
    Message(String),
    /// A frame of the framing's own (an answer, a pong) was consumed; nothing for the session.
    Consumed,
    /// The buffer holds no complete frame yet: read more.
    NeedMore,
}

/// Turns transport messages into bytes and back.
pub trait Framing {
    /// The framing's error type (a frame too large, a refusal by a server, ...).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Bytes to write once per connection, before anything else (a login, a greeting). None
    /// by default. Called again (after [`reset`](Self::reset)) when the conversation moves to
    /// a new transport.
    ///
    /// # Errors
    /// If the greeting cannot be encoded.
    fn hello(&mut self, out: &mut Vec<u8>) -> Result<(), Self::Error> {
        let _ = out;
        Ok(())
    }

    /// Forgets the state of the previous connection (a login's answer, half-read frames)
    /// before [`hello`](Self::hello) is asked again for a new transport. Nothing by default.
    fn reset(&mut self) {}

    /// Appends the bytes that carry `message` to `out`.
    ///
    /// # Errors
    /// If `message` cannot be framed (too long for the framing, ...); nothing is appended then.
    fn encode(&mut self, message: &str, out: &mut Vec<u8>) -> Result<(), Self::Error>;

    /// Takes at most one frame off the front of `buf`. Bytes the framing wants to answer
    /// with (an acknowledgement) go to `out`; the conversation writes them after it handed
    /// the message to the session.
    ///
    /// # Errors
    /// When the bytes are not a valid frame, or the frame reports a fatal condition; the
    /// conversation ends with it.
    fn decode(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Decoded, Self::Error>;

    /// After this many milliseconds without writing, [`keepalive`](Self::keepalive) is asked
    /// for bytes (None, the default: never).
    fn keepalive_interval_ms(&self) -> Option<u64> {
        None
    }

    /// Appends a keep-alive frame to `out` (called as [`keepalive_interval_ms`](Self::keepalive_interval_ms) says).
    ///
    /// # Errors
    /// If it cannot be encoded.
    fn keepalive(&mut self, out: &mut Vec<u8>) -> Result<(), Self::Error> {
        let _ = out;
        Ok(())
    }
}

/// Why a [`LengthPrefixed`] frame was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LengthPrefixedError {
    /// The peer announced, or we tried to send, a message longer than the limit.
    #[error(
        "a message of {len} bytes exceeds the framing limit of {limit} bytes; raise the limit on both sides or send shorter messages"
    )]
    TooLarge {
        /// The message length.
        len: u64,
        /// The limit.
        limit: usize,
    },
    /// A received message is not UTF-8 (OTR messages always are).
    #[error("the peer sent a message that is not UTF-8 text")]
    NotUtf8,
}

/// Each message as a 4-byte big-endian length followed by its UTF-8 bytes. A length above
/// the limit is refused before anything is buffered for it.
#[derive(Debug, Clone, Copy)]
pub struct LengthPrefixed {
    limit: usize,
}

impl Default for LengthPrefixed {
    /// A limit of 1 MiB (OTR reassembles at most 1 MiB from fragments, too).
    fn default() -> Self {
        Self { limit: 1 << 20 }
    }
}

impl LengthPrefixed {
    /// Messages of at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self { limit }
    }
}

impl Framing for LengthPrefixed {
    type Error = LengthPrefixedError;

    fn encode(&mut self, message: &str, out: &mut Vec<u8>) -> Result<(), Self::Error> {
        let too_large = || LengthPrefixedError::TooLarge { len: message.len() as u64, limit: self.limit };
        if message.len() > self.limit {
            return Err(too_large());
        }
        let len = u32::try_from(message.len()).map_err(|_| too_large())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(message.as_bytes());
        Ok(())
    }

    fn decode(&mut self, buf: &mut Vec<u8>, _out: &mut Vec<u8>) -> Result<Decoded, Self::Error> {
        let Some(head) = buf.first_chunk::<4>() else { return Ok(Decoded::NeedMore) };
        let len = u32::from_be_bytes(*head);
        let too_large = LengthPrefixedError::TooLarge { len: len.into(), limit: self.limit };
        let n = usize::try_from(len).map_err(|_| too_large)?;
        if n > self.limit {
            return Err(LengthPrefixedError::TooLarge { len: len.into(), limit: self.limit });
        }
        let Some(end) = n.checked_add(4).filter(|&end| end <= buf.len()) else {
            return Ok(Decoded::NeedMore);
        };
        let body = buf.drain(..end).skip(4).collect::<Vec<u8>>();
        String::from_utf8(body).map(Decoded::Message).map_err(|_| LengthPrefixedError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut f = LengthPrefixed::default();
        let mut wire = Vec::new();
        f.encode("?OTR:AAMC", &mut wire).unwrap();
        f.encode("hola", &mut wire).unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Decoded::Message(m) = f.decode(&mut buf, &mut out).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, ["?OTR:AAMC", "hola"]);
        assert!(buf.is_empty() && out.is_empty());
    }

    #[test]
    fn oversized_and_non_utf8_frames_are_refused() {
        let mut f = LengthPrefixed::with_limit(8);
        let mut buf = 100_000_000u32.to_be_bytes().to_vec();
        let err = f.decode(&mut buf, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, LengthPrefixedError::TooLarge { len: 100_000_000, limit: 8 }));
        assert!(f.encode("nine bytes", &mut Vec::new()).is_err());
        let mut buf = vec![0, 0, 0, 2, 0xff, 0xfe];
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Err(LengthPrefixedError::NotUtf8)));
    }
}
