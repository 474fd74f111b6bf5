//! The stdio peer under its historical name, for harnesses that run
//! `cargo run --example otr-peer -- ARGS`: the same code and flags as `otr peer ARGS`.

use std::process::ExitCode;

use clap::Parser;

/// The stdio peer of the peer protocol.
#[derive(Debug, Parser)]
#[command(name = "otr-peer", version)]
struct Cli {
    #[command(flatten)]
    args: otr_cli::peer::Args,
}

fn main() -> ExitCode {
    otr_cli::peer::main(Cli::parse().args)
}
