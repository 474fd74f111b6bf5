//! A registered push endpoint: its URL, parsed once, and the Web Push keys when it has them.

use std::fmt;
use std::net::IpAddr;

/// The longest endpoint URL accepted (FCM and Mozilla URLs are a few hundred bytes).
const MAX_URL: usize = 2048;

/// A push endpoint registered by a client: a URL (https, or http when the [`Pusher`] allows
/// it) and, for Web Push, the subscription's keys. Its `Debug` shows only the origin: the path
/// of a push URL is a capability.
///
/// [`Pusher`]: super::Pusher
#[derive(Clone, PartialEq, Eq, Hash)]
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
