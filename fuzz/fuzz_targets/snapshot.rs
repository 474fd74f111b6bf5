//! The session snapshot decoder and restore: no input may panic, and a snapshot that decodes
//! must encode back to the same bytes.
//!
//! Two inputs per run: the bytes as a snapshot, and the bytes as edits (offset, value) of a
//! real snapshot of an established session (made once per process), restored with its own
//! identity: random bytes rarely get past the magic and the fingerprint check, the edits reach
//! the key window, counters and held texts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otr_core::session::snapshot::fuzz_reencode;
use otr_core::{Session, Snapshot, Timestamp};
use otr_fuzz::{Established, identities};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Bob's snapshot after the recorded AKE and one message, with a held text.
fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let (mut b, _) = Established::record(false).replay();
        let _ = b.send(Timestamp(0), "hello");
        b.snapshot().as_bytes().to_vec()
    })
}

fn check(bytes: &[u8]) {
    if let Ok(again) = fuzz_reencode(bytes) {
        assert_eq!(again.as_slice(), bytes, "a decoded snapshot encodes back to its bytes");
    }
    let _ = Snapshot::generation_of(bytes);
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    if let Ok(mut s) = Session::restore(identities()[1].clone(), bytes, 0, Timestamp(0), &mut rng) {
        let again = s.snapshot();
        Session::restore(identities()[1].clone(), again.as_bytes(), again.generation(), Timestamp(0), &mut rng)
            .expect("a restored session's own snapshot restores");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let mut edited = base().to_vec();
    for e in data.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([e[0], e[1]]));
        match edited.len() {
            0 => break,
            n if at < n => edited[at] = e[2],
            n => edited.truncate(at % n),
        }
    }
    check(&edited);
});
