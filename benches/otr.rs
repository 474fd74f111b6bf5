//! Criterion benchmarks of the engine's hot paths, both endpoints in one process over an
//! in-memory transport: the AKE, data messages (one-way burst, alternating, 64 KiB), SMP,
//! fragment reassembly, parsing, and setting up a session.
//!
//! ```text
//! cargo bench --bench otr                 # everything
//! cargo bench --bench otr -- data/        # one group
//! ```
//! The side-by-side figures against libotr come from `examples/bench-vs-libotr.rs`; memory and
//! scale from `benches/scale.rs`. See benches/README.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use otr::data::DataMessage;
use otr::fragment::{self, Fragment, Reassembler};
use otr::message::{self, Incoming};
use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Two sessions wired to each other, driven until quiet after every step.
struct Conversation {
    alice: Session,
    bob: Session,
    rng: ChaCha20Rng,
}

impl Conversation {
    fn new(keys: &(DsaKeyPair, DsaKeyPair)) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut session = |name: &str, key: &DsaKeyPair| {
            let config = SessionConfig::new(name, Policy::MANUAL, InstanceTag::random(&mut rng));
            Session::new(config, key.clone())
        };
        let (alice, bob) = (session("alice", &keys.0), session("bob", &keys.1));
        Self { alice, bob, rng }
    }

    fn established(keys: &(DsaKeyPair, DsaKeyPair)) -> Self {
        let mut c = Self::new(keys);
        c.alice.start(Timestamp(0));
        c.deliver();
        assert!(c.alice.private_with().is_some() && c.bob.private_with().is_some(), "AKE failed");
        c
    }

    /// Moves every queued transport message to the other side until nothing moves.
    fn deliver(&mut self) {
        let now = Timestamp(0);
        loop {
            let mut moved = false;
            while let Some(t) = self.alice.poll_transmit() {
                moved = true;
                let _ = self.bob.receive(now, &t.message, &mut self.rng);
            }
            while let Some(t) = self.bob.poll_transmit() {
                moved = true;
                let _ = self.alice.receive(now, &t.message, &mut self.rng);
            }
            for s in [&mut self.alice, &mut self.bob] {
                while let Some(e) = s.poll_event() {
                    if let Event::Message { text, .. } = e {
                        black_box(text);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, from_alice: bool, text: &str) {
        let s = if from_alice { &mut self.alice } else { &mut self.bob };
        s.send(Timestamp(0), text).expect("the conversation is private");
    }
}

fn keys() -> (DsaKeyPair, DsaKeyPair) {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng))
}

fn ake(c: &mut Criterion, keys: &(DsaKeyPair, DsaKeyPair)) {
    let mut g = c.benchmark_group("ake");
    g.sample_size(20);
    g.bench_function("full exchange, both sides", |b| {
        b.iter_batched(
            || Conversation::new(keys),
            |mut c| {
                c.alice.start(Timestamp(0));
                c.deliver();
                c
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn data(c: &mut Criterion, keys: &(DsaKeyPair, DsaKeyPair)) {
    let hundred = "x".repeat(100);
    let big = "y".repeat(64 * 1024);
    let mut g = c.benchmark_group("data");
    let mut conv = Conversation::established(keys);
    g.throughput(Throughput::Elements(100));
    g.bench_function("one-way burst, 100 x 100 B", |b| {
        b.iter(|| {
            for _ in 0..100 {
                conv.send(true, &hundred);
            }
            conv.deliver();
        })
    });
    let mut turn = false;
    g.throughput(Throughput::Elements(1));
    g.bench_function("alternating 100 B (key rotation)", |b| {
        b.iter(|| {
            turn = !turn;
            conv.send(turn, &hundred);
            conv.deliver();
        })
    });
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("64 KiB", |b| {
        b.iter(|| {
            conv.send(true, &big);
            conv.deliver();
        })
    });
    g.finish();
}

fn smp(c: &mut Criterion, keys: &(DsaKeyPair, DsaKeyPair)) {
    let mut g = c.benchmark_group("smp");
    g.sample_size(10);
    let mut conv = Conversation::established(keys);
    g.bench_function("run to success", |b| {
        b.iter(|| {
            conv.alice.smp_start(Timestamp(0), None, b"secret", &mut conv.rng).expect("private");
            conv.deliver();
            conv.bob.smp_respond(Timestamp(0), b"secret", &mut conv.rng).expect("asked");
            conv.deliver();
        })
    });
    g.finish();
}

fn fragments(c: &mut Criterion) {
    let encoded = message::encode_envelope(&[0x5a; 15_000]);
    let pieces = fragment::split(&encoded, 300, Some((0x100, 0x101))).expect("20 KB needs fragments");
    let mut g = c.benchmark_group("fragments");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function(format!("reassemble 20 KB from {} pieces", pieces.len()), |b| {
        b.iter(|| {
            let mut r = Reassembler::default();
            let mut whole = None;
            for p in &pieces {
                let f = Fragment::parse(p).expect("our own fragment");
                whole = r.add(&f, Timestamp(0)).expect("in order");
            }
            assert_eq!(whole.as_deref(), Some(encoded.as_str()));
        })
    });
    g.bench_function("split 20 KB at 300 bytes", |b| {
        b.iter(|| fragment::split(black_box(&encoded), 300, Some((0x100, 0x101))))
    });
    g.finish();
}

fn parsing(c: &mut Criterion, keys: &(DsaKeyPair, DsaKeyPair)) {
    let mut conv = Conversation::established(keys);
    conv.send(true, &"z".repeat(100));
    let wire = conv.alice.poll_transmit().expect("a data message").message;
    let mut g = c.benchmark_group("parsing");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("classify + base64 (100 B data message)", |b| {
        b.iter(|| message::classify(black_box(&wire)).expect("valid"))
    });
    let Ok(Incoming::Encoded(bytes)) = message::classify(&wire) else { panic!("an encoded message") };
    g.bench_function("data message fields", |b| {
        b.iter(|| DataMessage::read(black_box(&bytes)).expect("valid"))
    });
    g.finish();
}

fn session(c: &mut Criterion, keys: &(DsaKeyPair, DsaKeyPair)) {
    let mut g = c.benchmark_group("session");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    g.bench_function("new (idle, no exchange)", |b| {
        b.iter(|| {
            let config = SessionConfig::new("alice", Policy::MANUAL, InstanceTag::random(&mut rng));
            Session::new(config, keys.0.clone())
        })
    });
    g.finish();
}

fn all(c: &mut Criterion) {
    let keys = keys();
    ake(c, &keys);
    data(c, &keys);
    smp(c, &keys);
    fragments(c);
    parsing(c, &keys);
    session(c, &keys);
}

criterion_group!(benches, all);
criterion_main!(benches);
