//! Live interop: our `Session` against a real libotr 4.1.1 endpoint in the same process, in
//! both directions. Our side uses a seeded RNG and a fake clock; libotr uses its own.
//!
//! Most scenarios run twice: in OTR version 3, and in version 2 against a libotr that allows
//! only v2 (our side allows both, so the negotiation is tested as well).

#![allow(clippy::unwrap_used)]

use otr::{
    DsaKeyPair, Event, InstanceTag, Policy, ReceiveError, SendError, Sent, Session, SessionConfig, Timestamp,
};
mod common;

use common::pump;
use otr_libotr_harness::{LibotrPeer, Output, POLICY_ALLOW_V3, PeerEvent, PeerPolicy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn our_key() -> DsaKeyPair {
    static KEY: std::sync::OnceLock<DsaKeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(4242))).clone()
}

/// The protocol version a scenario runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// Both sides allow v3 only.
    V3,
    /// libotr allows v2 only; we allow v2 and v3.
    V2,
}

impl Proto {
    fn version(self) -> u16 {
        match self {
            Proto::V3 => 3,
            Proto::V2 => 2,
        }
    }

    fn ours(self, policy: Policy) -> Policy {
        match self {
            Proto::V3 => policy,
            Proto::V2 => policy | Policy::ALLOW_V2,
        }
    }

    /// A libotr endpoint "bob" with `policy`, in this version.
    fn libotr(self, policy: PeerPolicy, mms: usize, keyfile: Option<&std::path::Path>) -> LibotrPeer {
        let policy = match self {
            Proto::V3 => policy,
            Proto::V2 => PeerPolicy::Raw(policy.bits(true) & !POLICY_ALLOW_V3),
        };
        LibotrPeer::new("bob", "alice", policy, false, mms, keyfile).expect("libotr endpoint")
    }
}

/// Defines `#[test] fn <name>_v3` and `<name>_v2`, each calling `name(Proto::…)`.
macro_rules! in_both_versions {
    ($($name:ident),* $(,)?) => {
        mod v3 { $( #[test] fn $name() { super::$name(super::Proto::V3) } )* }
        mod v2 { $( #[test] fn $name() { super::$name(super::Proto::V2) } )* }
    };
}

in_both_versions!(
    ake_initiated_by_us_and_by_libotr,
    two_hundred_messages_alternating_and_in_bursts,
    libotr_ends_we_finish_and_refuse_to_send,
    we_end_and_libotr_sees_it,
    whitespace_tag_starts_the_ake_either_way,
    require_encryption_never_lets_plaintext_out,
    fragmented_at_300_bytes_both_ways,
    smp_started_by_us_with_and_without_question,
    smp_started_by_libotr_with_and_without_question,
    smp_aborts_are_seen_and_a_second_run_succeeds,
    ake_smp_and_large_messages_fragmented_at_300_both_ways,
    our_heartbeat_is_accepted_silently_by_libotr,
    simultaneous_queries_resolve_to_one_private_conversation,
    a_duplicate_from_libotr_is_dropped_silently_and_reordering_tolerated,
    libotr_restarted_loses_its_session_and_one_re_ake_brings_it_back,
    our_session_restored_from_a_snapshot_talks_on_with_libotr,
);

/// Our session ("alice") and a libotr endpoint ("bob"), with everything each side saw.
struct Duo {
    proto: Proto,
    ours: Session,
    lib: LibotrPeer,
    rng: ChaCha20Rng,
    now: Timestamp,
    our_events: Vec<Event>,
    our_errors: Vec<ReceiveError>,
    lib_events: Vec<PeerEvent>,
    /// Transport messages in order: (from us?, message).
    wire: Vec<(bool, String)>,
}

impl Duo {
    fn new(proto: Proto, ours: Policy, lib: PeerPolicy, mms: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut config = SessionConfig::new("alice", proto.ours(ours), InstanceTag::random(&mut rng));
        config.max_message_size = mms;
        let lib = proto.libotr(lib, mms, None);
        Self {
            proto,
            ours: Session::new(config, our_key()),
            lib,
            rng,
            now: Timestamp(1),
            our_events: vec![],
            our_errors: vec![],
            lib_events: vec![],
            wire: vec![],
        }
    }

    /// Routes messages both ways until both sides are quiet.
    fn drive(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(t) = self.ours.poll_transmit() {
                moved = true;
                self.lib.receive(t.message.as_bytes());
                self.wire.push((true, t.message));
            }
            while let Some(out) = self.lib.poll_output() {
                match out {
                    Output::Net(m) => {
                        moved = true;
                        if let Err(e) = self.ours.receive(self.now, &m, &mut self.rng) {
                            self.our_errors.push(e);
                        }
                        self.wire.push((false, m));
                    }
                    Output::Event(PeerEvent::Log(_)) => {}
                    Output::Event(e) => self.lib_events.push(e),
                }
            }
            while let Some(e) = self.ours.poll_event() {
                self.our_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("never went quiet");
    }

    fn our_send(&mut self, text: &str) -> Result<Sent, SendError> {
        self.ours.send(self.now, text)
    }

    fn our_secure(&self) -> Option<(String, String)> {
        self.our_events.iter().rev().find_map(|e| match e {
            Event::Secure { fingerprint, ssid, version, instance, .. } => {
                assert_eq!(*version, self.proto.version(), "the version negotiated");
                assert_eq!(instance.is_v2(), self.proto == Proto::V2, "v2 has no instance tags");
                Some((fingerprint.to_string(), ssid.to_string()))
            }
            _ => None,
        })
    }

    fn lib_secure(&self) -> Option<(String, String)> {
        self.lib_events.iter().rev().find_map(|e| match e {
            PeerEvent::Secure { fingerprint, ssid } => Some((fingerprint.clone(), ssid.clone())),
            _ => None,
        })
    }

    /// Asserts both sides are private with each other, with the same ssid; returns it.
    fn assert_secure(&self) -> String {
        let ours = self.our_secure().unwrap_or_else(|| {
            panic!(
                "we did not go secure: errors {:?}\nwire {:#?}\nlib {:?}",
                self.our_errors,
                self.wire
                    .iter()
                    .map(|(u, m)| (*u, m.chars().take(60).collect::<String>()))
                    .collect::<Vec<_>>(),
                self.lib_events
            )
        });
        let lib = self.lib_secure().expect("libotr went secure");
        assert_eq!(ours.1, lib.1, "same ssid on both sides");
        assert_eq!(ours.0, self.lib.fingerprint(), "we see libotr's fingerprint");
        assert_eq!(lib.0, self.ours.identity().fingerprint().to_string(), "libotr sees ours");
        ours.1
    }

    fn our_texts(&self) -> Vec<(String, bool)> {
        self.our_events
            .iter()
            .filter_map(|e| match e {
                Event::Message { text, encrypted, .. } => Some((text.clone(), *encrypted)),
                _ => None,
            })
            .collect()
    }

    fn lib_texts(&self) -> Vec<(String, bool)> {
        self.lib_events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::Msg { text, encrypted } => {
                    Some((String::from_utf8_lossy(text).into_owned(), *encrypted))
                }
                _ => None,
            })
            .collect()
    }

    fn secure_by(&mut self, us: bool) -> String {
        if us {
            self.ours.start(self.now);
        } else {
            self.lib.query();
        }
        self.drive();
        self.assert_secure()
    }
}

fn sample(i: usize) -> String {
    const T: [&str; 4] =
        ["¿Qué tal, señor Muñoz? ñandú", "你好，世界。今天天气很好", "🎉🔐🙂 emoji 👍🏽", "plain ascii"];
    format!("{} #{i}", T[i % T.len()])
}

/// A text of about `bytes` bytes (UTF-8), from the samples.
fn sized(i: usize, bytes: usize) -> String {
    let mut s = String::new();
    for c in sample(i).chars().cycle() {
        if s.len() + c.len_utf8() > bytes {
            break;
        }
        s.push(c);
    }
    s
}

/// Our side goes private with libotr (started by either side), is saved, dropped and
/// restored from the snapshot: it reads what libotr sent meanwhile and the conversation goes
/// on both ways with the same keys, no new AKE on either side, no error.
fn our_session_restored_from_a_snapshot_talks_on_with_libotr(proto: Proto) {
    for us in [true, false] {
        let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
        let ssid = d.secure_by(us);
        for i in 0..3 {
            d.our_send(&sample(i)).unwrap();
            d.drive();
            d.lib.send(&sample(i + 10));
            d.drive();
        }
        let snap = d.ours.snapshot();
        let tag = d.ours.instance_tag();
        // Our process is gone; libotr writes meanwhile.
        d.ours = Session::new(SessionConfig::new("gone", Policy::MANUAL, tag), our_key());
        d.lib.send("while you were away");
        let mut offline = vec![];
        while let Some(out) = d.lib.poll_output() {
            match out {
                Output::Net(m) => offline.push(m),
                Output::Event(PeerEvent::Log(_)) => {}
                Output::Event(e) => d.lib_events.push(e),
            }
        }
        d.ours = Session::restore(our_key(), snap.as_bytes(), snap.generation(), d.now, &mut d.rng).unwrap();
        assert_eq!(d.ours.instance_tag(), tag);
        assert_eq!(d.ours.private_with().map(|p| p.2.to_string()), Some(ssid.clone()));
        for m in offline {
            d.ours.receive(d.now, &m, &mut d.rng).unwrap();
            d.wire.push((false, m));
        }
        d.drive();
        assert_eq!(d.our_texts().last(), Some(&("while you were away".to_string(), true)));
        let secure = |d: &Duo| {
            let ours = d.our_events.iter().filter(|e| matches!(e, Event::Secure { .. })).count();
            (ours, d.lib_events.iter().filter(|e| matches!(e, PeerEvent::Secure { .. })).count())
        };
        let before = secure(&d);
        for i in 0..10 {
            d.our_send(&format!("restored {}", sample(i))).unwrap();
            d.drive();
            d.lib.send(&format!("to the restored {}", sample(i)));
            d.drive();
        }
        assert_eq!(secure(&d), before, "no new AKE on either side");
        assert_eq!(d.lib_texts().last(), Some(&(format!("restored {}", sample(9)), true)));
        assert_eq!(d.our_texts().last(), Some(&(format!("to the restored {}", sample(9)), true)));
        assert!(d.our_errors.is_empty(), "{:?}", d.our_errors);
        assert!(!d.lib_events.iter().any(|e| matches!(e, PeerEvent::Error(_))), "{:?}", d.lib_events);
        assert_eq!(d.assert_secure(), ssid);
    }
}

fn ake_initiated_by_us_and_by_libotr(proto: Proto) {
    for us in [true, false] {
        let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
        d.secure_by(us);
        assert!(d.our_errors.is_empty(), "{:?}", d.our_errors);
        assert!(!d.lib_events.iter().any(|e| matches!(e, PeerEvent::Error(_))), "{:?}", d.lib_events);
    }
}

fn two_hundred_messages_alternating_and_in_bursts(proto: Proto) {
    for us_first in [true, false] {
        let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
        d.secure_by(us_first);
        let (mut to_lib, mut to_us) = (vec![], vec![]);
        for i in 0..200 {
            let ours = if i < 100 { i % 2 == 0 } else { (i / 10) % 2 == 0 };
            let text = sample(i);
            if ours {
                assert_eq!(d.our_send(&text), Ok(Sent::Encrypted));
                to_lib.push((text, true));
            } else {
                d.lib.send(&text);
                to_us.push((text, true));
            }
            if i < 100 || i % 10 == 9 {
                d.drive();
            }
        }
        d.drive();
        assert_eq!(d.lib_texts(), to_lib, "libotr got our texts intact and in order");
        assert_eq!(d.our_texts(), to_us, "we got libotr's texts intact and in order");
        assert!(d.our_errors.is_empty(), "{:?}", d.our_errors);
        // Keys rotated: later data messages use higher keyids than the first ones.
        let keyids: Vec<u32> = d
            .wire
            .iter()
            .filter_map(|(_, m)| match otr::message::classify(m) {
                Ok(otr::message::Incoming::Encoded(b)) => {
                    otr::data::DataMessage::read(&b).ok().map(|x| x.sender_keyid)
                }
                _ => None,
            })
            .collect();
        assert!(keyids.iter().max().unwrap() > &50, "keys rotated: {:?}", keyids.iter().max());
    }
}

fn libotr_ends_we_finish_and_refuse_to_send(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
    let first = d.secure_by(true);
    d.lib.end();
    d.drive();
    assert!(d.lib_events.contains(&PeerEvent::Insecure));
    assert!(d.our_events.iter().any(|e| matches!(e, Event::RemoteEnded { .. })));
    let before = d.wire.len();
    assert_eq!(d.our_send("anyone?"), Err(SendError::Finished));
    d.drive();
    assert_eq!(d.wire.len(), before, "nothing left our side");
    d.ours.end(d.now);
    d.drive();
    let second = d.secure_by(false);
    assert_ne!(first, second, "a new AKE gives a new ssid");
    d.our_send("again").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("again".to_string(), true)));
}

fn we_end_and_libotr_sees_it(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
    let first = d.secure_by(false);
    d.ours.end(d.now);
    d.drive();
    assert!(d.lib_events.contains(&PeerEvent::Finished), "{:?}", d.lib_events);
    assert!(d.lib_texts().is_empty(), "the disconnect carrier has no text");
    d.lib.end();
    let second = d.secure_by(true);
    assert_ne!(first, second);
}

fn whitespace_tag_starts_the_ake_either_way(proto: Proto) {
    // We tag, libotr starts the AKE.
    let mut d = Duo::new(proto, Policy::OPPORTUNISTIC, PeerPolicy::Opportunistic, 0);
    assert_eq!(d.our_send("hi bob"), Ok(Sent::Plaintext));
    d.drive();
    assert_eq!(d.lib_texts(), vec![("hi bob".to_string(), false)]);
    d.assert_secure();
    // libotr tags, we start the AKE.
    let mut d = Duo::new(proto, Policy::OPPORTUNISTIC, PeerPolicy::Opportunistic, 0);
    d.lib.send("hi alice");
    d.drive();
    assert_eq!(d.our_texts(), vec![("hi alice".to_string(), false)]);
    d.assert_secure();
    d.our_send("now private").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("now private".to_string(), true)));
}

fn require_encryption_never_lets_plaintext_out(proto: Proto) {
    // Our side requires encryption.
    let mut d = Duo::new(proto, Policy::ALWAYS, PeerPolicy::Opportunistic, 0);
    assert_eq!(d.our_send("very secret"), Ok(Sent::Held));
    d.drive();
    assert!(d.wire.iter().all(|(_, m)| !m.contains("very secret")));
    d.assert_secure();
    assert_eq!(d.lib_texts(), vec![("very secret".to_string(), true)]);
    // libotr requires encryption: its send is refused, it queries, then sends it encrypted.
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Always, 0);
    d.lib.send("libotr secret");
    d.drive();
    assert!(d.wire.iter().all(|(_, m)| !m.contains("libotr secret")));
    d.assert_secure();
    assert_eq!(d.our_texts(), vec![("libotr secret".to_string(), true)]);
}

#[test]
fn extra_symmetric_keys_agree() {
    let mut d = Duo::new(Proto::V3, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    let key = d.ours.extra_symmetric_key(d.now, 7, b"file.txt").unwrap();
    d.drive();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    assert!(d.lib_events.contains(&PeerEvent::Symkey(hex)), "{:?}", d.lib_events);
    d.lib.symkey(9, b"other");
    d.drive();
    let lib_key = d.lib_events.iter().rev().find_map(|e| match e {
        PeerEvent::Symkey(k) => Some(k.clone()),
        _ => None,
    });
    let ours = d.our_events.iter().find_map(|e| match e {
        Event::ExtraSymmetricKey { key, use_: 9, usedata, .. } if usedata == b"other" => {
            Some(key.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
        _ => None,
    });
    assert_eq!(ours, lib_key);
}

fn fragmented_at_300_bytes_both_ways(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 300);
    d.secure_by(true);
    assert!(d.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits");
    let mut expect_lib = vec![];
    let mut expect_us = vec![];
    for i in 0..10 {
        let text = sized(i, 5_000 + i * 1_650);
        d.our_send(&text).unwrap();
        expect_lib.push((text.clone(), true));
        d.lib.send(&text);
        expect_us.push((text, true));
        d.drive();
    }
    assert!(d.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits");
    assert_eq!(d.lib_texts(), expect_lib);
    assert_eq!(d.our_texts(), expect_us);
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 300);
    d.secure_by(false);
    d.our_send("after libotr-initiated fragmented AKE").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().len(), 1);
}

#[test]
fn unreadable_garbage_does_not_break_the_session() {
    let mut d = Duo::new(Proto::V3, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    for junk in ["?OTR:AAMDAAAAAA==.", "?OTR|00000100|00000100,00001,00002,abc,", "?OTR:!!!."] {
        assert!(d.ours.receive(d.now, junk, &mut d.rng).is_err());
    }
    d.lib.send("still fine");
    d.drive();
    assert_eq!(d.our_texts(), vec![("still fine".to_string(), true)]);
}

impl Duo {
    fn our_smp_outcomes(&self) -> Vec<&'static str> {
        self.our_events
            .iter()
            .filter_map(|e| match e {
                Event::SmpSucceeded { .. } => Some("success"),
                Event::SmpFailed { .. } => Some("failure"),
                Event::SmpAborted { .. } => Some("aborted"),
                Event::SmpRequest { .. } => Some("request"),
                _ => None,
            })
            .collect()
    }

    fn lib_smp_outcomes(&self) -> Vec<&'static str> {
        self.lib_events
            .iter()
            .filter_map(|e| match e {
                PeerEvent::SmpSuccess => Some("success"),
                PeerEvent::SmpFailure => Some("failure"),
                PeerEvent::SmpAborted => Some("aborted"),
                PeerEvent::SmpRequest(_) => Some("request"),
                _ => None,
            })
            .collect()
    }

    fn clear(&mut self) {
        self.our_events.clear();
        self.lib_events.clear();
    }
}

fn smp_started_by_us_with_and_without_question(proto: Proto) {
    for question in [None, Some("¿Dónde nos conocimos? 在哪里")] {
        for (ours, theirs, outcome) in [("s3cret", "s3cret", "success"), ("s3cret", "other", "failure")] {
            let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
            d.secure_by(true);
            d.ours.smp_start(d.now, question, ours.as_bytes(), &mut d.rng).unwrap();
            d.drive();
            let asked = d.lib_events.iter().find_map(|e| match e {
                PeerEvent::SmpRequest(q) => Some(q.clone()),
                _ => None,
            });
            assert_eq!(asked, Some(question.map(|q| q.as_bytes().to_vec())), "libotr saw the question");
            d.lib.smp_answer(theirs.as_bytes());
            d.drive();
            assert_eq!(d.our_smp_outcomes(), vec![outcome], "our outcome");
            assert_eq!(d.lib_smp_outcomes(), vec!["request", outcome], "libotr's outcome");
            if outcome == "success" {
                let fp = d.our_events.iter().find_map(|e| match e {
                    Event::SmpSucceeded { fingerprint, .. } => Some(fingerprint.to_string()),
                    _ => None,
                });
                assert_eq!(
                    fp.as_deref(),
                    Some(d.lib.fingerprint()),
                    "success names the verified fingerprint"
                );
            }
        }
    }
}

fn smp_started_by_libotr_with_and_without_question(proto: Proto) {
    for question in [None, Some("favourite 🍕?")] {
        for (theirs, ours, outcome) in [("pizza", "pizza", "success"), ("pizza", "pasta", "failure")] {
            let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
            d.secure_by(false);
            d.lib.smp(question, theirs.as_bytes());
            d.drive();
            let asked = d.our_events.iter().find_map(|e| match e {
                Event::SmpRequest { question, .. } => Some(question.clone()),
                _ => None,
            });
            assert_eq!(asked, Some(question.map(str::to_owned)));
            d.ours.smp_respond(d.now, ours.as_bytes(), &mut d.rng).unwrap();
            d.drive();
            assert_eq!(d.our_smp_outcomes(), vec!["request", outcome]);
            assert_eq!(d.lib_smp_outcomes(), vec![outcome]);
        }
    }
}

fn smp_aborts_are_seen_and_a_second_run_succeeds(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    // We abort after libotr's request arrives.
    d.ours.smp_start(d.now, None, b"x", &mut d.rng).unwrap();
    d.drive();
    d.ours.smp_abort(d.now);
    d.drive();
    assert!(d.lib_events.contains(&PeerEvent::SmpAborted), "{:?}", d.lib_events);
    // libotr aborts ours.
    d.clear();
    d.lib.smp(None, b"y");
    d.drive();
    d.lib.smp_abort();
    d.drive();
    assert_eq!(d.our_smp_outcomes(), vec!["request", "aborted"]);
    // A failure, then a success.
    d.clear();
    d.ours.smp_start(d.now, Some("q"), b"one", &mut d.rng).unwrap();
    d.drive();
    d.lib.smp_answer(b"two");
    d.drive();
    assert_eq!(d.our_smp_outcomes(), vec!["failure"]);
    d.clear();
    d.lib.smp(Some("again"), b"same");
    d.drive();
    d.ours.smp_respond(d.now, b"same", &mut d.rng).unwrap();
    d.drive();
    assert_eq!(d.our_smp_outcomes(), vec!["request", "success"]);
    assert_eq!(d.lib_smp_outcomes(), vec!["success"]);
    // The conversation goes on.
    d.our_send("after smp").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("after smp".to_string(), true)));
}

fn ake_smp_and_large_messages_fragmented_at_300_both_ways(proto: Proto) {
    for us in [true, false] {
        let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 300);
        d.secure_by(us);
        if us {
            d.ours.smp_start(d.now, Some("q?"), b"frag", &mut d.rng).unwrap();
            d.drive();
            d.lib.smp_answer(b"frag");
        } else {
            d.lib.smp(Some("q?"), b"frag");
            d.drive();
            d.ours.smp_respond(d.now, b"frag", &mut d.rng).unwrap();
        }
        d.drive();
        assert!(d.our_smp_outcomes().contains(&"success"));
        assert!(d.lib_smp_outcomes().contains(&"success"));
        for i in 0..10 {
            let text = sized(i, 5_000 + i * 1_650);
            d.our_send(&text).unwrap();
            d.lib.send(&text);
            d.drive();
            assert_eq!(d.lib_texts().last().map(|t| &t.0), Some(&text));
            assert_eq!(d.our_texts().last().map(|t| &t.0), Some(&text));
        }
        let long = d.wire.iter().filter(|(_, m)| m.len() > 300).count();
        assert!(long <= 1, "only libotr's unfragmented query may exceed 300 bytes ({long})");
    }
}

/// The texts we received encrypted, with the instance each came from.
fn encrypted_by_instance(events: &[Event]) -> Vec<(u32, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { instance: Some(i), text, encrypted: true } => Some((i.get(), text.clone())),
            _ => None,
        })
        .collect()
}

/// The texts a libotr client received encrypted.
fn lib_encrypted_texts(events: &[PeerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Msg { text, encrypted: true } => Some(String::from_utf8_lossy(text).into_owned()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_libotr_instances_of_one_account_keep_separate_conversations() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let config = SessionConfig::new("alice", Policy::MANUAL, InstanceTag::random(&mut rng));
    let mut ours = Session::new(config, our_key());
    let mut bobs = [
        LibotrPeer::new("bob", "alice", PeerPolicy::Manual, false, 0, None).unwrap(),
        LibotrPeer::new("bob", "alice", PeerPolicy::Manual, false, 0, None).unwrap(),
    ];
    let now = Timestamp(5);
    let mut events = vec![];
    let mut lib_events: [Vec<PeerEvent>; 2] = [vec![], vec![]];
    bobs[0].query();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    bobs[1].query();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    let secure: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Secure { instance, ssid, .. } => Some((*instance, *ssid)),
            _ => None,
        })
        .collect();
    let tags: std::collections::BTreeSet<u32> = secure.iter().map(|(i, _)| i.get()).collect();
    assert!(tags.contains(&bobs[0].instance_tag()) && tags.contains(&bobs[1].instance_tag()), "{secure:?}");
    // Each bob client writes; we see which instance each message came from.
    bobs[0].send("from laptop");
    bobs[1].send("from phone");
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    let got = encrypted_by_instance(&events);
    assert!(got.contains(&(bobs[0].instance_tag(), "from laptop".into())), "{got:?}");
    assert!(got.contains(&(bobs[1].instance_tag(), "from phone".into())), "{got:?}");
    // We answer each instance explicitly; only the addressed client reads it.
    for (k, bob) in bobs.iter().enumerate() {
        let tag = InstanceTag::new(bob.instance_tag()).unwrap();
        ours.send_to(now, tag, &format!("to {k}")).unwrap();
    }
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    for (k, seen) in lib_events.iter().enumerate() {
        assert_eq!(lib_encrypted_texts(seen), vec![format!("to {k}")], "client {k} got only its own message");
    }
    // A plain send goes to the most recently active private instance (the phone).
    ours.send(now, "default").unwrap();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    assert!(lib_events[1].contains(&PeerEvent::Msg { encrypted: true, text: b"default".to_vec() }));
}

fn our_heartbeat_is_accepted_silently_by_libotr(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    d.lib.send("hello");
    d.drive();
    let due = d.ours.poll_timeout().expect("a heartbeat is owed after libotr's message");
    d.now = due;
    d.ours.handle_timeout(due);
    let before = d.wire.len();
    d.drive();
    assert_eq!(d.wire.len(), before + 1, "one heartbeat went out");
    assert!(
        !d.lib_events.iter().any(|e| matches!(e, PeerEvent::Msg { .. } | PeerEvent::Error(_))),
        "libotr shows nothing for a heartbeat: {:?}",
        d.lib_events
    );
    d.lib.send("still talking");
    d.drive();
    assert_eq!(d.our_texts().last(), Some(&("still talking".to_string(), true)));
}

fn simultaneous_queries_resolve_to_one_private_conversation(proto: Proto) {
    for _ in 0..4 {
        let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
        // Both ask at once: the queries cross, so do the D-H Commits.
        d.ours.start(d.now);
        d.lib.query();
        let ours = d.ours.poll_transmit().unwrap().message;
        let mut lib_out = vec![];
        while let Some(o) = d.lib.poll_output() {
            if let Output::Net(m) = o {
                lib_out.push(m);
            }
        }
        d.lib.receive(ours.as_bytes());
        for m in lib_out {
            let _ = d.ours.receive(d.now, &m, &mut d.rng);
        }
        d.drive();
        let ssid = d.assert_secure();
        d.our_send("after crossing").unwrap();
        d.lib.send("likewise");
        d.drive();
        assert_eq!(d.lib_texts().last(), Some(&("after crossing".to_string(), true)), "{ssid}");
        assert_eq!(d.our_texts().last(), Some(&("likewise".to_string(), true)));
    }
}

fn a_duplicate_from_libotr_is_dropped_silently_and_reordering_tolerated(proto: Proto) {
    let mut d = Duo::new(proto, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    d.lib.send("first");
    d.lib.send("second");
    let mut msgs = vec![];
    while let Some(o) = d.lib.poll_output() {
        if let Output::Net(m) = o {
            msgs.push(m);
        }
    }
    // Reordered: libotr itself would refuse the older one; we read both, once.
    for m in msgs.iter().rev().chain(msgs.iter()) {
        assert_eq!(d.ours.receive(d.now, m, &mut d.rng), Ok(()));
    }
    d.drive();
    assert_eq!(d.our_texts(), vec![("second".to_string(), true), ("first".to_string(), true)]);
    assert!(d.wire.iter().all(|(ours, m)| !(*ours && m.starts_with("?OTR Error"))), "no error replies");
}

fn libotr_restarted_loses_its_session_and_one_re_ake_brings_it_back(proto: Proto) {
    let dir = std::env::temp_dir().join(format!("otr-restart-{}-{proto:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("bob.key");
    let mut d = Duo::new(proto, Policy::OPPORTUNISTIC, PeerPolicy::Opportunistic, 0);
    d.lib = proto.libotr(PeerPolicy::Opportunistic, 0, Some(&key));
    d.secure_by(true);
    // Bob's client restarts: same key, no session.
    d.lib = proto.libotr(PeerPolicy::Opportunistic, 0, Some(&key));
    d.lib_events.clear();
    d.our_send("did you get this?").unwrap();
    d.our_send("and this?").unwrap();
    d.drive();
    // libotr cannot read them; it tells its user (not us: libotr sends no error reply for data
    // outside a private conversation), and its user does what libotr users do: starts OTR.
    assert!(d.lib_events.iter().any(|e| matches!(e, PeerEvent::Error(_))), "{:?}", d.lib_events);
    assert!(d.lib_texts().is_empty());
    d.lib.query();
    d.drive();
    // We take the query while private as the sign it lost its session: we tell our user what
    // may not have arrived, and the new AKE makes the conversation private again.
    let lost = d.our_events.iter().find_map(|e| match e {
        Event::MaybeNotDelivered { texts, .. } => Some(texts.clone()),
        _ => None,
    });
    assert_eq!(lost, Some(vec!["did you get this?".to_string(), "and this?".to_string()]));
    let secures = d.our_events.iter().filter(|e| matches!(e, Event::Secure { .. })).count();
    assert_eq!(secures, 2, "one automatic re-AKE");
    d.our_send("again, privately").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("again, privately".to_string(), true)));
    let errors_sent_by_us = d.wire.iter().filter(|(ours, m)| *ours && m.starts_with("?OTR Error")).count();
    assert!(errors_sent_by_us <= 1, "we never bounce errors back");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn v3_is_chosen_when_libotr_allows_both_and_v2_when_we_allow_only_v2() {
    // Both sides allow v2 and v3: v3, whoever starts.
    for us in [true, false] {
        let mut d = Duo::new(Proto::V3, Policy::MANUAL | Policy::ALLOW_V2, PeerPolicy::Manual, 0);
        d.lib = LibotrPeer::new("bob", "alice", PeerPolicy::Manual, true, 0, None).unwrap();
        d.secure_by(us);
    }
    // We allow only v2, libotr both: v2.
    for us in [true, false] {
        let v2_only = Policy::from_bits(Policy::ALLOW_V2.bits());
        let mut d = Duo::new(Proto::V2, v2_only, PeerPolicy::Manual, 0);
        d.lib = LibotrPeer::new("bob", "alice", PeerPolicy::Manual, true, 0, None).unwrap();
        d.secure_by(us);
        assert!(d.wire.iter().all(|(ours, m)| !*ours || !m.contains("?OTRv23?")), "we offer v2 only");
        d.our_send("v2 it is").unwrap();
        d.drive();
        assert_eq!(d.lib_texts(), vec![("v2 it is".to_string(), true)]);
    }
}

#[test]
fn the_extra_symmetric_key_is_refused_in_v2() {
    let mut d = Duo::new(Proto::V2, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    assert_eq!(d.ours.extra_symmetric_key(d.now, 1, b""), Err(SendError::NeedsVersion3));
    assert!(d.ours.poll_transmit().is_none(), "nothing sent");
    // libotr does not check the version; we follow the spec and ignore its v2 symkey TLV.
    d.lib.symkey(1, b"x");
    d.drive();
    assert!(!d.our_events.iter().any(|e| matches!(e, Event::ExtraSymmetricKey { .. })));
    d.lib.send("still fine");
    d.drive();
    assert_eq!(d.our_texts(), vec![("still fine".to_string(), true)]);
}

#[test]
fn hostile_v2_input_does_not_break_a_v2_session() {
    let mut d = Duo::new(Proto::V2, Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    let junk = [
        "?OTR:AAID.",                       // v2 data message, truncated after the type
        "?OTR:AAIDAQAAAAEAAAAB.",           // v2 data, truncated in the keyids
        "?OTR:AAIK.",                       // v2 D-H Key without a body
        "?OTR:AAIC/////w==.",               // v2 D-H Commit with an absurd length
        "?OTR:AAEC.",                       // version 1: never spoken
        "?OTR,1,2,?OTR:AAID,",              // the first half of a v2 fragment...
        "?OTR,3,2,x,",                      // ...and a piece out of range
        "?OTR,00001,00001,?OTR:AAIDAA==.,", // a whole v2 message in one fragment, truncated
        "?OTR,65535,65535,x,",
    ];
    for m in junk {
        let _ = d.ours.receive(d.now, m, &mut d.rng);
    }
    d.drive();
    assert!(d.our_texts().is_empty(), "nothing delivered from junk");
    d.lib.send("still fine");
    d.drive();
    assert_eq!(d.our_texts(), vec![("still fine".to_string(), true)]);
    d.our_send("and back").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("and back".to_string(), true)));
}

#[test]
fn a_v2_client_and_a_v3_client_of_one_account_keep_separate_conversations() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let policy = Policy::MANUAL | Policy::ALLOW_V2;
    let mut ours =
        Session::new(SessionConfig::new("alice", policy, InstanceTag::random(&mut rng)), our_key());
    let mut bobs =
        [Proto::V2.libotr(PeerPolicy::Manual, 0, None), Proto::V3.libotr(PeerPolicy::Manual, 0, None)];
    let now = Timestamp(5);
    let mut events = vec![];
    let mut lib_events: [Vec<PeerEvent>; 2] = [vec![], vec![]];
    bobs[0].query();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    bobs[1].query();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    let versions: Vec<(u32, u16)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Secure { instance, version, .. } => Some((instance.get(), *version)),
            _ => None,
        })
        .collect();
    assert!(versions.contains(&(0, 2)), "{versions:?}");
    assert!(versions.contains(&(bobs[1].instance_tag(), 3)), "{versions:?}");
    bobs[0].send("from the v2 client");
    bobs[1].send("from the v3 client");
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    let got = encrypted_by_instance(&events);
    assert!(got.contains(&(0, "from the v2 client".into())), "{got:?}");
    assert!(got.contains(&(bobs[1].instance_tag(), "from the v3 client".into())), "{got:?}");
    ours.send_to(now, InstanceTag::V2, "to v2").unwrap();
    ours.send_to(now, InstanceTag::new(bobs[1].instance_tag()).unwrap(), "to v3").unwrap();
    pump(&mut ours, &mut bobs, &mut rng, now, &mut events, &mut lib_events);
    assert_eq!(lib_encrypted_texts(&lib_events[0]), vec!["to v2".to_string()]);
    assert_eq!(lib_encrypted_texts(&lib_events[1]), vec!["to v3".to_string()]);
}

#[test]
fn a_stripped_v3_query_from_libotr_cannot_downgrade_us() {
    let both = Policy::MANUAL | Policy::ALLOW_V2;
    let mut d = Duo::new(Proto::V3, both, PeerPolicy::Manual, 0);
    d.lib = LibotrPeer::new("bob", "alice", PeerPolicy::Manual, true, 0, None).unwrap();
    let ssid = d.secure_by(true);
    // libotr asks again; the network rewrites its offer to v2 only.
    d.lib.query();
    let mut query = None;
    while let Some(o) = d.lib.poll_output() {
        if let Output::Net(m) = o {
            query = Some(m.replacen("?OTRv23?", "?OTRv2?", 1));
        }
    }
    let query = query.expect("libotr sent a query");
    assert!(query.starts_with("?OTRv2?"), "{query}");
    d.ours.receive(d.now, &query, &mut d.rng).unwrap();
    d.drive();
    let refused = d.our_events.iter().any(|e| matches!(e, Event::DowngradeRefused { .. }));
    assert!(refused, "we refuse v2 with a key that spoke v3: {:?}", d.our_events);
    assert!(!d.our_events.iter().any(|e| matches!(e, Event::Secure { version: 2, .. })));
    // Our v3 conversation is untouched and libotr's v3 instance still reads us.
    assert_eq!(d.ours.private_with().map(|(_, _, s)| s.to_string()), Some(ssid));
    d.our_send("still v3").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("still v3".to_string(), true)));
}
