//! The `vectors/` transcript format (see `vectors/README.md`): running one step of a
//! transcript against a session, turning what came out into JSON, and replaying a whole file.
//!
//! Shared by `vectors/examples/make-vectors.rs` (which records), `vectors/examples/replay.rs` and
//! `tests/replay.rs` (which replay). Recording and replaying run the very same [`perform`],
//! so a replay compares like with like, field by field.
//!
//! This is a workspace of its own (`cargo test --manifest-path vectors/Cargo.toml`) because it
//! needs otr-core's `trace` feature (which records secrets): as a member of the main
//! workspace, Cargo's feature unification would turn `trace` on in every binary and example
//! built with `--workspace`, and those handle real conversations (`.ci/check-no-trace`).

use std::convert::Infallible;

use otr::trace::{Trace, Value as Computed};
use otr::{
    DsaComponents, DsaKeyPair, Event, InstanceTag, Policy, ReceiveError, SendError, Sent, Session,
    SessionConfig, Timestamp,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};
use serde_json::{Map, Value, json};

/// The `format` field of every transcript.
pub const FORMAT: &str = "otr-rs-transcript/1";

/// The outputs of a step, in the order a replay compares them.
pub const OUTPUTS: [&str; 6] = ["result", "random", "transmit", "events", "trace", "next_timeout"];

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex.
///
/// # Errors
/// A message naming the bad input.
pub fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err(format!("odd-length hex {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("bad hex {s:?}"))
        })
        .collect()
}

/// A ChaCha20 RNG that remembers every byte it hands out, in order (a `next_u32` or
/// `next_u64` as its little-endian bytes).
pub struct Tape {
    inner: ChaCha20Rng,
    drawn: Vec<u8>,
}

impl Tape {
    /// A tape over `ChaCha20Rng::from_seed(seed)`.
    pub fn new(seed: [u8; 32]) -> Self {
        Self { inner: ChaCha20Rng::from_seed(seed), drawn: Vec::new() }
    }

    /// The bytes drawn since the last call.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.drawn)
    }
}

impl TryRng for Tape {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let v = self.inner.next_u32();
        self.drawn.extend_from_slice(&v.to_le_bytes());
        Ok(v)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let v = self.inner.next_u64();
        self.drawn.extend_from_slice(&v.to_le_bytes());
        Ok(v)
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.inner.fill_bytes(dst);
        self.drawn.extend_from_slice(dst);
        Ok(())
    }
}

impl TryCryptoRng for Tape {}

/// Everything that sets up one party.
#[derive(Clone)]
pub struct PartySpec {
    /// "alice" or "bob": how steps name it.
    pub name: String,
    /// The account name (it appears in query messages).
    pub account: String,
    /// Its instance tag.
    pub instance_tag: u32,
    /// Raw policy bits (libotr's values).
    pub policy: u32,
    /// Fragment size limit (0: none).
    pub max_message_size: usize,
    /// Its long-term DSA key.
    pub dsa: DsaComponents,
    /// Its RNG seed.
    pub seed: [u8; 32],
}

const POLICY_NAMES: [(u32, &str); 6] = [
    (0x02, "ALLOW_V2"),
    (0x04, "ALLOW_V3"),
    (0x08, "REQUIRE_ENCRYPTION"),
    (0x10, "SEND_WHITESPACE_TAG"),
    (0x20, "WHITESPACE_START_AKE"),
    (0x40, "ERROR_START_AKE"),
];

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    v.get(key).ok_or_else(|| format!("missing field {key:?}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    field(v, key)?.as_str().ok_or_else(|| format!("field {key:?} is not a string"))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, String> {
    field(v, key)?.as_u64().ok_or_else(|| format!("field {key:?} is not a number"))
}

fn hex_field(v: &Value, key: &str) -> Result<Vec<u8>, String> {
    unhex(str_field(v, key)?)
}

impl PartySpec {
    /// The JSON of this party.
    pub fn to_json(&self) -> Value {
        let flags: Vec<&str> =
            POLICY_NAMES.iter().filter(|(b, _)| self.policy & b != 0).map(|(_, n)| *n).collect();
        let key = DsaKeyPair::from_components(&self.dsa).expect("a valid key");
        json!({
            "account": self.account,
            "instance_tag": self.instance_tag,
            "policy": { "bits": self.policy, "flags": flags },
            "max_message_size": self.max_message_size,
            "dsa": {
                "p": hex(&self.dsa.p), "q": hex(&self.dsa.q), "g": hex(&self.dsa.g),
                "y": hex(&self.dsa.y), "x": hex(&self.dsa.x),
            },
            "fingerprint": hex(&key.fingerprint().0),
            "rng_seed": hex(&self.seed),
        })
    }

    /// Reads party `name` from its JSON.
    ///
    /// # Errors
    /// A message naming what is missing or malformed.
    pub fn from_json(name: &str, v: &Value) -> Result<Self, String> {
        let dsa = field(v, "dsa")?;
        let seed =
            hex_field(v, "rng_seed")?.try_into().map_err(|_| "rng_seed is not 32 bytes".to_string())?;
        Ok(Self {
            name: name.to_string(),
            account: str_field(v, "account")?.to_string(),
            instance_tag: u32::try_from(u64_field(v, "instance_tag")?).map_err(|e| e.to_string())?,
            policy: u32::try_from(u64_field(field(v, "policy")?, "bits")?).map_err(|e| e.to_string())?,
            max_message_size: usize::try_from(u64_field(v, "max_message_size")?)
                .map_err(|e| e.to_string())?,
            dsa: DsaComponents {
                p: hex_field(dsa, "p")?,
                q: hex_field(dsa, "q")?,
                g: hex_field(dsa, "g")?,
                y: hex_field(dsa, "y")?,
                x: hex_field(dsa, "x")?.into(),
            },
            seed,
        })
    }

    /// A fresh session for this party, recording its intermediate secrets, and its RNG.
    ///
    /// # Errors
    /// When the key or the instance tag is invalid.
    pub fn build(&self) -> Result<Party, String> {
        let key =
            DsaKeyPair::from_components(&self.dsa).map_err(|e| format!("{}: bad DSA key: {e}", self.name))?;
        let tag =
            InstanceTag::new(self.instance_tag).ok_or_else(|| format!("{}: bad instance tag", self.name))?;
        let mut config = SessionConfig::new(self.account.clone(), Policy::from_bits(self.policy), tag);
        config.max_message_size = self.max_message_size;
        let mut session = Session::new(config, key);
        session.set_tracing(true);
        Ok(Party { name: self.name.clone(), session, rng: Tape::new(self.seed) })
    }
}

/// A live party: its session and its RNG.
pub struct Party {
    /// "alice" or "bob".
    pub name: String,
    /// The engine.
    pub session: Session,
    /// Its randomness.
    pub rng: Tape,
}

/// Where a received message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `transmit[index]` of step `step` (the other party sent it).
    Transmit {
        /// The step that sent it.
        step: usize,
        /// Its position in that step's `transmit` list.
        index: usize,
    },
    /// Made up by the vector's author (hostile input); the text says how.
    Crafted(String),
}

/// A user action or network input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `start`: send a query message.
    Start,
    /// `send(text)`.
    Send(String),
    /// `end`.
    End,
    /// `receive(message)`.
    Receive {
        /// The transport message.
        message: String,
        /// Where it came from.
        origin: Origin,
    },
    /// `smp_start(question, secret)`.
    SmpStart {
        /// The question shown to the peer, if any.
        question: Option<String>,
        /// Our secret.
        secret: String,
    },
    /// `smp_respond(secret)`.
    SmpRespond(String),
    /// `smp_abort`.
    SmpAbort,
    /// `extra_symmetric_key(use, usedata)`.
    ExtraSymmetricKey {
        /// What the key is for (TLV 8's first 4 bytes).
        use_: u32,
        /// The rest of TLV 8.
        usedata: Vec<u8>,
    },
    /// `handle_timeout`.
    HandleTimeout,
}

impl Action {
    /// The JSON of this action.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Start => json!({ "do": "start" }),
            Self::Send(text) => json!({ "do": "send", "text": text }),
            Self::End => json!({ "do": "end" }),
            Self::Receive { message, origin: Origin::Transmit { step, index } } => {
                json!({ "do": "receive", "message": message, "from": { "step": step, "transmit": index } })
            }
            Self::Receive { message, origin: Origin::Crafted(how) } => {
                json!({ "do": "receive", "message": message, "crafted": how })
            }
            Self::SmpStart { question, secret } => {
                json!({ "do": "smp_start", "question": question, "secret": secret })
            }
            Self::SmpRespond(secret) => json!({ "do": "smp_respond", "secret": secret }),
            Self::SmpAbort => json!({ "do": "smp_abort" }),
            Self::ExtraSymmetricKey { use_, usedata } => {
                json!({ "do": "extra_symmetric_key", "use": use_, "usedata": hex(usedata) })
            }
            Self::HandleTimeout => json!({ "do": "handle_timeout" }),
        }
    }

    /// Reads an action.
    ///
    /// # Errors
    /// A message naming what is missing or unknown.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        Ok(match str_field(v, "do")? {
            "start" => Self::Start,
            "send" => Self::Send(str_field(v, "text")?.to_string()),
            "end" => Self::End,
            "receive" => {
                let origin = match v.get("from") {
                    Some(from) => Origin::Transmit {
                        step: usize::try_from(u64_field(from, "step")?).map_err(|e| e.to_string())?,
                        index: usize::try_from(u64_field(from, "transmit")?).map_err(|e| e.to_string())?,
                    },
                    None => Origin::Crafted(str_field(v, "crafted")?.to_string()),
                };
                Self::Receive { message: str_field(v, "message")?.to_string(), origin }
            }
            "smp_start" => Self::SmpStart {
                question: field(v, "question")?.as_str().map(str::to_string),
                secret: str_field(v, "secret")?.to_string(),
            },
            "smp_respond" => Self::SmpRespond(str_field(v, "secret")?.to_string()),
            "smp_abort" => Self::SmpAbort,
            "extra_symmetric_key" => Self::ExtraSymmetricKey {
                use_: u32::try_from(u64_field(v, "use")?).map_err(|e| e.to_string())?,
                usedata: hex_field(v, "usedata")?,
            },
            "handle_timeout" => Self::HandleTimeout,
            other => return Err(format!("unknown action {other:?}")),
        })
    }
}

/// The stable name of a receive error (what any implementation should match) and our
/// engine's detail.
pub fn receive_error_json(e: &ReceiveError) -> Value {
    let kind = match e {
        ReceiveError::Malformed(_) => "malformed",
        ReceiveError::Ake(_) => "ake_rejected",
        ReceiveError::Unreadable(otr::data::Unreadable::BadMac) => "unreadable_bad_mac",
        ReceiveError::Unreadable(otr::data::Unreadable::UnknownKeyId) => "unreadable_unknown_keyid",
        ReceiveError::Unreadable(otr::data::Unreadable::Replayed) => "unreadable_replayed",
        ReceiveError::Unreadable(_) => "unreadable",
        ReceiveError::NotPrivate => "not_private",
        ReceiveError::OtherInstance => "other_instance",
        ReceiveError::UnsupportedVersion(_) => "unsupported_version",
        ReceiveError::Fragment(_) => "fragment_dropped",
        ReceiveError::UnknownType(_) => "unknown_type",
        _ => "other",
    };
    json!({ "error": { "kind": kind, "detail": format!("{e:?}") } })
}

/// The stable name of a send error.
pub fn send_error_json(e: &SendError) -> Value {
    let kind = match e {
        SendError::Finished => "finished",
        SendError::QueueFull => "queue_full",
        SendError::NotPrivate => "not_private",
        SendError::NoSmpRequest => "no_smp_request",
        SendError::TooLong => "too_long",
        SendError::ContainsNul => "contains_nul",
        _ => "other",
    };
    json!({ "error": { "kind": kind, "detail": format!("{e:?}") } })
}

/// An event as JSON.
pub fn event_json(e: &Event) -> Value {
    match e {
        Event::Secure { instance, fingerprint, ssid, refreshed, version, .. } => json!({
            "type": "secure", "instance": instance.get(), "fingerprint": hex(&fingerprint.0),
            "ssid": hex(&ssid.0), "refreshed": refreshed, "version": version,
        }),
        Event::Message { instance, text, encrypted } => json!({
            "type": "message", "instance": instance.map(InstanceTag::get), "text": text, "encrypted": encrypted,
        }),
        Event::RemoteEnded { instance } => json!({ "type": "remote_ended", "instance": instance.get() }),
        Event::Ended { instance } => json!({ "type": "ended", "instance": instance.get() }),
        Event::UnencryptedReceived { text } => json!({ "type": "unencrypted_received", "text": text }),
        Event::ExtraSymmetricKey { instance, key, use_, usedata } => json!({
            "type": "extra_symmetric_key", "instance": instance.get(), "key": hex(&key[..]),
            "use": use_, "usedata": hex(usedata),
        }),
        Event::SmpRequest { instance, question } => {
            json!({ "type": "smp_request", "instance": instance.get(), "question": question })
        }
        Event::SmpSucceeded { instance, fingerprint } => json!({
            "type": "smp_succeeded", "instance": instance.get(), "fingerprint": hex(&fingerprint.0),
        }),
        Event::SmpFailed { instance } => json!({ "type": "smp_failed", "instance": instance.get() }),
        Event::SmpAborted { instance, cheated } => {
            json!({ "type": "smp_aborted", "instance": instance.get(), "cheated": cheated })
        }
        Event::ErrorReceived { text } => json!({ "type": "error_received", "text": text }),
        Event::DowngradeRefused { fingerprint } => {
            json!({ "type": "downgrade_refused", "fingerprint": hex(&fingerprint.0) })
        }
        other => json!({ "type": "unknown", "debug": format!("{other:?}") }),
    }
}

/// A trace as JSON.
pub fn trace_json(t: &Trace) -> Value {
    let instance = t.instance.get();
    match &t.value {
        Computed::AkeKeys {
            our_private,
            our_public,
            their_public,
            shared_secret,
            ssid,
            c,
            c_prime,
            m1,
            m2,
            m1_prime,
            m2_prime,
        } => json!({
            "type": "ake_keys", "instance": instance,
            "our_private": hex(our_private), "our_public": hex(our_public),
            "their_public": hex(their_public), "shared_secret": hex(shared_secret),
            "ssid": hex(ssid), "c": hex(c), "c_prime": hex(c_prime),
            "m1": hex(m1), "m2": hex(m2), "m1_prime": hex(m1_prime), "m2_prime": hex(m2_prime),
        }),
        Computed::DhKey { keyid, private, public } => json!({
            "type": "dh_key", "instance": instance, "keyid": keyid,
            "private": hex(private), "public": hex(public),
        }),
        Computed::SessionKeys {
            our_keyid,
            their_keyid,
            shared_secret,
            send_aes,
            send_mac,
            recv_aes,
            recv_mac,
            extra,
        } => json!({
            "type": "session_keys", "instance": instance,
            "our_keyid": our_keyid, "their_keyid": their_keyid,
            "shared_secret": hex(shared_secret),
            "send_aes": hex(send_aes), "send_mac": hex(send_mac),
            "recv_aes": hex(recv_aes), "recv_mac": hex(recv_mac), "extra": hex(extra),
        }),
        Computed::SmpSecret { initiator, responder, ssid, user_secret, secret } => json!({
            "type": "smp_secret", "instance": instance,
            "initiator": hex(initiator), "responder": hex(responder), "ssid": hex(ssid),
            "user_secret": hex(user_secret), "secret": hex(secret),
        }),
        other => json!({ "type": "unknown", "debug": format!("{other:?}") }),
    }
}

/// Runs `action` on `party` at `now` and returns the step's outputs (the [`OUTPUTS`] fields).
pub fn perform(party: &mut Party, now: u64, action: &Action) -> Map<String, Value> {
    let t = Timestamp(now);
    let s = &mut party.session;
    let rng = &mut party.rng;
    let ok = || Value::String("ok".into());
    let result = match action {
        Action::Start => {
            s.start(t);
            ok()
        }
        Action::Send(text) => match s.send(t, text) {
            Ok(Sent::Encrypted) => json!({ "ok": "encrypted" }),
            Ok(Sent::Plaintext) => json!({ "ok": "plaintext" }),
            Ok(Sent::Held) => json!({ "ok": "held" }),
            Ok(other) => json!({ "ok": format!("{other:?}") }),
            Err(e) => send_error_json(&e),
        },
        Action::End => {
            s.end(t);
            ok()
        }
        Action::Receive { message, .. } => match s.receive(t, message, rng) {
            Ok(()) => ok(),
            Err(e) => receive_error_json(&e),
        },
        Action::SmpStart { question, secret } => {
            match s.smp_start(t, question.as_deref(), secret.as_bytes(), rng) {
                Ok(()) => ok(),
                Err(e) => send_error_json(&e),
            }
        }
        Action::SmpRespond(secret) => match s.smp_respond(t, secret.as_bytes(), rng) {
            Ok(()) => ok(),
            Err(e) => send_error_json(&e),
        },
        Action::SmpAbort => {
            s.smp_abort(t);
            ok()
        }
        Action::ExtraSymmetricKey { use_, usedata } => match s.extra_symmetric_key(t, *use_, usedata) {
            Ok(key) => json!({ "ok": { "key": hex(&key[..]) } }),
            Err(e) => send_error_json(&e),
        },
        Action::HandleTimeout => {
            s.handle_timeout(t);
            ok()
        }
    };
    let mut transmit = Vec::new();
    while let Some(m) = s.poll_transmit() {
        transmit.push(Value::String(m.message));
    }
    let mut events = Vec::new();
    while let Some(e) = s.poll_event() {
        events.push(event_json(&e));
    }
    let mut trace = Vec::new();
    while let Some(x) = s.poll_trace() {
        trace.push(trace_json(&x));
    }
    let mut out = Map::new();
    out.insert("result".into(), result);
    out.insert("random".into(), Value::String(hex(&rng.take())));
    out.insert("transmit".into(), Value::Array(transmit));
    out.insert("events".into(), Value::Array(events));
    out.insert("trace".into(), Value::Array(trace));
    out.insert("next_timeout".into(), s.poll_timeout().map_or(Value::Null, |t| json!(t.0)));
    out
}

/// Where a replay first differed from the transcript.
#[derive(Debug)]
pub struct Divergence {
    /// Index into `steps`.
    pub step: usize,
    /// The step's party and action, for people.
    pub what: String,
    /// The field, e.g. `transmit[1]` or `events[0]`.
    pub field: String,
    /// What the transcript says.
    pub expected: Value,
    /// What the engine did.
    pub actual: Value,
}

/// Why a replay failed.
#[derive(Debug)]
pub enum ReplayError {
    /// The file is not a valid transcript.
    Format(String),
    /// The engine did something else.
    Diverged(Box<Divergence>),
}

impl std::fmt::Display for ReplayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format(m) => write!(f, "not a valid transcript: {m}"),
            Self::Diverged(d) => write!(f, "step {} ({}): {} differs", d.step, d.what, d.field),
        }
    }
}

/// The first place two values differ, as a path below `path` and the two sub-values.
fn first_difference(path: &str, expected: &Value, actual: &Value) -> Option<(String, Value, Value)> {
    if expected == actual {
        return None;
    }
    if let (Value::Array(e), Value::Array(a)) = (expected, actual) {
        for i in 0..e.len().max(a.len()) {
            match (e.get(i), a.get(i)) {
                (Some(x), Some(y)) => {
                    if let Some(d) = first_difference(&format!("{path}[{i}]"), x, y) {
                        return Some(d);
                    }
                }
                (x, y) => {
                    let missing = || Value::String("(nothing)".into());
                    return Some((
                        format!("{path}[{i}]"),
                        x.cloned().unwrap_or_else(missing),
                        y.cloned().unwrap_or_else(missing),
                    ));
                }
            }
        }
    }
    if let (Value::Object(e), Value::Object(a)) = (expected, actual) {
        for k in e.keys().chain(a.keys()) {
            let (x, y) = (e.get(k).unwrap_or(&Value::Null), a.get(k).unwrap_or(&Value::Null));
            if let Some(d) = first_difference(&format!("{path}.{k}"), x, y) {
                return Some(d);
            }
        }
    }
    Some((path.to_string(), expected.clone(), actual.clone()))
}

/// The two parties of a transcript, built fresh.
///
/// # Errors
/// When the `parties` object is malformed.
pub fn parties(v: &Value) -> Result<Vec<Party>, String> {
    let ps = field(v, "parties")?.as_object().ok_or("parties is not an object")?;
    ps.iter().map(|(name, p)| PartySpec::from_json(name, p)?.build()).collect()
}

/// Replays a whole transcript with fresh sessions; returns how many steps matched.
///
/// # Errors
/// [`ReplayError`] at the first step whose outputs differ from the transcript.
pub fn replay(v: &Value) -> Result<usize, ReplayError> {
    let format = v.get("format").and_then(Value::as_str);
    if format != Some(FORMAT) {
        return Err(ReplayError::Format(format!("format is {format:?}, expected {FORMAT:?}")));
    }
    let mut parties = parties(v).map_err(ReplayError::Format)?;
    let steps = field(v, "steps").and_then(|s| s.as_array().ok_or("steps is not an array".into()));
    let steps = steps.map_err(ReplayError::Format)?;
    for (i, step) in steps.iter().enumerate() {
        let bad = |m: String| ReplayError::Format(format!("step {i}: {m}"));
        let name = str_field(step, "party").map_err(bad)?;
        let now = u64_field(step, "at").map_err(bad)?;
        let action = Action::from_json(field(step, "action").map_err(bad)?).map_err(bad)?;
        let what = format!("{name} {}", summary(&action));
        if let Action::Receive { message, origin: Origin::Transmit { step: from, index } } = &action {
            let sent = steps.get(*from).filter(|_| *from < i).and_then(|s| s.get("transmit")?.get(*index));
            let sender = steps.get(*from).and_then(|s| s.get("party")?.as_str());
            if sent.and_then(Value::as_str) != Some(message.as_str()) || sender == Some(name) {
                return Err(bad(format!("receives a message that is not step {from}'s transmit[{index}]")));
            }
        }
        let party =
            parties.iter_mut().find(|p| p.name == name).ok_or_else(|| bad(format!("no party {name:?}")))?;
        let out = perform(party, now, &action);
        for key in OUTPUTS {
            let expected = step.get(key).unwrap_or(&Value::Null);
            let actual = out.get(key).unwrap_or(&Value::Null);
            if let Some((field, expected, actual)) = first_difference(key, expected, actual) {
                return Err(ReplayError::Diverged(Box::new(Divergence {
                    step: i,
                    what,
                    field,
                    expected,
                    actual,
                })));
            }
        }
    }
    Ok(steps.len())
}

/// A short description of an action, for people.
pub fn summary(a: &Action) -> String {
    match a {
        Action::Start => "start".into(),
        Action::Send(t) => format!("send {t:?}"),
        Action::End => "end".into(),
        Action::Receive { origin: Origin::Transmit { step, index }, .. } => {
            format!("receive step {step}'s transmit[{index}]")
        }
        Action::Receive { origin: Origin::Crafted(how), .. } => format!("receive crafted: {how}"),
        Action::SmpStart { question, .. } => format!("smp_start question={question:?}"),
        Action::SmpRespond(_) => "smp_respond".into(),
        Action::SmpAbort => "smp_abort".into(),
        Action::ExtraSymmetricKey { use_, .. } => format!("extra_symmetric_key use={use_}"),
        Action::HandleTimeout => "handle_timeout".into(),
    }
}
