//! [`Link`]: one session over a framed byte stream, without the stream.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use otr_core::{Event, ReceiveError, SendError, Session, Timestamp};
use rand_core::CryptoRng;

use crate::driver::Driver;
use crate::framing::{Decoded, Framing};

/// How far the conversation had come when the transport failed, so the error can say what
/// that means for the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// No OTR message had been exchanged yet.
    BeforeKeyExchange,
    /// OTR messages had been exchanged but the conversation was not private yet.
    DuringKeyExchange,
    /// The conversation was private.
    Private,
    /// The private conversation had ended (or was ended by the peer).
    AfterPrivate,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BeforeKeyExchange => "before any OTR message was exchanged",
            Self::DuringKeyExchange => {
                "during the key exchange: the conversation never became private, and nothing was \
                 sent encrypted; reconnect and start again"
            }
            Self::Private => {
                "while the conversation was private: what was sent since the peer last answered \
                 may not have arrived; reconnect (the private conversation goes on over the new \
                 connection) or start a new one"
            }
            Self::AfterPrivate => "after the private conversation ended",
        })
    }
}

/// Why a conversation over a [`Link`] stopped. `E` is the framing's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError<E: std::error::Error + 'static> {
    /// The peer or the network closed the transport.
    #[error("the transport closed {0}")]
    Closed(Phase),
    /// Reading or writing the transport failed.
    #[error("the transport failed {phase}: {source}")]
    Io {
        /// How far the conversation had come.
        phase: Phase,
        /// The I/O error.
        source: io::Error,
    },
    /// The framing refused bytes (a frame too large, a server's refusal, ...).
    #[error("framing: {0}")]
    Framing(#[source] E),
    /// The session refused to send (policy, state); nothing was transmitted.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// What a conversation yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Update {
    /// Something the session reports (private, message, SMP, ended, ...).
    Event(Event),
    /// A transport message the session refused (malformed, unreadable, not for us). The
    /// conversation goes on; where OTR says so, an error reply already went to the peer.
    Refused(ReceiveError),
    /// With the wire tap on: a transport message that went out.
    Sent(String),
    /// With the wire tap on: a transport message that came in.
    Received(String),
}

/// Counters of what the conversation's loop did: for tests that bound its wakeups, and for
/// anyone curious.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Times the loop ran (once per wakeup, plus once per message or timer handled).
    pub iterations: u64,
    /// Calls of [`Session::handle_timeout`] (heartbeats, fragment expiry, resync deadlines).
    pub timeouts: u64,
    /// Keep-alives the framing was asked for.
    pub keepalives: u64,
    /// Transport messages written.
    pub sent: u64,
    /// Transport messages read.
    pub received: u64,
}

/// One [`Session`] over a framed byte stream, without the stream: the sans-IO half of every
/// adapter's conversation (otr-futures, otr-tokio).
///
/// The adapter moves bytes and arms one timer:
/// - bytes read go to [`receive_bytes`](Self::receive_bytes); then
///   [`poll_update`](Self::poll_update) until `None` (it decodes frames and hands them to the
///   session);
/// - [`pending_write`](Self::pending_write) is what to write, [`wrote`](Self::wrote) says
///   how much was;
/// - at [`poll_timeout`](Self::poll_timeout) it calls [`handle_timeout`](Self::handle_timeout).
///
/// The link owns the session (inside a one-peer [`Driver`]), the framing and the RNG. When
/// the transport fails, [`reconnect`](Self::reconnect) prepares it for a new one: nothing of
/// the session is lost, and frames not completely written are written again after the
/// framing's greeting.
pub struct Link<F, R> {
    driver: Driver<()>,
    framing: F,
    rng: R,
    rbuf: Vec<u8>,
    /// Frames to write, in order; `written` bytes of the first are out already.
    wbuf: VecDeque<Vec<u8>>,
    written: usize,
    updates: VecDeque<Update>,
    last_write: Timestamp,
    otr_seen: bool,
    secure_seen: bool,
    tap: bool,
    stats: Stats,
}

impl<F, R> fmt::Debug for Link<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("stats", &self.stats).finish_non_exhaustive()
    }
}

impl<F: Framing, R: CryptoRng> Link<F, R> {
    /// A link for `session` with `framing`, whose greeting (if any) is the first thing to
    /// write. `now` starts the keep-alive interval.
    ///
    /// # Errors
    /// [`LinkError::Framing`] if the greeting cannot be encoded.
    pub fn new(session: Session, framing: F, rng: R, now: Timestamp) -> Result<Self, LinkError<F::Error>> {
        let mut driver = Driver::new();
        driver.insert((), session);
        let mut link = Self {
            driver,
            framing,
            rng,
            rbuf: Vec::new(),
            wbuf: VecDeque::new(),
            written: 0,
            updates: VecDeque::new(),
            last_write: now,
            otr_seen: false,
            secure_seen: false,
            tap: false,
            stats: Stats::default(),
        };
        link.hello()?;
        Ok(link)
    }

    /// Reports every transport message in and out as [`Update::Sent`] / [`Update::Received`]
    /// too (for transcripts and debugging; they are ciphertext once private).
    pub fn set_wire_tap(&mut self, on: bool) {
        self.tap = on;
    }

    /// The session (its state, instance tag, identity, the peer's key once private).
    pub fn session(&self) -> &Session {
        // Invariant: the link inserts its one session in `new` and never removes it.
        self.driver.get(&()).expect("a link's session is never removed")
    }

    /// The framing (e.g. to ask a relay framing whether it logged in).
    pub fn framing(&self) -> &F {
        &self.framing
    }

    /// What the loop did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Counts one run of the adapter's loop (see [`Stats::iterations`]).
    pub fn count_iteration(&mut self) {
        self.stats.iterations += 1;
    }

    /// How far the conversation has come (for error messages).
    pub fn phase(&self) -> Phase {
        if self.session().private_with().is_some() {
            Phase::Private
        } else if self.secure_seen {
            Phase::AfterPrivate
        } else if self.otr_seen {
            Phase::DuringKeyExchange
        } else {
            Phase::BeforeKeyExchange
        }
    }

    /// The error for a transport that failed with `source`: [`LinkError::Closed`] for the
    /// kinds that mean the other end went away, [`LinkError::Io`] otherwise.
    pub fn io_error(&self, source: io::Error) -> LinkError<F::Error> {
        use io::ErrorKind::*;
        match source.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | WriteZero => {
                LinkError::Closed(self.phase())
            }
            _ => LinkError::Io { phase: self.phase(), source },
        }
    }

    /// Runs a user action on the session (`send`, `start`, `end`, SMP, ...) with the link's
    /// RNG, then frames what it produced for writing.
    ///
    /// # Errors
    /// [`LinkError::Framing`] when a message cannot be framed.
    pub fn act<T>(&mut self, f: impl FnOnce(&mut Session, &mut R) -> T) -> Result<T, LinkError<F::Error>> {
        let rng = &mut self.rng;
        // Invariant: the link's one session is never removed (see `session`).
        let out = self.driver.with(&(), |s| f(s, rng)).expect("a link's session is never removed");
        self.pump()?;
        Ok(out)
    }

    /// Bytes read from the transport.
    pub fn receive_bytes(&mut self, bytes: &[u8]) {
        self.rbuf.extend_from_slice(bytes);
    }

    /// The next thing to report: decodes buffered frames, hands their messages to the
    /// session at `now` and frames its answers, until there is an [`Update`]. `None`: read
    /// more bytes (or wait for a timer).
    ///
    /// # Errors
    /// [`LinkError::Framing`] when the bytes are not valid frames or the framing reports a
    /// fatal condition.
    pub fn poll_update(&mut self, now: Timestamp) -> Result<Option<Update>, LinkError<F::Error>> {
        loop {
            self.pump()?;
            if let Some(u) = self.updates.pop_front() {
                return Ok(Some(u));
            }
            let mut out = Vec::new();
            let decoded = self.framing.decode(&mut self.rbuf, &mut out).map_err(LinkError::Framing);
            self.queue_frame(out);
            match decoded? {
                Decoded::Message(m) => {
                    self.stats.received += 1;
                    self.otr_seen |= m.starts_with("?OTR");
                    let rng = &mut self.rng;
                    let result = self.driver.with(&(), |s| s.receive(now, &m, rng));
                    if let Some(Err(e)) = result {
                        self.updates.push_back(Update::Refused(e));
                    }
                    if self.tap {
                        // Before what the session made of it.
                        self.updates.push_front(Update::Received(m));
                    }
                }
                Decoded::Consumed => {}
                Decoded::NeedMore => return Ok(None),
            }
        }
    }

    /// The bytes to write next (empty: nothing to write).
    pub fn pending_write(&self) -> &[u8] {
        self.wbuf.front().and_then(|f| f.get(self.written..)).unwrap_or_default()
    }

    /// `n` bytes of [`pending_write`](Self::pending_write) were written at `now`.
    pub fn wrote(&mut self, n: usize, now: Timestamp) {
        self.written = self.written.saturating_add(n);
        while let Some(front) = self.wbuf.front() {
            if self.written < front.len() {
                break;
            }
            self.written -= front.len();
            self.wbuf.pop_front();
        }
        if n > 0 {
            self.last_write = now;
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called: the session's
    /// timers and the framing's keep-alive.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let keepalive = self.framing.keepalive_interval_ms().map(|ms| self.last_write.plus_millis(ms.max(1)));
        [self.driver.poll_timeout(), keepalive].into_iter().flatten().min()
    }

    /// Does the time-based work due at `now` (the session's heartbeats and fragment expiry,
    /// the framing's keep-alive). Early calls do nothing. Returns whether anything was done.
    ///
    /// # Errors
    /// [`LinkError::Framing`] when a message or keep-alive cannot be framed.
    pub fn handle_timeout(&mut self, now: Timestamp) -> Result<bool, LinkError<F::Error>> {
        let handled = self.driver.handle_timeout(now);
        self.stats.timeouts += handled as u64;
        let mut acted = handled > 0;
        let keepalive_due =
            self.framing.keepalive_interval_ms().map(|ms| self.last_write.plus_millis(ms.max(1)));
        if keepalive_due.is_some_and(|t| t <= now) {
            let mut out = Vec::new();
            self.framing.keepalive(&mut out).map_err(LinkError::Framing)?;
            self.queue_frame(out);
            self.last_write = now;
            self.stats.keepalives += 1;
            acted = true;
        }
        self.pump()?;
        Ok(acted)
    }

    /// Prepares the link for a new transport: bytes read from the old one are dropped, the
    /// framing is [reset](Framing::reset) and greets again, and every frame not completely
    /// written is written again (whole) after the greeting. The session is untouched, so a
    /// private conversation goes on without a new key exchange.
    ///
    /// # Errors
    /// [`LinkError::Framing`] if the greeting cannot be encoded.
    pub fn reconnect(&mut self, now: Timestamp) -> Result<(), LinkError<F::Error>> {
        self.rbuf.clear();
        self.written = 0;
        self.last_write = now;
        self.framing.reset();
        let queued = std::mem::take(&mut self.wbuf);
        self.hello()?;
        self.wbuf.extend(queued);
        Ok(())
    }

    /// Takes the link apart: its session, framing and RNG.
    pub fn into_parts(mut self) -> (Session, F, R) {
        // Invariant: the link's one session is never removed (see `session`).
        let session = self.driver.remove(&()).expect("a link's session is never removed");
        (session, self.framing, self.rng)
    }

    fn hello(&mut self) -> Result<(), LinkError<F::Error>> {
        let mut out = Vec::new();
        self.framing.hello(&mut out).map_err(LinkError::Framing)?;
        self.queue_frame(out);
        Ok(())
    }

    fn queue_frame(&mut self, frame: Vec<u8>) {
        if !frame.is_empty() {
            self.wbuf.push_back(frame);
        }
    }

    /// Frames the session's transport messages and queues its events.
    fn pump(&mut self) -> Result<(), LinkError<F::Error>> {
        while let Some(((), t)) = self.driver.poll_transmit() {
            self.otr_seen |= t.message.starts_with("?OTR");
            let mut out = Vec::new();
            self.framing.encode(&t.message, &mut out).map_err(LinkError::Framing)?;
            self.queue_frame(out);
            self.stats.sent += 1;
            if self.tap {
                self.updates.push_back(Update::Sent(t.message));
            }
        }
        while let Some(((), e)) = self.driver.poll_event() {
            self.secure_seen |= matches!(e, Event::Secure { .. });
            self.updates.push_back(Update::Event(e));
        }
        Ok(())
    }
}
