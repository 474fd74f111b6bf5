//! The adapter over real TCP sockets on 127.0.0.1, on async-std and on smol: a whole
//! conversation, the transport closing in the middle of the key exchange, and a peer that
//! vanishes while the timers keep working (without a busy loop).
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::time::Duration;

use async_io::Timer;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt, future};
use otr_core::{
    DsaKeyPair, Event, InstanceTag, Policy, Sent, Session, SessionConfig, data, fragment, message,
};
use otr_futures::{Clock, Conversation, Error, Framing, LengthPrefixed, Phase, Update};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

type Conv<S> = Conversation<S, LengthPrefixed, ChaCha20Rng>;

fn session(name: &str, seed: u64) -> (Session, ChaCha20Rng) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let tag = InstanceTag::random(&mut rng);
    let key = DsaKeyPair::generate(&mut rng);
    (Session::new(SessionConfig::new(name, Policy::ALWAYS, tag), key), rng)
}

fn conversation<S: Stream>(name: &str, seed: u64, stream: S) -> Conv<S> {
    let (s, rng) = session(name, seed);
    Conversation::new(s, stream, LengthPrefixed::default(), rng).unwrap()
}

/// Fails the test if `f` takes longer than `secs` seconds of real time.
async fn bounded<T>(secs: u64, f: impl Future<Output = T>) -> T {
    f.or(async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("not done within {secs} s");
    })
    .await
}

/// The next session event, skipping nothing silently: refused messages fail the test.
async fn event<S: Stream>(c: &mut Conv<S>) -> Event {
    match c.next_event().await.unwrap() {
        Update::Event(e) => e,
        other => panic!("unexpected update {other:?}"),
    }
}

async fn whole_conversation<S: Stream>(a: S, b: S) {
    let mut alice = conversation("alice", 1, a);
    let mut bob = conversation("bob", 2, b);
    // REQUIRE_ENCRYPTION: the first message waits for the AKE, a query goes out instead.
    assert_eq!(alice.send("hello bob").await.unwrap(), Sent::Held);
    let alice_side = async {
        let mut secure = None;
        loop {
            match event(&mut alice).await {
                Event::Secure { fingerprint, .. } => secure = Some(fingerprint),
                Event::Message { text, encrypted, .. } => {
                    assert!(encrypted);
                    assert_eq!(text, "hello alice");
                    break;
                }
                e => panic!("alice: {e:?}"),
            }
        }
        let key = alice.extra_symmetric_key(7, b"file.txt").await.unwrap();
        alice.end().await.unwrap();
        assert!(matches!(event(&mut alice).await, Event::Ended { .. }));
        (secure.unwrap(), key)
    };
    let bob_side = async {
        let mut secure = None;
        let mut key = None;
        loop {
            match event(&mut bob).await {
                Event::Secure { fingerprint, .. } => secure = Some(fingerprint),
                Event::Message { text, encrypted, .. } => {
                    assert!(encrypted);
                    assert_eq!(text, "hello bob");
                    assert_eq!(bob.send("hello alice").await.unwrap(), Sent::Encrypted);
                }
                Event::ExtraSymmetricKey { key: k, use_, usedata, .. } => {
                    assert_eq!((use_, usedata.as_slice()), (7, &b"file.txt"[..]));
                    key = Some(k);
                }
                Event::RemoteEnded { .. } => break,
                e => panic!("bob: {e:?}"),
            }
        }
        (secure.unwrap(), key.unwrap())
    };
    let ((bob_fp, alice_key), (alice_fp, bob_key)) = bounded(20, future::zip(alice_side, bob_side)).await;
    assert_eq!(bob_fp, bob.session().identity().fingerprint());
    assert_eq!(alice_fp, alice.session().identity().fingerprint());
    assert_eq!(*alice_key, *bob_key, "both sides derive the same extra symmetric key");
    // After the end, bob (FINISHED) refuses to send; nothing goes out.
    assert!(matches!(bob.send("anyone?").await, Err(Error::Send(_))));
    assert!(alice.stats().sent >= 5 && bob.stats().sent >= 3, "{:?} {:?}", alice.stats(), bob.stats());
}

/// Reads one length-prefixed message from a raw stream.
async fn read_msg<S: Stream>(s: &mut S) -> String {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(head) as usize];
    s.read_exact(&mut body).await.unwrap();
    String::from_utf8(body).unwrap()
}

async fn write_msg<S: Stream>(s: &mut S, m: &str) {
    let mut out = Vec::new();
    LengthPrefixed::default().encode(m, &mut out).unwrap();
    s.write_all(&out).await.unwrap();
    s.flush().await.unwrap();
}

/// Bob without an adapter: a session driven by hand over the raw stream, so the test
/// controls exactly what it sends and when it stops.
struct RawPeer<S> {
    session: Session,
    rng: ChaCha20Rng,
    stream: S,
}

impl<S: Stream> RawPeer<S> {
    async fn answer(&mut self, incoming: &str) {
        self.session.receive(otr_core::Timestamp(0), incoming, &mut self.rng).unwrap();
        while let Some(t) = self.session.poll_transmit() {
            write_msg(&mut self.stream, &t.message).await;
        }
    }
}

async fn closed_mid_ake<S: Stream>(a: S, b: S) {
    let mut alice = conversation("alice", 3, a);
    let (session, rng) = session("bob", 4);
    let mut bob = RawPeer { session, rng, stream: b };
    alice.start().await.unwrap();
    let bob_side = async {
        let query = read_msg(&mut bob.stream).await;
        assert!(query.starts_with("?OTRv3?"), "{query}");
        bob.answer(&query).await; // D-H Commit
        let dh_key = read_msg(&mut bob.stream).await;
        assert!(dh_key.starts_with("?OTR:AAMK"), "alice answers with a D-H Key: {dh_key}");
        drop(bob); // gone in the middle of the AKE
    };
    let alice_side = async {
        let err = alice.next_event().await.unwrap_err();
        assert!(matches!(err, Error::Closed(Phase::DuringKeyExchange)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("during the key exchange") && text.contains("never became private"), "{text}");
        // Closed stays closed, with the same clear error, and nothing panics.
        assert!(matches!(alice.next_event().await, Err(Error::Closed(Phase::DuringKeyExchange))));
        assert!(matches!(alice.send("still there?").await, Err(Error::Closed(_))));
    };
    bounded(20, future::zip(alice_side, bob_side)).await;
    assert!(alice.session().private_with().is_none());
}

async fn peer_vanishes<S: Stream>(a: S, b: S) {
    // 1000x: the 60 s heartbeat is due after 60 ms, a partial message expires after 120 ms.
    let mut alice = conversation("alice", 5, a).with_clock(Clock::accelerated(1000));
    let (session, rng) = session("bob", 6);
    let mut bob = RawPeer { session, rng, stream: b };
    alice.start().await.unwrap();
    // Run the AKE with bob by hand until alice is private.
    bounded(20, async {
        let alice_side = async {
            assert!(matches!(event(&mut alice).await, Event::Secure { .. }));
        };
        let bob_side = async {
            while bob.session.private_with().is_none() {
                let m = read_msg(&mut bob.stream).await;
                bob.answer(&m).await;
            }
        };
        future::zip(alice_side, bob_side).await;
    })
    .await;
    // Bob sends a message (alice now owes a heartbeat) and the first half of another...
    let now = otr_core::Timestamp(0);
    bob.session.send(now, "are you there?").unwrap();
    let whole = bob.session.poll_transmit().unwrap().message;
    write_msg(&mut bob.stream, &whole).await;
    bob.session.send(now, "a longer message that never arrives whole").unwrap();
    let long = bob.session.poll_transmit().unwrap().message;
    let tags = (bob.session.instance_tag().get(), alice.session().instance_tag().get());
    let pieces = fragment::split(&long, 80, Some(tags)).expect("longer than 80 bytes");
    assert!(pieces.len() > 1);
    write_msg(&mut bob.stream, &pieces[0]).await;
    // ...and vanishes: its socket stays open, it reads and writes nothing more.
    let msg = bounded(10, event(&mut alice)).await;
    assert!(matches!(msg, Event::Message { ref text, encrypted: true, .. } if text == "are you there?"));
    // Drive alice to have read the fragment too (nothing to report for it).
    let before = alice.stats();
    // 400 ms of real time is 400 s of clock time: heartbeat and fragment expiry are due,
    // then nothing more. next_event must stay pending throughout (nothing to report).
    let idle = async {
        let u = alice.next_event().await;
        panic!("nothing should be reported while bob is silent: {u:?}");
    };
    idle.or(async { Timer::after(Duration::from_millis(400)).await }).await;
    let after = alice.stats();
    assert_eq!(after.received, before.received + 1, "the fragment was read");
    assert_eq!(alice.session().buffered_fragment_bytes(), 0, "the partial message expired");
    assert_eq!(after.sent, before.sent + 1, "exactly one heartbeat went out");
    assert!(after.timeouts - before.timeouts >= 1 && after.timeouts - before.timeouts <= 3, "{after:?}");
    // No busy loop: a handful of wakeups (fragment, timers), not thousands.
    let wakeups = after.iterations - before.iterations;
    println!("idle 400 ms (400 s of clock time): {wakeups} loop iterations, {after:?}");
    assert!(wakeups <= 20, "{wakeups} loop iterations while idle");
    assert_eq!(alice.session().poll_timeout(), None, "nothing more is due");
    // The heartbeat bob finds on its socket: an empty data message flagged IGNORE_UNREADABLE.
    let hb = bounded(5, read_msg(&mut bob.stream)).await;
    let message::Incoming::Encoded(bytes) = message::classify(&hb).unwrap() else { panic!("{hb}") };
    assert_eq!(data::DataMessage::peek_flags(&bytes), Some(data::FLAG_IGNORE_UNREADABLE));
    while bob.session.poll_event().is_some() {} // its own Secure event
    bob.session.receive(now, &hb, &mut bob.rng).unwrap();
    assert!(bob.session.poll_event().is_none(), "a heartbeat shows nothing");
}

/// The transport breaks while private; both sides move to a new stream and keep talking in
/// the same private conversation: no new key exchange, same ssid, messages still encrypted.
async fn reconnect_keeps_the_session<S: Stream>(a: S, b: S, a2: S, b2: S) {
    let mut alice = conversation("alice", 7, a);
    let mut bob = conversation("bob", 8, b);
    alice.start().await.unwrap();
    let go_private =
        future::zip(async { assert!(matches!(event(&mut alice).await, Event::Secure { .. })) }, async {
            assert!(matches!(event(&mut bob).await, Event::Secure { .. }))
        });
    bounded(20, go_private).await;
    let ssid = alice.session().private_with().unwrap().2;
    alice.send("before").await.unwrap();
    let got = bounded(10, event(&mut bob)).await;
    assert!(matches!(got, Event::Message { ref text, encrypted: true, .. } if text == "before"), "{got:?}");

    // Bob's network goes away: he is taken apart (session, framing, RNG, clock kept) and his
    // old stream dropped. Alice sees the transport close while private.
    let (mut link, old, clock) = bob.into_parts();
    drop(old);
    let err = bounded(10, alice.next_event()).await.unwrap_err();
    assert!(matches!(err, Error::Closed(Phase::Private)), "{err:?}");
    assert!(alice.send("into the void").await.is_err(), "a closed transport says so");

    // Both come back on new streams: bob rebuilt from his parts, alice in place.
    link.reconnect(clock.now()).unwrap();
    let mut bob = Conversation::from_parts(link, b2, clock);
    let old = alice.replace_transport(a2).unwrap();
    drop(old);
    assert_eq!(alice.session().private_with().unwrap().2, ssid);
    assert_eq!(bob.session().private_with().unwrap().2, ssid);
    bob.send("after, from bob").await.unwrap();
    let got = bounded(10, event(&mut alice)).await;
    assert!(
        matches!(got, Event::Message { ref text, encrypted: true, .. } if text == "after, from bob"),
        "{got:?}"
    );
    let sent_before = alice.stats().sent;
    alice.send("after, from alice").await.unwrap();
    // "into the void" was framed when the old transport failed; it was never completely
    // written, so the new transport carries it first. Every message is private, and no key
    // exchange runs (a Secure event would fail the test).
    let mut texts = Vec::new();
    while texts.last().map(String::as_str) != Some("after, from alice") {
        match bounded(10, event(&mut bob)).await {
            Event::Message { text, encrypted: true, .. } => texts.push(text),
            e => panic!("bob after the reconnect: {e:?}"),
        }
    }
    assert_eq!(texts, ["into the void", "after, from alice"]);
    assert_eq!(alice.stats().sent, sent_before + 1);
    assert_eq!(alice.session().private_with().unwrap().2, ssid, "same private conversation");
}

// ---- async-std ----

async fn async_std_pair() -> (async_std::net::TcpStream, async_std::net::TcpStream) {
    let l = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = future::zip(async_std::net::TcpStream::connect(addr), l.accept()).await;
    (a.unwrap(), b.unwrap().0)
}

#[test]
fn async_std_conversation() {
    async_std::task::block_on(async {
        let (a, b) = async_std_pair().await;
        whole_conversation(a, b).await;
    });
}

#[test]
fn async_std_closed_mid_ake() {
    async_std::task::block_on(async {
        let (a, b) = async_std_pair().await;
        closed_mid_ake(a, b).await;
    });
}

#[test]
fn async_std_peer_vanishes() {
    async_std::task::block_on(async {
        let (a, b) = async_std_pair().await;
        peer_vanishes(a, b).await;
    });
}

#[test]
fn async_std_reconnect_keeps_the_session() {
    async_std::task::block_on(async {
        let (a, b) = async_std_pair().await;
        let (a2, b2) = async_std_pair().await;
        reconnect_keeps_the_session(a, b, a2, b2).await;
    });
}

// ---- smol ----

async fn smol_pair() -> (smol::net::TcpStream, smol::net::TcpStream) {
    let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (a, b) = future::zip(smol::net::TcpStream::connect(addr), l.accept()).await;
    (a.unwrap(), b.unwrap().0)
}

#[test]
fn smol_conversation() {
    smol::block_on(async {
        let (a, b) = smol_pair().await;
        whole_conversation(a, b).await;
    });
}

#[test]
fn smol_closed_mid_ake() {
    smol::block_on(async {
        let (a, b) = smol_pair().await;
        closed_mid_ake(a, b).await;
    });
}

#[test]
fn smol_reconnect_keeps_the_session() {
    smol::block_on(async {
        let (a, b) = smol_pair().await;
        let (a2, b2) = smol_pair().await;
        reconnect_keeps_the_session(a, b, a2, b2).await;
    });
}

#[test]
fn smol_peer_vanishes() {
    smol::block_on(async {
        let (a, b) = smol_pair().await;
        peer_vanishes(a, b).await;
    });
}
