//! The OTR data types on the wire: a bounds-checked [`Reader`] and a [`Writer`].
//!
//! OTR encodes everything big-endian: BYTE (1), SHORT (2), INT (4), MPI (INT length followed
//! by a minimal big-endian magnitude), DATA (INT length followed by bytes), CTR (8), MAC (20).
//! Reading never panics and never allocates an amount chosen by the peer: lengths are checked
//! against what remains before anything is sliced, and slices borrow from the input.

/// What went wrong while decoding peer bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before the value it announced.
    #[error("message truncated: it ends before a value it announces")]
    Truncated,
    /// Bytes were left over after the last field of a message.
    #[error("message has trailing bytes after its last field")]
    TrailingBytes,
    /// A length field is larger than any legitimate value of its kind.
    #[error("a length field is larger than allowed")]
    TooLong,
    /// An MPI had a leading zero byte (MPIs must be minimal).
    #[error("an MPI is not minimally encoded")]
    NonMinimalMpi,
    /// A field holds a value the protocol does not allow.
    #[error("invalid field value: {0}")]
    Invalid(&'static str),
    /// The `?OTR:` envelope is not valid base64 or lacks its final `.`.
    #[error("the ?OTR: envelope is not valid base64")]
    BadBase64,
}

/// A cursor over peer bytes that returns [`WireError::Truncated`] instead of panicking.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// How many bytes have been consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// How many bytes remain.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The bytes consumed so far (used for MACs over a message prefix).
    pub fn consumed(&self) -> &'a [u8] {
        &self.buf[..self.pos]
    }

    /// Takes the next `n` bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] when fewer than `n` bytes remain.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    /// Takes exactly `N` bytes as an array.
    ///
    /// # Errors
    /// [`WireError::Truncated`] when fewer than `N` bytes remain.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    /// Reads a BYTE.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of input.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a SHORT.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of input.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads an INT.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of input.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a DATA value, borrowing its bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] when the announced length exceeds what remains.
    pub fn data(&mut self) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(self.u32()?).map_err(|_| WireError::TooLong)?;
        self.take(n)
    }

    /// Reads an MPI of at most `max_len` magnitude bytes, returning the minimal magnitude.
    ///
    /// libotr writes MPIs minimally; a leading zero byte is rejected so that every value has
    /// exactly one encoding (and MACs over re-encoded values agree).
    ///
    /// # Errors
    /// [`WireError::Truncated`], [`WireError::TooLong`] when longer than `max_len`,
    /// [`WireError::NonMinimalMpi`] on a leading zero byte.
    pub fn mpi(&mut self, max_len: usize) -> Result<&'a [u8], WireError> {
        let n = usize::try_from(self.u32()?).map_err(|_| WireError::TooLong)?;
        if n > max_len {
            return Err(WireError::TooLong);
        }
        let bytes = self.take(n)?;
        if bytes.first() == Some(&0) {
            return Err(WireError::NonMinimalMpi);
        }
        Ok(bytes)
    }

    /// Succeeds only if every byte has been consumed.
    ///
    /// # Errors
    /// [`WireError::TrailingBytes`] otherwise.
    pub fn finish(&self) -> Result<(), WireError> {
        if self.remaining() == 0 { Ok(()) } else { Err(WireError::TrailingBytes) }
    }
}

/// Builds OTR-encoded bytes.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty writer with room for `capacity` bytes (for messages whose size is known).
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity) }
    }

    /// Writes a BYTE.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    /// Writes a SHORT.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes an INT.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Writes raw bytes without a length.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Writes a DATA value (INT length, then the bytes).
    ///
    /// # Panics
    /// If `bytes` is longer than 4 GiB, which no caller in this crate produces.
    pub fn data(&mut self, bytes: &[u8]) -> &mut Self {
        // Our own values are bounded by message size limits far below 4 GiB.
        let len = u32::try_from(bytes.len()).expect("DATA longer than 4 GiB");
        self.u32(len).raw(bytes)
    }

    /// Writes an MPI from big-endian magnitude bytes, stripping leading zeros.
    pub fn mpi(&mut self, magnitude: &[u8]) -> &mut Self {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        self.data(&magnitude[start..])
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The last `n` bytes written, to transform in place (at most everything written).
    pub fn last_mut(&mut self, n: usize) -> &mut [u8] {
        let start = self.buf.len().saturating_sub(n);
        &mut self.buf[start..]
    }

    /// The finished bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let mut w = Writer::new();
        w.u8(7).u16(0x0102).u32(0xdead_beef).data(b"abc").mpi(&[0, 0, 5, 6]);
        let bytes = w.into_vec();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0x0102));
        assert_eq!(r.u32(), Ok(0xdead_beef));
        assert_eq!(r.data(), Ok(&b"abc"[..]));
        assert_eq!(r.mpi(8), Ok(&[5u8, 6][..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn truncation_and_oversize_are_errors() {
        assert_eq!(Reader::new(&[0, 0, 0, 9, 1]).data(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0xff]).data(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[0, 0, 0, 3, 1, 2, 3]).mpi(2), Err(WireError::TooLong));
        assert_eq!(Reader::new(&[0, 0, 0, 2, 0, 1]).mpi(2), Err(WireError::NonMinimalMpi));
        assert_eq!(Reader::new(&[1]).u16(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[1]).finish(), Err(WireError::TrailingBytes));
    }
}
