//! The chat-pair demo: an embedded relay on 127.0.0.1, alice on async-std (otr-futures over
//! the relay client's futures-io TLS) and bob on tokio (otr-tokio over its tokio TLS), both requiring
//! encryption. They run the AKE, verify each other with SMP, talk, derive the extra symmetric
//! key and end the conversation; every step is written to a transcript and checked.
//!
//! Shared by `examples/chat-pair.rs` (prints it) and `tests/chat_pair.rs` (asserts it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otr::terminal::Escaped;
use otr::{DsaKeyPair, Event, Fingerprint, InstanceTag, Policy, Session, SessionConfig};
use otr_futures::{Conversation, Update};
use otr_relay::accounts::{self, Argon2Params};
use otr_relay::{Observer, Server, ServerConfig, StoreEvent};
use otr_relay_client::ClientConfig;
use otr_relay_client::futures_client::{RelayFraming, connect_tls};
use sha2::{Digest, Sha256};

/// The SMP question and the answer both know.
const QUESTION: &str = "Where did we first meet?";
const ANSWER: &str = "the lighthouse café";
/// What alice says (one line at a time, each after bob answered the previous one).
const ALICE_LINES: [&str; 3] = [
    "Hi Bob! Is this channel private?",
    "Good, we're verified. The meeting moved to Thursday.",
    "I'll derive a key for the file from this conversation.",
];
/// What bob answers to each.
const BOB_LINES: [&str; 3] =
    ["Hi Alice. It is now: nobody but us can read this.", "Thursday works for me.", "Ready for it."];
/// What the application uses the extra symmetric key for (an example use number and data).
const SYMKEY_USE: u32 = 1;
const SYMKEY_USEDATA: &[u8] = b"notes-thursday.txt";
/// The whole demo must finish within this.
const DEADLINE: Duration = Duration::from_secs(30);

/// Why the demo could not run at all (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A temporary directory or thread.
    #[error("setup: {0}")]
    Io(#[from] std::io::Error),
    /// The relay server.
    #[error("relay: {0}")]
    Relay(#[from] otr_relay::ServerError),
    /// An account could not be created.
    #[error("relay accounts: {0}")]
    Accounts(#[from] otr_relay::accounts::AccountError),
    /// A relay client.
    #[error("relay client: {0}")]
    Client(#[from] otr_relay_client::ClientError),
    /// A conversation (alice's otr-futures or bob's otr-tokio: one error type, the driver's).
    #[error("conversation: {0}")]
    Conversation(#[from] otr_futures::Error<otr_relay_client::ClientError>),
    /// The engine refused an action.
    #[error("OTR: {0}")]
    Send(#[from] otr::SendError),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// A peer's thread or task failed.
    #[error("{0}")]
    Peer(String),
}

/// The transcript: lines stamped with the time since the start, optionally echoed live.
pub struct Transcript {
    start: Instant,
    echo: bool,
    lines: Mutex<Vec<String>>,
}

impl Transcript {
    fn new(echo: bool) -> Arc<Self> {
        Arc::new(Self { start: Instant::now(), echo, lines: Mutex::new(Vec::new()) })
    }

    fn say(&self, who: &str, what: impl AsRef<str>) {
        let ms = self.start.elapsed().as_millis();
        let line = format!("{:>4}.{:03}s  {who:<6} {}", ms / 1000, ms % 1000, what.as_ref());
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if self.echo {
            println!("{line}");
        }
        lines.push(line);
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// One check and whether it passed.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
}

/// What the demo found.
pub struct Outcome {
    /// The transcript.
    pub transcript: Arc<Transcript>,
    /// Every check, in order.
    pub checks: Vec<Check>,
}

impl Outcome {
    /// True when every check passed.
    pub fn all_passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// What one side saw.
#[derive(Default)]
struct Seen {
    own: Option<Fingerprint>,
    peer: Option<Fingerprint>,
    ssid: Option<String>,
    smp_succeeded: Option<Fingerprint>,
    received: Vec<(String, bool)>,
    symkey: Option<[u8; 32]>,
    ended: bool,
    wire_out: Vec<String>,
}

/// Libotr's way of showing a fingerprint: five groups of eight upper-case hex digits.
fn show_fp(fp: &Fingerprint) -> String {
    fp.to_human()
}

/// `?OTR:AAMDlw3Q…Fj5Q=. (1234 chars)`: the start and end of a transport message.
fn abbreviate(msg: &str) -> String {
    // A query message carries a human-readable line after the tag; show the tag.
    let msg = msg.lines().next().unwrap_or_default();
    if msg.chars().count() <= 48 {
        return msg.to_string();
    }
    let head: String = msg.chars().take(28).collect();
    let tail: String = msg.chars().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{head}…{tail} ({} chars)", msg.len())
}

/// What kind of OTR message `msg` is, read from its outside with [`otr::inspect`]; for data
/// messages the key ids in the header (they show the keys rotating).
fn describe(msg: &str) -> (String, Option<(u32, u32)>) {
    use otr::MessageKind as K;
    let name = match otr::inspect(msg) {
        K::Query => "query: let's talk OTR v3",
        K::DhCommit => "AKE 1/4 D-H Commit",
        K::DhKey => "AKE 2/4 D-H Key",
        K::RevealSignature => "AKE 3/4 Reveal Signature",
        K::Signature => "AKE 4/4 Signature",
        K::Data { sender_keyid, recipient_keyid, ignore_unreadable } => {
            let control = if ignore_unreadable { ", control" } else { "" };
            let name = format!("data, sender key #{sender_keyid} recipient key #{recipient_keyid}{control}");
            return (name, Some((sender_keyid, recipient_keyid)));
        }
        K::Fragment => "fragment",
        K::Error => "OTR error",
        K::Plaintext { .. } => "PLAINTEXT",
        K::Malformed => "undecodable",
        _ => "unknown type",
    };
    (name.into(), None)
}

/// Logs a transport message going out, and a key rotation when its key id changed.
fn log_wire(t: &Transcript, who: &str, peer: &str, msg: &str, last_keyid: &mut Option<u32>) {
    let (kind, keys) = describe(msg);
    t.say(who, format!("→ relay → {peer}  [{kind}]  {}", abbreviate(msg)));
    if let Some((ours, _)) = keys {
        if last_keyid.is_some_and(|k| k != ours) {
            t.say(who, format!("   keys rotated: {who} now encrypts with its DH key #{ours}"));
        }
        *last_keyid = Some(ours);
    }
}

fn log_event(t: &Transcript, who: &str, e: &Event) {
    match e {
        Event::Secure { fingerprint, ssid, bold, refreshed, .. } => t.say(
            who,
            format!(
                "PRIVATE{} — peer's fingerprint {}  (session id {}: read out the bracketed half)",
                if *refreshed { " (refreshed)" } else { "" },
                show_fp(fingerprint),
                ssid.marked(*bold)
            ),
        ),
        // What the peer wrote is Escaped: its control characters cannot draw on the terminal.
        Event::Message { text, encrypted: true, .. } => {
            t.say(who, format!("reads (encrypted): \"{}\"", Escaped(text)))
        }
        Event::Message { text, encrypted: false, .. } => {
            t.say(who, format!("reads PLAINTEXT: \"{}\"", Escaped(text)))
        }
        Event::SmpRequest { question, .. } => t.say(
            who,
            format!("is asked (SMP): \"{}\"", Escaped(question.as_deref().unwrap_or("(no question)"))),
        ),
        Event::SmpSucceeded { fingerprint, .. } => {
            t.say(who, format!("SMP succeeded: {} is verified", show_fp(fingerprint)))
        }
        Event::SmpFailed { .. } => t.say(who, "SMP FAILED: the answers differ"),
        Event::SmpAborted { cheated, .. } => t.say(who, format!("SMP aborted (cheating: {cheated})")),
        Event::ExtraSymmetricKey { key, use_, usedata, .. } => t.say(
            who,
            format!(
                "got the extra symmetric key (use {use_}, \"{}\"): sha256 {}",
                String::from_utf8_lossy(usedata),
                short_hash(key)
            ),
        ),
        Event::RemoteEnded { .. } => t.say(who, "the peer ended the private conversation"),
        Event::Ended { .. } => t.say(who, "private conversation ended"),
        other => t.say(who, format!("{other:?}")),
    }
}

/// The first 8 bytes of SHA-256 of a key, in hex: enough to compare, useless to an attacker.
fn short_hash(key: &[u8; 32]) -> String {
    Sha256::digest(key).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn new_session(name: &str, rng: &mut otr::SystemRng) -> Session {
    let tag = InstanceTag::random(rng);
    Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), DsaKeyPair::generate(rng))
}

/// Alice: async-std, otr-futures over the relay's futures-io client.
async fn alice(config: ClientConfig, t: Arc<Transcript>) -> Result<Seen, DemoError> {
    let mut rng = otr::system_rng();
    let session = new_session("alice", &mut rng);
    let mut seen = Seen { own: Some(session.identity().fingerprint()), ..Seen::default() };
    t.say("alice", format!("my fingerprint {}", show_fp(&session.identity().fingerprint())));
    let tcp = async_std::net::TcpStream::connect(&config.server).await?;
    let tls = connect_tls(tcp, &config.server, config.pin).await?;
    t.say("alice", "connected to the relay (TLS 1.3, certificate matches the pin); async-std + otr-futures");
    let framing = RelayFraming::new(&config, "bob");
    let mut conv = Conversation::new(session, tls, framing, otr::system_rng())?.with_wire_tap(true);
    let mut last_keyid = None;
    let mut next_line = 0;
    let mut verified = false;
    let mut replies = 0;
    let sent = conv.send(ALICE_LINES[0]).await?;
    t.say("alice", format!("types \"{}\" → held until private ({sent:?}); asks bob for OTR", ALICE_LINES[0]));
    next_line += 1;
    loop {
        let update = conv.next_event().await?;
        let event = match update {
            Update::Sent(m) => {
                log_wire(&t, "alice", "bob", &m, &mut last_keyid);
                seen.wire_out.push(m);
                continue;
            }
            Update::Received(_) => continue, // bob logs what he sends
            Update::Refused(e) => {
                t.say("alice", format!("refused a message: {e}"));
                continue;
            }
            Update::Event(e) => e,
            _ => continue,
        };
        log_event(&t, "alice", &event);
        match event {
            Event::Secure { fingerprint, ssid, .. } => {
                seen.peer = Some(fingerprint);
                seen.ssid = Some(ssid.to_string());
                t.say("alice", format!("asks bob (SMP): \"{QUESTION}\" (secret: \"{ANSWER}\")"));
                conv.smp_start(Some(QUESTION), ANSWER.as_bytes()).await?;
            }
            Event::SmpSucceeded { fingerprint, .. } => {
                seen.smp_succeeded = Some(fingerprint);
                verified = true;
            }
            Event::SmpFailed { .. } | Event::SmpAborted { .. } => {
                return Err(DemoError::Peer("SMP did not succeed".into()));
            }
            Event::Message { text, encrypted, .. } => {
                seen.received.push((text, encrypted));
                replies += 1;
            }
            Event::Ended { .. } => {
                seen.ended = true;
                break;
            }
            _ => {}
        }
        if verified && replies == next_line {
            if next_line < ALICE_LINES.len() {
                t.say("alice", format!("types \"{}\"", ALICE_LINES[next_line]));
                conv.send(ALICE_LINES[next_line]).await?;
                next_line += 1;
            } else if seen.symkey.is_none() {
                let key = conv.extra_symmetric_key(SYMKEY_USE, SYMKEY_USEDATA).await?;
                t.say(
                    "alice",
                    format!(
                        "derived the extra symmetric key for \"{}\": sha256 {}",
                        String::from_utf8_lossy(SYMKEY_USEDATA),
                        short_hash(&key)
                    ),
                );
                seen.symkey = Some(*key);
                t.say("alice", "/end");
                conv.end().await?;
            }
        }
    }
    conv.close().await?;
    Ok(seen)
}

/// Bob: tokio, otr-tokio over the relay client's tokio TLS connection.
async fn bob(config: ClientConfig, t: Arc<Transcript>) -> Result<Seen, DemoError> {
    let mut rng = otr::system_rng();
    let session = new_session("bob", &mut rng);
    let mut seen = Seen { own: Some(session.identity().fingerprint()), ..Seen::default() };
    t.say("bob", format!("my fingerprint {}", show_fp(&session.identity().fingerprint())));
    let tls = otr_relay_client::tokio_client::connect_tls(&config.server, config.pin).await?;
    t.say("bob", "connected to the relay (TLS 1.3, certificate matches the pin); tokio + otr-tokio");
    let framing = RelayFraming::new(&config, "alice");
    let mut conv = otr_tokio::Conversation::new(session, tls, framing, rng)?.with_wire_tap(true);
    let mut last_keyid = None;
    let mut replied = 0;
    while !seen.ended {
        let update = match tokio::time::timeout(DEADLINE, conv.next_event()).await {
            Ok(update) => update?,
            Err(_) => return Err(DemoError::Timeout("bob heard nothing")),
        };
        let event = match update {
            Update::Sent(m) => {
                log_wire(&t, "bob", "alice", &m, &mut last_keyid);
                seen.wire_out.push(m);
                continue;
            }
            Update::Received(_) => continue, // alice logs what she sends
            Update::Refused(e) => {
                t.say("bob", format!("refused a message: {e}"));
                continue;
            }
            Update::Event(e) => e,
            _ => continue,
        };
        log_event(&t, "bob", &event);
        match event {
            Event::Secure { fingerprint, ssid, .. } => {
                seen.peer = Some(fingerprint);
                seen.ssid = Some(ssid.to_string());
            }
            Event::SmpRequest { .. } => {
                t.say("bob", format!("answers \"{ANSWER}\""));
                conv.smp_respond(ANSWER.as_bytes()).await?;
            }
            Event::SmpSucceeded { fingerprint, .. } => seen.smp_succeeded = Some(fingerprint),
            Event::Message { text, encrypted, .. } => {
                seen.received.push((text, encrypted));
                if let Some(line) = BOB_LINES.get(replied) {
                    t.say("bob", format!("types \"{line}\""));
                    conv.send(line).await?;
                    replied += 1;
                }
            }
            Event::ExtraSymmetricKey { key, .. } => seen.symkey = Some(*key),
            Event::RemoteEnded { .. } => {
                seen.ended = true;
                t.say("bob", "/end (acknowledges the end)");
                conv.end().await?;
            }
            _ => {}
        }
    }
    conv.close().await?;
    Ok(seen)
}

/// A temporary data directory for the relay, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the whole demo; `echo` prints the transcript as it happens.
///
/// # Errors
/// [`DemoError`] when the demo could not run to the end (a failed check is not an error:
/// see [`Outcome::checks`]).
pub fn run(echo: bool) -> Result<Outcome, DemoError> {
    let t = Transcript::new(echo);
    let dir =
        TempDir(std::env::temp_dir().join(format!("otr-chat-pair-{}-{}", std::process::id(), rand_suffix())));
    std::fs::create_dir_all(&dir.0)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let checks = rt.block_on(async { run_on(&t, &dir.0).await })?;
    drop(rt);
    Ok(Outcome { transcript: t, checks })
}

/// Tells apart two runs in one process (the test and the example may run side by side).
fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

async fn run_on(t: &Arc<Transcript>, dir: &std::path::Path) -> Result<Vec<Check>, DemoError> {
    // The relay: fresh certificate in a fresh directory, on an ephemeral port of 127.0.0.1.
    for name in ["alice", "bob"] {
        accounts::add_account(dir, name, &format!("demo secret of {name}"), Argon2Params::TEST)?;
    }
    let mut config = ServerConfig::new("127.0.0.1:0".parse().map_err(std::io::Error::other)?, dir);
    config.argon2 = Argon2Params::TEST;
    let bodies: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
    let relay_log = t.clone();
    config.observer = Some(Observer::new(move |e| {
        let mut held = bodies.lock().unwrap_or_else(|p| p.into_inner());
        match e {
            StoreEvent::Stored { seq, from, to, bytes } => {
                held.insert(seq, bytes);
                relay_log.say(
                    "relay",
                    format!("stored #{seq} {from}→{to} ({bytes} bytes on disk; holds {})", held.len()),
                );
            }
            StoreEvent::Delivered { seq, to } => relay_log.say("relay", format!("delivered #{seq} to {to}")),
            StoreEvent::Deleted { seq, to } => {
                held.remove(&seq);
                relay_log
                    .say("relay", format!("deleted #{seq}: {to} acknowledged it (holds {})", held.len()));
            }
            StoreEvent::Expired { count } => relay_log.say("relay", format!("expired {count} messages")),
            _ => {}
        }
    }));
    let server = Server::bind(config).await?;
    let handle = server.spawn()?;
    t.say(
        "relay",
        format!("listening on {} (TLS 1.3); certificate SHA-256 {}", handle.addr(), handle.fingerprint()),
    );
    t.say("relay", "both clients pin that fingerprint; both require encryption (Policy::ALWAYS)");
    let client_config = |name: &str| {
        ClientConfig::new(
            handle.addr().to_string(),
            handle.fingerprint(),
            name,
            format!("demo secret of {name}"),
        )
    };

    // Bob on this tokio runtime, alice on an async-std thread.
    let bob_task = tokio::spawn(bob(client_config("bob"), t.clone()));
    let alice_config = client_config("alice");
    let alice_t = t.clone();
    let alice_thread = std::thread::spawn(move || async_std::task::block_on(alice(alice_config, alice_t)));
    let bob_seen = match tokio::time::timeout(DEADLINE, bob_task).await {
        Err(_) => return Err(DemoError::Timeout("the conversation did not finish in 30 s")),
        Ok(Err(e)) => return Err(DemoError::Peer(format!("bob's task failed: {e}"))),
        Ok(Ok(r)) => r?,
    };
    let alice_seen = tokio::task::spawn_blocking(move || alice_thread.join())
        .await
        .map_err(|e| DemoError::Peer(format!("alice's thread: {e}")))?
        .map_err(|_| DemoError::Peer("alice's thread panicked".into()))??;

    // Late acks: give the relay a moment to delete what was acknowledged last.
    let mut stored = handle.stored_messages()?;
    for _ in 0..50 {
        if stored == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stored = handle.stored_messages()?;
    }
    handle.shutdown().await?;
    t.say("relay", format!("shut down; it holds {stored} messages"));
    Ok(checks(&alice_seen, &bob_seen, stored))
}

fn checks(a: &Seen, b: &Seen, stored: u64) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |what: String, passed: bool| out.push(Check { what, passed });
    check("alice saw bob's real fingerprint".into(), a.peer.is_some() && a.peer == b.own);
    check("bob saw alice's real fingerprint".into(), b.peer.is_some() && b.peer == a.own);
    check("both saw the same session id".into(), a.ssid.is_some() && a.ssid == b.ssid);
    check(
        "SMP succeeded for alice, verifying bob's fingerprint".into(),
        a.smp_succeeded.is_some() && a.smp_succeeded == b.own,
    );
    check(
        "SMP succeeded for bob, verifying alice's fingerprint".into(),
        b.smp_succeeded.is_some() && b.smp_succeeded == a.own,
    );
    let intact = |got: &[(String, bool)], want: &[&str]| {
        got.len() == want.len() && got.iter().zip(want).all(|((text, enc), w)| *enc && text == w)
    };
    check(
        format!("bob got alice's {} messages intact, each encrypted", ALICE_LINES.len()),
        intact(&b.received, &ALICE_LINES),
    );
    check(
        format!("alice got bob's {} messages intact, each encrypted", BOB_LINES.len()),
        intact(&a.received, &BOB_LINES),
    );
    let wire_clean =
        a.wire_out.iter().chain(&b.wire_out).all(|m| {
            m.starts_with("?OTR") && !ALICE_LINES.iter().chain(&BOB_LINES).any(|line| m.contains(line))
        });
    check(
        "the relay carried only OTR messages, never the plaintext".into(),
        wire_clean && !a.wire_out.is_empty(),
    );
    check("both derived the same extra symmetric key".into(), a.symkey.is_some() && a.symkey == b.symkey);
    check("alice ended the conversation and bob saw it end".into(), a.ended && b.ended);
    check("the relay deleted every message once acknowledged".into(), stored == 0);
    out
}
