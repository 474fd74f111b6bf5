//! [`RelayFraming`]: the relay's frames as an otr-driver [`Framing`], so a conversation of
//! any adapter (otr-futures, otr-tokio) talks to one peer account through the relay. Sans-IO:
//! the same value serves every runtime.
//!
//! Each delivery from the peer is acknowledged (so the relay deletes it) right after the
//! session handled it. Deliveries from other accounts are acknowledged too and dropped
//! (logged at debug level, without contents): the relay hands a connection a bounded window
//! of unacknowledged deliveries, so leaving strangers' messages unacknowledged would let any
//! account stall this conversation by sending enough of them. A client that talks to several
//! accounts over one login uses the tokio client (`tokio_client::Client`) instead.
//!
//! The login names the config's device; with [`ClientConfig::push`] set, the registration
//! is sent right after the relay's welcome, and a refused one ends the conversation with
//! [`ClientError::PushRefused`].
//!
//! A message the relay refuses (queue full, storage full, rate limit, unknown recipient) ends
//! the conversation with [`ClientError::Refused`], so the user learns that it did not go out;
//! reconnect to go on.

use otr_driver::{Decoded, Framing};

use crate::config::{ClientConfig, ClientError};
use crate::proto::{self, ClientFrame, ErrorCode, PROTOCOL_VERSION, PushRegistration, ServerFrame};

/// The relay's frames as an [`otr_driver::Framing`] for a conversation with one `peer`
/// account: the greeting logs in, OTR strings go out as sends to the peer, deliveries from
/// the peer come in (and are acknowledged), and idle connections are kept alive with pings.
/// Its `Debug` output shows the secret as `"<redacted>"`.
pub struct RelayFraming {
    account: String,
    secret: zeroize::Zeroizing<String>,
    device: String,
    push: Option<PushRegistration>,
    peer: String,
    next_id: u64,
    nonce: u64,
    logged_in: bool,
    max_frame: usize,
    keepalive_ms: u64,
}

impl std::fmt::Debug for RelayFraming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayFraming")
            .field("account", &self.account)
            .field("secret", &crate::proto::REDACTED)
            .field("device", &self.device)
            .field("peer", &self.peer)
            .field("next_id", &self.next_id)
            .field("logged_in", &self.logged_in)
            .finish_non_exhaustive()
    }
}

impl RelayFraming {
    /// Logs in as `config.account` and talks to `peer`; uses the config's keep-alive and
    /// frame limit (its server and pin are for `connect_tls`).
    pub fn new(config: &ClientConfig, peer: impl Into<String>) -> Self {
        Self {
            account: config.account.clone(),
            secret: zeroize::Zeroizing::new(config.secret.clone()),
            device: config.device.clone(),
            push: config.push.clone(),
            peer: peer.into(),
            next_id: 0,
            nonce: 0,
            logged_in: false,
            max_frame: config.max_frame_bytes,
            keepalive_ms: u64::try_from(config.keepalive.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Whether the relay welcomed the login.
    pub fn logged_in(&self) -> bool {
        self.logged_in
    }

    /// The peer account.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Framing for RelayFraming {
    type Error = ClientError;

    fn hello(&mut self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        let login = ClientFrame::Login {
            version: PROTOCOL_VERSION,
            account: self.account.clone(),
            secret: String::clone(&self.secret),
            device: Some(self.device.clone()),
        };
        out.extend(proto::encode(&login)?);
        Ok(())
    }

    /// A new connection must log in again.
    fn reset(&mut self) {
        self.logged_in = false;
    }

    fn encode(&mut self, message: &str, out: &mut Vec<u8>) -> Result<(), ClientError> {
        self.next_id += 1;
        let frame = ClientFrame::Send {
            to: self.peer.clone(),
            id: self.next_id,
            body: message.into(),
            to_device: None,
        };
        out.extend(proto::encode(&frame)?);
        Ok(())
    }

    fn decode(&mut self, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<Decoded, ClientError> {
        let Some(payload) = proto::take_frame(buf, self.max_frame)? else { return Ok(Decoded::NeedMore) };
        let frame = proto::decode::<ServerFrame>(&payload)?;
        Ok(match frame {
            ServerFrame::Welcome { .. } if !self.logged_in => {
                self.logged_in = true;
                if let Some(reg) = &self.push {
                    out.extend(proto::encode(&ClientFrame::register_push(reg))?);
                }
                Decoded::Consumed
            }
            ServerFrame::Error { code: ErrorCode::PushRefused, message, .. } => {
                return Err(ClientError::PushRefused { message });
            }
            ServerFrame::Error { code, message, .. } if !self.logged_in => {
                return Err(ClientError::Login { code, message });
            }
            ServerFrame::Welcome { .. } => return Err(ClientError::Protocol("unexpected welcome")),
            ServerFrame::Deliver { seq, from, body, .. } => {
                out.extend(proto::encode(&ClientFrame::Ack { seq })?);
                if from == self.peer {
                    Decoded::Message(body)
                } else {
                    tracing::debug!(seq, from = %from, "dropped a message from another account");
                    Decoded::Consumed
                }
            }
            ServerFrame::Accepted { .. } | ServerFrame::Pong { .. } | ServerFrame::PushAck => {
                Decoded::Consumed
            }
            ServerFrame::Error { code, id: Some(_), message } => {
                return Err(ClientError::Refused { code, message });
            }
            ServerFrame::Error { code: ErrorCode::BadFrame, id: None, .. } => Decoded::Consumed,
            ServerFrame::Error { code, id: None, message } => {
                return Err(ClientError::Server { code, message });
            }
        })
    }

    fn keepalive_interval_ms(&self) -> Option<u64> {
        Some(self.keepalive_ms)
    }

    fn keepalive(&mut self, out: &mut Vec<u8>) -> Result<(), ClientError> {
        self.nonce += 1;
        out.extend(proto::encode(&ClientFrame::Ping { nonce: self.nonce })?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::CertFingerprint;

    fn framing() -> RelayFraming {
        let pin = CertFingerprint([0; 32]);
        RelayFraming::new(&ClientConfig::new("127.0.0.1:1", pin, "alice", "s3cret"), "bob")
    }

    fn server(frames: &[ServerFrame]) -> Vec<u8> {
        frames.iter().flat_map(|f| proto::encode(f).unwrap()).collect()
    }

    #[test]
    fn login_send_deliver_ack() {
        let mut f = framing();
        let mut out = Vec::new();
        f.hello(&mut out).unwrap();
        f.encode("?OTRv3?", &mut out).unwrap();
        let mut sent = Vec::new();
        while let Some(p) = proto::take_frame(&mut out, 1 << 16).unwrap() {
            sent.push(proto::decode::<ClientFrame>(&p).unwrap());
        }
        assert!(
            matches!(&sent[0], ClientFrame::Login { account, secret, .. } if account == "alice" && secret == "s3cret")
        );
        assert!(matches!(&sent[0], ClientFrame::Login { device: Some(d), .. } if d == "default"));
        assert_eq!(
            sent[1],
            ClientFrame::Send { to: "bob".into(), id: 1, body: "?OTRv3?".into(), to_device: None }
        );

        let mut buf = server(&[
            ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 0 },
            ServerFrame::Accepted { id: 1 },
            ServerFrame::Deliver { seq: 5, from: "carol".into(), id: 1, body: "not for this chat".into() },
            ServerFrame::Deliver { seq: 6, from: "bob".into(), id: 1, body: "?OTR:AAMC".into() },
        ]);
        let mut acks = Vec::new();
        let mut got = Vec::new();
        loop {
            match f.decode(&mut buf, &mut acks).unwrap() {
                Decoded::Message(m) => got.push(m),
                Decoded::Consumed => {}
                _ => break,
            }
        }
        assert!(f.logged_in());
        assert_eq!(got, ["?OTR:AAMC"]);
        let mut acked = Vec::new();
        while let Some(p) = proto::take_frame(&mut acks, 1 << 16).unwrap() {
            acked.push(proto::decode::<ClientFrame>(&p).unwrap());
        }
        // Carol's message is acknowledged and dropped: unacknowledged, enough of them would
        // fill the relay's delivery window and stall the conversation with bob.
        assert_eq!(acked, [ClientFrame::Ack { seq: 5 }, ClientFrame::Ack { seq: 6 }]);
    }

    #[test]
    fn a_new_connection_logs_in_again() {
        let mut f = framing();
        let mut buf = server(&[ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 0 }]);
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Ok(Decoded::Consumed)));
        assert!(f.logged_in());
        f.reset();
        assert!(!f.logged_in());
        let mut out = Vec::new();
        f.hello(&mut out).unwrap();
        let p = proto::take_frame(&mut out, 1 << 16).unwrap().unwrap();
        assert!(matches!(proto::decode::<ClientFrame>(&p).unwrap(), ClientFrame::Login { .. }));
        // The new connection's welcome is accepted (a second one on one connection is not).
        let mut buf = server(&[
            ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 3 },
            ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 3 },
        ]);
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Ok(Decoded::Consumed)));
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn push_registration_follows_the_welcome() {
        let pin = CertFingerprint([0; 32]);
        let mut config = ClientConfig::new("127.0.0.1:1", pin, "alice", "s3cret");
        config.device = "phone".into();
        config.push = Some(PushRegistration::new("https://push.example/x"));
        let mut f = RelayFraming::new(&config, "bob");
        let mut buf = server(&[
            ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 0 },
            ServerFrame::PushAck,
            ServerFrame::Error { code: ErrorCode::PushRefused, id: None, message: "bad".into() },
        ]);
        let mut out = Vec::new();
        assert!(matches!(f.decode(&mut buf, &mut out), Ok(Decoded::Consumed)));
        let p = proto::take_frame(&mut out, 1 << 16).unwrap().unwrap();
        assert!(matches!(proto::decode::<ClientFrame>(&p).unwrap(), ClientFrame::RegisterPush { .. }));
        assert!(matches!(f.decode(&mut buf, &mut out), Ok(Decoded::Consumed)));
        assert!(matches!(f.decode(&mut buf, &mut out), Err(ClientError::PushRefused { .. })));
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!("{:?}", framing());
        assert!(!shown.contains("s3cret") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn refusals_are_typed_errors() {
        let mut f = framing();
        let mut buf = server(&[ServerFrame::Error {
            code: ErrorCode::AuthFailed,
            id: None,
            message: "unknown account or wrong secret".into(),
        }]);
        let err = f.decode(&mut buf, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, ClientError::Login { code: ErrorCode::AuthFailed, .. }), "{err}");
        let mut f = framing();
        let mut buf = server(&[
            ServerFrame::Welcome { version: PROTOCOL_VERSION, pending: 0 },
            ServerFrame::Error { code: ErrorCode::QueueFull, id: Some(1), message: "full".into() },
        ]);
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Ok(Decoded::Consumed)));
        assert!(matches!(f.decode(&mut buf, &mut Vec::new()), Err(ClientError::Refused { .. })));
    }
}
