//! The key store on disk: round trips, atomic saves (a simulated crash before the rename),
//! permissions, passphrase changes, and every kind of bad input leaving the file untouched.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use otr::keystore::{ContactId, KdfParams, KeystoreError, Seen, Trust};
use otr::{DsaKeyPair, Fingerprint, Store, StoreError};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Small Argon2 parameters: the header carries them, so tests stay fast.
const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

/// A fresh temporary directory, removed when dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("otr-rs-keystore-{name}-")).tempdir().unwrap()
}

fn key() -> DsaKeyPair {
    static KEY: std::sync::OnceLock<DsaKeyPair> = std::sync::OnceLock::new();
    KEY.get_or_init(|| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(99))).clone()
}

fn populated(path: &Path, rng: &mut ChaCha20Rng) -> Store {
    let mut store = Store::create(path, b"passphrase", FAST, rng).unwrap();
    let ks = store.keystore_mut();
    ks.add_account("alice@example.com", "xmpp", key(), false).unwrap();
    let bob = ContactId::new("alice@example.com", "xmpp", "bob@example.com");
    assert_eq!(ks.record_seen(&bob, Fingerprint([7; 20])).unwrap(), Seen::New);
    ks.set_trust(&bob, &Fingerprint([7; 20]), Trust::VerifiedManual).unwrap();
    store.save(rng).unwrap();
    store
}

fn entries(dir: &tempfile::TempDir) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_save_open_round_trip_with_mode_0600() {
    let dir = temp_dir("roundtrip");
    let path = dir.path().join("sub/dir/store");
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    populated(&path, &mut rng);
    let store = Store::open(&path, b"passphrase").unwrap();
    let ks = store.keystore();
    assert_eq!(ks.account("alice@example.com", "xmpp").unwrap().fingerprint(), key().fingerprint());
    let bob = ContactId::new("alice@example.com", "xmpp", "bob@example.com");
    assert_eq!(ks.trust(&bob, &Fingerprint([7; 20])), Some(Trust::VerifiedManual));
    assert_eq!(store.kdf_params(), FAST);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = temp_dir("exists");
    let path = dir.path().join("store");
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    populated(&path, &mut rng);
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(Store::create(&path, b"other", FAST, &mut rng), Err(StoreError::Exists(_))));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(matches!(Store::open(&dir.path().join("missing"), b"x"), Err(StoreError::NotFound(_))));
}

#[test]
fn crash_before_rename_leaves_old_store_intact() {
    let dir = temp_dir("crash");
    let path = dir.path().join("store");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut store = populated(&path, &mut rng);
    let before = std::fs::read(&path).unwrap();
    // Change the contents, then "crash" after writing and syncing the temporary file.
    store.keystore_mut().remove_account("alice@example.com", "xmpp").unwrap();
    let tmp = store.save_test_crash_before_rename(&mut rng).unwrap();
    assert!(tmp.exists());
    assert_eq!(tmp.parent(), path.parent(), "the temporary file is in the same directory");
    assert_eq!(std::fs::read(&path).unwrap(), before, "the store file is untouched");
    // After the "restart", the old store opens with the old contents.
    let reopened = Store::open(&path, b"passphrase").unwrap();
    assert!(reopened.keystore().account("alice@example.com", "xmpp").is_some());
    // The next successful save cleans up the leftover temporary file.
    reopened.save(&mut rng).unwrap();
    assert_eq!(entries(&dir), ["store"]);
}

#[test]
fn change_passphrase() {
    let dir = temp_dir("passwd");
    let path = dir.path().join("store");
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut store = populated(&path, &mut rng);
    let params = KdfParams { memory_kib: 128, iterations: 2, parallelism: 1 };
    store.change_passphrase(b"new one", Some(params), &mut rng).unwrap();
    assert!(matches!(
        Store::open(&path, b"passphrase"),
        Err(StoreError::Keystore(KeystoreError::WrongPassphraseOrCorrupted))
    ));
    let reopened = Store::open(&path, b"new one").unwrap();
    assert_eq!(reopened.kdf_params(), params);
    assert_eq!(reopened.keystore().accounts().count(), 1);
    // Saving keeps the new passphrase.
    reopened.save(&mut rng).unwrap();
    Store::open(&path, b"new one").unwrap();
}

#[test]
fn bad_files_are_errors_and_nothing_is_written() {
    let dir = temp_dir("bad");
    let path = dir.path().join("store");
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    populated(&path, &mut rng);
    let good = std::fs::read(&path).unwrap();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();

    // Wrong passphrase.
    let err = Store::open(&path, b"wrong").unwrap_err();
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), good);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified);

    let check = |bytes: &[u8], what: &str| {
        let p = dir.path().join("variant");
        std::fs::write(&p, bytes).unwrap();
        let err = Store::open(&p, b"passphrase").unwrap_err();
        assert!(!err.to_string().is_empty(), "{what}");
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{what}: the file was modified");
    };
    // Truncated at several lengths, and empty.
    for len in [0, 1, 8, 50, 51, 66, good.len() / 2, good.len() - 1] {
        check(&good[..len], &format!("truncated to {len}"));
    }
    // Flipped bits in the header, the middle and the tag.
    for byte in [0, 9, 10, 12, 16, 20, 30, 45, 60, good.len() / 2, good.len() - 1] {
        let mut f = good.clone();
        f[byte] ^= 0x10;
        check(&f, &format!("byte {byte} flipped"));
    }
    // A header asking for 4 GiB of memory.
    let mut absurd = good.clone();
    absurd[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
    let p = dir.path().join("absurd");
    std::fs::write(&p, &absurd).unwrap();
    assert!(matches!(
        Store::open(&p, b"passphrase"),
        Err(StoreError::Keystore(KeystoreError::UnreasonableKdfParams { what: "memory (KiB)", .. }))
    ));
    // Not a store at all: a libotr key file.
    check(b"(privkeys\n)\n", "libotr file");
    assert_eq!(std::fs::read(&path).unwrap(), good);
}

#[test]
fn malformed_libotr_import_leaves_store_untouched() {
    let dir = temp_dir("import");
    let path = dir.path().join("store");
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut store = populated(&path, &mut rng);
    let good = std::fs::read(&path).unwrap();
    for bad in [
        &b"(privkeys (account (name a) (protocol b)"[..],
        b"(privkeys (account (name a) (protocol b) (private-key (dsa (p #00#)))))",
        b"((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
        b"(privkeys (account (name a) (protocol b) (private-key (dsa (p #123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF#)))))",
        b"(privkeys (account (name \"unterminated) (protocol b)))",
    ] {
        let err = store.keystore_mut().import_libotr(Some(bad), None, false).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(store.keystore().accounts().count(), 1);
    assert_eq!(std::fs::read(&path).unwrap(), good);
}
