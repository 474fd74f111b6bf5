//! Live interop: our `Session` against a real libotr 4.1.1 endpoint in the same process, in
//! both directions. Our side uses a seeded RNG and a fake clock; libotr uses its own.

use otr::{
    DsaKeyPair, Event, InstanceTag, Policy, ReceiveError, SendError, Sent, Session, SessionConfig, Timestamp,
};
use otr_libotr_harness::{LibotrPeer, Output, PeerEvent, PeerPolicy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn our_key() -> DsaKeyPair {
    static KEY: std::sync::OnceLock<DsaKeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(4242))).clone()
}

/// Our session ("alice") and a libotr endpoint ("bob"), with everything each side saw.
struct Duo {
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
    fn new(ours: Policy, lib: PeerPolicy, mms: usize) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut config = SessionConfig::new("alice", ours, InstanceTag::random(&mut rng));
        config.max_message_size = mms;
        let lib = LibotrPeer::new("bob", "alice", lib, false, mms, None).expect("libotr endpoint");
        Self {
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
        self.ours.send(self.now, text, &mut self.rng)
    }

    fn our_secure(&self) -> Option<(String, String)> {
        self.our_events.iter().rev().find_map(|e| match e {
            Event::Secure { fingerprint, ssid, .. } => Some((fingerprint.to_string(), ssid.to_string())),
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

#[test]
fn ake_initiated_by_us_and_by_libotr() {
    for us in [true, false] {
        let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
        d.secure_by(us);
        assert!(d.our_errors.is_empty(), "{:?}", d.our_errors);
        assert!(!d.lib_events.iter().any(|e| matches!(e, PeerEvent::Error(_))), "{:?}", d.lib_events);
    }
}

#[test]
fn two_hundred_messages_alternating_and_in_bursts() {
    for us_first in [true, false] {
        let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
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

#[test]
fn libotr_ends_we_finish_and_refuse_to_send() {
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
    let first = d.secure_by(true);
    d.lib.end();
    d.drive();
    assert!(d.lib_events.contains(&PeerEvent::Insecure));
    assert!(d.our_events.iter().any(|e| matches!(e, Event::RemoteEnded { .. })));
    let before = d.wire.len();
    assert_eq!(d.our_send("anyone?"), Err(SendError::Finished));
    d.drive();
    assert_eq!(d.wire.len(), before, "nothing left our side");
    d.ours.end(d.now, &mut d.rng);
    d.drive();
    let second = d.secure_by(false);
    assert_ne!(first, second, "a new AKE gives a new ssid");
    d.our_send("again").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("again".to_string(), true)));
}

#[test]
fn we_end_and_libotr_sees_it() {
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
    let first = d.secure_by(false);
    d.ours.end(d.now, &mut d.rng);
    d.drive();
    assert!(d.lib_events.contains(&PeerEvent::Finished), "{:?}", d.lib_events);
    assert!(d.lib_texts().is_empty(), "the disconnect carrier has no text");
    d.lib.end();
    let second = d.secure_by(true);
    assert_ne!(first, second);
}

#[test]
fn whitespace_tag_starts_the_ake_either_way() {
    // We tag, libotr starts the AKE.
    let mut d = Duo::new(Policy::OPPORTUNISTIC, PeerPolicy::Opportunistic, 0);
    assert_eq!(d.our_send("hi bob"), Ok(Sent::Plaintext));
    d.drive();
    assert_eq!(d.lib_texts(), vec![("hi bob".to_string(), false)]);
    d.assert_secure();
    // libotr tags, we start the AKE.
    let mut d = Duo::new(Policy::OPPORTUNISTIC, PeerPolicy::Opportunistic, 0);
    d.lib.send("hi alice");
    d.drive();
    assert_eq!(d.our_texts(), vec![("hi alice".to_string(), false)]);
    d.assert_secure();
    d.our_send("now private").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().last(), Some(&("now private".to_string(), true)));
}

#[test]
fn require_encryption_never_lets_plaintext_out() {
    // Our side requires encryption.
    let mut d = Duo::new(Policy::ALWAYS, PeerPolicy::Opportunistic, 0);
    assert_eq!(d.our_send("very secret"), Ok(Sent::Held));
    d.drive();
    assert!(d.wire.iter().all(|(_, m)| !m.contains("very secret")));
    d.assert_secure();
    assert_eq!(d.lib_texts(), vec![("very secret".to_string(), true)]);
    // libotr requires encryption: its send is refused, it queries, then sends it encrypted.
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Always, 0);
    d.lib.send("libotr secret");
    d.drive();
    assert!(d.wire.iter().all(|(_, m)| !m.contains("libotr secret")));
    d.assert_secure();
    assert_eq!(d.our_texts(), vec![("libotr secret".to_string(), true)]);
}

#[test]
fn extra_symmetric_keys_agree() {
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    let key = d.ours.extra_symmetric_key(d.now, 7, b"file.txt", &mut d.rng).unwrap();
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

#[test]
fn fragmented_at_300_bytes_both_ways() {
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 300);
    d.secure_by(true);
    assert!(d.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits");
    let mut expect_lib = vec![];
    let mut expect_us = vec![];
    for i in 0..10 {
        let size = 5_000 + i * 1_500;
        let text: String = sample(i).chars().cycle().take(size / 3).collect();
        d.our_send(&text).unwrap();
        expect_lib.push((text.clone(), true));
        d.lib.send(&text);
        expect_us.push((text, true));
        d.drive();
    }
    assert!(d.wire.iter().all(|(_, m)| m.len() <= 300), "every transport message fits");
    assert_eq!(d.lib_texts(), expect_lib);
    assert_eq!(d.our_texts(), expect_us);
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 300);
    d.secure_by(false);
    d.our_send("after libotr-initiated fragmented AKE").unwrap();
    d.drive();
    assert_eq!(d.lib_texts().len(), 1);
}

#[test]
fn unreadable_garbage_does_not_break_the_session() {
    let mut d = Duo::new(Policy::MANUAL, PeerPolicy::Manual, 0);
    d.secure_by(true);
    for junk in ["?OTR:AAMDAAAAAA==.", "?OTR|00000100|00000100,00001,00002,abc,", "?OTR:!!!."] {
        assert!(d.ours.receive(d.now, junk, &mut d.rng).is_err());
    }
    d.lib.send("still fine");
    d.drive();
    assert_eq!(d.our_texts(), vec![("still fine".to_string(), true)]);
}
