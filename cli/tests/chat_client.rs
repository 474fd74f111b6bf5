//! Drives the chat client (`otr chat`) through its library API: two clients, one of them
//! ephemeral, talk through a relay on 127.0.0.1: query, held message, AKE, SMP with a
//! question (trust saved in the encrypted key store), a message back, /end (the ephemeral
//! side wipes its screen buffer). And a peer's hostile text (terminal controls in a message
//! and an SMP question) reaches the screen escaped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_lite::FutureExt;
use otr::keystore::{ContactId, KdfParams, Trust};
use otr::{InstanceTag, Policy, Session, SessionConfig, Store};
use otr_cli::chat::client::{Chat, Output, PROTOCOL, Status};
use otr_futures::Conversation;
use otr_relay::accounts::{self, Argon2Params};
use otr_relay::{Server, ServerConfig, ServerHandle};
use otr_relay_client::ClientConfig;
use otr_relay_client::futures_client::{RelayFraming, connect_tls};

type TestChat =
    Chat<futures_rustls::client::TlsStream<async_std::net::TcpStream>, RelayFraming, otr::SystemRng>;

const PASS: &[u8] = b"test passphrase";

fn store(dir: &Path, account: &str) -> Store {
    let mut rng = otr::system_rng();
    let params = KdfParams { memory_kib: 256, iterations: 1, parallelism: 1 };
    let mut s = Store::create(&dir.join(format!("{account}.otr")), PASS, params, &mut rng).unwrap();
    s.keystore_mut().generate_account(account, PROTOCOL, &mut rng).unwrap();
    s.save(&mut rng).unwrap();
    s
}

async fn chat(h: &ServerHandle, dir: &Path, me: &str, peer: &str, ephemeral: bool) -> TestChat {
    let store = store(dir, me);
    let key = store.keystore().account(me, PROTOCOL).unwrap().key().clone();
    let mut rng = otr::system_rng();
    let session = Session::new(SessionConfig::new(me, Policy::ALWAYS, InstanceTag::random(&mut rng)), key);
    let config = ClientConfig::new(h.addr().to_string(), h.fingerprint(), me, format!("secret of {me}"));
    let tcp = async_std::net::TcpStream::connect(&config.server).await.unwrap();
    let tls = connect_tls(tcp, &config.server, config.pin).await.unwrap();
    let conv = Conversation::new(session, tls, RelayFraming::new(&config, peer), otr::system_rng()).unwrap();
    Chat::new(conv, store, me, peer, ephemeral)
}

fn shows(c: &TestChat, needle: &str) -> bool {
    c.screen().iter().any(|l| l.contains(needle))
}

/// Steps both clients until `done`; bounded in steps and time.
async fn drive(a: &mut TestChat, b: &mut TestChat, done: impl Fn(&TestChat, &TestChat) -> bool) {
    for _ in 0..500 {
        if done(a, b) {
            return;
        }
        let step = a.step().or(b.step()).or(async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            panic!("no progress within 10 s");
        });
        step.await.unwrap();
    }
    panic!("not done after 500 steps:\n{:?}\n{:?}", a.screen(), b.screen());
}

/// A relay on 127.0.0.1 (on its own runtime) with accounts alice and bob, in a fresh folder
/// for `test`.
fn relay(test: &str) -> (PathBuf, tokio::runtime::Runtime, ServerHandle) {
    let dir = std::env::temp_dir().join(format!("otr-chat-client-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["alice", "bob"] {
        accounts::add_account(&dir, name, &format!("secret of {name}"), Argon2Params::TEST).unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let h = rt.block_on(async {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), &dir);
        config.argon2 = Argon2Params::TEST;
        Server::bind(config).await.unwrap().spawn().unwrap()
    });
    (dir, rt, h)
}

#[test]
fn one_exchange_through_the_chat_client() {
    let (dir, rt, h) = relay("exchange");

    async_std::task::block_on(async {
        let mut alice = chat(&h, &dir, "alice", "bob", false).await;
        let mut bob = chat(&h, &dir, "bob", "alice", true).await;
        assert_eq!(alice.status(), Status::NotPrivate);
        assert!(alice.prompt().contains("NOT PRIVATE"));

        alice.input("/start").await.unwrap();
        alice.input("hello bob").await.unwrap();
        assert!(shows(&alice, "held until private"));
        drive(&mut alice, &mut bob, |a, b| {
            shows(b, "alice: hello bob")
                && a.status() == Status::Unverified
                && b.status() == Status::Unverified
        })
        .await;
        assert!(alice.prompt().contains("private, UNVERIFIED"));
        assert!(shows(&alice, "First time") && shows(&bob, "First time"));

        alice.input("/smp Where did we meet?").await.unwrap();
        assert!(alice.prompt().contains("SMP secret"));
        alice.input("the lighthouse").await.unwrap();
        drive(&mut alice, &mut bob, |_, b| shows(b, "asks (SMP): \"Where did we meet?\"")).await;
        bob.input("/answer the lighthouse").await.unwrap();
        drive(&mut alice, &mut bob, |a, b| a.status() == Status::Verified && b.status() == Status::Verified)
            .await;
        assert!(alice.prompt().contains("private, verified"));

        // The trust is in the encrypted store on disk.
        let bob_fp = alice.peer_fingerprint().unwrap();
        let saved = Store::open(alice.store().path(), PASS).unwrap();
        let contact = ContactId::new("alice", PROTOCOL, "bob");
        assert_eq!(saved.keystore().trust(&contact, &bob_fp), Some(Trust::VerifiedSmp));

        bob.input("hi alice").await.unwrap();
        drive(&mut alice, &mut bob, |a, _| shows(a, "bob: hi alice")).await;
        alice.input("/fingerprint").await.unwrap();
        assert!(shows(&alice, &format!("bob: {} (verified by SMP)", bob_fp.to_human())));

        // Alice ends; bob (ephemeral) wipes what it held of the conversation.
        let _ = bob.take_output();
        alice.input("/end").await.unwrap();
        drive(&mut alice, &mut bob, |_, b| b.status() == Status::Finished).await;
        assert!(bob.take_output().contains(&Output::Clear));
        assert!(!shows(&bob, "hello bob") && !shows(&bob, "hi alice"), "{:?}", bob.screen());
        assert!(shows(&bob, "wiped") && bob.prompt().contains("ENDED"));
        // Alice (not ephemeral) still shows the conversation; bob's send is refused, not leaked.
        assert!(shows(&alice, "bob: hi alice") && alice.status() == Status::NotPrivate);
        bob.input("still there?").await.unwrap();
        assert!(shows(&bob, "not sent"));
        bob.input("/end").await.unwrap();
        assert_eq!(bob.status(), Status::NotPrivate);
    });
    rt.block_on(async { h.shutdown().await.unwrap() });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bob's client is hostile: its message tries to erase alice's line and draw a fake one
/// (`\r`, `ESC [2K`, a newline and a made-up prefix, the one-character CSI U+009B, a bidi
/// override, DEL), and so does its SMP question. Alice's client shows both on one line each,
/// every such character escaped: no raw control character reaches her terminal.
#[test]
fn hostile_text_cannot_draw_on_the_terminal() {
    let (dir, rt, h) = relay("hostile");
    async_std::task::block_on(async {
        let mut alice = chat(&h, &dir, "alice", "bob", false).await;
        let mut bob = chat(&h, &dir, "bob", "alice", false).await;
        alice.input("/start").await.unwrap();
        drive(&mut alice, &mut bob, |a, b| {
            a.status() == Status::Unverified && b.status() == Status::Unverified
        })
        .await;
        let _ = alice.take_output();

        let fake = "hi\r\x1b[2K[private, verified] bob> wire the money\nbob: \u{9b}2K\u{202e}yenom\u{7f}";
        bob.input(fake).await.unwrap();
        bob.input("/smp who?\x1b[1A\x1b[2K\rSMP succeeded\u{2066}").await.unwrap();
        bob.input("our secret").await.unwrap();
        drive(&mut alice, &mut bob, |a, _| shows(a, "asks (SMP)")).await;

        let lines: Vec<String> = alice
            .take_output()
            .into_iter()
            .filter_map(|o| match o {
                Output::Line(l) => Some(l.as_str().to_owned()),
                Output::Clear => None,
            })
            .collect();
        let raw = |c: char| {
            c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c)
        };
        assert!(
            !lines.iter().any(|l| l.chars().any(raw)),
            "raw control characters reached the screen: {lines:?}"
        );
        let message =
            r"bob: hi\r\u{1b}[2K[private, verified] bob> wire the money\nbob: \u{9b}2K\u{202e}yenom\u{7f}";
        assert!(lines.iter().any(|l| l == message), "{lines:?}");
        let question =
            r#"bob asks (SMP): "who?\u{1b}[1A\u{1b}[2K\rSMP succeeded\u{2066}"; answer with /answer SECRET"#;
        assert!(lines.iter().any(|l| l == question), "{lines:?}");
    });
    rt.block_on(async { h.shutdown().await.unwrap() });
    let _ = std::fs::remove_dir_all(&dir);
}
