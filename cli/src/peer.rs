//! A stdio peer speaking `peer-protocol.md`: one OTR account talking to one remote account,
//! driven line by line, so any harness can run our engine against another implementation.
//!
//! ```text
//! cargo run --example otr-peer -- --account alice --peer bob [--keyfile PATH]
//!     [--policy always|opportunistic|manual] [--max-msg-size N] [--allow-v2]
//! ```

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use otr::{Event, InstanceTag, Policy, Sent, Session, SessionConfig, Timestamp};

const USAGE: &str = "usage: otr-peer --account NAME --peer NAME [--keyfile PATH] \
[--policy always|opportunistic|manual] [--max-msg-size N] [--allow-v2]";

struct Args {
    account: String,
    keyfile: Option<PathBuf>,
    policy: Policy,
    max_msg_size: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut account = None;
    let mut peer = None;
    let mut keyfile = None;
    let mut policy = Policy::OPPORTUNISTIC;
    let mut max_msg_size = 0;
    let mut allow_v2 = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--account" => account = Some(value()?),
            "--peer" => peer = Some(value()?),
            "--keyfile" => keyfile = Some(PathBuf::from(value()?)),
            "--policy" => {
                policy = match value()?.as_str() {
                    "always" => Policy::ALWAYS,
                    "opportunistic" => Policy::OPPORTUNISTIC,
                    "manual" => Policy::MANUAL,
                    other => return Err(format!("unknown policy {other:?}\n{USAGE}")),
                }
            }
            "--max-msg-size" => {
                max_msg_size = value()?.parse().map_err(|_| {
                    format!(
                        "--max-msg-size needs a number
{USAGE}"
                    )
                })?;
            }
            "--allow-v2" => allow_v2 = true,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let account = account.ok_or(format!("--account is required\n{USAGE}"))?;
    peer.ok_or(format!("--peer is required\n{USAGE}"))?;
    let policy = if allow_v2 { policy | Policy::ALLOW_V2 } else { policy };
    Ok(Args { account, keyfile, policy, max_msg_size })
}

struct Peer {
    session: Session,
    rng: otr::SystemRng,
    start: Instant,
    out: io::StdoutLock<'static>,
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

    fn drain(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            let l = format!("net {}", B64.encode(t.message));
            self.line(&l);
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

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut rng = otr::system_rng();
    let key = match &args.keyfile {
        Some(path) => match otr::keyfile::load_or_generate(path, &mut rng) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("otr-peer: cannot use key file: {e}");
                return ExitCode::from(1);
            }
        },
        None => otr::DsaKeyPair::generate(&mut rng),
    };
    let mut config = SessionConfig::new(args.account, args.policy, InstanceTag::random(&mut rng));
    config.max_message_size = args.max_msg_size;
    let mut peer =
        Peer { session: Session::new(config, key), rng, start: Instant::now(), out: io::stdout().lock() };
    let fp = peer.session.identity().fingerprint();
    peer.line(&format!("ready {fp}"));
    // Read bytes, not `lines()`: a line that is not UTF-8 (a broken driver) must not end us.
    for line in io::stdin().lock().split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r');
        let (cmd, arg) = match line.split_once(' ') {
            Some((c, a)) => (c, Some(a)),
            None => (line, None),
        };
        if cmd == "quit" {
            break;
        }
        if cmd.is_empty() {
            continue;
        }
        if let Err(e) = peer.command(cmd, arg) {
            peer.drain();
            peer.line(&format!("error {}", one_line(&e)));
        }
        peer.drain();
    }
    ExitCode::SUCCESS
}
