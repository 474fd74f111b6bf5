//! The SMP state machine fed arbitrary TLVs in every state: no panic, never a success.
//!
//! The two starting states (idle, and after our SMP1) are built once per process and cloned
//! for every input (starting SMP costs four exponentiations in the 1536-bit group).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otr_core::crypto::dsa::Fingerprint;
use otr_core::smp::{Smp, SmpEvent};
use otr_core::tlv::Tlv;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// An SMP state and the RNG to continue it with.
type Start = (Smp, ChaCha20Rng);

fn starts() -> &'static [Start; 2] {
    static STARTS: OnceLock<[Start; 2]> = OnceLock::new();
    STARTS.get_or_init(|| {
        let rng = ChaCha20Rng::seed_from_u64(3);
        let idle = (Smp::new(), rng.clone());
        let (mut started, mut rng) = (Smp::new(), rng);
        let _ = started.start(&Fingerprint([1; 20]), &Fingerprint([2; 20]), &[0; 8], b"secret", None, &mut rng);
        [idle, (started, rng)]
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a starting state: idle, or after our SMP1.
    let (mut smp, mut rng) = starts()[usize::from(data.first().is_some_and(|b| b & 1 == 1))].clone();
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
