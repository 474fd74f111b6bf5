//! Hostile input: every malformed, forged, replayed or misaddressed message gives a typed
//! error (or is ignored), never a panic, never text to the user, and the session goes on.

#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Pair, Side};
use otr::crypto::group::modulus;
use otr::message::{Incoming, classify, encode_envelope};
use otr::{Event, Policy, ReceiveError};
use proptest::prelude::*;

fn bytes_of(msg: &str) -> Vec<u8> {
    match classify(msg) {
        Ok(Incoming::Encoded(b)) => b,
        other => panic!("not an encoded message: {other:?}"),
    }
}

/// Both sides speak only OTR version 2.
const V2_ONLY: Policy = Policy::ALLOW_V2;

/// The policies the data-message checks run under: v3, and v2 (3-byte headers).
const BOTH_VERSIONS: [Policy; 2] = [Policy::MANUAL, V2_ONLY];

/// A private pair plus one data message from alice that bob has not seen yet.
fn pair_with_pending(policy: Policy) -> (Pair, String) {
    let mut p = Pair::new(policy, policy);
    p.secure(Side::A);
    p.send(Side::A, "the real text").unwrap();
    let msg = p.a.poll_transmit().unwrap().message;
    (p, msg)
}

/// Feeds `msg` to bob and checks nothing but (possibly) the untouched original text arrived.
fn feed_bob(p: &mut Pair, msg: &str) -> Result<(), ReceiveError> {
    let r = p.b.receive(p.now, msg, &mut p.rng);
    while let Some(e) = p.b.poll_event() {
        if let Event::Message { text, encrypted, .. } = &e {
            assert!(!encrypted || text == "the real text", "forged plaintext delivered: {text:?}");
        }
        p.b_events.push(e);
    }
    // Error replies bob may queue go nowhere in these tests.
    while p.b.poll_transmit().is_some() {}
    r
}

/// The conversation still works in both directions.
fn still_works(p: &mut Pair) {
    p.a_events.clear();
    p.b_events.clear();
    p.send(Side::A, "still here?").unwrap();
    p.send(Side::B, "yes").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B).last(), Some(&("still here?".to_string(), true)));
    assert_eq!(p.messages(Side::A).last(), Some(&("yes".to_string(), true)));
}

#[test]
fn truncated_data_messages() {
    for policy in BOTH_VERSIONS {
        let (mut p, msg) = pair_with_pending(policy);
        let raw = bytes_of(&msg);
        for n in 0..raw.len() {
            let r = feed_bob(&mut p, &encode_envelope(&raw[..n]));
            assert!(
                matches!(r, Err(ReceiveError::Malformed(_)) | Err(ReceiveError::UnsupportedVersion(_))),
                "{n}: {r:?}"
            );
        }
        assert!(p.messages(Side::B).is_empty());
        feed_bob(&mut p, &msg).unwrap();
        assert_eq!(p.messages(Side::B), vec![("the real text".to_string(), true)]);
        still_works(&mut p);
    }
}

#[test]
fn bit_flips_never_deliver_other_text() {
    for policy in BOTH_VERSIONS {
        let (mut p, msg) = pair_with_pending(policy);
        let raw = bytes_of(&msg);
        let mut accepted = 0;
        for i in 0..raw.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = raw.clone();
                m[i] ^= bit;
                if feed_bob(&mut p, &encode_envelope(&m)).is_ok() {
                    accepted += 1;
                }
            }
        }
        // Only flips in the (unauthenticated, by design) revealed-MAC-keys area can pass, and
        // the first of them consumes the counter; none delivers different text.
        assert!(accepted <= 1, "accepted {accepted}");
        still_works(&mut p);
    }
}

#[test]
fn duplicates_are_dropped_silently_reordering_is_tolerated_and_old_messages_refused() {
    for policy in BOTH_VERSIONS {
        let (mut p, msg) = pair_with_pending(policy);
        feed_bob(&mut p, &msg).unwrap();
        // The network repeats it: dropped without an error, an event or a reply.
        let events = p.b_events.len();
        assert_eq!(p.b.receive(p.now, &msg, &mut p.rng), Ok(()));
        assert!(p.b.poll_transmit().is_none(), "no error reply to a duplicate");
        assert!(p.b.poll_event().is_none());
        assert_eq!(p.b_events.len(), events);
        // 70 messages on one key pair arrive newest first: those within 64 of the newest are
        // still read (once each), older ones are refused as replays.
        let burst: Vec<String> = (0..70)
            .map(|i| {
                p.send(Side::A, &format!("burst {i}")).unwrap();
                p.a.poll_transmit().unwrap().message
            })
            .collect();
        let mut read = vec![];
        for (i, m) in burst.iter().enumerate().rev() {
            match p.b.receive(p.now, m, &mut p.rng) {
                Ok(()) => match p.b.poll_event() {
                    Some(Event::Message { text, encrypted: true, .. }) => read.push(text),
                    other => panic!("burst {i}: {other:?}"),
                },
                Err(e) => {
                    assert_eq!(e, ReceiveError::Unreadable(otr::data::Unreadable::Replayed), "burst {i}");
                    assert!(i < 6, "only counters 64 or more behind are refused (burst {i})");
                }
            }
            while p.b.poll_transmit().is_some() {}
        }
        let expected: Vec<String> = (6..70).rev().map(|i| format!("burst {i}")).collect();
        assert_eq!(read, expected, "each text once, intact");
        // Rotate keys several times, then deliver an old message: its keys are gone.
        p.send(Side::A, "old").unwrap();
        let old = p.a.poll_transmit().unwrap().message;
        for i in 0..4 {
            p.send(Side::A, &format!("a{i}")).unwrap();
            p.drive();
            p.send(Side::B, &format!("b{i}")).unwrap();
            p.drive();
        }
        let r = feed_bob(&mut p, &old);
        assert_eq!(r, Err(ReceiveError::Unreadable(otr::data::Unreadable::UnknownKeyId)));
        still_works(&mut p);
    }
}

#[test]
fn bad_dh_values_in_the_ake_are_rejected() {
    let p_bytes = modulus().to_be_bytes().to_vec();
    let minus = |k: u8| {
        let mut v = p_bytes.clone();
        *v.last_mut().unwrap() -= k;
        v
    };
    let mut over = vec![1u8];
    over.extend_from_slice(&p_bytes);
    let bad: Vec<Vec<u8>> = vec![vec![], vec![1], minus(1), p_bytes.clone(), over, vec![0xff; 192]];
    for value in bad {
        let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
        let now = p.now;
        p.b.start(now);
        let query = p.b.poll_transmit().unwrap().message;
        p.a.receive(now, &query, &mut p.rng).unwrap();
        let commit = bytes_of(&p.a.poll_transmit().unwrap().message);
        // Bob answers with a D-H Key whose g^y is hostile.
        let mut w = otr::wire::Writer::new();
        w.u16(3).u8(0x0a).u32(p.b.instance_tag().get()).u32(p.a.instance_tag().get());
        w.data(&value);
        let _ = commit;
        let r = p.a.receive(now, &encode_envelope(w.as_slice()), &mut p.rng);
        assert!(matches!(r, Err(ReceiveError::Ake(_))), "{r:?}");
        assert!(p.a.poll_transmit().is_none(), "no Reveal Signature for a bad g^y");
        p.drive();
    }
}

#[test]
fn wrong_instance_tags_and_garbage() {
    let (mut p, msg) = pair_with_pending(Policy::MANUAL);
    let raw = bytes_of(&msg);
    let mut other = raw.clone();
    other[7..11].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    assert_eq!(feed_bob(&mut p, &encode_envelope(&other)), Err(ReceiveError::OtherInstance));
    let mut zero = raw.clone();
    zero[7..11].copy_from_slice(&0u32.to_be_bytes());
    assert_eq!(feed_bob(&mut p, &encode_envelope(&zero)), Err(ReceiveError::OtherInstance));
    let mut low_sender = raw.clone();
    low_sender[3..7].copy_from_slice(&5u32.to_be_bytes());
    assert!(matches!(feed_bob(&mut p, &encode_envelope(&low_sender)), Err(ReceiveError::Malformed(_))));
    for junk in
        ["?OTR:", "?OTR:.", "?OTR:!!!!.", "?OTR:AAMD", "?OTR:AAMDAAAA.", "?OTR:////////.", "?OTR:AAE=."]
    {
        assert!(feed_bob(&mut p, junk).is_err(), "{junk}");
    }
    assert!(p.messages(Side::B).is_empty());
    feed_bob(&mut p, &msg).unwrap();
    still_works(&mut p);
}

#[test]
fn data_outside_a_private_conversation_is_refused() {
    let (mut p, msg) = pair_with_pending(Policy::MANUAL);
    let mut fresh = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let r = fresh.b.receive(fresh.now, &msg, &mut fresh.rng);
    assert_eq!(r, Err(ReceiveError::NotPrivate));
    let reply = fresh.b.poll_transmit().expect("an OTR error reply");
    assert!(reply.message.starts_with("?OTR Error:"));
    assert!(fresh.b.poll_event().is_none());
    feed_bob(&mut p, &msg).unwrap();
}

fn live_pair() -> Pair {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_transport_strings_never_panic_or_deliver(s in ".{0,300}") {
        let mut p = live_pair();
        let _ = p.b.receive(p.now, &s, &mut p.rng);
        while let Some(e) = p.b.poll_event() {
            let private_text = matches!(e, Event::Message { encrypted: true, .. });
            prop_assert!(!private_text);
        }
    }

    #[test]
    fn random_encoded_bytes_never_panic_or_deliver(bytes in proptest::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
        let mut p = live_pair();
        let mut m = bytes;
        if header && m.len() > 11 {
            // Make it look like a v3 message for bob so that deeper code paths run.
            m[0] = 0; m[1] = 3;
            m[3..7].copy_from_slice(&p.a.instance_tag().get().to_be_bytes());
            m[7..11].copy_from_slice(&p.b.instance_tag().get().to_be_bytes());
        }
        let _ = p.b.receive(p.now, &format!("?OTR:{}.", B64.encode(&m)), &mut p.rng);
        while let Some(e) = p.b.poll_event() {
            let private_text = matches!(e, Event::Message { encrypted: true, .. });
            prop_assert!(!private_text);
        }
    }

    #[test]
    fn mutated_valid_messages_never_deliver_other_text(pos in any::<prop::sample::Index>(), val in any::<u8>(), cut in any::<bool>(), v2 in any::<bool>()) {
        let (mut p, msg) = pair_with_pending(if v2 { V2_ONLY } else { Policy::MANUAL });
        let mut raw = bytes_of(&msg);
        let i = pos.index(raw.len());
        if cut { raw.truncate(i); } else { raw[i] = val; }
        let _ = feed_bob(&mut p, &encode_envelope(&raw));
        still_works(&mut p);
    }

    #[test]
    fn random_v2_encoded_bytes_never_panic_or_deliver(bytes in proptest::collection::vec(any::<u8>(), 0..600), kind in prop::sample::select(vec![0x02u8, 0x03, 0x0a, 0x11, 0x12, 0x55])) {
        let mut p = Pair::new(V2_ONLY, V2_ONLY | Policy::ALLOW_V3);
        p.secure(Side::A);
        let mut m = vec![0, 2, kind];
        m.extend(bytes);
        let _ = p.b.receive(p.now, &format!("?OTR:{}.", B64.encode(&m)), &mut p.rng);
        while let Some(e) = p.b.poll_event() {
            let private_text = matches!(e, Event::Message { encrypted: true, .. });
            prop_assert!(!private_text);
        }
        still_works(&mut p);
    }
}

#[test]
fn v2_messages_are_refused_by_a_v3_only_session_and_v1_by_everyone() {
    let (mut v2, msg) = pair_with_pending(V2_ONLY);
    let mut v3 = Pair::new(Policy::MANUAL, Policy::MANUAL);
    assert_eq!(v3.b.receive(v3.now, &msg, &mut v3.rng), Err(ReceiveError::UnsupportedVersion(2)));
    assert!(v3.b.poll_transmit().is_none() && v3.b.poll_event().is_none());
    let mut v1 = bytes_of(&msg);
    v1[1] = 1;
    assert_eq!(feed_bob(&mut v2, &encode_envelope(&v1)), Err(ReceiveError::UnsupportedVersion(1)));
    // A v2-only session ignores a v3 query, and a v3-only one a v2 query.
    let now = v3.now;
    for (pa, pb) in [(V2_ONLY, Policy::MANUAL), (Policy::MANUAL, V2_ONLY)] {
        let mut p = Pair::new(pa, pb);
        p.a.start(now);
        p.drive();
        assert!(p.a_events.is_empty() && p.b_events.is_empty(), "no common version, no AKE");
    }
    feed_bob(&mut v2, &msg).unwrap();
    still_works(&mut v2);
}

#[test]
fn a_v2_data_message_cannot_enter_a_v3_conversation() {
    // Alice and Bob talk v3; a v2 data message under the same keys (an attacker rewrote the
    // header) arrives: the v2 conversation is not private, so nothing is delivered.
    let both = Policy::MANUAL | Policy::ALLOW_V2;
    let mut p = Pair::new(both, both);
    p.secure(Side::A);
    p.send(Side::A, "v3 text").unwrap();
    let raw = bytes_of(&p.a.poll_transmit().unwrap().message);
    let mut v2 = vec![0, 2, raw[2]];
    v2.extend_from_slice(&raw[11..]);
    assert_eq!(feed_bob(&mut p, &encode_envelope(&v2)), Err(ReceiveError::NotPrivate));
    assert!(p.messages(Side::B).is_empty());
    still_works(&mut p);
}
