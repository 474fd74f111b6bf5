//! Denial-of-service and leak attacks on the relay's accept and login paths (issue 16, item 9),
//! each run against a real server on 127.0.0.1. A second "address" is another loopback
//! address (127.0.0.2, 127.0.0.3, ...), which Linux routes to the same host. Every test failed
//! against the relay before its fix; SECURITY.md ("The relay") names the rule each one checks.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use otr_relay::accounts::{self, AccountError, Argon2Params};
use otr_relay::proto::{self, ClientFrame, PROTOCOL_VERSION, ServerFrame};
use otr_relay::{CertFingerprint, ErrorCode, Limits, Server, ServerConfig, ServerHandle};
use otr_relay_client::tokio_client::connect_tls_with;
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_otr-relay");

/// How the server answered a login.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Welcome,
    Refused(ErrorCode, String),
    /// Closed (or reset) before any answer.
    Closed,
}

/// Logs in as `account` from the loopback address 127.0.0.`host` (bounded: 10 s).
async fn login_from(
    host: u8,
    server: SocketAddr,
    pin: CertFingerprint,
    account: &str,
    secret: &str,
) -> Answer {
    let attempt = async {
        let socket = TcpSocket::new_v4().ok()?;
        socket.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0))).ok()?;
        let tcp = socket.connect(server).await.ok()?;
        let mut tls = connect_tls_with(tcp, pin).await.ok()?;
        let login = ClientFrame::Login {
            version: PROTOCOL_VERSION,
            account: account.into(),
            secret: secret.into(),
            device: None,
        };
        proto::write_frame(&mut tls, &login).await.ok()?;
        let bytes = proto::read_frame(&mut tls, 1 << 20).await.ok()?;
        Some(match proto::decode::<ServerFrame>(&bytes).unwrap() {
            ServerFrame::Welcome { .. } => Answer::Welcome,
            ServerFrame::Error { code, message, .. } => Answer::Refused(code, message),
            other => panic!("unexpected answer to a login: {other:?}"),
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(answer) => answer.unwrap_or(Answer::Closed),
        Err(_) => panic!("no answer to a login within 10 s"),
    }
}

/// The real `otr-relay` binary, killed on drop.
struct Relay {
    child: Child,
    addr: SocketAddr,
    pin: CertFingerprint,
}

impl Relay {
    /// Starts the binary on `dir` with cheap Argon2 settings and `args`.
    fn start(dir: &std::path::Path, args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1", "--log", "error"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut pin) = (None, None);
        // The relay prints exactly these two lines at start.
        for _ in 0..2 {
            let line = lines.next().expect("the relay printed nothing").unwrap();
            if let Some(a) = line.strip_prefix("otr-relay listening on ") {
                addr = Some(a.parse().unwrap());
            } else if let Some(f) = line.strip_prefix("certificate SHA-256 fingerprint: ") {
                pin = Some(f.parse().unwrap());
            }
        }
        Self { child, addr: addr.unwrap(), pin: pin.unwrap() }
    }

    /// The relay's resident memory in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kib.trim().trim_end_matches(" kB").trim().parse::<u64>().unwrap() * 1024
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An in-process server whose unknown-account dummy hash uses `argon2`.
async fn start_with(dir: &std::path::Path, limits: Limits, argon2: Argon2Params) -> ServerHandle {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    config.limits = limits;
    config.argon2 = argon2;
    Server::bind(config).await.unwrap().spawn().unwrap()
}

/// Attack 1: silent sockets from one address used to take every connection slot (the
/// per-address limit applied only after the TLS handshake). Now they are refused at accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_slot() {
    let dir = TempDir::new("slots");
    let secret = add(dir.path(), "alice");
    let relay = Relay::start(dir.path(), &["--max-connections", "32", "--max-connections-per-ip", "4"]);
    // The attack: twice the server's connection limit in silent sockets from 127.0.0.1.
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // the relay accepts them all
    // A client from another address still logs in, at once.
    let t = Instant::now();
    assert_eq!(login_from(2, relay.addr, relay.pin, "alice", &secret).await, Answer::Welcome);
    assert!(t.elapsed() < Duration::from_secs(2), "login took {:?}", t.elapsed());
    // The attacking address itself has no slot left.
    assert_ne!(login_from(1, relay.addr, relay.pin, "alice", &secret).await, Answer::Welcome);
    drop(silent);
}

/// Attack 2: failed logins with long, distinct account names used to grow the failure table
/// without bound (about 64 KiB per failure). Now invalid names are refused before any hash or
/// table entry, and the tables are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_do_not_grow_the_server() {
    let dir = TempDir::new("names");
    add(dir.path(), "alice");
    let relay = Relay::start(dir.path(), &["--login-failure-delay-ms", "0"]);
    let (addr, pin) = (relay.addr, relay.pin);
    let before = relay.rss();
    // 800 failures with 60,000-byte names: 48 MB of names, in 8 connections at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        tasks.spawn(async move {
            for i in 0..100 {
                let name = format!("{t}-{i:03}-{}", "n".repeat(60_000));
                match login_from(1, addr, pin, &name, "wrong secret!").await {
                    Answer::Refused(ErrorCode::AuthFailed, _) => {}
                    other => panic!("expected AuthFailed, got {other:?}"),
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let grown = relay.rss().saturating_sub(before);
    assert!(grown < 16 << 20, "the relay grew by {} MiB", grown >> 20);
    // The answer says what is wrong with the name.
    match login_from(1, addr, pin, &"n".repeat(65), "wrong secret!").await {
        Answer::Refused(ErrorCode::AuthFailed, m) => assert!(m.contains("invalid account name"), "{m}"),
        other => panic!("expected AuthFailed, got {other:?}"),
    }
}

/// Argon2 settings for the timing tests: slow enough to measure (tens of ms).
const MEASURABLE: Argon2Params = Argon2Params { memory_kib: 8 * 1024, iterations: 3, parallelism: 1 };

/// Attack 3: 12 addresses with 16 connections each, each login with a fresh name and a wrong
/// secret, used to queue up behind the shared Argon2 limit and delay a valid login from
/// another address for seconds. Now each address has at most one login waiting for or in a
/// hash, waits are bounded, and each address has a failure budget.
///
/// What a valid login waits for is counted in hashes, not seconds, so that the machine's
/// speed and load do not matter: the attackers' failed logins answered while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_do_not_starve_behind_other_addresses() {
    let dir = TempDir::new("starve");
    accounts::add_account(dir.path(), "alice", "secret-of-alice", MEASURABLE).unwrap();
    let h = start_with(dir.path(), test_limits(), MEASURABLE).await;
    let (addr, pin) = (h.addr(), h.fingerprint());
    let hashed = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_millis(3000);
    let mut attack = tokio::task::JoinSet::new();
    for host in 3..15u8 {
        for c in 0..16 {
            let hashed = hashed.clone();
            attack.spawn(async move {
                // Bounded by the deadline and by 200 tries.
                for i in 0..200 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let name = format!("x{host}-{c}-{i}");
                    if let Answer::Refused(ErrorCode::AuthFailed, _) =
                        login_from(host, addr, pin, &name, "wrong secret!").await
                    {
                        hashed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Refused without a hash (or closed): try again a little later.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut most, mut slowest) = (0, Duration::ZERO);
    for _ in 0..5 {
        let (before, t) = (hashed.load(Ordering::Relaxed), Instant::now());
        assert_eq!(login_from(2, addr, pin, "alice", "secret-of-alice").await, Answer::Welcome);
        slowest = slowest.max(t.elapsed());
        most = most.max(hashed.load(Ordering::Relaxed) - before);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    while let Some(r) = attack.join_next().await {
        r.unwrap();
    }
    // Behind one login per attacking address a valid login waits for about 12 hashes (plus
    // the answers still in their 50 ms failure delay); behind all 192 it waited for ~190.
    assert!(most <= 48, "a valid login waited for {most} attackers' hashes ({slowest:?})");
    h.shutdown().await.unwrap();
}

/// The median of `samples`.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Attack 4: the dummy hash for unknown accounts used the server's Argon2 settings, real
/// accounts their own, so a failed login took measurably longer for an account that exists.
/// Now the dummy uses the settings of the accounts on file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_take_as_long_for_unknown_accounts() {
    let dir = TempDir::new("timing");
    accounts::add_account(dir.path(), "alice", "secret-of-alice", MEASURABLE).unwrap();
    accounts::add_account(dir.path(), "bob", "secret-of-bob", MEASURABLE).unwrap();
    let mut limits = test_limits();
    limits.login_failure_delay = Duration::ZERO;
    limits.max_login_failures = 1000;
    // The server's own setting differs from the accounts' (an operator changed it).
    let h = start_with(dir.path(), limits, Argon2Params::TEST).await;
    let (addr, pin) = (h.addr(), h.fingerprint());
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        for (account, times) in [("alice", &mut known), (&*format!("nobody{i}"), &mut unknown)] {
            let t = Instant::now();
            match login_from(1, addr, pin, account, "wrong secret!").await {
                Answer::Refused(ErrorCode::AuthFailed, _) => {}
                other => panic!("expected AuthFailed, got {other:?}"),
            }
            times.push(t.elapsed());
        }
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.7..1.4).contains(&ratio),
        "a failed login takes {known:?} for an existing account, {unknown:?} for an unknown one"
    );
    h.shutdown().await.unwrap();
}

/// Attack 5: failures were counted per (address, account): guesses from many addresses were
/// unlimited, concurrent guesses raced past the check, and anyone sharing an address could
/// lock out an account. Now each account backs off exponentially after a few failures (except
/// for addresses it logged in from), check and count are one step, and new secrets are longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_is_bounded_per_account_not_per_address() {
    let dir = TempDir::new("guess");
    for n in ["alice", "bob", "carol", "erin"] {
        add(dir.path(), n);
    }
    let limits = Limits { max_login_failures: 5, login_backoff: Duration::from_secs(30), ..test_limits() };
    let h = start(dir.path(), limits).await;
    let (addr, pin) = (h.addr(), h.fingerprint());
    let checked = |answers: &[Answer]| {
        answers.iter().filter(|a| matches!(a, Answer::Refused(ErrorCode::AuthFailed, _))).count()
    };

    // Alice logs in from her usual address, 127.0.0.1.
    assert_eq!(login_from(1, addr, pin, "alice", "secret-of-alice").await, Answer::Welcome);

    // Across addresses: 8 addresses guess 3 times each at carol; only 5 guesses are checked.
    let mut answers = Vec::new();
    for host in 10..18 {
        for _ in 0..3 {
            answers.push(login_from(host, addr, pin, "carol", "guess guess!").await);
        }
    }
    assert_eq!(checked(&answers), 5, "{answers:?}");
    let backed_off =
        |a: &Answer| matches!(a, Answer::Refused(ErrorCode::TooManyAttempts, m) if m.contains("retry in"));
    assert!(answers.iter().any(backed_off), "the others are told when to retry: {answers:?}");

    // At once: 20 concurrent guesses at bob from one address, at erin from 20 addresses.
    for (hosts, account) in [([20u8; 20], "bob"), (std::array::from_fn(|i| 30 + i as u8), "erin")] {
        let mut tasks = tokio::task::JoinSet::new();
        for host in hosts {
            tasks.spawn(async move { login_from(host, addr, pin, account, "guess guess!").await });
        }
        let mut answers = Vec::new();
        while let Some(a) = tasks.join_next().await {
            answers.push(a.unwrap());
        }
        let n = checked(&answers);
        assert!(n <= 5, "{n} of 20 concurrent guesses at {account} checked: {answers:?}");
    }

    // Strangers make alice's account back off...
    for host in 60..70 {
        login_from(host, addr, pin, "alice", "guess guess!").await;
    }
    match login_from(70, addr, pin, "alice", "secret-of-alice").await {
        Answer::Refused(ErrorCode::TooManyAttempts, _) => {}
        other => panic!("expected TooManyAttempts from a new address, got {other:?}"),
    }
    // ...but alice still logs in from the address she used before.
    assert_eq!(login_from(1, addr, pin, "alice", "secret-of-alice").await, Answer::Welcome);
    h.shutdown().await.unwrap();

    // New accounts need a secret of at least 12 bytes.
    assert!(matches!(
        accounts::add_account(dir.path(), "dave", "elevenbytes", Argon2Params::TEST),
        Err(AccountError::BadSecret)
    ));
    accounts::add_account(dir.path(), "dave", "twelve bytes", Argon2Params::TEST).unwrap();
}
