//! The one byte reader of coffeyd's binary formats: the control protocol
//! (`control/proto.rs`) and the compiled config (`daemon/compiled.rs`).
//!
//! It borrows its input, checks every length against what is there and
//! never panics or allocates; each format gives the error it reports for
//! bytes that are not there (`E`) and adds its own string and list
//! shapes on top.

/// A cursor over `b`; fixed-width integers are little-endian.
#[derive(Clone, Debug)]
pub struct Reader<'a, E> {
    b: &'a [u8],
    pos: usize,
    short: E,
}

impl<'a, E: Copy> Reader<'a, E> {
    /// Reads `b` from `pos`; a read past its end is `Err(short)`.
    pub fn at(b: &'a [u8], pos: usize, short: E) -> Self {
        Reader { b, pos, short }
    }
    pub fn new(b: &'a [u8], short: E) -> Self {
        Self::at(b, 0, short)
    }
    /// Bytes read so far (the offset of the next).
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// `Ok` if every byte was read (a frame must be consumed exactly).
    pub fn done(&self) -> Result<(), E> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(self.short)
        }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], E> {
        let end = self.pos.checked_add(n).ok_or(self.short)?;
        let s = self.b.get(self.pos..end).ok_or(self.short)?;
        self.pos = end;
        Ok(s)
    }
    pub fn arr<const N: usize>(&mut self) -> Result<[u8; N], E> {
        let short = self.short;
        self.take(N)?.try_into().map_err(|_| short)
    }
    pub fn u8(&mut self) -> Result<u8, E> {
        Ok(u8::from_le_bytes(self.arr()?))
    }
    pub fn u16(&mut self) -> Result<u16, E> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    pub fn u32(&mut self) -> Result<u32, E> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    pub fn i32(&mut self) -> Result<i32, E> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    pub fn u64(&mut self) -> Result<u64, E> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    pub fn i64(&mut self) -> Result<i64, E> {
        Ok(i64::from_le_bytes(self.arr()?))
    }
    /// Bytes after a `u16 LE` length (the control protocol's strings).
    pub fn bytes16(&mut self) -> Result<&'a [u8], E> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
    /// Bytes after a `u32 LE` length (the compiled config's strings).
    pub fn bytes32(&mut self) -> Result<&'a [u8], E> {
        let short = self.short;
        let n = usize::try_from(self.u32()?).map_err(|_| short)?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_is_there_and_refuses_the_rest() {
        let b = [1u8, 2, 0, 3, 0, 0, 0, b'x', b'y', b'z', 2, 0];
        let mut r = Reader::new(&b, ());
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.bytes32(), Ok(&b"xyz"[..]));
        assert_eq!(r.done(), Err(()));
        assert_eq!(r.bytes16(), Err(()), "a length beyond the end");
        assert_eq!(r.pos(), 12, "the length was read");
        assert_eq!(r.take(usize::MAX), Err(()));
        assert_eq!(r.done(), Ok(()));
        let mut r = Reader::at(&b, 10, ());
        assert_eq!(r.i32(), Err(()));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(Reader::new(&u64::MAX.to_le_bytes(), ()).i64(), Ok(-1));
    }
}
