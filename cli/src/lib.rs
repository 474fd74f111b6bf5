//! The `otr` tool's subcommands, as a library so that tests and the `otr-peer` example run
//! the same code as the binary (`src/main.rs`):
//!
//! - [`keys`]: the encrypted key store (generate, list, libotr import/export, trust, passwd);
//! - [`chat`]: an interactive private chat through an otr-relay;
//! - [`xmpp`]: an interactive private chat over any XMPP account;
//! - [`peer`]: the stdio peer of the peer protocol, for interop harnesses.
//!
//! Each has an `Args` (its flags, with `--help`) and a `main` that runs it.
#![warn(missing_docs)]

pub mod chat;
pub mod keys;
pub mod peer;
pub mod secrets;
pub mod xmpp;
