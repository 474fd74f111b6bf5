//! OTR version 2 between two of our own sessions, deterministic (seeded ChaCha RNG, fake
//! clock): version negotiation, and the v2 conversation end to end (AKE, rotation, SMP, end
//! and restart, whitespace start, REQUIRE_ENCRYPTION, fragments, crossing commits). The same
//! scenarios run live against a v2-only libotr in `tests/libotr/tests/interop.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Pair, Side, sample_text};
use otr::data::DataMessage;
use otr::message::{Incoming, classify};
use otr::{Event, InstanceTag, Policy, SendError, Sent, Session, SessionConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// v2 only.
const V2: Policy = Policy::ALLOW_V2;
/// v3 only.
const V3: Policy = Policy::MANUAL;
/// Both.
const V23: Policy = Policy::from_bits(Policy::ALLOW_V2.bits() | Policy::ALLOW_V3.bits());

/// The version each side reported for its newest private conversation, and its instance.
fn negotiated(p: &Pair) -> [Option<(u16, InstanceTag)>; 2] {
    [&p.a_events, &p.b_events].map(|evs| {
        evs.iter().rev().find_map(|e| match e {
            Event::Secure { version, instance, .. } => Some((*version, *instance)),
            _ => None,
        })
    })
}

fn v2_pair() -> Pair {
    let mut p = Pair::new(V2, V23);
    p.secure(Side::A);
    assert_eq!(negotiated(&p), [Some((2, InstanceTag::V2)); 2]);
    p
}

/// The protocol version of every encoded message (or reassembled fragment) on the wire.
fn wire_versions(p: &Pair) -> Vec<u16> {
    p.wire
        .iter()
        .filter_map(|(_, m)| match classify(m) {
            Ok(Incoming::Encoded(b)) => Some(u16::from_be_bytes([b[0], b[1]])),
            _ => None,
        })
        .collect()
}

#[test]
fn the_highest_version_both_allow_is_chosen() {
    for (pa, pb, expected) in [
        (V23, V23, Some(3)),
        (V23, V3, Some(3)),
        (V23, V2, Some(2)),
        (V2, V23, Some(2)),
        (V2, V2, Some(2)),
        (V2, V3, None),
    ] {
        for side in [Side::A, Side::B] {
            let mut p = Pair::new(pa, pb);
            let now = p.now;
            p.session(side).start(now);
            p.drive();
            let got = negotiated(&p);
            assert_eq!(got[0].map(|v| v.0), expected, "{pa:?} {pb:?} started by {side:?}");
            assert_eq!(got[1].map(|v| v.0), expected);
            if let Some(v) = expected {
                assert!(wire_versions(&p).iter().all(|&w| w == v), "every message in v{v}");
            }
        }
    }
}

#[test]
fn queries_and_whitespace_tags_offer_what_the_policy_allows() {
    for (policy, query, tag_len) in [(V2, "?OTRv2?", 24), (V3, "?OTRv3?", 24), (V23, "?OTRv23?", 32)] {
        let mut s = common::session("alice", policy | Policy::SEND_WHITESPACE_TAG, 5);
        s.start(otr::Timestamp(0));
        assert!(s.poll_transmit().unwrap().message.starts_with(query));
        assert_eq!(s.send(otr::Timestamp(0), "hi"), Ok(Sent::Plaintext));
        assert_eq!(s.poll_transmit().unwrap().message.len(), 2 + tag_len);
    }
}

#[test]
fn two_hundred_v2_messages_rotate_keys() {
    let mut p = v2_pair();
    let mut sent = [vec![], vec![]];
    for i in 0..200 {
        let side = if i < 100 { [Side::A, Side::B][i % 2] } else { [Side::A, Side::B][(i / 10) % 2] };
        let text = sample_text(i);
        assert_eq!(p.send(side, &text), Ok(Sent::Encrypted));
        sent[side as usize].push((text, true));
        if i < 100 || i % 10 == 9 {
            p.drive();
        }
    }
    p.drive();
    assert_eq!(p.messages(Side::B), sent[0]);
    assert_eq!(p.messages(Side::A), sent[1]);
    let keyids: Vec<u32> = p
        .wire
        .iter()
        .filter_map(|(_, m)| match classify(m) {
            Ok(Incoming::Encoded(b)) => DataMessage::read(&b).ok().map(|d| d.sender_keyid),
            _ => None,
        })
        .collect();
    assert!(keyids.iter().max().unwrap() > &50, "keys rotated");
    assert!(wire_versions(&p).iter().all(|&v| v == 2));
    assert!(p.a_errors.is_empty() && p.b_errors.is_empty());
}

#[test]
fn smp_over_v2_with_a_question_and_with_a_wrong_secret() {
    for (answer, outcome_ok) in [("Lisboa", true), ("Porto", false)] {
        let mut p = v2_pair();
        let (now, mut rng) = (p.now, p.rng.clone());
        p.a.smp_start(now, Some("Where did we meet?"), b"Lisboa", &mut rng).unwrap();
        p.drive();
        let asked = p.b_events.iter().find_map(|e| match e {
            Event::SmpRequest { question, instance } => Some((question.clone(), *instance)),
            _ => None,
        });
        assert_eq!(asked, Some((Some("Where did we meet?".into()), InstanceTag::V2)));
        p.b.smp_respond(now, answer.as_bytes(), &mut rng).unwrap();
        p.drive();
        for events in [&p.a_events, &p.b_events] {
            let ok = events.iter().any(|e| matches!(e, Event::SmpSucceeded { .. }));
            let failed = events.iter().any(|e| matches!(e, Event::SmpFailed { .. }));
            assert_eq!((ok, failed), (outcome_ok, !outcome_ok), "{answer}");
        }
    }
}

#[test]
fn v2_end_and_restart_and_no_extra_symmetric_key() {
    let mut p = v2_pair();
    let now = p.now;
    assert_eq!(p.a.extra_symmetric_key(now, 1, b""), Err(SendError::NeedsVersion3));
    assert!(p.a.poll_transmit().is_none());
    let first = common::last_secure(&p.a_events).unwrap().1;
    p.b.end(now);
    p.drive();
    assert!(p.a_events.iter().any(|e| matches!(e, Event::RemoteEnded { instance } if instance.is_v2())));
    assert_eq!(p.send(Side::A, "hello?"), Err(SendError::Finished));
    p.restart_after_bob_ended(first, "again");
}

#[test]
fn v2_whitespace_start_and_required_encryption() {
    let opportunistic = Policy::OPPORTUNISTIC | V2;
    let v2_opportunistic = Policy::from_bits(opportunistic.bits() & !Policy::ALLOW_V3.bits());
    let mut p = Pair::new(opportunistic, v2_opportunistic);
    assert_eq!(p.send(Side::A, "hi"), Ok(Sent::Plaintext));
    p.drive();
    assert_eq!(p.messages(Side::B), vec![("hi".to_string(), false)]);
    assert_eq!(negotiated(&p), [Some((2, InstanceTag::V2)); 2]);

    let always_v2 = Policy::from_bits((Policy::ALWAYS | V2).bits() & !Policy::ALLOW_V3.bits());
    let mut p = Pair::new(always_v2, Policy::OPPORTUNISTIC | V2);
    assert_eq!(p.send(Side::A, "secret one"), Ok(Sent::Held));
    assert_eq!(p.send(Side::A, "secret two"), Ok(Sent::Held));
    p.drive();
    assert!(p.wire.iter().all(|(_, m)| !m.contains("secret")), "no plaintext on the wire");
    assert!(p.wire[0].1.starts_with("?OTRv2?"));
    let held = vec![("secret one".to_string(), true), ("secret two".to_string(), true)];
    assert_eq!(p.messages(Side::B), held, "sent once each, encrypted, in v2");
    assert!(wire_versions(&p).iter().all(|&v| v == 2));
}

#[test]
fn v2_fragments_at_300_bytes_carry_the_ake_smp_and_long_messages() {
    let sized = |name: &str, policy, seed| {
        let mut config =
            SessionConfig::new(name, policy, InstanceTag::random(&mut ChaCha20Rng::seed_from_u64(seed)));
        config.max_message_size = 300;
        Session::new(config, common::key(seed))
    };
    let mut p = Pair::new(V2, V2);
    p.a = sized("alice", V23, 11);
    p.b = sized("bob", V2, 22);
    p.secure(Side::B);
    let (now, mut rng) = (p.now, p.rng.clone());
    p.a.smp_start(now, Some("q"), b"s", &mut rng).unwrap();
    p.drive();
    p.b.smp_respond(now, b"s", &mut rng).unwrap();
    p.drive();
    assert!(p.b_events.iter().any(|e| matches!(e, Event::SmpSucceeded { .. })));
    let long: String = (0..60).map(sample_text).collect();
    p.send(Side::A, &long).unwrap();
    p.send(Side::B, &long.to_uppercase()).unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B), vec![(long.clone(), true)]);
    assert_eq!(p.messages(Side::A), vec![(long.to_uppercase(), true)]);
    assert!(p.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits");
    assert!(p.wire.iter().filter(|(_, m)| m.starts_with("?OTR,")).count() > 20, "v2 fragments");
    assert!(!p.wire.iter().any(|(_, m)| m.starts_with("?OTR|")), "no v3 fragments");
}

#[test]
fn crossing_v2_commits_resolve_to_one_conversation() {
    for seed in 0..8 {
        let mut p = Pair::seeded(V2, V23, seed);
        let now = p.now;
        p.a.start(now);
        p.b.start(now);
        let qa = p.a.poll_transmit().unwrap().message;
        let qb = p.b.poll_transmit().unwrap().message;
        p.a.receive(now, &qb, &mut p.rng).unwrap();
        p.b.receive(now, &qa, &mut p.rng).unwrap();
        p.drive();
        let [a, b] = negotiated(&p);
        assert_eq!((a.map(|v| v.0), b.map(|v| v.0)), (Some(2), Some(2)), "seed {seed}");
        assert_eq!(common::last_secure(&p.a_events).unwrap().1, common::last_secure(&p.b_events).unwrap().1);
        p.send(Side::B, "after crossing").unwrap();
        p.drive();
        assert_eq!(p.messages(Side::A), vec![("after crossing".to_string(), true)]);
    }
}

#[test]
fn a_stripped_v3_offer_cannot_downgrade_a_client_that_spoke_v3() {
    let mut p = Pair::new(V23, V23);
    let ssid = p.secure(Side::A);
    assert_eq!(negotiated(&p)[0].map(|v| v.0), Some(3));
    // Bob asks again; the network rewrites his offer to v2 only.
    let now = p.now;
    p.b.start(now);
    let query = p.b.poll_transmit().unwrap().message.replacen("?OTRv23?", "?OTRv2?", 1);
    p.a.receive(now, &query, &mut p.rng).unwrap();
    p.drive();
    for events in [&p.a_events, &p.b_events] {
        assert!(events.iter().any(|e| matches!(e, Event::DowngradeRefused { .. })), "both refuse");
        assert!(!events.iter().any(|e| matches!(e, Event::Secure { version: 2, .. })));
    }
    // The v3 conversation is untouched.
    assert_eq!(p.a.private_with().map(|(_, _, s)| s), Some(ssid));
    p.send(Side::A, "still v3").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B).last(), Some(&("still v3".to_string(), true)));
}
