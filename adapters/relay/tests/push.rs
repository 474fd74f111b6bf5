//! Push wake-ups against real HTTP endpoints on 127.0.0.1: coalescing, the content-free body,
//! Web Push encryption and VAPID checked by a receiving side written here, and the faults an
//! endpoint can throw at the relay (hangs, redirects, 5xx, 429, 404/410, private addresses).
//!
//! Time: the only waits are a coalescing window of 2 s and timeouts of a few seconds; every
//! wait for an outcome is bounded (20 s) and every loop is bounded.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use otr_relay::push::{
    DropReason, FailReason, ProbeError, PushConfig, PushEndpoint, PushOutcome, PushReport, Pusher,
    RefuseReason, VapidKey, WAKE_PAYLOAD, WAKE_TOPIC, WakeError, WakeStatus,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 endpoint: records each request, answers by path.

/// One request as the endpoint saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

enum Reply {
    Status(u16, Vec<(&'static str, String)>),
    Body(&'static str),
    Hang,
}

struct Endpoint {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: mpsc::UnboundedReceiver<Seen>,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests seen so far (after a short grace for stragglers).
    async fn drain(&mut self) -> Vec<Seen> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        while let Ok(s) = self.requests.try_recv() {
            out.push(s);
        }
        out
    }
}

/// Answers: `/hang` never; `/s/CODE` with CODE (and `/s/429-N` with `Retry-After: N`, a 3xx
/// with `Location: redirect`); anything else 201.
async fn endpoint(redirect: Option<String>) -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (tx, requests) = mpsc::unbounded_channel();
    let count = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            let redirect = redirect.clone();
            tokio::spawn(async move {
                let Some(seen) = read_request(&mut sock).await else { return };
                let reply = if seen.method == "GET" {
                    // UnifiedPush discovery: only the /up/ paths are UnifiedPush endpoints.
                    match seen.path.starts_with("/up/") {
                        true => Reply::Body(r#"{"unifiedpush":{"version":1}}"#),
                        false => Reply::Body("<html>hello</html>"),
                    }
                } else {
                    reply_for(&seen.path, redirect.as_deref())
                };
                let _ = tx.send(seen);
                match reply {
                    Reply::Hang => std::future::pending::<()>().await,
                    Reply::Body(body) => {
                        let answer =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                        let _ = sock.write_all(answer.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                    Reply::Status(code, headers) => {
                        let mut head =
                            format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n");
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                }
            });
        }
    });
    Endpoint { addr, connections, requests }
}

fn reply_for(path: &str, redirect: Option<&str>) -> Reply {
    if path == "/hang" {
        return Reply::Hang;
    }
    let Some(status) = path.strip_prefix("/s/") else { return Reply::Status(201, vec![]) };
    let (code, retry_after) = match status.split_once('-') {
        Some((c, ra)) => (c, Some(ra.to_owned())),
        None => (status, None),
    };
    let code: u16 = code.parse().unwrap();
    let mut headers = vec![];
    if let Some(ra) = retry_after {
        headers.push(("retry-after", ra));
    }
    if (300..400).contains(&code) {
        headers.push(("location", redirect.unwrap_or("http://127.0.0.1:1/").to_owned()));
    }
    Reply::Status(code, headers)
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize =
        headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen { method, path, headers, body })
}

// ---------------------------------------------------------------------------------------------
// The relay side.

fn test_config() -> PushConfig {
    let mut c = PushConfig::default();
    c.window = Duration::from_secs(2);
    c.timeout = Duration::from_secs(3);
    c.allow_private = true;
    c.allow_http = true;
    c
}

fn new_pusher(config: PushConfig) -> (Pusher, mpsc::UnboundedReceiver<PushReport>) {
    pusher_with(config, VapidKey::generate().unwrap())
}

fn pusher_with(config: PushConfig, vapid: VapidKey) -> (Pusher, mpsc::UnboundedReceiver<PushReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let p = Pusher::new(config, vapid, move |r| {
        let _ = tx.send(r);
    })
    .unwrap();
    (p, rx)
}

async fn outcome(rx: &mut mpsc::UnboundedReceiver<PushReport>) -> PushReport {
    tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("an outcome within 20 s").unwrap()
}

// ---------------------------------------------------------------------------------------------
// (1) UnifiedPush: plain, content-free, coalesced.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_push_is_content_free_and_coalesced() {
    let mut ep = endpoint(None).await;
    let up = PushEndpoint::unified_push(&ep.url("/up/bob-device")).unwrap();
    let mut config = test_config();
    config.ttl = Duration::from_secs(3600);
    let (pusher, mut outcomes) = new_pusher(config);

    // Three messages for bob in one window: one POST.
    assert_eq!(pusher.wake("bob", &up), Ok(WakeStatus::Queued));
    assert_eq!(pusher.wake("bob", &up), Ok(WakeStatus::Coalesced));
    assert_eq!(pusher.wake("bob", &up), Ok(WakeStatus::Coalesced));
    let r = outcome(&mut outcomes).await;
    assert_eq!((r.account.as_str(), &r.outcome), ("bob", &PushOutcome::Delivered));
    let seen = ep.drain().await;
    assert_eq!(seen.len(), 1, "one POST for three wakes in a window");
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/up/bob-device"));
    assert_eq!(s.body, WAKE_PAYLOAD, "the fixed payload only");
    assert_eq!(s.header("ttl"), Some("3600"));
    assert_eq!(s.header("urgency"), Some("high"));
    assert_eq!(s.header("topic"), Some(WAKE_TOPIC));
    assert_eq!(s.header("authorization"), None);
    assert_eq!(s.header("content-encoding"), None);

    // After the window: another.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(pusher.wake("bob", &up), Ok(WakeStatus::Queued));
    assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Delivered);
    let seen = ep.drain().await;
    assert_eq!(seen.len(), 1, "one more POST after the window");
    assert_eq!(seen[0].body, WAKE_PAYLOAD);
    assert!(outcomes.try_recv().is_err(), "nothing else was sent");
}

// ---------------------------------------------------------------------------------------------
// (2) Web Push: the receiving side (RFC 8291 decryption, RFC 8292 VAPID check), written here.

/// HMAC-SHA-256.
fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// What a user agent does with an `aes128gcm` Web Push body (RFC 8291 §3.4, RFC 8188 §2).
fn ua_decrypt(
    body: &[u8],
    ua_private: ring::agreement::EphemeralPrivateKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Vec<u8> {
    let salt = &body[..16];
    let rs = u32::from_be_bytes(body[16..20].try_into().unwrap());
    let idlen = usize::from(body[20]);
    assert_eq!(idlen, 65, "keyid is the sender's uncompressed public key");
    let as_public = &body[21..21 + idlen];
    let ciphertext = &body[21 + idlen..];
    assert!(ciphertext.len() <= rs as usize, "one record");
    let peer = ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, as_public);
    let ecdh = ring::agreement::agree_ephemeral(ua_private, &peer, |s| s.to_vec()).unwrap();
    let prk_key = hmac(auth, &ecdh);
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    info.push(1);
    let ikm = hmac(&prk_key, &info);
    let prk = hmac(salt, &ikm);
    let cek = &hmac(&prk, b"Content-Encoding: aes128gcm\0\x01")[..16];
    let nonce: [u8; 12] = hmac(&prk, b"Content-Encoding: nonce\0\x01")[..12].try_into().unwrap();
    let key =
        ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, cek).unwrap());
    let mut record = ciphertext.to_vec();
    let plain = key
        .open_in_place(ring::aead::Nonce::assume_unique_for_key(nonce), ring::aead::Aad::empty(), &mut record)
        .expect("the record decrypts and authenticates");
    // Strip the padding: zeros after the delimiter, which must be 2 (the last record).
    let end = plain.iter().rposition(|&b| b != 0).unwrap();
    assert_eq!(plain[end], 2, "last-record delimiter");
    plain[..end].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_is_encrypted_and_vapid_signed() {
    let mut ep = endpoint(None).await;
    let rng = SystemRandom::new();
    let ua_private =
        ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng).unwrap();
    let ua_public = ua_private.compute_public_key().unwrap().as_ref().to_vec();
    let mut auth = [0u8; 16];
    rng.fill(&mut auth).unwrap();
    let wp = PushEndpoint::web_push(&ep.url("/wpush/v2/sub"), &ua_public, &auth).unwrap();

    let vapid = VapidKey::generate().unwrap();
    let relay_key = vapid.public_key().to_vec();
    let mut config = test_config();
    config.vapid_subject = Some("mailto:ops@relay.example".into());
    let (pusher, mut outcomes) = pusher_with(config, vapid);
    assert_eq!(pusher.vapid_public_key(), relay_key);

    assert_eq!(pusher.wake("bob", &wp), Ok(WakeStatus::Queued));
    assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Delivered);
    let seen = ep.drain().await;
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(s.header("urgency"), Some("high"));
    assert!(!s.body.windows(4).any(|w| w == b"wake"), "the body is ciphertext");

    // Decrypt as the user agent.
    assert_eq!(ua_decrypt(&s.body, ua_private, &ua_public, &auth), WAKE_PAYLOAD);

    // Check VAPID as the push service.
    let authz = s.header("authorization").expect("VAPID authorization");
    let rest = authz.strip_prefix("vapid t=").expect("vapid scheme");
    let (jwt, k) = rest.split_once(", k=").expect("k parameter");
    assert_eq!(URL_SAFE_NO_PAD.decode(k).unwrap(), relay_key, "k is the relay's key");
    let (signing_input, sig) = jwt.rsplit_once('.').unwrap();
    let (header, claims) = signing_input.split_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &relay_key)
        .verify(signing_input.as_bytes(), &sig)
        .expect("the JWT is signed by the relay's VAPID key");
    let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], format!("http://{}", ep.addr), "aud is the endpoint's origin");
    assert_eq!(claims["sub"], "mailto:ops@relay.example");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp within 24 h: {exp} vs {now}");
}

// ---------------------------------------------------------------------------------------------
// (3) Faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_delays_nobody_and_times_out() {
    let hang = endpoint(None).await;
    let mut ok = endpoint(None).await;
    let (pusher, mut outcomes) = new_pusher(test_config());
    let hanging = PushEndpoint::unified_push(&hang.url("/hang")).unwrap();
    let fine = PushEndpoint::unified_push(&ok.url("/up/carol")).unwrap();

    let started = Instant::now();
    assert_eq!(pusher.wake("alice", &hanging), Ok(WakeStatus::Queued));
    assert_eq!(pusher.wake("carol", &fine), Ok(WakeStatus::Queued));
    assert!(started.elapsed() < Duration::from_secs(1), "wake never waits for the network");

    // Carol's wake-up arrives while alice's endpoint still hangs (its timeout is 3 s).
    let first = outcome(&mut outcomes).await;
    assert_eq!((first.account.as_str(), &first.outcome), ("carol", &PushOutcome::Delivered));
    assert_eq!(ok.drain().await.len(), 1);
    let second = outcome(&mut outcomes).await;
    assert_eq!(
        (second.account.as_str(), &second.outcome),
        ("alice", &PushOutcome::Failed(FailReason::Timeout))
    );
    assert_eq!(hang.connections.load(Ordering::SeqCst), 1);
    assert!(pusher.backing_off(&hanging).is_some(), "a hanging endpoint is backed off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_and_wake_never_blocks() {
    let hang = endpoint(None).await;
    let mut config = test_config();
    config.queue = 1;
    config.concurrency = 1;
    let (pusher, _outcomes) = new_pusher(config);
    let hanging = PushEndpoint::unified_push(&hang.url("/hang")).unwrap();
    let started = Instant::now();
    let mut full = false;
    for i in 0..10 {
        if pusher.wake(&format!("user{i}"), &hanging) == Err(WakeError::QueueFull) {
            full = true;
            break;
        }
    }
    assert!(full, "a full queue declines at once");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_never_followed() {
    let target = endpoint(None).await;
    let redirecting = endpoint(Some(target.url("/stolen"))).await;
    let (pusher, mut outcomes) = new_pusher(test_config());
    for code in [301u16, 302, 303, 307, 308] {
        let e = PushEndpoint::unified_push(&redirecting.url(&format!("/s/{code}"))).unwrap();
        assert_eq!(pusher.wake(&format!("user{code}"), &e), Ok(WakeStatus::Queued));
        assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Failed(FailReason::Redirect(code)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(target.connections.load(Ordering::SeqCst), 0, "the redirect target saw nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_back_off_and_gone_endpoints_are_dropped() {
    let mut ep = endpoint(None).await;
    let mut config = test_config();
    config.backoff_base = Duration::from_secs(60);
    config.backoff_max = Duration::from_secs(600);
    let (pusher, mut outcomes) = new_pusher(config);

    // 500 and 413: failure, then the endpoint is backed off (no POST for another account).
    for (code, path) in [(500u16, "/s/500"), (413, "/s/413"), (503, "/s/503")] {
        let e = PushEndpoint::unified_push(&ep.url(path)).unwrap();
        assert_eq!(pusher.wake(&format!("a{code}"), &e), Ok(WakeStatus::Queued));
        assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Failed(FailReason::Status(code)));
        let left = pusher.backing_off(&e).expect("backed off");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(30), "{left:?}");
        assert_eq!(pusher.wake(&format!("b{code}"), &e), Ok(WakeStatus::BackingOff));
    }
    assert_eq!(ep.drain().await.len(), 3, "no POST while backed off");

    // 429 with Retry-After: honoured; a huge one is bounded by backoff_max.
    let e = PushEndpoint::unified_push(&ep.url("/s/429-120")).unwrap();
    assert_eq!(pusher.wake("c1", &e), Ok(WakeStatus::Queued));
    let want = PushOutcome::Failed(FailReason::RateLimited { retry_after: Some(Duration::from_secs(120)) });
    assert_eq!(outcome(&mut outcomes).await.outcome, want);
    let left = pusher.backing_off(&e).expect("backed off");
    assert!(left <= Duration::from_secs(120) && left > Duration::from_secs(90), "{left:?}");
    assert_eq!(pusher.wake("c2", &e), Ok(WakeStatus::BackingOff));
    let e = PushEndpoint::unified_push(&ep.url("/s/429-99999999")).unwrap();
    assert_eq!(pusher.wake("c3", &e), Ok(WakeStatus::Queued));
    let _ = outcome(&mut outcomes).await;
    let left = pusher.backing_off(&e).expect("backed off");
    assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(500), "{left:?}");
    // 429 without Retry-After: the exponential backoff.
    let e = PushEndpoint::unified_push(&ep.url("/s/429")).unwrap();
    assert_eq!(pusher.wake("c4", &e), Ok(WakeStatus::Queued));
    let want = PushOutcome::Failed(FailReason::RateLimited { retry_after: None });
    assert_eq!(outcome(&mut outcomes).await.outcome, want);
    assert!(pusher.backing_off(&e).is_some());

    // 404 and 410: drop the endpoint.
    for (code, reason) in [(404u16, DropReason::NotFound), (410, DropReason::Gone)] {
        let e = PushEndpoint::unified_push(&ep.url(&format!("/s/{code}"))).unwrap();
        assert_eq!(pusher.wake(&format!("d{code}"), &e), Ok(WakeStatus::Queued));
        let r = outcome(&mut outcomes).await;
        assert_eq!(r.outcome, PushOutcome::Dropped(reason));
        assert_eq!(r.endpoint, e, "the report names the endpoint to delete");
        assert!(pusher.backing_off(&e).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_without_connecting() {
    let ep = endpoint(None).await;
    let port = ep.addr.port();
    let mut config = test_config();
    config.allow_private = false;
    let (pusher, mut outcomes) = new_pusher(config);
    let urls = [
        "http://10.0.0.1/up".to_owned(),
        "http://192.168.1.20:8080/up".to_owned(),
        "http://172.16.5.4/up".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        format!("http://127.0.0.1:{port}/up"),
        format!("http://localhost:{port}/up"),
        format!("http://[::1]:{port}/up"),
        "http://[fc00::1]/up".to_owned(),
        "http://[fe80::1]/up".to_owned(),
        "http://[::ffff:127.0.0.1]/up".to_owned(),
        "http://0.0.0.0/up".to_owned(),
    ];
    for (i, url) in urls.iter().enumerate() {
        let e = PushEndpoint::unified_push(url).unwrap();
        assert_eq!(pusher.wake(&format!("u{i}"), &e), Ok(WakeStatus::Queued));
        let r = outcome(&mut outcomes).await;
        assert!(
            matches!(r.outcome, PushOutcome::Refused(RefuseReason::PrivateAddress(_))),
            "{url}: {:?}",
            r.outcome
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ep.connections.load(Ordering::SeqCst), 0, "no connection was attempted");

    // Plain http is refused unless allowed, before any look-up.
    let (strict, mut outcomes) = new_pusher(PushConfig::default());
    let e = PushEndpoint::unified_push(&ep.url("/up")).unwrap();
    assert_eq!(strict.wake("v", &e), Ok(WakeStatus::Queued));
    assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Refused(RefuseReason::Insecure));
    assert_eq!(ep.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_device_of_an_account_is_woken_once_per_window() {
    let mut ep = endpoint(None).await;
    let phone = PushEndpoint::unified_push(&ep.url("/up/bob-phone")).unwrap();
    let tablet = PushEndpoint::unified_push(&ep.url("/up/bob-tablet")).unwrap();
    let carol = PushEndpoint::unified_push(&ep.url("/up/carol")).unwrap();
    let (pusher, mut outcomes) = new_pusher(test_config());
    for _ in 0..3 {
        for (account, e) in [("bob", &phone), ("bob", &tablet), ("carol", &carol)] {
            let _ = pusher.wake(account, e).unwrap();
        }
    }
    for _ in 0..3 {
        assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Delivered);
    }
    let mut paths: Vec<String> = ep.drain().await.into_iter().map(|s| s.path).collect();
    paths.sort();
    assert_eq!(paths, ["/up/bob-phone", "/up/bob-tablet", "/up/carol"]);
}

// ---------------------------------------------------------------------------------------------
// https: the production path, with a test root.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified() {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..8 {
            let Ok((sock, _)) = listener.accept().await else { return };
            let Ok(mut tls) = acceptor.accept(sock).await else { continue };
            let mut buf = vec![0u8; 8192];
            let n = tls.read(&mut buf).await.unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = tls.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n").await;
            let _ = tls.shutdown().await;
        }
    });
    let url = format!("https://{addr}/up/dev");

    // Trusting the test root: delivered over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = test_config();
    config.allow_http = false;
    config.tls = Some(Arc::new(client));
    let (pusher, mut outcomes) = new_pusher(config);
    let e = PushEndpoint::unified_push(&url).unwrap();
    assert_eq!(pusher.wake("bob", &e), Ok(WakeStatus::Queued));
    assert_eq!(outcome(&mut outcomes).await.outcome, PushOutcome::Delivered);
    let head = tokio::time::timeout(Duration::from_secs(5), requests.recv()).await.unwrap().unwrap();
    assert!(head.starts_with("POST /up/dev HTTP/1.1\r\n"), "{head}");

    // With the system roots, the self-signed endpoint fails TLS: nothing is posted in clear.
    let (system, mut outcomes) = new_pusher(test_config());
    assert_eq!(system.wake("bob", &e), Ok(WakeStatus::Queued));
    let r = outcome(&mut outcomes).await;
    assert!(
        matches!(&r.outcome, PushOutcome::Failed(FailReason::Connect(why)) if why.starts_with("tls")),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Registration: the UnifiedPush discovery probe.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_accepts_only_unified_push_endpoints() {
    let ep = endpoint(None).await;
    let (pusher, _outcomes) = new_pusher(test_config());
    let up = PushEndpoint::unified_push(&ep.url("/up/bob")).unwrap();
    assert_eq!(pusher.probe(&up).await, Ok(()));
    let page = PushEndpoint::unified_push(&ep.url("/index.html")).unwrap();
    assert_eq!(pusher.probe(&page).await, Err(ProbeError::NotUnifiedPush));
    let hang = PushEndpoint::unified_push(&ep.url("/hang")).unwrap();
    assert_eq!(pusher.probe(&hang).await, Err(ProbeError::NotUnifiedPush), "GET /hang answers the page");

    let mut config = test_config();
    config.allow_private = false;
    let (strict, _outcomes) = new_pusher(config);
    let before = ep.connections.load(Ordering::SeqCst);
    assert!(matches!(strict.probe(&up).await, Err(ProbeError::Refused(RefuseReason::PrivateAddress(_)))));
    assert_eq!(ep.connections.load(Ordering::SeqCst), before, "no connection");
}
