//! Helpers shared by the relay's integration tests: temporary data directories, an
//! in-process server with test limits, and bounded receive helpers.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use otr_relay::accounts::{self, Argon2Params};
use otr_relay::{Limits, Server, ServerConfig, ServerHandle};
use otr_relay_client::ClientConfig;
use otr_relay_client::tokio_client::{Client, Delivery, Inbox};

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("otr-relay-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Limits that keep tests fast: short delays and timeouts, generous rates.
pub fn test_limits() -> Limits {
    Limits {
        messages_per_second: 100_000,
        burst: 100_000,
        idle_timeout: Duration::from_secs(10),
        login_timeout: Duration::from_secs(3),
        write_timeout: Duration::from_secs(2),
        login_failure_delay: Duration::from_millis(50),
        queue_max_messages: 10_000,
        queue_max_bytes: 64 << 20,
        shutdown_grace: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// Adds `name` with a secret derived from it; returns the secret.
pub fn add(dir: &Path, name: &str) -> String {
    let secret = format!("secret-of-{name}");
    accounts::add_account(dir, name, &secret, Argon2Params::TEST).unwrap();
    secret
}

pub async fn start(dir: &Path, limits: Limits) -> ServerHandle {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir);
    config.limits = limits;
    config.argon2 = Argon2Params::TEST;
    Server::bind(config).await.unwrap().spawn().unwrap()
}

pub fn config(h: &ServerHandle, name: &str) -> ClientConfig {
    ClientConfig::new(h.addr().to_string(), h.fingerprint(), name, format!("secret-of-{name}"))
}

pub async fn connect(h: &ServerHandle, name: &str) -> (Client, Inbox) {
    Client::connect(config(h, name)).await.unwrap()
}

/// The next delivery, failing the test after `secs` seconds.
pub async fn recv(inbox: &mut Inbox, secs: u64) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(secs), inbox.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(other) => panic!("inbox ended: {other:?}"),
        Err(_) => panic!("no delivery within {secs} s"),
    }
}

/// Asserts nothing is delivered within `ms` milliseconds.
pub async fn quiet(inbox: &mut Inbox, ms: u64) {
    if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(ms), inbox.next()).await {
        panic!("unexpected delivery: {d:?}");
    }
}

/// Waits (bounded) until the store holds `n` messages.
pub async fn wait_stored(h: &ServerHandle, n: u64) {
    for _ in 0..100 {
        if h.stored_messages().unwrap() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("store holds {} messages, expected {n}", h.stored_messages().unwrap());
}
