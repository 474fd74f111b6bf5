//! `otr peer --state-dir`: a peer killed with SIGKILL and started again with the same state
//! directory resumes its private conversation: it prints `resumed` with the same session id,
//! reads what was sent to it meanwhile, once each and in order, and answers without a new key
//! exchange. A rolled-back snapshot is refused. Real processes, lines over stdio.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::Peer;

impl Peer {
    fn start(account: &str, peer: &str, state: Option<&Path>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_otr"));
        cmd.args(["peer", "--account", account, "--peer", peer, "--policy", "always"]);
        if let Some(dir) = state {
            cmd.arg("--state-dir").arg(dir).env("OTR_PASSPHRASE", "test passphrase");
        }
        Self::spawn(cmd)
    }

    /// Lines until one starts with `prefix` (returned); the `net` lines seen on the way are
    /// collected in `net`.
    fn until(&self, prefix: &str, net: &mut Vec<String>) -> String {
        loop {
            let line =
                self.lines.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("no {prefix:?}"));
            if line.starts_with(prefix) {
                return line;
            }
            if let Some(m) = line.strip_prefix("net ") {
                net.push(m.to_owned());
            }
            assert!(!line.starts_with("msg"), "unexpected {line}");
        }
    }

    /// Every line printed within a short while.
    fn quiet(&self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.recv_timeout(Duration::from_millis(500)).ok()).collect()
    }
}

/// Carries the `net` lines between the two peers until both are quiet; returns all other lines.
fn exchange(a: &mut Peer, b: &mut Peer) -> (Vec<String>, Vec<String>) {
    let (mut seen_a, mut seen_b) = (vec![], vec![]);
    loop {
        let (la, lb) = (a.quiet(), b.quiet());
        if la.is_empty() && lb.is_empty() {
            return (seen_a, seen_b);
        }
        for l in la {
            match l.strip_prefix("net ") {
                Some(m) => b.send(&format!("net {m}")),
                None => seen_a.push(l),
            }
        }
        for l in lb {
            match l.strip_prefix("net ") {
                Some(m) => a.send(&format!("net {m}")),
                None => seen_b.push(l),
            }
        }
    }
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[test]
fn a_killed_peer_resumes_its_conversation_and_refuses_a_rolled_back_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("bob");
    let mut alice = Peer::start("alice", "bob", None);
    let mut bob = Peer::start("bob", "alice", Some(&state));
    alice.until("ready", &mut vec![]);
    bob.until("ready", &mut vec![]);
    alice.send("query");
    let (a, b) = exchange(&mut alice, &mut bob);
    let secure = a.iter().find(|l| l.starts_with("secure")).unwrap().clone();
    let ssid = secure.split(' ').nth(2).unwrap().to_owned();
    assert!(b.iter().any(|l| l.starts_with("secure") && l.ends_with(&ssid)), "{b:?}");
    alice.send(&format!("send {}", b64("before the crash")));
    let (_, b) = exchange(&mut alice, &mut bob);
    assert!(b.contains(&format!("msg encrypted {}", b64("before the crash"))), "{b:?}");
    // A copy of bob's state now, to roll back to later.
    let old = tmp.path().join("old");
    copy_dir(&state, &old);
    bob.send(&format!("send {}", b64("bob's reply")));
    let (a, _) = exchange(&mut alice, &mut bob);
    assert!(a.contains(&format!("msg encrypted {}", b64("bob's reply"))), "{a:?}");

    // Bob dies; alice writes three messages, which wait (here: in the test, as a relay would).
    bob.child.kill().unwrap();
    bob.child.wait().unwrap();
    let mut waiting = vec![];
    for i in 0..3 {
        alice.send(&format!("send {}", b64(&format!("while you were away {i}"))));
        waiting.extend(alice.quiet().into_iter().filter_map(|l| l.strip_prefix("net ").map(str::to_owned)));
    }
    assert!(waiting.len() >= 3, "{waiting:?}");

    // Bob comes back with the same state: resumed, same session, reads the three once each.
    let mut bob = Peer::start("bob", "alice", Some(&state));
    bob.until("ready", &mut vec![]);
    let resumed = bob.until("resumed", &mut vec![]);
    assert!(resumed.ends_with(&ssid), "{resumed} vs {secure}");
    for m in &waiting {
        bob.send(&format!("net {m}"));
    }
    let got: Vec<String> = bob.quiet().into_iter().filter(|l| l.starts_with("msg")).collect();
    let want: Vec<String> =
        (0..3).map(|i| format!("msg encrypted {}", b64(&format!("while you were away {i}")))).collect();
    assert_eq!(got, want);
    // Replayed by the network: nothing again.
    for m in &waiting {
        bob.send(&format!("net {m}"));
    }
    assert!(!bob.quiet().iter().any(|l| l.starts_with("msg")));
    // And the conversation goes on both ways without a new key exchange.
    bob.send(&format!("send {}", b64("I'm back")));
    let (a, b) = exchange(&mut alice, &mut bob);
    assert!(a.contains(&format!("msg encrypted {}", b64("I'm back"))), "{a:?}");
    assert!(!a.iter().chain(&b).any(|l| l.starts_with("secure")), "a new AKE ran: {a:?} {b:?}");
    bob.send("quit");
    bob.child.wait().unwrap();

    // Bob's snapshot rolled back to the copy: refused, a fresh start, nothing replayed.
    let snapshots = |dir: &Path| std::fs::read_dir(dir.join("conversations")).unwrap().count();
    assert!(snapshots(&state) > 0);
    for e in std::fs::read_dir(old.join("conversations")).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".snap") {
            std::fs::copy(e.path(), state.join("conversations").join(e.file_name())).unwrap();
        }
    }
    let mut bob = Peer::start("bob", "alice", Some(&state));
    bob.until("ready", &mut vec![]);
    let refused = bob.until("error", &mut vec![]);
    assert!(refused.contains("rolled back"), "{refused}");
    for m in &waiting {
        bob.send(&format!("net {m}"));
    }
    assert!(!bob.quiet().iter().any(|l| l.starts_with("msg")));
    bob.send("quit");
    alice.send("quit");
    bob.child.wait().unwrap();
    alice.child.wait().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
