//! Two sessions on a simulated clock with seeded randomness: the deterministic test bench.
#![allow(dead_code)]

use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Long-term keys are slow-ish to generate; make each once per test binary and seed.
pub fn key(seed: u64) -> DsaKeyPair {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<u64, DsaKeyPair>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    let mut map = keys.lock().unwrap();
    map.entry(seed).or_insert_with(|| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))).clone()
}

pub fn session(name: &str, policy: Policy, seed: u64) -> Session {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x7a67);
    let config = SessionConfig::new(name, policy, InstanceTag::random(&mut rng));
    Session::new(config, key(seed))
}

/// Which side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Alice and Bob, a fake clock, one seeded RNG, and everything each side saw.
pub struct Pair {
    pub a: Session,
    pub b: Session,
    pub rng: ChaCha20Rng,
    pub now: Timestamp,
    pub a_events: Vec<Event>,
    pub b_events: Vec<Event>,
    /// Every transport message, in order, with its sender.
    pub wire: Vec<(Side, String)>,
    pub a_errors: Vec<otr::ReceiveError>,
    pub b_errors: Vec<otr::ReceiveError>,
}

impl Pair {
    pub fn new(pa: Policy, pb: Policy) -> Self {
        Self::seeded(pa, pb, 1)
    }

    pub fn seeded(pa: Policy, pb: Policy, seed: u64) -> Self {
        Self {
            a: session("alice", pa, 11),
            b: session("bob", pb, 22),
            rng: ChaCha20Rng::seed_from_u64(seed),
            now: Timestamp(1_000),
            a_events: vec![],
            b_events: vec![],
            wire: vec![],
            a_errors: vec![],
            b_errors: vec![],
        }
    }

    pub fn tick(&mut self, ms: u64) {
        self.now = self.now.plus_millis(ms);
    }

    /// Delivers everything both sides want to send, until both are quiet.
    pub fn drive(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.wire.push((Side::A, t.message.clone()));
                if let Err(e) = self.b.receive(self.now, &t.message, &mut self.rng) {
                    self.b_errors.push(e);
                }
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.wire.push((Side::B, t.message.clone()));
                if let Err(e) = self.a.receive(self.now, &t.message, &mut self.rng) {
                    self.a_errors.push(e);
                }
            }
            self.collect();
            if !moved {
                return;
            }
        }
        panic!("the two sessions never went quiet");
    }

    /// Moves pending events into the per-side logs.
    pub fn collect(&mut self) {
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
    }

    pub fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn events(&self, side: Side) -> &[Event] {
        match side {
            Side::A => &self.a_events,
            Side::B => &self.b_events,
        }
    }

    pub fn send(&mut self, side: Side, text: &str) -> Result<otr::Sent, otr::SendError> {
        let now = self.now;
        self.session(side).send(now, text)
    }

    /// Runs an AKE started by `side` with a query and returns the ssid both agreed on.
    pub fn secure(&mut self, side: Side) -> otr::Ssid {
        let now = self.now;
        self.session(side).start(now);
        self.drive();
        let a = last_secure(&self.a_events).expect("alice went secure");
        let b = last_secure(&self.b_events).expect("bob went secure");
        assert_eq!(a.1, b.1, "both sides see the same ssid");
        assert_eq!(a.0, self.b.identity().fingerprint(), "alice sees bob's fingerprint");
        assert_eq!(b.0, self.a.identity().fingerprint(), "bob sees alice's fingerprint");
        a.1
    }

    /// After Bob ended the conversation: Alice ends hers too, Bob starts a new AKE, which must
    /// give a new ssid (not `old`), and Alice's `text` reaches Bob encrypted.
    pub fn restart_after_bob_ended(&mut self, old: otr::Ssid, text: &str) {
        let now = self.now;
        self.a.end(now);
        let new = self.secure(Side::B);
        assert_ne!(old, new);
        self.send(Side::A, text).unwrap();
        self.drive();
        assert_eq!(self.messages(Side::B).last(), Some(&(text.to_string(), true)));
    }

    /// Texts delivered to `side`, with their encrypted flag.
    pub fn messages(&self, side: Side) -> Vec<(String, bool)> {
        self.events(side)
            .iter()
            .filter_map(|e| match e {
                Event::Message { text, encrypted, .. } => Some((text.clone(), *encrypted)),
                _ => None,
            })
            .collect()
    }
}

pub fn last_secure(events: &[Event]) -> Option<(otr::Fingerprint, otr::Ssid)> {
    events.iter().rev().find_map(|e| match e {
        Event::Secure { fingerprint, ssid, .. } => Some((*fingerprint, *ssid)),
        _ => None,
    })
}

/// Texts in several scripts, as the interop tests use them.
pub fn sample_text(i: usize) -> String {
    const TEXTS: [&str; 5] =
        ["¿Qué tal, señor Muñoz?", "你好，世界", "こんにちは 🎉🔐", "plain ascii", "Ünïcödé ✓ ∑"];
    format!("{} #{i}", TEXTS[i % TEXTS.len()])
}
