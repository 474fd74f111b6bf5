//! `otr-relay`: run the relay server, or manage its accounts.

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use otr_relay::accounts::{self, Argon2Params};
use otr_relay::{Limits, Server, ServerConfig};

/// The otr-rs reference relay: stores opaque OTR messages for their recipients over TLS 1.3
/// and deletes each one as soon as it is acknowledged.
///
/// At start it prints the SHA-256 fingerprint of its certificate; give that to clients, which
/// pin it. Accounts are added with `otr-relay --data-dir DIR add-account NAME` (also while the
/// server runs). Stop it with Ctrl-C or SIGTERM: it finishes open connections gracefully.
/// Logs go to stderr (filter with --log or RUST_LOG) and never contain message contents.
///
/// Limits against abuse: connections are counted per address (an IPv4 address or an IPv6 /64)
/// when accepted, before the TLS handshake. Logins are hashed with Argon2id two at a time, one
/// place in that queue per address, and wait at most --login-queue-timeout-ms (then they are
/// told the server is busy). Failed logins count per address and per account (an exponential
/// backoff that spares the addresses the account last logged in from); each table of failures
/// holds at most --login-table-entries entries and forgets them after --login-lockout.
#[derive(Parser, Debug)]
#[command(name = "otr-relay", version)]
struct Cli {
    /// Directory for the message store (messages.redb), the accounts file and a generated
    /// certificate (cert.pem, key.pem). Created if missing, for its owner only (0700, files
    /// 0600); looser permissions found at start are tightened, with a warning.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log filter, e.g. `info`, `debug`, `otr_relay=debug` (RUST_LOG is used when unset).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    #[command(flatten)]
    serve: ServeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address and port to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:5443", value_name = "ADDR")]
    listen: SocketAddr,

    /// PEM certificate chain to serve instead of the generated one (needs --key).
    #[arg(long, requires = "key", value_name = "FILE")]
    cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, requires = "cert", value_name = "FILE")]
    key: Option<PathBuf>,

    /// Largest frame accepted, in bytes; a larger one is answered with FrameTooLarge and the
    /// connection is closed. Bounds the size of one OTR message.
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    max_frame_bytes: usize,

    /// Most messages waiting for one recipient; beyond it senders get QueueFull.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    queue_max_messages: u64,

    /// Most bytes waiting for one recipient; beyond it senders get QueueFull.
    #[arg(long, default_value_t = 8 << 20, value_name = "BYTES")]
    queue_max_bytes: u64,

    /// Most bytes of messages the store holds in all, for every recipient together; beyond
    /// it senders get StorageFull, while acknowledgements still free room. The database file
    /// needs more than this (pages, copy-on-write commits): keep it well below free space.
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
    max_store_bytes: u64,

    /// Most simultaneous connections from one address, an IPv4 address or an IPv6 /64
    /// (counted before the TLS handshake; more get TooManyConnections or are closed).
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_connections_per_ip: usize,

    /// Most simultaneous connections in all (more are closed at once).
    #[arg(long, default_value_t = 4096, value_name = "N")]
    max_connections: usize,

    /// Messages per second one account may send, sustained (more get RateLimited).
    #[arg(long, default_value_t = 20, value_name = "N")]
    rate: u32,

    /// Messages one account may send in a burst above the sustained rate.
    #[arg(long, default_value_t = 100, value_name = "N")]
    burst: u32,

    /// Seconds a logged-in connection may stay silent before it is closed (clients ping).
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    idle_timeout: u64,

    /// Seconds allowed for the TLS handshake plus the login frame.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    login_timeout: u64,

    /// Seconds one frame write may take; a client reading slower is disconnected (its
    /// messages stay stored for its next login).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    write_timeout: u64,

    /// Seconds an undelivered message is kept before it expires (default 7 days). A device
    /// unseen for longer no longer holds its account's messages back.
    #[arg(long, default_value_t = 7 * 24 * 3600, value_name = "SECS")]
    message_ttl: u64,

    /// Most devices one account may have seen within the message TTL; a login from a further
    /// device is refused with TooManyDevices.
    #[arg(long, default_value_t = 16, value_name = "N")]
    max_devices_per_account: usize,

    /// Milliseconds to wait before answering a failed login, or one refused after too many
    /// failures.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    login_failure_delay_ms: u64,

    /// Failed logins one account may have before it backs off: each further try waits
    /// --login-backoff-ms, doubled per failure up to --login-lockout, or is refused with
    /// TooManyAttempts. Addresses the account last logged in from are exempt.
    #[arg(long, default_value_t = 5, value_name = "N")]
    max_login_failures: u32,

    /// Milliseconds of an account's first backoff wait.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    login_backoff_ms: u64,

    /// Failed logins one address (IPv4, or IPv6 /64) may have per --login-lockout, whatever
    /// the account names; more are refused with TooManyAttempts until the window ends.
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_login_failures_per_ip: u32,

    /// Seconds of the per-address failure window, the longest account backoff, and how long
    /// failures are remembered.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    login_lockout: u64,

    /// Milliseconds a login may wait for its turn at the Argon2 hash (two at a time, one per
    /// address); past it the login is refused with RateLimited (the server is busy; retry).
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    login_queue_timeout_ms: u64,

    /// Entries in each table of login failures (per address, per account) and of addresses
    /// accounts logged in from; when one is full its oldest entry is forgotten.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    login_table_entries: usize,

    /// Unacknowledged deliveries per connection; the rest wait in the store.
    #[arg(long, default_value_t = 128, value_name = "N")]
    delivery_window: usize,

    /// Seconds connections get to finish on shutdown.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    shutdown_grace: u64,

    /// Send no push wake-ups (clients' push registrations are then refused).
    #[arg(long)]
    no_push: bool,

    /// Allow push endpoints on private and loopback addresses and over plain http (for tests
    /// and private networks only: a client could otherwise make the relay reach them).
    #[arg(long)]
    push_allow_private: bool,

    /// At most one wake-up per device in this many seconds (later ones are merged into it).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    push_window: u64,

    #[command(flatten)]
    argon2: Argon2Args,
}

#[derive(Args, Debug, Clone, Copy)]
struct Argon2Args {
    /// Argon2id memory cost in KiB for new account hashes (and the dummy hash computed for
    /// unknown accounts while there are none; then the dummy uses what most accounts use).
    #[arg(long, global = true, default_value_t = 19456, value_name = "KIB")]
    argon2_memory_kib: u32,

    /// Argon2id passes.
    #[arg(long, global = true, default_value_t = 2, value_name = "N")]
    argon2_iterations: u32,

    /// Argon2id lanes.
    #[arg(long, global = true, default_value_t = 1, value_name = "N")]
    argon2_parallelism: u32,
}

impl From<Argon2Args> for Argon2Params {
    fn from(a: Argon2Args) -> Self {
        Self {
            memory_kib: a.argon2_memory_kib,
            iterations: a.argon2_iterations,
            parallelism: a.argon2_parallelism,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Adds an account. Prints a newly generated secret, or reads one from stdin with
    /// --secret-stdin. Only the Argon2id hash is stored.
    AddAccount {
        /// The account name (1-64 characters from A-Z a-z 0-9 . _ @ -).
        name: String,
        /// Read the secret from the first line of stdin instead of generating one (at least
        /// 12 bytes).
        #[arg(long)]
        secret_stdin: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter =
        cli.log.clone().or_else(|| std::env::var("RUST_LOG").ok()).unwrap_or_else(|| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let Some(data_dir) = cli.data_dir.clone() else {
        eprintln!("otr-relay: --data-dir DIR is required (see --help)");
        return ExitCode::from(2);
    };
    match cli.command {
        Some(Command::AddAccount { name, secret_stdin }) => {
            add_account(&data_dir, &name, secret_stdin, cli.serve.argon2)
        }
        None => serve(data_dir, cli.serve),
    }
}

fn add_account(data_dir: &std::path::Path, name: &str, secret_stdin: bool, argon2: Argon2Args) -> ExitCode {
    let (secret, generated) = if secret_stdin {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("otr-relay: reading the secret: {e}");
            return ExitCode::FAILURE;
        }
        (line.trim_end_matches(['\r', '\n']).to_string(), false)
    } else {
        match accounts::generate_secret() {
            Ok(s) => (s, true),
            Err(e) => {
                eprintln!("otr-relay: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    match accounts::add_account(data_dir, name, &secret, argon2.into()) {
        Ok(()) => {
            if generated {
                println!("account {name} added; its secret (shown once): {secret}");
            } else {
                println!("account {name} added");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("otr-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(data_dir: PathBuf, a: ServeArgs) -> ExitCode {
    let limits = Limits {
        max_frame_bytes: a.max_frame_bytes,
        queue_max_messages: a.queue_max_messages,
        queue_max_bytes: a.queue_max_bytes,
        max_store_bytes: a.max_store_bytes,
        max_connections_per_ip: a.max_connections_per_ip,
        max_connections: a.max_connections,
        messages_per_second: a.rate,
        burst: a.burst,
        idle_timeout: Duration::from_secs(a.idle_timeout),
        login_timeout: Duration::from_secs(a.login_timeout),
        write_timeout: Duration::from_secs(a.write_timeout),
        message_ttl: Duration::from_secs(a.message_ttl),
        max_devices_per_account: a.max_devices_per_account.max(1),
        login_failure_delay: Duration::from_millis(a.login_failure_delay_ms),
        max_login_failures: a.max_login_failures,
        login_backoff: Duration::from_millis(a.login_backoff_ms),
        max_login_failures_per_ip: a.max_login_failures_per_ip,
        login_lockout: Duration::from_secs(a.login_lockout),
        login_queue_timeout: Duration::from_millis(a.login_queue_timeout_ms),
        login_table_entries: a.login_table_entries,
        delivery_window: a.delivery_window,
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
        ..Limits::default()
    };
    let mut config = ServerConfig::new(a.listen, data_dir);
    config.limits = limits;
    config.argon2 = a.argon2.into();
    config.cert_and_key = a.cert.zip(a.key);
    if !a.no_push {
        let mut push = otr_relay::push::PushConfig::default();
        push.allow_private = a.push_allow_private;
        push.allow_http = a.push_allow_private;
        push.window = Duration::from_secs(a.push_window);
        config.push = Some(push);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("otr-relay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind(config).await?;
        println!("otr-relay listening on {}", server.local_addr()?);
        println!("certificate SHA-256 fingerprint: {}", server.fingerprint());
        server.run(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otr-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
