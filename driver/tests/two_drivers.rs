//! Two sides, each a [`Driver`], talking in memory on a simulated clock: the AKE and messages
//! with many peers at once, and heartbeats that fire through the one timer queue.
#![allow(clippy::unwrap_used, missing_docs)]

use otr_core::session::HEARTBEAT_MS;
use otr_core::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use otr_driver::Driver;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn session(name: &str, rng: &mut ChaCha20Rng) -> Session {
    let tag = InstanceTag::random(rng);
    let key = DsaKeyPair::generate(rng);
    Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), key)
}

/// Alice with one session per bob; each bob a driver with one session for "alice".
struct World {
    alice: Driver<String>,
    bobs: Vec<Driver<String>>,
    rng: ChaCha20Rng,
    /// (peer, event) seen by alice; (bob index, event) seen by the bobs.
    alice_events: Vec<(String, Event)>,
    bob_events: Vec<(usize, Event)>,
}

fn bob(i: usize) -> String {
    format!("bob{i}")
}

impl World {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let identity = DsaKeyPair::generate(&mut rng);
        let tag = InstanceTag::random(&mut rng);
        let mut alice = Driver::new();
        for i in 0..n {
            // One identity and instance tag, a session per peer (the factory).
            let make = || Session::new(SessionConfig::new("alice", Policy::ALWAYS, tag), identity.clone());
            alice.with_or_insert(&bob(i), make, |_| ());
        }
        let mut bobs = Vec::new();
        for i in 0..n {
            let mut d = Driver::new();
            assert!(d.insert("alice".to_string(), session(&bob(i), &mut rng)).is_none());
            bobs.push(d);
        }
        Self { alice, bobs, rng, alice_events: Vec::new(), bob_events: Vec::new() }
    }

    /// Carries every transmit to its peer until nothing moves; returns how many were carried.
    fn run(&mut self, now: Timestamp) -> usize {
        let mut carried = 0;
        loop {
            let mut moved = false;
            while let Some((peer, t)) = self.alice.poll_transmit() {
                let i: usize = peer.trim_start_matches("bob").parse().unwrap();
                let rng = &mut self.rng;
                self.bobs[i]
                    .with(&"alice".to_string(), |s| s.receive(now, &t.message, rng))
                    .unwrap()
                    .unwrap();
                moved = true;
                carried += 1;
            }
            for (i, b) in self.bobs.iter_mut().enumerate() {
                while let Some((peer, t)) = b.poll_transmit() {
                    assert_eq!(peer, "alice");
                    let rng = &mut self.rng;
                    self.alice.with(&bob(i), |s| s.receive(now, &t.message, rng)).unwrap().unwrap();
                    moved = true;
                    carried += 1;
                }
                while let Some((peer, e)) = b.poll_event() {
                    assert_eq!(peer, "alice");
                    self.bob_events.push((i, e));
                }
            }
            while let Some(e) = self.alice.poll_event() {
                self.alice_events.push(e);
            }
            if !moved {
                return carried;
            }
        }
    }
}

#[test]
fn many_peers_go_private_and_talk() {
    let n = 5;
    let mut w = World::new(n, 1);
    assert_eq!(w.alice.len(), n);
    let now = Timestamp(0);
    for i in 0..n {
        w.alice.with(&bob(i), |s| s.start(now)).unwrap();
    }
    w.run(now);
    for i in 0..n {
        assert!(w.alice.get(&bob(i)).unwrap().private_with().is_some(), "alice with bob{i}");
        assert!(w.bobs[i].get(&"alice".into()).unwrap().private_with().is_some(), "bob{i}");
    }
    let mut secure: Vec<&str> = w
        .alice_events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Secure { .. }))
        .map(|(p, _)| p.as_str())
        .collect();
    secure.sort_unstable();
    assert_eq!(secure, ["bob0", "bob1", "bob2", "bob3", "bob4"]);
    // A different text to each peer arrives at that peer only, encrypted.
    for i in 0..n {
        w.alice.with(&bob(i), |s| s.send(now, &format!("hello {i}"))).unwrap().unwrap();
    }
    w.run(now);
    let mut got: Vec<(usize, String)> = w
        .bob_events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::Message { text, encrypted: true, .. } => Some((*i, text.clone())),
            _ => None,
        })
        .collect();
    got.sort();
    let want: Vec<(usize, String)> = (0..n).map(|i| (i, format!("hello {i}"))).collect();
    assert_eq!(got, want);
    // And back: alice's events are tagged with the bob who wrote.
    w.bobs[3].with(&"alice".into(), |s| s.send(now, "from three")).unwrap().unwrap();
    w.run(now);
    assert!(w.alice_events.iter().any(|(p, e)| p == "bob3"
        && matches!(e, Event::Message { text, encrypted: true, .. } if text == "from three")));
}

#[test]
fn heartbeats_fire_through_the_one_timer_queue() {
    let n = 3;
    let mut w = World::new(n, 2);
    let t0 = Timestamp(1_000);
    for i in 0..n {
        w.alice.with(&bob(i), |s| s.start(t0)).unwrap();
    }
    w.run(t0);
    assert_eq!(w.alice.poll_timeout(), None, "nothing due before any data");
    // Bobs 0 and 2 write at different times: alice owes each a heartbeat.
    let t1 = Timestamp(2_000);
    let t2 = Timestamp(5_000);
    w.bobs[0].with(&"alice".into(), |s| s.send(t1, "one")).unwrap().unwrap();
    w.run(t1);
    w.bobs[2].with(&"alice".into(), |s| s.send(t2, "two")).unwrap().unwrap();
    w.run(t2);
    // The queue's head is bob0's heartbeat; alice last sent at t0.
    assert_eq!(w.alice.poll_timeout(), Some(t0.plus_millis(HEARTBEAT_MS)));
    assert_eq!(w.alice.handle_timeout(Timestamp(t0.0 + HEARTBEAT_MS - 1)), 0, "early: nothing");
    assert!(w.alice.poll_transmit().is_none());
    // Both are due at the same time (both last sent at t0): one call handles both.
    let due = t0.plus_millis(HEARTBEAT_MS);
    assert_eq!(w.alice.handle_timeout(due), 2);
    let mut peers = Vec::new();
    while let Some((peer, t)) = w.alice.poll_transmit() {
        let i: usize = peer.trim_start_matches("bob").parse().unwrap();
        let rng = &mut w.rng;
        w.bobs[i].with(&"alice".into(), |s| s.receive(due, &t.message, rng)).unwrap().unwrap();
        peers.push(peer);
    }
    peers.sort();
    assert_eq!(peers, ["bob0", "bob2"], "one heartbeat each, to the peers that wrote");
    assert_eq!(w.alice.poll_timeout(), None, "nothing more is due");
    // A heartbeat shows the bobs nothing.
    w.run(due);
    assert!(!w.bob_events.iter().any(|(_, e)| matches!(e, Event::Message { text, .. } if text.is_empty())));
}

#[test]
fn removed_sessions_leave_the_queue_and_can_come_back() {
    let mut w = World::new(2, 3);
    let t0 = Timestamp(0);
    w.alice.with(&bob(1), |s| s.start(t0)).unwrap();
    w.run(t0);
    w.bobs[1].with(&"alice".into(), |s| s.send(t0, "hi")).unwrap().unwrap();
    w.run(t0);
    assert!(w.alice.poll_timeout().is_some());
    // Take bob1's session out (a transport went away, or it moves elsewhere): its timer goes.
    let s = w.alice.remove(&bob(1)).unwrap();
    assert_eq!(w.alice.poll_timeout(), None);
    assert!(w.alice.with(&bob(1), |s| s.start(t0)).is_none());
    // Put back, it is the same private conversation and its timer is armed again.
    assert!(w.alice.insert(bob(1), s).is_none());
    assert!(w.alice.get(&bob(1)).unwrap().private_with().is_some());
    assert_eq!(w.alice.poll_timeout(), Some(t0.plus_millis(HEARTBEAT_MS)));
    w.alice.with(&bob(1), |s| s.send(t0, "still private")).unwrap().unwrap();
    w.run(t0);
    assert!(w.bob_events.iter().any(|(i, e)| *i == 1
        && matches!(e, Event::Message { text, encrypted: true, .. } if text == "still private")));
}
