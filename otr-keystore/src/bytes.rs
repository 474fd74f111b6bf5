//! A bounds-checked cursor over the store's own bytes (big-endian integers, length-prefixed
//! strings and MPIs, as OTR encodes them): every read checks what remains before it slices,
//! so a damaged file gives an error, never a panic or an allocation it announces.

/// The input ended before a value it announces, or a value broke its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A cursor over bytes that returns [`Malformed`] instead of panicking.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// A 4-byte length, then that many bytes.
    pub(crate) fn data(&mut self) -> Result<&'a [u8], Malformed> {
        let n = usize::try_from(self.u32()?).map_err(|_| Malformed)?;
        self.take(n)
    }

    /// A minimal big-endian magnitude of at most `max_len` bytes, length-prefixed.
    pub(crate) fn mpi(&mut self, max_len: usize) -> Result<&'a [u8], Malformed> {
        let bytes = self.data()?;
        if bytes.len() > max_len || bytes.first() == Some(&0) {
            return Err(Malformed);
        }
        Ok(bytes)
    }

    /// Succeeds only when every byte was read.
    pub(crate) fn finish(&self) -> Result<(), Malformed> {
        if self.rest.is_empty() { Ok(()) } else { Err(Malformed) }
    }
}
