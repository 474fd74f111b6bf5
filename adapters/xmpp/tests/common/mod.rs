//! A real Prosody for the tests: on 127.0.0.1, an ephemeral port, a config, certificate and
//! data in a temporary folder, throwaway accounts; killed when dropped.
//!
//! Without Prosody installed the tests say why and pass, unless `OTR_XMPP_REQUIRE_PROSODY` is
//! set (CI's `.ci/run` sets it), where they fail.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otr_core::{DsaKeyPair, InstanceTag};
use otr_xmpp::{BareJid, ClientEvent, Config, Events, Trust};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

/// How long any one expected event may take.
pub const STEP: Duration = Duration::from_secs(20);

/// Which optional server features a test wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Load mod_mam and archive every message by default.
    pub mam: bool,
}

/// A running Prosody.
pub struct Prosody {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    ca: CertificateDer<'static>,
}

impl Prosody {
    /// Starts Prosody, or returns `None` (with the reason on stderr) when it is not installed
    /// and the environment does not require it.
    pub fn start(opts: Options) -> Option<Prosody> {
        init_logging();
        if Command::new("prosodyctl")
            .arg("about")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            let why = "Prosody is not installed (apt-get install prosody); the XMPP tests need it";
            if std::env::var_os("OTR_XMPP_REQUIRE_PROSODY").is_some() {
                panic!("{why}");
            }
            // Written to the real stderr, past the test harness's capture, so it is seen.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("SKIPPED: {why}\n").as_bytes());
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = write_certificates(dir.path());
        let port = free_port();
        write_config(dir.path(), port, opts);
        std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
        let mut p = Prosody { dir, port, child: None, ca };
        p.launch();
        Some(p)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    /// The data folder (accounts, archives, offline messages).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("stdout.log")).expect("log file");
        let child = Command::new("prosody")
            .arg("--config")
            .arg(self.config_path())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prosody");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("prosody exited ({status}) during start:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "prosody did not listen on {} within 15 s:\n{}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prosody's own log and its console output.
    pub fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("prosody.log"))
    }

    /// Starts the server again after [`kill`](Self::kill), on the same port and data.
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Creates account `name@localhost`; returns its password.
    pub fn register(&self, name: &str) -> String {
        let password = format!("pw-{name}-{}", std::process::id());
        let out = Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config_path())
            .args(["register", name, "localhost", &password])
            .output()
            .expect("run prosodyctl");
        assert!(
            out.status.success(),
            "prosodyctl register {name} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        password
    }

    /// The test CA, as the clients trust it.
    pub fn ca(&self) -> CertificateDer<'static> {
        self.ca.clone()
    }

    /// A client configuration for `name@localhost` (registered here) with a key made from
    /// `seed`, trusting only the test CA.
    pub fn client_config(&self, name: &str, seed: u64) -> Config {
        let password = self.register(name);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let tag = InstanceTag::random(&mut rng);
        let mut c = Config::new(jid(name), password, key(seed), tag);
        c.server = Some(format!("127.0.0.1:{}", self.port));
        c.tls_server_name = Some("localhost".to_owned());
        c.trust = Trust::Roots(vec![self.ca()]);
        c.reconnect_delay = (Duration::from_millis(200), Duration::from_secs(1));
        c.connect_timeout = Duration::from_secs(10);
        c
    }

    /// Every file under the data folder, as text (lossy): archives, offline store, accounts.
    pub fn stored_text(&self) -> String {
        fn walk(dir: &Path, out: &mut String) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.push_str(&format!("=== {}\n", p.display()));
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
            }
        }
        let mut out = String::new();
        walk(&self.data_dir(), &mut out);
        out
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain tokio-xmpp client for a new account `name`, online with presence sent (it trusts
/// the test CA through our connector).
pub async fn raw_client(server: &Prosody, name: &str) -> tokio_xmpp::Client {
    use futures_util::StreamExt;
    let cfg = server.client_config(name, 99);
    let connector = otr_xmpp::StartTls::new(&cfg).expect("connector");
    let mut c = tokio_xmpp::Client::new_with_connector(
        cfg.jid.clone(),
        cfg.password.to_string(),
        connector,
        tokio_xmpp::xmlstream::Timeouts::default(),
    );
    let online = tokio::time::timeout(STEP, async {
        while let Some(ev) = c.next().await {
            if ev.is_online() {
                return true;
            }
        }
        false
    });
    assert!(online.await.unwrap_or(false), "{name} did not get online");
    c.send_stanza(tokio_xmpp::parsers::presence::Presence::available().into()).await.expect("presence");
    c
}

/// With `OTR_XMPP_TEST_LOG` set, tokio-xmpp's log (stream errors, reconnections) goes to
/// stderr: what to look at when a test fails on a server's behaviour.
fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.target().starts_with("tokio_xmpp")
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
            }
        }
        fn flush(&self) {}
    }
    if std::env::var_os("OTR_XMPP_TEST_LOG").is_some() && log::set_boxed_logger(Box::new(Stderr)).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
}

/// `name@localhost`.
pub fn jid(name: &str) -> BareJid {
    format!("{name}@localhost").parse().expect("valid JID")
}

/// A long-term key per seed (generating one takes a moment).
pub fn key(seed: u64) -> DsaKeyPair {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<u64, DsaKeyPair>>> = OnceLock::new();
    let mut map = KEYS.get_or_init(Default::default).lock().expect("key cache");
    map.entry(seed).or_insert_with(|| DsaKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(seed))).clone()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// A test CA and a certificate for `localhost` signed by it; writes the server's files and
/// returns the CA certificate.
fn write_certificates(dir: &Path) -> CertificateDer<'static> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "otr-xmpp test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA cert");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).expect("server cert");
    std::fs::write(dir.join("localhost.crt"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("localhost.key"), key.serialize_pem()).expect("write key");
    ca.der().clone()
}

fn write_config(dir: &Path, port: u16, opts: Options) {
    let d = dir.display();
    let mam = if opts.mam { "\"mam\";" } else { "" };
    let config = format!(
        r#"-- generated by the otr-xmpp tests
run_as_root = true
daemonize = false
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
plugin_paths = {{}}
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{d}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_require_encryption = true
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
default_archive_policy = true
archive_expires_after = "1d"
certificates = "{d}"
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; "carbons"; "smacks"; "posix"; {mam} }}
modules_disabled = {{ "s2s" }}
VirtualHost "localhost"
    ssl = {{ certificate = "{d}/localhost.crt"; key = "{d}/localhost.key" }}
"#
    );
    std::fs::write(dir.join("prosody.cfg.lua"), config).expect("write config");
}

/// Reads events until `pred` picks one (and returns what it made of it); fails after
/// [`STEP`], listing what arrived instead.
pub async fn expect<T>(
    events: &mut Events,
    what: &str,
    mut pred: impl FnMut(&ClientEvent) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(e)) => {
                if let Some(v) = pred(&e) {
                    return v;
                }
                seen.push(e);
            }
            Ok(None) => panic!("event stream ended while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {STEP:?}; saw {seen:#?}"),
        }
    }
}
