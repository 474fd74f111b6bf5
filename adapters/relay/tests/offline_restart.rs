//! Offline delivery across a hard server restart, with the real `otr-relay` binary: bob is
//! offline, alice sends 50 messages, the server is killed (SIGKILL) and restarted on the same
//! data directory, and bob gets all 50 exactly once, in order. Then SIGTERM stops it cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use otr_relay::CertFingerprint;
use otr_relay_client::ClientConfig;
use otr_relay_client::tokio_client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_otr-relay");
const ARGON2: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

struct Relay {
    child: Child,
    addr: String,
    fingerprint: CertFingerprint,
}

fn start_relay(dir: &std::path::Path) -> Relay {
    let mut child = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(ARGON2)
        .args(["--login-failure-delay-ms", "50", "--shutdown-grace", "2", "--log", "warn"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut fingerprint = None;
    // The two lines arrive at once; the reads are bounded by the child's output.
    for _ in 0..2 {
        let line = lines.next().expect("relay printed nothing").unwrap();
        if let Some(a) = line.strip_prefix("otr-relay listening on ") {
            addr = Some(a.to_string());
        } else if let Some(f) = line.strip_prefix("certificate SHA-256 fingerprint: ") {
            fingerprint = Some(f.parse().unwrap());
        }
    }
    Relay { child, addr: addr.unwrap(), fingerprint: fingerprint.unwrap() }
}

fn add_account(dir: &std::path::Path, name: &str) -> String {
    let secret = format!("secret-of-{name}");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(ARGON2)
        .args(["add-account", name, "--secret-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{secret}").unwrap();
    assert!(child.wait().unwrap().success());
    secret
}

fn client_config(r: &Relay, name: &str, secret: &str) -> ClientConfig {
    ClientConfig::new(r.addr.clone(), r.fingerprint, name, secret)
}

#[tokio::test]
async fn offline_delivery_survives_a_kill_and_restart() {
    let dir = TempDir::new("restart");
    let alice_secret = add_account(dir.path(), "alice");
    let bob_secret = add_account(dir.path(), "bob");
    let mut relay = start_relay(dir.path());

    let (alice, _alice_inbox) = Client::connect(client_config(&relay, "alice", &alice_secret)).await.unwrap();
    for i in 1..=50u64 {
        alice.send("bob", i, &format!("?OTR:opaque-{i}.")).await.unwrap();
    }
    drop(alice);

    // Hard kill: no graceful anything. Every "accepted" must already be on disk.
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    let first_fp = relay.fingerprint;
    let mut relay = start_relay(dir.path());
    assert_eq!(relay.fingerprint, first_fp, "the generated certificate persists");

    let (bob, mut inbox) = Client::connect(client_config(&relay, "bob", &bob_secret)).await.unwrap();
    assert_eq!(bob.pending_at_login(), 50);
    for i in 1..=50u64 {
        let d = recv(&mut inbox, 10).await;
        assert_eq!((d.from.as_str(), d.id), ("alice", i), "in order");
        assert_eq!(d.body, format!("?OTR:opaque-{i}."));
        bob.ack(d.seq).await.unwrap();
    }
    quiet(&mut inbox, 300).await; // exactly once
    bob.close().await;

    // Acked means deleted: a new login finds nothing.
    let (bob, mut inbox) = Client::connect(client_config(&relay, "bob", &bob_secret)).await.unwrap();
    assert_eq!(bob.pending_at_login(), 0);
    quiet(&mut inbox, 300).await;
    drop(bob);

    // SIGTERM: graceful shutdown, exit status 0, within a bound.
    let pid = relay.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t = Instant::now();
    loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "relay did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}
