//! OTR strings in and out of `<message/>` stanzas.
//!
//! Outgoing: a `type="chat"` message whose `<body>` is the OTR string (or, where policy
//! allows plaintext, the plain text: it gets the same treatment), with hints that ask
//! servers not to archive it (XEP-0334 `<no-permanent-store/>`), not to copy it to our other
//! clients (XEP-0334 `<no-copy/>`, XEP-0280 `<private/>`: they could not decrypt it anyway),
//! and, for encoded OTR messages, XEP-0380's `<encryption/>` so other clients know what it is.
//!
//! Incoming: the top-level `<body>` of chat and normal messages is the OTR string; error
//! messages are bounces; anything else is reported or ignored, never fed to OTR.

use xmpp_parsers::carbons;
use xmpp_parsers::eme::ExplicitMessageEncryption;
use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::{Lang, Message, MessageType};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, StanzaError};

/// XEP-0334 (Message Processing Hints).
pub const NS_HINTS: &str = "urn:xmpp:hints";
/// XEP-0380's namespace for OTR.
pub const NS_EME_OTR: &str = "urn:xmpp:otr:0";

/// The `<message type="chat"/>` that carries `otr` to `to`, with the storage and copy hints.
pub fn otr_message(to: Jid, otr: String) -> Message {
    let encoded = otr.starts_with("?OTR");
    let mut m = Message::chat(Some(to)).with_body(Lang::default(), otr);
    m.payloads.push(Element::builder("no-copy", NS_HINTS).build());
    m.payloads.push(Element::builder("no-permanent-store", NS_HINTS).build());
    m = m.with_payload(carbons::Private);
    if encoded {
        m = m.with_payload(ExplicitMessageEncryption {
            namespace: NS_EME_OTR.to_owned(),
            name: Some("OTR".to_owned()),
        });
    }
    m
}

/// Why a received message was not given to OTR (see [`ClientEvent::Rejected`](crate::ClientEvent::Rejected)).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejected {
    /// The message had no sender address.
    #[error("message without a sender")]
    MissingSender,
    /// A group chat or headline message: OTR is between two people only.
    #[error("{0:?} message with a body: OTR runs in one-to-one chats only")]
    NotOneToOne(MessageType),
    /// The sender is not an account (a server or service address): it cannot run OTR.
    #[error("message from an address without an account part")]
    NotAnAccount,
    /// A new contact wrote while as many strangers as
    /// [`Config::max_strangers`](crate::Config::max_strangers) allows hold private
    /// conversations; no session was created for it.
    #[error(
        "message from a new contact dropped: as many strangers as allowed hold private conversations \
         (raise Config::max_strangers, or address the contact to keep it)"
    )]
    TooManyContacts,
}

/// What a received message is for us.
#[derive(Debug)]
pub enum Incoming {
    /// An OTR string (or plain text) for the session with `from`.
    Body {
        /// The sender.
        from: Jid,
        /// The body text.
        body: String,
    },
    /// The server (or the contact's server) could not deliver a message we sent.
    Bounce {
        /// Who it was for.
        from: Jid,
        /// The reason given, if any.
        condition: Option<DefinedCondition>,
    },
    /// Not usable, and the user should know.
    Rejected {
        /// The sender, if given.
        from: Option<Jid>,
        /// Why.
        reason: Rejected,
    },
    /// Nothing for OTR (chat states, receipts, ...): silently ignored.
    Nothing,
}

/// Sorts a received message.
pub fn classify(mut msg: Message) -> Incoming {
    let Some(from) = msg.from.take() else {
        return if msg.bodies.is_empty() {
            Incoming::Nothing
        } else {
            Incoming::Rejected { from: None, reason: Rejected::MissingSender }
        };
    };
    if msg.type_ == MessageType::Error {
        let condition = msg.extract_valid_payload::<StanzaError>().map(|e| e.defined_condition);
        return Incoming::Bounce { from, condition };
    }
    // The body without a language tag, else the first one: OTR strings carry no language.
    let body = match msg.bodies.remove(&Lang::default()) {
        Some(b) => b,
        None => match msg.bodies.into_values().next() {
            Some(b) => b,
            None => return Incoming::Nothing,
        },
    };
    match msg.type_ {
        MessageType::Chat | MessageType::Normal => {}
        other => return Incoming::Rejected { from: Some(from), reason: Rejected::NotOneToOne(other) },
    }
    if from.node().is_none() {
        return Incoming::Rejected { from: Some(from), reason: Rejected::NotAnAccount };
    }
    Incoming::Body { from, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Message {
        let el: Element = xml.parse().unwrap();
        Message::try_from(el).unwrap()
    }

    #[test]
    fn outgoing_carries_hints_and_eme() {
        let to: Jid = "bob@example.org/phone".parse().unwrap();
        let el: Element = otr_message(to, "?OTR:AAMD.".to_owned()).into();
        let xml = String::from(&el);
        for needle in [
            "no-copy",
            "no-permanent-store",
            "<private xmlns='urn:xmpp:carbons:2'",
            NS_EME_OTR,
            "type='chat'",
        ] {
            assert!(
                xml.contains(needle) || xml.replace('"', "'").contains(needle),
                "{needle} missing in {xml}"
            );
        }
        let plain: Element = otr_message("bob@example.org".parse().unwrap(), "hi".to_owned()).into();
        assert!(!String::from(&plain).contains(NS_EME_OTR));
    }

    #[test]
    fn incoming_kinds() {
        let m =
            parse("<message xmlns='jabber:client' from='a@x/r' type='chat'><body>?OTR?v3?</body></message>");
        assert!(matches!(classify(m), Incoming::Body { body, .. } if body == "?OTR?v3?"));
        let m = parse("<message xmlns='jabber:client' to='a@x' type='chat'><body>hi</body></message>");
        assert!(matches!(classify(m), Incoming::Rejected { reason: Rejected::MissingSender, .. }));
        let m = parse(
            "<message xmlns='jabber:client' from='room@muc.x/n' type='groupchat'><body>hi</body></message>",
        );
        assert!(matches!(
            classify(m),
            Incoming::Rejected { reason: Rejected::NotOneToOne(MessageType::Groupchat), .. }
        ));
        let m = parse("<message xmlns='jabber:client' from='x' type='chat'><body>hi</body></message>");
        assert!(matches!(classify(m), Incoming::Rejected { reason: Rejected::NotAnAccount, .. }));
        let m = parse(
            "<message xmlns='jabber:client' from='a@x/r' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        assert!(matches!(classify(m), Incoming::Nothing));
        let m = parse(
            "<message xmlns='jabber:client' from='b@x' type='error'><error type='cancel'>\
             <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
        );
        assert!(matches!(
            classify(m),
            Incoming::Bounce { condition: Some(DefinedCondition::ServiceUnavailable), .. }
        ));
    }
}
