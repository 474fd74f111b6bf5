//! A full store or a full disk (issue 16, item 9.2). Senders could fill the relay's disk; and
//! once a write had failed there, redb refused every later write until a restart (sends got
//! `Internal`, acks were lost), although reads went on. Now the store has a global size cap
//! (`Limits::max_store_bytes`, `--max-store-bytes`), and after a failed write the store
//! reopens its database by itself and works again as soon as the disk has room.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use otr_relay::{ErrorCode, Limits};
use otr_relay_client::ClientError;
use otr_relay_client::tokio_client::Client;

async fn server(dir: &Path, limits: Limits) -> otr_relay::ServerHandle {
    for n in ["alice", "bob"] {
        add(dir, n);
    }
    start(dir, limits).await
}

/// Receives and acknowledges deliveries until the store is empty (bounded by `recv`'s timeout).
async fn drain(
    h: &otr_relay::ServerHandle,
    bob: &Client,
    inbox: &mut otr_relay_client::tokio_client::Inbox,
    n: usize,
) {
    for _ in 0..n {
        let d = recv(inbox, 5).await;
        bob.ack(d.seq).await.unwrap();
    }
    wait_stored(h, 0).await;
}

#[tokio::test]
async fn the_store_size_cap_refuses_sends_but_acks_free_room() {
    let dir = TempDir::new("store-cap");
    let mut limits = test_limits();
    limits.max_store_bytes = 10_000;
    let h = server(dir.path(), limits).await;
    let (alice, _a) = connect(&h, "alice").await;
    let body = format!("?OTR:{}.", "A".repeat(1000));
    let mut accepted = 0;
    let refusal = loop {
        // About 1 KB each: the cap is reached within 10 messages (bounded at 20).
        assert!(accepted < 20, "the cap never refused a message");
        match alice.send("bob", accepted + 1, &body).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(accepted >= 5, "only {accepted} messages fit under a 10 kB cap");
    match &refusal {
        ClientError::Refused { code: ErrorCode::StorageFull, message } => {
            assert!(message.contains("relay storage full"), "{message}")
        }
        other => panic!("expected StorageFull, got {other:?}"),
    }
    // Acks still delete, and then there is room again.
    let (bob, mut inbox) = connect(&h, "bob").await;
    drain(&h, &bob, &mut inbox, accepted as usize).await;
    alice.send("bob", 100, &body).await.unwrap();
    drain(&h, &bob, &mut inbox, 1).await;
    h.shutdown().await.unwrap();
}

/// A 4 MiB tmpfs mounted for the test, unmounted (lazily, so an open file cannot keep it)
/// on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(tag: &str) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("otr-relay-tmpfs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system holding `path` with one file, until a write fails for want of space
/// (bounded: the tmpfs is 4 MiB).
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    for _ in 0..1024 {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
            return;
        }
    }
    panic!("16 MiB written to a 4 MiB tmpfs");
}

#[tokio::test]
async fn the_store_recovers_by_itself_once_the_disk_has_room_again() {
    // A real full file system needs a tmpfs, which needs root; elsewhere say so and stop.
    let Some(fs) = Tmpfs::mount("full") else {
        println!("skipped: mounting a tmpfs failed (not root?); this test needs a real full disk");
        return;
    };
    let dir = fs.0.join("data");
    std::fs::create_dir(&dir).unwrap();
    let h = server(&dir, test_limits()).await;
    let (alice, _a) = connect(&h, "alice").await;
    let (bob, mut inbox) = connect(&h, "bob").await;
    alice.send("bob", 1, "?OTR:before.").await.unwrap();
    let first = recv(&mut inbox, 5).await;

    // Something else fills the disk: sends fail with a clear answer (bounded: 4 MiB of
    // 4 kB messages), and the relay stays up.
    let filler = fs.0.join("filler");
    fill(&filler);
    let body = format!("?OTR:{}.", "B".repeat(4000));
    let mut accepted = 1;
    let refusal = loop {
        assert!(accepted < 1000, "a full disk never refused a message");
        match alice.send("bob", accepted + 1, &body).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&refusal, ClientError::Refused { code: ErrorCode::StorageFull, message }
            if message.contains("relay storage full")),
        "{refusal:?}"
    );
    // An ack while the disk is full: its delete cannot commit now, and is not forgotten.
    bob.ack(first.seq).await.unwrap();
    let after_ack = alice.send("bob", 4999, &body).await;
    assert!(matches!(after_ack, Err(ClientError::Refused { code: ErrorCode::StorageFull, .. })));

    // Room again: without a restart, sends are accepted and acks delete.
    std::fs::remove_file(&filler).unwrap();
    alice.send("bob", 5000, "?OTR:after.").await.unwrap();
    let mut last = None;
    for _ in 1..accepted + 1 {
        let d = recv(&mut inbox, 5).await;
        bob.ack(d.seq).await.unwrap();
        last = Some(d.id);
    }
    assert_eq!(last, Some(5000), "the message sent after the disk had room arrives last");
    wait_stored(&h, 0).await;
    alice.close().await;
    bob.close().await;
    h.shutdown().await.unwrap();
}
