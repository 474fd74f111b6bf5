//! Heap measurement of sessions, shared by `tests/memory.rs` and `benches/scale.rs` (each its
//! own process): a global allocator that counts live bytes (the system allocator plus one
//! counter), and the helpers that bring conversations to the states measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes of this process.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Any time: these measurements do not depend on the clock.
pub const NOW: Timestamp = Timestamp(0);

/// A session of `name` with its own copy of `key`, as an application holds it.
pub fn session(name: &str, policy: Policy, key: &DsaKeyPair, rng: &mut ChaCha20Rng) -> Session {
    Session::new(SessionConfig::new(name, policy, InstanceTag::random(rng)), key.clone())
}

/// Delivers everything queued between `a` and `b` until both are quiet; returns how many
/// texts were delivered. Panics if they never settle.
pub fn exchange(a: &mut Session, b: &mut Session, rng: &mut ChaCha20Rng) -> usize {
    let mut delivered = 0;
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
        for s in [&mut *a, &mut *b] {
            while let Some(e) = s.poll_event() {
                delivered += usize::from(matches!(e, Event::Message { .. }));
            }
        }
        if !moved {
            return delivered;
        }
    }
    panic!("the conversation did not settle in 32 rounds");
}

/// Live heap bytes per endpoint of `n` conversations (manual policy) brought to a state by
/// `prepare`: everything the sessions hold, the `Session` values themselves included.
pub fn per_endpoint(
    n: usize,
    keys: &(DsaKeyPair, DsaKeyPair),
    prepare: impl Fn(&mut Session, &mut Session, &mut ChaCha20Rng),
) -> usize {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let before = live();
    let mut pairs = Vec::with_capacity(n);
    for _ in 0..n {
        let mut a = session("alice", Policy::MANUAL, &keys.0, &mut rng);
        let mut b = session("bob", Policy::MANUAL, &keys.1, &mut rng);
        prepare(&mut a, &mut b, &mut rng);
        pairs.push((a, b));
    }
    live().saturating_sub(before) / (2 * n)
}
