//! otr-keystore: identity and trust for [`otr_core`] sessions.
//!
//! - [`store`]: the encrypted key store ([`KeyStore`]): our accounts' long-term DSA keys, the
//!   fingerprints seen for each contact and how they were verified, sealed with AES-256-GCM
//!   under a key derived from a passphrase with Argon2id.
//! - [`sealed`]: small secrets sealed under the store's key without running Argon2 again
//!   (session snapshots), with [`SealKey::seal_blob`] and [`SealKey::open_blob`].
//! - [`libotr`]: libotr's own `otr.private_key` and `otr.fingerprints` files, so users can
//!   bring their identity and trust from Pidgin, irssi-otr or profanity, and take it back.
//!
//! Everything here is pure, bytes in and bytes out: reading and writing files (atomically) is
//! the application's business, or the `otr` facade's (`otr::store`). The protocol engine does
//! not depend on this crate, so an application that keeps its keys elsewhere never compiles
//! AES-GCM or Argon2.
//!
//! ```
//! use otr_keystore::{ContactId, KdfParams, KeyStore, SealKey, Seen};
//! # let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
//! let mut store = KeyStore::new();
//! let ours = store.generate_account("alice@example.org", "xmpp", &mut rng)?.fingerprint();
//! let bob = ContactId::new("alice@example.org", "xmpp", "bob@example.org");
//! // On Event::Secure { fingerprint, .. } from bob's session (here: any fingerprint):
//! assert!(matches!(store.record_seen(&bob, ours)?, Seen::New));
//! // Seal it (KdfParams::DEFAULT for real files; a cheap setting keeps this example fast).
//! let cheap = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };
//! let key = SealKey::derive(b"correct horse", cheap, &mut rng)?;
//! let file = store.seal(&key, &mut rng)?;
//! let (opened, _) = KeyStore::open(&file, b"correct horse")?;
//! assert_eq!(opened.contacts().count(), 1);
//! # Ok::<(), otr_keystore::KeystoreError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
pub mod libotr;
pub mod sealed;
pub mod store;

pub use libotr::{LibotrFileError, LibotrFingerprint};
pub use sealed::SealedError;
pub use store::{ContactId, KdfParams, KeyStore, KeystoreError, Observation, SealKey, Seen, Trust};
