//! `otr chat`: an interactive OTR chat through an otr-relay.
//!
//! The identity comes from the encrypted key store (`OTR_PASSPHRASE` or a prompt; the account
//! is created under protocol "otr-relay" if missing), the relay secret from
//! `OTR_RELAY_SECRET` or a prompt. The prompt always says whether the conversation is private
//! and verified. Commands: `/smp [QUESTION]`, `/answer SECRET`, `/fingerprint`, `/trust`,
//! `/start`, `/end`, `/quit`. `--ephemeral` keeps no input history and wipes the screen it
//! owns (and the terminal's scrollback) when the private conversation ends.
//!
//! Line editing is rustyline: it prints incoming messages above the line being typed (its
//! external printer), redraws the prompt with the current status each time (a helper's
//! `highlight_prompt`), and its history can be switched off entirely for `--ephemeral`.
//! [`client`] is the logic apart from the terminal.

pub mod client;

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use client::{Chat, Flow, Output, PROTOCOL};
use futures_lite::FutureExt;
use otr::keystore::KdfParams;
use otr::{InstanceTag, Policy, Session, SessionConfig, SnapshotDir, Timestamp};
use otr_futures::Conversation;
use otr_relay_client::futures_client::{RelayFraming, connect_tls};
use otr_relay_client::{CertFingerprint, ClientConfig};
use rustyline::ExternalPrinter;
use zeroize::Zeroizing;

use crate::secrets::{open_for_account, secret, store_path};

/// `otr chat`: chat privately with one account through an otr-relay.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The relay's address.
    #[arg(long, value_name = "HOST:PORT")]
    pub relay: String,
    /// The SHA-256 of the relay's certificate (64 hex digits, colons allowed), as the relay
    /// prints it at start.
    #[arg(long, value_name = "CERT_SHA256")]
    pub pin: CertFingerprint,
    /// Our account on the relay (its secret from OTR_RELAY_SECRET or a prompt).
    #[arg(long, value_name = "NAME")]
    pub account: String,
    /// The account to talk to.
    #[arg(long, value_name = "NAME")]
    pub peer: String,
    /// The key store: a file, or a directory that holds `keystore.otr`
    /// [default: $XDG_DATA_HOME/otr-rs/keystore.otr]
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Keep no input history, and wipe the screen and the terminal's scrollback when the
    /// private conversation ends.
    #[arg(long)]
    pub ephemeral: bool,
}

/// Shows the conversation's status as the prompt every time rustyline redraws the line
/// (after each message printed above it), so the prompt never shows a stale state. All
/// prompts are padded to one width, which rustyline takes from the blank prompt it is given.
struct LivePrompt(Arc<Mutex<String>>);

impl rustyline::completion::Completer for LivePrompt {
    type Candidate = String;
}
impl rustyline::hint::Hinter for LivePrompt {
    type Hint = String;
}
impl rustyline::validate::Validator for LivePrompt {}
impl rustyline::Helper for LivePrompt {}
impl rustyline::highlight::Highlighter for LivePrompt {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, blank: &'p str, _default: bool) -> Cow<'b, str> {
        let current = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Red until private, yellow while unverified, green once verified.
        let color = if current.contains("verified]") && !current.contains("UNVERIFIED") {
            "32"
        } else if current.contains("UNVERIFIED") || current.contains("SMP") {
            "33"
        } else {
            "31"
        };
        Cow::Owned(format!("\x1b[1;{color}m{}\x1b[0m", fit(&current, blank.chars().count())))
    }
}

/// `s` cut or padded with spaces to exactly `width` characters.
fn fit(s: &str, width: usize) -> String {
    let mut out: String = s.chars().take(width).collect();
    let n = out.chars().count();
    out.extend(std::iter::repeat_n(' ', width - n));
    out
}

/// Runs `otr chat` until `/quit`; errors go to stderr.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otr chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let store =
        open_for_account(&store_path(args.store.as_deref())?, &args.account, PROTOCOL, KdfParams::DEFAULT)?;
    let relay_secret = secret("OTR_RELAY_SECRET", &format!("Relay secret of {}: ", args.account), false)?;
    let key = store.keystore().account(&args.account, PROTOCOL).ok_or("the account vanished")?.key().clone();
    let mut rng = otr::system_rng();
    // The conversation saved by the last run, unless ephemeral (which never writes one).
    let snapshots = match args.ephemeral {
        true => None,
        false => Some(
            SnapshotDir::new(&conversations_dir(store.path()), store.seal_key().clone())
                .map_err(|e| e.to_string())?,
        ),
    };
    let (session, resumed) = match snapshots.as_ref().map(|d| d.load(&args.account, &args.peer)) {
        Some(Ok(Some(bytes))) => match Session::restore(key.clone(), &bytes, 0, Timestamp(0), &mut rng) {
            Ok(session) => (Some(session), Ok(true)),
            Err(e) => (None, Err(e.to_string())),
        },
        Some(Err(e)) => (None, Err(e.to_string())),
        _ => (None, Ok(false)),
    };
    let session = session.unwrap_or_else(|| {
        Session::new(SessionConfig::new(&args.account, Policy::ALWAYS, InstanceTag::random(&mut rng)), key)
    });
    let config = ClientConfig::new(&args.relay, args.pin, &args.account, relay_secret.as_str());

    // The line editor runs on its own thread; lines come over a channel, and what arrives is
    // printed above the line being typed.
    let history = if args.ephemeral { 0 } else { 1000 };
    let rl_config = rustyline::Config::builder()
        .auto_add_history(!args.ephemeral)
        .max_history_size(history)
        .map_err(|e| e.to_string())?
        .build();
    let mut editor =
        rustyline::Editor::<LivePrompt, rustyline::history::DefaultHistory>::with_config(rl_config)
            .map_err(|e| e.to_string())?;
    let prompt = Arc::new(Mutex::new(String::from("[connecting] > ")));
    editor.set_helper(Some(LivePrompt(prompt.clone())));
    let mut printer = editor.create_external_printer().map_err(|e| e.to_string())?;
    let blank = " ".repeat(40.max(26 + args.peer.chars().count()));
    let (lines_tx, lines_rx) = async_channel::bounded::<Zeroizing<String>>(1);
    std::thread::spawn(move || {
        loop {
            let line = match editor.readline(blank.as_str()) {
                Ok(l) => l,
                Err(_) => "/quit".to_string(), // Ctrl-C, Ctrl-D
            };
            let quit = line.trim() == "/quit";
            if lines_tx.send_blocking(Zeroizing::new(line)).is_err() || quit {
                break;
            }
        }
    });

    async_std::task::block_on(async move {
        let tcp = async_std::net::TcpStream::connect(&config.server).await.map_err(|e| e.to_string())?;
        let tls = connect_tls(tcp, &config.server, config.pin).await.map_err(|e| e.to_string())?;
        let framing = RelayFraming::new(&config, &args.peer);
        let conv = Conversation::new(session, tls, framing, otr::system_rng()).map_err(|e| e.to_string())?;
        let mut chat = Chat::new(conv, store, &args.account, &args.peer, args.ephemeral);
        if let Some(dir) = snapshots {
            chat = chat.keep_in(dir);
        }
        match resumed {
            // Saved again at once: restoring that snapshot twice would accept twice what
            // arrives from now on.
            Ok(true) => chat.input("/fingerprint").await.map_err(|e| e.to_string())?,
            Ok(false) => chat.input("/start").await.map_err(|e| e.to_string())?,
            Err(e) => {
                eprintln!("The saved conversation cannot be resumed ({e}); starting a new one.");
                chat.input("/start").await.map_err(|e| e.to_string())?
            }
        };
        loop {
            // The status first: printing redraws the prompt with it.
            *prompt.lock().unwrap_or_else(|p| p.into_inner()) = chat.prompt();
            for out in chat.take_output() {
                let text = match out {
                    Output::Line(l) => format!("{}\n", l.as_str()),
                    Output::Clear => "\x1b[2J\x1b[3J\x1b[H".to_string(),
                };
                let _ = printer.print(text);
            }
            let next = async { Err(chat.step().await) }.or(async { Ok(lines_rx.recv().await) }).await;
            match next {
                Err(Ok(())) => {}
                Err(Err(e)) => return Err(format!("the conversation stopped: {e}")),
                Ok(Err(_)) => return Ok(()),
                Ok(Ok(line)) => {
                    if chat.input(&line).await.map_err(|e| e.to_string())? == Flow::Quit {
                        return Ok(());
                    }
                }
            }
        }
    })
}

/// Where saved conversations live: `conversations/` beside the key store.
fn conversations_dir(store: &std::path::Path) -> PathBuf {
    store.parent().unwrap_or_else(|| std::path::Path::new(".")).join("conversations")
}
