//! The chat client's logic, apart from the terminal: a [`Chat`] takes the user's lines
//! ([`Chat::input`]) and the conversation's updates ([`Chat::step`]), keeps trust in the
//! encrypted key store, and produces [`Output`] for the screen. [`super`] wires it to
//! rustyline and the relay; `cli/tests/chat_client.rs` drives two of them through a relay.

use std::collections::VecDeque;

use otr::keystore::{ContactId, Observation, Seen, Trust};
use otr::terminal::Escaped;
use otr::{Event, Fingerprint, Sent, SnapshotDir, Store};
use otr_futures::{Conversation, Framing, Update};
use zeroize::Zeroizing;

/// The protocol name under which the client's accounts and contacts live in the key store.
pub const PROTOCOL: &str = "otr-relay";

/// Where the conversation stands, as the prompt shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not private: nothing is sent (the client requires encryption).
    NotPrivate,
    /// Private, but the peer's fingerprint is not verified.
    Unverified,
    /// Private, with a fingerprint verified by SMP or by the user.
    Verified,
    /// The peer ended the private conversation; `/end` to close it on this side.
    Finished,
}

/// Something for the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A line to print.
    Line(Zeroizing<String>),
    /// Clear the screen and the terminal's scrollback (ephemeral mode, at the end).
    Clear,
}

/// What the caller does after an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// The user asked to quit.
    Quit,
}

/// Why the client stops.
#[derive(Debug, thiserror::Error)]
pub enum ChatError<E: std::error::Error + 'static> {
    /// The conversation (transport, relay) ended.
    #[error(transparent)]
    Conversation(#[from] otr_futures::Error<E>),
    /// The key store could not be saved.
    #[error("the key store: {0}")]
    Store(#[from] otr::StoreError),
    /// The key store refused an update.
    #[error("the key store: {0}")]
    Keystore(#[from] otr::KeystoreError),
}

/// The interactive client's state: one conversation with one peer.
pub struct Chat<T, F: Framing, R> {
    conv: Conversation<T, F, R>,
    store: Store,
    contact: ContactId,
    peer: String,
    ephemeral: bool,
    /// Every line shown since the start (or the last wipe): the screen buffer this client owns.
    screen: Vec<Zeroizing<String>>,
    /// Lines and commands not yet given to the terminal.
    outbox: VecDeque<Output>,
    /// `/smp QUESTION` was typed: the next line is the secret.
    awaiting_secret: Option<Option<String>>,
    remote_ended: bool,
    /// Where the private conversation is saved after every change (none when ephemeral).
    snapshots: Option<SnapshotDir>,
}

const HELP: &str = "commands: /smp [QUESTION] (then type the secret), /answer SECRET, /fingerprint, \
                    /trust, /start, /end, /quit; anything else is a message";

impl<T, F, R> Chat<T, F, R>
where
    T: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
    F: Framing,
    R: rand_core::CryptoRng,
{
    /// A client for `conv` (whose session belongs to `account`), talking to `peer`, keeping
    /// trust in `store`. `ephemeral`: keep no history, wipe the screen when the private
    /// conversation ends.
    pub fn new(
        conv: Conversation<T, F, R>,
        store: Store,
        account: &str,
        peer: &str,
        ephemeral: bool,
    ) -> Self {
        let mut chat = Self {
            conv,
            store,
            contact: ContactId::new(account, PROTOCOL, peer),
            peer: peer.to_string(),
            ephemeral,
            screen: Vec::new(),
            outbox: VecDeque::new(),
            awaiting_secret: None,
            remote_ended: false,
            snapshots: None,
        };
        chat.show(format!("You are {account}; your fingerprint {}", chat.own_fingerprint().to_human()));
        chat.show(HELP.to_string());
        chat
    }

    /// Saves the private conversation in `dir` after every change, so that a restarted client
    /// resumes it (never call it for an ephemeral client: nothing may reach the disk).
    pub fn keep_in(mut self, dir: SnapshotDir) -> Self {
        self.snapshots = Some(dir);
        self
    }

    /// Saves the private conversation, or deletes the saved one when there is none; a failure
    /// is shown, and the conversation goes on in memory.
    fn persist(&mut self) {
        let Some(dir) = &self.snapshots else { return };
        let snapshot = match self.conv.session().private_with() {
            Some(_) => self.conv.snapshot().map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        };
        let result = snapshot.and_then(|snapshot| {
            let bytes = snapshot.as_ref().map(otr::Snapshot::as_bytes);
            dir.keep(&self.contact.account, &self.peer, bytes, &mut otr::system_rng())
                .map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            self.show(format!("(the conversation could not be saved: {e})"));
        }
    }

    fn own_fingerprint(&self) -> Fingerprint {
        self.conv.session().identity().fingerprint()
    }

    /// The peer's fingerprint in the private conversation, if there is one.
    pub fn peer_fingerprint(&self) -> Option<Fingerprint> {
        self.conv.session().private_with().map(|(_, key, _)| key.fingerprint())
    }

    /// Where the conversation stands.
    pub fn status(&self) -> Status {
        if self.remote_ended {
            return Status::Finished;
        }
        match self.peer_fingerprint() {
            None => Status::NotPrivate,
            Some(fp) => match self.store.keystore().trust(&self.contact, &fp) {
                Some(t) if t.is_verified() => Status::Verified,
                _ => Status::Unverified,
            },
        }
    }

    /// The prompt, saying plainly whether the conversation is private and verified.
    pub fn prompt(&self) -> String {
        if self.awaiting_secret.is_some() {
            return "SMP secret (not sent, only compared)> ".into();
        }
        let state = match self.status() {
            Status::NotPrivate => "NOT PRIVATE",
            Status::Unverified => "private, UNVERIFIED",
            Status::Verified => "private, verified",
            Status::Finished => "ENDED by peer: /end",
        };
        format!("[{state}] {}> ", self.peer)
    }

    /// The key store (tests/chat_client.rs checks what was saved).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The lines this client holds for the screen (what ephemeral mode wipes).
    pub fn screen(&self) -> &[Zeroizing<String>] {
        &self.screen
    }

    /// Takes what the terminal should show now.
    pub fn take_output(&mut self) -> Vec<Output> {
        self.outbox.drain(..).collect()
    }

    fn show(&mut self, line: String) {
        let line = Zeroizing::new(line);
        self.screen.push(line.clone());
        self.outbox.push_back(Output::Line(line));
    }

    /// Zeroes every line held and tells the terminal to clear (ephemeral mode).
    fn wipe(&mut self) {
        self.screen.clear(); // Zeroizing: each line is zeroed as it drops
        self.outbox.clear();
        self.outbox.push_back(Output::Clear);
        self.show("(ephemeral: the conversation was wiped from this screen)".into());
    }

    /// Handles one line the user typed.
    ///
    /// # Errors
    /// When the conversation ends or the key store cannot be saved.
    pub async fn input(&mut self, line: &str) -> Result<Flow, ChatError<F::Error>> {
        let flow = self.obey(line).await;
        self.persist();
        flow
    }

    async fn obey(&mut self, line: &str) -> Result<Flow, ChatError<F::Error>> {
        if let Some(question) = self.awaiting_secret.take() {
            let secret = Zeroizing::new(line.trim().to_string());
            self.conv.smp_start(question.as_deref(), secret.as_bytes()).await?;
            self.show(format!("(SMP started; waiting for {} to answer)", self.peer));
            return Ok(Flow::Continue);
        }
        let (cmd, arg) = match line.strip_prefix('/') {
            Some(rest) => rest.split_once(' ').map_or((rest, ""), |(c, a)| (c, a.trim())),
            None => ("", line),
        };
        match cmd {
            "" => self.send(arg).await?,
            "smp" => {
                if self.peer_fingerprint().is_none() {
                    self.show("(SMP needs a private conversation first)".into());
                } else {
                    self.awaiting_secret = Some((!arg.is_empty()).then(|| arg.to_string()));
                    self.show("Type the secret you both know (it is compared, never sent):".into());
                }
            }
            "answer" => match self.conv.smp_respond(arg.as_bytes()).await {
                Err(otr_futures::Error::Send(_)) => self.show("(no SMP question to answer)".into()),
                r => r?,
            },
            "fingerprint" => {
                self.show(format!("yours: {}", self.own_fingerprint().to_human()));
                match self.peer_fingerprint() {
                    Some(fp) => {
                        let trust = self.store.keystore().trust(&self.contact, &fp).unwrap_or_default();
                        self.show(format!("{}: {} ({})", self.peer, fp.to_human(), trust_name(trust)));
                    }
                    None => self.show(format!("{}: unknown until the conversation is private", self.peer)),
                }
            }
            "trust" => match self.peer_fingerprint() {
                Some(fp) => {
                    self.store.keystore_mut().set_trust(&self.contact, &fp, Trust::VerifiedManual)?;
                    self.store.save(&mut otr::system_rng())?;
                    self.show(format!(
                        "{}'s fingerprint {} is now trusted (by you)",
                        self.peer,
                        fp.to_human()
                    ));
                }
                None => self.show("(nothing to trust: the conversation is not private)".into()),
            },
            "start" => self.conv.start().await?,
            "end" => {
                self.conv.end().await?;
                self.remote_ended = false; // back to not private at once; the event follows
            }
            "quit" => return Ok(Flow::Quit),
            _ => self.show(HELP.to_string()),
        }
        Ok(Flow::Continue)
    }

    async fn send(&mut self, text: &str) -> Result<(), ChatError<F::Error>> {
        if text.is_empty() {
            return Ok(());
        }
        match self.conv.send(text).await {
            Ok(Sent::Encrypted) => self.show(format!("me: {text}")),
            Ok(_) => self.show(format!("me (held until private, then sent encrypted): {text}")),
            Err(otr_futures::Error::Send(e)) => self.show(format!("(not sent: {e})")),
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Waits for the next update of the conversation and shows it. Cancel-safe.
    ///
    /// # Errors
    /// When the conversation ends (transport closed, relay refusal) or the store fails.
    pub async fn step(&mut self) -> Result<(), ChatError<F::Error>> {
        let update = self.conv.next_event().await?;
        // Saved before anything is shown: a crash after a text was shown must not let the
        // restored conversation accept it again.
        self.persist();
        match update {
            Update::Event(e) => self.on_event(e)?,
            Update::Refused(e) => {
                self.show(format!("(a message from {} could not be read: {})", self.peer, Escaped(&e)))
            }
            _ => {}
        }
        Ok(())
    }

    fn on_event(&mut self, e: Event) -> Result<(), ChatError<F::Error>> {
        let peer = self.peer.clone();
        // The spec: read out the bracketed (bold) half of the session id, compare the other.
        let session_id = match &e {
            Event::Secure { ssid, bold, .. } => format!("; session id {}", ssid.marked(*bold)),
            _ => String::new(),
        };
        if let Some(obs) = self.store.keystore_mut().observe(&self.contact, &e)? {
            self.store.save(&mut otr::system_rng())?;
            match obs {
                Observation::Seen { fingerprint, seen } => {
                    let fp = fingerprint.to_human();
                    match seen {
                        Seen::New => self.show(format!(
                            "Private conversation with {peer}. First time: fingerprint {fp} is UNVERIFIED; \
                             verify with /smp, or compare it with {peer} and /trust{session_id}"
                        )),
                        Seen::Known { trust } => self.show(format!(
                            "Private conversation with {peer}, fingerprint {fp} ({}){session_id}",
                            trust_name(trust)
                        )),
                        Seen::Changed { .. } => self.show(format!(
                            "WARNING: {peer}'s fingerprint CHANGED to {fp} (UNVERIFIED). \
                             Verify it before you trust this conversation"
                        )),
                    }
                }
                Observation::Verified { fingerprint } => {
                    self.show(format!(
                        "SMP succeeded: {peer}'s fingerprint {} is verified",
                        fingerprint.to_human()
                    ));
                }
            }
            return Ok(());
        }
        // Below, everything the peer wrote is Escaped: its control characters cannot draw on
        // the terminal (a fake line, an erased one).
        match e {
            Event::Secure { .. } | Event::SmpSucceeded { .. } => {}
            Event::Message { text, encrypted: true, .. } => self.show(format!("{peer}: {}", Escaped(&text))),
            Event::Message { text, encrypted: false, .. } => {
                self.show(format!("{peer} (NOT ENCRYPTED): {}", Escaped(&text)))
            }
            Event::UnencryptedReceived { text } => self.show(format!(
                "(an unencrypted message from {peer} was not shown as part of the conversation: {})",
                Escaped(&text)
            )),
            Event::SmpRequest { question, .. } => match question {
                Some(q) => {
                    self.show(format!("{peer} asks (SMP): \"{}\"; answer with /answer SECRET", Escaped(&q)))
                }
                None => self.show(format!("{peer} wants to verify you (SMP); answer with /answer SECRET")),
            },
            Event::SmpFailed { .. } => {
                self.show("SMP FAILED: the secrets differ; nothing was verified".into())
            }
            Event::SmpAborted { cheated, .. } => {
                self.show(format!("SMP aborted{}", if cheated { " (a check failed!)" } else { "" }))
            }
            Event::ExtraSymmetricKey { use_, .. } => {
                self.show(format!("({peer} derived the extra symmetric key, use {use_})"))
            }
            Event::RemoteEnded { .. } => {
                self.remote_ended = true;
                self.private_ended(format!(
                    "{peer} ended the private conversation; type /end to close it here"
                ));
            }
            Event::Ended { .. } => {
                self.remote_ended = false;
                self.private_ended("Private conversation ended".into());
            }
            Event::FingerprintChanged { previous, .. } => self.show(format!(
                "WARNING: a new key exchange replaced {peer}'s key {}: this is NOT the conversation you verified",
                previous.to_human()
            )),
            Event::HeldReturned { texts, .. } => {
                for text in texts {
                    self.show(format!("NOT SENT (the key changed while it waited): {}", Escaped(&text)))
                }
            }
            Event::MaybeNotDelivered { texts, .. } => {
                self.show(format!("({} recent messages may not have arrived; resend them)", texts.len()))
            }
            Event::ErrorReceived { text } => {
                self.show(format!("({peer}'s client reports an OTR error: {})", Escaped(&text)))
            }
            other => self.show(format!("({})", Escaped(format_args!("{other:?}")))),
        }
        Ok(())
    }

    fn private_ended(&mut self, line: String) {
        if self.ephemeral {
            self.wipe();
        }
        self.show(line);
    }
}

fn trust_name(t: Trust) -> &'static str {
    match t {
        Trust::Unverified => "UNVERIFIED",
        Trust::VerifiedSmp => "verified by SMP",
        Trust::VerifiedManual => "verified by you",
    }
}
