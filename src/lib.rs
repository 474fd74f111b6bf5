//! otr: Off-the-Record Messaging (OTR version 3) for Rust.
//!
//! This facade re-exports the sans-IO engine [`otr_core`] and adds what an application needs
//! around it that is not protocol logic: a system random number generator and helpers to keep
//! a long-term key in a file, and the encrypted key store on disk ([`store`]). The adapters
//! (relay, XMPP, futures) build on it.
#![warn(missing_docs)]

pub use otr_core::*;

pub mod keyfile;
pub mod store;

pub use store::{Store, StoreError};

/// The operating system's cryptographic RNG, in the form every engine call accepts.
pub type SystemRng = rand_core::UnwrapErr<getrandom::SysRng>;

/// A handle to the operating system's RNG.
pub fn system_rng() -> SystemRng {
    rand_core::UnwrapErr(getrandom::SysRng)
}
