//! OTR v3 instance tags: which client of an account a message comes from or goes to.

use core::fmt;

use rand_core::CryptoRng;

/// A valid instance tag (>= 0x100; smaller values are reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceTag(u32);

impl InstanceTag {
    /// The smallest valid tag.
    pub const MIN: u32 = 0x100;

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
