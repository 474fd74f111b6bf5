//! The one-command demo: `cargo run --example chat-pair`.
//!
//! Starts a relay on 127.0.0.1 with a fresh certificate, alice on async-std (otr-futures)
//! and bob on tokio, both requiring encryption; they run the AKE, verify each other with SMP,
//! talk, derive the extra symmetric key and end the conversation. Prints the transcript and
//! the checks; exits 0 only if every check passed (1 if one failed, 2 if the demo could not
//! run to the end).

use otr_demo as demo;

use std::process::ExitCode;

fn main() -> ExitCode {
    println!("otr-rs chat-pair: alice (async-std) and bob (tokio) talk OTR v3 through a relay\n");
    println!("Each line: seconds since the start, who, what happened.");
    println!(
        "  → relay → PEER [kind] ?OTR:…   what went over the wire, abbreviated: all the relay ever sees;"
    );
    println!("                                 data messages show the key ids in their header");
    println!("  relay stored / deleted #N       what the relay held on disk, and when it deleted it\n");
    let outcome = match demo::run(true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("\nchat-pair could not finish: {e}");
            return ExitCode::from(2);
        }
    };
    println!("\nChecks:");
    for c in &outcome.checks {
        println!("  [{}] {}", if c.passed { "ok" } else { "FAILED" }, c.what);
    }
    if outcome.all_passed() {
        let steps = outcome.transcript.lines().len();
        println!("\nAll {} checks passed ({steps} steps above).", outcome.checks.len());
        ExitCode::SUCCESS
    } else {
        let failed = outcome.checks.iter().filter(|c| !c.passed).count();
        eprintln!("\n{failed} of {} checks FAILED (see above).", outcome.checks.len());
        ExitCode::FAILURE
    }
}
