//! Replays `vectors/` transcripts against fresh sessions of this engine:
//! `cargo run --manifest-path vectors/Cargo.toml --example replay -- [--explain] vectors/*.json`.
//!
//! Prints PASS or FAIL per file (exit status 1 if any failed). With `--explain`, a failure
//! also prints the first divergence: the step, the field, and the expected and actual values.

use std::process::ExitCode;

use otr_vectors::{ReplayError, replay};

fn main() -> ExitCode {
    let mut explain = false;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--explain" => explain = true,
            "-h" | "--help" => {
                println!("usage: replay [--explain] FILE.json...");
                return ExitCode::SUCCESS;
            }
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("usage: replay [--explain] FILE.json...");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for file in &files {
        let started = std::time::Instant::now();
        let result = std::fs::read_to_string(file)
            .map_err(|e| ReplayError::Format(format!("cannot read: {e}")))
            .and_then(|text| {
                serde_json::from_str(&text).map_err(|e| ReplayError::Format(format!("not JSON: {e}")))
            })
            .and_then(|v| replay(&v));
        let ms = started.elapsed().as_millis();
        match result {
            Ok(steps) => println!("PASS  {file}  ({steps} steps, {ms} ms)"),
            Err(e) => {
                failed += 1;
                println!("FAIL  {file}  {e}");
                if let (true, ReplayError::Diverged(d)) = (explain, &e) {
                    println!("      step {}: {}", d.step, d.what);
                    println!("      field:    {}", d.field);
                    println!("      expected: {}", pretty(&d.expected));
                    println!("      actual:   {}", pretty(&d.actual));
                }
            }
        }
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default().replace('\n', "\n                ")
}
