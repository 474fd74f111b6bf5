//! `otr peer --relay`: the transport messages travel through an otr-relay instead of `net`
//! lines. The peer logs in, prints `online <account>`, sends what the session transmits to
//! `--peer`, hands what `--peer` sends to the session (acknowledging each delivery only
//! after the conversation was saved, so a crash in between means a redelivery, never a
//! loss), and when the connection drops prints `offline <reason>` and logs in again, with
//! exponential backoff and jitter. Commands keep working while offline: what they transmit
//! waits for the next login.

use std::process::ExitCode;
use std::time::Duration;

use otr_relay_client::tokio_client::{Client, Inbox};
use otr_relay_client::{ClientConfig, ClientError, PushRegistration};
use rand_core::Rng;
use tokio::sync::mpsc;

use super::{Args, Peer, one_line};

/// Reconnection delays: from 250 ms, doubling, at most 10 s, each with ±50 % jitter so that
/// clients cut off together do not come back together.
const FIRST_DELAY_MS: u64 = 250;
const MAX_DELAY_MS: u64 = 10_000;

/// How to reach the relay, from the command line.
pub(super) struct Relay {
    config: ClientConfig,
    peer: String,
}

/// Why the conversation loop stopped.
enum Stop {
    /// `quit` or the end of stdin.
    Quit,
    /// The connection failed; log in again.
    Offline(String),
}

impl Relay {
    /// `None` without `--relay`; an error when its companions are missing or unreadable.
    pub(super) fn from_args(args: &Args) -> Option<Result<Self, String>> {
        let server = args.relay.as_ref()?;
        let make = || {
            let pin = args.pin.ok_or("--relay needs --pin")?;
            let path = args.secret_file.as_ref().ok_or("--relay needs --secret-file")?;
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let secret = text.lines().next().unwrap_or_default();
            if secret.is_empty() {
                return Err(format!("{} is empty; its first line must be the relay secret", path.display()));
            }
            let mut config = ClientConfig::new(server, pin, &args.account, secret);
            config.push = args.push_endpoint.as_ref().map(|url| PushRegistration {
                endpoint: url.clone(),
                p256dh: None,
                auth: None,
            });
            Ok(Self { config, peer: args.peer.clone() })
        };
        Some(make())
    }

    /// Runs the peer over the relay until `quit` or the end of stdin.
    pub(super) fn run(self, mut peer: Peer) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("otr peer: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
        // Stdin is read on a thread of its own; lines arrive over a channel.
        let (tx, mut lines) = mpsc::channel::<String>(64);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::stdin().lock().split(b'\n') {
                let Ok(line) = line else { break };
                if tx.blocking_send(String::from_utf8_lossy(&line).into_owned()).is_err() {
                    break;
                }
            }
        });
        runtime.block_on(self.serve(&mut peer, &mut lines))
    }

    async fn serve(&self, peer: &mut Peer, lines: &mut mpsc::Receiver<String>) -> ExitCode {
        let mut delay = FIRST_DELAY_MS;
        let mut next_id = 1u64;
        let mut config = self.config.clone();
        loop {
            match Client::connect(config.clone()).await {
                Ok((client, inbox)) => {
                    delay = FIRST_DELAY_MS;
                    peer.line(&format!("online {}", self.config.account));
                    match self.converse(peer, lines, &client, inbox, &mut next_id).await {
                        Stop::Quit => {
                            client.close().await;
                            return ExitCode::SUCCESS;
                        }
                        Stop::Offline(reason) => peer.line(&format!("offline {}", one_line(&reason))),
                    }
                }
                // A wrong pin or account will not fix itself: say so and stop.
                Err(e @ (ClientError::PinMismatch { .. } | ClientError::Login { .. })) => {
                    peer.line(&format!("error {}", one_line(&e.to_string())));
                    return ExitCode::from(1);
                }
                // The relay refused the push endpoint: say so, and go on without push.
                Err(ClientError::PushRefused { message }) => {
                    peer.line(&format!("error push endpoint refused: {}", one_line(&message)));
                    config.push = None;
                    continue;
                }
                Err(e) => peer.line(&format!("# cannot reach the relay: {}", one_line(&e.to_string()))),
            }
            let jittered = delay / 2 + peer.rng.next_u64() % delay.max(1);
            delay = (delay * 2).min(MAX_DELAY_MS);
            if let Stop::Quit = offline_wait(peer, lines, Duration::from_millis(jittered)).await {
                return ExitCode::SUCCESS;
            }
        }
    }

    /// One connection's life: commands, deliveries, timers and sends, until it fails.
    async fn converse(
        &self,
        peer: &mut Peer,
        lines: &mut mpsc::Receiver<String>,
        client: &Client,
        mut inbox: Inbox,
        next_id: &mut u64,
    ) -> Stop {
        loop {
            if let Err(reason) = self.flush(peer, client, next_id).await {
                return Stop::Offline(reason);
            }
            let timer = peer.session.poll_timeout().map(|due| peer.instant_of(due));
            tokio::select! {
                line = lines.recv() => match line {
                    Some(line) if peer.step(&line) => {}
                    _ => return Stop::Quit,
                },
                delivery = inbox.next() => match delivery {
                    Some(Ok(d)) => {
                        if d.from == self.peer {
                            peer.deliver(&d.body);
                        }
                        // Strangers' messages are acknowledged too, or they would hold back
                        // the peer's (the relay's delivery window).
                        if let Err(e) = client.ack(d.seq).await {
                            return Stop::Offline(e.to_string());
                        }
                    }
                    Some(Err(e)) => return Stop::Offline(e.to_string()),
                    None => return Stop::Offline("the relay closed the connection".into()),
                },
                () = sleep_until(timer) => peer.tick(),
            }
        }
    }

    /// Sends what waits in the outbox, oldest first; a message the relay refuses is dropped
    /// with an `error` line, a broken connection leaves the rest waiting.
    async fn flush(&self, peer: &mut Peer, client: &Client, next_id: &mut u64) -> Result<(), String> {
        while let Some(msg) = peer.outbox.as_ref().and_then(|queue| queue.front().cloned()) {
            let id = *next_id;
            *next_id += 1;
            match client.send(&self.peer, id, &msg).await {
                Ok(()) => {}
                Err(ClientError::Refused { message, .. }) => {
                    peer.line(&format!("error the relay refused a message: {}", one_line(&message)));
                }
                Err(e) => return Err(e.to_string()),
            }
            peer.outbox.as_mut().map(std::collections::VecDeque::pop_front);
        }
        Ok(())
    }
}

/// Waits `delay` while offline, still obeying commands (their transmits wait in the outbox).
async fn offline_wait(peer: &mut Peer, lines: &mut mpsc::Receiver<String>, delay: Duration) -> Stop {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        let timer = peer.session.poll_timeout().map(|due| peer.instant_of(due));
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) if peer.step(&line) => {}
                _ => return Stop::Quit,
            },
            () = sleep_until(timer) => peer.tick(),
            () = tokio::time::sleep_until(deadline) => return Stop::Offline(String::new()),
        }
    }
}

/// Sleeps until `at`, or forever without a timer.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
