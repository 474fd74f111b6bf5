//! Our key store and libotr 4.1.1's own files, checked against libotr itself: a key libotr
//! generated is imported with the fingerprint libotr reports and then works in a conversation
//! with libotr; keys and fingerprints we export are read by libotr unchanged.
//!
//! libotr's fingerprint-file functions are called directly (the harness links libotr), which
//! needs a few lines of FFI here.

#![allow(clippy::unwrap_used)]
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_uint, c_void};
use std::path::Path;

use otr::keystore::libotr::{parse_fingerprints, parse_private_keys};
use otr::keystore::{ContactId, KdfParams, KeyStore, Observation, SealKey, Seen, Trust};
use otr::{DsaKeyPair, Event, InstanceTag, Policy, Session, SessionConfig, Timestamp};
mod common;

use otr_libotr_harness::{LibotrPeer, PeerEvent, PeerPolicy};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// The protocol name the harness uses.
const PROTOCOL: &str = "xmpp";

unsafe extern "C" {
    fn otrl_userstate_create() -> *mut c_void;
    fn otrl_userstate_free(us: *mut c_void);
    fn otrl_privkey_read(us: *mut c_void, filename: *const c_char) -> c_uint;
    fn otrl_privkey_fingerprint(
        us: *mut c_void,
        fingerprint: *mut c_char,
        accountname: *const c_char,
        protocol: *const c_char,
    ) -> *mut c_char;
    fn otrl_privkey_read_fingerprints(
        us: *mut c_void,
        filename: *const c_char,
        add_app_data: *const c_void,
        data: *mut c_void,
    ) -> c_uint;
    fn otrl_privkey_write_fingerprints(us: *mut c_void, filename: *const c_char) -> c_uint;
}

/// A libotr user state (keys and contexts) of our own, apart from the harness endpoints.
struct UserState(*mut c_void);

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

impl UserState {
    fn new() -> Self {
        // Creating a harness endpoint first runs libotr's one-time initialisation.
        let _init = LibotrPeer::new("init", "init", PeerPolicy::Manual, false, 0, None).unwrap();
        // SAFETY: no arguments; libotr is initialised.
        Self(unsafe { otrl_userstate_create() })
    }

    fn read_keys(&self, file: &Path) -> Result<(), c_uint> {
        // SAFETY: a live user state and a NUL-terminated path.
        let err = unsafe { otrl_privkey_read(self.0, cpath(file).as_ptr()) };
        if err == 0 { Ok(()) } else { Err(err) }
    }

    /// libotr's fingerprint of our key for `account`, in its human form (5×8 upper-case hex).
    fn fingerprint(&self, account: &str, protocol: &str) -> Option<String> {
        let mut buf = [0 as c_char; 45];
        let (a, p) = (CString::new(account).unwrap(), CString::new(protocol).unwrap());
        // SAFETY: a 45-byte buffer (OTRL_PRIVKEY_FPRINT_HUMAN_LEN) and NUL-terminated strings.
        let r = unsafe { otrl_privkey_fingerprint(self.0, buf.as_mut_ptr(), a.as_ptr(), p.as_ptr()) };
        if r.is_null() {
            return None;
        }
        // SAFETY: libotr wrote a NUL-terminated string into buf.
        Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_owned())
    }

    fn read_fingerprints(&self, file: &Path) -> Result<(), c_uint> {
        // SAFETY: a live user state, a NUL-terminated path, no callback.
        let err = unsafe {
            otrl_privkey_read_fingerprints(
                self.0,
                cpath(file).as_ptr(),
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        };
        if err == 0 { Ok(()) } else { Err(err) }
    }

    fn write_fingerprints(&self, file: &Path) -> Result<(), c_uint> {
        // SAFETY: a live user state and a NUL-terminated path.
        let err = unsafe { otrl_privkey_write_fingerprints(self.0, cpath(file).as_ptr()) };
        if err == 0 { Ok(()) } else { Err(err) }
    }
}

impl Drop for UserState {
    fn drop(&mut self) {
        // SAFETY: created by otrl_userstate_create and freed once.
        unsafe { otrl_userstate_free(self.0) }
    }
}

/// A fresh temporary directory, removed when dropped.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("otr-rs-keystore-libotr-{name}-")).tempdir().unwrap()
}

/// Our session for `account` with `key`, and a libotr endpoint `peer` talking to it.
struct Pair {
    ours: Session,
    lib: LibotrPeer,
    rng: ChaCha20Rng,
    now: Timestamp,
    our_events: Vec<Event>,
    lib_events: Vec<PeerEvent>,
}

impl Pair {
    fn new(account: &str, key: DsaKeyPair, lib: LibotrPeer, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let config = SessionConfig::new(account, Policy::MANUAL, InstanceTag::random(&mut rng));
        Self {
            ours: Session::new(config, key),
            lib,
            rng,
            now: Timestamp(1),
            our_events: vec![],
            lib_events: vec![],
        }
    }

    fn drive(&mut self) {
        common::pump(
            &mut self.ours,
            std::slice::from_mut(&mut self.lib),
            &mut self.rng,
            self.now,
            &mut self.our_events,
            std::slice::from_mut(&mut self.lib_events),
        );
    }

    /// The fingerprint libotr saw for us when it went secure.
    fn lib_saw(&self) -> Option<&str> {
        self.lib_events.iter().rev().find_map(|e| match e {
            PeerEvent::Secure { fingerprint, .. } => Some(fingerprint.as_str()),
            _ => None,
        })
    }

    fn exchange_messages(&mut self) {
        self.ours.send(self.now, "hello from the imported key").unwrap();
        self.lib.send("hello back");
        self.drive();
        assert!(self.lib_events.iter().any(|e| matches!(
            e,
            PeerEvent::Msg { encrypted: true, text } if text == b"hello from the imported key"
        )));
        assert!(self.our_events.iter().any(|e| matches!(
            e,
            Event::Message { encrypted: true, text, .. } if text == "hello back"
        )));
    }
}

const FAST: KdfParams = KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 };

#[test]
fn key_generated_by_libotr_is_imported_with_its_fingerprint_and_works() {
    let dir = temp_dir("import");
    let keyfile = dir.path().join("otr.private_key");
    // libotr generates the key (otrl_privkey_generate) and writes its file.
    let alice_lib =
        LibotrPeer::new("alice@example.com", "bob@example.com", PeerPolicy::Manual, false, 0, Some(&keyfile))
            .unwrap();
    let libotr_fp = alice_lib.fingerprint().to_owned();
    drop(alice_lib);

    let mut store = KeyStore::new();
    let report = store.import_libotr(Some(&std::fs::read(&keyfile).unwrap()), None, false).unwrap();
    assert_eq!(report.accounts.len(), 1);
    let account = store.account("alice@example.com", PROTOCOL).expect("the account is imported");
    assert_eq!(account.fingerprint().to_string(), libotr_fp, "same fingerprint as libotr reports");

    // It survives the encrypted store.
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sealed = store.seal(&SealKey::derive(b"pw", FAST, &mut rng).unwrap(), &mut rng).unwrap();
    let (mut store, _) = KeyStore::open(&sealed, b"pw").unwrap();
    let key = store.account("alice@example.com", PROTOCOL).unwrap().key().clone();

    // A conversation between our Session using the imported key and a libotr "bob".
    let bob =
        LibotrPeer::new("bob@example.com", "alice@example.com", PeerPolicy::Manual, false, 0, None).unwrap();
    let bob_fp = bob.fingerprint().to_owned();
    let mut pair = Pair::new("alice@example.com", key, bob, 2);
    pair.ours.start(pair.now);
    pair.drive();
    assert_eq!(pair.lib_saw(), Some(libotr_fp.as_str()), "libotr sees the imported key's fingerprint");
    pair.exchange_messages();

    // Trust: Secure records bob's fingerprint as new; SMP success marks it verified.
    let contact = ContactId::new("alice@example.com", PROTOCOL, "bob@example.com");
    let secure = pair.our_events.iter().find(|e| matches!(e, Event::Secure { .. })).unwrap().clone();
    match store.observe(&contact, &secure).unwrap() {
        Some(Observation::Seen { fingerprint, seen: Seen::New }) => {
            assert_eq!(fingerprint.to_string(), bob_fp)
        }
        other => panic!("{other:?}"),
    }
    pair.ours.smp_start(pair.now, None, b"shared secret", &mut pair.rng).unwrap();
    pair.drive();
    pair.lib.smp_answer(b"shared secret");
    pair.drive();
    let success = pair.our_events.iter().find(|e| matches!(e, Event::SmpSucceeded { .. })).unwrap().clone();
    assert!(matches!(store.observe(&contact, &success).unwrap(), Some(Observation::Verified { .. })));
    let bob_fingerprint = store.fingerprints(&contact)[0].fingerprint;
    assert_eq!(store.trust(&contact, &bob_fingerprint), Some(Trust::VerifiedSmp));

    // Exported, the trust reads back in libotr as libotr itself would have written it.
    let export = store.export_libotr().unwrap();
    let fps = dir.path().join("otr.fingerprints");
    std::fs::write(&fps, &export.fingerprints).unwrap();
    let us = UserState::new();
    us.read_fingerprints(&fps).unwrap();
    let rewritten = dir.path().join("rewritten.fingerprints");
    us.write_fingerprints(&rewritten).unwrap();
    let text = std::fs::read_to_string(&rewritten).unwrap();
    assert_eq!(text, format!("bob@example.com\talice@example.com\t{PROTOCOL}\t{bob_fp}\tsmp\n"));
}

#[test]
fn key_exported_by_us_is_read_by_libotr_with_the_same_fingerprint() {
    let dir = temp_dir("export");
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut store = KeyStore::new();
    // Names that libgcrypt writes quoted, as a token, quoted with escapes and raw UTF-8,
    // quoted because of a leading digit, and as hex (a UTF-8 byte in 0x7f..=0xa0).
    let accounts = [
        ("alice@example.com", PROTOCOL),
        ("plain-token", "prpl-jabber"),
        ("José \"Pepe\" Muñoz", "prpl-irc"),
        ("1337", PROTOCOL),
        ("ācademic", PROTOCOL),
    ];
    for (name, protocol) in accounts {
        store.generate_account(name, protocol, &mut rng).unwrap();
    }
    let export = store.export_libotr().unwrap();
    let text = String::from_utf8_lossy(&export.private_key);
    for expected in [
        "(name \"alice@example.com\")",
        "(name plain-token)",
        "(name \"José \\\"Pepe\\\" Muñoz\")",
        "(name \"1337\")",
        "(name #C481636164656D6963#)",
    ] {
        assert!(text.contains(expected), "{expected} in\n{text}");
    }
    let keyfile = dir.path().join("otr.private_key");
    std::fs::write(&keyfile, &*export.private_key).unwrap();

    // libotr's own reader gives every account the fingerprint we compute.
    let us = UserState::new();
    us.read_keys(&keyfile).unwrap();
    for a in store.accounts() {
        assert_eq!(
            us.fingerprint(a.name(), a.protocol()).as_deref(),
            Some(a.fingerprint().to_human().as_str()),
            "{} ({})",
            a.name(),
            a.protocol()
        );
    }

    // And a libotr endpoint loading the exported file uses that key in a conversation.
    let ours = store.account("alice@example.com", PROTOCOL).unwrap();
    let lib = LibotrPeer::new(
        "alice@example.com",
        "carol@example.com",
        PeerPolicy::Manual,
        false,
        0,
        Some(&keyfile),
    )
    .unwrap();
    assert_eq!(lib.fingerprint(), ours.fingerprint().to_string());
    let carol_key = DsaKeyPair::generate(&mut rng);
    let mut pair = Pair::new("carol@example.com", carol_key, lib, 4);
    pair.lib.query();
    pair.drive();
    let theirs = pair.our_events.iter().find_map(|e| match e {
        Event::Secure { fingerprint, .. } => Some(*fingerprint),
        _ => None,
    });
    assert_eq!(theirs, Some(ours.fingerprint()), "we see the exported key in the AKE");
    // The file libotr loaded is unchanged (it did not need to generate anything).
    assert_eq!(std::fs::read(&keyfile).unwrap(), *export.private_key);
}

#[test]
fn fingerprints_file_round_trips_through_libotr() {
    let dir = temp_dir("fingerprints");
    let mut store = KeyStore::new();
    let entries = [
        ("bob@example.com", "alice@example.com", PROTOCOL, [1u8; 20], Trust::VerifiedSmp),
        ("bob@example.com", "alice@example.com", PROTOCOL, [2u8; 20], Trust::Unverified),
        ("carol", "alice@example.com", "prpl-jabber", [3u8; 20], Trust::VerifiedManual),
        ("dave with spaces", "alice2", "prpl-irc", [4u8; 20], Trust::Unverified),
    ];
    for (remote, account, protocol, fp, trust) in entries {
        let c = ContactId::new(account, protocol, remote);
        let _ = store.record_seen(&c, otr::Fingerprint(fp)).unwrap();
        store.set_trust(&c, &otr::Fingerprint(fp), trust).unwrap();
    }
    let export = store.export_libotr().unwrap();
    let ours = dir.path().join("otr.fingerprints");
    std::fs::write(&ours, &export.fingerprints).unwrap();
    let us = UserState::new();
    us.read_fingerprints(&ours).unwrap();
    let back = dir.path().join("libotr.fingerprints");
    us.write_fingerprints(&back).unwrap();
    let libotr_written = std::fs::read(&back).unwrap();
    // libotr keeps its own context order; compare as sets.
    let mut a = parse_fingerprints(&export.fingerprints).unwrap();
    let mut b = parse_fingerprints(&libotr_written).unwrap();
    let key =
        |e: &otr::keystore::libotr::LibotrFingerprint| (e.remote.clone(), e.account.clone(), e.fingerprint);
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a, b);
    // What libotr wrote imports back to the same store.
    let mut again = KeyStore::new();
    again.import_libotr(None, Some(&libotr_written), false).unwrap();
    for (c, fps) in store.contacts() {
        for k in fps {
            assert_eq!(again.trust(c, &k.fingerprint), Some(k.trust));
        }
    }
    // libotr reads our keys file written with no accounts, too.
    let empty = KeyStore::new().export_libotr().unwrap();
    let keyfile = dir.path().join("empty.private_key");
    std::fs::write(&keyfile, &*empty.private_key).unwrap();
    us.read_keys(&keyfile).unwrap();
    assert!(parse_private_keys(&empty.private_key).unwrap().is_empty());
}
