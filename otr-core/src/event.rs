//! What a [`Session`](crate::Session) tells the application.

use core::fmt;

use crate::crypto::dsa::Fingerprint;
use crate::instance::InstanceTag;

/// A secure session id: both sides of one AKE see the same value, and people may compare it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ssid(pub [u8; 8]);

/// 16 lower-case hex digits.
impl fmt::Display for Ssid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Ssid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ssid({self})")
    }
}

/// Which half of the [`Ssid`] to show in bold. The spec: the side that sent the Reveal
/// Signature (the one that started the exchange with a D-H Commit) shows the first 32 bits in
/// bold, the other side the second 32 bits; each person reads out the bold half and the other
/// finds it in their own display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsidHalf {
    /// The first 4 bytes (8 hex digits): we sent the Reveal Signature.
    First,
    /// The last 4 bytes (8 hex digits): the peer sent the Reveal Signature.
    Second,
}

impl Ssid {
    /// The two halves as 8 hex digits each, the one to show in bold marked by `bold`: for
    /// example `[4f1c02aa] 9e0d77b3` (with `SsidHalf::First`).
    pub fn marked(&self, bold: SsidHalf) -> String {
        let hex = self.to_string();
        let (first, second) = hex.split_at(8);
        match bold {
            SsidHalf::First => format!("[{first}] {second}"),
            SsidHalf::Second => format!("{first} [{second}]"),
        }
    }
}

/// A caller-chosen monotonic time in milliseconds. The engine never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `ms` milliseconds later.
    pub fn plus_millis(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }
}

/// A string to hand to the network, addressed to the remote account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The transport message (an OTR message or a fragment of one, or plaintext).
    pub message: String,
}

/// Something the application should act on or show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A private conversation began with `instance`, or was refreshed by a new AKE.
    /// Show the fingerprint (and whether it is verified) and, optionally, the ssid.
    Secure {
        /// The remote instance.
        instance: InstanceTag,
        /// The remote's long-term key fingerprint, authenticated by the AKE.
        fingerprint: Fingerprint,
        /// The secure session id.
        ssid: Ssid,
        /// Which half of `ssid` to show in bold (see [`SsidHalf`] and [`Ssid::marked`]).
        bold: SsidHalf,
        /// True when the conversation was already private with this same long-term key (a new
        /// AKE refreshed its keys). A new AKE that authenticated a *different* key is not a
        /// refresh: [`Event::FingerprintChanged`] comes first and this is false.
        refreshed: bool,
        /// The OTR protocol version negotiated: 3, or 2 with an older client (which has no
        /// instance tags, so `instance` is [`InstanceTag::V2`], and no extra symmetric key).
        /// Worth showing: see the crate docs on version downgrades.
        version: u16,
    },
    /// The private conversation with `instance` was replaced by one with a different long-term
    /// key: a new key exchange (which anyone on the network can start) completed with
    /// `fingerprint`, not `previous`. Treat it as a new, unverified contact until the user
    /// verifies it (SMP or fingerprints); an [`Event::Secure`] with `refreshed: false`
    /// follows. Texts that were waiting for the old conversation are not sent to the new
    /// key: they come back in [`Event::HeldReturned`].
    FingerprintChanged {
        /// The remote instance.
        instance: InstanceTag,
        /// The key of the conversation that was replaced.
        previous: Fingerprint,
        /// The key the new exchange authenticated.
        fingerprint: Fingerprint,
    },
    /// Texts the user typed for the private conversation with `intended`, held while a new key
    /// exchange ran, that were **not sent**: the exchange authenticated another key (see
    /// [`Event::FingerprintChanged`]). Show them to the user; send them again only if the user
    /// decides to.
    HeldReturned {
        /// The key the texts were typed for.
        intended: Fingerprint,
        /// The texts, oldest first.
        texts: Vec<String>,
    },
    /// A message for the user. `encrypted` says whether it arrived in a private conversation:
    /// never show a plaintext message as private. Text may be HTML if the peer's client sends
    /// HTML (libotr clients often do).
    Message {
        /// The remote instance for encrypted messages; `None` for plaintext.
        instance: Option<InstanceTag>,
        /// The text.
        text: String,
        /// Whether it arrived encrypted and authenticated.
        encrypted: bool,
    },
    /// The remote ended the private conversation; sending is refused until the user ends it
    /// too (and so returns to plaintext) or a new AKE completes.
    RemoteEnded {
        /// The remote instance.
        instance: InstanceTag,
    },
    /// We ended the private conversation (or acknowledged the remote's end) with `instance`.
    Ended {
        /// The remote instance.
        instance: InstanceTag,
    },
    /// A plaintext message arrived while the conversation is private or our policy requires
    /// encryption. It is not a message of the private conversation; show it with a warning,
    /// if at all.
    UnencryptedReceived {
        /// The text, whitespace tag removed.
        text: String,
    },
    /// The remote used the extra symmetric key: here is the same 32-byte key it got, with the
    /// use and use data it sent along.
    ExtraSymmetricKey {
        /// The remote instance.
        instance: InstanceTag,
        /// The key (secret: zeroized on drop).
        key: zeroize::Zeroizing<[u8; 32]>,
        /// What the key is for, as the peer's application says.
        use_: u32,
        /// Use-specific data (e.g. a file name).
        usedata: Vec<u8>,
    },
    /// The peer started SMP; answer with [`Session::smp_respond`](crate::Session::smp_respond)
    /// (or abort). Show the question, if any.
    SmpRequest {
        /// The remote instance.
        instance: InstanceTag,
        /// The peer's question (from the peer: untrusted text).
        question: Option<String>,
    },
    /// SMP succeeded: both sides used the same secret, so `fingerprint` really is the key of
    /// the person who knows it. An application may now mark it verified.
    SmpSucceeded {
        /// The remote instance.
        instance: InstanceTag,
        /// The fingerprint this run verified.
        fingerprint: Fingerprint,
    },
    /// SMP completed but the secrets differed.
    SmpFailed {
        /// The remote instance.
        instance: InstanceTag,
    },
    /// SMP was aborted: by the peer or an unexpected message (`cheated` false), or because a
    /// check failed (`cheated` true). Nothing was verified.
    SmpAborted {
        /// The remote instance.
        instance: InstanceTag,
        /// Whether a check failed (a broken or malicious peer).
        cheated: bool,
    },
    /// The peer could not read what we sent (it lost its session, e.g. its client restarted):
    /// these texts, sent in the last minute, may not have arrived. A new key exchange was
    /// started; the user may want to resend them once the conversation is private again.
    MaybeNotDelivered {
        /// The remote instance.
        instance: InstanceTag,
        /// The texts, oldest first.
        texts: Vec<String>,
    },
    /// The remote sent an OTR error message.
    ErrorReceived {
        /// Its human-readable text (from the peer: untrusted).
        text: String,
    },
    /// A version 2 key exchange authenticated a key that already held a version 3
    /// conversation in this session: that client speaks v3, so someone on the network
    /// stripped the v3 offer. The v2 conversation was refused (nothing is private). Tell the
    /// user the network is tampering with the conversation; starting OTR again may help.
    DowngradeRefused {
        /// The remote's fingerprint (authenticated by the v2 exchange).
        fingerprint: Fingerprint,
    },
}
