//! Faults, through a real Prosody: the server restarted mid-conversation, a message to an
//! offline contact (and to an account that does not exist), malformed stanzas and OTR
//! messages from a hostile client.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Options, Prosody, STEP, expect, jid, raw_client};
use otr_core::{Event, ReceiveError, Sent};
use otr_xmpp::{BareJid, Client, ClientEvent, DefinedCondition, Events, Rejected};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::minidom::Element;
use tokio_xmpp::{IqRequest, IqResponse};

fn secure(e: &ClientEvent) -> Option<otr_core::Ssid> {
    match e {
        ClientEvent::Otr { event: Event::Secure { ssid, .. }, .. } => Some(*ssid),
        _ => None,
    }
}

fn text_of(e: &ClientEvent) -> Option<(String, bool)> {
    match e {
        ClientEvent::Otr { event: Event::Message { text, encrypted, .. }, .. } => {
            Some((text.clone(), *encrypted))
        }
        _ => None,
    }
}

async fn say(from: &Client, to: &BareJid, events: &mut Events, text: &str) {
    assert_eq!(from.send(to, text).await.unwrap(), Sent::Encrypted);
    assert_eq!(expect(events, text, text_of).await, (text.to_owned(), true));
}

/// Prosody is killed while alice and bob are private, and started again a moment later.
/// Both clients are told (ConnectionLost, ReconnectFailed while it is down, Online), reconnect
/// by themselves, and the OTR conversation goes on with the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_restart_mid_conversation() {
    let Some(mut server) = Prosody::start(Options::default()) else { return };
    let (alice, mut alice_ev) = Client::connect(server.client_config("alice", 21)).await.unwrap();
    let (bob, mut bob_ev) = Client::connect(server.client_config("bob", 22)).await.unwrap();
    let (a, b) = (jid("alice"), jid("bob"));
    alice.start(&b).await.unwrap();
    let ssid = expect(&mut alice_ev, "Secure", secure).await;
    expect(&mut bob_ev, "Secure", secure).await;
    say(&alice, &b, &mut bob_ev, "before the restart").await;

    // Down long enough for reconnection attempts to fail (and the user to hear of it).
    server.kill();
    for events in [&mut alice_ev, &mut bob_ev] {
        expect(events, "ConnectionLost", |e| matches!(e, ClientEvent::ConnectionLost).then_some(())).await;
        let error = expect(events, "ReconnectFailed", |e| match e {
            ClientEvent::ReconnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
        assert!(error.contains("refused"), "{error}");
    }
    let t0 = std::time::Instant::now();
    server.start_again();
    for events in [&mut alice_ev, &mut bob_ev] {
        let resumed = expect(events, "Online again", |e| match e {
            ClientEvent::Online { resumed, .. } => Some(*resumed),
            _ => None,
        })
        .await;
        // The server lost every stream: nothing to resume.
        assert!(!resumed);
    }
    eprintln!("both clients back online {:?} after the server came back", t0.elapsed());

    assert_eq!(alice.private_with(&b).await.unwrap().map(|p| p.ssid), Some(ssid));
    say(&alice, &b, &mut bob_ev, "after the restart, alice").await;
    say(&bob, &a, &mut alice_ev, "after the restart, bob").await;
    assert_eq!(bob.private_with(&a).await.unwrap().map(|p| p.ssid), Some(ssid));
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// A message to a contact who is offline waits (OTR holds it, the query sits in the
/// server's offline store); when the contact logs in, the key exchange completes and the
/// message arrives encrypted. A message to an account that does not exist comes back as
/// a typed Undeliverable event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_to_offline_contact() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let carol_cfg = server.client_config("carol", 32);
    let (alice, mut alice_ev) = Client::connect(server.client_config("alice", 31)).await.unwrap();
    let (a, c) = (jid("alice"), jid("carol"));

    assert_eq!(alice.send(&c, "left while you were away").await.unwrap(), Sent::Held);
    // Give the query time to reach the offline store before carol logs in.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (carol, mut carol_ev) = Client::connect(carol_cfg).await.unwrap();
    expect(&mut carol_ev, "Secure", secure).await;
    expect(&mut alice_ev, "Secure", secure).await;
    assert_eq!(
        expect(&mut carol_ev, "held message", text_of).await,
        ("left while you were away".to_owned(), true)
    );
    say(&carol, &a, &mut alice_ev, "got it").await;

    let nobody = jid("nobody");
    assert_eq!(alice.send(&nobody, "anyone?").await.unwrap(), Sent::Held);
    let (peer, condition) = expect(&mut alice_ev, "Undeliverable", |e| match e {
        ClientEvent::Undeliverable { peer, condition } => Some((peer.clone(), condition.clone())),
        _ => None,
    })
    .await;
    assert_eq!(peer, nobody);
    assert_eq!(condition, Some(DefinedCondition::ServiceUnavailable));
    alice.close().await.unwrap();
    carol.close().await.unwrap();
}

/// A hostile client sends alice broken OTR messages and odd stanzas. Each is reported as a
/// typed event (or dropped by tokio-xmpp when it is not a valid stanza); nothing panics,
/// the connection stays up, and alice's private conversation with bob is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_stanzas_and_messages() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let (alice, mut alice_ev) = Client::connect(server.client_config("alice", 41)).await.unwrap();
    let (bob, mut bob_ev) = Client::connect(server.client_config("bob", 42)).await.unwrap();
    let mut mallory = raw_client(&server, "mallory").await;
    let (a, b, m) = (jid("alice"), jid("bob"), jid("mallory"));
    alice.start(&b).await.unwrap();
    expect(&mut alice_ev, "Secure", secure).await;
    expect(&mut bob_ev, "Secure", secure).await;

    let chat = |body: &str| Message::chat(Some(a.clone().into())).with_body(Lang::default(), body.to_owned());
    let otr_error = |e: &ClientEvent| match e {
        ClientEvent::OtrError { peer, error } => Some((peer.clone(), *error)),
        _ => None,
    };

    // Not base64.
    mallory.send_stanza(chat("?OTR:AAMD!!!!.").into()).await.unwrap();
    let (peer, err) = expect(&mut alice_ev, "OtrError (bad base64)", otr_error).await;
    assert_eq!(peer, m);
    assert!(matches!(err, ReceiveError::Malformed(_)), "{err:?}");

    // A data message (v3, type 3) cut short inside its sender instance tag.
    mallory.send_stanza(chat("?OTR:AAMDAAAB.").into()).await.unwrap();
    let (_, err) = expect(&mut alice_ev, "OtrError (truncated)", otr_error).await;
    assert!(matches!(err, ReceiveError::Malformed(_)), "{err:?}");

    // A fragment claiming an absurd count.
    mallory.send_stanza(chat("?OTR|00000101|00000000,00001,65535,xyz,").into()).await.unwrap();
    let (_, err) = expect(&mut alice_ev, "OtrError (fragment)", otr_error).await;
    assert!(matches!(err, ReceiveError::Fragment(_) | ReceiveError::Malformed(_)), "{err:?}");

    // A headline with a body: not a one-to-one chat. (Prosody itself bounces groupchat
    // messages sent to an account.)
    let mut headline = chat("?OTR?v3?");
    headline.type_ = MessageType::Headline;
    mallory.send_stanza(headline.into()).await.unwrap();
    let reason = expect(&mut alice_ev, "Rejected", |e| match e {
        ClientEvent::Rejected { reason, .. } => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reason, Rejected::NotOneToOne(MessageType::Headline));

    // Not a valid stanza for xmpp-parsers (two <thread/>s), though Prosody routes it:
    // tokio-xmpp drops it without closing the stream, and nothing reaches OTR (else its
    // body would be the next event below).
    let mut twice = chat("first");
    for id in ["t1", "t2"] {
        twice.payloads.push(Element::builder("thread", "jabber:client").append(id).build());
    }
    mallory.send_stanza(twice.into()).await.unwrap();

    // IQs: a ping is answered, any other request gets service-unavailable.
    let to = Some(alice.jid().clone());
    let ping = IqRequest::Get(Element::builder("ping", "urn:xmpp:ping").build());
    let pong = tokio::time::timeout(STEP, mallory.send_iq(to.clone(), ping).await).await.unwrap().unwrap();
    assert!(matches!(pong, IqResponse::Result(None)), "{pong:?}");
    let version = IqRequest::Get(Element::builder("query", "jabber:iq:version").build());
    let refused = tokio::time::timeout(STEP, mallory.send_iq(to, version).await).await.unwrap().unwrap();
    assert!(
        matches!(&refused, IqResponse::Error(e) if e.defined_condition == DefinedCondition::ServiceUnavailable),
        "{refused:?}"
    );

    // Plaintext while alice requires encryption: flagged, never shown as private.
    mallory.send_stanza(chat("still connected?").into()).await.unwrap();
    let text = expect(&mut alice_ev, "UnencryptedReceived", |e| match e {
        ClientEvent::Otr { event: Event::UnencryptedReceived { text }, .. } => Some(text.clone()),
        ClientEvent::ConnectionLost => panic!("a malformed stanza cost alice her connection"),
        _ => None,
    })
    .await;
    assert_eq!(text, "still connected?");

    // The private conversation with bob is unharmed.
    say(&bob, &a, &mut alice_ev, "all fine here").await;
    say(&alice, &b, &mut bob_ev, "here too").await;
    let _ = mallory.send_end().await;
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

/// The server's certificate is verified: a client trusting other CAs, or expecting another
/// name, is refused before it logs in; a wrong password is refused by the server. Each is a
/// typed error from `connect`, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_are_typed() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let good = server.client_config("alice", 51);

    let mut other_ca = good.clone();
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    other_ca.trust = otr_xmpp::Trust::Roots(vec![stranger.cert.der().clone()]);
    let err = Client::connect(other_ca).await.unwrap_err();
    assert!(matches!(err, otr_xmpp::ConnectError::Certificate(_)), "{err}");

    let mut other_name = good.clone();
    other_name.tls_server_name = Some("xmpp.example.org".to_owned());
    let err = Client::connect(other_name).await.unwrap_err();
    assert!(matches!(err, otr_xmpp::ConnectError::Certificate(_)), "{err}");

    let mut wrong_password = good.clone();
    wrong_password.password = "not the password".to_owned().into();
    let err = Client::connect(wrong_password).await.unwrap_err();
    assert!(matches!(err, otr_xmpp::ConnectError::Auth(_)), "{err}");

    let (client, _events) = Client::connect(good).await.unwrap();
    client.close().await.unwrap();
}

/// Strangers (accounts alice never wrote to) flood her, each from its own account: twice as
/// many as she keeps sessions for (lowered to 4 here from the default 4,096). She must not
/// lock out everyone who writes afterwards: idle strangers without a private conversation
/// make room (least recently active first), so bob, who writes after the flood, gets a
/// private conversation; carol, a stranger whose private conversation began before the
/// flood, keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_flood_does_not_lock_out_contacts() {
    const CAP: usize = 4;
    let Some(server) = Prosody::start(Options::default()) else { return };
    let mut alice_cfg = server.client_config("alice", 71);
    alice_cfg.max_strangers = CAP;
    let (alice, mut alice_ev) = Client::connect(alice_cfg).await.unwrap();
    let (carol, mut carol_ev) = Client::connect(server.client_config("carol", 73)).await.unwrap();
    let (a, b, c) = (jid("alice"), jid("bob"), jid("carol"));
    carol.start(&a).await.unwrap();
    expect(&mut carol_ev, "carol Secure", secure).await;
    expect(&mut alice_ev, "alice Secure with carol", secure).await;

    let mut strangers = Vec::new();
    for i in 0..2 * CAP {
        let name = format!("stranger{i}");
        let mut stranger = raw_client(&server, &name).await;
        let spam = Message::chat(Some(a.clone().into())).with_body(Lang::default(), format!("spam {i}"));
        stranger.send_stanza(spam.into()).await.unwrap();
        let from = expect(&mut alice_ev, "the stranger's message", |e| match e {
            ClientEvent::Otr { peer, event: Event::UnencryptedReceived { .. } } => Some(peer.clone()),
            ClientEvent::Rejected { from, reason: Rejected::TooManyContacts } => {
                panic!("alice refused {from:?}: the strangers before it locked her contacts")
            }
            _ => None,
        })
        .await;
        assert_eq!(from, jid(&name));
        strangers.push(stranger);
    }

    let (bob, mut bob_ev) = Client::connect(server.client_config("bob", 72)).await.unwrap();
    bob.start(&a).await.unwrap();
    expect(&mut bob_ev, "bob Secure", secure).await;
    expect(&mut alice_ev, "alice Secure with bob", |e| match e {
        ClientEvent::Otr { peer, event: Event::Secure { .. } } if *peer == b => Some(()),
        ClientEvent::Rejected { from, reason: Rejected::TooManyContacts } => {
            panic!("alice refused {from:?} after the flood: strangers locked out her contacts")
        }
        _ => None,
    })
    .await;
    say(&bob, &a, &mut alice_ev, "written after the flood").await;
    say(&carol, &a, &mut alice_ev, "still private").await;
    say(&alice, &c, &mut carol_ev, "yes, still private").await;
    for stranger in strangers {
        let _ = stranger.send_end().await;
    }
    for client in [&alice, &bob, &carol] {
        client.close().await.unwrap();
    }
}
