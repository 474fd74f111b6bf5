//! Policies: which versions we speak and when we start, offer or require encryption.

use core::ops::BitOr;

/// A set of policy flags (values as in libotr, so they can be compared with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy(u32);

impl Policy {
    /// Speak OTR version 2, for clients that never got v3 (profanity, python-potr, old
    /// Pidgin). Off in the presets: v3 is chosen whenever both sides allow it, but query
    /// messages and whitespace tags are not authenticated, so an active attacker can strip
    /// the v3 offer and make two v3 clients that both allow v2 speak v2 (see
    /// `Event::Secure::version`, which says which version was negotiated).
    pub const ALLOW_V2: Self = Self(0x02);
    /// Speak OTR version 3.
    pub const ALLOW_V3: Self = Self(0x04);
    /// Never send or accept plaintext: messages wait for a private conversation.
    pub const REQUIRE_ENCRYPTION: Self = Self(0x08);
    /// Append a whitespace tag to plaintext, offering OTR to the peer.
    pub const SEND_WHITESPACE_TAG: Self = Self(0x10);
    /// Start the AKE when a whitespace tag is received.
    pub const WHITESPACE_START_AKE: Self = Self(0x20);
    /// Start over (send a query) when an OTR error message is received.
    pub const ERROR_START_AKE: Self = Self(0x40);

    /// Speak v3, but start nothing by ourselves. Add [`Policy::ALLOW_V2`] to any preset to
    /// also talk to v2-only clients.
    pub const MANUAL: Self = Self::ALLOW_V3;
    /// Offer OTR with whitespace tags and start it whenever the peer offers it too.
    pub const OPPORTUNISTIC: Self = Self(
        Self::ALLOW_V3.0
            | Self::SEND_WHITESPACE_TAG.0
            | Self::WHITESPACE_START_AKE.0
            | Self::ERROR_START_AKE.0,
    );
    /// Require encryption, and start it whenever possible.
    pub const ALWAYS: Self = Self(
        Self::ALLOW_V3.0
            | Self::REQUIRE_ENCRYPTION.0
            | Self::WHITESPACE_START_AKE.0
            | Self::ERROR_START_AKE.0,
    );

    /// The policy with exactly these raw bits (libotr's `OTRL_POLICY_*` values).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Policy {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}
