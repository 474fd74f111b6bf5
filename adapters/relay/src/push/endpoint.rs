//! A registered push endpoint: its URL, parsed once, and the Web Push keys when it has them.

use std::fmt;
use std::net::IpAddr;

use super::{PushConfig, RefuseReason};

/// The longest endpoint URL accepted (FCM and Mozilla URLs are a few hundred bytes).
const MAX_URL: usize = 2048;

/// A push endpoint registered by a client: a URL (https, or http when the [`Pusher`] allows
/// it) and, for Web Push, the subscription's keys. Its `Debug` shows only the origin: the path
/// of a push URL is a capability. It serializes (serde) as its URL and keys, and is parsed
/// and checked again when deserialized, so it can be kept in the relay's store as is.
///
/// [`Pusher`]: super::Pusher
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Stored", into = "Stored")]
pub struct PushEndpoint {
    url: String,
    pub(super) parsed: Parsed,
    keys: Option<WebPushKeys>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct WebPushKeys {
    p256dh: [u8; 65],
    auth: [u8; 16],
}

/// What is stored of an endpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    url: String,
    web_push: Option<(Vec<u8>, Vec<u8>)>,
}

impl TryFrom<Stored> for PushEndpoint {
    type Error = EndpointError;
    fn try_from(s: Stored) -> Result<Self, EndpointError> {
        match s.web_push {
            None => PushEndpoint::unified_push(&s.url),
            Some((p256dh, auth)) => PushEndpoint::web_push(&s.url, &p256dh, &auth),
        }
    }
}

impl From<PushEndpoint> for Stored {
    fn from(e: PushEndpoint) -> Self {
        Stored { url: e.url, web_push: e.keys.map(|k| (k.p256dh.to_vec(), k.auth.to_vec())) }
    }
}

/// The parts of an endpoint URL the relay uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Parsed {
    pub(super) https: bool,
    pub(super) host: Host,
    pub(super) port: u16,
    /// Path and query, starting with '/'.
    pub(super) path: String,
    /// `scheme://host[:port]`, the VAPID audience and the `Host` header's source.
    pub(super) origin: String,
    /// `host[:port]` as written, for the `Host` header.
    pub(super) authority: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Host {
    Ip(IpAddr),
    Name(String),
}

/// An endpoint that cannot be registered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not an absolute `https://` or `http://` URL with a host.
    #[error("not an http(s) URL with a host: {0}")]
    BadUrl(&'static str),
    /// Longer than the relay accepts.
    #[error("the endpoint URL is too long")]
    TooLong,
    /// `p256dh` is not an uncompressed P-256 point (65 bytes, starting with 4).
    #[error("p256dh must be an uncompressed P-256 point (65 bytes)")]
    BadP256dh,
    /// `auth` is not 16 bytes.
    #[error("the Web Push auth secret must be 16 bytes")]
    BadAuth,
}

impl PushEndpoint {
    /// A UnifiedPush endpoint: wake-ups are plain POSTs of the fixed payload.
    ///
    /// # Errors
    /// [`EndpointError`] when the URL is not an absolute http(s) URL with a host, has user
    /// info or a fragment, or is too long. The address policy is checked on each send.
    pub fn unified_push(url: &str) -> Result<Self, EndpointError> {
        Ok(PushEndpoint { url: url.to_owned(), parsed: parse(url)?, keys: None })
    }

    /// A Web Push endpoint with the subscription's `p256dh` public key (65-byte uncompressed
    /// point) and 16-byte `auth` secret: wake-ups are encrypted (RFC 8291) and VAPID-signed.
    ///
    /// # Errors
    /// As [`unified_push`](Self::unified_push), and [`EndpointError::BadP256dh`] or
    /// [`EndpointError::BadAuth`] for keys of the wrong shape.
    pub fn web_push(url: &str, p256dh: &[u8], auth: &[u8]) -> Result<Self, EndpointError> {
        let p256dh: [u8; 65] = p256dh.try_into().map_err(|_| EndpointError::BadP256dh)?;
        if p256dh[0] != 4 {
            return Err(EndpointError::BadP256dh);
        }
        let auth: [u8; 16] = auth.try_into().map_err(|_| EndpointError::BadAuth)?;
        Ok(PushEndpoint {
            url: url.to_owned(),
            parsed: parse(url)?,
            keys: Some(WebPushKeys { p256dh, auth }),
        })
    }

    /// The URL as registered.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `scheme://host[:port]`: the VAPID audience, and what is safe to log.
    pub fn origin(&self) -> &str {
        &self.parsed.origin
    }

    /// The Web Push keys `(p256dh, auth)`, when this is a Web Push endpoint.
    pub fn web_push_keys(&self) -> Option<(&[u8; 65], &[u8; 16])> {
        self.keys.as_ref().map(|k| (&k.p256dh, &k.auth))
    }

    /// Whether `config` would send to this endpoint, as far as can be told without a DNS
    /// look-up: the scheme, and the address when the host is an IP literal. For refusing an
    /// endpoint at registration; every send checks again, with the resolved addresses.
    ///
    /// # Errors
    /// [`RefuseReason::Insecure`] for `http://` without [`PushConfig::allow_http`], and
    /// [`RefuseReason::PrivateAddress`] for a forbidden literal address without
    /// [`PushConfig::allow_private`].
    pub fn check(&self, config: &PushConfig) -> Result<(), RefuseReason> {
        if !self.parsed.https && !config.allow_http {
            return Err(RefuseReason::Insecure);
        }
        match self.parsed.host {
            Host::Ip(ip) if !config.allow_private && super::addr::is_forbidden(ip) => {
                Err(RefuseReason::PrivateAddress(ip))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for PushEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushEndpoint")
            .field("origin", &self.parsed.origin)
            .field("web_push", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

fn parse(url: &str) -> Result<Parsed, EndpointError> {
    if url.len() > MAX_URL {
        return Err(EndpointError::TooLong);
    }
    if url.bytes().any(|b| b <= b' ' || b == 0x7f || !b.is_ascii()) {
        return Err(EndpointError::BadUrl("spaces, controls or non-ASCII"));
    }
    let (https, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
        (true, r)
    } else if let Some(r) = strip_prefix_ci(url, "http://") {
        (false, r)
    } else {
        return Err(EndpointError::BadUrl("scheme must be https or http"));
    };
    if url.contains('#') {
        return Err(EndpointError::BadUrl("fragment"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    if authority.contains('@') {
        return Err(EndpointError::BadUrl("user info"));
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(EndpointError::BadUrl("unclosed ["))?;
        let (addr, after) = v6.split_at(close);
        let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| EndpointError::BadUrl("bad IPv6 address"))?;
        let after = after.strip_prefix(']').ok_or(EndpointError::BadUrl("unclosed ["))?;
        let port = match after {
            "" => default_port,
            p => parse_port(p.strip_prefix(':').ok_or(EndpointError::BadUrl("junk after ]"))?)?,
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) => (n, parse_port(p)?),
            None => (authority, default_port),
        };
        if name.is_empty() {
            return Err(EndpointError::BadUrl("no host"));
        }
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid {
            return Err(EndpointError::BadUrl("bad host name"));
        }
        match name.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => (Host::Ip(IpAddr::V4(ip)), port),
            Err(_) => (Host::Name(name.to_ascii_lowercase()), port),
        }
    };
    let host_text = match &host {
        Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.clone(),
    };
    let authority = if port == default_port { host_text } else { format!("{host_text}:{port}") };
    let origin = format!("{}://{authority}", if https { "https" } else { "http" });
    Ok(Parsed { https, host, port, path, origin, authority })
}

fn parse_port(p: &str) -> Result<u16, EndpointError> {
    match p.parse::<u16>() {
        Ok(port) if port != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(EndpointError::BadUrl("bad port")),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| s.get(prefix.len()..)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_push_services_hand_out() {
        let e = PushEndpoint::unified_push("https://ntfy.sh/upAbC?up=1").expect("valid");
        assert_eq!(e.parsed.host, Host::Name("ntfy.sh".into()));
        assert_eq!((e.parsed.port, e.parsed.path.as_str()), (443, "/upAbC?up=1"));
        assert_eq!(e.origin(), "https://ntfy.sh");
        let e = PushEndpoint::unified_push("http://127.0.0.1:8080").expect("valid");
        assert_eq!((e.parsed.port, e.parsed.path.as_str(), e.origin()), (8080, "/", "http://127.0.0.1:8080"));
        let e = PushEndpoint::unified_push("https://[::1]:9/x").expect("valid");
        assert_eq!(e.parsed.host, Host::Ip("::1".parse().expect("ip")));
        assert_eq!(e.origin(), "https://[::1]:9");
        assert!(!format!("{e:?}").contains("/x"), "Debug hides the path");
    }

    #[test]
    fn stores_and_checks() {
        let mut key = [7u8; 65];
        key[0] = 4;
        for e in [
            PushEndpoint::unified_push("https://up.example/x?y").expect("valid"),
            PushEndpoint::web_push("https://wp.example/s", &key, &[1; 16]).expect("valid"),
        ] {
            let bytes = postcard::to_stdvec(&e).expect("serializes");
            assert_eq!(postcard::from_bytes::<PushEndpoint>(&bytes).expect("deserializes"), e);
            assert_eq!(e.check(&PushConfig::default()), Ok(()));
        }
        let bad = postcard::to_stdvec(&Stored { url: "ftp://x".into(), web_push: None }).expect("serializes");
        assert!(postcard::from_bytes::<PushEndpoint>(&bad).is_err(), "checked on the way in");

        let config = PushConfig::default();
        let http = PushEndpoint::unified_push("http://up.example/").expect("valid");
        assert_eq!(http.check(&config), Err(RefuseReason::Insecure));
        let lan = PushEndpoint::unified_push("https://192.168.0.9/").expect("valid");
        assert!(matches!(lan.check(&config), Err(RefuseReason::PrivateAddress(_))));
        let open = PushConfig { allow_http: true, allow_private: true, ..PushConfig::default() };
        assert_eq!((http.check(&open), lan.check(&open)), (Ok(()), Ok(())));
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "ftp://x/",
            "https://",
            "https://user@host/",
            "https://host:0/",
            "https://host:99999/",
            "https://host:8a/",
            "https://ho st/",
            "https://host/#frag",
            "https://[::1/",
            "https://[::1]x/",
            "https://h_st/",
        ] {
            assert!(PushEndpoint::unified_push(bad).is_err(), "{bad}");
        }
        assert_eq!(PushEndpoint::web_push("https://h/", &[4; 64], &[0; 16]), Err(EndpointError::BadP256dh));
        assert_eq!(PushEndpoint::web_push("https://h/", &[4; 65], &[0; 15]), Err(EndpointError::BadAuth));
    }
}
