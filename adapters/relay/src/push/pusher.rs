//! The [`Pusher`]: coalescing per account, per-endpoint backoff, a bounded queue, and POSTs in
//! their own tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::http::{self, Post, PostError};
use super::webpush::{self, EncryptError};
use super::{
    DropReason, FailReason, PushConfig, PushEndpoint, PushOutcome, PushReport, RefuseReason, VapidKey,
    WAKE_PAYLOAD,
};

/// Above this many entries, the coalescing and backoff maps drop what has expired.
const PRUNE_AT: usize = 4096;

/// Sends content-free wake-ups to push endpoints without ever blocking its caller.
///
/// Create it inside a tokio runtime with [`Pusher::new`]; call [`wake`](Pusher::wake) when a
/// message is stored for an account with no live connection; act on each [`PushReport`] in
/// the callback (delete the endpoint on [`PushOutcome::Dropped`], count the rest). Dropping
/// the `Pusher` lets the queued wake-ups finish and then stops its tasks.
pub struct Pusher {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
}

struct Shared {
    config: PushConfig,
    vapid: VapidKey,
    tls: Arc<rustls::ClientConfig>,
    on_outcome: Box<dyn Fn(PushReport) + Send + Sync>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each (account, endpoint URL) was last woken (a POST queued), for coalescing.
    woken: HashMap<(String, String), Instant>,
    /// Endpoints backed off after failures, by URL.
    backoff: HashMap<String, Backoff>,
}

struct Backoff {
    until: Instant,
    failures: u32,
}

struct Job {
    account: String,
    endpoint: PushEndpoint,
}

/// What [`Pusher::wake`] did with a wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WakeStatus {
    /// A POST is queued; its outcome will be reported.
    Queued,
    /// The account was woken through this endpoint less than a window ago: merged into that
    /// wake-up, nothing sent.
    Coalesced,
    /// The endpoint is backed off after a failure: nothing sent (the next message after the
    /// backoff wakes the account again).
    BackingOff,
}

/// A wake-up that was declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WakeError {
    /// The queue is full ([`PushConfig::queue`]): nothing sent; a later wake may be.
    #[error("the push queue is full")]
    QueueFull,
    /// The pusher's tasks are gone (the runtime is shutting down).
    #[error("the pusher has stopped")]
    Stopped,
}

/// Why [`Pusher::probe`] did not accept an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Refused without connecting.
    #[error(transparent)]
    Refused(RefuseReason),
    /// The request failed.
    #[error(transparent)]
    Failed(FailReason),
    /// It answered, but not as a UnifiedPush endpoint.
    #[error("not a UnifiedPush endpoint")]
    NotUnifiedPush,
}

impl From<PostError> for ProbeError {
    fn from(e: PostError) -> Self {
        match e {
            PostError::Refused(r) => ProbeError::Refused(r),
            PostError::Failed(f) => ProbeError::Failed(f),
        }
    }
}

/// A [`Pusher`] that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// [`Pusher::new`] was called outside a tokio runtime.
    #[error("the pusher needs a tokio runtime")]
    NoRuntime,
    /// The default TLS configuration could not be built.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

impl Pusher {
    /// Starts the pusher's dispatcher on the current tokio runtime. `on_outcome` is called once
    /// per POST attempted, from the POST's task: keep it quick (send it to a channel, delete an
    /// endpoint).
    ///
    /// # Errors
    /// [`PushError::NoRuntime`] outside a tokio runtime; [`PushError::Tls`] if the default
    /// TLS configuration fails to build (with [`PushConfig::tls`] unset).
    pub fn new(
        config: PushConfig,
        vapid: VapidKey,
        on_outcome: impl Fn(PushReport) + Send + Sync + 'static,
    ) -> Result<Self, PushError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| PushError::NoRuntime)?;
        let tls = match &config.tls {
            Some(tls) => tls.clone(),
            None => default_tls()?,
        };
        let (queue, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            config,
            vapid,
            tls,
            on_outcome: Box::new(on_outcome),
            state: Mutex::new(State::default()),
        });
        runtime.spawn(dispatch(shared.clone(), rx));
        Ok(Pusher { shared, queue })
    }

    /// The policy this pusher was started with.
    pub fn config(&self) -> &PushConfig {
        &self.shared.config
    }

    /// Wakes `account` through `endpoint`: never blocks, never waits for the network.
    ///
    /// At most one POST per account and endpoint per [`PushConfig::window`]; later wakes in
    /// the window are merged into it ([`WakeStatus::Coalesced`]). With one endpoint per
    /// account that is one POST per account per window; an account with several devices calls
    /// `wake` once per device's endpoint, and each device is woken once per window. An
    /// endpoint backed off after a failure is skipped ([`WakeStatus::BackingOff`]).
    ///
    /// # Errors
    /// [`WakeError::QueueFull`] when the bounded queue is full, [`WakeError::Stopped`] when the
    /// runtime is gone; in both cases the account is not marked as woken.
    pub fn wake(&self, account: &str, endpoint: &PushEndpoint) -> Result<WakeStatus, WakeError> {
        let now = Instant::now();
        let window = self.shared.config.window;
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.woken.len() >= PRUNE_AT {
            state.woken.retain(|_, t| now.saturating_duration_since(*t) < window);
        }
        if state.backoff.len() >= PRUNE_AT {
            state.backoff.retain(|_, b| b.until > now);
        }
        let key = (account.to_owned(), endpoint.url().to_owned());
        if let Some(t) = state.woken.get(&key) {
            if now.saturating_duration_since(*t) < window {
                return Ok(WakeStatus::Coalesced);
            }
        }
        if let Some(b) = state.backoff.get(endpoint.url()) {
            if b.until > now {
                return Ok(WakeStatus::BackingOff);
            }
        }
        let job = Job { account: account.to_owned(), endpoint: endpoint.clone() };
        match self.queue.try_send(job) {
            Ok(()) => {
                state.woken.insert(key, now);
                Ok(WakeStatus::Queued)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(WakeError::QueueFull),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(WakeError::Stopped),
        }
    }

    /// How much longer `endpoint` is backed off, if it is.
    pub fn backing_off(&self, endpoint: &PushEndpoint) -> Option<Duration> {
        let state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let b = state.backoff.get(endpoint.url())?;
        let left = b.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Forgets the coalescing and backoff state of `account` at `endpoint`, for when a client
    /// registers its endpoint again (the next wake is sent at once).
    pub fn forget(&self, account: &str, endpoint: &PushEndpoint) {
        let mut state = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.woken.remove(&(account.to_owned(), endpoint.url().to_owned()));
        state.backoff.remove(endpoint.url());
    }

    /// Checks at registration that a UnifiedPush endpoint is one: the discovery GET of the
    /// UnifiedPush server protocol must answer 2xx with `{"unifiedpush":{"version":1}}`
    /// (only the `"unifiedpush"` key is looked for). The same address policy, timeout and
    /// no-redirect rule as a wake-up apply. Web Push endpoints (with keys) do not answer
    /// this GET and are not probed: `Ok` at once. This keeps a client from turning the relay
    /// into a POST cannon against arbitrary URLs.
    ///
    /// # Errors
    /// [`ProbeError`]: refused (address, scheme), failed (network, status, redirect, timeout),
    /// or an answer that is not UnifiedPush's.
    pub async fn probe(&self, endpoint: &PushEndpoint) -> Result<(), ProbeError> {
        if endpoint.web_push_keys().is_some() {
            return Ok(());
        }
        let config = &self.shared.config;
        let p = &endpoint.parsed;
        let run = async {
            if !p.https && !config.allow_http {
                return Err(ProbeError::Refused(RefuseReason::Insecure));
            }
            let addrs = http::resolve(p, config.allow_private).await.map_err(ProbeError::from)?;
            let (answer, body) = http::get(p, &addrs, &self.shared.tls).await.map_err(ProbeError::from)?;
            match answer.status.as_u16() {
                200..=299 => {}
                s @ 300..=399 => return Err(ProbeError::Failed(FailReason::Redirect(s))),
                s => return Err(ProbeError::Failed(FailReason::Status(s))),
            }
            if body.windows(13).any(|w| w == b"\"unifiedpush\"") {
                Ok(())
            } else {
                Err(ProbeError::NotUnifiedPush)
            }
        };
        tokio::time::timeout(config.timeout, run)
            .await
            .unwrap_or(Err(ProbeError::Failed(FailReason::Timeout)))
    }

    /// The VAPID public key (uncompressed P-256 point) clients pass as `applicationServerKey`.
    pub fn vapid_public_key(&self) -> &[u8] {
        self.shared.vapid.public_key()
    }
}

fn default_tls() -> Result<Arc<rustls::ClientConfig>, PushError> {
    let mut roots = rustls::RootCertStore::empty();
    // Certificates that do not parse are skipped; with no roots at all every https POST fails
    // with a TLS error, reported per wake-up.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(shared.config.concurrency.max(1)));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome =
                match tokio::time::timeout(shared.config.timeout, deliver(&shared, &job.endpoint)).await {
                    Ok(outcome) => outcome,
                    Err(_) => PushOutcome::Failed(FailReason::Timeout),
                };
            drop(permit);
            shared.record(&job.endpoint, &outcome);
            (shared.on_outcome)(PushReport { account: job.account, endpoint: job.endpoint, outcome });
        });
    }
}

async fn deliver(shared: &Shared, endpoint: &PushEndpoint) -> PushOutcome {
    let config = &shared.config;
    let p = &endpoint.parsed;
    if !p.https && !config.allow_http {
        return PushOutcome::Refused(RefuseReason::Insecure);
    }
    let (body, authorization) = match endpoint.web_push_keys() {
        None => (WAKE_PAYLOAD.to_vec(), None),
        Some((p256dh, auth)) => match webpush::encrypt(p256dh, auth, WAKE_PAYLOAD) {
            Ok(body) => {
                let subject = config.vapid_subject.as_deref();
                let Some(authz) = shared.vapid.authorization(&p.origin, subject, SystemTime::now()) else {
                    return PushOutcome::Failed(FailReason::Connect("cannot sign the VAPID token".into()));
                };
                (body, Some(authz))
            }
            Err(EncryptError::BadKey) => return PushOutcome::Refused(RefuseReason::InvalidKey),
            Err(EncryptError::Internal) => {
                return PushOutcome::Failed(FailReason::Connect("cannot encrypt the wake-up".into()));
            }
        },
    };
    let post =
        Post { encrypted: authorization.is_some(), body, ttl_secs: config.ttl.as_secs(), authorization };
    let answer = match http::resolve(p, config.allow_private).await {
        Ok(addrs) => http::post(p, &addrs, post, &shared.tls).await,
        Err(e) => Err(e),
    };
    match answer {
        Err(PostError::Refused(r)) => PushOutcome::Refused(r),
        Err(PostError::Failed(f)) => PushOutcome::Failed(f),
        Ok(a) => match a.status.as_u16() {
            200..=299 => PushOutcome::Delivered,
            404 => PushOutcome::Dropped(DropReason::NotFound),
            410 => PushOutcome::Dropped(DropReason::Gone),
            429 => PushOutcome::Failed(FailReason::RateLimited { retry_after: a.retry_after }),
            s @ 300..=399 => PushOutcome::Failed(FailReason::Redirect(s)),
            s => PushOutcome::Failed(FailReason::Status(s)),
        },
    }
}

impl Shared {
    /// Updates the endpoint's backoff after an outcome.
    fn record(&self, endpoint: &PushEndpoint, outcome: &PushOutcome) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            PushOutcome::Failed(reason) => {
                let failures = state.backoff.get(endpoint.url()).map_or(0, |b| b.failures).saturating_add(1);
                let max = self.config.backoff_max;
                let delay = match reason {
                    FailReason::RateLimited { retry_after: Some(d) } => (*d).min(max),
                    _ => {
                        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
                        self.config.backoff_base.saturating_mul(factor).min(max)
                    }
                };
                let until = Instant::now() + delay;
                state.backoff.insert(endpoint.url().to_owned(), Backoff { until, failures });
            }
            PushOutcome::Delivered | PushOutcome::Dropped(_) => {
                state.backoff.remove(endpoint.url());
            }
            PushOutcome::Refused(_) => {}
        }
    }
}
