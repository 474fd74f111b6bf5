//! Faults and limits: each test checks that the server answers with a clear error, stays up,
//! keeps serving other clients, and loses nothing it accepted.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use otr_relay::proto::{self, ClientFrame, PROTOCOL_VERSION, ServerFrame};
use otr_relay::{CertFingerprint, ErrorCode, Limits, ServerHandle};
use otr_relay_client::ClientError;
use otr_relay_client::tokio_client::Client;
use otr_relay_client::tokio_client::{connect_tls, connect_tls_with};
use tokio::io::AsyncWriteExt;

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn raw_login(h: &ServerHandle, name: &str) -> Tls {
    let mut tls = connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap();
    let login = ClientFrame::Login {
        version: PROTOCOL_VERSION,
        account: name.into(),
        secret: format!("secret-of-{name}"),
        device: None,
    };
    proto::write_frame(&mut tls, &login).await.unwrap();
    let welcome = read(&mut tls).await.unwrap();
    assert!(matches!(welcome, ServerFrame::Welcome { .. }), "{welcome:?}");
    tls
}

/// The next frame from the server, or `None` when it closed the connection (bounded: 5 s).
async fn read(tls: &mut Tls) -> Option<ServerFrame> {
    match tokio::time::timeout(Duration::from_secs(5), proto::read_frame(tls, 1 << 20)).await {
        Ok(Ok(bytes)) => Some(proto::decode(&bytes).unwrap()),
        Ok(Err(_)) => None,
        Err(_) => panic!("server neither answered nor closed within 5 s"),
    }
}

/// Alice sends one message to bob and bob receives and acks it: the server still serves.
async fn still_serving(h: &ServerHandle, id: u64) {
    let (alice, _a) = connect(h, "alice").await;
    let (bob, mut inbox) = connect(h, "bob").await;
    alice.send("bob", id, "?OTR:check.").await.unwrap();
    loop {
        let d = recv(&mut inbox, 5).await;
        bob.ack(d.seq).await.unwrap();
        if d.id == id {
            break;
        }
    }
}

async fn server(tag: &str, limits: Limits) -> (TempDir, ServerHandle) {
    let dir = TempDir::new(tag);
    for n in ["alice", "bob", "carol"] {
        add(dir.path(), n);
    }
    let h = start(dir.path(), limits).await;
    (dir, h)
}

#[tokio::test]
async fn wrong_pin_fails_clearly() {
    let (_d, h) = server("pin", test_limits()).await;
    let mut config = config(&h, "alice");
    config.pin = CertFingerprint([0x42; 32]);
    let err = Client::connect(config).await.unwrap_err();
    match &err {
        ClientError::PinMismatch { expected, presented } => {
            assert_eq!(*expected, CertFingerprint([0x42; 32]));
            assert_eq!(*presented, h.fingerprint());
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("does not match the pinned fingerprint"), "{err}");
    still_serving(&h, 1).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_delayed_and_limited() {
    let mut limits = test_limits();
    limits.max_login_failures = 3;
    limits.login_failure_delay = Duration::from_millis(100);
    let (_d, h) = server("secret", limits).await;
    let mut wrong = config(&h, "alice");
    wrong.secret = "not the secret".into();
    for _ in 0..3 {
        let t = Instant::now();
        match Client::connect(wrong.clone()).await.unwrap_err() {
            ClientError::Login { code: ErrorCode::AuthFailed, .. } => {}
            other => panic!("expected AuthFailed, got {other:?}"),
        }
        assert!(t.elapsed() >= Duration::from_millis(100), "failed logins are delayed");
    }
    // Locked out now, even with the right secret.
    match Client::connect(config(&h, "alice")).await.unwrap_err() {
        ClientError::Login { code: ErrorCode::TooManyAttempts, .. } => {}
        other => panic!("expected TooManyAttempts, got {other:?}"),
    }
    // An unknown account gets the same answer as a wrong secret.
    match Client::connect(config(&h, "mallory")).await.unwrap_err() {
        ClientError::Login { code: ErrorCode::AuthFailed, .. } => {}
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    // Others are unaffected.
    let (bob, _i) = connect(&h, "bob").await;
    bob.send("carol", 1, "?OTR:x.").await.unwrap();
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn disconnect_mid_frame() {
    let (_d, h) = server("midframe", test_limits()).await;
    // Before login: half a frame header, then gone.
    let mut tls = connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap();
    tls.write_all(&[0, 0]).await.unwrap();
    drop(tls);
    // After login: a Send frame cut in the middle.
    let mut tls = raw_login(&h, "alice").await;
    let frame = proto::encode(&ClientFrame::Send {
        to: "bob".into(),
        id: 9,
        body: "?OTR:cut.".into(),
        to_device: None,
    })
    .unwrap();
    tls.write_all(&frame[..frame.len() / 2]).await.unwrap();
    tls.flush().await.unwrap();
    drop(tls);
    still_serving(&h, 1).await;
    wait_stored(&h, 0).await; // the cut message was never accepted, so never stored
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn never_ack_means_redelivery_then_nothing_after_ack() {
    let (_d, h) = server("noack", test_limits()).await;
    let (alice, _a) = connect(&h, "alice").await;
    for i in 1..=5 {
        alice.send("bob", i, &format!("?OTR:{i}.")).await.unwrap();
    }
    // Another account cannot delete bob's messages: acks only ever concern one's own queue.
    let (carol, _c) = connect(&h, "carol").await;
    for seq in 0..=50 {
        carol.ack(seq).await.unwrap();
    }
    carol.close().await;
    let (bob, mut inbox) = connect(&h, "bob").await;
    assert_eq!(bob.pending_at_login(), 5);
    let mut first = Vec::new();
    for _ in 0..5 {
        first.push(recv(&mut inbox, 5).await);
    }
    quiet(&mut inbox, 200).await; // delivered once per connection
    drop(bob); // never acked

    let (bob, mut inbox) = connect(&h, "bob").await;
    let mut delivered_to_app = std::collections::HashSet::new();
    for expected in &first {
        let d = recv(&mut inbox, 5).await;
        assert_eq!(&d, expected, "redelivered in the same order, same seq");
        if delivered_to_app.insert(d.seq) {
            bob.ack(d.seq).await.unwrap();
        }
    }
    wait_stored(&h, 0).await;
    quiet(&mut inbox, 200).await;
    drop(bob);
    let (_bob, mut inbox) = connect(&h, "bob").await;
    quiet(&mut inbox, 300).await; // no duplicates after ack
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_100_mb_frame_announced() {
    let (_d, h) = server("huge", test_limits()).await;
    let (alice, _a) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:kept.").await.unwrap();
    for logged_in in [false, true] {
        let mut tls = if logged_in {
            raw_login(&h, "carol").await
        } else {
            connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap()
        };
        tls.write_all(&100_000_000u32.to_be_bytes()).await.unwrap();
        tls.write_all(&[0u8; 1024]).await.unwrap();
        tls.flush().await.unwrap();
        match read(&mut tls).await {
            Some(ServerFrame::Error { code: ErrorCode::FrameTooLarge, .. }) => {}
            other => panic!("expected FrameTooLarge, got {other:?}"),
        }
        assert_eq!(read(&mut tls).await, None, "then the connection is closed");
    }
    still_serving(&h, 2).await; // and bob also got the earlier message (id 1)
    wait_stored(&h, 0).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn ten_thousand_garbage_frames() {
    let mut limits = test_limits();
    limits.max_bad_frames = 1000;
    let (_d, h) = server("garbage", limits).await;
    let (alice, _a) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:kept.").await.unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut sent = 0;
    let mut connections = 0;
    let mut bad_frame_errors = 0;
    // Bounded: at most 100 connections of at most 1100 frames each.
    while sent < 10_000 && connections < 100 {
        connections += 1;
        let mut tls = raw_login(&h, "carol").await;
        let mut batch = Vec::new();
        let mut in_batch = 0;
        for _ in 0..1100 {
            if sent >= 10_000 {
                break;
            }
            let len = (rand() % 48) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // Variant indexes beyond the known frames guarantee garbage, not a valid frame.
            if let Some(first) = payload.first_mut() {
                *first |= 0x10;
            }
            batch.extend_from_slice(&(len as u32).to_be_bytes());
            batch.extend_from_slice(&payload);
            sent += 1;
            in_batch += 1;
        }
        if tls.write_all(&batch).await.is_err() || tls.flush().await.is_err() {
            continue;
        }
        // Read the answers until the server closes the connection (it does after 1000) or
        // every frame of the batch is answered.
        for _ in 0..in_batch {
            match read(&mut tls).await {
                Some(ServerFrame::Error { code: ErrorCode::BadFrame, .. }) => bad_frame_errors += 1,
                Some(other) => panic!("unexpected answer {other:?}"),
                None => break,
            }
        }
    }
    assert_eq!(sent, 10_000);
    assert!(bad_frame_errors >= 9_000, "each garbage frame is answered ({bad_frame_errors})");
    still_serving(&h, 2).await;
    wait_stored(&h, 0).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_reader_is_cut_off_without_hurting_others_or_losing_messages() {
    let mut limits = test_limits();
    limits.write_timeout = Duration::from_millis(500);
    let (_d, h) = server("slow", limits).await;
    let (alice, _a) = connect(&h, "alice").await;
    let body = format!("?OTR:{}.", "A".repeat(60_000));
    for i in 1..=100 {
        alice.send("carol", i, &body).await.unwrap();
    }
    // Carol logs in with a tiny receive buffer and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(h.addr()).await.unwrap();
    let mut carol = connect_tls_with(tcp, h.fingerprint()).await.unwrap();
    let login = ClientFrame::Login {
        version: PROTOCOL_VERSION,
        account: "carol".into(),
        secret: "secret-of-carol".into(),
        device: None,
    };
    proto::write_frame(&mut carol, &login).await.unwrap();

    // Meanwhile alice and bob talk with normal latency.
    let (bob, mut inbox) = connect(&h, "bob").await;
    let t = Instant::now();
    for i in 1..=20 {
        alice.send("bob", i, "?OTR:quick.").await.unwrap();
        let d = recv(&mut inbox, 5).await;
        bob.ack(d.seq).await.unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(5), "others unaffected: {:?}", t.elapsed());

    // The server gives up on carol after the write timeout: her connection ends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = false;
    for _ in 0..500 {
        match tokio::time::timeout(Duration::from_secs(5), proto::read_frame(&mut carol, 1 << 20)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => panic!("carol's connection neither delivers nor closes"),
        }
    }
    assert!(closed, "the slow reader was disconnected");
    drop(carol);

    // Nothing accepted was lost: carol reads everything on her next login, in order.
    let (carol, mut inbox) = connect(&h, "carol").await;
    for i in 1..=100 {
        let d = recv(&mut inbox, 10).await;
        assert_eq!(d.id, i);
        assert_eq!(d.body.len(), body.len());
        carol.ack(d.seq).await.unwrap();
    }
    wait_stored(&h, 0).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn limits_answer_with_error_frames() {
    let mut limits = test_limits();
    limits.queue_max_messages = 5;
    limits.max_connections_per_ip = 4;
    let (_d, h) = server("limits", limits).await;
    let (alice, _a) = connect(&h, "alice").await;
    // Queue length per recipient.
    for i in 1..=5 {
        alice.send("bob", i, "?OTR:q.").await.unwrap();
    }
    match alice.send("bob", 6, "?OTR:q.").await.unwrap_err() {
        ClientError::Refused { code: ErrorCode::QueueFull, .. } => {}
        other => panic!("expected QueueFull, got {other:?}"),
    }
    // Unknown recipient.
    match alice.send("nobody", 7, "?OTR:q.").await.unwrap_err() {
        ClientError::Refused { code: ErrorCode::UnknownRecipient, .. } => {}
        other => panic!("expected UnknownRecipient, got {other:?}"),
    }
    // Connections per address: alice holds one; three more (not yet logged in) fit, the
    // fifth is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap());
    }
    match Client::connect(config(&h, "carol")).await.unwrap_err() {
        ClientError::Login { code: ErrorCode::TooManyConnections, .. } => {}
        other => panic!("expected TooManyConnections, got {other:?}"),
    }
    drop(held);
    // The older of two logins of one account is told it was replaced.
    let (_c1, mut inbox1) = connect(&h, "carol").await;
    let (_c2, _inbox2) = connect(&h, "carol").await;
    match tokio::time::timeout(Duration::from_secs(5), inbox1.next()).await.unwrap() {
        Some(Err(ClientError::Server { code: ErrorCode::LoggedInElsewhere, .. })) => {}
        other => panic!("expected LoggedInElsewhere, got {other:?}"),
    }
    h.shutdown().await.unwrap();

    // Messages per second per account.
    let mut limits = test_limits();
    limits.messages_per_second = 1;
    limits.burst = 3;
    let (_d, h) = server("rate", limits).await;
    let (alice, _a) = connect(&h, "alice").await;
    for i in 1..=3 {
        alice.send("bob", i, "?OTR:r.").await.unwrap();
    }
    match alice.send("bob", 4, "?OTR:r.").await.unwrap_err() {
        ClientError::Refused { code: ErrorCode::RateLimited, .. } => {}
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Another account is not limited by alice's rate.
    let (carol, _c) = connect(&h, "carol").await;
    carol.send("bob", 1, "?OTR:r.").await.unwrap();
    h.shutdown().await.unwrap();

    // Idle timeout.
    let mut limits = test_limits();
    limits.idle_timeout = Duration::from_millis(300);
    let (_d, h) = server("idle", limits).await;
    let (_alice, mut inbox) = connect(&h, "alice").await;
    match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await.unwrap() {
        Some(Err(ClientError::Server { code: ErrorCode::IdleTimeout, .. })) => {}
        other => panic!("expected IdleTimeout, got {other:?}"),
    }
    // A client that pings stays connected.
    let mut c = config(&h, "bob");
    c.keepalive = Duration::from_millis(100);
    let (_bob, mut inbox) = Client::connect(c).await.unwrap();
    quiet(&mut inbox, 700).await;
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_tells_clients_and_keeps_the_store() {
    let dir = TempDir::new("shutdown");
    for n in ["alice", "bob"] {
        add(dir.path(), n);
    }
    let h = start(dir.path(), test_limits()).await;
    let (alice, mut inbox) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:kept.").await.unwrap();
    h.shutdown().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await.unwrap() {
        Some(Err(ClientError::Server { code: ErrorCode::ShuttingDown, .. })) => {}
        other => panic!("expected ShuttingDown, got {other:?}"),
    }
    // Same directory, new server: the message is still there.
    let h = start(dir.path(), test_limits()).await;
    let (bob, mut inbox) = connect(&h, "bob").await;
    let d = recv(&mut inbox, 5).await;
    assert_eq!(d.body, "?OTR:kept.");
    bob.ack(d.seq).await.unwrap();
    wait_stored(&h, 0).await;
    h.shutdown().await.unwrap();
}
