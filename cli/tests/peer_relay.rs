//! `otr peer --relay` against the real `otr-relay` binary on 127.0.0.1: two peers go private
//! through the relay; bob's process is killed with SIGKILL; alice sends 20 messages; bob's
//! process starts again on the same state directory, prints `resumed` and reads the 20 texts,
//! decrypted, in order, once each, with no new key exchange; the relay then holds nothing.
//! While bob is away the relay posts exactly one content-free wake-up to bob's push endpoint
//! (a small HTTP server in the test). Then the relay itself is killed with SIGKILL while alice
//! sends: nothing it accepted is lost.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::Peer;

const ARGON2: [&str; 4] = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];

/// Builds the relay binary (a workspace member of its own) and returns its path.
fn relay_bin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "-p", "otr-relay", "--bin", "otr-relay"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("otr-relay")
        })
        .clone()
}

struct Relay {
    child: Child,
    addr: String,
    pin: String,
}

fn start_relay(dir: &Path, listen: &str) -> Relay {
    let mut child = Command::new(relay_bin())
        .args(["--listen", listen, "--data-dir"])
        .arg(dir)
        .args(ARGON2)
        .args(["--login-failure-delay-ms", "50", "--shutdown-grace", "2", "--log", "warn"])
        .args(["--push-allow-private", "--push-window", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut pin) = (None, None);
    for _ in 0..2 {
        let line = lines.next().expect("the relay printed nothing").unwrap();
        if let Some(a) = line.strip_prefix("otr-relay listening on ") {
            addr = Some(a.to_owned());
        } else if let Some(f) = line.strip_prefix("certificate SHA-256 fingerprint: ") {
            pin = Some(f.to_owned());
        }
    }
    Relay { child, addr: addr.unwrap(), pin: pin.unwrap() }
}

fn add_account(dir: &Path, name: &str) -> PathBuf {
    let secret = format!("secret-of-{name}");
    let mut child = Command::new(relay_bin())
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
    let file = dir.join(format!("{name}.secret"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    file
}

/// A UnifiedPush endpoint on 127.0.0.1: answers the discovery GET, records every POST body.
struct PushEndpoint {
    url: String,
    posts: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl PushEndpoint {
    fn start() -> Self {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/up/bob", listener.local_addr().unwrap());
        let posts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // The head, then Content-Length bytes of body; bounded by the timeout.
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(i + 4);
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap_or(0));
                while buf.len() < head_end + len {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer: &[u8] = if head.starts_with("get") {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 29\r\nconnection: close\r\n\r\n{\"unifiedpush\":{\"version\":1}}"
                } else {
                    seen.lock().unwrap().push(buf[head_end..].to_vec());
                    b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = stream.write_all(answer);
            }
        });
        Self { url, posts }
    }

    fn posts(&self) -> Vec<Vec<u8>> {
        self.posts.lock().unwrap().clone()
    }
}

impl Peer {
    fn start(relay: &Relay, account: &str, peer: &str, secret: &Path, state: &Path) -> Self {
        Self::start_with(relay, account, peer, secret, state, &[])
    }

    fn start_with(
        relay: &Relay,
        account: &str,
        peer: &str,
        secret: &Path,
        state: &Path,
        extra: &[&str],
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_otr"));
        cmd.args(["peer", "--account", account, "--peer", peer, "--policy", "always"])
            .args(["--relay", &relay.addr, "--pin", &relay.pin, "--secret-file"])
            .arg(secret)
            .args(extra)
            .arg("--state-dir")
            .arg(state)
            .env("OTR_PASSPHRASE", "test passphrase");
        Self::spawn(cmd)
    }

    /// The next line starting with `prefix`; the lines before it are returned too.
    fn until(&self, prefix: &str) -> (String, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut before = vec![];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                self.lines.recv_timeout(left).unwrap_or_else(|_| panic!("no {prefix:?} after {before:?}"));
            if line.starts_with(prefix) {
                return (line, before);
            }
            before.push(line);
        }
    }

    fn quit(mut self) {
        self.send("quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the peer did not exit within 10 s of quit");
    }
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

/// Messages the relay still holds for `account`: what it announces at login.
fn held_for(relay: &Relay, account: &str, secret: &Path) -> u64 {
    let secret = std::fs::read_to_string(secret).unwrap().trim_end().to_owned();
    let config =
        otr_relay_client::ClientConfig::new(&relay.addr, relay.pin.parse().unwrap(), account, &secret);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, _inbox) = otr_relay_client::tokio_client::Client::connect(config).await.unwrap();
        let n = client.pending_at_login();
        client.close().await;
        n
    })
}

#[test]
fn bob_killed_and_restarted_reads_what_alice_sent_meanwhile_and_the_relay_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("relay");
    let alice_secret = add_account(&data, "alice");
    let bob_secret = add_account(&data, "bob");
    let mut relay = start_relay(&data, "127.0.0.1:0");
    let (alice_state, bob_state) = (tmp.path().join("alice"), tmp.path().join("bob"));

    let push = PushEndpoint::start();
    let bob_push = ["--push-endpoint", push.url.as_str()];
    let mut alice = Peer::start(&relay, "alice", "bob", &alice_secret, &alice_state);
    let bob = Peer::start_with(&relay, "bob", "alice", &bob_secret, &bob_state, &bob_push);
    alice.until("online");
    bob.until("online");
    alice.send("query");
    let (secure, _) = alice.until("secure");
    let ssid = secure.rsplit(' ').next().unwrap().to_owned();
    assert!(bob.until("secure").0.ends_with(&ssid));
    alice.send(&format!("send {}", b64("hello bob")));
    assert_eq!(bob.until("msg").0, format!("msg encrypted {}", b64("hello bob")));

    // Bob's process dies; alice writes 20 messages, which the relay keeps.
    let mut bob = bob;
    bob.child.kill().unwrap();
    bob.child.wait().unwrap();
    assert!(push.posts().is_empty(), "a wake-up while bob was online");
    for i in 0..20 {
        alice.send(&format!("send {}", b64(&format!("message {i}"))));
    }
    // One wake-up for the 20 (one coalescing window), and nothing in it but the fixed body.
    let deadline = Instant::now() + Duration::from_secs(5);
    while push.posts().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let posts = push.posts();
    assert_eq!(posts.len(), 1, "wake-ups: {posts:?}");
    assert_eq!(posts[0], br#"{"otr-relay":"wake"}"#, "the wake-up carries something");
    // Bob comes back on the same state directory.
    let bob = Peer::start_with(&relay, "bob", "alice", &bob_secret, &bob_state, &bob_push);
    let (resumed, _) = bob.until("resumed");
    assert!(resumed.ends_with(&ssid), "{resumed} / {secure}");
    for i in 0..20 {
        let (msg, skipped) = bob.until("msg");
        assert_eq!(msg, format!("msg encrypted {}", b64(&format!("message {i}"))), "before it: {skipped:?}");
        assert!(!skipped.iter().any(|l| l.starts_with("secure")), "a new AKE ran: {skipped:?}");
    }
    bob.quit();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(held_for(&relay, "bob", &bob_secret), 0, "the relay still holds messages for bob");

    // The relay is killed with SIGKILL after accepting 5 more; started again on the same port,
    // it still has them, and alice's peer logs in again by itself and sends 5 more.
    for i in 20..25 {
        alice.send(&format!("send {}", b64(&format!("message {i}"))));
    }
    std::thread::sleep(Duration::from_millis(500));
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    alice.until("offline");
    let addr = relay.addr.clone();
    relay = start_relay(&data, &addr);
    alice.until("online");
    for i in 25..30 {
        alice.send(&format!("send {}", b64(&format!("message {i}"))));
    }
    let bob = Peer::start(&relay, "bob", "alice", &bob_secret, &bob_state);
    assert!(bob.until("resumed").0.ends_with(&ssid));
    for i in 20..30 {
        assert_eq!(bob.until("msg").0, format!("msg encrypted {}", b64(&format!("message {i}"))));
    }
    bob.quit();
    alice.quit();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(held_for(&relay, "bob", &bob_secret), 0);
    assert_eq!(held_for(&relay, "alice", &alice_secret), 0);
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
}
