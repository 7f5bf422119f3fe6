//! A bounds-checked FlatBuffers table reader. The `flatbuffers` crate reads tables with
//! `unsafe` accessors that trust the buffer unless a generated verifier ran first; blocks can
//! come from disk or a peer, so every offset here is checked and a bad one is an error.

use std::cell::Cell;

use super::DecodeError;

/// How much a decode may materialize, as a multiple of the buffer's size. Tables may share
/// strings and vectors, so a small buffer can reference one large string many times; every
/// string, byte vector and vector element read is charged what it takes in the buffer (its
/// length prefix and content), so a block without sharing never spends more than its size.
const EXPANSION_FACTOR: usize = 4;

/// The bytes one decode may still materialize, shared by every table read from the buffer.
pub struct Budget {
    left: Cell<usize>,
    limit: usize,
}

impl Budget {
    pub fn for_buffer(buf: &[u8]) -> Budget {
        let limit = buf.len().saturating_mul(EXPANSION_FACTOR);
        Budget { left: Cell::new(limit), limit }
    }

    fn take(&self, bytes: usize) -> Result<(), DecodeError> {
        let left = self.left.get().checked_sub(bytes).ok_or_else(|| {
            DecodeError::new(format!(
                "the block expands to more than {} bytes ({EXPANSION_FACTOR} times its size): \
                 it references the same data over and over, which no honest writer does",
                self.limit
            ))
        })?;
        self.left.set(left);
        Ok(())
    }
}

#[derive(Clone, Copy)]
pub struct Table<'a> {
    buf: &'a [u8],
    budget: &'a Budget,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

/// Little-endian scalars a table field can hold.
pub trait Scalar: Sized + Copy {
    const SIZE: usize;
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! scalar {
    ($($t:ty),+) => {$(
        impl Scalar for $t {
            const SIZE: usize = size_of::<$t>();
            fn from_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    )+};
}

scalar!(u8, i16, u16, i32, u32, i64, u64);

impl Scalar for bool {
    const SIZE: usize = 1;
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

fn read<T: Scalar>(buf: &[u8], pos: usize) -> Result<T, DecodeError> {
    pos.checked_add(T::SIZE).and_then(|end| buf.get(pos..end)).map(T::from_le).ok_or_else(|| {
        DecodeError::new(format!("offset {pos} is past the end of the buffer ({} bytes)", buf.len()))
    })
}

impl<'a> Table<'a> {
    /// The root table of a finished buffer; everything read through it is charged to `budget`.
    pub fn root(buf: &'a [u8], budget: &'a Budget) -> Result<Self, DecodeError> {
        let offset: u32 = read(buf, 0)?;
        Self::at(buf, budget, offset as usize)
    }

    fn at(buf: &'a [u8], budget: &'a Budget, pos: usize) -> Result<Self, DecodeError> {
        let back: i32 = read(buf, pos)?;
        let vtable = i64::try_from(pos).unwrap_or(i64::MAX) - i64::from(back);
        let vtable = usize::try_from(vtable)
            .map_err(|_| DecodeError::new(format!("table at {pos} points to a vtable before the buffer")))?;
        let vtable_len = read::<u16>(buf, vtable)? as usize;
        let table_len = read::<u16>(buf, vtable + 2)? as usize;
        if vtable_len < 4 || vtable + vtable_len > buf.len() || pos + table_len > buf.len() {
            return Err(DecodeError::new(format!("table at {pos} has a vtable out of bounds")));
        }
        Ok(Table { buf, budget, pos, vtable, vtable_len })
    }

    pub fn buffer_len(&self) -> usize {
        self.buf.len()
    }

    /// Where field `index` (schema field index; a union takes two) is stored, if present.
    fn field(&self, index: u16) -> Result<Option<usize>, DecodeError> {
        let slot = 4 + 2 * index as usize;
        if slot + 2 > self.vtable_len {
            return Ok(None);
        }
        let offset = read::<u16>(self.buf, self.vtable + slot)?;
        Ok((offset != 0).then_some(self.pos + offset as usize))
    }

    pub fn optional<T: Scalar>(&self, index: u16) -> Result<Option<T>, DecodeError> {
        self.field(index)?.map(|p| read(self.buf, p)).transpose()
    }

    pub fn scalar<T: Scalar>(&self, index: u16, default: T) -> Result<T, DecodeError> {
        Ok(self.optional(index)?.unwrap_or(default))
    }

    /// Follows the uoffset stored at `pos`.
    fn follow(&self, pos: usize) -> Result<usize, DecodeError> {
        let offset = read::<u32>(self.buf, pos)? as usize;
        pos.checked_add(offset).ok_or_else(|| DecodeError::new(format!("offset at {pos} overflows")))
    }

    pub fn table(&self, index: u16) -> Result<Option<Table<'a>>, DecodeError> {
        match self.field(index)? {
            Some(p) => Ok(Some(Table::at(self.buf, self.budget, self.follow(p)?)?)),
            None => Ok(None),
        }
    }

    /// A vector's element count and the position of its first element.
    fn vector(&self, index: u16, element_size: usize) -> Result<Option<(usize, usize)>, DecodeError> {
        let Some(p) = self.field(index)? else {
            return Ok(None);
        };
        let start = self.follow(p)?;
        let len = read::<u32>(self.buf, start)? as usize;
        let fits = len
            .checked_mul(element_size)
            .and_then(|n| n.checked_add(start + 4))
            .is_some_and(|end| end <= self.buf.len());
        if !fits {
            return Err(DecodeError::new(format!("vector at {start} runs past the buffer")));
        }
        // Checked to fit in the buffer above, so this cannot overflow.
        self.budget.take(4 + len * element_size)?;
        Ok(Some((len, start + 4)))
    }

    pub fn bytes(&self, index: u16) -> Result<Option<&'a [u8]>, DecodeError> {
        Ok(self.vector(index, 1)?.map(|(len, start)| &self.buf[start..start + len]))
    }

    fn string_at(&self, pos: usize) -> Result<String, DecodeError> {
        let start = self.follow(pos)?;
        let len = read::<u32>(self.buf, start)? as usize;
        let bytes = (start + 4)
            .checked_add(len)
            .and_then(|end| self.buf.get(start + 4..end))
            .ok_or_else(|| DecodeError::new(format!("string at {start} runs past the buffer")))?;
        self.budget.take(4 + len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DecodeError::new(format!("string at {start} is not UTF-8")))
    }

    pub fn string(&self, index: u16) -> Result<Option<String>, DecodeError> {
        self.field(index)?.map(|p| self.string_at(p)).transpose()
    }

    pub fn strings(&self, index: u16) -> Result<Option<Vec<String>>, DecodeError> {
        let Some((len, start)) = self.vector(index, 4)? else {
            return Ok(None);
        };
        (0..len).map(|i| self.string_at(start + 4 * i)).collect::<Result<_, _>>().map(Some)
    }

    pub fn tables(&self, index: u16) -> Result<Option<Vec<Table<'a>>>, DecodeError> {
        let Some((len, start)) = self.vector(index, 4)? else {
            return Ok(None);
        };
        (0..len)
            .map(|i| Table::at(self.buf, self.budget, self.follow(start + 4 * i)?))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// An inline struct of `N` bytes.
    pub fn inline<const N: usize>(&self, index: u16) -> Result<Option<[u8; N]>, DecodeError> {
        let Some(p) = self.field(index)? else {
            return Ok(None);
        };
        let bytes = self
            .buf
            .get(p..p + N)
            .ok_or_else(|| DecodeError::new(format!("struct at {p} runs past the buffer")))?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(Some(out))
    }
}
