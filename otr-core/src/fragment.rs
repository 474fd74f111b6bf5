//! Fragmentation of long OTR messages (`?OTR|sender|receiver,k,n,piece,` in v3,
//! `?OTR,k,n,piece,` in v2) and their bounded reassembly.
//!
//! Reassembly follows libotr: a fragment with k = 1 starts a message, the next must be k + 1
//! of the same n, and anything else discards what was collected. Memory is bounded by the
//! number of senders tracked, the number of pieces, and the total bytes of one message.

use std::collections::VecDeque;

use crate::event::Timestamp;

/// Largest n we accept (libotr writes n as `%05hu`).
pub const MAX_PIECES: u16 = 1024;
/// Largest reassembled message in bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How many senders may have a partial message at once; the oldest is evicted beyond it.
pub const MAX_PARTIALS: usize = 8;
/// A partial message untouched this long (ms) is dropped.
pub const EXPIRY_MS: u64 = 120_000;
/// Bytes a v3 fragment adds around its piece: `?OTR|xxxxxxxx|xxxxxxxx,kkkkk,nnnnn,` and `,`.
pub const V3_OVERHEAD: usize = 36;
/// Bytes a v2 fragment adds around its piece: `?OTR,kkkkk,nnnnn,` and `,`.
pub const V2_OVERHEAD: usize = 18;

/// A parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The protocol version of its format: 3 (`?OTR|sender|receiver,…`) or 2 (`?OTR,…`).
    pub version: u16,
    /// The sender's instance tag (0 in a v2 fragment, which has none).
    pub sender: u32,
    /// The receiver's instance tag (0 when not yet known, and in v2).
    pub receiver: u32,
    /// This piece's number, from 1.
    pub k: u16,
    /// The number of pieces.
    pub n: u16,
    /// The piece.
    pub piece: &'a str,
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FragmentError {
    /// Not of the form `?OTR|sender|receiver,k,n,piece,` (v3) or `?OTR,k,n,piece,` (v2).
    #[error("malformed fragment")]
    Malformed,
    /// k = 0, n = 0, k > n or n too large.
    #[error("fragment numbers out of range")]
    BadNumbers,
    /// The reassembled message would exceed the size limit.
    #[error("fragmented message too large")]
    TooLarge,
}

fn hex_u32(s: &str) -> Option<u32> {
    (!s.is_empty() && s.len() <= 8).then(|| u32::from_str_radix(s, 16).ok()).flatten()
}

fn dec_u16(s: &str) -> Option<u16> {
    (!s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
}

impl<'a> Fragment<'a> {
    /// Parses a v3 or v2 fragment.
    ///
    /// # Errors
    /// [`FragmentError::Malformed`] or [`FragmentError::BadNumbers`].
    pub fn parse(msg: &'a str) -> Result<Self, FragmentError> {
        let (version, sender, receiver, numbers) = if let Some(rest) = msg.strip_prefix("?OTR|") {
            let (sender, rest) = rest.split_once('|').ok_or(FragmentError::Malformed)?;
            let (receiver, rest) = rest.split_once(',').ok_or(FragmentError::Malformed)?;
            let tag = |t| hex_u32(t).ok_or(FragmentError::Malformed);
            (3, tag(sender)?, tag(receiver)?, rest)
        } else {
            (2, 0, 0, msg.strip_prefix("?OTR,").ok_or(FragmentError::Malformed)?)
        };
        let mut parts = numbers.splitn(3, ',');
        let k = parts.next().ok_or(FragmentError::Malformed)?;
        let n = parts.next().ok_or(FragmentError::Malformed)?;
        let piece = parts.next().and_then(|p| p.strip_suffix(',')).ok_or(FragmentError::Malformed)?;
        let frag = Self {
            version,
            sender,
            receiver,
            k: dec_u16(k).ok_or(FragmentError::Malformed)?,
            n: dec_u16(n).ok_or(FragmentError::Malformed)?,
            piece,
        };
        if frag.k == 0 || frag.n == 0 || frag.k > frag.n || frag.n > MAX_PIECES {
            return Err(FragmentError::BadNumbers);
        }
        Ok(frag)
    }
}

/// Splits `msg` into fragments of at most `max` bytes each: v3 fragments from and to the
/// instance tags `tags` (sender, receiver), or v2 fragments when `tags` is `None`. `None` when
/// `msg` goes as it is: it fits (`max` 0 means no limit), or it cannot be split (`max` too
/// small to carry anything, too many pieces, not ASCII): then the transport must cope.
pub fn split(msg: &str, max: usize, tags: Option<(u32, u32)>) -> Option<Vec<String>> {
    let overhead = if tags.is_some() { V3_OVERHEAD } else { V2_OVERHEAD };
    if max == 0 || msg.len() <= max || max <= overhead {
        return None;
    }
    // Encoded OTR messages are ASCII, so byte chunks are character boundaries.
    let chunk = max - overhead;
    let pieces: Vec<&str> =
        msg.as_bytes().chunks(chunk).map(|c| core::str::from_utf8(c).unwrap_or("")).collect();
    let n = pieces.len();
    if n > usize::from(MAX_PIECES) || !msg.is_ascii() {
        return None;
    }
    let fragments = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| match tags {
            Some((sender, receiver)) => format!("?OTR|{sender:08x}|{receiver:08x},{:05},{n:05},{p},", i + 1),
            None => format!("?OTR,{:05},{n:05},{p},", i + 1),
        })
        .collect();
    Some(fragments)
}

struct Partial {
    sender: u32,
    n: u16,
    k: u16,
    buf: String,
    updated: Timestamp,
}

/// Collects fragments per sender into whole messages.
#[derive(Default)]
pub struct Reassembler {
    partials: VecDeque<Partial>,
}

impl Reassembler {
    /// Adds a fragment; returns the whole message when this was its last piece.
    ///
    /// # Errors
    /// [`FragmentError::TooLarge`] when the message outgrows the limit (it is discarded).
    pub fn add(&mut self, f: &Fragment<'_>, now: Timestamp) -> Result<Option<String>, FragmentError> {
        let idx = self.partials.iter().position(|p| p.sender == f.sender);
        if f.k == 1 {
            if let Some(i) = idx {
                self.partials.remove(i);
            }
            if f.n == 1 {
                return Ok(Some(f.piece.to_owned()));
            }
            if f.piece.len() > MAX_MESSAGE_BYTES {
                return Err(FragmentError::TooLarge);
            }
            if self.partials.len() >= MAX_PARTIALS {
                self.partials.pop_front();
            }
            self.partials.push_back(Partial {
                sender: f.sender,
                n: f.n,
                k: 1,
                buf: f.piece.to_owned(),
                updated: now,
            });
            return Ok(None);
        }
        let Some(i) = idx else { return Ok(None) };
        let p = &mut self.partials[i];
        if f.n == p.n && f.k == p.k {
            // The network repeated the piece we just took: ignore it rather than lose the rest.
            return Ok(None);
        }
        if f.n != p.n || f.k != p.k + 1 {
            // A gap, a repeat or another message's piece: what we had is unusable.
            self.partials.remove(i);
            return Ok(None);
        }
        if p.buf.len() + f.piece.len() > MAX_MESSAGE_BYTES {
            self.partials.remove(i);
            return Err(FragmentError::TooLarge);
        }
        p.buf.push_str(f.piece);
        p.k = f.k;
        p.updated = now;
        if f.k == f.n {
            let done = self.partials.remove(i).map(|p| p.buf);
            return Ok(done);
        }
        Ok(None)
    }

    /// Drops partial messages untouched for [`EXPIRY_MS`].
    pub fn expire(&mut self, now: Timestamp) {
        self.partials.retain(|p| p.updated.plus_millis(EXPIRY_MS) > now);
    }

    /// When the oldest partial message expires.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.partials.iter().map(|p| p.updated.plus_millis(EXPIRY_MS)).min()
    }

    /// Bytes currently held (for memory assertions).
    pub fn held_bytes(&self) -> usize {
        self.partials.iter().map(|p| p.buf.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_reassemble() {
        let msg = format!("?OTR:{}.", "A".repeat(1000));
        for (tags, prefix) in
            [(Some((0x1234, 0x5678)), "?OTR|00001234|00005678,00001,"), (None, "?OTR,00001,")]
        {
            let frags = split(&msg, 300, tags).unwrap();
            assert!(frags.len() > 3 && frags.iter().all(|f| f.len() <= 300));
            assert!(frags[0].starts_with(prefix), "{}", frags[0]);
            let mut r = Reassembler::default();
            let mut out = None;
            for f in &frags {
                out = r.add(&Fragment::parse(f).unwrap(), Timestamp(0)).unwrap();
            }
            assert_eq!(out.as_deref(), Some(msg.as_str()));
            assert_eq!(r.held_bytes(), 0);
        }
    }

    #[test]
    fn parses_v2_fragments() {
        let f = Fragment::parse("?OTR,2,3,piece,").unwrap();
        assert_eq!((f.sender, f.receiver, f.k, f.n, f.piece), (0, 0, 2, 3, "piece"));
        assert_eq!(Fragment::parse("?OTR,00001,00001,x,").map(|f| f.piece), Ok("x"));
        assert_eq!(Fragment::parse("?OTR,0,1,x,"), Err(FragmentError::BadNumbers));
        assert_eq!(Fragment::parse("?OTR,1,2,x"), Err(FragmentError::Malformed));
        assert_eq!(Fragment::parse("?OTR,1,x,"), Err(FragmentError::Malformed));
        assert_eq!(Fragment::parse("?OTR,-1,2,x,"), Err(FragmentError::Malformed));
    }

    #[test]
    fn rejects_bad_numbers_and_gaps() {
        assert_eq!(Fragment::parse("?OTR|100|100,2,1,x,"), Err(FragmentError::BadNumbers));
        assert_eq!(Fragment::parse("?OTR|100|100,0,1,x,"), Err(FragmentError::BadNumbers));
        assert_eq!(Fragment::parse("?OTR|100|100,1,0,x,"), Err(FragmentError::BadNumbers));
        assert_eq!(Fragment::parse("?OTR|100|100,1,65535,x,"), Err(FragmentError::BadNumbers));
        assert_eq!(Fragment::parse("?OTR|100|100,1,2,x"), Err(FragmentError::Malformed));
        assert_eq!(Fragment::parse("?OTR|zz|100,1,2,x,"), Err(FragmentError::Malformed));
        let mut r = Reassembler::default();
        let t = Timestamp(0);
        assert_eq!(r.add(&Fragment::parse("?OTR|100|100,1,3,a,").unwrap(), t), Ok(None));
        assert_eq!(r.add(&Fragment::parse("?OTR|100|100,3,3,c,").unwrap(), t), Ok(None));
        assert_eq!(r.held_bytes(), 0, "a gap discards the partial message");
        assert_eq!(r.add(&Fragment::parse("?OTR|100|100,2,3,b,").unwrap(), t), Ok(None));
        // A piece repeated by the network is ignored; the message still completes.
        for f in ["?OTR|100|100,1,3,a,", "?OTR|100|100,2,3,b,", "?OTR|100|100,2,3,b,"] {
            assert_eq!(r.add(&Fragment::parse(f).unwrap(), t), Ok(None));
        }
        assert_eq!(r.add(&Fragment::parse("?OTR|100|100,3,3,c,").unwrap(), t), Ok(Some("abc".into())));
    }

    #[test]
    fn memory_is_bounded_under_a_flood() {
        let mut r = Reassembler::default();
        let piece = "x".repeat(60_000);
        for sender in 0..1000u32 {
            for k in 1..=20u16 {
                let f = format!("?OTR|{:x}|100,{k},1000,{piece},", sender + 0x100);
                let _ = r.add(&Fragment::parse(&f).unwrap(), Timestamp(u64::from(k)));
            }
        }
        assert!(r.held_bytes() <= MAX_PARTIALS * MAX_MESSAGE_BYTES);
        assert!(r.partials.len() <= MAX_PARTIALS);
        assert!(r.partials.iter().all(|p| p.buf.len() <= MAX_MESSAGE_BYTES));
        r.expire(Timestamp(EXPIRY_MS + 100));
        assert_eq!(r.held_bytes(), 0);
    }
}
