//! An interactive OTR chat over XMPP (otr-xmpp):
//!
//! ```text
//! cargo run --example xmpp-chat -- --jid alice@example.org --password-file ~/.xmpp-pass \
//!     --peer bob@example.org [--server HOST:PORT] [--ca-file CA.pem] [--store PATH]
//! ```
//!
//! It logs in with StartTLS (the server's certificate is verified against the system's CAs,
//! or only those in `--ca-file` for a private server), takes the identity for the JID from the
//! encrypted key store (`OTR_PASSPHRASE` or a prompt; created if missing, protocol "xmpp"),
//! and requires encryption: what you type waits until the conversation is private. It says
//! when a contact's key is new, known, verified or CHANGED. Commands: `/start`, `/end`,
//! `/smp [QUESTION]` (then type the secret), `/answer SECRET`, `/fingerprint`, `/quit`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use otr::keystore::{ContactId, KdfParams, Observation, Seen};
use otr::terminal::Escaped;
use otr::{Event, InstanceTag, Store};
use otr_xmpp::{BareJid, Client, ClientEvent, Config, Trust};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

const PROTOCOL: &str = "xmpp";
const USAGE: &str = "usage: xmpp-chat --jid JID --password-file FILE --peer JID \
                     [--server HOST:PORT] [--ca-file PEM] [--store PATH]\n\
                     env: OTR_PASSPHRASE (key store passphrase; else a prompt)";

struct Args {
    jid: BareJid,
    password_file: PathBuf,
    peer: BareJid,
    server: Option<String>,
    ca_file: Option<PathBuf>,
    store: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut jid, mut password_file, mut peer, mut server, mut ca_file, mut store) =
        (None, None, None, None, None, None);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--jid" => jid = Some(value()?.parse::<BareJid>().map_err(|e| format!("--jid: {e}"))?),
            "--password-file" => password_file = Some(PathBuf::from(value()?)),
            "--peer" => peer = Some(value()?.parse::<BareJid>().map_err(|e| format!("--peer: {e}"))?),
            "--server" => server = Some(value()?),
            "--ca-file" => ca_file = Some(PathBuf::from(value()?)),
            "--store" => store = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let missing = |what: &str| format!("{what} is required\n{USAGE}");
    let store = otr::store::store_path(store.as_deref(), dirs::data_dir())
        .ok_or("cannot find the user's data directory; pass --store PATH")?;
    Ok(Args {
        jid: jid.ok_or_else(|| missing("--jid"))?,
        password_file: password_file.ok_or_else(|| missing("--password-file"))?,
        peer: peer.ok_or_else(|| missing("--peer"))?,
        server,
        ca_file,
        store,
    })
}

/// Opens (or creates) the key store and makes sure `account` has a key.
fn open_store(path: &Path, account: &str) -> Result<Store, String> {
    let pass = match std::env::var("OTR_PASSPHRASE") {
        Ok(v) => Zeroizing::new(v),
        Err(_) => rpassword::prompt_password("Passphrase for the key store: ")
            .map(Zeroizing::new)
            .map_err(|e| format!("cannot read it: {e}"))?,
    };
    let mut rng = otr::system_rng();
    let mut store = if path.exists() {
        Store::open(path, pass.as_bytes()).map_err(|e| e.to_string())?
    } else {
        eprintln!("Creating a new key store at {}", path.display());
        Store::create(path, pass.as_bytes(), KdfParams::DEFAULT, &mut rng).map_err(|e| e.to_string())?
    };
    if store.keystore().account(account, PROTOCOL).is_none() {
        eprintln!("Generating a key for {account} (1024-bit DSA)...");
        store.keystore_mut().generate_account(account, PROTOCOL, &mut rng).map_err(|e| e.to_string())?;
        store.save(&mut rng).map_err(|e| e.to_string())?;
    }
    Ok(store)
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = parse_args().and_then(|args| {
        let rt =
            tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(run(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xmpp-chat: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let account = args.jid.to_string();
    let mut store = open_store(&args.store, &account)?;
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
