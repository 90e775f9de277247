//! Feature `bytes`: buffers become [`bytes::Bytes`] without a copy, for
//! hyper bodies, tokio codecs and anything else that takes `Bytes`; a
//! [`PageBuffer`] is a [`bytes::BufMut`] (`buf_mut`), so tokio's `read_buf`
//! fills it directly; a [`SharedCursor`] reads a [`SharedBuffer`] as a
//! [`bytes::Buf`] (`cursor`).
//!
//! Both conversions go through [`Bytes::from_owner`]: the `Bytes` points at
//! the buffer's own page-aligned bytes and owns the buffer, so the slot
//! returns to its pool when the last `Bytes` made from it (clones and slices
//! included) drops. Until then the buffer counts as in use, and leak
//! tracking still names its allocation site.

mod buf_mut;
mod cursor;

use ::bytes::Bytes;

use crate::buffer::{PageBuffer, SharedBuffer};

pub use cursor::SharedCursor;

/// Hands the buffer's first `len()` bytes to a [`Bytes`] without copying
/// them: the `Bytes` starts at [`PageBuffer::as_ptr`] (page-aligned) and owns
/// the buffer; the slot goes back to the pool when the last clone or slice
/// of the `Bytes` drops.
///
/// ```
/// use bytes::Bytes;
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(1316)?;
/// buf.extend_from_slice(&[0x47; 188])?;
/// let at = buf.as_ptr();
/// let body = Bytes::from(buf);
/// assert_eq!((body.as_ptr(), body.len()), (at, 188)); // no copy
/// let packet = body.slice(0..4);
/// drop(body);
/// assert_eq!(pool.stats().buffers_in_use, 1); // `packet` holds the slot
/// drop(packet);
/// assert_eq!(pool.stats().buffers_in_use, 0);
/// # Ok::<(), pagepool::Error>(())
/// ```
impl From<PageBuffer> for Bytes {
    fn from(buf: PageBuffer) -> Bytes {
        Bytes::from_owner(buf)
    }
}

/// Hands the handle's visible bytes to a [`Bytes`] without copying them; the
/// `Bytes` keeps the handle (one more reference to the slot), so the slot
/// goes back to the pool when the last `SharedBuffer` and the last `Bytes`
/// made from one have dropped.
///
/// ```
/// use bytes::Bytes;
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(4096)?;
/// buf.extend_from_slice(b"segment")?;
/// let shared = buf.freeze();
/// let chunk = Bytes::from(shared.slice(0..3)); // e.g. a hyper body frame
/// assert_eq!(chunk.as_ptr(), shared.as_ptr());
/// assert_eq!(&chunk[..], b"seg");
/// drop(shared);
/// assert_eq!(pool.stats().buffers_in_use, 1);
/// drop(chunk);
/// assert_eq!(pool.stats().buffers_in_use, 0);
/// # Ok::<(), pagepool::Error>(())
/// ```
impl From<SharedBuffer> for Bytes {
    fn from(buf: SharedBuffer) -> Bytes {
        Bytes::from_owner(buf)
    }
}
