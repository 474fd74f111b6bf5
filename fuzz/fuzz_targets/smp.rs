//! The SMP state machine fed arbitrary TLVs in every state: no panic, never a success.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otr_core::crypto::dsa::Fingerprint;
use otr_core::smp::{Smp, SmpEvent};
use otr_core::tlv::Tlv;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (fa, fb) = (Fingerprint([1; 20]), Fingerprint([2; 20]));
    let mut smp = Smp::new();
    // The first byte picks a starting state: idle, or after our SMP1.
    if data.first().is_some_and(|b| b & 1 == 1) {
        let _ = smp.start(&fa, &fb, &[0; 8], b"secret", None, &mut rng);
    }
    let mut rest = data.get(1..).unwrap_or(&[]);
    while rest.len() >= 3 {
        let kind = 2 + u16::from(rest[0] % 6);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let tlv = Tlv::new(kind, rest[3..3 + len].to_vec());
        rest = &rest[3 + len..];
        let (_, event) = smp.handle(&tlv, &mut rng);
        assert!(!matches!(event, Some(SmpEvent::Success)), "success from made-up messages");
    }
});
