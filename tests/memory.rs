//! Memory bounds (SECURITY.md "Memory bounds"), measured with a counting global allocator:
//! what an idle, an established and an active session hold, and that a held-message flood is
//! refused at its cap. The fragment flood has its own test
//! (`tests/features.rs::hostile_fragments_are_dropped_with_bounded_memory`); the figures for
//! 10,000 sessions come from `benches/scale.rs`.

use otr::{DsaKeyPair, Policy, SendError, Sent};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod heap;

use heap::{NOW, exchange, per_endpoint, session};

/// A quarter of what libotr 4.1.1 holds per established context (about 48 KB, measured by
/// `examples/bench-vs-libotr.rs`): the target.
const QUARTER_OF_LIBOTR: usize = 12 * 1024;

#[test]
fn sessions_hold_a_few_kilobytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let keys = (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng));
    let idle = per_endpoint(20, &keys, |_, _, _| {});
    let established = per_endpoint(20, &keys, |a, b, rng| {
        a.start(NOW);
        exchange(a, b, rng);
        assert!(a.private_with().is_some() && b.private_with().is_some());
    });
    let active = per_endpoint(20, &keys, |a, b, rng| {
        a.start(NOW);
        exchange(a, b, rng);
        for _ in 0..4 {
            a.send(NOW, "hello").expect("private");
            b.send(NOW, "hello").expect("private");
            exchange(a, b, rng);
        }
    });
    println!("bytes per session: idle {idle}, established {established}, active {active}");
    assert!(idle < 2 * 1024, "idle {idle}");
    assert!(idle < established && established <= active, "{idle} {established} {active}");
    assert!(active <= QUARTER_OF_LIBOTR, "active {active}");
}

#[test]
fn held_messages_are_capped() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let key = DsaKeyPair::generate(&mut rng);
    let mut s = session("typist", Policy::ALWAYS, &key, &mut rng);
    let text = "x".repeat(1000);
    let before = heap::live();
    let mut held = 0;
    for i in 0..1000 {
        match s.send(NOW, &text) {
            Ok(Sent::Held) => held += 1,
            Err(SendError::QueueFull) => assert!(i >= 100, "refused after {i}"),
            other => panic!("unexpected {other:?}"),
        }
        while s.poll_transmit().is_some() {}
    }
    let grown = heap::live().saturating_sub(before);
    assert_eq!(held, 100);
    // 100 texts of 1000 bytes, plus the queue's own slots and the key exchange's state.
    assert!(grown < 100 * 1000 + 32 * 1024, "held-message flood grew the heap by {grown} B");
}
