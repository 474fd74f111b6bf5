//! [`Conversation`]: one [`Session`] over one futures-io stream, with its clock and timers.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Timer;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{FutureExt, future::poll_fn};
use otr_core::{Event, ReceiveError, SendError, Sent, Session, Timestamp};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::clock::Clock;
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
                 may not have arrived; reconnect and start a new private conversation"
            }
            Self::AfterPrivate => "after the private conversation ended",
        })
    }
}

/// Why a [`Conversation`] stopped. `E` is the framing's error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E: std::error::Error + 'static> {
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

/// What [`Conversation::next_event`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum Update {
    /// Something the session reports (private, message, SMP, ended, ...).
    Event(Event),
    /// A transport message the session refused (malformed, unreadable, not for us). The
    /// conversation goes on; where OTR says so, an error reply already went to the peer.
    Refused(ReceiveError),
    /// With [`Conversation::with_wire_tap`]: a transport message that went out.
    Sent(String),
    /// With [`Conversation::with_wire_tap`]: a transport message that came in.
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

/// Drives one [`Session`] over a futures-io stream: it frames the session's transport
/// messages onto the stream, hands what arrives to the session, and calls
/// [`Session::handle_timeout`] when [`Session::poll_timeout`] says (heartbeats, fragment
/// expiry) with real timers of its [`Clock`].
///
/// All I/O state lives in the conversation, so every future it returns is cancel-safe:
/// `next_event` may lose a `select!` against user input and nothing is lost. Drive it by
/// calling [`next_event`](Self::next_event) in a loop; the action methods (`send`, `start`,
/// `end`, SMP, ...) return once their messages are written.
///
/// ```no_run
/// # async fn demo<S>(stream: S, session: otr_core::Session, rng: impl rand_core::CryptoRng)
/// # where S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin {
/// use otr_futures::{Conversation, LengthPrefixed, Update};
/// let mut conv = Conversation::new(session, stream, LengthPrefixed::default(), rng).unwrap();
/// conv.start().await.unwrap();
/// while let Ok(update) = conv.next_event().await {
///     if let Update::Event(otr_core::Event::Secure { .. }) = update {
///         conv.send("hola").await.unwrap();
///     }
/// }
/// # }
/// ```
pub struct Conversation<T, F: Framing, R> {
    session: Session,
    transport: T,
    framing: F,
    rng: R,
    clock: Clock,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    unflushed: bool,
    closed: bool,
    updates: VecDeque<Update>,
    timer: Option<(Timestamp, Timer)>,
    last_write: Timestamp,
    last_timeout_call: Option<Timestamp>,
    otr_seen: bool,
    secure_seen: bool,
    tap: bool,
    stats: Stats,
}

impl<T, F: Framing, R> fmt::Debug for Conversation<T, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation").field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// Bytes read from the transport at a time.
const READ_CHUNK: usize = 16 * 1024;

impl<T, F, R> Conversation<T, F, R>
where
    T: AsyncRead + AsyncWrite + Unpin,
    F: Framing,
    R: CryptoRng,
{
    /// A conversation for `session` over `transport`, with a real-time [`Clock`]. The
    /// framing's greeting (if any) is written with the first action or `next_event`.
    ///
    /// # Errors
    /// [`Error::Framing`] if the framing's greeting cannot be encoded.
    pub fn new(session: Session, transport: T, mut framing: F, rng: R) -> Result<Self, Error<F::Error>> {
        let mut wbuf = Vec::new();
        framing.hello(&mut wbuf).map_err(Error::Framing)?;
        Ok(Self {
            session,
            transport,
            framing,
            rng,
            clock: Clock::new(),
            rbuf: Vec::new(),
            wbuf,
            unflushed: false,
            closed: false,
            updates: VecDeque::new(),
            timer: None,
            last_write: Timestamp(0),
            last_timeout_call: None,
            otr_seen: false,
            secure_seen: false,
            tap: false,
            stats: Stats::default(),
        })
    }

    /// Uses `clock` instead of a real-time one (e.g. [`Clock::accelerated`] in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.last_write = clock.now();
        self.clock = clock;
        self
    }

    /// Also reports every transport message in and out as [`Update::Sent`] /
    /// [`Update::Received`] (for transcripts and debugging; they are ciphertext once private).
    #[must_use]
    pub fn with_wire_tap(mut self, on: bool) -> Self {
        self.tap = on;
        self
    }

    /// The session (its state, instance tag, identity, the peer's key once private).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The clock the session sees.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// What the loop did so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The next thing to show or act on. Reads and handles transport messages, fires timers,
    /// and writes what the session answers, until there is an [`Update`].
    ///
    /// Cancel-safe: dropping the future loses nothing.
    ///
    /// # Errors
    /// [`Error::Closed`] when the transport ends (and on every later call), [`Error::Io`],
    /// [`Error::Framing`]. The [`Phase`] inside says how far the conversation had come.
    pub async fn next_event(&mut self) -> Result<Update, Error<F::Error>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Sends a message typed by the user (see [`Session::send`]) and writes it out.
    ///
    /// # Errors
    /// [`Error::Send`] when the session refuses (nothing went out); transport errors.
    pub async fn send(&mut self, text: &str) -> Result<Sent, Error<F::Error>> {
        let sent = self.session.send(self.clock.now(), text)?;
        self.pump()?;
        self.flush().await?;
        Ok(sent)
    }

    /// Asks the peer for a private conversation (an OTR query message).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn start(&mut self) -> Result<(), Error<F::Error>> {
        self.session.start(self.clock.now());
        self.pump()?;
        self.flush().await
    }

    /// Ends the private conversation (the peer is told).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn end(&mut self) -> Result<(), Error<F::Error>> {
        self.session.end(self.clock.now());
        self.pump()?;
        self.flush().await
    }

    /// Starts SMP with an optional question (see [`Session::smp_start`]).
    ///
    /// # Errors
    /// [`Error::Send`] when not private; transport errors.
    pub async fn smp_start(&mut self, question: Option<&str>, secret: &[u8]) -> Result<(), Error<F::Error>> {
        self.session.smp_start(self.clock.now(), question, secret, &mut self.rng)?;
        self.pump()?;
        self.flush().await
    }

    /// Answers the peer's SMP request (see [`Session::smp_respond`]).
    ///
    /// # Errors
    /// [`Error::Send`] when there is no request; transport errors.
    pub async fn smp_respond(&mut self, secret: &[u8]) -> Result<(), Error<F::Error>> {
        self.session.smp_respond(self.clock.now(), secret, &mut self.rng)?;
        self.pump()?;
        self.flush().await
    }

    /// Aborts SMP under way (the peer is told).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn smp_abort(&mut self) -> Result<(), Error<F::Error>> {
        self.session.smp_abort(self.clock.now());
        self.pump()?;
        self.flush().await
    }

    /// Uses the extra symmetric key (see [`Session::extra_symmetric_key`]): the peer gets
    /// the same key in an [`Event::ExtraSymmetricKey`].
    ///
    /// # Errors
    /// [`Error::Send`] when not private; transport errors.
    pub async fn extra_symmetric_key(
        &mut self,
        use_: u32,
        usedata: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, Error<F::Error>> {
        let key = self.session.extra_symmetric_key(self.clock.now(), use_, usedata)?;
        self.pump()?;
        self.flush().await?;
        Ok(key)
    }

    /// Writes everything queued and flushes the transport.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn flush(&mut self) -> Result<(), Error<F::Error>> {
        poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// Flushes, then closes the transport (the peer sees it end).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn close(mut self) -> Result<(), Error<F::Error>> {
        self.flush().await?;
        let phase = self.phase();
        poll_fn(|cx| Pin::new(&mut self.transport).poll_close(cx))
            .await
            .map_err(|source| Error::Io { phase, source })
    }

    /// How far the conversation has come (for error messages).
    fn phase(&self) -> Phase {
        if self.session.private_with().is_some() {
            Phase::Private
        } else if self.secure_seen {
            Phase::AfterPrivate
        } else if self.otr_seen {
            Phase::DuringKeyExchange
        } else {
            Phase::BeforeKeyExchange
        }
    }

    fn io_error(&self, source: io::Error) -> Error<F::Error> {
        use io::ErrorKind::*;
        match source.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | WriteZero => {
                Error::Closed(self.phase())
            }
            _ => Error::Io { phase: self.phase(), source },
        }
    }

    /// Moves the session's transport messages into the write buffer and its events into the
    /// update queue.
    fn pump(&mut self) -> Result<(), Error<F::Error>> {
        while let Some(t) = self.session.poll_transmit() {
            self.otr_seen |= t.message.starts_with("?OTR");
            self.framing.encode(&t.message, &mut self.wbuf).map_err(Error::Framing)?;
            self.stats.sent += 1;
            if self.tap {
                self.updates.push_back(Update::Sent(t.message));
            }
        }
        while let Some(e) = self.session.poll_event() {
            self.secure_seen |= matches!(e, Event::Secure { .. });
            self.updates.push_back(Update::Event(e));
        }
        Ok(())
    }

    /// Writes the buffer out and flushes; `Pending` while the transport is not ready.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error<F::Error>>> {
        if self.closed {
            return Poll::Ready(Err(Error::Closed(self.phase())));
        }
        while !self.wbuf.is_empty() {
            match Pin::new(&mut self.transport).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => {
                    self.closed = true;
                    return Poll::Ready(Err(Error::Closed(self.phase())));
                }
                Poll::Ready(Ok(n)) => {
                    self.wbuf.drain(..n.min(self.wbuf.len()));
                    self.unflushed = true;
                    self.last_write = self.clock.now();
                }
                Poll::Ready(Err(e)) => {
                    self.closed = true;
                    return Poll::Ready(Err(self.io_error(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Pin::new(&mut self.transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => {
                    self.closed = true;
                    return Poll::Ready(Err(self.io_error(e)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The loop behind [`next_event`](Self::next_event). Every `continue` follows progress
    /// (bytes read, a frame decoded, a timer handled), so it never spins while idle.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Update, Error<F::Error>>> {
        loop {
            self.stats.iterations += 1;
            self.pump()?;
            // Write what the session answered before reporting anything: the caller may not
            // call again soon. A write error waits until the updates are taken (the
            // conversation is closed by then and says so on the next call).
            let written = self.poll_write_out(cx);
            if let Some(u) = self.updates.pop_front() {
                return Poll::Ready(Ok(u));
            }
            if let Poll::Ready(Err(e)) = written {
                return Poll::Ready(Err(e));
            }
            // A complete frame already buffered?
            match self.framing.decode(&mut self.rbuf, &mut self.wbuf).map_err(Error::Framing)? {
                Decoded::Message(m) => {
                    self.stats.received += 1;
                    self.otr_seen |= m.starts_with("?OTR");
                    let now = self.clock.now();
                    if let Err(e) = self.session.receive(now, &m, &mut self.rng) {
                        self.updates.push_back(Update::Refused(e));
                    }
                    if self.tap {
                        // Before what the session made of it.
                        self.updates.push_front(Update::Received(m));
                    }
                    continue;
                }
                Decoded::Consumed => continue,
                Decoded::NeedMore => {}
            }
            // More bytes?
            let start = self.rbuf.len();
            self.rbuf.resize(start + READ_CHUNK, 0);
            let read = Pin::new(&mut self.transport).poll_read(cx, &mut self.rbuf[start..]);
            let got = match &read {
                Poll::Ready(Ok(n)) => *n,
                _ => 0,
            };
            self.rbuf.truncate(start + got);
            match read {
                Poll::Ready(Ok(0)) => {
                    self.closed = true;
                    return Poll::Ready(Err(Error::Closed(self.phase())));
                }
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(e)) => {
                    self.closed = true;
                    return Poll::Ready(Err(self.io_error(e)));
                }
                Poll::Pending => {}
            }
            // Timers: the session's, and the framing's keep-alive.
            if self.poll_timers(cx)? {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Handles due timers (true: something was done) or arms the timer for the next one.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<bool, Error<F::Error>> {
        let now = self.clock.now();
        // At most one handle_timeout per clock millisecond, whatever the session reports.
        let earliest = self.last_timeout_call.map_or(Timestamp(0), |t| t.plus_millis(1));
        let session_due = self.session.poll_timeout().map(|t| t.max(earliest));
        let keepalive_due =
            self.framing.keepalive_interval_ms().map(|ms| self.last_write.plus_millis(ms.max(1)));
        let mut acted = false;
        if session_due.is_some_and(|t| t <= now) {
            self.session.handle_timeout(now);
            self.last_timeout_call = Some(now);
            self.stats.timeouts += 1;
            acted = true;
        }
        if keepalive_due.is_some_and(|t| t <= now) {
            self.framing.keepalive(&mut self.wbuf).map_err(Error::Framing)?;
            self.last_write = now;
            self.stats.keepalives += 1;
            acted = true;
        }
        if acted {
            return Ok(true);
        }
        let Some(next) = [session_due, keepalive_due].into_iter().flatten().min() else {
            self.timer = None;
            return Ok(false);
        };
        if self.timer.as_ref().is_none_or(|(at, _)| *at != next) {
            self.timer = Some((next, self.clock.timer_at(next)));
        }
        if let Some((_, timer)) = &mut self.timer {
            if timer.poll(cx).is_ready() {
                self.timer = None;
                return Ok(true);
            }
        }
        Ok(false)
    }
}
