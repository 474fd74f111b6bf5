//! otr-futures: drive [`otr_core::Session`]s over any futures-io stream.
//!
//! A [`Conversation`] owns a session, an `AsyncRead + AsyncWrite` transport (a TCP stream of
//! async-std or smol, a futures-rustls TLS stream, an in-memory pipe), a [`Framing`] that
//! turns OTR strings into bytes and back, the caller's RNG, and a [`Clock`] whose real timers
//! drive the session's heartbeats and fragment expiry. It depends on no particular runtime
//! (no tokio): its timers are async-io's, which async-std and smol both run on, and which
//! fall back to their own thread anywhere else.
//!
//! - [`Conversation`]: the loop ([`Conversation::next_event`]) and the user's actions.
//! - [`framing`]: [`Framing`], and [`LengthPrefixed`] for peer-to-peer sockets.
//! - [`clock`]: [`Clock`], real or accelerated time.
#![warn(missing_docs)]

pub mod clock;
mod conversation;
pub mod framing;

pub use clock::Clock;
pub use conversation::{Conversation, Error, Phase, Stats, Update};
pub use framing::{Decoded, Framing, LengthPrefixed, LengthPrefixedError};
