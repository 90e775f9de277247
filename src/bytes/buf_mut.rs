//! [`BufMut`] for [`PageBuffer`]: writes land in the spare bytes
//! `[len(), max_len())` and advance `len()`.

use ::bytes::buf::UninitSlice;
use ::bytes::BufMut;

use crate::buffer::PageBuffer;

/// `len()` and the spare bytes `[len(), max_len())` of `buf`.
#[inline]
fn spare(buf: &mut PageBuffer) -> (usize, &mut [u8]) {
    let len = buf.len();
    (len, &mut buf.as_max_slice_mut()[len..])
}

/// The panic of a write or advance of `more` bytes past `max_len()`, raised
/// before anything is written or moved.
#[cold]
#[inline(never)]
#[track_caller]
fn past_max(buf: &PageBuffer, more: usize) -> ! {
    panic!(
        "BufMut on a PageBuffer: {more} bytes after len() {} pass max_len() {}",
        buf.len(),
        buf.max_len()
    )
}

/// A [`PageBuffer`] is a [`BufMut`] bounded by its [`max_len`]: writes go to
/// the spare bytes `[len(), max_len())` and advance [`len`], so
/// `tokio::io::AsyncReadExt::read_buf`, codecs and anything else written for
/// `BufMut` fill the pooled buffer directly, with no intermediate copy.
///
/// - [`remaining_mut`](BufMut::remaining_mut) is `max_len() - len()` (the
///   same as [`PageBuffer::remaining`]); it never grows.
/// - [`chunk_mut`](BufMut::chunk_mut) is all of the spare bytes, one
///   contiguous chunk, page-aligned when `len()` is 0. Its bytes are
///   initialised (they hold earlier contents or zeroes).
/// - [`put_slice`](BufMut::put_slice), `put_u8`, `put_u32` and the other
///   `put_*` methods **panic** when the data does not fit, as the trait
///   says; nothing is written and `len()` is unchanged then. The fallible
///   form is [`PageBuffer::extend_from_slice`] (an
///   [`Error::LengthExceedsMax`](crate::Error::LengthExceedsMax) instead of
///   a panic). `read_buf` on a full buffer returns `Ok(0)` without reading
///   (check `remaining_mut()` to tell that from the end of the stream).
///
/// To read the contents as a [`Buf`](::bytes::Buf), borrow them (`&buf[..]`:
/// a `&[u8]` is a `Buf`) or freeze the buffer and take a
/// [`SharedCursor`](crate::SharedCursor).
///
/// ```
/// use bytes::BufMut;
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(8)?;
/// buf.put_u8(0x47);
/// buf.put_slice(b"ab");
/// buf.put_u32(0x0102_0304); // big-endian, as the trait's `put_u32`
/// assert_eq!(&buf[..], b"\x47ab\x01\x02\x03\x04");
/// assert_eq!((buf.len(), buf.remaining_mut()), (7, 1));
///
/// // From an async reader (tokio's `&[u8]` reader, driven by any executor).
/// use tokio::io::AsyncReadExt;
/// let mut src = &b"xyz"[..];
/// futures_executor::block_on(async {
///     assert_eq!(src.read_buf(&mut buf).await?, 1); // one byte was free
///     assert_eq!(src.read_buf(&mut buf).await?, 0); // full: `src` not read
///     Ok::<(), std::io::Error>(())
/// })?;
/// assert_eq!(&buf[..], b"\x47ab\x01\x02\x03\x04x");
/// assert!(buf.extend_from_slice(b"!").is_err()); // the fallible form
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`max_len`]: PageBuffer::max_len
/// [`len`]: PageBuffer::len
// SAFETY: `remaining_mut` is the exact room left, `chunk_mut` is exactly
// that room, and `advance_mut`, `put_slice` and `put_bytes` move `len()` by
// at most that room or panic without moving it, so `len() <= max_len()`
// always holds and every byte a caller advances over lies inside the slot.
unsafe impl BufMut for PageBuffer {
    #[inline]
    fn remaining_mut(&self) -> usize {
        self.remaining()
    }

    /// Moves `len()` forward by `cnt`: the `cnt` bytes after the old length
    /// become part of the contents.
    ///
    /// # Safety
    /// - The caller has written the `cnt` bytes after `len()`, as the trait
    ///   requires. (Every byte of the slot is initialised memory, so a call
    ///   that skips the writing exposes stale bytes, never uninitialised
    ///   ones.)
    ///
    /// # Panics
    /// When `cnt > remaining_mut()`; `len()` is unchanged then.
    #[inline]
    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.len();
        if cnt > self.max_len() - len {
            past_max(self, cnt);
        }
        // SAFETY: `cnt <= max_len - len`, checked above.
        unsafe { self.set_len_unchecked(len + cnt) };
    }

    #[inline]
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        // Safe code: the spare bytes are initialised `u8`s (fresh slots are
        // zeroed mappings, reused ones hold bytes written earlier), so they
        // can be lent as `&mut [u8]`, which `UninitSlice::new` accepts.
        UninitSlice::new(spare(self).1)
    }

    #[inline]
    fn put_slice(&mut self, src: &[u8]) {
        let n = src.len();
        let (len, spare) = spare(self);
        let Some(dst) = spare.get_mut(..n) else {
            past_max(self, n);
        };
        dst.copy_from_slice(src);
        // SAFETY: `get_mut` checked `n <= max_len - len`.
        unsafe { self.set_len_unchecked(len + n) };
    }

    #[inline]
    fn put_bytes(&mut self, val: u8, cnt: usize) {
        let (len, spare) = spare(self);
        let Some(dst) = spare.get_mut(..cnt) else {
            past_max(self, cnt);
        };
        dst.fill(val);
        // SAFETY: `get_mut` checked `cnt <= max_len - len`.
        unsafe { self.set_len_unchecked(len + cnt) };
    }
}
