//! Runs the chat-pair demo (`cargo run --example chat-pair`) as CI does: every check must
//! pass, and the transcript must show what the README promises.
#![allow(clippy::unwrap_used)]

use otr_demo as demo;

#[test]
fn chat_pair_demo_passes_every_check() {
    let outcome = demo::run(false).unwrap();
    let transcript = outcome.transcript.lines().join("\n");
    for c in &outcome.checks {
        assert!(c.passed, "check failed: {}\n{transcript}", c.what);
    }
    assert_eq!(outcome.checks.len(), 11, "{transcript}");
    assert!(outcome.all_passed());
    // What a reader sees: fingerprints, the AKE, SMP, key rotation, ciphertext, the relay's store.
    for needle in [
        "my fingerprint",
        "AKE 4/4 Signature",
        "PRIVATE",
        "SMP succeeded",
        "keys rotated",
        "?OTR:AAMD",
        "deleted #",
        "the peer ended the private conversation",
        "it holds 0 messages",
    ] {
        assert!(transcript.contains(needle), "the transcript lacks {needle:?}:\n{transcript}");
    }
}
