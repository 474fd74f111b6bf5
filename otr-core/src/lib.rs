//! otr-core: a sans-IO Off-the-Record Messaging (OTR versions 3 and 2) engine.
//!
//! The engine never touches a socket, a file or a clock: the application passes transport
//! messages, user actions, the current time and a cryptographic RNG in, and pulls transport
//! messages and events out. See [`Session`] for the loop.
//!
//! The public API is what an application needs, flat at the crate root: [`Session`] and its
//! [`SessionConfig`], the [`Event`]s and [`Transmit`]s it produces, the long-term identity
//! ([`DsaKeyPair`], [`Fingerprint`]), [`Policy`], [`InstanceTag`], the errors, and
//! [`inspect`] to tell what kind of OTR message a transport string is. Keeping keys and trust
//! on disk is the `otr-keystore` crate's business; driving many sessions over a transport is
//! the driver's and the adapters'.
//!
//! # A conversation
//! ```
//! use otr_core::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
//! let now = Timestamp(0);
//! let config = |name: &str, rng: &mut _| {
//!     SessionConfig::new(name, Policy::OPPORTUNISTIC, InstanceTag::random(rng))
//! };
//! let mut alice = Session::new(config("alice", &mut rng), DsaKeyPair::generate(&mut rng));
//! let mut bob = Session::new(config("bob", &mut rng), DsaKeyPair::generate(&mut rng));
//! alice.start(now);
//! // The transport: carry every transmit to the other side until both are quiet.
//! loop {
//!     let mut moved = false;
//!     while let Some(t) = alice.poll_transmit() {
//!         bob.receive(now, &t.message, &mut rng).ok();
//!         moved = true;
//!     }
//!     while let Some(t) = bob.poll_transmit() {
//!         alice.receive(now, &t.message, &mut rng).ok();
//!         moved = true;
//!     }
//!     if !moved { break; }
//! }
//! assert!(std::iter::from_fn(|| bob.poll_event()).any(|e| matches!(e, Event::Secure { .. })));
//! alice.send(now, "hello")?;
//! # while let Some(t) = alice.poll_transmit() { bob.receive(now, &t.message, &mut rng).ok(); }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! A real application also calls [`Session::handle_timeout`] when [`Session::poll_timeout`]
//! says (heartbeats, fragment expiry, resynchronisation); the driver and adapters do it.
//!
//! # Internals
//! The modules behind the public API (wire format, AKE, key window, data messages, SMP,
//! fragments, TLVs) are private. The hidden feature `internals` makes them public for this
//! project's own tests, fuzz targets, benchmarks and test vectors; it is not part of the API,
//! follows no semantic versioning, and no application should enable it.
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

/// Declares modules that are private, or public and hidden with the `internals` feature.
macro_rules! internal_modules {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal_modules! {
    ake;
    budget;
    crypto;
    data;
    error;
    event;
    fragment;
    instance;
    keys;
    message;
    policy;
    session;
    smp;
    tlv;
    wire;
}
mod inspect;
#[cfg(feature = "trace")]
pub mod trace;

pub use ake::AkeError;
pub use crypto::CryptoError;
pub use crypto::dsa::{DsaComponents, DsaKeyPair, DsaPublicKey, Fingerprint};
pub use data::Unreadable;
pub use error::{ReceiveError, SendError};
pub use event::{Event, Ssid, SsidHalf, Timestamp, Transmit};
pub use fragment::FragmentError;
pub use inspect::{MessageKind, inspect};
pub use instance::InstanceTag;
pub use policy::Policy;
pub use session::{Sent, Session, SessionConfig, Snapshot, SnapshotError};
pub use wire::WireError;
