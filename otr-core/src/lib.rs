//! otr-core: a sans-IO Off-the-Record Messaging (OTR versions 3 and 2) engine.
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
//!
//! # Versions and downgrades
//!
//! Version 3 is the default. Version 2, for clients that never got v3 (profanity, python-potr,
//! old Pidgin), is spoken only when the policy has [`Policy::ALLOW_V2`]; the highest version
//! both sides allow is chosen, as libotr does, and [`Event::Secure`] says which (a v2
//! conversation has no instance tags and is reported under [`InstanceTag::V2`]).
//!
//! Query messages and whitespace tags are not authenticated, and the AKE does not sign the
//! versions offered, so an active attacker can strip the v3 offer and make two clients that
//! both allow v2 speak v2. The protocol cannot prevent this on a first contact: keep v2 off
//! unless a contact needs it, and show the version. A session does refuse a v2 exchange with a
//! key that already completed a v3 exchange in it ([`Event::DowngradeRefused`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ake;
mod budget;
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
pub use event::{Event, Ssid, SsidHalf, Timestamp, Transmit};
pub use instance::InstanceTag;
pub use keystore::{ContactId, KdfParams, KeyStore, KeystoreError, SealKey, Seen, Trust};
pub use policy::Policy;
pub use session::{Sent, Session, SessionConfig, Snapshot, SnapshotError};
