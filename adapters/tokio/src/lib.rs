//! otr-tokio: drive [`otr_core::Session`]s over any tokio stream.
//!
//! A [`Conversation`] owns a session, a `tokio::io::AsyncRead + AsyncWrite` transport (a
//! `TcpStream`, a tokio-rustls stream, a `duplex` pipe), a [`Framing`] that turns OTR strings
//! into bytes and back, the caller's RNG, and a [`Clock`] whose tokio timers drive the
//! session's heartbeats and fragment expiry. Run it inside a tokio runtime (with the time
//! driver enabled).
//!
//! This crate is a thin layer: the loop is [`otr_driver::Conversation`], and this crate only
//! says how to read, write and sleep ([`Tokio`]). The framing, clock and error types are
//! otr-driver's, re-exported here; otr-futures is the same over futures-io. For a relay,
//! compose it with `otr-relay-client` (feature `tokio`): its `connect_tls` gives the stream
//! and its `RelayFraming` the framing.
//!
//! ```no_run
//! # async fn demo<S>(stream: S, session: otr_core::Session, rng: impl rand_core::CryptoRng)
//! # where S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
//! use otr_tokio::{Conversation, LengthPrefixed, Update};
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use otr_driver::{
    Clock, Decoded, Framing, LengthPrefixed, LengthPrefixedError, Link, LinkError as Error, Phase, Stats,
    Update, clock, framing,
};

/// One [`otr_core::Session`] over a tokio stream `S`, with framing `F` and RNG `R`:
/// [`otr_driver::Conversation`] on the [`Tokio`] runtime. See there for every method.
pub type Conversation<S, F, R> = otr_driver::Conversation<S, F, R, Tokio>;

/// tokio streams and timers, for [`otr_driver::Conversation`].
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl otr_driver::Runtime for Tokio {
    type Timer = Pin<Box<tokio::time::Sleep>>;

    fn timer_at(at: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn poll_timer(timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> otr_driver::RuntimeIo<S> for Tokio {
    fn poll_read(io: &mut S, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_write(io: &mut S, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(io).poll_write(cx, buf)
    }

    fn poll_flush(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_flush(cx)
    }

    fn poll_close(io: &mut S, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(io).poll_shutdown(cx)
    }
}
