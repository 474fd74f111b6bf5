//! Deterministic tests of SMP, the extra symmetric key, fragmentation, heartbeats and
//! multiple instances between our own sessions.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Pair, Side, session};
use otr::fragment::{MAX_MESSAGE_BYTES, MAX_PARTIALS};
use otr::{Event, Policy, ReceiveError, SendError, Session, Timestamp};

fn smp_events(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SmpRequest { question, .. } => Some(format!("request {question:?}")),
            Event::SmpSucceeded { .. } => Some("success".into()),
            Event::SmpFailed { .. } => Some("failure".into()),
            Event::SmpAborted { cheated, .. } => Some(format!("aborted cheated={cheated}")),
            _ => None,
        })
        .collect()
}

#[test]
fn smp_success_failure_question_and_abort() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::A);
    let now = p.now;
    p.a.smp_start(now, Some("Where did we meet?"), b"Lisboa", &mut p.rng).unwrap();
    p.drive();
    assert_eq!(smp_events(&p.b_events), vec!["request Some(\"Where did we meet?\")"]);
    p.b.smp_respond(now, b"Lisboa", &mut p.rng).unwrap();
    p.drive();
    assert_eq!(smp_events(&p.a_events), vec!["success"]);
    assert_eq!(smp_events(&p.b_events).last().unwrap(), "success");
    let verified = p.a_events.iter().find_map(|e| match e {
        Event::SmpSucceeded { fingerprint, .. } => Some(*fingerprint),
        _ => None,
    });
    assert_eq!(verified, Some(p.b.identity().fingerprint()));
    // A wrong answer: both learn it failed.
    p.a_events.clear();
    p.b_events.clear();
    p.b.smp_start(now, None, b"one", &mut p.rng).unwrap();
    p.drive();
    p.a.smp_respond(now, b"two", &mut p.rng).unwrap();
    p.drive();
    assert_eq!(smp_events(&p.a_events), vec!["request None", "failure"]);
    assert_eq!(smp_events(&p.b_events), vec!["failure"]);
    // An abort mid-way is seen by the other side; a new run then succeeds.
    p.a_events.clear();
    p.b_events.clear();
    p.a.smp_start(now, None, b"x", &mut p.rng).unwrap();
    p.drive();
    p.b.smp_abort(now);
    p.drive();
    assert_eq!(smp_events(&p.a_events), vec!["aborted cheated=false"]);
    assert_eq!(p.b.smp_respond(now, b"x", &mut p.rng), Err(SendError::NoSmpRequest));
    p.a.smp_start(now, None, b"again", &mut p.rng).unwrap();
    p.drive();
    p.b.smp_respond(now, b"again", &mut p.rng).unwrap();
    p.drive();
    assert_eq!(smp_events(&p.a_events).last().unwrap(), "success");
    // SMP needs a private conversation.
    let mut q = Pair::new(Policy::MANUAL, Policy::MANUAL);
    assert_eq!(q.a.smp_start(now, None, b"x", &mut q.rng), Err(SendError::NotPrivate));
}

#[test]
fn extra_symmetric_key_agrees() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::B);
    let key = p.a.extra_symmetric_key(p.now, 0x0102_0304, b"voice call").unwrap();
    p.drive();
    let theirs = p.b_events.iter().find_map(|e| match e {
        Event::ExtraSymmetricKey { key, use_, usedata, .. } => Some((key.clone(), *use_, usedata.clone())),
        _ => None,
    });
    assert_eq!(theirs, Some((key, 0x0102_0304, b"voice call".to_vec())));
    assert!(p.messages(Side::B).is_empty(), "the carrier has no text");
}

fn fragmented_pair(max: usize) -> Pair {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    for s in [Side::A, Side::B] {
        let sess = p.session(s);
        let mut config = otr::SessionConfig::new("x", Policy::MANUAL, sess.instance_tag());
        config.max_message_size = max;
        let key = sess.identity().clone();
        *sess = Session::new(config, key);
    }
    p
}

#[test]
fn everything_passes_fragmented_at_300_bytes() {
    let mut p = fragmented_pair(300);
    p.secure(Side::A);
    let now = p.now;
    p.b.smp_start(now, Some("q"), b"s", &mut p.rng).unwrap();
    p.drive();
    p.a.smp_respond(now, b"s", &mut p.rng).unwrap();
    p.drive();
    assert_eq!(smp_events(&p.b_events).last().unwrap(), "success");
    let mut expected = vec![];
    for i in 0..10 {
        let text: String = common::sample_text(i).chars().cycle().take(5_000 + i * 1_500).collect();
        p.send(Side::A, &text).unwrap();
        expected.push((text, true));
        p.drive();
    }
    assert_eq!(p.messages(Side::B), expected);
    assert!(p.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits in 300 bytes");
    assert!(p.a_errors.is_empty() && p.b_errors.is_empty());
}

#[test]
fn hostile_fragments_are_dropped_with_bounded_memory() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::A);
    let a = p.a.instance_tag().get();
    let b = p.b.instance_tag().get();
    let bad = [
        format!("?OTR|{a:x}|{b:x},3,2,abc,"),
        format!("?OTR|{a:x}|{b:x},0,2,abc,"),
        format!("?OTR|{a:x}|{b:x},1,0,abc,"),
        format!("?OTR|{a:x}|{b:x},1,65535,abc,"),
        format!("?OTR|{a:x}|{b:x},1,99999999,abc,"),
        format!("?OTR|{a:x}|{b:x},1,2,abc"),
        format!("?OTR|{a:x}|12345678,1,2,abc,"),
        "?OTR|||,,,".to_string(),
    ];
    for f in &bad {
        assert!(p.b.receive(p.now, f, &mut p.rng).is_err(), "{f}");
    }
    // Overlapping and interleaved pieces from two senders, then a flood.
    let piece = "A".repeat(50_000);
    for round in 0..200u32 {
        for sender in [a, 0x9999_0000 + round] {
            for k in [1u16, 2, 2, 4, 3] {
                let _ = p.b.receive(p.now, &format!("?OTR|{sender:x}|{b:x},{k},900,{piece},"), &mut p.rng);
            }
        }
        assert!(p.b.buffered_fragment_bytes() <= MAX_PARTIALS * MAX_MESSAGE_BYTES);
    }
    assert!(
        p.b.buffered_fragment_bytes() <= MAX_PARTIALS * 3 * piece.len(),
        "{}",
        p.b.buffered_fragment_bytes()
    );
    assert!(p.messages(Side::B).is_empty());
    // Stale partial messages expire.
    let later = Timestamp(p.now.0 + otr::fragment::EXPIRY_MS + 1);
    p.b.handle_timeout(later);
    assert_eq!(p.b.buffered_fragment_bytes(), 0);
    // The conversation still works.
    p.send(Side::A, "fine").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B), vec![("fine".to_string(), true)]);
}

#[test]
fn heartbeat_after_a_minute_of_silence_is_silent_for_the_peer() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::A);
    p.send(Side::A, "ping").unwrap();
    p.drive();
    let due = p.b.poll_timeout().expect("bob owes a heartbeat");
    assert!(due.0 >= p.now.0 + otr::session::HEARTBEAT_MS - 1);
    p.b.handle_timeout(Timestamp(due.0 - 1));
    assert!(p.b.poll_transmit().is_none(), "not yet");
    let before = p.wire.len();
    p.now = due;
    let now = p.now;
    p.b.handle_timeout(now);
    p.drive();
    assert_eq!(p.wire.len(), before + 1, "one heartbeat");
    assert!(p.b.poll_timeout().is_none(), "no more heartbeats owed");
    assert_eq!(p.messages(Side::A), vec![], "a heartbeat shows nothing");
    assert!(p.a_errors.is_empty());
}

#[test]
fn one_account_on_two_clients_gets_separate_conversations() {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
    use rand_core::SeedableRng;
    let now = Timestamp(10);
    let mut alice = session("alice", Policy::MANUAL, 11);
    let mut laptop = session("bob", Policy::MANUAL, 22);
    let mut phone = session("bob", Policy::MANUAL, 33);
    let mut events: [Vec<Event>; 3] = Default::default();
    let mut errors = vec![];
    let mut pump = |alice: &mut Session,
                    bobs: [&mut Session; 2],
                    events: &mut [Vec<Event>; 3],
                    errors: &mut Vec<ReceiveError>| {
        let [laptop, phone] = bobs;
        for _ in 0..100 {
            let mut moved = false;
            while let Some(t) = alice.poll_transmit() {
                moved = true;
                for bob in [&mut *laptop, &mut *phone] {
                    if let Err(e) = bob.receive(now, &t.message, &mut rng) {
                        errors.push(e);
                    }
                }
            }
            for bob in [&mut *laptop, &mut *phone] {
                while let Some(t) = bob.poll_transmit() {
                    moved = true;
                    let _ = alice.receive(now, &t.message, &mut rng);
                }
            }
            for (k, s) in [&mut *alice, &mut *laptop, &mut *phone].into_iter().enumerate() {
                while let Some(e) = s.poll_event() {
                    events[k].push(e);
                }
            }
            if !moved {
                return;
            }
        }
    };
    alice.start(now);
    pump(&mut alice, [&mut laptop, &mut phone], &mut events, &mut errors);
    assert_eq!(alice.instances().filter(|(_, private)| *private).count(), 2, "private with both clients");
    assert!(errors.iter().all(|e| *e == ReceiveError::OtherInstance), "{errors:?}");
    laptop.send(now, "from laptop").unwrap();
    pump(&mut alice, [&mut laptop, &mut phone], &mut events, &mut errors);
    let from: Vec<_> = events[0]
        .iter()
        .filter_map(|e| match e {
            Event::Message { instance: Some(i), text, .. } => Some((*i, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(from, vec![(laptop.instance_tag(), "from laptop".to_string())]);
    // Alice's reply goes to the laptop (most recently active); the phone ignores it.
    alice.send(now, "hi laptop").unwrap();
    pump(&mut alice, [&mut laptop, &mut phone], &mut events, &mut errors);
    let texts = |ev: &Vec<Event>| ev.iter().filter(|e| matches!(e, Event::Message { .. })).count();
    assert_eq!(texts(&events[1]), 1);
    assert_eq!(texts(&events[2]), 0);
    assert_eq!(errors.last(), Some(&ReceiveError::OtherInstance));
    alice.send_to(now, phone.instance_tag(), "hi phone").unwrap();
    pump(&mut alice, [&mut laptop, &mut phone], &mut events, &mut errors);
    assert_eq!(texts(&events[2]), 1);
}

#[test]
fn a_peer_that_lost_its_session_is_brought_back_by_one_re_ake() {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    p.send(Side::B, "hello").unwrap();
    p.drive();
    // Bob's client restarts: same key and tag, no session.
    let bob = &p.b;
    let config = otr::SessionConfig::new("bob", Policy::OPPORTUNISTIC, bob.instance_tag());
    p.b = Session::new(config, bob.identity().clone());
    p.a_events.clear();
    p.tick(1_000);
    p.send(Side::A, "did you get this?").unwrap();
    p.send(Side::A, "and this?").unwrap();
    p.drive();
    let lost = p.a_events.iter().find_map(|e| match e {
        Event::MaybeNotDelivered { texts, .. } => Some(texts.clone()),
        _ => None,
    });
    assert_eq!(lost, Some(vec!["did you get this?".to_string(), "and this?".to_string()]));
    assert_eq!(p.a_events.iter().filter(|e| matches!(e, Event::Secure { refreshed: true, .. })).count(), 1);
    let errors = p.wire.iter().filter(|(_, m)| m.starts_with("?OTR Error:")).count();
    assert_eq!(errors, 1, "one error reply (rate-limited), not one per message");
    p.send(Side::A, "again").unwrap();
    p.drive();
    assert_eq!(p.messages(Side::B).last(), Some(&("again".to_string(), true)));
}

#[test]
fn messages_typed_during_a_peer_started_re_ake_go_once_with_the_new_keys() {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    let first = p.secure(Side::A);
    // Bob refreshes; Alice types while the exchange runs.
    let now = p.now;
    p.b.start(now);
    let query = p.b.poll_transmit().unwrap().message;
    p.a.receive(now, &query, &mut p.rng).unwrap();
    let commit = p.a.poll_transmit().unwrap().message;
    p.b.receive(now, &commit, &mut p.rng).unwrap();
    assert_eq!(p.send(Side::A, "typed during the exchange"), Ok(otr::Sent::Held));
    p.a.receive(now, &p.b.poll_transmit().unwrap().message, &mut p.rng).unwrap();
    p.drive();
    let second = common::last_secure(&p.b_events).unwrap().1;
    assert_ne!(first, second);
    assert_eq!(p.messages(Side::B), vec![("typed during the exchange".to_string(), true)], "once, new keys");
}

#[test]
fn two_sessions_that_cannot_read_each_other_do_not_bounce_errors() {
    let mut p = Pair::new(Policy::OPPORTUNISTIC, Policy::OPPORTUNISTIC);
    p.secure(Side::A);
    // Both lose their sessions, then each receives the other's stale messages.
    let stale_a: Vec<String> = (0..20)
        .map(|i| {
            p.send(Side::A, &format!("a{i}")).unwrap();
            p.a.poll_transmit().unwrap().message
        })
        .collect();
    for s in [Side::A, Side::B] {
        let sess = p.session(s);
        let config = otr::SessionConfig::new("x", Policy::OPPORTUNISTIC, sess.instance_tag());
        *sess = Session::new(config, sess.identity().clone());
    }
    for m in &stale_a {
        let _ = p.b.receive(p.now, m, &mut p.rng);
    }
    p.drive();
    let errors = p.wire.iter().filter(|(_, m)| m.starts_with("?OTR Error:")).count();
    assert!(errors <= 2, "{errors} error messages");
}
