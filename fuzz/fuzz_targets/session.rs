//! Live sessions, after a real AKE (one in OTR v3, one in v2), each fed every input as
//! arbitrary transport messages: no panic, and nothing the fuzzer makes up is ever delivered
//! as an encrypted message.
//!
//! The sessions come from replaying an AKE recorded once per process with the vectors' fixed
//! keys (see `otr_fuzz`): no key generation. Even so a replay costs b's half of an AKE (about
//! 0.1 s under AddressSanitizer), so one pair of sessions serves up to [`USES`] inputs and is
//! replayed after that, or as soon as an input ended its private conversation.
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use otr_core::{Event, Session, Timestamp};
use otr_fuzz::Established;
use rand_chacha::ChaCha20Rng;

/// Inputs one replayed session serves.
const USES: u64 = 1000;

struct Live {
    b: Session,
    rng: ChaCha20Rng,
    uses: u64,
}

fuzz_target!(|data: &[u8]| {
    static RECORDED: OnceLock<[Established; 2]> = OnceLock::new();
    static LIVE: Mutex<[Option<Live>; 2]> = Mutex::new([None, None]);
    let recorded = RECORDED.get_or_init(|| [false, true].map(Established::record));
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (slot, recorded) in live.iter_mut().zip(recorded) {
        let live = match slot {
            Some(l) if l.uses < USES && l.b.private_with().is_some() => l,
            _ => {
                let (b, rng) = recorded.replay();
                slot.insert(Live { b, rng, uses: 0 })
            }
        };
        feed(live, data);
    }
});

fn feed(live: &mut Live, data: &[u8]) {
    live.uses += 1;
    let now = Timestamp(live.uses);
    for chunk in data.split(|&c| c == b'\n') {
        let _ = live.b.receive(now, &String::from_utf8_lossy(chunk), &mut live.rng);
        while let Some(e) = live.b.poll_event() {
            assert!(!matches!(e, Event::Message { encrypted: true, .. }), "forged private message: {e:?}");
        }
        while live.b.poll_transmit().is_some() {}
    }
    live.b.handle_timeout(now);
}
