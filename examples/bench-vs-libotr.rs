//! Our engine and libotr 4.1.1 side by side, in one process and one run: both endpoints of
//! each conversation in memory, the same operations, sizes and counts. Prints a table, then
//! machine-readable lines `ratio <operation> <ours/libotr>` (higher = we are faster) and
//! `bytes-per-session <ours> <libotr>`.
//!
//! Times are the CPU time of the measuring thread (both implementations run on it), not wall
//! time: on a shared machine wall time mostly measures the other processes.
//!
//! ```text
//! cargo run --release --example bench-vs-libotr               # the table
//! cargo run --release --example bench-vs-libotr -- --callgrind  # + instruction counts (valgrind)
//! ```
//! Needs libotr5-dev at build time (see tests/libotr).

use std::hint::black_box;
use std::process::Command;

use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
use otr_libotr_harness::{LibotrPeer, Output, PeerEvent, PeerPolicy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// One implementation's conversation: two endpoints wired to each other in memory.
trait Pair {
    fn ake(&mut self);
    fn smp(&mut self);
    fn send(&mut self, from_a: bool, text: &str);
}

struct Ours {
    a: Session,
    b: Session,
    rng: ChaCha20Rng,
    now: Timestamp,
    delivered: usize,
}

impl Ours {
    fn new(keys: &(DsaKeyPair, DsaKeyPair)) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let cfg =
            |n: &str, rng: &mut ChaCha20Rng| SessionConfig::new(n, Policy::MANUAL, InstanceTag::random(rng));
        let a = Session::new(cfg("alice", &mut rng), keys.0.clone());
        let b = Session::new(cfg("bob", &mut rng), keys.1.clone());
        Self { a, b, rng, now: Timestamp(0), delivered: 0 }
    }

    fn route(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                let _ = self.b.receive(self.now, &t.message, &mut self.rng);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                let _ = self.a.receive(self.now, &t.message, &mut self.rng);
            }
            for s in [&mut self.a, &mut self.b] {
                while let Some(e) = s.poll_event() {
                    if let Event::Message { text, .. } = e {
                        black_box(text);
                        self.delivered += 1;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

impl Pair for Ours {
    fn ake(&mut self) {
        self.a.start(self.now);
        self.route();
    }
    fn smp(&mut self) {
        self.a.smp_start(self.now, None, b"secret", &mut self.rng).expect("private");
        self.route();
        self.b.smp_respond(self.now, b"secret", &mut self.rng).expect("request");
        self.route();
    }
    fn send(&mut self, from_a: bool, text: &str) {
        let s = if from_a { &mut self.a } else { &mut self.b };
        s.send(self.now, text).expect("private");
    }
}

struct Lib {
    a: LibotrPeer,
    b: LibotrPeer,
    delivered: usize,
}

impl Lib {
    fn new(dir: &std::path::Path) -> Self {
        let a = LibotrPeer::new("alice", "bob", PeerPolicy::Manual, false, 0, Some(&dir.join("alice.key")));
        let b = LibotrPeer::new("bob", "alice", PeerPolicy::Manual, false, 0, Some(&dir.join("bob.key")));
        Self { a: a.expect("libotr endpoint"), b: b.expect("libotr endpoint"), delivered: 0 }
    }

    fn route(&mut self) {
        loop {
            let mut moved = false;
            for a_to_b in [true, false] {
                let (from, to) = if a_to_b { (&mut self.a, &mut self.b) } else { (&mut self.b, &mut self.a) };
                while let Some(o) = from.poll_output() {
                    match o {
                        Output::Net(m) => {
                            moved = true;
                            to.receive(m.as_bytes());
                        }
                        Output::Event(PeerEvent::Msg { text, .. }) => {
                            black_box(text);
                            self.delivered += 1;
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }
}

impl Pair for Lib {
    fn ake(&mut self) {
        self.a.query();
        self.route();
    }
    fn smp(&mut self) {
        self.a.smp(None, b"secret");
        self.route();
        self.b.smp_answer(b"secret");
        self.route();
    }
    fn send(&mut self, from_a: bool, text: &str) {
        if from_a { self.a.send(text) } else { self.b.send(text) }
    }
}

/// Routes after sending, for the message benchmarks.
trait Routed: Pair {
    fn route_all(&mut self);
    fn delivered(&self) -> usize;
}
impl Routed for Ours {
    fn route_all(&mut self) {
        self.route();
    }
    fn delivered(&self) -> usize {
        self.delivered
    }
}
impl Routed for Lib {
    fn route_all(&mut self) {
        self.route();
    }
    fn delivered(&self) -> usize {
        self.delivered
    }
}

#[derive(Clone, Copy)]
enum Op {
    Ake,
    Smp,
    Alternating,
    OneWay,
    Bulk64k,
}

impl Op {
    const ALL: [Op; 5] = [Op::Ake, Op::Smp, Op::Alternating, Op::OneWay, Op::Bulk64k];
    fn name(self) -> &'static str {
        match self {
            Op::Ake => "ake",
            Op::Smp => "smp",
            Op::Alternating => "alternating-100B",
            Op::OneWay => "one-way-100B",
            Op::Bulk64k => "64KiB",
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Op::Ake => "AKE/s",
            Op::Smp => "SMP/s",
            Op::Alternating | Op::OneWay => "msg/s",
            Op::Bulk64k => "MB/s",
        }
    }
    fn from_name(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.name() == s)
    }
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CPU time consumed by this thread so far, in seconds.
fn thread_cpu_secs() -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer (Linux x86-64 layout).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs `iters` of `op` on an established pair; returns the figure in `op.unit()`.
fn run<P: Routed>(p: &mut P, op: Op, iters: usize) -> f64 {
    let hundred = "x".repeat(100);
    let big = "y".repeat(64 * 1024);
    let start = thread_cpu_secs();
    match op {
        Op::Ake => (0..iters).for_each(|_| p.ake()),
        Op::Smp => (0..iters).for_each(|_| p.smp()),
        Op::Alternating => {
            for i in 0..iters {
                p.send(i % 2 == 0, &hundred);
                p.route_all();
            }
        }
        Op::OneWay => {
            for _ in 0..iters {
                p.send(true, &hundred);
            }
            p.route_all();
        }
        Op::Bulk64k => {
            for _ in 0..iters {
                p.send(true, &big);
                p.route_all();
            }
        }
    }
    let secs = thread_cpu_secs() - start;
    if matches!(op, Op::Alternating | Op::OneWay | Op::Bulk64k) {
        // Measure only real work: every message must have been decrypted and delivered.
        assert_eq!(p.delivered(), iters, "{}: not every message was delivered", op.name());
    }
    match op {
        Op::Bulk64k => (iters * big.len()) as f64 / secs / 1e6,
        _ => iters as f64 / secs,
    }
}

fn iterations(op: Op, quick: bool) -> usize {
    let n = match op {
        Op::Ake => 100,
        Op::Smp => 20,
        Op::Alternating => 2_000,
        Op::OneWay => 50_000,
        Op::Bulk64k => 400,
    };
    if quick { (n / 10).max(2) } else { n }
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Mallinfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

unsafe extern "C" {
    fn mallinfo2() -> Mallinfo2;
}

/// Bytes currently allocated with malloc (both Rust's allocator and libotr/libgcrypt use it).
fn heap_in_use() -> usize {
    // SAFETY: glibc's mallinfo2 takes no arguments and returns a plain struct by value.
    let m = unsafe { mallinfo2() };
    m.uordblks + m.hblkhd
}

/// Memory held per established session (one endpoint of a conversation), over `n` pairs.
fn bytes_per_session(keys: &(DsaKeyPair, DsaKeyPair), dir: &std::path::Path, n: usize) -> (usize, usize) {
    let before = heap_in_use();
    let mut ours: Vec<Ours> = (0..n).map(|_| Ours::new(keys)).collect();
    ours.iter_mut().for_each(|p| {
        p.ake();
        p.send(true, "hi");
        p.send(false, "hi");
        p.route();
    });
    let ours_bytes = heap_in_use().saturating_sub(before) / (2 * n);
    drop(ours);
    let before = heap_in_use();
    let mut libs: Vec<Lib> = (0..n).map(|_| Lib::new(dir)).collect();
    libs.iter_mut().for_each(|p| {
        p.ake();
        p.send(true, "hi");
        p.send(false, "hi");
        p.route();
    });
    let lib_bytes = heap_in_use().saturating_sub(before) / (2 * n);
    drop(libs);
    (ours_bytes, lib_bytes)
}

/// `--only OP --impl ours|libotr --iters N`: one measurement, for callgrind.
fn only(op: Op, which: &str, iters: usize, keys: &(DsaKeyPair, DsaKeyPair), dir: &std::path::Path) {
    if which == "ours" {
        let mut p = Ours::new(keys);
        p.ake();
        black_box(run(&mut p, op, iters));
    } else {
        let mut p = Lib::new(dir);
        p.ake();
        black_box(run(&mut p, op, iters));
    }
}

/// Instructions of `iters` runs of `op`, measured as the difference of two callgrind runs
/// (2 x `iters` and `iters`, so that both include the same start-up: libgcrypt's start-up
/// work varies from run to run more than one AKE costs).
fn callgrind(op: Op, which: &str, iters: usize) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let count = |n: usize| -> Option<u64> {
        let out = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(&exe)
            .args(["--only", op.name(), "--impl", which, "--iters", &n.to_string()])
            .output()
            .ok()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| l.contains("Collected :"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    };
    Some((count(2 * iters)?.saturating_sub(count(iters)?)) / iters as u64)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let keys = {
        let mut rng = ChaCha20Rng::seed_from_u64(42);
        (DsaKeyPair::generate(&mut rng), DsaKeyPair::generate(&mut rng))
    };
    let dir = std::env::temp_dir().join(format!("otr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    if let Some(op) = value("--only") {
        let op = Op::from_name(&op).expect("known operation");
        let iters = value("--iters").and_then(|n| n.parse().ok()).unwrap_or(1);
        only(op, &value("--impl").unwrap_or_default(), iters, &keys, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let quick = flag("--quick");
    println!(
        "otr-rs vs libotr 4.1.1, one process, in-memory transport, thread CPU time ({} mode)",
        if quick { "quick" } else { "full" }
    );
    println!("{:<18} {:>14} {:>14} {:>8}", "operation", "ours", "libotr", "ratio");
    let mut ratios = vec![];
    for op in Op::ALL {
        let n = iterations(op, quick);
        let mut ours = Ours::new(&keys);
        ours.ake();
        ours.delivered = 0;
        let a = run(&mut ours, op, n);
        let mut lib = Lib::new(&dir);
        lib.ake();
        lib.delivered = 0;
        let b = run(&mut lib, op, n);
        let ratio = a / b;
        println!("{:<18} {:>10.1} {:<3} {:>10.1} {:<3} {:>7.2}x", op.name(), a, "", b, "", ratio);
        println!("{:<18} {:>14} ({})", "", "", op.unit());
        ratios.push((op, ratio));
    }
    let (ours_b, lib_b) = bytes_per_session(&keys, &dir, if quick { 20 } else { 200 });
    println!(
        "{:<18} {:>14} {:>14} {:>7.2}x smaller",
        "bytes/session",
        ours_b,
        lib_b,
        lib_b as f64 / ours_b.max(1) as f64
    );
    for (op, r) in &ratios {
        println!("ratio {} {:.3}", op.name(), r);
    }
    println!("bytes-per-session {ours_b} {lib_b}");
    if flag("--callgrind") {
        for op in [Op::Ake, Op::Smp] {
            let n = if matches!(op, Op::Ake) { 10 } else { 2 };
            let (o, l) = (callgrind(op, "ours", n), callgrind(op, "libotr", n));
            match (o, l) {
                (Some(o), Some(l)) => {
                    println!(
                        "instructions {} ours {o} libotr {l} ratio {:.3}",
                        op.name(),
                        l as f64 / o.max(1) as f64
                    )
                }
                _ => println!("instructions {}: valgrind not available or failed", op.name()),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
