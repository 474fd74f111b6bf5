//! TLV records carried after the NUL in a data message's plaintext.

use crate::wire::{Reader, Writer};

/// TLV types.
pub mod kind {
    /// Padding, ignored.
    #[allow(dead_code, reason = "documents the type; received padding needs no code")]
    pub const PADDING: u16 = 0;
    /// The sender has ended the private conversation.
    pub const DISCONNECTED: u16 = 1;
    /// SMP message 1.
    pub const SMP1: u16 = 2;
    /// SMP message 2.
    pub const SMP2: u16 = 3;
    /// SMP message 3.
    pub const SMP3: u16 = 4;
    /// SMP message 4.
    pub const SMP4: u16 = 5;
    /// SMP abort.
    pub const SMP_ABORT: u16 = 6;
    /// SMP message 1 with a question.
    pub const SMP1Q: u16 = 7;
    /// Extra symmetric key.
    pub const EXTRA_SYMMETRIC_KEY: u16 = 8;
}

/// One type-length-value record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    /// The record type (see [`kind`]).
    pub kind: u16,
    /// The value bytes.
    pub value: Vec<u8>,
}

impl Tlv {
    /// A record of `kind` holding `value`.
    pub fn new(kind: u16, value: Vec<u8>) -> Self {
        Self { kind, value }
    }
}

/// Splits a decrypted plaintext into the message (before the first NUL) and its TLVs.
///
/// A truncated trailing record is ignored, as libotr does: the plaintext is authenticated,
/// so this only tolerates a sloppy peer.
pub fn split_plaintext(plain: &[u8]) -> (&[u8], Vec<Tlv>) {
    let Some(nul) = find_nul(plain) else {
        return (plain, Vec::new());
    };
    let mut r = Reader::new(&plain[nul + 1..]);
    let mut tlvs = Vec::new();
    while r.remaining() >= 4 {
        let (Ok(kind), Ok(len)) = (r.u16(), r.u16()) else {
            break;
        };
        let Ok(value) = r.take(usize::from(len)) else {
            break;
        };
        tlvs.push(Tlv::new(kind, value.to_vec()));
    }
    (&plain[..nul], tlvs)
}

/// The index of the first NUL byte. Scans 32-byte blocks without an early exit inside a
/// block (which the compiler vectorizes), as long messages carry no NUL until their end.
fn find_nul(bytes: &[u8]) -> Option<usize> {
    let mut blocks = bytes.chunks_exact(32);
    let mut offset = 0;
    for block in blocks.by_ref() {
        if block.iter().fold(false, |any, &b| any | (b == 0)) {
            return block.iter().position(|&b| b == 0).map(|i| offset + i);
        }
        offset += 32;
    }
    blocks.remainder().iter().position(|&b| b == 0).map(|i| offset + i)
}

/// Builds a plaintext as libotr does: the message, a NUL, then the TLVs.
///
/// # Panics
/// If a TLV value exceeds 65535 bytes, which no TLV built in this crate does.
pub fn join_plaintext(msg: &[u8], tlvs: &[Tlv]) -> Vec<u8> {
    let mut w = Writer::with_capacity(msg.len() + 1 + tlvs.iter().map(|t| 4 + t.value.len()).sum::<usize>());
    w.raw(msg).u8(0);
    for t in tlvs {
        let len = u16::try_from(t.value.len()).expect("TLV values are small");
        w.u16(t.kind).u16(len).raw(&t.value);
    }
    w.into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let tlvs = vec![Tlv::new(kind::DISCONNECTED, vec![]), Tlv::new(8, vec![1, 2, 3])];
        let p = join_plaintext(b"hi", &tlvs);
        assert_eq!(split_plaintext(&p), (&b"hi"[..], tlvs.clone()));
        assert_eq!(split_plaintext(&p[..p.len() - 1]), (&b"hi"[..], tlvs[..1].to_vec()));
        assert_eq!(split_plaintext(b"no nul"), (&b"no nul"[..], vec![]));
        for len in [0, 1, 31, 32, 33, 64, 100, 1000] {
            let mut v = vec![b'x'; len];
            assert_eq!(find_nul(&v), None, "{len}");
            for at in [0, len / 2, len.saturating_sub(1)].into_iter().filter(|&i| i < len) {
                v[at] = 0;
                assert_eq!(find_nul(&v), v.iter().position(|&b| b == 0), "{len} {at}");
            }
        }
    }
}
