//! Output: encrypting to an instance, encoding and fragmenting transmits, OTR error replies,
//! and collecting traces (feature `trace`).

use zeroize::Zeroizing;

use super::private::Private;
use super::{ERROR_REPLY_INTERVAL_MS, MsgState, Session};
#[cfg(feature = "trace")]
use crate::crypto::dsa::Fingerprint;
use crate::data::{self, FLAG_IGNORE_UNREADABLE};
use crate::event::{Timestamp, Transmit};
use crate::fragment;
use crate::instance::InstanceTag;
use crate::message::{self, Header, kind};
use crate::tlv::{self, Tlv};

impl Session {
    /// Moves what instance `i`'s AKE and key window computed into the trace queue.
    #[cfg(feature = "trace")]
    pub(super) fn collect_traces(&mut self, i: usize) {
        let inst = &mut self.instances[i];
        let mut pending = inst.ake.take_traces();
        if let MsgState::Encrypted(p) = &mut inst.state {
            pending.extend(p.keys.take_traces());
        }
        if self.tracing {
            let tag = inst.tag;
            self.traces.extend(pending.into_iter().map(|value| crate::trace::Trace { instance: tag, value }));
        }
    }

    /// Without the `trace` feature there is nothing to collect.
    #[cfg(not(feature = "trace"))]
    #[inline(always)]
    pub(super) fn collect_traces(&mut self, _i: usize) {}

    /// Records SMP's compared secret (feature `trace` only).
    #[cfg(feature = "trace")]
    pub(super) fn trace_smp_secret(
        &mut self,
        i: usize,
        initiator: &Fingerprint,
        responder: &Fingerprint,
        secret: &[u8],
    ) {
        let inst = &self.instances[i];
        let MsgState::Encrypted(p) = &inst.state else { return };
        if self.tracing {
            let ssid = p.ssid.0;
            let digest = crate::smp::secret_digest(initiator, responder, &ssid, secret);
            self.traces.push_back(crate::trace::Trace {
                instance: inst.tag,
                value: crate::trace::Value::SmpSecret {
                    initiator: initiator.0,
                    responder: responder.0,
                    ssid,
                    user_secret: secret.to_vec(),
                    secret: *digest,
                },
            });
        }
    }

    /// Sends an empty-text data message carrying `t` (flagged IGNORE_UNREADABLE, as libotr
    /// sends its SMP and symmetric-key carriers).
    pub(super) fn send_tlv(&mut self, i: usize, now: Timestamp, t: Tlv) -> Option<Zeroizing<[u8; 32]>> {
        let plain = Zeroizing::new(tlv::join_plaintext(b"", &[t]));
        self.send_to_instance(i, now, FLAG_IGNORE_UNREADABLE, &plain)
    }

    /// Encrypts `plaintext` to instance `i` (which must be private) and returns the extra
    /// symmetric key of the key pair used.
    pub(super) fn send_to_instance(
        &mut self,
        i: usize,
        now: Timestamp,
        flags: u8,
        plaintext: &[u8],
    ) -> Option<Zeroizing<[u8; 32]>> {
        let tag = self.instances[i].tag;
        let mut state = core::mem::replace(&mut self.instances[i].state, MsgState::Plaintext);
        let extra = match &mut state {
            MsgState::Encrypted(p) => Some(self.send_data(tag, p, flags, plaintext)),
            _ => None,
        };
        let inst = &mut self.instances[i];
        inst.state = state;
        inst.last_sent = now;
        inst.owes_heartbeat = false;
        self.collect_traces(i);
        extra
    }

    pub(super) fn send_data(
        &mut self,
        tag: InstanceTag,
        p: &mut Private,
        flags: u8,
        plaintext: &[u8],
    ) -> Zeroizing<[u8; 32]> {
        let header = self.header_to(tag, kind::DATA);
        let (bytes, extra) = data::seal(header, flags, &mut p.keys, plaintext);
        self.push_encoded(&bytes, &header);
        extra
    }

    /// The header of a message of type `msg_kind` to remote instance `tag` (in its version).
    pub(super) fn header_to(&self, tag: InstanceTag, msg_kind: u8) -> Header {
        if tag.is_v2() {
            Header::v2(msg_kind)
        } else {
            Header::v3(msg_kind, self.config.instance_tag, Some(tag))
        }
    }

    pub(super) fn send_encoded(&mut self, header: Header, body: &[u8]) {
        let mut w = crate::wire::Writer::new();
        header.write(&mut w);
        w.raw(body);
        self.push_encoded(w.as_slice(), &header);
    }

    /// Queues an encoded message, split into fragments (of `header`'s version) if it exceeds
    /// the size limit.
    pub(super) fn push_encoded(&mut self, bytes: &[u8], header: &Header) {
        let whole = message::encode_envelope(bytes);
        let tags = (header.version == message::VERSION_3).then_some((header.sender, header.receiver));
        match fragment::split(&whole, self.config.max_message_size, tags) {
            None => self.outgoing.push_back(Transmit { message: whole }),
            Some(pieces) => self.outgoing.extend(pieces.into_iter().map(|message| Transmit { message })),
        }
    }

    /// Queues an OTR error reply, at most one per [`ERROR_REPLY_INTERVAL_MS`].
    pub(super) fn send_error(&mut self, now: Timestamp, text: &str) {
        if self.last_error_reply.is_some_and(|t| t.plus_millis(ERROR_REPLY_INTERVAL_MS) > now) {
            return;
        }
        self.last_error_reply = Some(now);
        self.outgoing.push_back(Transmit { message: message::error_message(text) });
    }
}
