//! `otr peer`: a stdio peer speaking `docs/peer-protocol.md` (the project's copy of the shared
//! peer protocol): one OTR account talking to one remote account, driven line by line, so
//! any harness can run our engine against another implementation. `cargo run --example
//! otr-peer -- ARGS` runs the same code.

use std::collections::VecDeque;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use otr::keystore::KdfParams;
use otr::{DsaKeyPair, Event, InstanceTag, Policy, Sent, Session, SessionConfig, SnapshotDir, Timestamp};

use crate::secrets::open_for_account;

mod relay;

/// The protocol name under which `otr peer --state-dir` keeps its account's key.
const PROTOCOL: &str = "otr-peer";

/// `otr peer`: the flags of the peer protocol's invocation, exactly.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Our account name (shown to the peer in query messages).
    #[arg(long, value_name = "NAME")]
    pub account: String,
    /// The remote account's name.
    #[arg(long, value_name = "NAME")]
    pub peer: String,
    /// Where the long-term DSA key is kept; a missing or empty file gets a new key
    /// [default: a fresh key, not kept]
    #[arg(long, value_name = "PATH")]
    pub keyfile: Option<PathBuf>,
    /// opportunistic: offer OTR and start it on a tag or error; always: also require
    /// encryption; manual: never start anything by itself.
    #[arg(long, value_enum, default_value_t = PolicyName::Opportunistic)]
    pub policy: PolicyName,
    /// The largest transport message in bytes; longer OTR messages are fragmented
    /// (0: no fragmentation).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub max_msg_size: usize,
    /// Also allow OTR version 2, for older clients (version 3 whenever both sides allow it).
    #[arg(long)]
    pub allow_v2: bool,
    /// Keep the private conversation in this directory, sealed with the passphrase in
    /// OTR_PASSPHRASE, and resume it at start (prints `resumed <fp> <ssid>` after `ready`).
    /// Without --keyfile the long-term key is kept there too.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Carry the transport messages through an otr-relay at HOST:PORT, logged in as
    /// --account, instead of `net` lines on stdio; reconnects by itself.
    #[arg(long, value_name = "HOST:PORT", requires_all = ["pin", "secret_file"])]
    pub relay: Option<String>,
    /// The relay certificate's SHA-256 (64 hex digits, colons allowed), as the relay prints it.
    #[arg(long, value_name = "SHA256HEX", requires = "relay")]
    pub pin: Option<otr_relay_client::CertFingerprint>,
    /// A file whose first line is --account's relay secret.
    #[arg(long, value_name = "FILE", requires = "relay")]
    pub secret_file: Option<PathBuf>,
    /// Register this push endpoint (UnifiedPush) with the relay: it posts a content-free
    /// wake-up there while this account has no live connection and messages wait.
    #[arg(long, value_name = "URL", requires = "relay")]
    pub push_endpoint: Option<String>,
}

/// The policies of the peer protocol's `--policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyName {
    /// Require encryption; start the AKE on a whitespace tag or an OTR error.
    Always,
    /// Offer OTR (whitespace tag); start the AKE on a tag or an OTR error.
    Opportunistic,
    /// Version 3 allowed, nothing started by itself.
    Manual,
}

impl Args {
    fn policy(&self) -> Policy {
        let policy = match self.policy {
            PolicyName::Always => Policy::ALWAYS,
            PolicyName::Opportunistic => Policy::OPPORTUNISTIC,
            PolicyName::Manual => Policy::MANUAL,
        };
        if self.allow_v2 { policy | Policy::ALLOW_V2 } else { policy }
    }
}

struct Peer {
    session: Session,
    rng: otr::SystemRng,
    start: Instant,
    out: io::StdoutLock<'static>,
    state: Option<State>,
    /// With a transport of our own (--relay): transmits wait here instead of `net` lines.
    outbox: Option<VecDeque<String>>,
}

/// Where `--state-dir` keeps the conversation.
struct State {
    snapshots: SnapshotDir,
    account: String,
    peer: String,
}

impl Peer {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn line(&mut self, s: &str) {
        // A closed stdout means the driver is gone; the process ends on the next read.
        let _ = writeln!(self.out, "{s}");
        let _ = self.out.flush();
    }

    /// Restores the conversation saved in --state-dir, if any: `resumed <fp> <ssid>`, or an
    /// `error` line and a fresh session when the saved one cannot be used.
    fn resume(&mut self, key: DsaKeyPair) {
        let Some(state) = &self.state else { return };
        let restored = match state.snapshots.load(&state.account, &state.peer) {
            Ok(None) => return,
            Ok(Some(bytes)) => {
                Session::restore(key, &bytes, 0, self.now(), &mut self.rng).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match restored {
            Ok(session) => {
                self.session = session;
                if let Some((_, their_key, ssid)) = self.session.private_with() {
                    let line = format!("resumed {} {ssid}", their_key.fingerprint());
                    self.line(&line);
                }
                // A new snapshot at once: restoring this one again would accept again what
                // arrives from now on.
                self.persist();
                self.drain();
            }
            Err(e) => self.line(&format!(
                "error the saved conversation cannot be resumed ({}); starting afresh",
                one_line(&e)
            )),
        }
    }

    /// Saves the private conversation in --state-dir after every change (keys rotate with
    /// every message), or deletes it once there is none.
    fn persist(&mut self) {
        let Some(state) = &self.state else { return };
        let snapshot = self.session.private_with().is_some().then(|| self.session.snapshot());
        let bytes = snapshot.as_ref().map(otr::Snapshot::as_bytes);
        if let Err(e) = state.snapshots.keep(&state.account, &state.peer, bytes, &mut self.rng) {
            self.line(&format!("error cannot save the conversation: {}", one_line(&e.to_string())));
        }
    }

    /// Handles one command line; false for `quit`.
    fn step(&mut self, line: &str) -> bool {
        let line = line.trim_end_matches('\r');
        let (cmd, arg) = match line.split_once(' ') {
            Some((c, a)) => (c, Some(a)),
            None => (line, None),
        };
        if cmd == "quit" {
            return false;
        }
        if cmd.is_empty() {
            return true;
        }
        self.timers();
        let result = self.command(cmd, arg);
        // Saved before anything is shown or sent: a crash after a text was shown must not
        // let the restored conversation accept that text again.
        self.persist();
        self.drain();
        if let Err(e) = result {
            self.line(&format!("error {}", one_line(&e)));
        }
        true
    }

    /// A transport message from the remote account, carried by our own transport.
    fn deliver(&mut self, msg: &str) {
        self.timers();
        let now = self.now();
        let result = self.session.receive(now, msg, &mut self.rng);
        self.persist();
        self.drain();
        if let Err(e) = result {
            self.line(&format!("error {}", one_line(&e.to_string())));
        }
    }

    /// A timer fell due with no command or message: run it and show what it did.
    fn tick(&mut self) {
        self.timers();
        self.persist();
        self.drain();
    }

    /// When `t` is, on tokio's clock.
    fn instant_of(&self, t: Timestamp) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start) + Duration::from_millis(t.0)
    }

    /// Runs the session's timers that fell due (heartbeats, resynchronisation, fragments).
    fn timers(&mut self) {
        let now = self.now();
        if self.session.poll_timeout().is_some_and(|due| due <= now) {
            self.session.handle_timeout(now);
        }
    }

    fn drain(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            match &mut self.outbox {
                Some(queue) => queue.push_back(t.message),
                None => {
                    let l = format!("net {}", B64.encode(t.message));
                    self.line(&l);
                }
            }
        }
        let mut ended = false;
        while let Some(e) = self.session.poll_event() {
            let l = match e {
                Event::Secure { fingerprint, ssid, .. } => format!("secure {fingerprint} {ssid}"),
                Event::Message { text, encrypted: true, .. } => format!("msg encrypted {}", B64.encode(text)),
                Event::Message { text, encrypted: false, .. } => format!("msg plain {}", B64.encode(text)),
                Event::RemoteEnded { .. } => "finished".into(),
                Event::Ended { .. } if ended => continue,
                Event::Ended { .. } => {
                    ended = true;
                    "insecure".into()
                }
                Event::UnencryptedReceived { .. } => {
                    "error received an unencrypted message; not shown".into()
                }
                Event::ExtraSymmetricKey { key, .. } => format!("symkey {}", hex(&key[..])),
                Event::SmpRequest { question: Some(q), .. } => format!("smp-request {}", B64.encode(q)),
                Event::SmpRequest { question: None, .. } => "smp-request -".into(),
                Event::SmpSucceeded { .. } => "smp-success".into(),
                Event::SmpFailed { .. } => "smp-failure".into(),
                Event::SmpAborted { .. } => "smp-aborted".into(),
                Event::ErrorReceived { text } => {
                    format!("error OTR error message received: {}", one_line(&text))
                }
                Event::DowngradeRefused { fingerprint } => format!(
                    "error refused a version 2 conversation with {fingerprint}, which spoke version 3 \
                     before: the network stripped the v3 offer"
                ),
                other => format!("# {other:?}"),
            };
            self.line(&l);
        }
    }

    fn command(&mut self, cmd: &str, arg: Option<&str>) -> Result<(), String> {
        let now = self.now();
        let text = || -> Result<String, String> {
            let b = B64.decode(arg.unwrap_or("")).map_err(|_| "argument is not base64".to_string())?;
            Ok(String::from_utf8_lossy(&b).into_owned())
        };
        match cmd {
            "net" => {
                let msg = text()?;
                self.session.receive(now, &msg, &mut self.rng).map_err(|e| e.to_string())?;
            }
            "send" => match self.session.send(now, &text()?) {
                Ok(Sent::Held) if self.session.policy().contains(Policy::REQUIRE_ENCRYPTION) => {
                    self.drain();
                    return Err(
                        "encryption is required: message held until the private conversation starts".into()
                    );
                }
                Ok(Sent::Held) => self.line("# message held until the key exchange completes"),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            },
            "query" => self.session.start(now),
            "end" => self.session.end(now),
            "symkey" => {
                let (use_, data) =
                    arg.and_then(|a| a.split_once(' ')).ok_or("usage: symkey <use> <b64usedata>")?;
                let use_: u32 = use_.parse().map_err(|_| "symkey: use must be a decimal 32-bit number")?;
                let key = self
                    .session
                    .extra_symmetric_key(now, use_, &decode(Some(data))?)
                    .map_err(|e| e.to_string())?;
                self.drain();
                self.line(&format!("symkey {}", hex(&key[..])));
            }
            "smp" => {
                let secret = decode(arg)?;
                self.session.smp_start(now, None, &secret, &mut self.rng).map_err(|e| e.to_string())?;
            }
            "smpq" => {
                let (q, secret) =
                    arg.and_then(|a| a.split_once(' ')).ok_or("usage: smpq <b64question> <b64secret>")?;
                let q = String::from_utf8_lossy(&decode(Some(q))?).into_owned();
                let secret = decode(Some(secret))?;
                self.session.smp_start(now, Some(&q), &secret, &mut self.rng).map_err(|e| e.to_string())?;
            }
            "smp-answer" => {
                let secret = decode(arg)?;
                self.session.smp_respond(now, &secret, &mut self.rng).map_err(|e| e.to_string())?;
            }
            "smp-abort" => {
                if self.session.private_with().is_none() {
                    return Err("there is no private conversation".into());
                }
                self.session.smp_abort(now);
            }
            other => return Err(format!("unknown command {other:?}")),
        }
        Ok(())
    }
}

fn decode(arg: Option<&str>) -> Result<Vec<u8>, String> {
    B64.decode(arg.ok_or("missing argument")?).map_err(|_| "argument is not base64".to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Runs the peer until `quit` or the end of stdin.
pub fn main(args: Args) -> ExitCode {
    let mut rng = otr::system_rng();
    let (key, state) = match identity_and_state(&args, &mut rng) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("otr peer: {e}");
            return ExitCode::from(1);
        }
    };
    let policy = args.policy();
    let mut config = SessionConfig::new(args.account.clone(), policy, InstanceTag::random(&mut rng));
    config.max_message_size = args.max_msg_size;
    let mut peer = Peer {
        session: Session::new(config, key.clone()),
        rng,
        start: Instant::now(),
        out: io::stdout().lock(),
        state,
        outbox: args.relay.is_some().then(VecDeque::new),
    };
    let fp = peer.session.identity().fingerprint();
    peer.line(&format!("ready {fp}"));
    peer.resume(key);
    if let Some(relay) = relay::Relay::from_args(&args) {
        return match relay {
            Ok(relay) => relay.run(peer),
            Err(e) => {
                eprintln!("otr peer: {e}");
                ExitCode::from(1)
            }
        };
    }
    // Read bytes, not `lines()`: a line that is not UTF-8 (a broken driver) must not end us.
    for line in io::stdin().lock().split(b'\n') {
        let Ok(line) = line else { break };
        if !peer.step(&String::from_utf8_lossy(&line)) {
            break;
        }
    }
    ExitCode::SUCCESS
}

/// The long-term key (from --keyfile, else from the key store in --state-dir, else fresh) and
/// the snapshot directory of --state-dir.
fn identity_and_state(args: &Args, rng: &mut otr::SystemRng) -> Result<(DsaKeyPair, Option<State>), String> {
    let store = match &args.state_dir {
        Some(dir) => {
            Some(open_for_account(&dir.join("keystore.otr"), &args.account, PROTOCOL, KdfParams::DEFAULT)?)
        }
        None => None,
    };
    let key = match (&args.keyfile, &store) {
        (Some(path), _) => {
            otr::keyfile::load_or_generate(path, rng).map_err(|e| format!("cannot use key file: {e}"))?
        }
        (None, Some(store)) => {
            store.keystore().account(&args.account, PROTOCOL).ok_or("the account vanished")?.key().clone()
        }
        (None, None) => DsaKeyPair::generate(rng),
    };
    let state = match (&args.state_dir, store) {
        (Some(dir), Some(store)) => Some(State {
            snapshots: SnapshotDir::new(&dir.join("conversations"), store.seal_key().clone())
                .map_err(|e| e.to_string())?,
            account: args.account.clone(),
            peer: args.peer.clone(),
        }),
        _ => None,
    };
    Ok((key, state))
}
