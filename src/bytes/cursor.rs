//! [`SharedCursor`]: a [`Buf`] over a [`SharedBuffer`], whose
//! `copy_to_bytes` hands out slices of the slot instead of copies.

use ::bytes::{Buf, Bytes};

use crate::buffer::SharedBuffer;

/// A [`Buf`] over the visible bytes of a [`SharedBuffer`]: reads start at
/// the first byte and move a position forward, as with [`std::io::Cursor`].
///
/// [`chunk`](Buf::chunk) is everything not yet read, in one contiguous
/// chunk. [`copy_to_bytes`](Buf::copy_to_bytes) copies nothing: the
/// [`Bytes`] it returns points into the slot and holds a handle to it (so
/// a codec that splits frames off a cursor shares the pooled bytes). The
/// cursor holds a handle too: the slot returns to its pool once the cursor,
/// every `Bytes` taken from it and every other handle have dropped.
///
/// Made by [`SharedBuffer::cursor`] or `SharedCursor::from(shared)`.
///
/// ```
/// use bytes::Buf;
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(64)?;
/// buf.extend_from_slice(b"\x00\x05hello, rest")?;
/// let mut cur = pagepool::SharedCursor::from(buf.freeze());
///
/// let n = cur.get_u16() as usize; // a length prefix
/// let frame = cur.copy_to_bytes(n);
/// assert_eq!(&frame[..], b"hello");
/// assert_eq!(frame.as_ptr(), cur.get_ref()[2..].as_ptr()); // no copy
/// assert_eq!((cur.position(), cur.remaining()), (7, 6));
/// assert_eq!(cur.chunk(), b", rest");
///
/// drop(cur);
/// assert_eq!(pool.stats().buffers_in_use, 1); // `frame` holds the slot
/// drop(frame);
/// assert_eq!(pool.stats().buffers_in_use, 0);
/// # Ok::<(), pagepool::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedCursor {
    buf: SharedBuffer,
    /// Bytes of `buf` already read: `pos <= buf.len()`.
    pos: usize,
}

impl SharedCursor {
    /// Bytes read so far, from the first visible byte of the handle.
    ///
    /// ```
    /// use bytes::Buf;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// buf.extend_from_slice(b"abc")?;
    /// let mut cur = buf.freeze().cursor();
    /// cur.advance(2);
    /// assert_eq!(cur.position(), 2);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    #[inline]
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The handle being read, all of its visible bytes (read or not).
    ///
    /// ```
    /// use bytes::Buf;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// buf.extend_from_slice(b"abc")?;
    /// let mut cur = buf.freeze().cursor();
    /// cur.advance(1);
    /// assert_eq!(&cur.get_ref()[..], b"abc");
    /// assert_eq!(&cur.get_ref()[cur.position()..], cur.chunk());
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    #[inline]
    pub fn get_ref(&self) -> &SharedBuffer {
        &self.buf
    }

    /// Gives the handle back, all of its visible bytes (the position is
    /// forgotten; `get_ref().slice(position()..)` is the unread part).
    ///
    /// ```
    /// use bytes::Buf;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// buf.extend_from_slice(b"abc")?;
    /// let mut cur = buf.freeze().cursor();
    /// cur.advance(3);
    /// let shared = cur.into_inner();
    /// assert_eq!(&shared[..], b"abc");
    /// let buf = shared.try_unwrap().unwrap(); // the only handle again
    /// # drop(buf);
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    #[inline]
    pub fn into_inner(self) -> SharedBuffer {
        self.buf
    }
}

impl SharedBuffer {
    /// A [`SharedCursor`] over the visible bytes, from the first one; it
    /// holds a clone of this handle (use `SharedCursor::from` to move the
    /// handle in instead).
    ///
    /// ```
    /// use bytes::Buf;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// buf.extend_from_slice(b"\x47\x40\x11")?;
    /// let shared = buf.freeze();
    /// let mut cur = shared.cursor();
    /// assert_eq!(cur.get_u8(), 0x47);
    /// assert_eq!(cur.get_u16(), 0x4011);
    /// assert!(!cur.has_remaining());
    /// assert_eq!(shared.len(), 3); // the handle itself is not consumed
    /// # Ok::<(), pagepool::Error>(())
    /// ```
    #[must_use = "a cursor does nothing until read"]
    pub fn cursor(&self) -> SharedCursor {
        SharedCursor::from(self.clone())
    }
}

/// Moves the handle into a cursor at position 0.
///
/// ```
/// let pool = pagepool::BufferPool::new();
/// let buf = pool.allocate_page_size_buffer(8)?.freeze();
/// let cur = pagepool::SharedCursor::from(buf);
/// assert_eq!(cur.get_ref().ref_count(), 1); // moved, not cloned
/// # Ok::<(), pagepool::Error>(())
/// ```
impl From<SharedBuffer> for SharedCursor {
    #[inline]
    fn from(buf: SharedBuffer) -> SharedCursor {
        SharedCursor { buf, pos: 0 }
    }
}

/// The panic of a read of `cnt` bytes past the end, raised before the
/// position moves.
#[cold]
#[inline(never)]
#[track_caller]
fn past_end(cur: &SharedCursor, cnt: usize) -> ! {
    panic!(
        "Buf on a SharedCursor: {cnt} bytes requested, {} remaining",
        cur.remaining()
    )
}

/// Reads the handle's visible bytes from [`position`](SharedCursor::position)
/// on. [`advance`](Buf::advance) and `copy_to_bytes` past
/// [`remaining`](Buf::remaining) panic (as the trait allows and requires),
/// leaving the position unchanged; the `get_*` methods panic likewise, and
/// the `try_get_*` ones return an error.
///
/// ```
/// use bytes::Buf;
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(8)?;
/// buf.extend_from_slice(b"abcd")?;
/// let mut cur = buf.freeze().cursor();
/// cur.advance(1);
/// assert_eq!((cur.chunk(), cur.remaining()), (&b"bcd"[..], 3));
/// assert!(cur.try_get_u32().is_err()); // 3 bytes left: nothing consumed
/// assert_eq!(cur.position(), 1);
/// # Ok::<(), pagepool::Error>(())
/// ```
impl Buf for SharedCursor {
    #[inline]
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        &self.buf.as_slice()[self.pos..]
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        if cnt > self.remaining() {
            past_end(self, cnt);
        }
        self.pos += cnt;
    }

    /// A [`Bytes`] of the next `len` bytes, pointing into the slot (no copy;
    /// one small allocation for the handle it holds, none when `len` is 0).
    ///
    /// # Panics
    /// When `len > remaining()`; the position is unchanged then.
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        if len > self.remaining() {
            past_end(self, len);
        }
        if len == 0 {
            return Bytes::new();
        }
        let part = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Bytes::from_owner(part)
    }
}
