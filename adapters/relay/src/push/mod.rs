//! Push wake-ups: the relay tells a sleeping device that something is waiting for it.
//!
//! When a message is stored for an account that has no live connection, the relay can POST a
//! wake-up to the push endpoint that the account's client registered (a UnifiedPush
//! distributor, a Web Push service, or a gateway to Google FCM or Apple APNs: all take the same
//! HTTP shape; see `docs/push.md`). The device wakes, connects to the relay and fetches its
//! messages over the relay protocol as usual.
//!
//! # What a wake-up contains, and what it never contains
//!
//! Every wake-up body is the same fixed 20 bytes, [`WAKE_PAYLOAD`] (`{"otr-relay":"wake"}`):
//! UnifiedPush needs a body of 1 to 4096 bytes, and a fixed one says nothing. It never contains
//! message content, the sender, the recipient's account name, a count, a message id or a time.
//! For a Web Push endpoint (one registered with the subscription's `p256dh` and `auth` keys) the
//! body is encrypted to the subscription (RFC 8291, `aes128gcm` content coding of RFC 8188) so
//! the push service sees only ciphertext of a known constant, and the request carries a VAPID
//! signature (RFC 8292) made with the relay's [`VapidKey`]. The headers are `TTL` (configured,
//! [`PushConfig::ttl`]), `Urgency: high`, and a constant `Topic` ([`WAKE_TOPIC`]) so that a push
//! service replaces a wake-up still queued for the device instead of piling them up. What the
//! push service does learn is that *some* message arrived for the device behind that endpoint
//! at about that time; coalescing ([`PushConfig::window`]) limits that to one event per window.
//!
//! # Safety of the relay
//!
//! [`Pusher::wake`] never blocks: it enqueues on a bounded queue or declines at once. Each POST
//! runs in its own task with a total timeout (resolve, connect, TLS, response headers). The
//! relay resolves the host itself, refuses the endpoint if any address is private, loopback,
//! link-local, unspecified, multicast or unique-local (unless [`PushConfig::allow_private`]),
//! and connects only to the addresses it checked, so DNS rebinding cannot redirect it. It never
//! follows redirects (a 3xx is a failure). 404 and 410 ask the relay to drop the endpoint
//! ([`PushOutcome::Dropped`]); 429 backs that endpoint off, honouring `Retry-After` up to a
//! bound; 413, 5xx, timeouts and connection errors back off exponentially.
//!
//! # Wiring it in
//!
//! ```no_run
//! # async fn run(data_key: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use otr_relay::push::{PushConfig, PushEndpoint, PushOutcome, Pusher, VapidKey};
//! let vapid = VapidKey::from_bytes(data_key)?; // or VapidKey::generate() once, then to_bytes()
//! let pusher = Pusher::new(PushConfig::default(), vapid, |report| {
//!     if let PushOutcome::Dropped(_) = report.outcome {
//!         // delete report.endpoint for report.account from the store
//!     }
//! })?;
//! // On registration: parse, check the policy, probe (UnifiedPush), then store it.
//! let endpoint = PushEndpoint::unified_push("https://push.example.org/up/abc")?;
//! pusher.probe(&endpoint).await?;
//! // On storing a message for bob while none of bob's devices is connected:
//! pusher.wake("bob", &endpoint)?;
//! # Ok(()) }
//! ```

mod addr;
mod endpoint;
mod http;
mod pusher;
mod vapid;
mod webpush;

use std::net::IpAddr;
use std::time::Duration;

pub use addr::is_forbidden;
pub use endpoint::{EndpointError, PushEndpoint};
pub use pusher::{ProbeError, PushError, Pusher, WakeError, WakeStatus};
pub use vapid::{VapidKey, VapidKeyError};

/// The body of every wake-up (before Web Push encryption): fixed, so it says nothing.
pub const WAKE_PAYLOAD: &[u8] = br#"{"otr-relay":"wake"}"#;

/// The `Topic` header of every wake-up (RFC 8030 §5.4): a push service keeps only the newest
/// queued message with one topic for a subscription, so undelivered wake-ups do not pile up.
pub const WAKE_TOPIC: &str = "otr-relay-wake";

/// How the [`Pusher`] behaves. [`PushConfig::default`] is meant for production.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PushConfig {
    /// At most one POST per recipient account (and endpoint, for an account with several
    /// devices) per window; later wakes in it are merged into the one already sent (the device
    /// fetches everything waiting when it connects). 10 s.
    pub window: Duration,
    /// Total time for one POST: resolve, connect, TLS, request, response headers. 5 s.
    pub timeout: Duration,
    /// The `TTL` header: how long a push service may keep the wake-up for an offline device.
    /// One day.
    pub ttl: Duration,
    /// Wake-ups waiting for a worker; a wake beyond it is declined ([`WakeError::QueueFull`]).
    /// 1024.
    pub queue: usize,
    /// POSTs in flight at once (a hanging endpoint holds one for at most [`timeout`]). 32.
    ///
    /// [`timeout`]: PushConfig::timeout
    pub concurrency: usize,
    /// First backoff after a failure (413, 5xx, 429 without `Retry-After`, timeout, connection
    /// error), doubled after each further failure of the same endpoint. 30 s.
    pub backoff_base: Duration,
    /// The longest backoff, also the bound on a `Retry-After`. One hour.
    pub backoff_max: Duration,
    /// Allow private, loopback, link-local, unique-local addresses (tests, a LAN distributor).
    /// Off.
    pub allow_private: bool,
    /// Allow `http://` endpoints (tests, a distributor on a LAN). Off: https only.
    pub allow_http: bool,
    /// The VAPID `sub` claim (RFC 8292 §2.1): a `mailto:` or `https:` contact for the push
    /// service. Some services (Apple) require it. None.
    pub vapid_subject: Option<String>,
    /// The TLS client configuration for https endpoints. None: the system's roots, TLS 1.2 and
    /// 1.3 with the ring provider.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            window: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            ttl: Duration::from_secs(24 * 3600),
            queue: 1024,
            concurrency: 32,
            backoff_base: Duration::from_secs(30),
            backoff_max: Duration::from_secs(3600),
            allow_private: false,
            allow_http: false,
            vapid_subject: None,
            tls: None,
        }
    }
}

/// What became of one wake-up POST, reported through the [`Pusher`]'s callback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The push service accepted it (2xx).
    Delivered,
    /// The endpoint is gone: delete it from the store.
    Dropped(DropReason),
    /// It failed; the endpoint is backed off (see [`Pusher::backing_off`]) and kept.
    Failed(FailReason),
    /// The relay refused to send it, without connecting: the endpoint is not acceptable under
    /// this configuration (the relay may delete it, or refuse it at registration next time).
    Refused(RefuseReason),
}

/// Why an endpoint must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DropReason {
    /// 404 Not Found: the subscription does not exist.
    #[error("the push service does not know the endpoint (404)")]
    NotFound,
    /// 410 Gone: the subscription expired or was removed.
    #[error("the push subscription is gone (410)")]
    Gone,
}

/// Why a POST failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailReason {
    /// 429: the push service asks us to slow down, for `retry_after` if it said so.
    #[error("rate limited by the push service (429)")]
    RateLimited {
        /// The `Retry-After` it gave (delta-seconds only), before our bound.
        retry_after: Option<Duration>,
    },
    /// A redirect (3xx), which is never followed.
    #[error("the endpoint redirects ({0}); redirects are not followed")]
    Redirect(u16),
    /// Any other status that is not success (413, 5xx, other 4xx).
    #[error("the push service answered {0}")]
    Status(u16),
    /// No answer within [`PushConfig::timeout`].
    #[error("no answer in time")]
    Timeout,
    /// The host did not resolve.
    #[error("the endpoint's host does not resolve: {0}")]
    Resolve(String),
    /// Connecting, TLS or HTTP failed.
    #[error("connection failed: {0}")]
    Connect(String),
}

/// Why the relay refused to send to an endpoint, without connecting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The host is, or resolves to, an address the relay does not POST to.
    #[error("the endpoint is at a private or special address: {0}")]
    PrivateAddress(IpAddr),
    /// An `http://` endpoint while [`PushConfig::allow_http`] is off.
    #[error("plain http endpoints are not allowed")]
    Insecure,
    /// The subscription's `p256dh` is not a valid P-256 point.
    #[error("the Web Push subscription key is invalid")]
    InvalidKey,
}

/// One outcome, with what it is about.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PushReport {
    /// The recipient account the wake-up was for.
    pub account: String,
    /// The endpoint it was sent to (on [`PushOutcome::Dropped`], the one to delete).
    pub endpoint: PushEndpoint,
    /// What became of it.
    pub outcome: PushOutcome,
}
