//! [`Conversation`]: a [`Link`] over a stream, generic over the runtime.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Instant;

use otr_core::{Sent, Session, Timestamp};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::framing::Framing;
use crate::link::{Link, LinkError, Stats, Update};

/// What a runtime adapter provides for a [`Conversation`]: timers. Adapters implement it,
/// and [`RuntimeIo`] for the streams they drive, on a marker type (otr-futures' `AsyncIo`,
/// otr-tokio's `Tokio`) and name the conversation with a type alias, so the loop is written
/// once, here.
pub trait Runtime {
    /// A timer armed for an instant.
    type Timer;
    /// A timer that fires at `at`.
    fn timer_at(at: Instant) -> Self::Timer;
    /// Ready once `timer` fired (registers `cx` for the wakeup until then).
    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;
}

/// How a [`Runtime`] reads and writes streams of type `S`.
pub trait RuntimeIo<S>: Runtime {
    /// Reads into `buf` (0 bytes read: the stream ended).
    ///
    /// # Errors
    /// The stream's I/O error.
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>>;
    /// Writes from `buf`.
    ///
    /// # Errors
    /// The stream's I/O error.
    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;
    /// Flushes.
    ///
    /// # Errors
    /// The stream's I/O error.
    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Closes the writing side (the peer sees the stream end).
    ///
    /// # Errors
    /// The stream's I/O error.
    fn poll_close(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Drives one [`Session`] over a stream `S`: it frames the session's transport messages onto
/// the stream, hands what arrives to the session, and calls [`Session::handle_timeout`] when
/// the session says (heartbeats, fragment expiry) with real timers of its [`Clock`] and of
/// the runtime `Rt`. The protocol work is the [`Link`]'s; this type only moves bytes.
///
/// Adapters give it a name: `otr_futures::Conversation` (futures-io streams, async-io
/// timers) and `otr_tokio::Conversation` (tokio streams and timers).
///
/// All I/O state lives in the conversation, so every future it returns is cancel-safe:
/// `next_event` may lose a `select!` against user input and nothing is lost. Drive it by
/// calling [`next_event`](Self::next_event) in a loop; the action methods (`send`, `start`,
/// `end`, SMP, ...) return once their messages are written.
///
/// When the transport fails, the session is not lost: [`replace_transport`](Self::replace_transport)
/// (or [`into_parts`](Self::into_parts), [`Link::reconnect`], [`from_parts`](Self::from_parts))
/// moves the conversation to a new stream, and a private conversation goes on without a new
/// key exchange.
pub struct Conversation<S, F, R, Rt: Runtime> {
    link: Link<F, R>,
    transport: S,
    clock: Clock,
    timer: Option<(Timestamp, Rt::Timer)>,
    unflushed: bool,
    closed: bool,
    chunk: Vec<u8>,
    runtime: PhantomData<fn() -> Rt>,
}

impl<S, F, R, Rt: Runtime> fmt::Debug for Conversation<S, F, R, Rt> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conversation").field("link", &self.link).finish_non_exhaustive()
    }
}

/// Bytes read from the transport at a time.
const READ_CHUNK: usize = 16 * 1024;

impl<S, F, R, Rt> Conversation<S, F, R, Rt>
where
    F: Framing,
    R: CryptoRng,
    Rt: RuntimeIo<S>,
{
    /// A conversation for `session` over `transport`, with a real-time [`Clock`]. The
    /// framing's greeting (if any) is written with the first action or `next_event`.
    ///
    /// # Errors
    /// [`LinkError::Framing`] if the framing's greeting cannot be encoded.
    pub fn new(session: Session, transport: S, framing: F, rng: R) -> Result<Self, LinkError<F::Error>> {
        let clock = Clock::new();
        let link = Link::new(session, framing, rng, clock.now())?;
        Ok(Self::from_parts(link, transport, clock))
    }

    /// A conversation from the parts [`into_parts`](Self::into_parts) gave. For a new
    /// transport, call [`Link::reconnect`] on the link first (so the framing greets the new
    /// peer and unwritten frames are written again); [`replace_transport`](Self::replace_transport)
    /// does both when the transport type stays the same.
    pub fn from_parts(link: Link<F, R>, transport: S, clock: Clock) -> Self {
        Self {
            link,
            transport,
            clock,
            timer: None,
            unflushed: false,
            closed: false,
            chunk: Vec::new(),
            runtime: PhantomData,
        }
    }

    /// Takes the conversation apart: the link (session, framing, RNG, unwritten frames), the
    /// transport and the clock (keep it: the session's timers are in its time).
    pub fn into_parts(self) -> (Link<F, R>, S, Clock) {
        (self.link, self.transport, self.clock)
    }

    /// Moves the conversation to a new transport (after the old one failed, or to switch
    /// networks) and gives the old one back. The session goes on as it was: a private
    /// conversation stays private, with no new key exchange. The framing greets again (a
    /// relay login), and frames not completely written to the old transport are written
    /// again to the new one; what was written but lost in flight is not (OTR tolerates the
    /// gap: later messages are still readable).
    ///
    /// # Errors
    /// [`LinkError::Framing`] if the greeting cannot be encoded.
    pub fn replace_transport(&mut self, transport: S) -> Result<S, LinkError<F::Error>> {
        self.link.reconnect(self.clock.now())?;
        self.timer = None;
        self.unflushed = false;
        self.closed = false;
        Ok(std::mem::replace(&mut self.transport, transport))
    }

    /// Uses `clock` instead of a real-time one (e.g. [`Clock::accelerated`] in tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self.timer = None;
        self
    }

    /// Also reports every transport message in and out as [`Update::Sent`] /
    /// [`Update::Received`] (for transcripts and debugging; they are ciphertext once private).
    #[must_use]
    pub fn with_wire_tap(mut self, on: bool) -> Self {
        self.link.set_wire_tap(on);
        self
    }

    /// The session (its state, instance tag, identity, the peer's key once private).
    pub fn session(&self) -> &Session {
        self.link.session()
    }

    /// Saves the session so that the conversation survives the process
    /// ([`Session::snapshot`]: seal it before it reaches a disk, e.g. with the facade's
    /// `otr::SnapshotDir`). Restore with [`Session::restore`] and build a new conversation
    /// around it.
    ///
    /// # Errors
    /// [`LinkError::Framing`] when what the session queued cannot be framed.
    pub fn snapshot(&mut self) -> Result<otr_core::Snapshot, LinkError<F::Error>> {
        self.link.act(|session, _| session.snapshot())
    }

    /// The framing (e.g. whether a relay framing logged in).
    pub fn framing(&self) -> &F {
        self.link.framing()
    }

    /// The clock the session sees.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// What the loop did so far.
    pub fn stats(&self) -> Stats {
        self.link.stats()
    }

    /// The next thing to show or act on. Reads and handles transport messages, fires timers,
    /// and writes what the session answers, until there is an [`Update`].
    ///
    /// Cancel-safe: dropping the future loses nothing.
    ///
    /// # Errors
    /// [`LinkError::Closed`] when the transport ends (and on every later call until
    /// [`replace_transport`](Self::replace_transport)), [`LinkError::Io`],
    /// [`LinkError::Framing`]. The [`Phase`](crate::Phase) inside says how far the
    /// conversation had come.
    pub async fn next_event(&mut self) -> Result<Update, LinkError<F::Error>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Runs `f` on the session with the conversation's RNG, then writes what it produced.
    async fn act<T>(
        &mut self,
        f: impl FnOnce(&mut Session, Timestamp, &mut R) -> T,
    ) -> Result<T, LinkError<F::Error>> {
        let now = self.clock.now();
        let out = self.link.act(|s, rng| f(s, now, rng))?;
        self.flush().await?;
        Ok(out)
    }

    /// Sends a message typed by the user (see [`Session::send`]) and writes it out.
    ///
    /// # Errors
    /// [`LinkError::Send`] when the session refuses (nothing went out); transport errors.
    /// After a transport error the message stays queued: it goes out on the next transport
    /// ([`replace_transport`](Self::replace_transport)), or never if the conversation is
    /// dropped.
    pub async fn send(&mut self, text: &str) -> Result<Sent, LinkError<F::Error>> {
        // Refused sends produce nothing to write: check before writing anything.
        let now = self.clock.now();
        let sent = self.link.act(|s, _| s.send(now, text))??;
        self.flush().await?;
        Ok(sent)
    }

    /// Asks the peer for a private conversation (an OTR query message).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn start(&mut self) -> Result<(), LinkError<F::Error>> {
        self.act(|s, now, _| s.start(now)).await
    }

    /// Ends the private conversation (the peer is told).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn end(&mut self) -> Result<(), LinkError<F::Error>> {
        self.act(|s, now, _| s.end(now)).await
    }

    /// Starts SMP with an optional question (see [`Session::smp_start`]).
    ///
    /// # Errors
    /// [`LinkError::Send`] when not private; transport errors.
    pub async fn smp_start(
        &mut self,
        question: Option<&str>,
        secret: &[u8],
    ) -> Result<(), LinkError<F::Error>> {
        Ok(self.act(|s, now, rng| s.smp_start(now, question, secret, rng)).await??)
    }

    /// Answers the peer's SMP request (see [`Session::smp_respond`]).
    ///
    /// # Errors
    /// [`LinkError::Send`] when there is no request; transport errors.
    pub async fn smp_respond(&mut self, secret: &[u8]) -> Result<(), LinkError<F::Error>> {
        Ok(self.act(|s, now, rng| s.smp_respond(now, secret, rng)).await??)
    }

    /// Aborts SMP under way (the peer is told).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn smp_abort(&mut self) -> Result<(), LinkError<F::Error>> {
        self.act(|s, now, _| s.smp_abort(now)).await
    }

    /// Uses the extra symmetric key (see [`Session::extra_symmetric_key`]): the peer gets
    /// the same key in an [`Event::ExtraSymmetricKey`](otr_core::Event::ExtraSymmetricKey).
    ///
    /// # Errors
    /// [`LinkError::Send`] when not private; transport errors.
    pub async fn extra_symmetric_key(
        &mut self,
        use_: u32,
        usedata: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, LinkError<F::Error>> {
        Ok(self.act(|s, now, _| s.extra_symmetric_key(now, use_, usedata)).await??)
    }

    /// Writes everything queued and flushes the transport.
    ///
    /// # Errors
    /// Transport errors.
    pub async fn flush(&mut self) -> Result<(), LinkError<F::Error>> {
        std::future::poll_fn(|cx| self.poll_write_out(cx)).await
    }

    /// Flushes, then closes the transport (the peer sees it end).
    ///
    /// # Errors
    /// Transport errors.
    pub async fn close(mut self) -> Result<(), LinkError<F::Error>> {
        self.flush().await?;
        let phase = self.link.phase();
        std::future::poll_fn(|cx| Rt::poll_close(&mut self.transport, cx))
            .await
            .map_err(|source| LinkError::Io { phase, source })
    }

    /// Marks the transport failed and says why.
    fn fail(&mut self, e: io::Error) -> LinkError<F::Error> {
        self.closed = true;
        self.link.io_error(e)
    }

    /// Writes the link's frames out and flushes; `Pending` while the transport is not ready.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LinkError<F::Error>>> {
        if self.closed {
            return Poll::Ready(Err(LinkError::Closed(self.link.phase())));
        }
        loop {
            let buf = self.link.pending_write();
            if buf.is_empty() {
                break;
            }
            match Rt::poll_write(&mut self.transport, cx, buf) {
                Poll::Ready(Ok(0)) => {
                    self.closed = true;
                    return Poll::Ready(Err(LinkError::Closed(self.link.phase())));
                }
                Poll::Ready(Ok(n)) => {
                    self.link.wrote(n, self.clock.now());
                    self.unflushed = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.unflushed {
            match Rt::poll_flush(&mut self.transport, cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The loop behind [`next_event`](Self::next_event). Every `continue` follows progress
    /// (bytes read, a timer handled), so it never spins while idle.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Update, LinkError<F::Error>>> {
        loop {
            self.link.count_iteration();
            if self.closed {
                return Poll::Ready(Err(LinkError::Closed(self.link.phase())));
            }
            let update = self.link.poll_update(self.clock.now())?;
            // Write what the session answered before reporting anything: the caller may not
            // call again soon. A write error waits until the update is taken (the
            // conversation is closed by then and says so on the next call).
            let written = self.poll_write_out(cx);
            if let Some(u) = update {
                return Poll::Ready(Ok(u));
            }
            if let Poll::Ready(Err(e)) = written {
                return Poll::Ready(Err(e));
            }
            // More bytes?
            self.chunk.resize(READ_CHUNK, 0);
            match Rt::poll_read(&mut self.transport, cx, &mut self.chunk) {
                Poll::Ready(Ok(0)) => {
                    self.closed = true;
                    return Poll::Ready(Err(LinkError::Closed(self.link.phase())));
                }
                Poll::Ready(Ok(n)) => {
                    self.link.receive_bytes(self.chunk.get(..n).unwrap_or_default());
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.fail(e))),
                Poll::Pending => {}
            }
            if self.poll_timers(cx)? {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Handles due timers (true: something was done) or arms the timer for the next one.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Result<bool, LinkError<F::Error>> {
        let now = self.clock.now();
        let Some(next) = self.link.poll_timeout() else {
            self.timer = None;
            return Ok(false);
        };
        if next <= now {
            return self.link.handle_timeout(now);
        }
        if self.timer.as_ref().is_none_or(|(at, _)| *at != next) {
            self.timer = Some((next, Rt::timer_at(self.clock.instant_of(next))));
        }
        if let Some((_, timer)) = &mut self.timer {
            if Rt::poll_timer(timer, cx).is_ready() {
                self.timer = None;
                return Ok(true);
            }
        }
        Ok(false)
    }
}
