//! `libotr-peer`: a libotr 4.1 endpoint speaking the stdio peer protocol
//! (`shared/peer-protocol.md`) over stdin/stdout.
//!
//! ```text
//! libotr-peer --account NAME --peer NAME [--keyfile PATH]
//!             [--policy always|opportunistic|manual] [--max-msg-size N] [--allow-v2]
//! ```
//!
//! The key file is libotr's own `otr.private_key` format.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use otr_libotr_harness::{LibotrPeer, Output, PeerEvent, PeerPolicy};

struct Args {
    account: String,
    peer: String,
    keyfile: Option<PathBuf>,
    policy: PeerPolicy,
    max_msg_size: usize,
    allow_v2: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut account = None;
    let mut peer = None;
    let mut keyfile = None;
    let mut policy = PeerPolicy::Opportunistic;
    let mut max_msg_size = 0;
    let mut allow_v2 = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--account" => account = Some(value()?),
            "--peer" => peer = Some(value()?),
            "--keyfile" => keyfile = Some(PathBuf::from(value()?)),
            "--policy" => {
                let v = value()?;
                policy = PeerPolicy::parse(&v).ok_or(format!("unknown policy {v:?}"))?;
            }
            "--max-msg-size" => {
                let v = value()?;
                max_msg_size = v.parse().map_err(|_| format!("bad --max-msg-size {v:?}"))?;
            }
            "--allow-v2" => allow_v2 = true,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Args {
        account: account.ok_or("--account is required")?,
        peer: peer.ok_or("--peer is required")?,
        keyfile,
        policy,
        max_msg_size,
        allow_v2,
    })
}

/// Writes one protocol line and flushes it.
fn emit(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

fn format_output(o: Output) -> String {
    let ev = match o {
        Output::Net(m) => return format!("net {}", B64.encode(m)),
        Output::Event(ev) => ev,
    };
    match ev {
        PeerEvent::Secure { fingerprint, ssid } => format!("secure {fingerprint} {ssid}"),
        PeerEvent::Insecure => "insecure".into(),
        PeerEvent::Finished => "finished".into(),
        PeerEvent::Msg { encrypted, text } => {
            format!("msg {} {}", if encrypted { "encrypted" } else { "plain" }, B64.encode(text))
        }
        PeerEvent::SmpRequest(Some(q)) => format!("smp-request {}", B64.encode(q)),
        PeerEvent::SmpRequest(None) => "smp-request -".into(),
        PeerEvent::SmpSuccess => "smp-success".into(),
        PeerEvent::SmpFailure => "smp-failure".into(),
        PeerEvent::SmpAborted => "smp-aborted".into(),
        PeerEvent::Symkey(hex) => format!("symkey {hex}"),
        PeerEvent::Error(text) => format!("error {text}"),
        PeerEvent::Log(text) => format!("# {text}"),
    }
}

fn b64(arg: Option<&str>) -> Result<Vec<u8>, String> {
    let arg = arg.ok_or("missing argument")?;
    B64.decode(arg).map_err(|e| format!("bad base64: {e}"))
}

fn b64_text(arg: Option<&str>) -> Result<String, String> {
    String::from_utf8(b64(arg)?).map_err(|_| "text is not UTF-8".to_owned())
}

/// Runs one command line; `Ok(false)` means quit.
fn command(peer: &mut LibotrPeer, line: &str) -> Result<bool, String> {
    let mut words = line.split(' ');
    let cmd = words.next().unwrap_or_default();
    match cmd {
        "net" => peer.receive(&b64(words.next())?),
        "send" => peer.send(&b64_text(words.next())?),
        "query" => peer.query(),
        "end" => peer.end(),
        "smp" => peer.smp(None, &b64(words.next())?),
        "smpq" => {
            let question = b64_text(words.next())?;
            peer.smp(Some(&question), &b64(words.next())?);
        }
        "smp-answer" => peer.smp_answer(&b64(words.next())?),
        "smp-abort" => peer.smp_abort(),
        "symkey" => {
            let use_ = words.next().unwrap_or_default();
            let use_: u32 = use_.parse().map_err(|_| format!("bad use {use_:?}"))?;
            let usedata = match words.next() {
                None => Vec::new(),
                some => b64(some)?,
            };
            peer.symkey(use_, &usedata);
        }
        "quit" => return Ok(false),
        "" => {}
        _ => return Err(format!("unknown command {cmd:?}")),
    }
    Ok(true)
}

fn run(args: Args) -> std::io::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut peer = match LibotrPeer::new(
        &args.account,
        &args.peer,
        args.policy,
        args.allow_v2,
        args.max_msg_size,
        args.keyfile.as_deref(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("libotr-peer: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    emit(&mut out, &format!("ready {}", peer.fingerprint()))?;

    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    loop {
        while let Some(o) = peer.poll_output() {
            emit(&mut out, &format_output(o))?;
        }
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            return Ok(ExitCode::SUCCESS);
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        peer.poll_if_due();
        let line = String::from_utf8_lossy(&buf);
        match command(&mut peer, &line) {
            Ok(true) => {}
            Ok(false) => return Ok(ExitCode::SUCCESS),
            Err(e) => {
                while let Some(o) = peer.poll_output() {
                    emit(&mut out, &format_output(o))?;
                }
                emit(&mut out, &format!("error {e}"))?;
            }
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("libotr-peer: {e}");
            eprintln!(
                "usage: libotr-peer --account NAME --peer NAME [--keyfile PATH] \
                 [--policy always|opportunistic|manual] [--max-msg-size N] [--allow-v2]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => code,
        // stdout closed by the driver: nothing left to say.
        Err(_) => ExitCode::FAILURE,
    }
}
