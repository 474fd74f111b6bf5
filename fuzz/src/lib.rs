//! What the fuzz targets share: fixed identities and established sessions that cost no key
//! generation.
//!
//! Generating a DSA-1024 key takes seconds under AddressSanitizer (prime search), longer than
//! libFuzzer's 10 s slow-unit report when a target needs several. So the targets use the test
//! identities of `vectors/` (public test keys, embedded at build time), and a live session is
//! rebuilt by replaying an AKE recorded once per process ([`Established`]): that costs one
//! side's half of an AKE, and every replay ends in the same state.

use std::sync::OnceLock;

use otr_core::{DsaComponents, DsaKeyPair, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::Value;

/// The vector whose two identities (Alice, Bob) the targets use.
const VECTOR: &str = include_str!("../../vectors/ake-alice-starts.json");

/// The clock of the recorded AKE and of its replays.
const AKE_TIME: Timestamp = Timestamp(0);

/// Seed of the replayed side's RNG: replaying draws exactly what recording drew.
const REPLAYED_SEED: u64 = 2;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("the vector's keys are hex"))
        .collect()
}

/// The vectors' two long-term keys, Alice's then Bob's, parsed once per process.
pub fn identities() -> &'static [DsaKeyPair; 2] {
    static KEYS: OnceLock<[DsaKeyPair; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let v: Value = serde_json::from_str(VECTOR).expect("the vector is JSON");
        ["alice", "bob"].map(|name| {
            let d = &v["parties"][name]["dsa"];
            let part = |k: &str| unhex(d[k].as_str().expect("the vector has every key part"));
            let c = DsaComponents { p: part("p"), q: part("q"), g: part("g"), y: part("y"), x: part("x").into() };
            DsaKeyPair::from_components(&c).expect("the vector's keys are valid")
        })
    })
}

/// A private conversation between `a` (Alice's key) and `b` (Bob's key), in OTR version 3
/// or 2, recorded once: what `a` sent to `b`. [`Established::replay`] rebuilds `b` from it.
pub struct Established {
    config: SessionConfig,
    to_b: Vec<String>,
}

impl Established {
    /// Runs the AKE between two fresh sessions and records `a`'s messages.
    ///
    /// # Panics
    /// If the AKE does not complete (a bug in the engine, not in the input).
    pub fn record(v2: bool) -> Self {
        let policy = if v2 {
            Policy::from_bits((Policy::OPPORTUNISTIC | Policy::ALLOW_V2).bits() & !Policy::ALLOW_V3.bits())
        } else {
            Policy::OPPORTUNISTIC
        };
        let tag = |t| InstanceTag::new(t).expect("a valid instance tag");
        let config = SessionConfig::new("b", policy, tag(0x2222));
        let mut a = Session::new(SessionConfig::new("a", policy, tag(0x1111)), identities()[0].clone());
        let mut rng_a = ChaCha20Rng::seed_from_u64(1);
        let (mut b, mut rng_b) = fresh(&config);
        let mut to_b = Vec::new();
        a.start(AKE_TIME);
        for _ in 0..10 {
            while let Some(t) = a.poll_transmit() {
                let _ = b.receive(AKE_TIME, &t.message, &mut rng_b);
                to_b.push(t.message);
            }
            while let Some(t) = b.poll_transmit() {
                let _ = a.receive(AKE_TIME, &t.message, &mut rng_a);
            }
        }
        assert!(b.private_with().is_some(), "the AKE completes");
        Self { config, to_b }
    }

    /// A new `b`, private with `a` as after [`record`](Self::record), and its RNG: the same
    /// identity, configuration and RNG seed, fed `a`'s recorded messages. Its transmits and
    /// events so far are drained.
    ///
    /// # Panics
    /// If the replay does not end private (the engine is not deterministic).
    pub fn replay(&self) -> (Session, ChaCha20Rng) {
        let (mut b, mut rng) = fresh(&self.config);
        for m in &self.to_b {
            let _ = b.receive(AKE_TIME, m, &mut rng);
        }
        while b.poll_transmit().is_some() {}
        while b.poll_event().is_some() {}
        assert!(b.private_with().is_some(), "the replayed AKE completes");
        (b, rng)
    }
}

/// `b` before the AKE: Bob's key, `config`, the RNG at its seed.
fn fresh(config: &SessionConfig) -> (Session, ChaCha20Rng) {
    (Session::new(config.clone(), identities()[1].clone()), ChaCha20Rng::seed_from_u64(REPLAYED_SEED))
}
