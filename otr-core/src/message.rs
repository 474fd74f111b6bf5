//! What a transport message is: an encoded OTR message (`?OTR:…base64….`), a fragment, a
//! query, an OTR error, or plaintext that may carry a whitespace tag; and the message header
//! (3 bytes in version 2, 11 with the instance tags of version 3).

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

use crate::instance::InstanceTag;
use crate::policy::Policy;
use crate::wire::{Reader, WireError, Writer};

/// Protocol version 2 (no instance tags).
pub const VERSION_2: u16 = 2;
/// Protocol version 3.
pub const VERSION_3: u16 = 3;

/// Message type bytes.
pub mod kind {
    /// D-H Commit.
    pub const DH_COMMIT: u8 = 0x02;
    /// Data message.
    pub const DATA: u8 = 0x03;
    /// D-H Key.
    pub const DH_KEY: u8 = 0x0a;
    /// Reveal Signature.
    pub const REVEAL_SIGNATURE: u8 = 0x11;
    /// Signature.
    pub const SIGNATURE: u8 = 0x12;
}

/// Most bytes an encoded message may decode to (a guard against absurd inputs; libotr has
/// no limit, real messages are far smaller than this).
pub const MAX_ENCODED_LEN: usize = 1 << 20;

const ENCODED_PREFIX: &str = "?OTR:";
const ERROR_PREFIX: &str = "?OTR Error:";
/// A v3 fragment starts with this; a v2 fragment with [`FRAGMENT_PREFIX_V2`].
const FRAGMENT_PREFIX: &str = "?OTR|";
const FRAGMENT_PREFIX_V2: &str = "?OTR,";

/// The 16-byte base whitespace tag, followed by one 8-byte tag per offered version.
pub const WHITESPACE_BASE: &[u8; 16] = b" \t  \t\t\t\t \t \t \t  ";
/// The whitespace tag that offers version 1.
pub const WHITESPACE_V1: &[u8; 8] = b" \t \t  \t ";
/// The whitespace tag that offers version 2.
pub const WHITESPACE_V2: &[u8; 8] = b"  \t\t  \t ";
/// The whitespace tag that offers version 3.
pub const WHITESPACE_V3: &[u8; 8] = b"  \t\t  \t\t";

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The OTR versions a query or whitespace tag offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    /// Version 1 (obsolete; never spoken by this crate).
    pub v1: bool,
    /// Version 2.
    pub v2: bool,
    /// Version 3.
    pub v3: bool,
}

/// A transport message, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// `?OTR:…` decoded from base64.
    Encoded(Vec<u8>),
    /// A fragment (`?OTR|…` in v3, `?OTR,…` in v2); kept whole for the reassembler.
    Fragment(String),
    /// A query message offering these versions.
    Query(Versions),
    /// An OTR error message with its human-readable text.
    Error(String),
    /// Anything else: plaintext, with the whitespace tag (if any) stripped.
    Plain {
        /// The text without the tag.
        text: String,
        /// The versions the tag offered, if there was a tag.
        tag: Option<Versions>,
    },
}

/// Classifies a transport message.
///
/// # Errors
/// [`WireError::BadBase64`] when an `?OTR:` envelope does not decode, [`WireError::TooLong`]
/// when it is larger than [`MAX_ENCODED_LEN`].
pub fn classify(msg: &str) -> Result<Incoming, WireError> {
    // A fragment's piece contains "?OTR:" itself: recognise fragments first.
    if msg.starts_with(FRAGMENT_PREFIX) || msg.starts_with(FRAGMENT_PREFIX_V2) {
        return Ok(Incoming::Fragment(msg.to_owned()));
    }
    if let Some(pos) = msg.find(ENCODED_PREFIX) {
        let rest = &msg[pos + ENCODED_PREFIX.len()..];
        // libotr accepts an envelope whose final '.' was lost; so do we (the MAC decides).
        let end = rest.find('.').unwrap_or(rest.len());
        let b64 = &rest[..end];
        if b64.len() / 4 * 3 > MAX_ENCODED_LEN {
            return Err(WireError::TooLong);
        }
        return B64.decode(b64).map(Incoming::Encoded).map_err(|_| WireError::BadBase64);
    }
    if let Some(pos) = msg.find(ERROR_PREFIX) {
        let text = msg[pos + ERROR_PREFIX.len()..].trim_start().to_owned();
        return Ok(Incoming::Error(text));
    }
    if let Some(v) = parse_query(msg) {
        return Ok(Incoming::Query(v));
    }
    let (text, tag) = strip_whitespace_tag(msg);
    Ok(Incoming::Plain { text, tag })
}

/// Finds a query (`?OTR?`, `?OTRv23?`, `?OTR?v2?`) anywhere in `msg`.
fn parse_query(msg: &str) -> Option<Versions> {
    let mut search = msg;
    while let Some(pos) = search.find("?OTR") {
        let rest = &search[pos + 4..];
        let mut v = Versions::default();
        let after_v = if let Some(r) = rest.strip_prefix('?') {
            v.v1 = true;
            match r.strip_prefix('v') {
                Some(r) => r,
                None => return Some(v),
            }
        } else if let Some(r) = rest.strip_prefix('v') {
            r
        } else {
            search = rest;
            continue;
        };
        // Version digits up to the closing '?'; other characters are unknown versions.
        let close = after_v.find('?')?;
        for c in after_v[..close].chars() {
            match c {
                '2' => v.v2 = true,
                '3' => v.v3 = true,
                _ => {}
            }
        }
        return Some(v);
    }
    None
}

/// Removes a whitespace tag and reports the versions it offered.
fn strip_whitespace_tag(msg: &str) -> (String, Option<Versions>) {
    let bytes = msg.as_bytes();
    let Some(start) = bytes.windows(WHITESPACE_BASE.len()).position(|w| w == WHITESPACE_BASE) else {
        return (msg.to_owned(), None);
    };
    let mut v = Versions::default();
    let mut end = start + WHITESPACE_BASE.len();
    while let Some(chunk) = bytes.get(end..end + 8) {
        match chunk {
            c if c == WHITESPACE_V1 => v.v1 = true,
            c if c == WHITESPACE_V2 => v.v2 = true,
            c if c == WHITESPACE_V3 => v.v3 = true,
            c if c.iter().all(|&b| b == b' ' || b == b'\t') => {}
            _ => break,
        }
        end += 8;
    }
    // The tag is pure ASCII whitespace, so both cut points are character boundaries.
    let text = format!("{}{}", &msg[..start], &msg[end..]);
    (text, Some(v))
}

impl Versions {
    /// What a policy lets us offer: v2 and v3 as allowed, never v1.
    pub fn allowed_by(policy: Policy) -> Self {
        Self { v1: false, v2: policy.contains(Policy::ALLOW_V2), v3: policy.contains(Policy::ALLOW_V3) }
    }

    /// The highest version both `self` (what the peer offered) and `ours` allow, as libotr
    /// chooses: 3 whenever both sides allow it, else 2, never 1.
    pub fn best_with(self, ours: Self) -> Option<u16> {
        if self.v3 && ours.v3 {
            Some(VERSION_3)
        } else if self.v2 && ours.v2 {
            Some(VERSION_2)
        } else {
            None
        }
    }
}

/// The whitespace tag offering `v` (v2 and v3 only).
pub fn whitespace_tag(v: Versions) -> String {
    let mut s = String::from_utf8_lossy(WHITESPACE_BASE).into_owned();
    for (offered, tag) in [(v.v2, WHITESPACE_V2), (v.v3, WHITESPACE_V3)] {
        if offered {
            s.push_str(&String::from_utf8_lossy(tag));
        }
    }
    s
}

/// A query message offering `v` (v2 and v3 only: `?OTRv23?`, `?OTRv3?` or `?OTRv2?`), with
/// an explanation for people whose client does not speak OTR. The explanation is HTML, as
/// libotr's is.
pub fn query_message(account: &str, v: Versions) -> String {
    let digits: String = [(v.v2, '2'), (v.v3, '3')].iter().filter(|(o, _)| *o).map(|(_, d)| d).collect();
    format!(
        "?OTRv{digits}?\n<b>{}</b> has requested an Off-the-Record private conversation, but your \
         client does not support it. See https://otr.cypherpunks.ca/ for more information.",
        html_escape(account)
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An OTR error message carrying `text` for the remote user.
pub fn error_message(text: &str) -> String {
    format!("{ERROR_PREFIX} {text}")
}

/// Wraps raw message bytes in the `?OTR:…base64….` envelope.
pub fn encode_envelope(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(ENCODED_PREFIX.len() + bytes.len().div_ceil(3) * 4 + 1);
    out.push_str(ENCODED_PREFIX);
    B64.encode_string(bytes, &mut out);
    out.push('.');
    out
}

/// The header of every encoded message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Protocol version ([`VERSION_2`] or [`VERSION_3`]).
    pub version: u16,
    /// Message type byte (see [`kind`]).
    pub kind: u8,
    /// The sender's instance tag (v3 only; 0 in v2).
    pub sender: u32,
    /// The receiver's instance tag (v3 only: 0 in v2, and 0 in a v3 D-H Commit sent before
    /// we know it).
    pub receiver: u32,
}

impl Header {
    /// Reads the protocol version, type and (for v3) the instance tags.
    ///
    /// # Errors
    /// [`WireError::Truncated`], or [`WireError::Invalid`] for a version other than 2 or 3.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let version = r.u16()?;
        let kind = r.u8()?;
        match version {
            VERSION_2 => Ok(Self { version, kind, sender: 0, receiver: 0 }),
            VERSION_3 => {
                let sender = r.u32()?;
                let receiver = r.u32()?;
                Ok(Self { version, kind, sender, receiver })
            }
            _ => Err(WireError::Invalid("unsupported protocol version")),
        }
    }

    /// A v3 header from `sender` to `receiver` (None: not known yet, encoded as 0).
    pub fn v3(kind: u8, sender: InstanceTag, receiver: Option<InstanceTag>) -> Self {
        Self {
            version: VERSION_3,
            kind,
            sender: sender.get(),
            receiver: receiver.map_or(0, InstanceTag::get),
        }
    }

    /// A v2 header (no instance tags).
    pub fn v2(kind: u8) -> Self {
        Self { version: VERSION_2, kind, sender: 0, receiver: 0 }
    }

    /// Bytes [`write`](Self::write) produces: 3 in v2, 11 with the v3 instance tags.
    pub fn encoded_len(&self) -> usize {
        if self.version == VERSION_2 { 3 } else { 11 }
    }

    /// Writes the header: version, type, and the instance tags in v3.
    pub fn write(&self, w: &mut Writer) {
        w.u16(self.version).u8(self.kind);
        if self.version != VERSION_2 {
            w.u32(self.sender).u32(self.receiver);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_queries() {
        let q = |s: &str| match classify(s) {
            Ok(Incoming::Query(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(q("?OTRv3?"), Versions { v1: false, v2: false, v3: true });
        assert_eq!(q("hi ?OTRv23? there"), Versions { v1: false, v2: true, v3: true });
        assert_eq!(q("?OTR?v2?"), Versions { v1: true, v2: true, v3: false });
        assert_eq!(q("?OTR?"), Versions { v1: true, v2: false, v3: false });
        let v3 = Versions { v3: true, ..Default::default() };
        let v23 = Versions { v2: true, ..v3 };
        let v2 = Versions { v2: true, ..Default::default() };
        for v in [v3, v23, v2] {
            let msg = query_message("a<b>", v);
            assert_eq!(q(&msg), v);
        }
        assert!(query_message("x", v23).starts_with("?OTRv23?"));
    }

    #[test]
    fn strips_whitespace_tags() {
        let v2 = Versions { v2: true, ..Default::default() };
        let both = Versions { v3: true, ..v2 };
        for v in [v2, both] {
            let msg = format!("hi{}", whitespace_tag(v));
            assert_eq!(classify(&msg), Ok(Incoming::Plain { text: "hi".into(), tag: Some(v) }));
        }
        let msg = format!("hello{}", whitespace_tag(Versions { v3: true, ..Default::default() }));
        assert_eq!(
            classify(&msg),
            Ok(Incoming::Plain {
                text: "hello".into(),
                tag: Some(Versions { v3: true, ..Default::default() })
            })
        );
        assert_eq!(classify("plain"), Ok(Incoming::Plain { text: "plain".into(), tag: None }));
    }

    #[test]
    fn envelopes_and_errors() {
        assert_eq!(classify(&encode_envelope(b"\x00\x03\x02")), Ok(Incoming::Encoded(vec![0, 3, 2])));
        assert_eq!(classify("?OTR:!!!."), Err(WireError::BadBase64));
        assert_eq!(classify("?OTR:AAAA"), Ok(Incoming::Encoded(vec![0, 0, 0])), "final '.' optional");
        assert_eq!(classify("?OTR:A"), Err(WireError::BadBase64));
        assert_eq!(classify("?OTR Error: oops"), Ok(Incoming::Error("oops".into())));
        assert_eq!(classify("?OTR,1,2,?OTR:AAM,"), Ok(Incoming::Fragment("?OTR,1,2,?OTR:AAM,".into())));
    }

    #[test]
    fn headers_of_both_versions() {
        let mut w = Writer::new();
        Header::v2(kind::DATA).write(&mut w);
        assert_eq!(w.as_slice(), [0, 2, 3]);
        let h = Header::read(&mut Reader::new(&[0, 2, 3, 9])).unwrap();
        assert_eq!(h, Header::v2(kind::DATA));
        assert!(Header::read(&mut Reader::new(&[0, 1, 3])).is_err(), "never v1");
        let best = |theirs: Versions, ours: Versions| theirs.best_with(ours);
        let (v2, v3) =
            (Versions { v2: true, ..Default::default() }, Versions { v3: true, ..Default::default() });
        let both = Versions { v2: true, v3: true, v1: false };
        assert_eq!(best(both, both), Some(VERSION_3));
        assert_eq!(best(both, v2), Some(VERSION_2));
        assert_eq!(best(v2, both), Some(VERSION_2));
        assert_eq!(best(v2, v3), None);
        assert_eq!(best(Versions { v1: true, ..Default::default() }, both), None);
    }
}
