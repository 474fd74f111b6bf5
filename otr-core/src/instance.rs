//! OTR v3 instance tags: which client of an account a message comes from or goes to.
//!
//! Version 2 has no instance tags: a remote account has at most one v2 conversation, which
//! this crate reports under [`InstanceTag::V2`].

use core::fmt;

use rand_core::CryptoRng;

/// A valid instance tag (>= 0x100; smaller values are reserved), or [`InstanceTag::V2`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceTag(u32);

impl InstanceTag {
    /// The smallest valid tag.
    pub const MIN: u32 = 0x100;

    /// Stands for the remote account's version 2 conversation, which has no instance tag
    /// (value 0, as libotr's master context; never a valid v3 tag, never put on the wire).
    pub const V2: Self = Self(0);

    /// Wraps `v` if it is a valid tag.
    pub fn new(v: u32) -> Option<Self> {
        (v >= Self::MIN).then_some(Self(v))
    }

    /// A random valid tag.
    pub fn random(rng: &mut (impl CryptoRng + ?Sized)) -> Self {
        loop {
            if let Some(t) = Self::new(rng.next_u32()) {
                return t;
            }
        }
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Whether this is [`InstanceTag::V2`].
    pub fn is_v2(self) -> bool {
        self == Self::V2
    }
}

impl fmt::Display for InstanceTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for InstanceTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceTag({:#x})", self.0)
    }
}
