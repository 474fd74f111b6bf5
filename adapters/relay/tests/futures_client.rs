//! The futures-io client (feature `futures-io`) against a real relay on 127.0.0.1, from
//! async-std: a wrong pin and a wrong secret are typed errors, and a conversation with a
//! tokio client works both ways, each delivery acknowledged (the store ends empty).
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, SystemRng, Timestamp};
use otr_futures::{Conversation, Update};
use otr_relay::{CertFingerprint, ErrorCode};
use otr_relay_client::futures_client::{RelayFraming, connect_tls};
use otr_relay_client::{ClientConfig, ClientError};

fn session(name: &str) -> Session {
    let mut rng = otr::system_rng();
    let tag = InstanceTag::random(&mut rng);
    Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), DsaKeyPair::generate(&mut rng))
}

async fn conversation(
    config: &ClientConfig,
    peer: &str,
) -> Result<
    Conversation<futures_rustls::client::TlsStream<async_std::net::TcpStream>, RelayFraming, SystemRng>,
    ClientError,
> {
    let tcp = async_std::net::TcpStream::connect(&config.server).await?;
    let tls = connect_tls(tcp, &config.server, config.pin).await?;
    Ok(Conversation::new(session(&config.account), tls, RelayFraming::new(config, peer), otr::system_rng())
        .unwrap())
}

#[tokio::test]
async fn wrong_pin_and_wrong_secret_are_typed_errors() {
    let dir = TempDir::new("futures-errors");
    add(dir.path(), "alice");
    let h = start(dir.path(), test_limits()).await;
    let mut wrong_pin = config(&h, "alice");
    wrong_pin.pin = CertFingerprint([7; 32]);
    let mut wrong_secret = config(&h, "alice");
    wrong_secret.secret = "not the secret".into();
    let right = config(&h, "alice");
    let (pin_err, login_err) = async_std::task::spawn(async move {
        let pin_err = conversation(&wrong_pin, "bob").await.unwrap_err();
        let mut conv = conversation(&wrong_secret, "bob").await.unwrap();
        conv.start().await.unwrap();
        let login_err = conv.next_event().await.unwrap_err();
        (pin_err, login_err)
    })
    .await;
    assert!(
        matches!(pin_err, ClientError::PinMismatch { presented, .. } if presented == right.pin),
        "{pin_err}"
    );
    assert!(
        matches!(
            login_err,
            otr_futures::Error::Framing(ClientError::Login { code: ErrorCode::AuthFailed, .. })
        ),
        "{login_err}"
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn futures_client_talks_to_a_tokio_client() {
    let dir = TempDir::new("futures-conv");
    add(dir.path(), "alice");
    add(dir.path(), "bob");
    let h = start(dir.path(), test_limits()).await;
    let alice_config = config(&h, "alice");
    // Alice on async-std: asks for OTR, says hello once private, waits for the answer.
    let alice = async_std::task::spawn(async move {
        let mut conv = conversation(&alice_config, "bob").await.unwrap();
        conv.send("hello from async-std").await.unwrap(); // held; a query goes out
        loop {
            if let Update::Event(Event::Message { text, encrypted: true, .. }) =
                conv.next_event().await.unwrap()
            {
                assert_eq!(text, "hello from tokio");
                break;
            }
        }
        conv.close().await.unwrap();
    });
    // Bob on tokio with the tokio client.
    let (client, mut inbox) = connect(&h, "bob").await;
    let mut bob = session("bob");
    let mut rng = otr::system_rng();
    let mut id = 0;
    let mut got = None;
    while got.is_none() {
        let d = recv(&mut inbox, 10).await;
        assert!(d.body.starts_with("?OTR"), "only OTR on the relay");
        bob.receive(Timestamp(0), &d.body, &mut rng).unwrap();
        client.ack(d.seq).await.unwrap();
        while let Some(e) = bob.poll_event() {
            if let Event::Message { text, encrypted: true, .. } = e {
                got = Some(text);
                bob.send(Timestamp(0), "hello from tokio").unwrap();
            }
        }
        while let Some(t) = bob.poll_transmit() {
            id += 1;
            client.send("alice", id, &t.message).await.unwrap();
        }
    }
    assert_eq!(got.as_deref(), Some("hello from async-std"));
    alice.await;
    wait_stored(&h, 0).await;
    client.close().await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn keepalives_hold_an_idle_connection_open() {
    let dir = TempDir::new("futures-keepalive");
    add(dir.path(), "alice");
    // The relay closes a connection idle for 300 ms; the client pings every 100 ms.
    let mut limits = test_limits();
    limits.idle_timeout = std::time::Duration::from_millis(300);
    let h = start(dir.path(), limits).await;
    let mut alice_config = config(&h, "alice");
    alice_config.keepalive = std::time::Duration::from_millis(100);
    let stats = async_std::task::spawn(async move {
        use futures_lite::FutureExt;
        let mut conv = conversation(&alice_config, "bob").await.unwrap();
        conv.flush().await.unwrap(); // the login
        let idle = async {
            let u = conv.next_event().await;
            panic!("an idle connection reports nothing (and is not closed): {u:?}");
        };
        idle.or(async {
            async_io::Timer::after(std::time::Duration::from_millis(1000)).await;
        })
        .await;
        assert!(conv.send("still here").await.is_ok());
        conv.stats()
    })
    .await;
    println!("1 s idle, pings every 100 ms: {stats:?}");
    // About ten pings in a second, and the loop woke about once per ping (pong included).
    assert!((5..=15).contains(&stats.keepalives), "{stats:?}");
    assert!(stats.iterations <= 6 * stats.keepalives + 10, "{stats:?}");
    h.shutdown().await.unwrap();
}
