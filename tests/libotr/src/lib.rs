//! Test harness around the system's libotr (4.1): real libotr endpoints in
//! this process ([`LibotrPeer`]) and, built on them, the `libotr-peer`
//! binary that speaks the stdio peer protocol (`shared/peer-protocol.md`).
//!
//! Each [`LibotrPeer`] has its own `OtrlUserState` with one local account
//! (protocol `"xmpp"`) that talks to exactly one remote account, so several
//! peers in one process are independent, even two instances of the same
//! account (they get different instance tags). Everything the endpoint does
//! is queued in order: transport messages to deliver to the remote
//! ([`LibotrPeer::poll_net`]) and events for the user
//! ([`LibotrPeer::poll_event`]), or both interleaved
//! ([`LibotrPeer::poll_output`]).
//!
//! # How events are derived
//!
//! * [`PeerEvent::Secure`]: libotr's `gone_secure` and `still_secure`
//!   callbacks, with the context's active fingerprint and its
//!   `sessionid` (`sessionid_len` bytes: 8 for v2 and v3).
//! * [`PeerEvent::Msg`] for a received transport message:
//!   `otrl_message_receiving` returning 1 delivers nothing. Returning 0, the
//!   text is `encrypted` exactly when libotr called `convert_msg` with
//!   `OTRL_CONVERT_RECEIVING` during that call, which it does only right
//!   before handing out the plaintext of a data message it decrypted.
//!   Otherwise the message arrived unencrypted and libotr let it through
//!   (only while the best context is PLAINTEXT and the policy does not
//!   require encryption; else it raises `RCVDMSG_UNENCRYPTED`, reported as
//!   an [`PeerEvent::Error`]); the text is libotr's tag-stripped copy, or
//!   the message itself. Empty texts are never reported. An `?OTR Error:`
//!   message without the space after the colon, which libotr passes through
//!   as ordinary text, is reported as an error instead.
//! * [`PeerEvent::Finished`]: the TLVs returned by `otrl_message_receiving`
//!   contain the disconnect TLV (libotr then forced the context to
//!   FINISHED); reported after the message's text, if any.
//! * [`PeerEvent::Insecure`]: [`LibotrPeer::end`] when any context with the
//!   remote was ENCRYPTED or FINISHED (libotr 4 never calls `gone_insecure`).
//! * SMP: `OTRL_SMPEVENT_ASK_FOR_SECRET` / `_ASK_FOR_ANSWER` →
//!   [`PeerEvent::SmpRequest`], `SUCCESS` / `FAILURE` / `ABORT` →
//!   success / failure / aborted; on `CHEATED` or `ERROR` the shim calls
//!   `otrl_message_abort_smp` and reports [`PeerEvent::SmpAborted`].
//! * [`PeerEvent::Symkey`]: the key returned by `otrl_message_symkey`, or
//!   passed to `received_symkey`.
//! * [`PeerEvent::Error`]: libotr's message events (refused sends, setup
//!   errors, unreadable / malformed / unrecognized / unencrypted messages,
//!   messages for another instance, received OTR Error messages, ...), an
//!   error returned by `otrl_message_sending`, and commands that need a
//!   private conversation when there is none. Heartbeats and resends are
//!   [`PeerEvent::Log`].
//!
//! Sending goes to `OTRL_INSTAG_BEST` with `OTRL_FRAGMENT_SEND_ALL`: libotr
//! injects (and fragments) what it wants sent; when it returns no
//! replacement message the text goes out unchanged. An empty injected
//! message (libotr "sends" one when refusing a send in FINISHED) is dropped.

#[cfg(not(libotr_missing))]
mod ffi;
#[cfg(libotr_missing)]
#[path = "ffi_missing.rs"]
mod ffi;
mod record;

use std::collections::VecDeque;
use std::ffi::{CString, c_int};
use std::path::Path;
use std::time::Instant;

/// `OTRL_POLICY_ALLOW_V2`.
pub const POLICY_ALLOW_V2: u32 = 0x02;
/// `OTRL_POLICY_ALLOW_V3`.
pub const POLICY_ALLOW_V3: u32 = 0x04;
/// `OTRL_POLICY_REQUIRE_ENCRYPTION`.
pub const POLICY_REQUIRE_ENCRYPTION: u32 = 0x08;
/// `OTRL_POLICY_SEND_WHITESPACE_TAG`.
pub const POLICY_SEND_WHITESPACE_TAG: u32 = 0x10;
/// `OTRL_POLICY_WHITESPACE_START_AKE`.
pub const POLICY_WHITESPACE_START_AKE: u32 = 0x20;
/// `OTRL_POLICY_ERROR_START_AKE`.
pub const POLICY_ERROR_START_AKE: u32 = 0x40;

/// Length of libotr's v3 fragment header. A nonzero `max_msg_size` must
/// exceed it: libotr divides by `max_msg_size - 37` (or `- 19` for v2) and
/// crashes when that is 0, so [`LibotrPeer::new`] refuses `1..=37`.
pub const FRAGMENT_HEADER_LEN: usize = 37;

/// The OTR policy of a peer (see peer-protocol.md's `--policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Allow v3, send the whitespace tag, start the AKE on a whitespace tag
    /// or an OTR Error message.
    Opportunistic,
    /// Allow v3, require encryption, start the AKE on a whitespace tag or
    /// an OTR Error message.
    Always,
    /// Allow v3 only; never start anything by itself.
    Manual,
    /// A raw `OTRL_POLICY_*` bitmask, passed to libotr as is.
    Raw(u32),
}

impl PeerPolicy {
    /// The libotr policy bitmask; `allow_v2` adds `OTRL_POLICY_ALLOW_V2`
    /// (to [`PeerPolicy::Raw`] too).
    pub fn bits(self, allow_v2: bool) -> u32 {
        let base = match self {
            PeerPolicy::Opportunistic => {
                POLICY_ALLOW_V3
                    | POLICY_SEND_WHITESPACE_TAG
                    | POLICY_WHITESPACE_START_AKE
                    | POLICY_ERROR_START_AKE
            }
            PeerPolicy::Always => {
                POLICY_ALLOW_V3
                    | POLICY_REQUIRE_ENCRYPTION
                    | POLICY_WHITESPACE_START_AKE
                    | POLICY_ERROR_START_AKE
            }
            PeerPolicy::Manual => POLICY_ALLOW_V3,
            PeerPolicy::Raw(bits) => bits,
        };
        if allow_v2 { base | POLICY_ALLOW_V2 } else { base }
    }

    /// Parses a `--policy` value: `opportunistic`, `always`, `manual`.
    pub fn parse(name: &str) -> Option<PeerPolicy> {
        match name {
            "opportunistic" => Some(PeerPolicy::Opportunistic),
            "always" => Some(PeerPolicy::Always),
            "manual" => Some(PeerPolicy::Manual),
            _ => None,
        }
    }
}

/// libotr's message state (`OTRL_MSGSTATE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgState {
    /// No private conversation.
    Plaintext,
    /// A private conversation is established.
    Encrypted,
    /// The remote ended the private conversation.
    Finished,
}

/// What happened, one-to-one with peer-protocol.md's event lines (other
/// than `ready` and `net`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// `secure <fp> <ssid>`: a private conversation began or was refreshed.
    Secure {
        /// The remote's fingerprint, 40 lowercase hex digits.
        fingerprint: String,
        /// The secure session id, lowercase hex (16 digits).
        ssid: String,
    },
    /// `insecure`: we ended the private conversation.
    Insecure,
    /// `finished`: the remote ended it.
    Finished,
    /// `msg encrypted|plain <b64>`: text delivered to the user.
    Msg {
        /// Whether it arrived in an OTR data message.
        encrypted: bool,
        /// The text's bytes (UTF-8 unless the remote is hostile).
        text: Vec<u8>,
    },
    /// `smp-request <b64question>|-`: the remote started SMP (the question
    /// is raw bytes: it may be invalid UTF-8 from a hostile remote).
    SmpRequest(Option<Vec<u8>>),
    /// `smp-success`.
    SmpSuccess,
    /// `smp-failure`.
    SmpFailure,
    /// `smp-aborted`.
    SmpAborted,
    /// `symkey <hex64>`: the extra symmetric key, lowercase hex.
    Symkey(String),
    /// `error <text>`; the text is a single line.
    Error(String),
    /// `# <text>`: a log line; single line.
    Log(String),
}

/// One queued output, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A transport message (or fragment) to deliver to the remote.
    Net(String),
    /// An event for the user.
    Event(PeerEvent),
}

/// One libotr endpoint: one local account talking to one remote account.
pub struct LibotrPeer {
    ep: ffi::Endpoint,
    queue: VecDeque<Output>,
    fingerprint: String,
    instance_tag: u32,
    last_poll: Instant,
}

impl std::fmt::Debug for LibotrPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibotrPeer")
            .field("fingerprint", &self.fingerprint)
            .field("instance_tag", &format_args!("{:#010x}", self.instance_tag))
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl LibotrPeer {
    /// Creates an endpoint for `account` talking to `peer`.
    ///
    /// `keyfile`: libotr's private key file (`otr.private_key` format). If
    /// it is missing or empty, or holds no key for `account`, a 1024-bit DSA
    /// key is generated and libotr (re)writes the file with it. `None`: a
    /// fresh key in an anonymous temporary file. `max_msg_size`: 0 for no
    /// fragmentation, else it must exceed [`FRAGMENT_HEADER_LEN`]. A new
    /// instance tag is generated every time.
    pub fn new(
        account: &str,
        peer: &str,
        policy: PeerPolicy,
        allow_v2: bool,
        max_msg_size: usize,
        keyfile: Option<&Path>,
    ) -> Result<Self, String> {
        let cstr = |what: &str, s: &str| CString::new(s).map_err(|_| format!("{what} contains a NUL byte"));
        let account = cstr("account", account)?;
        let peer = cstr("peer", peer)?;
        let keyfile = keyfile
            .map(|p| {
                let s = p.to_str().ok_or("key file path is not UTF-8")?;
                cstr("key file path", s)
            })
            .transpose()?;
        if (1..=FRAGMENT_HEADER_LEN).contains(&max_msg_size) {
            return Err(format!("max message size must be 0 or above {FRAGMENT_HEADER_LEN}"));
        }
        let mms = c_int::try_from(max_msg_size).map_err(|_| "max message size too large")?;
        let mut ep = ffi::Endpoint::new(&account, &peer, policy.bits(allow_v2), mms, keyfile.as_deref())?;
        let fingerprint = ep.fingerprint();
        let instance_tag = ep.instance_tag();
        let mut me =
            LibotrPeer { ep, queue: VecDeque::new(), fingerprint, instance_tag, last_poll: Instant::now() };
        me.collect();
        Ok(me)
    }

    /// Our fingerprint: 40 lowercase hex digits.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Our instance tag.
    pub fn instance_tag(&self) -> u32 {
        self.instance_tag
    }

    /// The message state of the context libotr considers best
    /// (`OTRL_INSTAG_BEST`); PLAINTEXT before any contact.
    pub fn msg_state(&mut self) -> MsgState {
        match self.ep.msgstate() {
            1 => MsgState::Encrypted,
            2 => MsgState::Finished,
            _ => MsgState::Plaintext,
        }
    }

    /// A transport message arrived from the remote. Any bytes are accepted
    /// (libotr works on C strings; a payload with a NUL byte is refused
    /// with an error event).
    pub fn receive(&mut self, transport: &[u8]) {
        match CString::new(transport) {
            Ok(msg) => self.ep.receive(&msg),
            Err(_) => self.error("received a message containing a NUL byte (ignored)"),
        }
        self.collect();
    }

    /// The local user sends `text` (libotr's `otrl_message_sending`).
    pub fn send(&mut self, text: &str) {
        match CString::new(text) {
            Ok(text) => self.ep.send(&text),
            Err(_) => self.error("send refused: the text contains a NUL byte"),
        }
        self.collect();
    }

    /// Sends libotr's OTR Query message (`otrl_proto_default_query_msg`),
    /// injected as is, like pidgin-otr does: it is never fragmented (with
    /// Debian's libotr it is about 330 bytes long).
    pub fn query(&mut self) {
        self.ep.query();
        self.collect();
    }

    /// Ends the private conversation with every instance of the remote
    /// (`otrl_message_disconnect_all_instances`).
    pub fn end(&mut self) {
        self.ep.end();
        self.collect();
    }

    /// Starts SMP, with a question or without.
    pub fn smp(&mut self, question: Option<&str>, secret: &[u8]) {
        match question.map(CString::new).transpose() {
            Ok(q) => self.ep.smp(q.as_ref(), secret),
            Err(_) => self.error("the SMP question contains a NUL byte"),
        }
        self.collect();
    }

    /// Answers the remote's pending SMP request.
    pub fn smp_answer(&mut self, secret: &[u8]) {
        self.ep.smp_answer(secret);
        self.collect();
    }

    /// Aborts SMP.
    pub fn smp_abort(&mut self) {
        self.ep.smp_abort();
        self.collect();
    }

    /// Sends TLV 8 (`use_`, `usedata`) in an empty data message and reports
    /// the extra symmetric key as [`PeerEvent::Symkey`].
    pub fn symkey(&mut self, use_: u32, usedata: &[u8]) {
        self.ep.symkey(use_, usedata);
        self.collect();
    }

    /// The interval (seconds) of the timer libotr asked for through
    /// `timer_control`, 0 when it wants none.
    pub fn timer_interval(&self) -> u32 {
        self.ep.timer_interval()
    }

    /// Runs `otrl_message_poll` (what the timer must do when it fires).
    pub fn poll(&mut self) {
        self.ep.poll();
        self.last_poll = Instant::now();
        self.collect();
    }

    /// Runs [`LibotrPeer::poll`] if libotr's timer is on and its interval
    /// has elapsed since the last poll.
    pub fn poll_if_due(&mut self) {
        let interval = self.timer_interval();
        if interval > 0 && self.last_poll.elapsed().as_secs() >= u64::from(interval) {
            self.poll();
        }
    }

    /// The next outgoing transport message (or fragment), in order.
    pub fn poll_net(&mut self) -> Option<String> {
        let i = self.queue.iter().position(|o| matches!(o, Output::Net(_)))?;
        match self.queue.remove(i) {
            Some(Output::Net(m)) => Some(m),
            _ => None,
        }
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        let i = self.queue.iter().position(|o| matches!(o, Output::Event(_)))?;
        match self.queue.remove(i) {
            Some(Output::Event(e)) => Some(e),
            _ => None,
        }
    }

    /// The next output of either kind, in the order they happened.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    fn error(&mut self, text: &str) {
        self.queue.push_back(Output::Event(PeerEvent::Error(text.to_owned())));
    }

    /// Moves the shim's records into the queue.
    fn collect(&mut self) {
        use ffi::Kind;
        for ffi::Record { kind, a, b } in self.ep.take_records() {
            let text = || String::from_utf8_lossy(a.as_deref().unwrap_or_default()).into_owned();
            let line = || {
                let mut all = a.clone().unwrap_or_default();
                all.extend_from_slice(&b);
                one_line(&String::from_utf8_lossy(&all))
            };
            let event = match kind {
                Kind::Net => {
                    self.queue.push_back(Output::Net(text()));
                    continue;
                }
                Kind::Secure => {
                    PeerEvent::Secure { fingerprint: text(), ssid: String::from_utf8_lossy(&b).into_owned() }
                }
                Kind::Insecure => PeerEvent::Insecure,
                Kind::Finished => PeerEvent::Finished,
                Kind::MsgEncrypted | Kind::MsgPlain => {
                    PeerEvent::Msg { encrypted: kind == Kind::MsgEncrypted, text: a.unwrap_or_default() }
                }
                Kind::SmpRequest => PeerEvent::SmpRequest(a),
                Kind::SmpSuccess => PeerEvent::SmpSuccess,
                Kind::SmpFailure => PeerEvent::SmpFailure,
                Kind::SmpAborted => PeerEvent::SmpAborted,
                Kind::Symkey => PeerEvent::Symkey(text()),
                Kind::Error => PeerEvent::Error(line()),
                Kind::Log => PeerEvent::Log(line()),
            };
            self.queue.push_back(Output::Event(event));
        }
    }
}

/// Makes free text safe for one protocol line: control characters become
/// spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}
