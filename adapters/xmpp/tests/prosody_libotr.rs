//! An otr-xmpp client talks through a real Prosody to a libotr 4.1.1 client: our libotr
//! harness behind a small XMPP bot written with tokio-xmpp. AKE started from either side,
//! messages both ways, SMP started from either side, ends from either side.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Options, Prosody, STEP, expect, jid};
use futures_util::StreamExt;
use otr_core::Event;
use otr_libotr_harness::{LibotrPeer, Output, PeerEvent, PeerPolicy};
use otr_xmpp::{BareJid, Client, ClientEvent, Config, StartTls};
use tokio::sync::mpsc;
use tokio_xmpp::Stanza;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::xmlstream::Timeouts;

/// What the test asks the libotr side to do.
enum BotCmd {
    Query,
    Send(String),
    Smp(Option<String>, Vec<u8>),
    SmpAnswer(Vec<u8>),
    End,
}

/// The libotr client: a tokio-xmpp client on its own thread (libotr's context is not
/// `Send`), moving message bodies between Prosody and a `LibotrPeer`.
struct Bot {
    commands: mpsc::UnboundedSender<BotCmd>,
    events: mpsc::UnboundedReceiver<PeerEvent>,
    fingerprint: String,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bot {
    /// A bot for `config`'s account talking to `peer`, fragmenting above `max_msg_size`
    /// bytes (0: never).
    fn start(config: Config, peer: BareJid, max_msg_size: usize) -> Bot {
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (fp_tx, fp_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let account = config.jid.to_string();
                let mut otr = LibotrPeer::new(&account, &peer.to_string(), PeerPolicy::Always, false, max_msg_size, None)
                    .expect("libotr endpoint (is libotr5-dev installed?)");
                fp_tx.send(otr.fingerprint().to_owned()).unwrap();
                let connector = StartTls::new(&config).unwrap();
                let mut xmpp = tokio_xmpp::Client::new_with_connector(
                    config.jid.clone(),
                    config.password.to_string(),
                    connector,
                    Timeouts::default(),
                );
                while let Some(ev) = xmpp.next().await {
                    if ev.is_online() {
                        break;
                    }
                }
                xmpp.send_stanza(Presence::available().into()).await.unwrap();
                loop {
                    while let Some(out) = otr.poll_output() {
                        match out {
                            Output::Net(body) => {
                                let m = Message::chat(Some(peer.clone().into())).with_body(Lang::default(), body);
                                xmpp.send_stanza(m.into()).await.unwrap();
                            }
                            Output::Event(PeerEvent::Log(_)) => {}
                            Output::Event(e) => {
                                let _ = ev_tx.send(e);
                            }
                        }
                    }
                    tokio::select! {
                        cmd = cmd_rx.recv() => match cmd {
                            Some(BotCmd::Query) => otr.query(),
                            Some(BotCmd::Send(text)) => otr.send(&text),
                            Some(BotCmd::Smp(q, secret)) => otr.smp(q.as_deref(), &secret),
                            Some(BotCmd::SmpAnswer(secret)) => otr.smp_answer(&secret),
                            Some(BotCmd::End) => otr.end(),
                            None => break,
                        },
                        ev = xmpp.next() => match ev {
                            Some(tokio_xmpp::Event::Stanza(Stanza::Message(m))) if m.type_ != MessageType::Error => {
                                if let Some((_, body)) = m.get_best_body_cloned(vec![]) {
                                    otr.receive(body.as_bytes());
                                }
                            }
                            Some(_) => {}
                            None => break,
                        },
                        () = tokio::time::sleep(Duration::from_millis(200)) => otr.poll_if_due(),
                    }
                }
                let _ = xmpp.send_end().await;
            });
        });
        let fingerprint = fp_rx.recv_timeout(STEP).expect("bot started");
        Bot { commands: cmd_tx, events: ev_rx, fingerprint, thread: Some(thread) }
    }

    fn cmd(&self, c: BotCmd) {
        self.commands.send(c).unwrap();
    }

    /// Waits for the libotr side to report an event `pred` accepts.
    async fn expect<T>(&mut self, what: &str, mut pred: impl FnMut(&PeerEvent) -> Option<T>) -> T {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(e)) => {
                    if let Some(v) = pred(&e) {
                        return v;
                    }
                    seen.push(e);
                }
                Ok(None) => panic!("the bot stopped while we waited for {what}; saw {seen:?}"),
                Err(_) => panic!("libotr reported no {what} within {STEP:?}; saw {seen:?}"),
            }
        }
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        // Closing the command channel ends the bot's loop.
        let (tx, _) = mpsc::unbounded_channel();
        drop(std::mem::replace(&mut self.commands, tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn secure(e: &ClientEvent) -> Option<(otr_core::Fingerprint, otr_core::Ssid)> {
    match e {
        ClientEvent::Otr { event: Event::Secure { fingerprint, ssid, .. }, .. } => {
            Some((*fingerprint, *ssid))
        }
        _ => None,
    }
}

fn text_of(e: &ClientEvent) -> Option<(String, bool)> {
    match e {
        ClientEvent::Otr { event: Event::Message { text, encrypted, .. }, .. } => {
            Some((text.clone(), *encrypted))
        }
        _ => None,
    }
}

fn bot_secure(e: &PeerEvent) -> Option<(String, String)> {
    match e {
        PeerEvent::Secure { fingerprint, ssid } => Some((fingerprint.clone(), ssid.clone())),
        _ => None,
    }
}

/// Messages both ways in the current private conversation.
async fn exchange(alice: &Client, events: &mut otr_xmpp::Events, bot: &mut Bot, lib: &BareJid, round: &str) {
    for i in 0..5 {
        let text = format!("{round} from otr-rs #{i} ✓");
        assert_eq!(alice.send(lib, &text).await.unwrap(), otr_core::Sent::Encrypted);
        let got = bot
            .expect("message", |e| match e {
                PeerEvent::Msg { encrypted, text } => Some((*encrypted, text.clone())),
                _ => None,
            })
            .await;
        assert_eq!(got, (true, text.into_bytes()));
        let reply = format!("{round} from libotr #{i} ✓");
        bot.cmd(BotCmd::Send(reply.clone()));
        assert_eq!(expect(events, "message from libotr", text_of).await, (reply, true));
    }
}

/// SMP started by `ours_first` (else by libotr) with the same secret: both sides succeed.
async fn smp(alice: &Client, events: &mut otr_xmpp::Events, bot: &mut Bot, lib: &BareJid, ours_first: bool) {
    if ours_first {
        alice.smp_start(lib, Some("where did we meet?"), b"the harbour").await.unwrap();
        let q = bot
            .expect("SMP request", |e| match e {
                PeerEvent::SmpRequest(q) => Some(q.clone()),
                _ => None,
            })
            .await;
        assert_eq!(q.as_deref(), Some(&b"where did we meet?"[..]));
        bot.cmd(BotCmd::SmpAnswer(b"the harbour".to_vec()));
    } else {
        bot.cmd(BotCmd::Smp(None, b"the harbour".to_vec()));
        let q = expect(events, "SMP request", |e| match e {
            ClientEvent::Otr { event: Event::SmpRequest { question, .. }, .. } => Some(question.clone()),
            _ => None,
        })
        .await;
        assert_eq!(q, None);
        alice.smp_respond(lib, b"the harbour").await.unwrap();
    }
    expect(events, "SmpSucceeded", |e| {
        matches!(e, ClientEvent::Otr { event: Event::SmpSucceeded { .. }, .. }).then_some(())
    })
    .await;
    bot.expect("smp-success", |e| (*e == PeerEvent::SmpSuccess).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otr_xmpp_and_libotr_through_prosody() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let started = std::time::Instant::now();
    let (a, lib) = (jid("alice"), jid("lib"));
    let mut bot = Bot::start(server.client_config("lib", 11), a.clone(), 0);
    let (alice, mut events) = Client::connect(server.client_config("alice", 12)).await.unwrap();
    let alice_fp = alice.fingerprint().to_string();
    // The bot's presence must have reached the server before bare-JID messages reach it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. We start the AKE; libotr answers.
    alice.start(&lib).await.unwrap();
    let (fp, ssid) = expect(&mut events, "Secure (we started)", secure).await;
    let (bot_fp, bot_ssid) = bot.expect("secure", bot_secure).await;
    assert_eq!(fp.to_string(), bot.fingerprint);
    assert_eq!(bot_fp, alice_fp);
    assert_eq!(ssid.to_string(), bot_ssid);
    exchange(&alice, &mut events, &mut bot, &lib, "round 1").await;
    smp(&alice, &mut events, &mut bot, &lib, true).await;
    smp(&alice, &mut events, &mut bot, &lib, false).await;

    // We end; libotr sees the conversation finished and ends too.
    alice.end(&lib).await.unwrap();
    bot.expect("finished", |e| (*e == PeerEvent::Finished).then_some(())).await;
    bot.cmd(BotCmd::End);
    bot.expect("insecure", |e| (*e == PeerEvent::Insecure).then_some(())).await;

    // 2. libotr starts the AKE; we answer.
    bot.cmd(BotCmd::Query);
    let (fp2, ssid2) = expect(&mut events, "Secure (libotr started)", secure).await;
    let (_, bot_ssid2) = bot.expect("secure", bot_secure).await;
    assert_eq!(fp2.to_string(), bot.fingerprint);
    assert_eq!(ssid2.to_string(), bot_ssid2);
    assert_ne!(ssid2, ssid, "a new AKE gives a new session id");
    exchange(&alice, &mut events, &mut bot, &lib, "round 2").await;
    smp(&alice, &mut events, &mut bot, &lib, false).await;

    // libotr ends; we are told and refuse to send into the finished conversation.
    bot.cmd(BotCmd::End);
    expect(&mut events, "RemoteEnded", |e| {
        matches!(e, ClientEvent::Otr { event: Event::RemoteEnded { .. }, .. }).then_some(())
    })
    .await;
    assert!(alice.send(&lib, "after the end").await.is_err());
    alice.close().await.unwrap();
    drop(bot);
    eprintln!("otr-xmpp <-> libotr through Prosody: {:?}", started.elapsed());
}

/// Both sides fragment OTR messages above 400 bytes (as clients do for servers with small
/// stanza limits): the AKE and 6 KB messages both ways arrive whole through Prosody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_with_libotr() {
    let Some(server) = Prosody::start(Options::default()) else { return };
    let (a, lib) = (jid("alice"), jid("lib"));
    let mut bot = Bot::start(server.client_config("lib", 13), a.clone(), 400);
    let mut cfg = server.client_config("alice", 14);
    cfg.max_message_size = 400;
    let (alice, mut events) = Client::connect(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    alice.start(&lib).await.unwrap();
    expect(&mut events, "Secure", secure).await;
    bot.expect("secure", bot_secure).await;
    let long: String = (0..6000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    alice.send(&lib, &long).await.unwrap();
    let got = bot
        .expect("long message", |e| match e {
            PeerEvent::Msg { encrypted: true, text } => Some(text.clone()),
            _ => None,
        })
        .await;
    assert_eq!(got, long.as_bytes());
    let reply = long.to_uppercase();
    bot.cmd(BotCmd::Send(reply.clone()));
    assert_eq!(expect(&mut events, "long reply", text_of).await, (reply, true));
    alice.close().await.unwrap();
}
