//! otr-relay-client: talk to an otr-relay without the server's dependencies.
//!
//! The relay (crate `otr-relay`, the server) is a store-and-forward service for opaque OTR
//! strings over TLS 1.3. This crate is everything a client needs, and nothing of the server
//! (no database, no certificate generation, no command line):
//!
//! - [`proto`]: the frames on the wire, shared with the server.
//! - [`pin`]: [`CertFingerprint`], the relay certificate's SHA-256 that clients pin.
//! - [`ClientConfig`], [`ClientError`]: where the relay is, the account and this device's id,
//!   an optional [`PushRegistration`] for this device, what went wrong.
//! - [`RelayFraming`]: the relay's frames as an [`otr_driver::Framing`] for one peer account,
//!   so a conversation of otr-futures or otr-tokio talks through the relay (login, send,
//!   deliver, ack, keep-alive), and logs in again when it moves to a new connection.
//! - `tokio_client` (feature `tokio`): `connect_tls` over tokio, and a `Client` for many
//!   peers over one login.
//! - `futures_client` (feature `futures-io`): `connect_tls` over any futures-io stream
//!   (async-std, smol).
//!
//! An application composes this crate with one adapter: e.g. feature `tokio` with
//! otr-tokio, or feature `futures-io` with otr-futures. Neither feature pulls an adapter.
#![warn(missing_docs)]

mod config;
mod framing;
#[cfg(feature = "futures-io")]
pub mod futures_client;
pub mod pin;
pub mod proto;
#[cfg(feature = "tokio")]
pub mod tokio_client;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
mod verifier;

pub use config::{ClientConfig, ClientError};
pub use framing::RelayFraming;
pub use pin::CertFingerprint;
pub use proto::{ErrorCode, PushRegistration};
