//! Writes seed corpora for the cargo-fuzz targets from the test vectors (`vectors/*.json`):
//! every transport message for `wire` and `session` (and each data message again with both
//! keyids at 0xFFFFFFFF), and for `keystore` and `libotr_files` the vectors'
//! identities as a sealed key store (with the cheapest Argon2 parameters, so the fuzz target's
//! open path runs) and as libotr `otr.private_key` / `otr.fingerprints` files. The corpora are
//! not committed: `.ci/fuzz` runs this first.
//!
//! ```text
//! cargo run --example fuzz-seeds            # writes fuzz/corpus/<target>/
//! ```

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use otr::keystore::libotr::{LibotrFingerprint, write_fingerprints, write_private_keys};
use otr::keystore::{KdfParams, KeyStore, SealKey};
use otr::{DsaComponents, DsaKeyPair, Trust};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde_json::Value;
use zeroize::Zeroizing;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex in a vector")).collect()
}

/// Writes `bytes` to `dir` under a name derived from its content (so reruns overwrite).
fn seed(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name: u64 =
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    std::fs::write(dir.join(format!("{name:016x}")), bytes)
}

/// A data message with both keyids set to 0xFFFFFFFF, the largest a peer can name (issue 16:
/// keyids must never wrap). The MAC no longer matches: the seed leads the fuzzer to the keyid
/// checks, which come before it. `None` for anything but a whole data message.
fn with_max_keyids(message: &str) -> Option<String> {
    let body = message.strip_prefix("?OTR:")?.strip_suffix('.')?;
    let mut bytes = STANDARD.decode(body).ok()?;
    // Version (2 bytes), type 0x03, in v3 two instance tags, then flags: the keyids follow.
    let at = match bytes.get(..3)? {
        [0, 3, 3] => 12,
        [0, 2, 3] => 4,
        _ => return None,
    };
    bytes.get_mut(at..at + 8)?.fill(0xff);
    Some(format!("?OTR:{}.", STANDARD.encode(bytes)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("fuzz/corpus");
    let mut keys: Vec<(String, DsaKeyPair)> = Vec::new();
    let mut fingerprints = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(root.join("vectors"))?.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        for step in v["steps"].as_array().into_iter().flatten() {
            for t in step["transmit"].as_array().into_iter().flatten() {
                let message = t.as_str().unwrap_or_default();
                for target in ["wire", "session"] {
                    seed(&corpus.join(target), message.as_bytes())?;
                    if let Some(patched) = with_max_keyids(message) {
                        seed(&corpus.join(target), patched.as_bytes())?;
                    }
                }
            }
        }
        for (name, party) in v["parties"].as_object().into_iter().flatten() {
            let account = party["account"].as_str().unwrap_or(name).to_owned();
            if keys.iter().any(|(a, _)| *a == account) {
                continue;
            }
            let d = &party["dsa"];
            let part = |k: &str| unhex(d[k].as_str().unwrap_or_default());
            let c = DsaComponents {
                p: part("p"),
                q: part("q"),
                g: part("g"),
                y: part("y"),
                x: Zeroizing::new(part("x")),
            };
            let key = DsaKeyPair::from_components(&c)?;
            fingerprints.push(LibotrFingerprint {
                remote: format!("peer-of-{account}"),
                account: account.clone(),
                protocol: "prpl-jabber".into(),
                fingerprint: key.public().fingerprint(),
                trust: if fingerprints.len() % 2 == 0 { Trust::Unverified } else { Trust::VerifiedSmp },
            });
            keys.push((account, key));
        }
    }
    let private = write_private_keys(keys.iter().map(|(a, k)| (a.as_str(), "prpl-jabber", k)))?;
    seed(&corpus.join("libotr_files"), &private)?;
    seed(&corpus.join("libotr_files"), &write_fingerprints(&fingerprints)?)?;

    let mut store = KeyStore::new();
    for (account, key) in &keys {
        store.add_account(account, "prpl-jabber", key.clone(), false)?;
    }
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let cheap = KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };
    let sealed = store.seal(&SealKey::derive(b"passphrase", cheap, &mut rng)?, &mut rng)?;
    seed(&corpus.join("keystore"), &sealed)?;
    seed(
        &corpus.join("keystore"),
        &KeyStore::new().seal(&SealKey::derive(b"passphrase", cheap, &mut rng)?, &mut rng)?,
    )?;
    println!("seeds written under {}", corpus.display());
    Ok(())
}
