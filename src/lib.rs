//! otr: Off-the-Record Messaging (OTR version 3) for Rust.
//!
//! This facade re-exports the sans-IO engine [`otr_core`] and adds what an application needs
//! around it that is not protocol logic: a system random number generator and helpers to keep
//! a long-term key in a file, the encrypted key store on disk ([`store`]), and a way to show a
//! peer's text on a terminal without letting it steer the terminal ([`terminal`]). The adapters
//! (relay, XMPP, futures) build on it.
#![warn(missing_docs)]

pub use otr_core::*;
/// Identity and trust: the encrypted key store and libotr's files (the `otr-keystore` crate).
pub use otr_keystore as keystore;
pub use otr_keystore::{ContactId, KdfParams, KeyStore, KeystoreError, SealKey, Seen, Trust};

pub mod keyfile;
pub mod snapshots;
pub mod store;
pub mod terminal;

pub use snapshots::{SnapshotDir, SnapshotFileError};
pub use store::{Store, StoreError};

/// The operating system's cryptographic RNG, in the form every engine call accepts.
pub type SystemRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// A handle to the operating system's RNG.
pub fn system_rng() -> SystemRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}

/// The README's Rust code blocks, compiled and run as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
