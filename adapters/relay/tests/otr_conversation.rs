//! Two OTR clients (REQUIRE_ENCRYPTION) hold a conversation through the relay over real TLS:
//! AKE, 100 messages each way, end. The relay only ever carries OTR-encoded strings, and its
//! store is empty afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use otr::{DsaKeyPair, Event, InstanceTag, Policy, Sent, Session, SessionConfig, SystemRng, Timestamp};
use otr_relay_client::tokio_client::{Client, Delivery, Inbox};

struct Peer {
    name: &'static str,
    peer: &'static str,
    session: Session,
    client: Client,
    inbox: Inbox,
    rng: SystemRng,
    next_id: u64,
    received: Vec<String>,
    secure: bool,
    remote_ended: bool,
    relayed: usize,
}

impl Peer {
    fn new(name: &'static str, peer: &'static str, (client, inbox): (Client, Inbox)) -> Self {
        let mut rng = otr::system_rng();
        let tag = InstanceTag::random(&mut rng);
        let key = DsaKeyPair::generate(&mut rng);
        let session = Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), key);
        Self {
            name,
            peer,
            session,
            client,
            inbox,
            rng,
            next_id: 0,
            received: Vec::new(),
            secure: false,
            remote_ended: false,
            relayed: 0,
        }
    }

    /// Sends everything the session wants on the network, and takes its events.
    async fn flush(&mut self) {
        while let Some(t) = self.session.poll_transmit() {
            assert!(t.message.starts_with("?OTR"), "{} would send a non-OTR string", self.name);
            self.next_id += 1;
            self.client.send(self.peer, self.next_id, &t.message).await.unwrap();
        }
        while let Some(e) = self.session.poll_event() {
            match e {
                Event::Secure { .. } => self.secure = true,
                Event::Message { text, encrypted, .. } => {
                    assert!(encrypted, "{} got a plaintext message", self.name);
                    self.received.push(text);
                }
                Event::RemoteEnded { .. } => self.remote_ended = true,
                _ => {}
            }
        }
    }

    async fn handle(&mut self, d: Delivery, now: Timestamp) {
        assert_eq!(d.from, self.peer);
        assert!(d.body.starts_with("?OTR"), "the relay carried a non-OTR string");
        assert!(!d.body.contains("message "), "plaintext visible to the relay");
        self.relayed += 1;
        self.session.receive(now, &d.body, &mut self.rng).unwrap();
        self.client.ack(d.seq).await.unwrap();
        self.flush().await;
    }
}

/// Routes deliveries until `done` holds; bounded in steps and time.
async fn run_until(a: &mut Peer, b: &mut Peer, start: Instant, done: impl Fn(&Peer, &Peer) -> bool) {
    for _ in 0..5_000 {
        if done(a, b) {
            return;
        }
        let now = Timestamp(start.elapsed().as_millis() as u64);
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                d = a.inbox.next() => (true, d),
                d = b.inbox.next() => (false, d),
            }
        })
        .await
        .expect("no delivery within 10 s");
        match next {
            (true, Some(Ok(d))) => a.handle(d, now).await,
            (false, Some(Ok(d))) => b.handle(d, now).await,
            (_, other) => panic!("inbox ended: {other:?}"),
        }
    }
    panic!("conversation did not finish in 5000 steps");
}

#[tokio::test]
async fn otr_conversation_through_the_relay() {
    let dir = TempDir::new("otr");
    add(dir.path(), "alice");
    add(dir.path(), "bob");
    let h = start(dir.path(), test_limits()).await;
    let mut alice = Peer::new("alice", "bob", connect(&h, "alice").await);
    let mut bob = Peer::new("bob", "alice", connect(&h, "bob").await);
    let t0 = Instant::now();

    // REQUIRE_ENCRYPTION: a send before the AKE is held, and a query goes out instead.
    let held = alice.session.send(Timestamp(0), "message held").unwrap();
    assert_eq!(held, Sent::Held);
    alice.flush().await;
    run_until(&mut alice, &mut bob, t0, |a, b| a.secure && b.secure && b.received.len() == 1).await;
    assert_eq!(bob.received, ["message held"]);
    bob.received.clear();

    for i in 0..100 {
        let now = Timestamp(t0.elapsed().as_millis() as u64);
        assert_eq!(alice.session.send(now, &format!("message {i} from alice")).unwrap(), Sent::Encrypted);
        alice.flush().await;
        assert_eq!(bob.session.send(now, &format!("message {i} from bob")).unwrap(), Sent::Encrypted);
        bob.flush().await;
    }
    run_until(&mut alice, &mut bob, t0, |a, b| a.received.len() == 100 && b.received.len() == 100).await;
    for i in 0..100 {
        assert_eq!(bob.received[i], format!("message {i} from alice"));
        assert_eq!(alice.received[i], format!("message {i} from bob"));
    }

    alice.session.end(Timestamp(t0.elapsed().as_millis() as u64));
    alice.flush().await;
    run_until(&mut alice, &mut bob, t0, |_, b| b.remote_ended).await;
    assert!(alice.relayed >= 100 && bob.relayed >= 101);

    // Every delivery was acked: the relay keeps nothing.
    for _ in 0..100 {
        if h.stored_messages().unwrap() == 0 {
            break;
        }
        // Late heartbeats may still be in flight: keep routing them.
        let now = Timestamp(t0.elapsed().as_millis() as u64);
        tokio::select! {
            Some(Ok(d)) = alice.inbox.next() => alice.handle(d, now).await,
            Some(Ok(d)) = bob.inbox.next() => bob.handle(d, now).await,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    assert_eq!(h.stored_messages().unwrap(), 0, "the store is empty afterwards");
    alice.client.close().await;
    bob.client.close().await;
    h.shutdown().await.unwrap();
}
