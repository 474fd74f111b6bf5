//! otr-driver: the one loop that drives [`otr_core::Session`]s, without I/O, clock or runtime.
//!
//! Every adapter (otr-futures, otr-tokio, otr-xmpp, the relay client) is a thin layer over
//! this crate: it moves bytes and arms one timer, and the driver does the rest.
//!
//! - [`Driver`]: many sessions keyed by a caller-chosen peer key, ONE timer queue for all of
//!   them, and the pump: transmits and events tagged with their peer, the earliest timeout,
//!   [`Driver::handle_timeout`] for every due session. For clients with many contacts
//!   (XMPP, a relay account).
//! - [`Link`]: one session over a framed byte stream (a socket, a TLS stream, an in-memory
//!   pipe): bytes in, bytes out, [`Update`]s, keep-alives. It survives its transport, so a
//!   conversation can be moved to a new connection without a new key exchange.
//! - [`Conversation`]: a [`Link`] over a stream, generic over a [`Runtime`] (how to sleep)
//!   and its [`RuntimeIo`] (how to read and write); otr-futures and otr-tokio each name it for their runtime, so the loop
//!   is written once. It uses only `std::task`, no runtime.
//! - [`framing`]: [`Framing`] (OTR strings to bytes and back), [`LengthPrefixed`].
//! - [`clock`]: [`Clock`], which maps real (or accelerated) time to [`otr_core::Timestamp`]s
//!   for adapters; the driver itself only ever takes `now` as an argument.
//!
//! Like otr-core, everything takes `now` and (where randomness is needed) the caller's RNG.
//!
//! # The loop
//! After any input (a message received, a user action, [`Driver::handle_timeout`]), drain:
//!
//! ```
//! # use otr_driver::Driver;
//! # fn send_to_network(_: &str, _: &str) {}
//! # fn show(_: &str, _: &otr_core::Event) {}
//! # fn drain(driver: &mut Driver<String>) {
//! while let Some((peer, t)) = driver.poll_transmit() {
//!     send_to_network(&peer, &t.message);
//! }
//! while let Some((peer, e)) = driver.poll_event() {
//!     show(&peer, &e);
//! }
//! // then sleep until driver.poll_timeout() (or the next input) and call
//! // driver.handle_timeout(now) when it is reached; early calls are harmless.
//! # }
//! ```
#![warn(missing_docs)]

pub mod clock;
mod conversation;
mod driver;
pub mod framing;
mod link;

pub use clock::Clock;
pub use conversation::{Conversation, Runtime, RuntimeIo};
pub use driver::Driver;
pub use framing::{Decoded, Framing, LengthPrefixed, LengthPrefixedError};
pub use link::{Link, LinkError, Phase, Stats, Update};
