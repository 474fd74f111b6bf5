//! A stranger cannot stall a conversation (issue 16, item 9.1): the relay hands a connection
//! a bounded window of unacknowledged deliveries (128), so a client that left deliveries from
//! accounts it does not talk to unacknowledged stopped receiving from its peer once a stranger
//! had sent 128 messages, for their whole lifetime. `RelayFraming` now acknowledges and drops
//! them, so the peer's messages still arrive.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_lite::FutureExt;
use otr::{DsaKeyPair, InstanceTag, Policy, Session, SessionConfig};
use otr_futures::Conversation;
use otr_relay_client::futures_client::{RelayFraming, connect_tls};

#[tokio::test]
async fn a_strangers_flood_does_not_stall_a_conversation() {
    let dir = TempDir::new("stranger-flood");
    for n in ["alice", "bob", "mallory"] {
        add(dir.path(), n);
    }
    let h = start(dir.path(), test_limits()).await;

    // Mallory, whom bob does not talk to, sends 200 messages: more than the delivery window.
    let (mallory, _mallory_inbox) = connect(&h, "mallory").await;
    for id in 1..=200 {
        mallory.send("bob", id, "?OTR:spam.").await.unwrap();
    }

    // Bob runs a conversation with alice only, through RelayFraming on async-std.
    let bob_config = config(&h, "bob");
    let stop = Arc::new(AtomicBool::new(false));
    let bob_stop = stop.clone();
    let bob = async_std::task::spawn(async move {
        let mut rng = otr::system_rng();
        let tag = InstanceTag::random(&mut rng);
        let session =
            Session::new(SessionConfig::new("bob", Policy::ALWAYS, tag), DsaKeyPair::generate(&mut rng));
        let tcp = async_std::net::TcpStream::connect(&bob_config.server).await.unwrap();
        let tls = connect_tls(tcp, &bob_config.server, bob_config.pin).await.unwrap();
        let framing = RelayFraming::new(&bob_config, "alice");
        let mut conv = Conversation::new(session, tls, framing, rng).unwrap();
        conv.flush().await.unwrap(); // the login
        // Bounded: at most 100 rounds of 100 ms (the test itself gives up after 10 s).
        for _ in 0..100 {
            if bob_stop.load(Ordering::Relaxed) {
                break;
            }
            let event = async { Some(conv.next_event().await) }
                .or(async {
                    async_io::Timer::after(Duration::from_millis(100)).await;
                    None
                })
                .await;
            if let Some(Err(e)) = event {
                panic!("bob's conversation failed: {e}");
            }
        }
    });

    // Alice asks bob for a private conversation; bob's session answers with a DH commit,
    // which reaches alice only if alice's query reached bob through mallory's 200 messages.
    let (alice, mut alice_inbox) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTRv3?").await.unwrap();
    let answer = recv(&mut alice_inbox, 10).await;
    assert_eq!(answer.from, "bob");
    assert!(answer.body.starts_with("?OTR:AAMC"), "a DH commit from bob: {}", answer.body);
    alice.ack(answer.seq).await.unwrap();

    // Bob acknowledged every delivery, mallory's included: the store drains.
    wait_stored(&h, 0).await;
    stop.store(true, Ordering::Relaxed);
    bob.await;
    h.shutdown().await.unwrap();
}
