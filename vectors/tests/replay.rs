//! Replays every transcript in `vectors/` with fresh sessions and checks that this engine
//! produces byte-identical transport messages, identical events, results, random draws,
//! intermediate secrets and timeouts, step by step. Regenerate the files with
//! `cargo run --manifest-path vectors/Cargo.toml --example make-vectors` after an intended change of behaviour (and say why in
//! the commit); see `vectors/README.md`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use otr_vectors::{ReplayError, replay};

/// The set the project promises (issue 5); more files may be added.
const REQUIRED: [&str; 15] = [
    "ake-alice-starts",
    "ake-bob-starts",
    "commit-collision",
    "fifty-messages",
    "end-and-restart",
    "whitespace-start",
    "smp-success",
    "smp-failure",
    "smp-question",
    "smp-abort",
    "extra-symmetric-key",
    "fragmented",
    "heartbeat",
    "require-encryption",
    "hostile",
];

fn vector_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_required_vector_exists() {
    let names: Vec<String> =
        vector_files().iter().map(|p| p.file_stem().unwrap().to_string_lossy().into_owned()).collect();
    for required in REQUIRED {
        assert!(names.iter().any(|n| n == required), "vectors/{required}.json is missing");
    }
}

#[test]
fn every_vector_replays_identically() {
    let mut failures = Vec::new();
    for file in vector_files() {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(v["name"].as_str(), file.file_stem().and_then(|s| s.to_str()), "{}", file.display());
        match replay(&v) {
            Ok(steps) => assert!(steps > 0, "{}: no steps", file.display()),
            Err(ReplayError::Diverged(d)) => failures.push(format!(
                "{}: step {} ({}): {}\n  expected: {}\n  actual:   {}",
                file.display(),
                d.step,
                d.what,
                d.field,
                d.expected,
                d.actual
            )),
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "vectors diverged (run `cargo run --manifest-path vectors/Cargo.toml --example replay -- --explain vectors/*.json`):\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_changed_transcript_is_caught_with_its_place() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ake-alice-starts.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    // Change one character of the D-H Key Bob sent.
    let sent = v["steps"][2]["transmit"][0].as_str().unwrap().replacen("?OTR:AAMK", "?OTR:AAML", 1);
    v["steps"][2]["transmit"][0] = sent.into();
    match replay(&v) {
        Err(ReplayError::Diverged(d)) => assert_eq!((d.step, d.field.as_str()), (2, "transmit[0]")),
        other => panic!("expected a divergence at step 2, got {other:?}"),
    }
}
