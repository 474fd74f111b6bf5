//! The data directory against other local users and concurrent `add-account` runs (issue 16,
//! item 9.3), with the real binary: 20 parallel runs used to share one fixed temporary file
//! without a lock (some accounts were lost after their secret was printed), and the accounts
//! file, the message store and the directory were readable by every local user.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use otr_relay_client::ClientConfig;
use otr_relay_client::tokio_client::Client;

const BIN: &str = env!("CARGO_BIN_EXE_otr-relay");

/// `otr-relay --data-dir DIR add-account NAME` with cheap Argon2 parameters (those of
/// `Argon2Params::TEST`, which the in-process server below also uses).
fn add_account(dir: &Path, name: &str) -> std::process::Child {
    Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1", "add-account", name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The secret an `add-account` run printed.
fn printed_secret(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "add-account failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    stdout.rsplit_once("(shown once): ").unwrap().1.trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn parallel_add_account_runs_all_count_and_files_are_private() {
    let tmp = TempDir::new("add-race");
    let dir = tmp.path().join("data");
    let names: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let children: Vec<_> = names.iter().map(|n| add_account(&dir, n)).collect();
    let secrets: Vec<String> =
        children.into_iter().map(|c| printed_secret(&c.wait_with_output().unwrap())).collect();

    assert_eq!(mode(&dir), 0o700, "the data directory is the owner's only");
    assert_eq!(mode(&dir.join("accounts")), 0o600, "the accounts file is the owner's only");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    // Every printed secret logs in to its account.
    let h = start(&dir, test_limits()).await;
    // The server created the message store and the certificate: every file is the owner's only.
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let modes: Vec<_> = files.iter().map(|f| (f.file_name().unwrap().to_owned(), mode(f))).collect();
    assert!(files.len() >= 5 && modes.iter().all(|(_, m)| *m == 0o600), "{modes:?}");
    for (name, secret) in names.iter().zip(&secrets) {
        let config = ClientConfig::new(h.addr().to_string(), h.fingerprint(), name, secret);
        match Client::connect(config).await {
            Ok((client, _inbox)) => client.close().await,
            Err(e) => panic!("{name} cannot log in with its printed secret: {e}"),
        }
    }
    h.shutdown().await.unwrap();
}

#[test]
fn a_readable_data_dir_is_tightened_with_a_warning() {
    let tmp = TempDir::new("add-modes");
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("messages.redb"), b"").unwrap();
    std::fs::set_permissions(dir.join("messages.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = add_account(&dir, "alice").wait_with_output().unwrap();
    printed_secret(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("permissions are tightened"), "a warning says so: {stderr}");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("messages.redb")), 0o600);
    assert_eq!(mode(&dir.join("accounts")), 0o600);
}
