//! Writes the `vectors/` transcripts: `cargo run --manifest-path vectors/Cargo.toml --example make-vectors [-- OUT_DIR]`.
//!
//! Deterministic: the long-term keys, instance tags and RNG seeds are fixed, and time is a
//! simulated clock, so running it twice writes identical files. Every scenario checks, as it
//! records, that the engine did what the scenario is about (both sides secure, SMP succeeded,
//! the hostile input produced its error…), so a vector can never silently record a bug.
//! The format is described in `vectors/README.md`; `vectors/tests/replay.rs` replays every file.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::path::PathBuf;

use base64::Engine as _;
use otr::{DsaComponents, DsaKeyPair, Policy};
use otr_vectors::{Action, FORMAT, Origin, Party, PartySpec, hex, perform};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

const A: usize = 0;
const B: usize = 1;
const NAMES: [&str; 2] = ["alice", "bob"];
/// Instance tags of alice's and bob's clients (any values >= 0x100 would do).
const TAGS: [u32; 2] = [0x0a11_ce01, 0x0b0b_0b02];
/// The simulated clock starts here (ms).
const T0: u64 = 1_000_000;

/// One scenario being recorded.
struct Rec {
    name: String,
    description: String,
    specs: Vec<PartySpec>,
    parties: Vec<Party>,
    steps: Vec<Value>,
    now: u64,
    /// Messages each party sent that were not delivered yet: (step, transmit index, text).
    queue: [VecDeque<(usize, usize, String)>; 2],
}

/// How one party is set up in a scenario.
#[derive(Clone, Copy)]
struct Cfg {
    policy: Policy,
    max_message_size: usize,
}

impl Cfg {
    fn new(policy: Policy) -> Self {
        Self { policy, max_message_size: 0 }
    }
}

/// FNV-1a, to derive each scenario's RNG seeds from its name.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Rec {
    fn new(name: &str, description: &str, keys: &[DsaComponents; 2], cfg: [Cfg; 2]) -> Self {
        let specs: Vec<PartySpec> = (0..2)
            .map(|i| {
                let mut seed = [0u8; 32];
                ChaCha20Rng::seed_from_u64(fnv(name) ^ i as u64).fill_bytes(&mut seed);
                PartySpec {
                    name: NAMES[i].into(),
                    account: format!("{}@example.org", NAMES[i]),
                    instance_tag: TAGS[i],
                    policy: cfg[i].policy.bits(),
                    max_message_size: cfg[i].max_message_size,
                    dsa: keys[i].clone(),
                    seed,
                }
            })
            .collect();
        let parties = specs.iter().map(|s| s.build().unwrap()).collect();
        Self {
            name: name.into(),
            description: description.into(),
            specs,
            parties,
            steps: Vec::new(),
            now: T0,
            queue: Default::default(),
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Runs `action` on party `who`, records the step and queues what it sent.
    fn act(&mut self, who: usize, action: Action) -> Map<String, Value> {
        let out = perform(&mut self.parties[who], self.now, &action);
        let index = self.steps.len();
        for (k, t) in out["transmit"].as_array().unwrap().iter().enumerate() {
            self.queue[who].push_back((index, k, t.as_str().unwrap().to_string()));
        }
        let mut step = Map::new();
        step.insert("at".into(), json!(self.now));
        step.insert("party".into(), json!(NAMES[who]));
        step.insert("action".into(), action.to_json());
        step.extend(out.clone());
        self.steps.push(Value::Object(step));
        out
    }

    /// Adds a remark for people to the last step.
    fn note(&mut self, text: &str) {
        self.steps.last_mut().unwrap()["note"] = json!(text);
    }

    /// Delivers the oldest undelivered message of `from` to the other party.
    fn deliver_one(&mut self, from: usize) -> Option<Map<String, Value>> {
        let (step, index, message) = self.queue[from].pop_front()?;
        Some(self.act(1 - from, Action::Receive { message, origin: Origin::Transmit { step, index } }))
    }

    /// Delivers everything, alternating directions, until both sides are quiet.
    fn deliver_all(&mut self) {
        for _ in 0..1000 {
            if self.queue[A].is_empty() && self.queue[B].is_empty() {
                return;
            }
            for from in [A, B] {
                for _ in 0..self.queue[from].len() {
                    let out = self.deliver_one(from).unwrap();
                    assert_eq!(out["result"], "ok", "{}: an honest message was refused: {out:?}", self.name);
                }
            }
        }
        panic!("{}: the parties never went quiet", self.name);
    }

    /// Takes the oldest undelivered message of `from` off the wire.
    fn take(&mut self, from: usize) -> String {
        self.queue[from].pop_front().unwrap().2
    }

    /// Delivers a made-up message to `to`.
    fn inject(&mut self, to: usize, message: String, how: &str) -> Map<String, Value> {
        self.act(to, Action::Receive { message, origin: Origin::Crafted(how.into()) })
    }

    fn send(&mut self, who: usize, text: &str) -> Map<String, Value> {
        self.act(who, Action::Send(text.into()))
    }

    /// Every event party `who` saw so far, as JSON.
    fn events(&self, who: usize) -> Vec<Value> {
        self.steps
            .iter()
            .filter(|s| s["party"] == NAMES[who])
            .flat_map(|s| s["events"].as_array().unwrap().clone())
            .collect()
    }

    fn count(&self, who: usize, kind: &str) -> usize {
        self.events(who).iter().filter(|e| e["type"] == kind).count()
    }

    /// Starts an AKE from `who` with a query and checks both sides went secure.
    fn secure(&mut self, who: usize) -> String {
        let before = [self.count(A, "secure"), self.count(B, "secure")];
        self.act(who, Action::Start);
        self.deliver_all();
        assert_eq!([self.count(A, "secure"), self.count(B, "secure")], [before[0] + 1, before[1] + 1]);
        let ssid =
            |w: usize| self.events(w).iter().rev().find(|e| e["type"] == "secure").unwrap()["ssid"].clone();
        assert_eq!(ssid(A), ssid(B), "{}: both sides see one ssid", self.name);
        ssid(A).as_str().unwrap().to_string()
    }

    /// Sends `text` from `who`, delivers everything, and checks it arrived encrypted.
    fn talk(&mut self, who: usize, text: &str) {
        let out = self.send(who, text);
        assert_eq!(out["result"], json!({ "ok": "encrypted" }), "{}", self.name);
        self.deliver_all();
        let got = self.events(1 - who);
        let last = got.iter().rev().find(|e| e["type"] == "message").unwrap();
        assert_eq!((&last["text"], &last["encrypted"]), (&json!(text), &json!(true)), "{}", self.name);
    }

    fn finish(self) -> (String, Value) {
        let parties: Map<String, Value> = self.specs.iter().map(|s| (s.name.clone(), s.to_json())).collect();
        let v = json!({
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "protocol_version": 3,
            "parties": parties,
            "steps": self.steps,
        });
        (self.name, v)
    }
}

fn expect_error(out: &Map<String, Value>, kind: &str) {
    assert_eq!(out["result"]["error"]["kind"], kind, "expected a {kind} error: {out:?}");
}

fn texts(i: usize) -> String {
    const T: [&str; 6] = [
        "Hello Bob!",
        "¿Qué tal, señor Muñoz?",
        "你好，世界",
        "こんにちは 🎉🔐",
        "<b>HTML</b> &amp; entities, as libotr clients send them",
        "Ünïcödé ✓ ∑",
    ];
    format!("{} #{i}", T[i % T.len()])
}

// ---------------------------------------------------------------------------------------
// The scenarios.

fn manual() -> [Cfg; 2] {
    [Cfg::new(Policy::MANUAL), Cfg::new(Policy::MANUAL)]
}

fn ake(keys: &[DsaComponents; 2], who: usize) -> (String, Value) {
    let (name, starter, other) =
        if who == A { ("ake-alice-starts", "Alice", "Bob") } else { ("ake-bob-starts", "Bob", "Alice") };
    let mut r = Rec::new(
        name,
        &format!(
            "{starter} sends a query; {other} answers with a D-H Commit, then D-H Key, Reveal \
             Signature and Signature complete the AKE (manual policy on both sides). One message \
             each way follows."
        ),
        keys,
        manual(),
    );
    r.secure(who);
    r.talk(who, &format!("Hello from {starter}"));
    r.talk(1 - who, &format!("Hello from {other}"));
    r.finish()
}

fn collision(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "commit-collision",
        "Both sides send a query at the same time, so both answer with a D-H Commit and the \
         commits cross. The commit with the larger hash of g^x wins: its sender ignores the other \
         commit and resends its own, the other side answers it with a D-H Key. One AKE results.",
        keys,
        manual(),
    );
    r.act(A, Action::Start);
    r.act(B, Action::Start);
    r.deliver_one(A).unwrap();
    r.deliver_one(B).unwrap();
    r.note("both queries delivered: each side has now sent a D-H Commit");
    r.deliver_all();
    assert_eq!((r.count(A, "secure"), r.count(B, "secure")), (1, 1));
    r.talk(A, "after the collision");
    r.talk(B, "one AKE won");
    r.finish()
}

fn fifty(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "fifty-messages",
        "After an AKE, 50 messages in runs of one to four from each side, some sent before the \
         previous ones arrive and some crossing: keys rotate as each side acknowledges the \
         other's newest key, counters increase within a key pair, and the MAC keys of retired \
         pairs are revealed in the next message.",
        keys,
        manual(),
    );
    r.secure(A);
    let mut who = A;
    let mut i = 0;
    let mut run = 1;
    while i < 50 {
        for _ in 0..run {
            if i >= 50 {
                break;
            }
            if i % 9 == 4 && i + 1 < 50 {
                // Both send before either message arrives.
                r.send(who, &texts(i));
                r.send(1 - who, &texts(i + 1));
                r.deliver_all();
                i += 2;
                continue;
            }
            r.send(who, &texts(i));
            if i % 3 != 1 {
                r.deliver_all();
            }
            i += 1;
        }
        r.deliver_all();
        who = 1 - who;
        run = run % 4 + 1;
    }
    let received = r.count(A, "message") + r.count(B, "message");
    assert_eq!(received, 50);
    let revealing = r
        .steps
        .iter()
        .flat_map(|s| s["trace"].as_array().unwrap().clone())
        .filter(|t| t["type"] == "dh_key")
        .count();
    assert!(revealing > 20, "keys rotated ({revealing} keys)");
    r.finish()
}

fn end_restart(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "end-and-restart",
        "A private conversation; Alice ends it (an empty data message with the disconnected \
         TLV, flagged IGNORE_UNREADABLE). Bob's side is now finished: his send is refused and \
         nothing goes out. Bob ends too, then starts a new AKE, which yields a new ssid.",
        keys,
        manual(),
    );
    let first = r.secure(A);
    r.talk(A, "before the end");
    r.act(A, Action::End);
    r.deliver_all();
    assert_eq!(r.count(B, "remote_ended"), 1);
    let out = r.send(B, "are you still there?");
    expect_error(&out, "finished");
    assert!(out["transmit"].as_array().unwrap().is_empty());
    r.act(B, Action::End);
    let second = r.secure(B);
    assert_ne!(first, second);
    r.talk(B, "after the restart");
    r.talk(A, "new keys, new ssid");
    r.finish()
}

fn whitespace(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "whitespace-start",
        "Opportunistic policy on both sides: Alice's first plaintext message carries the \
         whitespace tag; Bob shows the text (unencrypted) and, since the tag offers v3, starts \
         the AKE with a D-H Commit. Later messages are encrypted.",
        keys,
        [Cfg::new(Policy::OPPORTUNISTIC), Cfg::new(Policy::OPPORTUNISTIC)],
    );
    let out = r.send(A, "Hi Bob, shall we talk privately?");
    assert_eq!(out["result"], json!({ "ok": "plaintext" }));
    r.deliver_all();
    assert_eq!((r.count(A, "secure"), r.count(B, "secure")), (1, 1));
    r.talk(A, "now encrypted");
    r.talk(B, "indeed");
    r.finish()
}

fn smp(keys: &[DsaComponents; 2], name: &str) -> (String, Value) {
    let (description, who, question, secrets, outcome) = match name {
        "smp-success" => (
            "After an AKE, Alice starts SMP with a secret; Bob answers with the same secret. \
             SMP1 to SMP4 travel as TLVs in empty data messages; both learn it succeeded.",
            A,
            None,
            ("correct horse battery staple", "correct horse battery staple"),
            "smp_succeeded",
        ),
        "smp-failure" => (
            "Bob starts SMP; Alice answers with a different secret. Both learn that SMP failed \
             (Alice, the responder, on SMP3; Bob on SMP4).",
            B,
            None,
            ("our first pet", "our first car"),
            "smp_failed",
        ),
        _ => (
            "Alice starts SMP with a question (SMP1Q); Bob sees the question, answers \
             correctly, and both learn it succeeded.",
            A,
            Some("Where did we first meet?"),
            ("Lisboa", "Lisboa"),
            "smp_succeeded",
        ),
    };
    let mut r = Rec::new(name, description, keys, manual());
    r.secure(A);
    r.act(who, Action::SmpStart { question: question.map(str::to_string), secret: secrets.0.into() });
    r.deliver_all();
    let req = r.events(1 - who).into_iter().find(|e| e["type"] == "smp_request").unwrap();
    assert_eq!(req["question"], json!(question));
    r.act(1 - who, Action::SmpRespond(secrets.1.into()));
    r.deliver_all();
    assert_eq!((r.count(A, outcome), r.count(B, outcome)), (1, 1), "{name}");
    r.talk(A, "after SMP");
    r.finish()
}

fn smp_abort(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "smp-abort",
        "Alice starts SMP; Bob aborts instead of answering (TLV 6). Alice learns it was \
         aborted, and Bob's later answer is refused (no request pending). A new run then \
         succeeds.",
        keys,
        manual(),
    );
    r.secure(A);
    r.act(A, Action::SmpStart { question: None, secret: "first try".into() });
    r.deliver_all();
    r.act(B, Action::SmpAbort);
    r.deliver_all();
    let aborted = r.events(A).into_iter().find(|e| e["type"] == "smp_aborted").unwrap();
    assert_eq!(aborted["cheated"], false);
    expect_error(&r.act(B, Action::SmpRespond("first try".into())), "no_smp_request");
    r.act(A, Action::SmpStart { question: None, secret: "second try".into() });
    r.deliver_all();
    r.act(B, Action::SmpRespond("second try".into()));
    r.deliver_all();
    assert_eq!((r.count(A, "smp_succeeded"), r.count(B, "smp_succeeded")), (1, 1));
    r.finish()
}

fn symkey(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "extra-symmetric-key",
        "Alice uses the extra symmetric key (use 1, use data \"file.txt\"): an empty data \
         message with TLV 8 goes out, and the key of that message's key pair is returned; Bob \
         gets the same key when he reads it. Then Bob does the same after keys rotated.",
        keys,
        manual(),
    );
    r.secure(A);
    r.talk(A, "let us share a file");
    for (who, use_, data) in [(A, 1u32, &b"file.txt"[..]), (B, 0x0102_0304, &b"voice"[..])] {
        let out = r.act(who, Action::ExtraSymmetricKey { use_, usedata: data.to_vec() });
        let key = out["result"]["ok"]["key"].clone();
        r.deliver_all();
        let got = r.events(1 - who).into_iter().rev().find(|e| e["type"] == "extra_symmetric_key").unwrap();
        assert_eq!((&got["key"], &got["use"], &got["usedata"]), (&key, &json!(use_), &json!(hex(data))));
        r.talk(1 - who, "got the key");
    }
    r.finish()
}

fn fragmented(keys: &[DsaComponents; 2]) -> (String, Value) {
    let cfg = Cfg { policy: Policy::MANUAL, max_message_size: 200 };
    let mut r = Rec::new(
        "fragmented",
        "Both sides limit transport messages to 200 bytes, so AKE messages and long data \
         messages go out as v3 fragments (?OTR|sender|receiver,k,n,piece,) and are reassembled.",
        keys,
        [cfg, cfg],
    );
    r.secure(B);
    r.talk(A, "short");
    let long: String = (0..12).map(texts).collect::<Vec<_>>().join(" / ");
    r.talk(B, &long);
    r.talk(A, &long.to_uppercase());
    let pieces = r.steps.iter().flat_map(|s| s["transmit"].as_array().unwrap().clone());
    assert!(pieces.filter(|t| t.as_str().unwrap().starts_with("?OTR|")).count() > 20);
    r.finish()
}

fn version_2(keys: &[DsaComponents; 2]) -> (String, Value) {
    let alice = Cfg { policy: Policy::MANUAL | Policy::ALLOW_V2, max_message_size: 200 };
    let bob = Cfg { policy: Policy::ALLOW_V2, max_message_size: 200 };
    let mut r = Rec::new(
        "version-2",
        "OTR version 2: Alice allows v2 and v3 and queries with ?OTRv23?; Bob allows only v2, so \
         he answers with a v2 D-H Commit and the whole conversation is v2: 3-byte headers \
         without instance tags, v2 fragments (?OTR,k,n,piece,) at 200 bytes, key rotation, and \
         SMP with a question. Both sides report version 2 and instance 0.",
        keys,
        [alice, bob],
    );
    r.secure(A);
    for w in [A, B] {
        let v2 = |e: &Value| e["type"] == "secure" && e["version"] == 2 && e["instance"] == 0;
        assert!(r.events(w).iter().any(v2), "both sides report v2");
    }
    for i in 0..6 {
        r.talk(i % 2, &texts(i));
    }
    r.act(A, Action::SmpStart { question: Some("Which version?".into()), secret: "two".into() });
    r.deliver_all();
    r.act(B, Action::SmpRespond("two".into()));
    r.deliver_all();
    assert_eq!((r.count(A, "smp_succeeded"), r.count(B, "smp_succeeded")), (1, 1));
    let pieces = r.steps.iter().flat_map(|s| s["transmit"].as_array().unwrap().clone());
    assert!(pieces.filter(|t| t.as_str().unwrap().starts_with("?OTR,")).count() > 10);
    r.finish()
}

fn heartbeat(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "heartbeat",
        "Alice writes; Bob reads but does not answer. Bob's next_timeout is 60 s after his last \
         send; an early handle_timeout does nothing, the one at that time sends an empty data \
         message flagged IGNORE_UNREADABLE (a heartbeat), which rotates keys and delivers \
         nothing to Alice.",
        keys,
        manual(),
    );
    r.secure(A);
    r.tick(5_000);
    r.talk(A, "are you there?");
    let due = r.steps.last().unwrap()["next_timeout"].as_u64().unwrap();
    r.tick(30_000);
    let early = r.act(B, Action::HandleTimeout);
    assert!(early["transmit"].as_array().unwrap().is_empty());
    r.now = due;
    let beat = r.act(B, Action::HandleTimeout);
    assert_eq!(beat["transmit"].as_array().unwrap().len(), 1);
    let before = r.events(A).len();
    r.deliver_all();
    assert_eq!(r.events(A).len(), before, "a heartbeat shows nothing");
    r.tick(1_000);
    r.talk(B, "yes, sorry");
    r.finish()
}

fn require(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "require-encryption",
        "Alice's policy requires encryption. Bob's plaintext reaches her only as an \
         'unencrypted message received' event. Her own send is refused in plaintext: it is \
         held, a query goes out instead, and the held text is sent encrypted once the AKE \
         completes. When Bob ends the conversation, her next send is refused and nothing at \
         all goes out.",
        keys,
        [Cfg::new(Policy::ALWAYS), Cfg::new(Policy::MANUAL)],
    );
    assert_eq!(r.send(B, "hi Alice (in the clear)")["result"], json!({ "ok": "plaintext" }));
    r.deliver_all();
    assert_eq!(r.count(A, "unencrypted_received"), 1);
    assert_eq!(r.count(A, "message"), 0);
    let out = r.send(A, "the secret plans");
    assert_eq!(out["result"], json!({ "ok": "held" }));
    let sent = out["transmit"].as_array().unwrap();
    assert!(sent.len() == 1 && sent[0].as_str().unwrap().starts_with("?OTRv3?"));
    r.deliver_all();
    let got = r.events(B).into_iter().find(|e| e["type"] == "message").unwrap();
    assert_eq!((&got["text"], &got["encrypted"]), (&json!("the secret plans"), &json!(true)));
    r.act(B, Action::End);
    r.deliver_all();
    let out = r.send(A, "still there?");
    expect_error(&out, "finished");
    assert!(out["transmit"].as_array().unwrap().is_empty());
    r.finish()
}

/// The pieces of a data message, to modify them (see the OTR v3 spec, "Data Message").
struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn parse(msg: &str) -> Self {
        let b64 = msg.strip_prefix("?OTR:").unwrap().strip_suffix('.').unwrap();
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(bytes[2], 0x03, "a data message");
        Self { bytes }
    }

    fn encode(&self) -> String {
        otr::message::encode_envelope(&self.bytes)
    }

    /// Offset of the encrypted message's DATA length.
    fn enc_offset(&self) -> usize {
        let mpi_len = u32::from_be_bytes(self.bytes[20..24].try_into().unwrap()) as usize;
        24 + mpi_len + 8
    }
}

fn header(kind: u8, sender: u32, receiver: u32) -> Vec<u8> {
    let mut v = vec![0, 3, kind];
    v.extend_from_slice(&sender.to_be_bytes());
    v.extend_from_slice(&receiver.to_be_bytes());
    v
}

fn hostile(keys: &[DsaComponents; 2]) -> (String, Value) {
    let mut r = Rec::new(
        "hostile",
        "Hostile and broken inputs to Bob, during and after a private conversation with Alice, \
         each with the error it must produce and the reply (if any) it must cause: a network \
         duplicate (dropped silently), tampered, unknown-key and truncated data messages (answered with an OTR error \
         message), the same flagged IGNORE_UNREADABLE (silently dropped), bad base64, wrong \
         instance tags, unknown type and version, out-of-range DH values in AKE and data \
         messages, bad fragments, plaintext and OTR errors while private, and data after Bob \
         ended the conversation. Honest messages still work in between.",
        keys,
        manual(),
    );
    let (ta, tb) = (TAGS[A], TAGS[B]);
    r.secure(A);
    r.talk(A, "warm-up");
    r.talk(B, "keys rotate");

    // A message the network repeats: an exact duplicate of one already read is dropped
    // silently (no error, no reply, nothing shown).
    r.send(A, "only once");
    let m = r.queue[A][0].2.clone();
    r.deliver_all();
    let out = r.inject(B, m, "the previous data message again (a network duplicate)");
    assert_eq!(out["result"], "ok");
    assert!(out["transmit"].as_array().unwrap().is_empty());
    assert!(out["events"].as_array().unwrap().is_empty());

    // A tampered ciphertext, then the honest original.
    r.send(A, "tamper with me");
    let honest = r.take(A);
    let mut d = Data::parse(&honest);
    let at = d.enc_offset() + 4;
    d.bytes[at] ^= 0x01;
    expect_error(&r.inject(B, d.encode(), "one bit of the ciphertext flipped"), "unreadable_bad_mac");
    let step = r.steps.len() - 2;
    r.deliver_all();
    let out = r.act(B, Action::Receive { message: honest, origin: Origin::Transmit { step, index: 0 } });
    assert_eq!(out["result"], "ok");
    r.note("the untampered original still reads");

    // The same, flagged IGNORE_UNREADABLE: dropped without a reply.
    r.send(A, "flag me");
    let mut d = Data::parse(&r.take(A));
    d.bytes[11] |= 0x01;
    let out = r.inject(B, d.encode(), "IGNORE_UNREADABLE set (so the MAC fails)");
    assert_eq!(out["result"], "ok");
    assert!(out["transmit"].as_array().unwrap().is_empty());

    // Unknown recipient keyid.
    r.send(A, "unknown key");
    let mut d = Data::parse(&r.take(A));
    d.bytes[16..20].copy_from_slice(&0x1000u32.to_be_bytes());
    expect_error(&r.inject(B, d.encode(), "recipient keyid set to 4096"), "unreadable_unknown_keyid");

    // Truncated.
    r.send(A, "cut short");
    let mut d = Data::parse(&r.take(A));
    d.bytes.truncate(d.bytes.len() - 10);
    expect_error(&r.inject(B, d.encode(), "last 10 bytes cut off"), "malformed");

    // next_dh out of range (1).
    r.send(A, "bad next key");
    let d = Data::parse(&r.take(A));
    let mpi_len = u32::from_be_bytes(d.bytes[20..24].try_into().unwrap()) as usize;
    let mut bytes = d.bytes[..20].to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 1, 1]);
    bytes.extend_from_slice(&d.bytes[24 + mpi_len..]);
    let crafted = otr::message::encode_envelope(&bytes);
    expect_error(&r.inject(B, crafted, "next_dh replaced by the MPI of 1"), "malformed");
    r.deliver_all();

    // Envelope and header problems: no reply for these.
    expect_error(&r.inject(B, "?OTR:AAMD!!not base64!!.".into(), "invalid base64"), "malformed");
    r.send(A, "for someone else");
    let mut d = Data::parse(&r.take(A));
    d.bytes[7..11].copy_from_slice(&0x0c0c_0c03u32.to_be_bytes());
    expect_error(&r.inject(B, d.encode(), "receiver instance tag of another client"), "other_instance");
    r.send(A, "from nobody");
    let mut d = Data::parse(&r.take(A));
    d.bytes[3..7].copy_from_slice(&0x42u32.to_be_bytes());
    expect_error(&r.inject(B, d.encode(), "sender instance tag 0x42 (reserved)"), "malformed");
    let mut unknown = header(0x55, ta, tb);
    unknown.extend_from_slice(&[0; 8]);
    let crafted = otr::message::encode_envelope(&unknown);
    expect_error(&r.inject(B, crafted, "message type 0x55"), "unknown_type");
    let crafted = otr::message::encode_envelope(&[0, 2, 0x0a, 0, 0, 0, 1, 2]);
    expect_error(&r.inject(B, crafted, "protocol version 2"), "unsupported_version");

    // AKE messages with bad values.
    let mut dh_key = header(0x0a, ta, tb);
    dh_key.extend_from_slice(&[0, 0, 0, 1, 1]);
    let crafted = otr::message::encode_envelope(&dh_key);
    expect_error(&r.inject(B, crafted, "D-H Key with g^y = 1"), "ake_rejected");
    let mut commit = header(0x02, ta, tb);
    commit.extend_from_slice(&[0, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0, 31]);
    commit.extend_from_slice(&[0xab; 31]);
    let crafted = otr::message::encode_envelope(&commit);
    expect_error(&r.inject(B, crafted, "D-H Commit whose hash is 31 bytes"), "ake_rejected");

    // Fragments.
    let frag = |k: u16, n: u16, piece: &str| format!("?OTR|{ta:08x}|{tb:08x},{k:05},{n:05},{piece},");
    expect_error(&r.inject(B, frag(3, 2, "?OTR:AAMD"), "fragment 3 of 2"), "fragment_dropped");
    expect_error(&r.inject(B, frag(0, 2, "?OTR:AAMD"), "fragment 0 of 2"), "fragment_dropped");
    expect_error(&r.inject(B, frag(1, 1, "hello"), "a one-piece fragment that is plain text"), "malformed");

    // Plaintext and an OTR error while private.
    let out = r.inject(B, "hello in the clear".into(), "plaintext while private");
    assert_eq!(out["events"][0]["type"], "unencrypted_received");
    let out = r.inject(B, "?OTR Error: you are being attacked".into(), "an OTR error message");
    assert_eq!(out["events"][0]["type"], "error_received");

    // Still private after all that.
    r.talk(A, "still fine?");
    r.talk(B, "still fine");

    // Data after Bob ended the conversation (after the error-reply interval, so it is answered).
    r.tick(otr::session::ERROR_REPLY_INTERVAL_MS);
    r.send(A, "after your end");
    let late = r.take(A);
    r.act(B, Action::End);
    let out = r.inject(B, late, "Alice's data message, arriving after Bob ended");
    expect_error(&out, "not_private");
    assert!(out["transmit"][0].as_str().unwrap().starts_with("?OTR Error:"));
    r.deliver_all();
    r.finish()
}

fn main() {
    let out: PathBuf =
        std::env::args_os().nth(1).map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    std::fs::create_dir_all(&out).unwrap();
    // Fixed long-term keys: generated from fixed seeds, so the same every run.
    let keys = [0xa11ce_u64, 0xb0b]
        .map(|seed| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed)).components());
    let vectors = [
        ake(&keys, A),
        ake(&keys, B),
        collision(&keys),
        fifty(&keys),
        end_restart(&keys),
        whitespace(&keys),
        smp(&keys, "smp-success"),
        smp(&keys, "smp-failure"),
        smp(&keys, "smp-question"),
        smp_abort(&keys),
        symkey(&keys),
        fragmented(&keys),
        version_2(&keys),
        heartbeat(&keys),
        require(&keys),
        hostile(&keys),
    ];
    for (name, v) in vectors {
        let path = out.join(format!("{name}.json"));
        let mut text = serde_json::to_string_pretty(&v).unwrap();
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        println!(
            "{:>8} bytes  {:>4} steps  {}",
            text.len(),
            v["steps"].as_array().unwrap().len(),
            path.display()
        );
    }
}
