//! otr-core: a sans-IO Off-the-Record Messaging (OTR version 3) engine.
//!
//! The engine never touches a socket, a file or a clock: the application passes transport
//! messages, user actions, the current time and a cryptographic RNG in, and pulls transport
//! messages and events out. See [`Session`] for the loop.
//!
//! Module map: [`wire`] (the OTR data types), [`message`] (envelopes, queries, tags,
//! headers), [`crypto`] (DH group, DSA identities, symmetric primitives), [`ake`] (the key
//! exchange), [`keys`] (the DH key window), [`data`] (data messages), [`tlv`], [`policy`],
//! [`instance`], [`session`], [`event`], [`error`]; identity and trust: [`keystore`] (the
//! encrypted key store) and [`libotr_files`] (libotr's `otr.private_key` and `otr.fingerprints`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ake;
pub mod crypto;
pub mod data;
pub mod error;
pub mod event;
pub mod fragment;
pub mod instance;
pub mod keys;
pub mod keystore;
pub mod libotr_files;
pub mod message;
pub mod policy;
pub mod session;
pub mod smp;
pub mod tlv;
#[cfg(feature = "trace")]
pub mod trace;
pub mod wire;

pub use crypto::dsa::{DsaComponents, DsaKeyPair, DsaPublicKey, Fingerprint};
pub use error::{ReceiveError, SendError};
pub use event::{Event, Ssid, Timestamp, Transmit};
pub use instance::InstanceTag;
pub use keystore::{ContactId, KdfParams, KeyStore, KeystoreError, SealKey, Seen, Trust};
pub use policy::Policy;
pub use session::{Sent, Session, SessionConfig};
