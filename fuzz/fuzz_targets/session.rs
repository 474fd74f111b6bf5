//! Live sessions, after a real AKE (one in OTR v3, one in v2), each fed every input as
//! arbitrary transport messages: no panic, and nothing the fuzzer makes up is ever delivered
//! as an encrypted message.
//!
//! The AKE is expensive, so one established session serves many inputs and is rebuilt every
//! few hundred inputs (or when an input ended the private conversation).
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use otr_core::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

struct Live {
    b: Session,
    rng: ChaCha20Rng,
    uses: u32,
}

/// A private session `b` in version 3, or in version 2 when `v2`.
fn establish(v2: bool) -> Live {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (ka, kb) = (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng));
    let now = Timestamp(0);
    let policy = if v2 {
        Policy::from_bits((Policy::OPPORTUNISTIC | Policy::ALLOW_V2).bits() & !Policy::ALLOW_V3.bits())
    } else {
        Policy::OPPORTUNISTIC
    };
    let cfg = |name: &str, tag: u32| SessionConfig::new(name, policy, InstanceTag::new(tag).unwrap());
    let mut a = Session::new(cfg("a", 0x1111), ka);
    let mut b = Session::new(cfg("b", 0x2222), kb);
    a.start(now);
    for _ in 0..10 {
        while let Some(t) = a.poll_transmit() {
            let _ = b.receive(now, &t.message, &mut rng);
        }
        while let Some(t) = b.poll_transmit() {
            let _ = a.receive(now, &t.message, &mut rng);
        }
    }
    while b.poll_event().is_some() {}
    assert!(b.private_with().is_some(), "the AKE completes");
    Live { b, rng, uses: 0 }
}

static LIVE: Mutex<[Option<Live>; 2]> = Mutex::new([None, None]);

fuzz_target!(|data: &[u8]| {
    let mut guard = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (slot, v2) in guard.iter_mut().zip([false, true]) {
        if slot.as_ref().is_none_or(|l| l.uses > 500 || l.b.private_with().is_none()) {
            *slot = Some(establish(v2));
        }
        feed(slot.as_mut().unwrap(), data);
    }
});

fn feed(live: &mut Live, data: &[u8]) {
    live.uses += 1;
    let now = Timestamp(u64::from(live.uses));
    for chunk in data.split(|&c| c == b'\n') {
        let msg = String::from_utf8_lossy(chunk);
        let _ = live.b.receive(now, &msg, &mut live.rng);
        while let Some(e) = live.b.poll_event() {
            assert!(!matches!(e, Event::Message { encrypted: true, .. }), "forged private message: {e:?}");
        }
        while live.b.poll_transmit().is_some() {}
    }
    live.b.handle_timeout(now);
}
