//! `otr xmpp`: an interactive OTR chat over XMPP (otr-xmpp).
//!
//! It logs in with StartTLS (the server's certificate is verified against the system's CAs,
//! or only those in `--ca-file` for a private server), takes the identity for the JID from the
//! encrypted key store (`OTR_PASSPHRASE` or a prompt; created if missing, protocol "xmpp"),
//! and requires encryption: what you type waits until the conversation is private. It says
//! when a contact's key is new, known, verified or CHANGED. Commands: `/start`, `/end`,
//! `/smp [QUESTION]` (then type the secret), `/answer SECRET`, `/fingerprint`, `/quit`.

use std::path::PathBuf;
use std::process::ExitCode;

use otr::keystore::{ContactId, KdfParams, Observation, Seen};
use otr::terminal::Escaped;
use otr::{Event, InstanceTag, Store};
use otr_xmpp::{BareJid, Client, ClientEvent, Config, Trust};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::secrets::{open_for_account, store_path};

const PROTOCOL: &str = "xmpp";

/// `otr xmpp`: chat privately with one contact over any XMPP account.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Our XMPP account, e.g. alice@example.org.
    #[arg(long)]
    pub jid: BareJid,
    /// A file whose first line is the account's password.
    #[arg(long, value_name = "FILE")]
    pub password_file: PathBuf,
    /// The contact to talk to (a bare JID).
    #[arg(long, value_name = "JID")]
    pub peer: BareJid,
    /// Connect to this host and port instead of looking the server up in DNS.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Trust only the CA certificates in this PEM file (a private server) instead of the
    /// system's.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// The key store: a file, or a directory that holds `keystore.otr`
    /// [default: $XDG_DATA_HOME/otr-rs/keystore.otr]
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
}

/// Runs `otr xmpp` until `/quit`; errors go to stderr.
pub fn main(args: Args) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otr xmpp: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let account = args.jid.to_string();
    let mut store =
        open_for_account(&store_path(args.store.as_deref())?, &account, PROTOCOL, KdfParams::DEFAULT)?;
    let key = store.keystore().account(&account, PROTOCOL).ok_or("the account vanished")?.key().clone();
    let password = std::fs::read_to_string(&args.password_file)
        .map_err(|e| format!("cannot read {}: {e}", args.password_file.display()))?;
    let mut rng = otr::system_rng();
    let mut config = Config::new(
        args.jid.clone(),
        password.trim_end_matches(['\r', '\n']),
        key,
        InstanceTag::random(&mut rng),
    );
    config.server = args.server.clone();
    if let Some(ca) = &args.ca_file {
        config.trust = Trust::CaFile(ca.clone());
    }
    println!(
        "Connecting as {account}; our fingerprint {}",
        config.identity.public().fingerprint().to_human()
    );
    let (client, mut events) = Client::connect(config).await.map_err(|e| e.to_string())?;
    // The peer is ours: strangers writing to us never push its session out.
    client.add_contact(&args.peer).await.map_err(|e| e.to_string())?;
    println!(
        "Online as {}. Type to chat with {} (/start, /end, /smp, /answer, /fingerprint, /quit).",
        client.jid(),
        args.peer
    );
    let contact = ContactId::new(&account, PROTOCOL, args.peer.to_string());

    // Lines from the terminal arrive on a channel from a plain thread.
    let (lines_tx, mut lines) = mpsc::channel::<Zeroizing<String>>(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines_tx.blocking_send(Zeroizing::new(line)).is_err() {
                break;
            }
        }
    });
    let peer = &args.peer;
    let mut smp_question: Option<Option<String>> = None;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                let line = line.trim();
                if let Some(question) = smp_question.take() {
                    // The line after /smp is the secret.
                    report(client.smp_start(peer, question.as_deref(), line.as_bytes()).await);
                    continue;
                }
                match line.split_once(' ').map_or((line, ""), |(c, rest)| (c, rest)) {
                    ("/quit", _) => break,
                    ("/start", _) => report(client.start(peer).await),
                    ("/end", _) => report(client.end(peer).await),
                    ("/smp", q) => {
                        smp_question = Some((!q.is_empty()).then(|| q.to_owned()));
                        println!("Type the shared secret:");
                    }
                    ("/answer", secret) => report(client.smp_respond(peer, secret.as_bytes()).await),
                    ("/fingerprint", _) => match client.private_with(peer).await {
                        Ok(Some(p)) => println!("ours {}\ntheirs {} (ssid {})", client.fingerprint().to_human(), p.fingerprint.to_human(), p.ssid),
                        Ok(None) => println!("ours {}; not private with {peer}", client.fingerprint().to_human()),
                        Err(e) => println!("! {e}"),
                    },
                    ("", _) => {}
                    _ => match client.send(peer, line).await {
                        Ok(otr::Sent::Held) => println!("(held until the conversation is private)"),
                        Ok(_) => {}
                        Err(e) => println!("! {e}"),
                    },
                }
            }
            event = events.next() => {
                let Some(event) = event else { break };
                show(&event, peer);
                if let ClientEvent::Otr { peer: from, event } = &event {
                    if from == peer {
                        observe(&mut store, &contact, event);
                    }
                }
            }
        }
    }
    client.close().await.map_err(|e| e.to_string())
}

fn report(r: Result<(), otr_xmpp::ClientError>) {
    if let Err(e) = r {
        println!("! {e}");
    }
}

/// Records fingerprints and verifications in the key store and says what they mean.
fn observe(store: &mut Store, contact: &ContactId, event: &Event) {
    let observed = match store.keystore_mut().observe(contact, event) {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => return println!("! key store: {e}"),
    };
    match observed {
        Observation::Seen { fingerprint, seen } => match seen {
            Seen::New => println!("* new key {} (unverified: use /smp)", fingerprint.to_human()),
            Seen::Known { trust } => println!("* known key {} ({trust:?})", fingerprint.to_human()),
            Seen::Changed { .. } => {
                println!("* WARNING: the key CHANGED to {}; verify it with /smp", fingerprint.to_human())
            }
        },
        Observation::Verified { fingerprint } => println!("* verified {}", fingerprint.to_human()),
    }
    if let Err(e) = store.save(&mut otr::system_rng()) {
        println!("! cannot save the key store: {e}");
    }
}

/// Prints an event. Everything that came from elsewhere (texts, questions, addresses, error
/// messages) is [`Escaped`]: a stranger's control characters cannot erase a line or draw a
/// fake one (say, a message that looks like the peer's, encrypted).
fn show(event: &ClientEvent, peer: &BareJid) {
    match event {
        ClientEvent::Otr { peer: from, event } => {
            let from = Escaped(from);
            let who = if from.0 == peer { String::new() } else { format!("[{from}] ") };
            match event {
                Event::Message { text, encrypted: true, .. } => println!("{who}{from}: {}", Escaped(text)),
                Event::Message { text, encrypted: false, .. } => {
                    println!("{who}{from} (NOT ENCRYPTED): {}", Escaped(text))
                }
                Event::UnencryptedReceived { text } => {
                    println!("{who}{from} sent unencrypted: {}", Escaped(text))
                }
                Event::Secure { ssid, bold, refreshed, version, .. } => {
                    println!(
                        "* {who}private conversation {} (OTR v{version}, ssid {}: read out the bracketed half)",
                        if *refreshed { "refreshed" } else { "started" },
                        ssid.marked(*bold)
                    )
                }
                Event::FingerprintChanged { previous, fingerprint, .. } => {
                    println!(
                        "* {who}WARNING: {from}'s key CHANGED from {} to {}: a new, unverified key (/smp to verify)",
                        previous.to_human(),
                        fingerprint.to_human()
                    )
                }
                Event::HeldReturned { texts, .. } => {
                    for text in texts {
                        println!("* {who}NOT SENT (the key changed while it waited): {}", Escaped(text))
                    }
                }
                Event::RemoteEnded { .. } => {
                    println!("* {who}{from} ended the private conversation; /end or /start")
                }
                Event::Ended { .. } => println!("* {who}private conversation ended"),
                Event::SmpRequest { question, .. } => {
                    println!(
                        "* {who}{from} asks to verify: {}; /answer SECRET",
                        Escaped(question.as_deref().unwrap_or("(no question)"))
                    )
                }
                Event::SmpFailed { .. } => println!("* {who}verification FAILED: the secrets differ"),
                Event::SmpAborted { cheated, .. } => {
                    println!("* {who}verification aborted{}", if *cheated { " (check failed)" } else { "" })
                }
                Event::MaybeNotDelivered { texts, .. } => {
                    println!("* {who}{from} may not have received: {}", Escaped(format_args!("{texts:?}")))
                }
                Event::ErrorReceived { text } => println!("* {who}OTR error from {from}: {}", Escaped(text)),
                Event::SmpSucceeded { .. } | Event::ExtraSymmetricKey { .. } => {}
                other => println!("* {who}{}", Escaped(format_args!("{other:?}"))),
            }
        }
        ClientEvent::OtrError { peer, error } => {
            println!("! message from {} not accepted: {}", Escaped(peer), Escaped(error))
        }
        ClientEvent::Undeliverable { peer, condition } => {
            println!("! {} could not be reached ({})", Escaped(peer), Escaped(format_args!("{condition:?}")))
        }
        ClientEvent::Rejected { from, reason } => {
            let from = from.as_ref().map_or_else(|| "an unknown sender".to_owned(), ToString::to_string);
            println!("! ignored a message from {}: {reason}", Escaped(from))
        }
        ClientEvent::ConnectionLost => println!("! connection lost; reconnecting..."),
        ClientEvent::ReconnectFailed { error, retry_in } => {
            println!("! reconnect failed ({}); retry in {retry_in:?}", Escaped(error))
        }
        ClientEvent::Online { jid, .. } => println!("* online again as {}", Escaped(jid)),
        other => println!("* {}", Escaped(format_args!("{other:?}"))),
    }
}
