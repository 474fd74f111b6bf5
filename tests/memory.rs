//! Memory bounds (SECURITY.md "Memory bounds"), measured with a counting global allocator:
//! what an idle, an established and an active session hold, and that a held-message flood is
//! refused at its cap. The fragment flood has its own test
//! (`tests/features.rs::hostile_fragments_are_dropped_with_bounded_memory`); the figures for
//! 10,000 sessions come from `benches/scale.rs`.

use otr::{DsaKeyPair, InstanceTag, Policy, SendError, Sent, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod counting_alloc;

const NOW: Timestamp = Timestamp(0);

fn session(name: &str, policy: Policy, key: &DsaKeyPair, rng: &mut ChaCha20Rng) -> Session {
    Session::new(SessionConfig::new(name, policy, InstanceTag::random(rng)), key.clone())
}

fn exchange(a: &mut Session, b: &mut Session, rng: &mut ChaCha20Rng) {
    for _ in 0..32 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            let _ = b.receive(NOW, &t.message, rng);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            let _ = a.receive(NOW, &t.message, rng);
        }
        while a.poll_event().is_some() || b.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
    panic!("the conversation did not settle in 32 rounds");
}

/// Live bytes per endpoint of 20 conversations brought to a state by `prepare`.
fn per_endpoint(
    keys: &(DsaKeyPair, DsaKeyPair),
    prepare: impl Fn(&mut Session, &mut Session, &mut ChaCha20Rng),
) -> usize {
    const N: usize = 20;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut pairs = Vec::with_capacity(N);
    let before = counting_alloc::live();
    for _ in 0..N {
        let mut a = session("alice", Policy::MANUAL, &keys.0, &mut rng);
        let mut b = session("bob", Policy::MANUAL, &keys.1, &mut rng);
        prepare(&mut a, &mut b, &mut rng);
        pairs.push((a, b));
    }
    counting_alloc::live().saturating_sub(before) / (2 * N)
}

/// A quarter of what libotr 4.1.1 holds per established context (about 48 KB, measured by
/// `examples/bench-vs-libotr.rs`): the target.
const QUARTER_OF_LIBOTR: usize = 12 * 1024;

#[test]
fn sessions_hold_a_few_kilobytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let keys = (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng));
    let idle = per_endpoint(&keys, |_, _, _| {});
    let established = per_endpoint(&keys, |a, b, rng| {
        a.start(NOW);
        exchange(a, b, rng);
        assert!(a.private_with().is_some() && b.private_with().is_some());
    });
    let active = per_endpoint(&keys, |a, b, rng| {
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
    let before = counting_alloc::live();
    let mut held = 0;
    for i in 0..1000 {
        match s.send(NOW, &text) {
            Ok(Sent::Held) => held += 1,
            Err(SendError::QueueFull) => assert!(i >= 100, "refused after {i}"),
            other => panic!("unexpected {other:?}"),
        }
        while s.poll_transmit().is_some() {}
    }
    let grown = counting_alloc::live().saturating_sub(before);
    assert_eq!(held, 100);
    // 100 texts of 1000 bytes, plus the queue's own slots and the key exchange's state.
    assert!(grown < 100 * 1000 + 32 * 1024, "held-message flood grew the heap by {grown} B");
}
