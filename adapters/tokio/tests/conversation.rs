//! The tokio adapter over in-memory duplex pipes: a whole conversation (AKE, messages, SMP
//! with a question, the extra symmetric key, the end), the transport closing mid-AKE, a
//! heartbeat fired by tokio timers, and a reconnect that keeps the private conversation.
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::time::Duration;

use otr_core::{DsaKeyPair, Event, InstanceTag, Policy, Sent, Session, SessionConfig};
use otr_tokio::{Clock, Conversation, Error, LengthPrefixed, Phase, Update};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tokio::io::DuplexStream;

type Conv = Conversation<DuplexStream, LengthPrefixed, ChaCha20Rng>;

fn conversation(name: &str, seed: u64, stream: DuplexStream) -> Conv {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let tag = InstanceTag::random(&mut rng);
    let key = DsaKeyPair::generate(&mut rng);
    let session = Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), key);
    Conversation::new(session, stream, LengthPrefixed::default(), rng).unwrap()
}

fn pipe() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

/// Fails the test if `f` takes longer than `secs` seconds of real time.
async fn bounded<T>(secs: u64, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("not done within {secs} s"))
}

/// The next session event; anything else (a refused message) fails the test.
async fn event(c: &mut Conv) -> Event {
    match c.next_event().await.unwrap() {
        Update::Event(e) => e,
        other => panic!("unexpected update {other:?}"),
    }
}

async fn go_private(alice: &mut Conv, bob: &mut Conv) {
    alice.start().await.unwrap();
    let a = async { assert!(matches!(event(alice).await, Event::Secure { .. })) };
    let b = async { assert!(matches!(event(bob).await, Event::Secure { .. })) };
    bounded(20, async { tokio::join!(a, b) }).await;
}

#[tokio::test]
async fn whole_conversation_with_smp() {
    let (a, b) = pipe();
    let mut alice = conversation("alice", 1, a);
    let mut bob = conversation("bob", 2, b);
    // REQUIRE_ENCRYPTION: the first message waits for the AKE, a query goes out instead.
    assert_eq!(alice.send("hello bob").await.unwrap(), Sent::Held);
    let alice_side = async {
        let mut secure = false;
        loop {
            match event(&mut alice).await {
                Event::Secure { .. } => {
                    secure = true;
                    alice.smp_start(Some("our cat?"), b"tom").await.unwrap();
                }
                Event::SmpSucceeded { .. } => break,
                Event::Message { text, encrypted: true, .. } => assert_eq!(text, "hello alice"),
                e => panic!("alice: {e:?}"),
            }
        }
        let key = alice.extra_symmetric_key(7, b"file.txt").await.unwrap();
        alice.end().await.unwrap();
        assert!(matches!(event(&mut alice).await, Event::Ended { .. }));
        assert!(secure);
        key
    };
    let bob_side = async {
        let mut key = None;
        let mut smp = false;
        loop {
            match event(&mut bob).await {
                Event::Secure { .. } => {}
                Event::Message { text, encrypted: true, .. } => {
                    assert_eq!(text, "hello bob");
                    assert_eq!(bob.send("hello alice").await.unwrap(), Sent::Encrypted);
                }
                Event::SmpRequest { question, .. } => {
                    assert_eq!(question.as_deref(), Some("our cat?"));
                    bob.smp_respond(b"tom").await.unwrap();
                }
                Event::SmpSucceeded { .. } => smp = true,
                Event::ExtraSymmetricKey { key: k, use_: 7, .. } => key = Some(k),
                Event::RemoteEnded { .. } => break,
                e => panic!("bob: {e:?}"),
            }
        }
        assert!(smp, "both sides learn SMP succeeded");
        key.unwrap()
    };
    let (alice_key, bob_key) = bounded(20, async { tokio::join!(alice_side, bob_side) }).await;
    assert_eq!(*alice_key, *bob_key, "both sides derive the same extra symmetric key");
    assert!(matches!(bob.send("anyone?").await, Err(Error::Send(_))), "FINISHED refuses to send");
}

#[tokio::test]
async fn closed_mid_ake_says_so() {
    let (a, b) = pipe();
    let mut alice = conversation("alice", 3, a);
    alice.start().await.unwrap();
    // Bob answers the query with a D-H Commit (his loop reports nothing during the AKE)...
    let mut bob = conversation("bob", 4, b);
    tokio::select! {
        u = bob.next_event() => panic!("bob reports nothing before alice answers: {u:?}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    // ...and his end goes away before the AKE ends.
    let alice_side = async {
        let err = alice.next_event().await.unwrap_err();
        assert!(matches!(err, Error::Closed(Phase::DuringKeyExchange)), "{err:?}");
        assert!(err.to_string().contains("never became private"), "{err}");
    };
    drop(bob);
    bounded(10, alice_side).await;
    assert!(matches!(alice.next_event().await, Err(Error::Closed(Phase::DuringKeyExchange))));
    assert!(alice.session().private_with().is_none());
}

#[tokio::test]
async fn heartbeat_fires_on_tokio_timers() {
    let (a, b) = pipe();
    // 1000x: the 60 s heartbeat is due after 60 ms of real time.
    let mut alice = conversation("alice", 5, a).with_clock(Clock::accelerated(1000));
    let mut bob = conversation("bob", 6, b);
    go_private(&mut alice, &mut bob).await;
    bob.send("are you there?").await.unwrap();
    let got = bounded(10, event(&mut alice)).await;
    assert!(matches!(got, Event::Message { ref text, encrypted: true, .. } if text == "are you there?"));
    let before = alice.stats();
    // Alice owes bob a heartbeat; nothing is reported while it goes out.
    let idle = async {
        let u = alice.next_event().await;
        panic!("nothing should be reported: {u:?}");
    };
    tokio::select! {
        () = idle => {}
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    let after = alice.stats();
    assert_eq!(after.sent, before.sent + 1, "exactly one heartbeat went out: {after:?}");
    assert!(after.iterations - before.iterations <= 20, "no busy loop: {after:?}");
    assert_eq!(alice.session().poll_timeout(), None, "nothing more is due");
    // Bob reads it and shows nothing; the conversation goes on.
    alice.send("yes").await.unwrap();
    let got = bounded(10, event(&mut bob)).await;
    assert!(matches!(got, Event::Message { ref text, encrypted: true, .. } if text == "yes"), "{got:?}");
}

#[tokio::test]
async fn reconnect_keeps_the_private_conversation() {
    let (a, b) = pipe();
    let mut alice = conversation("alice", 7, a);
    let mut bob = conversation("bob", 8, b);
    go_private(&mut alice, &mut bob).await;
    let ssid = alice.session().private_with().unwrap().2;
    // The pipe breaks: bob is taken apart and his end dropped; alice sees it close.
    let (mut link, old, clock) = bob.into_parts();
    drop(old);
    let err = bounded(10, alice.next_event()).await.unwrap_err();
    assert!(matches!(err, Error::Closed(Phase::Private)), "{err:?}");
    // A new pipe: bob rebuilt from his parts, alice in place.
    let (a2, b2) = pipe();
    link.reconnect(clock.now()).unwrap();
    let mut bob = Conversation::from_parts(link, b2, clock);
    drop(alice.replace_transport(a2).unwrap());
    for (from_alice, text) in [(true, "one"), (false, "two"), (true, "three")] {
        let (tx, rx) = if from_alice { (&mut alice, &mut bob) } else { (&mut bob, &mut alice) };
        assert_eq!(tx.send(text).await.unwrap(), Sent::Encrypted);
        match bounded(10, event(rx)).await {
            Event::Message { text: got, encrypted: true, .. } => assert_eq!(got, text),
            e => panic!("after the reconnect: {e:?} (a new key exchange?)"),
        }
    }
    assert_eq!(alice.session().private_with().unwrap().2, ssid, "same private conversation");
    assert_eq!(bob.session().private_with().unwrap().2, ssid);
}
