//! One POST: resolve, check every address, connect to a checked one, TLS, HTTP/1.1 over hyper's
//! client connection (which follows nothing by itself), and read only the status line and
//! headers of the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::endpoint::{Host, Parsed};
use super::{FailReason, RefuseReason, addr};

/// What the request carries besides the URL.
pub(super) struct Post {
    pub(super) body: Vec<u8>,
    pub(super) ttl_secs: u64,
    /// `Authorization` (VAPID) for Web Push.
    pub(super) authorization: Option<String>,
    /// `Content-Encoding: aes128gcm` for Web Push.
    pub(super) encrypted: bool,
}

/// The parts of an answer the relay acts on.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
}

/// Why no answer came.
pub(super) enum PostError {
    Refused(RefuseReason),
    Failed(FailReason),
}

/// The addresses to connect to, all checked: refuses the whole endpoint if any is forbidden
/// (a name that also resolves to a private address is not trusted with a public one).
pub(super) async fn resolve(p: &Parsed, allow_private: bool) -> Result<Vec<SocketAddr>, PostError> {
    let addrs: Vec<SocketAddr> = match &p.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, p.port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), p.port))
            .await
            .map_err(|e| PostError::Failed(FailReason::Resolve(e.to_string())))?
            .take(16)
            .collect(),
    };
    if addrs.is_empty() {
        return Err(PostError::Failed(FailReason::Resolve("no addresses".into())));
    }
    if !allow_private {
        if let Some(bad) = addrs.iter().map(SocketAddr::ip).find(|ip| addr::is_forbidden(*ip)) {
            return Err(PostError::Refused(RefuseReason::PrivateAddress(bad)));
        }
    }
    Ok(addrs)
}

/// POSTs `post` to the endpoint at one of `addrs` (already checked). The caller bounds the
/// time.
pub(super) async fn post(
    p: &Parsed,
    addrs: &[SocketAddr],
    post: Post,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Answer, PostError> {
    let request = build(p, post).map_err(|e| connect_failed("request", &e))?;
    let (answer, _) = send(p, addrs, request, tls, false).await?;
    Ok(answer)
}

/// GETs the endpoint (the UnifiedPush discovery request) and reads at most `MAX_BODY` bytes of
/// the answer. The caller bounds the time.
pub(super) async fn get(
    p: &Parsed,
    addrs: &[SocketAddr],
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(Answer, Bytes), PostError> {
    let request = Request::get(p.path.as_str())
        .header(header::HOST, p.authority.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| connect_failed("request", &e))?;
    send(p, addrs, request, tls, true).await
}

/// The most of an answer's body that is read (only for discovery).
const MAX_BODY: usize = 1024;

fn connect_failed(what: &str, e: &dyn std::fmt::Display) -> PostError {
    PostError::Failed(FailReason::Connect(format!("{what}: {e}")))
}

async fn send(
    p: &Parsed,
    addrs: &[SocketAddr],
    request: Request<Full<Bytes>>,
    tls: &Arc<rustls::ClientConfig>,
    read_body: bool,
) -> Result<(Answer, Bytes), PostError> {
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(connect_failed("connect", &e)),
        (None, None) => return Err(connect_failed("connect", &"no address")),
    };
    let _ = stream.set_nodelay(true);
    if p.https {
        let name = match &p.host {
            Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
            Host::Name(n) => {
                ServerName::try_from(n.clone()).map_err(|e| connect_failed("server name", &e))?
            }
        };
        let tls = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
            .map_err(|e| connect_failed("tls", &e))?;
        exchange(tls, request, read_body).await
    } else {
        exchange(stream, request, read_body).await
    }
}

fn build(p: &Parsed, post: Post) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
    let mut b = Request::post(p.path.as_str())
        .header(header::HOST, p.authority.as_str())
        .header("TTL", post.ttl_secs.to_string())
        .header("Urgency", "high")
        .header("Topic", super::WAKE_TOPIC)
        .header(header::CONTENT_LENGTH, post.body.len().to_string());
    if post.encrypted {
        b = b
            .header(header::CONTENT_ENCODING, "aes128gcm")
            .header(header::CONTENT_TYPE, "application/octet-stream");
    } else {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(auth) = post.authorization {
        b = b.header(header::AUTHORIZATION, auth);
    }
    b.body(Full::new(Bytes::from(post.body)))
}

async fn exchange<S>(
    io: S,
    request: Request<Full<Bytes>>,
    read_body: bool,
) -> Result<(Answer, Bytes), PostError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| connect_failed("http", &e))?;
    // The connection runs in its own task, ended when this request ends or is cancelled (the
    // caller's timeout).
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _driver = AbortOnDrop(driver.abort_handle());
    let response = sender.send_request(request).await.map_err(|e| connect_failed("http", &e))?;
    let retry_after = response.headers().get(header::RETRY_AFTER).and_then(delta_seconds);
    let status = response.status();
    let body = if read_body {
        Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| connect_failed("body", &e))?
            .to_bytes()
    } else {
        Bytes::new()
    };
    Ok((Answer { status, retry_after }, body))
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `Retry-After` in delta-seconds (an HTTP-date is ignored: the exponential backoff applies).
fn delta_seconds(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().map(Duration::from_secs)
}
