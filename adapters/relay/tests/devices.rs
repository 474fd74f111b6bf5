//! Several devices per account, with a real server on 127.0.0.1: every device of the recipient
//! gets every message, in order, and acknowledges its own copy; a device that was offline
//! gets its messages when it returns; the store holds a message until every device holding it
//! has acknowledged it, except for a device abandoned for longer than the message TTL. Push
//! registrations are stored per device, survive a restart, and bad ones are refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use otr_relay::proto::{self, ClientFrame, PROTOCOL_VERSION, ServerFrame};
use otr_relay::{Limits, Server, ServerConfig, ServerHandle, StoredHook};
use otr_relay_client::tokio_client::{Client, Inbox, connect_tls};
use otr_relay_client::{ClientError, ErrorCode, PushRegistration};

async fn server(tag: &str, limits: Limits) -> (TempDir, ServerHandle) {
    let dir = TempDir::new(tag);
    for name in ["alice", "bob"] {
        add(dir.path(), name);
    }
    let h = start(dir.path(), limits).await;
    (dir, h)
}

async fn device(h: &ServerHandle, name: &str, device: &str) -> (Client, Inbox) {
    let mut c = config(h, name);
    c.device = device.into();
    Client::connect(c).await.unwrap()
}

/// Receives `n` deliveries, checks they are alice's ids `first..first+n` in order, acks them.
async fn take_in_order(client: &Client, inbox: &mut Inbox, first: u64, n: u64) {
    for i in first..first + n {
        let d = recv(inbox, 10).await;
        assert_eq!((d.from.as_str(), d.id, d.body.as_str()), ("alice", i, format!("?OTR:m{i}.").as_str()));
        client.ack(d.seq).await.unwrap();
    }
}

async fn send_10(alice: &Client, first: u64) {
    for i in first..first + 10 {
        alice.send("bob", i, &format!("?OTR:m{i}.")).await.unwrap();
    }
}

/// Asserts the store keeps holding `n` messages for a while (acks are applied by then).
async fn still_stored(h: &ServerHandle, n: u64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.stored_messages().unwrap(), n);
}

#[tokio::test]
async fn every_device_gets_every_message_in_order() {
    let (_d, h) = server("dev-both", test_limits()).await;
    let (laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    let (phone, mut phone_in) = device(&h, "bob", "phone").await;
    let (alice, _alice_in) = connect(&h, "alice").await;
    send_10(&alice, 1).await;
    take_in_order(&laptop, &mut laptop_in, 1, 10).await;
    // The phone has not acknowledged anything yet: every message is still held for it.
    still_stored(&h, 10).await;
    take_in_order(&phone, &mut phone_in, 1, 10).await;
    wait_stored(&h, 0).await;
    quiet(&mut laptop_in, 200).await;
    quiet(&mut phone_in, 0).await;
    let mut devices = h.devices("bob").unwrap();
    devices.sort();
    assert_eq!(devices, ["laptop", "phone"]);
}

#[tokio::test]
async fn an_offline_device_gets_its_messages_when_it_returns() {
    let (_d, h) = server("dev-offline", test_limits()).await;
    // The phone logs in once (so it is registered), then goes away.
    let (phone, _) = device(&h, "bob", "phone").await;
    phone.close().await;
    let (laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    let (alice, _alice_in) = connect(&h, "alice").await;
    send_10(&alice, 1).await;
    take_in_order(&laptop, &mut laptop_in, 1, 10).await;
    still_stored(&h, 10).await; // held for the phone

    let (phone, mut phone_in) = device(&h, "bob", "phone").await;
    assert_eq!(phone.pending_at_login(), 10);
    take_in_order(&phone, &mut phone_in, 1, 10).await;
    quiet(&mut phone_in, 300).await; // once
    wait_stored(&h, 0).await;
    phone.close().await;
    let (phone, mut phone_in) = device(&h, "bob", "phone").await;
    assert_eq!(phone.pending_at_login(), 0);
    quiet(&mut phone_in, 200).await;
    quiet(&mut laptop_in, 0).await;
}

#[tokio::test]
async fn a_second_login_of_a_device_replaces_the_first() {
    let (_d, h) = server("dev-replace", test_limits()).await;
    let (_laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    let (_old, mut old_in) = device(&h, "bob", "phone").await;
    let (new, mut new_in) = device(&h, "bob", "phone").await;
    match tokio::time::timeout(Duration::from_secs(5), old_in.next()).await.unwrap() {
        Some(Err(ClientError::Server { code: ErrorCode::LoggedInElsewhere, .. })) => {}
        other => panic!("the replaced connection got {other:?}"),
    }
    let (alice, _alice_in) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:m1.").await.unwrap();
    let d = recv(&mut new_in, 5).await;
    new.ack(d.seq).await.unwrap();
    // The other device was not replaced: it gets its own copy.
    assert_eq!(recv(&mut laptop_in, 5).await.id, 1);
}

#[tokio::test]
async fn a_device_cannot_delete_another_devices_copy() {
    let (_d, h) = server("dev-acks", test_limits()).await;
    let (phone, _) = device(&h, "bob", "phone").await;
    phone.close().await;
    let (laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    let (alice, _alice_in) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:m1.").await.unwrap();
    let d = recv(&mut laptop_in, 5).await;
    laptop.ack(d.seq).await.unwrap();
    laptop.ack(d.seq).await.unwrap(); // idempotent
    // For the phone only: the laptop never sees it, and its acks of it change nothing.
    alice.send_to_device("bob", "phone", 2, "?OTR:m2.").await.unwrap();
    quiet(&mut laptop_in, 300).await;
    for seq in [d.seq + 1, d.seq + 2, d.seq, u64::MAX] {
        laptop.ack(seq).await.unwrap();
    }
    still_stored(&h, 2).await;

    let (phone, mut phone_in) = device(&h, "bob", "phone").await;
    assert_eq!(phone.pending_at_login(), 2);
    take_in_order(&phone, &mut phone_in, 1, 2).await;
    wait_stored(&h, 0).await;
    // A message for a device id that is not valid is refused, and says why.
    match alice.send_to_device("bob", "no such device!", 3, "?OTR:m3.").await {
        Err(ClientError::Refused { code: ErrorCode::BadDevice, message }) => {
            assert!(message.contains("device"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_abandoned_device_stops_holding_messages() {
    let ttl = Duration::from_secs(2);
    let (_d, h) = server("dev-abandoned", Limits { message_ttl: ttl, ..test_limits() }).await;
    let (phone, _) = device(&h, "bob", "phone").await;
    phone.close().await;
    let (laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    // The phone has been unseen for longer than the TTL: the laptop's acks delete.
    let (alice, _alice_in) = connect(&h, "alice").await;
    for i in 1..=3 {
        alice.send("bob", i, &format!("?OTR:m{i}.")).await.unwrap();
    }
    take_in_order(&laptop, &mut laptop_in, 1, 3).await;
    wait_stored(&h, 0).await;
    // A message meant for the abandoned phone is still the phone's: the laptop cannot ack it.
    alice.send_to_device("bob", "phone", 4, "?OTR:m4.").await.unwrap();
    alice.send("bob", 5, "?OTR:m5.").await.unwrap();
    let d = recv(&mut laptop_in, 5).await;
    assert_eq!(d.id, 5);
    for seq in [d.seq - 1, d.seq] {
        laptop.ack(seq).await.unwrap();
    }
    still_stored(&h, 1).await;
}

#[tokio::test]
async fn bad_device_ids_and_old_clients_are_refused_clearly() {
    let (_d, h) = server("dev-bad", test_limits()).await;
    let mut c = config(&h, "bob");
    c.device = "my phone".into();
    match Client::connect(c).await {
        Err(ClientError::Login { code: ErrorCode::BadDevice, message }) => {
            assert!(message.contains("device id"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A protocol-1 login (no device field) is told to update, not "undecodable".
    #[derive(serde::Serialize)]
    enum V1 {
        Login { version: u16, account: String, secret: String },
    }
    let mut tls = connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap();
    let old = V1::Login { version: 1, account: "bob".into(), secret: "secret-of-bob".into() };
    proto::write_frame(&mut tls, &old).await.unwrap();
    let bytes = proto::read_frame(&mut tls, 1 << 20).await.unwrap();
    match proto::decode::<ServerFrame>(&bytes).unwrap() {
        ServerFrame::Error { code: ErrorCode::UnsupportedVersion, message, .. } => {
            assert!(message.contains("update the client"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

fn web_push() -> PushRegistration {
    let mut key = vec![4u8; 65];
    key[1] = 7;
    PushRegistration {
        endpoint: "https://push.example/wpush/v2/abc".into(),
        p256dh: Some(key),
        auth: Some(vec![9; 16]),
    }
}

#[tokio::test]
async fn push_registrations_are_validated_stored_and_survive_a_restart() {
    let dir = TempDir::new("dev-push");
    add(dir.path(), "alice");
    add(dir.path(), "bob");
    let h = start(dir.path(), test_limits()).await;

    // Registered at login (ClientConfig::push), and later on another device.
    let mut c = config(&h, "bob");
    c.device = "phone".into();
    c.push = Some(web_push());
    let (phone, _phone_in) = Client::connect(c).await.unwrap();
    let (laptop, _laptop_in) = device(&h, "bob", "laptop").await;
    laptop.register_push(&PushRegistration::new("http://127.0.0.1:8080/up/1")).await.unwrap();
    laptop.register_push(&PushRegistration::new("https://ntfy.example/up/2")).await.unwrap(); // replaces
    // Refused by the client before sending, with the reason.
    let short = PushRegistration { auth: Some(vec![0; 15]), ..web_push() };
    match laptop.register_push(&short).await {
        Err(ClientError::PushRefused { message }) => assert!(message.contains("16 bytes"), "{message}"),
        other => panic!("{other:?}"),
    }

    // Refused by the relay too, and the connection stays usable.
    let mut tls = connect_tls(&h.addr().to_string(), h.fingerprint()).await.unwrap();
    let login = ClientFrame::Login {
        version: PROTOCOL_VERSION,
        account: "bob".into(),
        secret: "secret-of-bob".into(),
        device: Some("tablet".into()),
    };
    proto::write_frame(&mut tls, &login).await.unwrap();
    let read = |bytes: Vec<u8>| proto::decode::<ServerFrame>(&bytes).unwrap();
    assert!(matches!(read(proto::read_frame(&mut tls, 1 << 20).await.unwrap()), ServerFrame::Welcome { .. }));
    for (bad, why) in [
        (
            ClientFrame::RegisterPush { endpoint: "ftp://x.example/".into(), p256dh: None, auth: None },
            "https://",
        ),
        (
            ClientFrame::RegisterPush {
                endpoint: format!("https://x.example/{}", "a".repeat(2100)),
                p256dh: None,
                auth: None,
            },
            "2048",
        ),
        (
            ClientFrame::register_push(&PushRegistration { p256dh: Some(vec![4; 33]), ..web_push() }),
            "65 bytes",
        ),
    ] {
        proto::write_frame(&mut tls, &bad).await.unwrap();
        match read(proto::read_frame(&mut tls, 1 << 20).await.unwrap()) {
            ServerFrame::Error { code: ErrorCode::PushRefused, id: None, message } => {
                assert!(message.contains(why) && message.contains("nothing was registered"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    proto::write_frame(&mut tls, &ClientFrame::Ping { nonce: 5 }).await.unwrap();
    assert_eq!(read(proto::read_frame(&mut tls, 1 << 20).await.unwrap()), ServerFrame::Pong { nonce: 5 });
    proto::write_frame(&mut tls, &ClientFrame::UnregisterPush).await.unwrap(); // nothing to remove: fine
    assert_eq!(read(proto::read_frame(&mut tls, 1 << 20).await.unwrap()), ServerFrame::PushAck);
    drop(tls);

    let mut regs = h.push_registrations("bob").unwrap();
    regs.sort_by(|a, b| a.0.cmp(&b.0));
    let expected = vec![
        ("laptop".to_string(), PushRegistration::new("https://ntfy.example/up/2")),
        ("phone".to_string(), web_push()),
    ];
    assert_eq!(regs, expected);
    phone.close().await;
    laptop.close().await;
    h.shutdown().await.unwrap();

    // After a restart: the registrations are still there, and the stored-message hook names
    // the devices that hold a new message and have no connection.
    let told = Arc::new(Mutex::new(Vec::new()));
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path());
    config.limits = test_limits();
    config.argon2 = otr_relay::accounts::Argon2Params::TEST;
    let t = told.clone();
    config.on_stored = Some(StoredHook::new(move |account: &str, offline: &[String]| {
        let mut offline = offline.to_vec();
        offline.sort();
        t.lock().unwrap().push((account.to_string(), offline));
    }));
    let h = Server::bind(config).await.unwrap().spawn().unwrap();
    let mut regs = h.push_registrations("bob").unwrap();
    regs.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(regs, expected);

    let (laptop, _laptop_in) = device(&h, "bob", "laptop").await;
    let (alice, _alice_in) = connect(&h, "alice").await;
    alice.send("bob", 1, "?OTR:m1.").await.unwrap();
    alice.send_to_device("bob", "laptop", 2, "?OTR:m2.").await.unwrap();
    let told = told.lock().unwrap().clone();
    assert_eq!(
        told,
        [("bob".to_string(), vec!["phone".to_string(), "tablet".to_string()]), ("bob".to_string(), vec![])]
    );
    laptop.unregister_push().await.unwrap();
    assert_eq!(h.push_registrations("bob").unwrap(), vec![("phone".to_string(), web_push())]);
}

#[tokio::test]
async fn queue_limits_count_a_message_once_whatever_the_devices() {
    let limits = Limits { queue_max_messages: 5, ..test_limits() };
    let (_d, h) = server("dev-limits", limits).await;
    let (laptop, mut laptop_in) = device(&h, "bob", "laptop").await;
    let (phone, mut phone_in) = device(&h, "bob", "phone").await;
    let (alice, _alice_in) = connect(&h, "alice").await;
    for i in 1..=5 {
        alice.send("bob", i, &format!("?OTR:m{i}.")).await.unwrap();
    }
    wait_stored(&h, 5).await; // five messages, not ten copies
    let full = alice.send("bob", 6, "?OTR:m6.").await;
    assert!(matches!(full, Err(ClientError::Refused { code: ErrorCode::QueueFull, .. })), "{full:?}");
    // One device's acks do not free the queue while the other still holds the messages.
    take_in_order(&laptop, &mut laptop_in, 1, 5).await;
    still_stored(&h, 5).await;
    let full = alice.send("bob", 6, "?OTR:m6.").await;
    assert!(matches!(full, Err(ClientError::Refused { code: ErrorCode::QueueFull, .. })), "{full:?}");
    take_in_order(&phone, &mut phone_in, 1, 5).await;
    wait_stored(&h, 0).await;
    alice.send("bob", 6, "?OTR:m6.").await.unwrap();
}
