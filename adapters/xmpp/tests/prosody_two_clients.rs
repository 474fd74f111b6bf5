//! Two otr-xmpp clients hold an OTR conversation through a real Prosody (with mod_mam
//! archiving everything by default): AKE, SMP, 100 messages, end. Afterwards the server's
//! storage holds neither plaintext nor ciphertext of it, while a message sent without our
//! hints is archived (so the check is not vacuous).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Options, Prosody, expect, jid};
use otr_core::Event;
use otr_xmpp::{Client, ClientEvent};
use tokio_xmpp::parsers::message::{Lang, Message};

fn secure(e: &ClientEvent) -> Option<otr_core::Fingerprint> {
    match e {
        ClientEvent::Otr { event: Event::Secure { fingerprint, .. }, .. } => Some(*fingerprint),
        _ => None,
    }
}

fn message(e: &ClientEvent) -> Option<(String, bool)> {
    match e {
        ClientEvent::Otr { event: Event::Message { text, encrypted, .. }, .. } => {
            Some((text.clone(), *encrypted))
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_through_prosody() {
    let Some(server) = Prosody::start(Options { mam: true }) else { return };
    let started = std::time::Instant::now();
    let (alice, mut alice_ev) = Client::connect(server.client_config("alice", 1)).await.unwrap();
    let (bob, mut bob_ev) = Client::connect(server.client_config("bob", 2)).await.unwrap();
    let (a, b) = (jid("alice"), jid("bob"));

    // AKE: alice asks, both end up private with each other's key.
    alice.start(&b).await.unwrap();
    let bob_fp_at_alice = expect(&mut alice_ev, "alice Secure", secure).await;
    let alice_fp_at_bob = expect(&mut bob_ev, "bob Secure", secure).await;
    assert_eq!(bob_fp_at_alice, bob.fingerprint());
    assert_eq!(alice_fp_at_bob, alice.fingerprint());
    let pa = alice.private_with(&b).await.unwrap().unwrap();
    let pb = bob.private_with(&a).await.unwrap().unwrap();
    assert_eq!(pa.ssid, pb.ssid);

    // SMP with a question.
    alice.smp_start(&b, Some("our café?"), b"blue door").await.unwrap();
    let q = expect(&mut bob_ev, "SMP request", |e| match e {
        ClientEvent::Otr { event: Event::SmpRequest { question, .. }, .. } => Some(question.clone()),
        _ => None,
    })
    .await;
    assert_eq!(q.as_deref(), Some("our café?"));
    bob.smp_respond(&a, b"blue door").await.unwrap();
    for (events, fp) in [(&mut alice_ev, bob.fingerprint()), (&mut bob_ev, alice.fingerprint())] {
        let verified = expect(events, "SmpSucceeded", |e| match e {
            ClientEvent::Otr { event: Event::SmpSucceeded { fingerprint, .. }, .. } => Some(*fingerprint),
            _ => None,
        })
        .await;
        assert_eq!(verified, fp);
    }

    // 100 messages, alternating direction every ten, each one checked on arrival.
    let t0 = std::time::Instant::now();
    for i in 0..100 {
        let text = format!("plaintext-marker-{i:03} ünïcode <xml> & \"quotes\"");
        let (from, to_jid, to_events) =
            if (i / 10) % 2 == 0 { (&alice, &b, &mut bob_ev) } else { (&bob, &a, &mut alice_ev) };
        assert_eq!(from.send(to_jid, &text).await.unwrap(), otr_core::Sent::Encrypted);
        let (got, encrypted) = expect(to_events, "message", message).await;
        assert_eq!(got, text);
        assert!(encrypted, "message {i} arrived unencrypted");
    }
    eprintln!("100 messages through Prosody in {:?}", t0.elapsed());

    // End: alice ends; bob is told, and can no longer send into the ended conversation.
    alice.end(&b).await.unwrap();
    expect(&mut alice_ev, "alice Ended", |e| {
        matches!(e, ClientEvent::Otr { event: Event::Ended { .. }, .. }).then_some(())
    })
    .await;
    expect(&mut bob_ev, "bob RemoteEnded", |e| {
        matches!(e, ClientEvent::Otr { event: Event::RemoteEnded { .. }, .. }).then_some(())
    })
    .await;
    assert!(matches!(
        bob.send(&a, "too late").await,
        Err(otr_xmpp::ClientError::Otr(otr_core::SendError::Finished))
    ));

    // Control: a plain tokio-xmpp client sends bob a message without hints; MAM keeps it.
    let mut carol = common::raw_client(&server, "carol").await;
    let control =
        Message::chat(Some(b.clone().into())).with_body(Lang::default(), "control-archived-marker".into());
    carol.send_stanza(control.into()).await.unwrap();
    // Bob requires encryption: the plaintext is flagged, not shown as a conversation message.
    let text = expect(&mut bob_ev, "control message", |e| match e {
        ClientEvent::Otr { event: Event::UnencryptedReceived { text }, .. } => Some(text.clone()),
        _ => None,
    })
    .await;
    assert_eq!(text, "control-archived-marker");
    carol.send_end().await.unwrap();

    alice.close().await.unwrap();
    bob.close().await.unwrap();

    let stored = server.stored_text();
    assert!(stored.contains("control-archived-marker"), "MAM did not archive the control message:\n{stored}");
    assert!(!stored.contains("plaintext-marker"), "plaintext reached the server's storage");
    assert!(!stored.contains("?OTR"), "OTR messages were archived despite <no-permanent-store/>:\n{stored}");
    eprintln!("whole conversation test: {:?}", started.elapsed());
}

/// Bob is logged in twice (say phone and laptop). Alice's one session with bob@localhost
/// holds a private conversation with each of his clients, told apart by instance tags: each
/// client's messages arrive with its tag, and what alice sends to one tag reaches only that
/// client, although the server hands both clients everything sent to the bare JID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_of_one_account() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let (alice, mut alice_ev) = Client::connect(server.client_config("alice", 61)).await.unwrap();
    let phone_cfg = server.client_config("bob", 62);
    let mut laptop_cfg = phone_cfg.clone();
    laptop_cfg.identity = common::key(63);
    laptop_cfg.instance_tag = otr_core::InstanceTag::new(0x0bad_cafe).unwrap();
    let (phone, mut phone_ev) = Client::connect(phone_cfg.clone()).await.unwrap();
    let (laptop, mut laptop_ev) = Client::connect(laptop_cfg.clone()).await.unwrap();
    let (a, b) = (jid("alice"), jid("bob"));

    // One query to bob@localhost: both of his clients answer, alice gets two conversations.
    alice.start(&b).await.unwrap();
    let mut secured = Vec::new();
    for _ in 0..2 {
        secured.push(
            expect(&mut alice_ev, "Secure", |e| match e {
                ClientEvent::Otr { event: Event::Secure { instance, fingerprint, .. }, .. } => {
                    Some((*instance, *fingerprint))
                }
                _ => None,
            })
            .await,
        );
    }
    secured.sort_by_key(|(tag, _)| *tag == laptop_cfg.instance_tag);
    assert_eq!(
        secured,
        vec![(phone_cfg.instance_tag, phone.fingerprint()), (laptop_cfg.instance_tag, laptop.fingerprint())]
    );
    expect(&mut phone_ev, "phone Secure", secure).await;
    expect(&mut laptop_ev, "laptop Secure", secure).await;

    let from_instance = |e: &ClientEvent| match e {
        ClientEvent::Otr { event: Event::Message { instance, text, encrypted: true }, .. } => {
            Some((*instance, text.clone()))
        }
        _ => None,
    };
    phone.send(&a, "from the phone").await.unwrap();
    assert_eq!(
        expect(&mut alice_ev, "phone's message", from_instance).await,
        (Some(phone_cfg.instance_tag), "from the phone".to_owned())
    );
    laptop.send(&a, "from the laptop").await.unwrap();
    assert_eq!(
        expect(&mut alice_ev, "laptop's message", from_instance).await,
        (Some(laptop_cfg.instance_tag), "from the laptop".to_owned())
    );

    alice.send_to(&b, phone_cfg.instance_tag, "to the phone").await.unwrap();
    alice.send_to(&b, laptop_cfg.instance_tag, "to the laptop").await.unwrap();
    assert_eq!(expect(&mut phone_ev, "message", message).await, ("to the phone".to_owned(), true));
    // The laptop's next message is its own: the phone's never reached its user.
    assert_eq!(expect(&mut laptop_ev, "message", message).await, ("to the laptop".to_owned(), true));
    for c in [&alice, &phone, &laptop] {
        c.close().await.unwrap();
    }
}
