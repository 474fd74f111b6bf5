//! otr-relay: the reference relay for otr-rs, and its client.
//!
//! The relay is a store-and-forward server for opaque strings (OTR messages): clients log in
//! with an account name and secret over TLS 1.3, send messages to other accounts, and receive
//! theirs in order, each kept on disk only until its recipient acknowledges it. The relay never
//! sees plaintext: clients run OTR end to end (the demo uses the REQUIRE_ENCRYPTION policy).
//!
//! - [`server`]: [`Server`], its [`Limits`], and [`ServerHandle`] for running it in-process.
//! - [`client`]: [`Client`] with a pinned certificate fingerprint (tokio).
//! - `futures_client` (feature `futures-io`): the same client protocol for async-std, smol
//!   and other futures-io runtimes, as a framing for an `otr_futures::Conversation`.
//! - [`proto`]: the frames on the wire.
//! - [`accounts`]: the accounts file (Argon2id hashes only).
//! - [`tls`]: certificates and the pin.
#![warn(missing_docs)]

pub mod accounts;
pub mod client;
mod files;
#[cfg(feature = "futures-io")]
pub mod futures_client;
pub mod proto;
pub mod push;
pub mod server;
mod store;
pub mod tls;

pub use client::{Client, ClientConfig, ClientError, Delivery, Inbox};
pub use proto::ErrorCode;
pub use server::{Limits, Observer, Server, ServerConfig, ServerError, ServerHandle, StoreEvent};
pub use tls::CertFingerprint;
