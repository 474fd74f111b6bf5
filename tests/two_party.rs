//! Two of our own sessions, fully deterministic: the same scenarios the libotr interop tests
//! run, replayable exactly (seeded ChaCha RNG, fake clock).

#![allow(clippy::unwrap_used)]

mod common;

use common::{Pair, Side, sample_text};
use otr::data::DataMessage;
use otr::message::{Incoming, classify};
use otr::{Event, Policy, SendError, Sent};

#[test]
fn ake_started_by_either_side() {
    for side in [Side::A, Side::B] {
        let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
        p.secure(side);
        assert!(p.a_errors.is_empty() && p.b_errors.is_empty(), "{:?} {:?}", p.a_errors, p.b_errors);
    }
}

fn data_of(msg: &str) -> Option<(u32, u32, usize)> {
    let Ok(Incoming::Encoded(bytes)) = classify(msg) else {
        return None;
    };
    let d = DataMessage::read(&bytes).ok()?;
    Some((d.sender_keyid, d.recipient_keyid, d.revealed.len()))
}

#[test]
fn two_hundred_messages_alternating_and_in_bursts_rotate_keys() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::A);
    let mut sent_a = vec![];
    let mut sent_b = vec![];
    for i in 0..200 {
        // Alternate for the first half, then bursts of 10 each way.
        let side = if i < 100 {
            if i % 2 == 0 { Side::A } else { Side::B }
        } else if (i / 10) % 2 == 0 {
            Side::A
        } else {
            Side::B
        };
        let text = sample_text(i);
        assert_eq!(p.send(side, &text), Ok(Sent::Encrypted));
        match side {
            Side::A => sent_a.push((text, true)),
            Side::B => sent_b.push((text, true)),
        }
        if i < 100 || i % 10 == 9 {
            p.drive();
        }
    }
    p.drive();
    assert_eq!(p.messages(Side::B), sent_a, "bob got alice's texts intact, in order, encrypted");
    assert_eq!(p.messages(Side::A), sent_b, "alice got bob's texts intact, in order, encrypted");
    let data: Vec<_> = p.wire.iter().filter_map(|(s, m)| Some((*s, data_of(m)?))).collect();
    let max_keyid = data.iter().map(|(_, (s, _, _))| *s).max().unwrap();
    assert!(max_keyid > 50, "keys rotated many times (sender keyid reached {max_keyid})");
    assert!(data.iter().any(|(_, (_, _, rev))| *rev > 0), "old MAC keys were revealed");
    assert!(p.a_errors.is_empty() && p.b_errors.is_empty());
}

#[test]
fn remote_end_finishes_and_refuses_to_send() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let first = p.secure(Side::A);
    let now = p.now;
    p.b.end(now);
    p.drive();
    assert!(p.b_events.iter().any(|e| matches!(e, Event::Ended { .. })));
    assert!(p.a_events.iter().any(|e| matches!(e, Event::RemoteEnded { .. })));
    let before = p.wire.len();
    assert_eq!(p.send(Side::A, "are you there?"), Err(SendError::Finished));
    p.drive();
    assert_eq!(p.wire.len(), before, "nothing at all left alice after the refused send");
    // Bob is in plaintext now and may talk in the clear (manual policy).
    assert_eq!(p.send(Side::B, "in the clear"), Ok(Sent::Plaintext));
    p.drive();
    assert!(
        p.a_events.iter().any(|e| matches!(e, Event::UnencryptedReceived { .. })),
        "alice is FINISHED: plaintext is not a message"
    );
    // A new AKE gives a new ssid and both can talk again.
    p.restart_after_bob_ended(first, "back");
}

#[test]
fn our_end_is_seen_by_the_peer() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::B);
    let now = p.now;
    p.a.end(now);
    p.drive();
    assert!(p.b_events.iter().any(|e| matches!(e, Event::RemoteEnded { .. })));
    assert!(p.a.private_with().is_none());
    assert!(p.messages(Side::B).is_empty(), "the disconnect carrier delivers no text");
}

#[test]
fn whitespace_tag_starts_the_ake_from_either_side() {
    for side in [Side::A, Side::B] {
        let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
        assert_eq!(p.send(side, "hi there"), Ok(Sent::Plaintext));
        assert!(p.wire.is_empty());
        p.drive();
        let tagged = &p.wire[0].1;
        assert!(tagged.starts_with("hi there \t  \t\t\t\t \t \t \t  "), "whitespace tag appended");
        let other = if side == Side::A { Side::B } else { Side::A };
        assert_eq!(
            p.messages(other),
            vec![("hi there".to_string(), false)],
            "delivered as plaintext, tag stripped"
        );
        assert!(common::last_secure(&p.a_events).is_some() && common::last_secure(&p.b_events).is_some());
    }
}

#[test]
fn require_encryption_never_lets_plaintext_out() {
    let mut p = Pair::new(Policy::ALWAYS, Policy::OPPORTUNISTIC);
    assert_eq!(p.send(Side::A, "top secret"), Ok(Sent::Held));
    assert_eq!(p.send(Side::A, "also secret"), Ok(Sent::Held));
    p.drive();
    assert!(p.wire.iter().all(|(_, m)| !m.contains("secret")), "no plaintext on the wire");
    assert!(p.wire[0].1.starts_with("?OTRv3?"), "a query went out instead");
    assert_eq!(
        p.messages(Side::B),
        vec![("top secret".to_string(), true), ("also secret".to_string(), true)],
        "held messages arrive encrypted once private"
    );
    // Plaintext from the peer is never a message under REQUIRE_ENCRYPTION.
    let mut q = Pair::new(Policy::ALWAYS, Policy::MANUAL);
    q.send(Side::B, "hello").unwrap();
    q.drive();
    assert!(q.messages(Side::A).is_empty());
    assert!(q.a_events.iter().any(|e| matches!(e, Event::UnencryptedReceived { .. })));
}

#[test]
fn commit_collision_resolves_to_one_session() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let now = p.now;
    p.a.start(now);
    p.b.start(now);
    // Both queries cross; both answer with a D-H Commit; the commits cross too.
    let qa = p.a.poll_transmit().unwrap();
    let qb = p.b.poll_transmit().unwrap();
    p.b.receive(now, &qa.message, &mut p.rng).unwrap();
    p.a.receive(now, &qb.message, &mut p.rng).unwrap();
    p.drive();
    let a = common::last_secure(&p.a_events).expect("alice secure");
    let b = common::last_secure(&p.b_events).expect("bob secure");
    assert_eq!(a.1, b.1);
    p.send(Side::A, "after collision").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B), vec![("after collision".to_string(), true)]);
}

#[test]
fn a_new_ake_while_private_refreshes_the_session() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let first = p.secure(Side::A);
    p.send(Side::A, "one").unwrap();
    p.drive();
    let second = p.secure(Side::B);
    assert_ne!(first, second);
    assert!(p.a_events.iter().any(|e| matches!(e, Event::Secure { refreshed: true, .. })));
    p.send(Side::B, "two").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::A), vec![("two".to_string(), true)]);
}

#[test]
fn runs_replay_exactly() {
    let run = || {
        let mut p = Pair::seeded(Policy::OPPORTUNISTIC, Policy::ALWAYS, 99);
        p.send(Side::A, "hello").unwrap();
        p.drive();
        for i in 0..10 {
            p.send(if i % 3 == 0 { Side::B } else { Side::A }, &sample_text(i)).unwrap();
            p.drive();
        }
        p.wire
    };
    assert_eq!(run(), run());
}

fn kind_of(msg: &str) -> u8 {
    match classify(msg) {
        Ok(Incoming::Encoded(b)) => b[2],
        other => panic!("not encoded: {other:?}"),
    }
}

#[test]
fn repeated_ake_messages_are_answered_the_same_way() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let now = p.now;
    p.a.start(now);
    let query = p.a.poll_transmit().unwrap().message;
    p.b.receive(now, &query, &mut p.rng).unwrap();
    let commit = p.b.poll_transmit().unwrap().message;
    assert_eq!(kind_of(&commit), 0x02);
    // Alice answers a commit, and the same commit again, with the same D-H Key.
    p.a.receive(now, &commit, &mut p.rng).unwrap();
    let dh_key = p.a.poll_transmit().unwrap().message;
    p.a.receive(now, &commit, &mut p.rng).unwrap();
    assert_eq!(p.a.poll_transmit().unwrap().message, dh_key, "D-H Key retransmitted");
    // Bob answers the D-H Key, and a repeat of it, with the same Reveal Signature.
    p.b.receive(now, &dh_key, &mut p.rng).unwrap();
    let reveal = p.b.poll_transmit().unwrap().message;
    assert_eq!(kind_of(&reveal), 0x11);
    p.b.receive(now, &dh_key, &mut p.rng).unwrap();
    assert_eq!(p.b.poll_transmit().unwrap().message, reveal, "Reveal Signature retransmitted");
    // The exchange completes once; the repeated Reveal Signature is ignored afterwards.
    p.a.receive(now, &reveal, &mut p.rng).unwrap();
    let sig = p.a.poll_transmit().unwrap().message;
    assert_eq!(kind_of(&sig), 0x12);
    p.a.receive(now, &reveal, &mut p.rng).unwrap();
    assert!(p.a.poll_transmit().is_none());
    p.b.receive(now, &sig, &mut p.rng).unwrap();
    p.collect();
    assert_eq!(common::last_secure(&p.a_events).unwrap().1, common::last_secure(&p.b_events).unwrap().1);
}

#[test]
fn crossing_commits_the_higher_hash_wins() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let now = p.now;
    // Both receive a query at once and both send a D-H Commit.
    p.a.start(now);
    p.b.start(now);
    let qa = p.a.poll_transmit().unwrap().message;
    let qb = p.b.poll_transmit().unwrap().message;
    p.a.receive(now, &qb, &mut p.rng).unwrap();
    p.b.receive(now, &qa, &mut p.rng).unwrap();
    let ca = p.a.poll_transmit().unwrap().message;
    let cb = p.b.poll_transmit().unwrap().message;
    let hash = |m: &str| match classify(m) {
        Ok(Incoming::Encoded(b)) => {
            let mut r = otr::wire::Reader::new(&b[11..]);
            r.data().unwrap();
            r.data().unwrap().to_vec()
        }
        _ => unreachable!(),
    };
    let a_wins = hash(&ca) > hash(&cb);
    p.a.receive(now, &cb, &mut p.rng).unwrap();
    p.b.receive(now, &ca, &mut p.rng).unwrap();
    let ra = p.a.poll_transmit().unwrap().message;
    let rb = p.b.poll_transmit().unwrap().message;
    // The resent commit now names the receiver's instance; its body is the same.
    let body = |m: &str| match classify(m) {
        Ok(Incoming::Encoded(b)) => b[11..].to_vec(),
        _ => unreachable!(),
    };
    if a_wins {
        assert_eq!(body(&ra), body(&ca), "alice's commit wins: she resends it");
        assert_eq!(kind_of(&rb), 0x0a, "bob's loses: he answers with a D-H Key");
    } else {
        assert_eq!(body(&rb), body(&cb), "bob's commit wins: he resends it");
        assert_eq!(kind_of(&ra), 0x0a, "alice's loses: she answers with a D-H Key");
    }
    p.a.receive(now, &rb, &mut p.rng).unwrap();
    p.b.receive(now, &ra, &mut p.rng).unwrap();
    p.drive();
    assert_eq!(common::last_secure(&p.a_events).unwrap().1, common::last_secure(&p.b_events).unwrap().1);
}
