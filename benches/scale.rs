//! Scale and memory: one process holding up to 10,000 established sessions.
//!
//! Reports, from a counting global allocator (live heap bytes, so it sees everything a
//! `Session` owns):
//! - bytes per session: idle (created, no exchange), established and quiet, and active (both
//!   directions sending, so both key pairs and their cached cipher states exist);
//! - the total for 100 / 1,000 / 10,000 established sessions;
//! - the time to route a data message to its session (map lookup by peer, then `receive`) at
//!   each of those counts (each session has received one message before, so the key rotation
//!   a first message causes is not in the figure), both to any session and among 100 "hot"
//!   sessions: the second must not grow with the count; the first also pays the cache misses
//!   of a working set that outgrows the CPU caches;
//! - the worst case under a fragment flood and a held-message flood, against the caps in
//!   otr-core (`fragment::MAX_PARTIALS` x `fragment::MAX_MESSAGE_BYTES`, 100 held texts).
//!
//! ```text
//! cargo bench --bench scale            # up to 10,000 sessions (about a minute here)
//! cargo bench --bench scale -- --quick # up to 1,000
//! ```
//! Bounded in count and time: every loop runs a fixed number of steps.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

use otr::fragment::{MAX_MESSAGE_BYTES, MAX_PARTIALS};
use otr::{DsaKeyPair, InstanceTag, Policy, Session, SessionConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

#[path = "../tests/heap/mod.rs"]
mod heap;
use heap::{NOW, exchange, live, per_endpoint, session};

/// One process's sessions, each with the peer it talks to (the peers stand for the network).
struct Hub {
    ours: HashMap<String, Session>,
    peers: Vec<(String, Session)>,
    keys: (DsaKeyPair, DsaKeyPair),
    rng: ChaCha20Rng,
}

impl Hub {
    fn grow_to(&mut self, n: usize) {
        while self.peers.len() < n {
            let name = format!("peer{:05}", self.peers.len());
            let mut mine = session("me", Policy::MANUAL, &self.keys.0, &mut self.rng);
            let mut theirs = session(&name, Policy::MANUAL, &self.keys.1, &mut self.rng);
            mine.start(NOW);
            exchange(&mut mine, &mut theirs, &mut self.rng);
            assert!(mine.private_with().is_some(), "AKE with {name}");
            // One message from the peer: the key rotation it causes is done before routing
            // is timed (it costs a DH key generation, whatever the session count).
            theirs.send(NOW, "first").expect("private");
            assert_eq!(exchange(&mut mine, &mut theirs, &mut self.rng), 1, "first message from {name}");
            self.ours.insert(name.clone(), mine);
            self.peers.push((name, theirs));
        }
    }

    /// Average time to route one message (lookup by peer name, then `receive`) and of the
    /// lookup alone, over `count` messages to sessions picked at random: among all of them,
    /// or among `hot` of them spread over the whole map (a working set that stays in the CPU
    /// caches whatever the session count, so the figure shows the algorithm alone).
    fn route_time(&mut self, count: usize, hot: Option<usize>) -> (f64, f64) {
        let mut inbox = Vec::with_capacity(count);
        let n = self.peers.len();
        for _ in 0..count {
            let i = match hot {
                Some(h) => (self.rng.next_u64() % h as u64) as usize * (n / h),
                None => (self.rng.next_u64() % n as u64) as usize,
            };
            let (name, peer) = &mut self.peers[i];
            peer.send(NOW, "hello, routed").expect("private");
            while let Some(t) = peer.poll_transmit() {
                inbox.push((name.clone(), t.message));
            }
        }
        let start = Instant::now();
        for (from, _) in &inbox {
            black_box(self.ours.get_mut(from).expect("known peer"));
        }
        let lookup = start.elapsed().as_secs_f64() / inbox.len() as f64;
        let start = Instant::now();
        for (from, msg) in &inbox {
            let s = self.ours.get_mut(from).expect("known peer");
            s.receive(NOW, msg, &mut self.rng).expect("readable");
            while let Some(e) = s.poll_event() {
                black_box(e);
            }
            while let Some(t) = s.poll_transmit() {
                black_box(t);
            }
        }
        (start.elapsed().as_secs_f64() / inbox.len() as f64, lookup)
    }
}

fn flood(keys: &(DsaKeyPair, DsaKeyPair)) {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut victim = session("victim", Policy::MANUAL, &keys.0, &mut rng);
    let tag = victim.instance_tag().get();
    let before = live();
    // MAX_PARTIALS + 4 senders each start a message of the largest size, then keep adding
    // pieces that never complete it.
    let piece = "A".repeat(60_000);
    let n = u16::try_from(MAX_MESSAGE_BYTES / piece.len()).expect("small");
    let mut peak = 0;
    for sender in 0..(MAX_PARTIALS as u32 + 4) {
        for k in 1..n {
            let f = format!("?OTR|{:08x}|{tag:08x},{k:05},{n:05},{piece},", 0x100 + sender);
            let _ = victim.receive(NOW, &f, &mut rng);
            peak = peak.max(live() - before);
        }
    }
    let cap = MAX_PARTIALS * MAX_MESSAGE_BYTES;
    println!(
        "fragment flood: {} senders x {} pieces of {} B: buffered {} B, heap peak {} B, cap {} B",
        MAX_PARTIALS + 4,
        n - 1,
        piece.len(),
        victim.buffered_fragment_bytes(),
        peak,
        cap
    );
    drop(victim);

    // Held-message flood: the user types while no key exchange can finish (the peer never
    // answers); each text is held until the queue is full, then refused.
    let config = SessionConfig::new("typist", Policy::ALWAYS, InstanceTag::random(&mut rng));
    let mut typist = Session::new(config, keys.0.clone());
    let before = live();
    let text = "B".repeat(1000);
    let (mut held, mut refused) = (0, 0);
    for _ in 0..1000 {
        match typist.send(NOW, &text) {
            Ok(_) => held += 1,
            Err(_) => refused += 1,
        }
        while typist.poll_transmit().is_some() {}
    }
    println!(
        "held-message flood: 1000 sends of {} B while no AKE can finish: {held} held, {refused} refused, heap {} B",
        text.len(),
        live() - before
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let keys = (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng));
    let n = if quick { 50 } else { 500 };
    let idle = per_endpoint(n, &keys, |_, _, _| {});
    let established = per_endpoint(n, &keys, |a, b, rng| {
        a.start(NOW);
        exchange(a, b, rng);
    });
    let active = per_endpoint(n, &keys, |a, b, rng| {
        a.start(NOW);
        exchange(a, b, rng);
        for i in 0..4 {
            a.send(NOW, "hi").expect("private");
            b.send(NOW, "hi").expect("private");
            assert_eq!(exchange(a, b, rng), 2, "round {i}");
        }
    });
    println!("bytes per session: idle {idle}, established {established}, active {active}");

    let mut hub = Hub { ours: HashMap::new(), peers: Vec::new(), keys: keys.clone(), rng };
    let counts: &[usize] = if quick { &[100, 1_000] } else { &[100, 1_000, 10_000] };
    for &count in counts {
        let t = Instant::now();
        hub.grow_to(count);
        let grow = t.elapsed().as_secs_f64();
        // The heap holds our sessions and their peers (the same kind of session, in the same
        // state), plus the two maps: per endpoint is the total over 2 x count.
        let total = live();
        // The best of three rounds: on a shared machine the others' bursts only add time.
        let best = |hub: &mut Hub, hot| {
            let rounds: Vec<(f64, f64)> = (0..3).map(|_| hub.route_time(2_000, hot)).collect();
            let route = rounds.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
            (route, rounds.iter().map(|r| r.1).fold(f64::INFINITY, f64::min))
        };
        let (route, lookup) = best(&mut hub, None);
        let (hot_route, _) = best(&mut hub, Some(100));
        println!(
            "{count} sessions: heap {:.1} MiB for ours and their peers ({:.0} B per endpoint), route {:.2} us per message, of which lookup {:.3} us; among 100 hot sessions {:.2} us (grown in {grow:.1} s)",
            total as f64 / (1 << 20) as f64,
            total as f64 / (2 * count) as f64,
            route * 1e6,
            lookup * 1e6,
            hot_route * 1e6
        );
        println!("route-us {count} {:.3} hot-100 {:.3}", route * 1e6, hot_route * 1e6);
    }
    drop(hub);
    flood(&keys);
}
