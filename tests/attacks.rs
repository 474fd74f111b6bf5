//! Active attackers against the engine, each run through the public `Session` API (issue 16;
//! SECURITY.md, "Active attackers"): someone who can inject, rewrite or reflect messages on
//! the network, or a peer with its own key. Each test failed before its fix.

mod common;

use common::{Pair, Side, key, session};
use otr::message::{self, Header, Incoming, kind};
use otr::{
    DsaKeyPair, Event, InstanceTag, Policy, ReceiveError, Session, SessionConfig, SsidHalf, Timestamp,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The bytes inside an encoded `?OTR:…` message.
fn decode(msg: &str) -> Vec<u8> {
    match message::classify(msg) {
        Ok(Incoming::Encoded(bytes)) => bytes.to_vec(),
        other => panic!("not an encoded OTR message: {other:?}"),
    }
}

/// `msg` with its v3 header's sender and receiver instance tags rewritten.
fn retag(msg: &str, sender: u32, receiver: u32) -> String {
    let mut bytes = decode(msg);
    bytes[3..7].copy_from_slice(&sender.to_be_bytes());
    bytes[7..11].copy_from_slice(&receiver.to_be_bytes());
    message::encode_envelope(&bytes)
}

fn drain(s: &mut Session) -> Vec<String> {
    std::iter::from_fn(|| s.poll_transmit()).map(|t| t.message).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Mallory: her own long-term key, but Bob's instance tag (instance tags are public).
fn mallory_as(bob: &Session) -> Session {
    let config = SessionConfig::new("mallory", Policy::OPPORTUNISTIC, bob.instance_tag());
    Session::new(config, key(33))
}

/// Routes everything between Alice and Mallory until both are quiet (Bob hears nothing).
fn drive_with_mallory(p: &mut Pair, mallory: &mut Session, mallory_events: &mut Vec<Event>) {
    for _ in 0..100 {
        let from_alice = drain(&mut p.a);
        let from_mallory = drain(mallory);
        if from_alice.is_empty() && from_mallory.is_empty() {
            return;
        }
        for m in from_alice {
            p.wire.push((Side::A, m.clone()));
            let _ = mallory.receive(p.now, &m, &mut p.rng);
        }
        for m in from_mallory {
            let _ = p.a.receive(p.now, &m, &mut p.rng);
        }
        p.collect();
        mallory_events.extend(events(mallory));
    }
    panic!("alice and mallory never went quiet");
}

/// The three unauthenticated triggers of a new key exchange while Alice is private with Bob.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    Query,
    ErrorMessage,
    CommitWithBobsTag,
}

/// Alice is private with Bob; Mallory triggers a new AKE and completes it with her own key
/// while Alice types. Alice's text must not reach Mallory: it comes back to Alice's
/// application, and the key change is its own event, not a refresh.
fn held_text_is_not_released_to_another_key(trigger: Trigger) {
    let policy = Policy::OPPORTUNISTIC | Policy::ERROR_START_AKE;
    let mut p = Pair::new(policy, policy);
    p.secure(Side::A);
    let bob_fp = p.b.identity().fingerprint();
    let mut mallory = mallory_as(&p.b);
    let mallory_fp = mallory.identity().fingerprint();
    let mut mallory_events = Vec::new();
    p.a_events.clear();

    let injected = match trigger {
        Trigger::Query => "?OTRv3?".to_string(),
        Trigger::ErrorMessage => "?OTR Error: The encrypted message received could not be read.".to_string(),
        Trigger::CommitWithBobsTag => {
            mallory.receive(p.now, "?OTRv3?", &mut p.rng).unwrap();
            drain(&mut mallory).pop().expect("mallory's D-H Commit")
        }
    };
    p.a.receive(p.now, &injected, &mut p.rng).unwrap();
    // Alice types while the exchange Mallory triggered runs: the text waits for new keys.
    assert_eq!(
        p.send(Side::A, "the meeting is at 9, door code 4711").unwrap(),
        otr::Sent::Held,
        "{trigger:?}"
    );
    drive_with_mallory(&mut p, &mut mallory, &mut mallory_events);

    assert!(
        !mallory_events.iter().any(|e| matches!(e, Event::Message { .. })),
        "{trigger:?}: mallory read alice's text: {mallory_events:?}"
    );
    let changed = p.a_events.iter().position(|e| {
        matches!(e, Event::FingerprintChanged { previous, fingerprint, .. }
            if *previous == bob_fp && *fingerprint == mallory_fp)
    });
    let secure = p
        .a_events
        .iter()
        .position(|e| matches!(e, Event::Secure { fingerprint, .. } if *fingerprint == mallory_fp));
    assert!(changed.is_some() && changed < secure, "{trigger:?}: {:?}", p.a_events);
    assert!(
        p.a_events.iter().any(
            |e| matches!(e, Event::Secure { refreshed: false, fingerprint, .. } if *fingerprint == mallory_fp)
        ),
        "{trigger:?}: a new key is never a refresh"
    );
    assert!(
        p.a_events.contains(&Event::HeldReturned {
            intended: bob_fp,
            texts: vec!["the meeting is at 9, door code 4711".into()]
        }),
        "{trigger:?}: the held text goes back to alice's application: {:?}",
        p.a_events
    );
}

#[test]
fn held_text_is_not_released_to_another_key_after_a_query() {
    held_text_is_not_released_to_another_key(Trigger::Query);
}

#[test]
fn held_text_is_not_released_to_another_key_after_an_error_message() {
    held_text_is_not_released_to_another_key(Trigger::ErrorMessage);
}

#[test]
fn held_text_is_not_released_to_another_key_after_a_commit_with_the_peers_tag() {
    held_text_is_not_released_to_another_key(Trigger::CommitWithBobsTag);
}

/// The same key coming back is a refresh, and what waited for it is sent to it.
#[test]
fn a_refresh_with_the_same_key_sends_the_held_text() {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p.a_events.clear();
    let now = p.now;
    p.b.start(now);
    let query = p.b.poll_transmit().unwrap().message;
    p.a.receive(p.now, &query, &mut p.rng).unwrap();
    assert_eq!(p.send(Side::A, "still you?").unwrap(), otr::Sent::Held);
    p.drive();
    assert!(p.a_events.iter().any(|e| matches!(e, Event::Secure { refreshed: true, .. })));
    assert!(
        !p.a_events
            .iter()
            .any(|e| matches!(e, Event::FingerprintChanged { .. } | Event::HeldReturned { .. }))
    );
    assert_eq!(p.messages(Side::B).last(), Some(&("still you?".to_string(), true)));
}

/// An injected query makes Alice's next text wait at most RESYNC_TIMEOUT_MS, and repeating
/// the injection within RESYNC_INTERVAL_MS delays nothing more.
#[test]
fn an_injected_trigger_delays_an_established_conversation_briefly_and_rarely() {
    use otr::session::{RESYNC_INTERVAL_MS, RESYNC_TIMEOUT_MS};
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p.a.receive(p.now, "?OTRv3?", &mut p.rng).unwrap();
    drain(&mut p.a); // Alice's D-H Commit: the attacker drops it.
    assert_eq!(p.send(Side::A, "one").unwrap(), otr::Sent::Held);
    assert!(p.a.poll_timeout().is_some_and(|t| t <= p.now.plus_millis(RESYNC_TIMEOUT_MS)));
    p.tick(RESYNC_TIMEOUT_MS);
    let now = p.now;
    p.a.handle_timeout(now);
    p.drive();
    assert_eq!(p.messages(Side::B).last(), Some(&("one".to_string(), true)));

    // Again, before the interval is over: no wait at all.
    p.tick(1_000);
    const { assert!(RESYNC_TIMEOUT_MS + 1_000 < RESYNC_INTERVAL_MS) };
    p.a.receive(p.now, "?OTRv3?", &mut p.rng).unwrap();
    drain(&mut p.a);
    assert_eq!(p.send(Side::A, "two").unwrap(), otr::Sent::Encrypted);
    p.drive();
    assert_eq!(p.messages(Side::B).last(), Some(&("two".to_string(), true)));
}

/// A D-H Commit with `sender` as its instance tag, forged from a real one (its body is not
/// checked before a Reveal Signature arrives).
fn forged_commit(template: &[u8], sender: u32) -> String {
    let mut bytes = template.to_vec();
    bytes[3..7].copy_from_slice(&sender.to_be_bytes());
    message::encode_envelope(&bytes)
}

/// 20,000 forged D-H Commits from new instance tags (1,000 a second on the session's clock):
/// the instances without a conversation stay bounded, the replies (work) are bounded by the
/// budget, the private conversation with Bob keeps working, Bob re-keys during the flood,
/// and a new client gets through once the flood stops.
#[test]
fn a_flood_of_forged_commits_is_bounded_and_real_peers_get_through() {
    use otr::session::{AKE_BURST, AKE_REFILL_MS, MAX_PENDING_INSTANCES};
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p.a_events.clear();
    let mut template = session("mallory", Policy::OPPORTUNISTIC, 44);
    template.receive(p.now, "?OTRv3?", &mut p.rng).unwrap();
    let template = decode(&template.poll_transmit().unwrap().message);

    let start = p.now;
    let mut replies = 0usize;
    let mut rekeyed = false;
    for n in 0..20_000u32 {
        p.tick(1);
        let forged = forged_commit(&template, 0x1000_0000 + n);
        let _ = p.a.receive(p.now, &forged, &mut p.rng);
        replies += drain(&mut p.a).len();
        assert!(p.a.instances().count() <= MAX_PENDING_INSTANCES + 1, "instances bounded at commit {n}");
        if n == 10_000 {
            // Bob re-keys in the middle of the flood (Alice asks), and they keep talking.
            let now = p.now;
            p.a.start(now);
            p.drive();
            rekeyed = p.a_events.iter().any(|e| matches!(e, Event::Secure { refreshed: true, .. }));
            p.send(Side::B, "still here").unwrap();
            p.send(Side::A, "me too").unwrap();
            p.drive();
        }
    }
    assert!(rekeyed, "bob's re-key got through the flood: {:?}", p.a_events);
    assert_eq!(p.messages(Side::A).last(), Some(&("still here".to_string(), true)));
    assert_eq!(p.messages(Side::B).last(), Some(&("me too".to_string(), true)));
    let seconds = (p.now.0 - start.0) / 1000 + 1;
    let budget = AKE_BURST as usize + (seconds * 1000 / AKE_REFILL_MS) as usize;
    assert!(replies <= budget, "{replies} D-H Key replies for 20,000 commits (budget {budget})");
    assert!(p.a.private_with().is_some());

    // A new client of Bob's account, once the flood is over.
    p.tick(AKE_REFILL_MS * 4);
    let mut bob2 = session("bob", Policy::OPPORTUNISTIC, 23);
    let now = p.now;
    p.a.start(now);
    let query = p.a.poll_transmit().unwrap().message;
    bob2.receive(now, &query, &mut p.rng).unwrap();
    for _ in 0..10 {
        for m in drain(&mut bob2) {
            let _ = p.a.receive(now, &m, &mut p.rng);
        }
        for m in drain(&mut p.a) {
            let _ = bob2.receive(now, &m, &mut p.rng);
        }
    }
    assert!(events(&mut bob2).iter().any(|e| matches!(e, Event::Secure { .. })), "a new client got through");
}

/// Flagged data messages from ever new instance tags make no instance at all.
#[test]
fn data_messages_from_unknown_instances_make_no_state() {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p.send(Side::B, "x").unwrap();
    let data = p.b.poll_transmit().unwrap().message;
    let ours = p.a.instance_tag().get();
    for n in 0..1_000u32 {
        let _ = p.a.receive(p.now, &retag(&data, 0x2000_0000 + n, ours), &mut p.rng);
    }
    assert_eq!(p.a.instances().count(), 1, "only bob's instance");
}

/// Alice's own messages reflected back with rewritten instance tags (commit from X, key from
/// Y, reveal from X, signature from Y) would complete an exchange with her own key.
#[test]
fn our_own_key_is_never_accepted_as_a_peer() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut alice = session("alice", Policy::OPPORTUNISTIC, 11);
    let now = Timestamp(1_000);
    let (a, x, y) = (alice.instance_tag().get(), 0x0bad_0001, 0x0bad_0002);
    alice.receive(now, "?OTRv3?", &mut rng).unwrap();
    let commit = drain(&mut alice).pop().unwrap();
    alice.receive(now, &retag(&commit, x, 0), &mut rng).unwrap();
    let dh_key = drain(&mut alice).pop().unwrap();
    alice.receive(now, &retag(&dh_key, y, a), &mut rng).unwrap();
    let reveal = drain(&mut alice).pop().unwrap();
    let result = alice.receive(now, &retag(&reveal, x, a), &mut rng);
    assert_eq!(result, Err(ReceiveError::OwnKey));
    let signature = drain(&mut alice);
    assert!(signature.is_empty(), "no Signature message goes out: {signature:?}");
    assert!(!events(&mut alice).iter().any(|e| matches!(e, Event::Secure { .. })));
    assert!(alice.private_with().is_none());
}

/// Mallory announces keyid 0xFFFFFFFF for her AKE key, then sends a data message under it
/// (and one under the keyid a wrapping peer would use next, 0).
#[test]
fn a_peer_keyid_of_u32_max_neither_panics_nor_wraps() {
    use otr::ake::Ake;
    use otr::keys::{KeyWindow, SessionKeys};
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let now = Timestamp(1_000);
    let mut alice = session("alice", Policy::OPPORTUNISTIC, 11);
    let mallory_key: DsaKeyPair = key(33);
    let mallory_tag = InstanceTag::new(0x0bad_0003).unwrap();
    let alice_tag = alice.instance_tag();
    let encode = |kind: u8, body: &[u8]| {
        let mut w = otr::wire::Writer::new();
        Header::v3(kind, mallory_tag, Some(alice_tag)).write(&mut w);
        w.raw(body);
        message::encode_envelope(w.as_slice())
    };
    let body = |msg: &str| decode(msg)[11..].to_vec();

    let mut ake = Ake::default();
    ake.announce_keyid(u32::MAX);
    let commit = ake.start(&mut rng);
    alice.receive(now, &encode(kind::DH_COMMIT, &commit.body), &mut rng).unwrap();
    let dh_key = body(&drain(&mut alice).pop().unwrap());
    let reveal = ake.handle(kind::DH_KEY, &dh_key, &mallory_key, &mut rng).unwrap().reply.unwrap();
    alice.receive(now, &encode(kind::REVEAL_SIGNATURE, &reveal.body), &mut rng).unwrap();
    let signature = body(&drain(&mut alice).pop().unwrap());
    let est = ake.handle(kind::SIGNATURE, &signature, &mallory_key, &mut rng).unwrap().established.unwrap();
    assert!(events(&mut alice).iter().any(|e| matches!(e, Event::Secure { .. })));

    // Mallory's data message names her AKE key by the keyid she announced.
    let mac_key = SessionKeys::derive(&est.our_dh, &est.their_dh).send_mac;
    let mut window = KeyWindow::after_ake(est.our_dh, est.their_dh, est.their_keyid, &mut rng);
    let header = Header::v3(kind::DATA, mallory_tag, Some(alice_tag));
    let data_with_keyid = |window: &mut KeyWindow, keyid: u32, text: &str| {
        let (mut bytes, _) =
            otr::data::seal(header, 0, window, &otr::tlv::join_plaintext(text.as_bytes(), &[]));
        bytes[12..16].copy_from_slice(&keyid.to_be_bytes());
        let end = bytes.len() - 24; // MAC (20) and an empty revealed-keys DATA (4) follow
        let mac = otr::crypto::hmac_sha1(&mac_key, &bytes[..end]);
        bytes[end..end + 20].copy_from_slice(&mac);
        message::encode_envelope(&bytes)
    };
    let first = data_with_keyid(&mut window, u32::MAX, "keyid max");
    alice.receive(now, &first, &mut rng).unwrap();
    assert!(events(&mut alice).contains(&Event::Message {
        instance: Some(mallory_tag),
        text: "keyid max".into(),
        encrypted: true
    }));
    let wrapped = data_with_keyid(&mut window, 0, "keyid wrapped to 0");
    assert!(matches!(alice.receive(now, &wrapped, &mut rng), Err(ReceiveError::Unreadable(_))));
    // Alice's own keys still rotate and she can still send.
    alice.send_to(now, mallory_tag, "still fine").unwrap();
    assert!(!drain(&mut alice).is_empty());
}

/// The spec: the side that sent the Reveal Signature shows the ssid's first half in bold.
#[test]
fn each_side_is_told_which_half_of_the_ssid_to_show_in_bold() {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    // Alice's query makes Bob send the D-H Commit, and so the Reveal Signature.
    p.secure(Side::A);
    let bold = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::Secure { bold, .. } => Some(*bold),
            _ => None,
        })
    };
    assert_eq!(bold(&p.b_events), Some(SsidHalf::First));
    assert_eq!(bold(&p.a_events), Some(SsidHalf::Second));
    let ssid = common::last_secure(&p.a_events).unwrap().1;
    let hex = ssid.to_string();
    assert_eq!(ssid.marked(SsidHalf::First), format!("[{}] {}", &hex[..8], &hex[8..]));
}

/// Fragments that could never be accepted are dropped when they arrive, not buffered.
#[test]
fn fragments_from_invalid_instance_tags_are_dropped_on_arrival() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut alice = session("alice", Policy::OPPORTUNISTIC, 11);
    let now = Timestamp(1_000);
    let ours = alice.instance_tag().get();
    let piece = "A".repeat(10_000);
    for sender in [0u32, 1, 0xff] {
        let f = format!("?OTR|{sender:08x}|{ours:08x},00001,00002,{piece},");
        assert!(alice.receive(now, &f, &mut rng).is_err());
    }
    // Version 2 fragments to a session that does not allow version 2.
    let f = format!("?OTR,00001,00002,{piece},");
    assert_eq!(alice.receive(now, &f, &mut rng), Err(ReceiveError::UnsupportedVersion(2)));
    assert_eq!(alice.buffered_fragment_bytes(), 0);
}
