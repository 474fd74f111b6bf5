//! Session snapshots: a private conversation survives its process (issue 18), and a stale or
//! damaged snapshot can neither reuse an AES-CTR counter, nor make a replay acceptable, nor
//! panic. Two of our own sessions, seeded RNG, fake clock.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Pair, Side, key};
use otr::data::DataMessage;
use otr::message::{Incoming, classify};
use otr::{Event, Policy, ReceiveError, SendError, Sent, Session, Snapshot, SnapshotError};
use proptest::prelude::*;

/// Bob's long-term key in `Pair` (seed 22).
const BOB_KEY: u64 = 22;

/// Replaces Bob by a session restored from `snap`.
fn restore_bob(p: &mut Pair, snap: &[u8], newest: u64) {
    p.b = Session::restore(key(BOB_KEY), snap, newest, p.now, &mut p.rng).unwrap();
}

/// (sender keyid, recipient keyid, counter, ciphertext) of each data message `side` sent,
/// from wire position `from` on.
fn data_sent(p: &Pair, side: Side, from: usize) -> Vec<(u32, u32, u64, Vec<u8>)> {
    p.wire[from..]
        .iter()
        .filter(|(s, _)| *s == side)
        .filter_map(|(_, m)| {
            let Ok(Incoming::Encoded(bytes)) = classify(m) else { return None };
            let d = DataMessage::read(&bytes).ok()?;
            Some((d.sender_keyid, d.recipient_keyid, u64::from_be_bytes(d.ctr), d.encrypted.to_vec()))
        })
        .collect()
}

fn secure_count(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Secure { .. })).count()
}

/// A private pair that already exchanged a few messages each way.
fn talking_pair() -> Pair {
    let mut p = Pair::new(Policy::MANUAL, Policy::MANUAL);
    p.secure(Side::A);
    for i in 0..3 {
        p.send(Side::A, &format!("a{i}")).unwrap();
        p.drive();
        p.send(Side::B, &format!("b{i}")).unwrap();
        p.drive();
    }
    p
}

#[test]
fn bob_restored_mid_conversation_talks_on_without_a_new_ake() {
    let mut p = talking_pair();
    let ssid = p.b.private_with().unwrap().2;
    let snap = p.b.snapshot();
    assert_eq!(snap.generation(), 1);
    assert_eq!(Snapshot::generation_of(snap.as_bytes()), Ok(1));
    eprintln!("snapshot of an established session: {} bytes", snap.as_bytes().len());
    assert!(snap.as_bytes().len() < 2048, "{} bytes", snap.as_bytes().len());
    // Alice writes while Bob's process is dead.
    p.send(Side::A, "while you were away").unwrap();
    let offline: Vec<_> = std::iter::from_fn(|| p.a.poll_transmit()).collect();
    restore_bob(&mut p, snap.as_bytes(), 1);
    assert_eq!(p.b.generation(), 1);
    assert_eq!(p.b.private_with().unwrap().2, ssid);
    for t in offline {
        p.wire.push((Side::A, t.message.clone()));
        p.b.receive(p.now, &t.message, &mut p.rng).unwrap();
    }
    p.collect();
    assert_eq!(p.messages(Side::B).last(), Some(&("while you were away".to_string(), true)));
    let secure_before = (secure_count(&p.a_events), secure_count(&p.b_events));
    let start = p.wire.len();
    for i in 0..10 {
        p.send(Side::B, &format!("restored b{i}")).unwrap();
        p.drive();
        p.send(Side::A, &format!("a after {i}")).unwrap();
        p.drive();
    }
    assert!(p.a_errors.is_empty() && p.b_errors.is_empty(), "{:?} {:?}", p.a_errors, p.b_errors);
    assert_eq!((secure_count(&p.a_events), secure_count(&p.b_events)), secure_before, "no new AKE");
    assert_eq!(p.messages(Side::A).last(), Some(&("restored b9".to_string(), true)));
    assert_eq!(p.messages(Side::B).last(), Some(&("a after 9".to_string(), true)));
    // The keys go on rotating: Bob's sender keyid climbs after the restore.
    let ids: Vec<u32> = data_sent(&p, Side::B, start).iter().map(|d| d.0).collect();
    assert!(ids.last().unwrap() >= &(ids[0] + 5), "{ids:?}");
    // And a snapshot of the restored session continues the generations.
    assert_eq!(p.b.snapshot().generation(), 2);
}

#[test]
fn held_text_survives_a_restore_and_goes_to_its_key_only() {
    let mut p = talking_pair();
    // Alice asks for new keys (as after losing her session): Bob's next text waits for them.
    let now = p.now;
    p.a.start(now);
    let query = p.a.poll_transmit().unwrap();
    p.b.receive(p.now, &query.message, &mut p.rng).unwrap();
    while p.b.poll_transmit().is_some() {} // Bob's D-H Commit is lost with his process.
    assert_eq!(p.send(Side::B, "held across the restart"), Ok(Sent::Held));
    let snap = p.b.snapshot();
    restore_bob(&mut p, snap.as_bytes(), snap.generation());
    assert!(p.b.poll_transmit().is_none(), "the held text waits for the new keys");
    // A new key exchange with the same key releases it.
    let now = p.now;
    p.b.start(now);
    p.drive();
    assert_eq!(p.messages(Side::A).last(), Some(&("held across the restart".to_string(), true)));
    // Without a new exchange, it goes out with the old keys after RESYNC_TIMEOUT_MS.
    let mut p = talking_pair();
    let now = p.now;
    p.a.start(now);
    let query = p.a.poll_transmit().unwrap();
    p.b.receive(p.now, &query.message, &mut p.rng).unwrap();
    while p.b.poll_transmit().is_some() {}
    p.send(Side::B, "held, then timed out").unwrap();
    let snap = p.b.snapshot();
    restore_bob(&mut p, snap.as_bytes(), 0);
    p.tick(otr::session::RESYNC_TIMEOUT_MS);
    let now = p.now;
    p.b.handle_timeout(now);
    p.drive();
    assert_eq!(p.messages(Side::A).last(), Some(&("held, then timed out".to_string(), true)));
}

#[test]
fn smp_in_progress_is_reported_aborted_on_both_sides() {
    let mut p = talking_pair();
    let now = p.now;
    p.a.smp_start(now, Some("q"), b"secret", &mut p.rng).unwrap();
    let smp1 = p.a.poll_transmit().unwrap();
    p.b.receive(p.now, &smp1.message, &mut p.rng).unwrap();
    p.collect();
    assert!(p.b_events.iter().any(|e| matches!(e, Event::SmpRequest { .. })));
    let a_tag = p.a.instance_tag();
    let snap = p.b.snapshot();
    restore_bob(&mut p, snap.as_bytes(), 1);
    assert!(
        matches!(p.b.poll_event(), Some(Event::SmpAborted { instance, cheated: false }) if instance == a_tag)
    );
    assert_eq!(p.b.smp_respond(p.now, b"secret", &mut p.rng), Err(SendError::NoSmpRequest));
    p.drive();
    assert!(p.a_events.iter().any(|e| matches!(e, Event::SmpAborted { .. })), "Alice is told too");
    // A new run works.
    let now = p.now;
    p.a.smp_start(now, None, b"again", &mut p.rng).unwrap();
    p.drive();
    let now = p.now;
    p.b.smp_respond(now, b"again", &mut p.rng).unwrap();
    p.drive();
    assert!(p.a_events.iter().any(|e| matches!(e, Event::SmpSucceeded { .. })));
    assert!(p.a_errors.is_empty() && p.b_errors.is_empty(), "{:?} {:?}", p.a_errors, p.b_errors);
}

#[test]
fn an_ended_conversation_stays_ended() {
    let mut p = talking_pair();
    let now = p.now;
    p.a.end(now);
    p.drive();
    let snap = p.b.snapshot();
    restore_bob(&mut p, snap.as_bytes(), 1);
    assert_eq!(p.send(Side::B, "x"), Err(SendError::Finished));
}

#[test]
fn a_rolled_back_snapshot_reuses_no_counter_and_accepts_no_replay() {
    let mut p = talking_pair();
    let old = p.b.snapshot();
    let start = p.wire.len();
    // The lost timeline: Bob sends and receives after the snapshot.
    for i in 0..3 {
        p.send(Side::B, "same text, same length").unwrap();
        p.drive();
        p.send(Side::A, &format!("lost a{i}")).unwrap();
        p.drive();
    }
    p.send(Side::B, "same text, same length").unwrap();
    p.drive();
    let from_alice: Vec<String> =
        p.wire[start..].iter().filter(|(s, _)| *s == Side::A).map(|(_, m)| m.clone()).collect();
    let newer = p.b.snapshot();
    let lost = data_sent(&p, Side::B, start);
    let mut bob_sent = lost.clone();
    let lost_max = |sent: &[(u32, u32, u64, Vec<u8>)], ids: (u32, u32)| {
        sent.iter().filter(|d| (d.0, d.1) == ids).map(|d| d.2).max()
    };

    // The key store recorded the newer generation: the old file is refused.
    let refused = Session::restore(key(BOB_KEY), old.as_bytes(), newer.generation(), p.now, &mut p.rng);
    assert_eq!(
        refused.err(),
        Some(SnapshotError::RolledBack { generation: old.generation(), newest: newer.generation() })
    );

    // Without that record, restore the old file twice: the counters still never repeat.
    for round in 0..2 {
        restore_bob(&mut p, old.as_bytes(), 0);
        let start = p.wire.len();
        for _ in 0..3 {
            p.send(Side::B, "same text, same length").unwrap();
            let t = p.b.poll_transmit().unwrap();
            p.wire.push((Side::B, t.message));
        }
        let sent = data_sent(&p, Side::B, start);
        assert_eq!(sent.len(), 3);
        for d in &sent {
            // Past everything the lost timeline sent under those keys (two restores of one
            // snapshot pick independent random counters: only distinct, checked below).
            if let Some(max) = lost_max(&lost, (d.0, d.1)) {
                assert!(d.2 > max, "round {round}: counter {} not past {max}", d.2);
            }
            for e in &bob_sent {
                assert!(
                    (e.0, e.1, e.2) != (d.0, d.1, d.2),
                    "round {round}: counter reused under keyids {}/{}",
                    d.0,
                    d.1
                );
                // Same plaintext: equal ciphertext would mean the same keystream.
                assert_ne!(e.3, d.3, "round {round}: keystream reused");
            }
        }
        let ctrs: Vec<u64> = sent.iter().map(|d| d.2).collect();
        assert!(ctrs.windows(2).all(|w| w[0] < w[1]), "{ctrs:?}");
        bob_sent.extend(sent);
    }

    // Restored from the newest snapshot, Bob refuses Alice's messages replayed.
    restore_bob(&mut p, newer.as_bytes(), newer.generation());
    let before = p.messages(Side::B).len();
    for m in &from_alice {
        match p.b.receive(p.now, m, &mut p.rng) {
            Ok(()) | Err(ReceiveError::Unreadable(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    p.collect();
    assert_eq!(p.messages(Side::B).len(), before, "a replayed message was delivered");
}

#[test]
fn damaged_foreign_and_misdirected_snapshots_are_typed_errors() {
    let mut p = talking_pair();
    let snap = p.b.snapshot();
    let bytes = snap.as_bytes().to_vec();
    let restore = |b: &[u8], key_seed: u64| {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(5);
        Session::restore(key(key_seed), b, 0, otr::Timestamp(0), &mut rng).err()
    };
    assert_eq!(restore(&bytes, BOB_KEY), None);
    assert_eq!(restore(&bytes, 11), Some(SnapshotError::WrongIdentity), "Alice's key");
    assert_eq!(restore(b"", BOB_KEY), Some(SnapshotError::NotASnapshot));
    assert_eq!(restore(b"?OTR:AAMDxyz.", BOB_KEY), Some(SnapshotError::NotASnapshot));
    let mut v2 = bytes.clone();
    v2[9] = 2;
    assert_eq!(restore(&v2, BOB_KEY), Some(SnapshotError::UnsupportedVersion(2)));
    for n in 0..bytes.len() {
        assert!(restore(&bytes[..n], BOB_KEY).is_some(), "a {n}-byte prefix restored");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(restore(&longer, BOB_KEY), Some(SnapshotError::Malformed(_))));
}

fn snapshot_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| talking_pair().b.snapshot().as_bytes().to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random damage (bytes changed, removed or inserted, a cut) never panics: either a typed
    /// error, or a session (when only counters, flags or text changed).
    #[test]
    fn mutated_snapshots_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let mut b = snapshot_bytes().to_vec();
        for (at, value, op) in edits {
            let i = at.index(b.len().max(1));
            match op {
                0 if i < b.len() => b[i] ^= value | 1,
                1 if i < b.len() => { b.remove(i); }
                _ => b.insert(i.min(b.len()), value),
            }
        }
        if let Some(c) = cut {
            b.truncate(c.index(b.len() + 1));
        }
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(3);
        let _ = Session::restore(key(BOB_KEY), &b, 0, otr::Timestamp(0), &mut rng);
        let _ = Snapshot::generation_of(&b);
    }
}
