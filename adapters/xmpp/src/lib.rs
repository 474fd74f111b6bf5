//! otr-xmpp: Off-the-Record conversations over XMPP, on tokio.
//!
//! A [`Client`] logs in to an XMPP server with StartTLS (the server's certificate verified
//! against the CAs you choose in [`Trust`]), keeps one OTR [`Session`](otr_core::Session) per
//! contact (bare JID; the contact's clients are told apart by their OTR instance tags), and
//! carries OTR messages in the `<body>` of `type="chat"` messages with hints that keep servers
//! from archiving or copying them (see [`stanza`]). It drives the sessions' timers and
//! reconnects by itself. The application calls [`Client::send`], [`Client::start`],
//! [`Client::end`] and the SMP methods, and reads [`ClientEvent`]s from [`Events`].
//!
//! ```no_run
//! # async fn demo(identity: otr_core::DsaKeyPair, tag: otr_core::InstanceTag) -> Result<(), Box<dyn std::error::Error>> {
//! use otr_xmpp::{Client, ClientEvent, Config, Trust};
//! let mut config = Config::new("alice@example.org".parse()?, "secret", identity, tag);
//! config.trust = Trust::CaFile("/etc/my-ca.pem".into()); // or Trust::System (the default)
//! let (client, mut events) = Client::connect(config).await?;
//! let bob = "bob@example.org".parse()?;
//! client.send(&bob, "hello").await?; // held until the conversation is private (Policy::ALWAYS)
//! while let Some(event) = events.next().await {
//!     if let ClientEvent::Otr { peer, event: otr_core::Event::Message { text, encrypted: true, .. } } = event {
//!         println!("{peer}: {text}");
//!     }
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod contacts;
mod error;
pub mod stanza;
mod tls;

pub use client::{Client, ClientEvent, Config, Events, MAX_STRANGERS, Private};
pub use error::{ClientError, ConnectError};
pub use stanza::Rejected;
pub use tls::{StartTls, Trust};
pub use xmpp_parsers::jid::{BareJid, FullJid, Jid};
pub use xmpp_parsers::stanza_error::DefinedCondition;
