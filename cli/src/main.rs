//! `otr`: Off-the-Record Messaging from the command line. See `otr --help`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otr_cli::{chat, keys, peer, xmpp};

/// Off-the-Record Messaging (OTR v3): keys, private chats through an otr-relay or XMPP, and
/// a stdio peer for interop harnesses.
#[derive(Debug, Parser)]
#[command(name = "otr", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the encrypted key store: keys, fingerprints, trust, libotr import/export.
    Keys(keys::Args),
    /// Chat privately with one account through an otr-relay.
    Chat(chat::Args),
    /// Chat privately with one contact over XMPP.
    Xmpp(xmpp::Args),
    /// Speak the stdio peer protocol (one account, driven line by line by a harness).
    Peer(peer::Args),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Keys(args) => keys::main(args),
        Command::Chat(args) => chat::main(args),
        Command::Xmpp(args) => xmpp::main(args),
        Command::Peer(args) => peer::main(args),
    }
}
