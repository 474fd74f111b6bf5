//! otr-futures: drive [`otr_core::Session`]s over any futures-io stream.
//!
//! A [`Conversation`] owns a session, an `AsyncRead + AsyncWrite` transport (a TCP stream of
//! async-std or smol, a futures-rustls TLS stream, an in-memory pipe), a [`Framing`] that
//! turns OTR strings into bytes and back, the caller's RNG, and a [`Clock`] whose real timers
//! drive the session's heartbeats and fragment expiry. It depends on no particular runtime
//! (no tokio): its timers are async-io's, which async-std and smol both run on, and which
//! fall back to their own thread anywhere else.
//!
//! This crate is a thin layer: the loop is [`otr_driver::Conversation`], and this crate only
//! says how to read, write and sleep ([`AsyncIo`]). The framing, clock and error types are
//! otr-driver's, re-exported here.
//!
//! ```no_run
//! # async fn demo<S>(stream: S, session: otr_core::Session, rng: impl rand_core::CryptoRng)
//! # where S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin {
//! use otr_futures::{Conversation, LengthPrefixed, Update};
//! let mut conv = Conversation::new(session, stream, LengthPrefixed::default(), rng).unwrap();
//! conv.start().await.unwrap();
//! while let Ok(update) = conv.next_event().await {
//!     if let Update::Event(otr_core::Event::Secure { .. }) = update {
//!         conv.send("hola").await.unwrap();
//!     }
//! }
//! # }
//! ```
//!
//! To move a conversation to a new stream (a reconnect) without a new key exchange, see
//! [`otr_driver::Conversation::replace_transport`] and
//! [`into_parts`](otr_driver::Conversation::into_parts).
#![warn(missing_docs)]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::FutureExt;

pub use otr_driver::{
    Clock, Decoded, Framing, LengthPrefixed, LengthPrefixedError, Link, LinkError as Error, Phase, Stats,
    Update, clock, framing,
};

/// One [`otr_core::Session`] over a futures-io stream `S`, with framing `F` and RNG `R`:
/// [`otr_driver::Conversation`] on the [`AsyncIo`] runtime. See there for every method.
pub type Conversation<S, F, R> = otr_driver::Conversation<S, F, R, AsyncIo>;

/// futures-io streams and async-io timers (async-std, smol, or any executor), for
/// [`otr_driver::Conversation`].
#[derive(Debug, Clone, Copy)]
pub struct AsyncIo;

impl otr_driver::Runtime for AsyncIo {
    type Timer = async_io::Timer;

    fn timer_at(at: Instant) -> Self::Timer {
        async_io::Timer::at(at)
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.poll(cx).map(|_| ())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> otr_driver::RuntimeIo<S> for AsyncIo {
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_read(cx, buf)
    }

    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(cx, buf)
    }

    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(cx)
    }

    fn poll_close(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_close(cx)
    }
}
