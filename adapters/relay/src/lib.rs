//! otr-relay: the reference relay for otr-rs (the server).
//!
//! The relay is a store-and-forward server for opaque strings (OTR messages): clients log in
//! with an account name and secret over TLS 1.3, send messages to other accounts, and receive
//! theirs in order on each of their devices, each kept on disk only until every device of its
//! recipient acknowledges it (or it expires). Devices may register a push endpoint. The relay never
//! sees plaintext: clients run OTR end to end (the demo uses the REQUIRE_ENCRYPTION policy).
//!
//! - [`server`]: [`Server`], its [`Limits`], and [`ServerHandle`] for running it in-process.
//! - [`proto`]: the frames on the wire (otr-relay-client's, re-exported).
//! - [`accounts`]: the accounts file (Argon2id hashes only).
//! - [`tls`]: the server's certificate; [`CertFingerprint`] is what clients pin.
//! - [`push`]: content-free wake-ups to UnifiedPush and Web Push endpoints (not yet wired to
//!   the message path; see docs/push.md).
//!
//! Clients depend on `otr-relay-client` (frames, login, the pin, a framing for otr-futures
//! and otr-tokio conversations, a tokio client for many peers), which has none of this
//! crate's server dependencies (redb, rcgen, clap, argon2).
#![warn(missing_docs)]

pub mod accounts;
mod files;
pub mod push;
pub mod server;
mod store;
pub mod tls;

pub use otr_relay_client::proto;
pub use otr_relay_client::proto::ErrorCode;
pub use server::{Limits, Observer, Server, ServerConfig, ServerError, ServerHandle, StoreEvent, StoredHook};
pub use tls::CertFingerprint;
