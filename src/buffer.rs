//! [`PageBuffer`]: one pooled buffer, owned, returned to its pool on drop.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::free::anchor::{Anchor, AnchorCount, AnchorRef, Released};
use crate::mem::slot::{Slot, SlotRef};
use crate::pool::PoolInner;
use crate::site::SiteRef;
use crate::Error;

/// A buffer from a [`BufferPool`](crate::BufferPool): the Rust face of
/// `INSSBuffer`. Page-aligned when it comes from
/// [`allocate_page_size_buffer`](crate::BufferPool::allocate_page_size_buffer)
/// (or from [`allocate_buffer`](crate::BufferPool::allocate_buffer) above
/// [`SMALL_MAX`](crate::SMALL_MAX) bytes); 64-byte aligned for a small
/// `allocate_buffer` request. Two words: as cheap to move as a `Box<[u8]>`.
///
/// It has a maximum length fixed at allocation ([`max_len`](Self::max_len),
/// `GetMaxLength`) and a current length ([`len`](Self::len), `GetLength`,
/// 0 when fresh) that [`set_len`](Self::set_len) (`SetLength`) moves within
/// it. It dereferences to its first `len()` bytes; all `max_len()` bytes are
/// reachable through [`as_max_slice_mut`](Self::as_max_slice_mut), so a
/// `read()` can fill the buffer before the length is set.
///
/// Dropping it returns the slot to the pool (on any thread).
///
/// `Send`: it owns its slot alone, so it may move to another thread, and be
/// released there. `Sync`: a `&PageBuffer` only reads the bytes, like a
/// `&[u8]`.
pub struct PageBuffer {
    /// First byte: valid for reads and writes of the whole slot (at least
    /// `max_len` bytes), and accessed by no one else while `self` lives.
    ptr: NonNull<u8>,
    /// The slot this buffer owns. Its metadata holds the rest of the
    /// buffer's state, written only through this buffer while it lives:
    /// `len` and `max_len` (invariant `len <= max_len <= slot bytes`,
    /// `max_len >= 1`) and the anchor the buffer was issued through, which
    /// counts the buffer and keeps the pool, and so the slab behind `ptr`,
    /// alive.
    slot: SlotRef,
}

// Two words, like `Box<[u8]>`: returned and moved in registers, never
// through a memory copy that a wider load must read back.
const _: () = assert!(std::mem::size_of::<PageBuffer>() == 16);

// SAFETY: the buffer owns its slot exclusively (the pool hands a slot to one
// buffer at a time), so moving it to another thread moves that ownership;
// releasing from another thread is supported (free lists are thread-safe).
unsafe impl Send for PageBuffer {}
// SAFETY: `&PageBuffer` only allows reading the bytes, like `&[u8]`.
unsafe impl Sync for PageBuffer {}

impl PageBuffer {
    /// Wraps a slot just taken from a free list, whose `max_len` the pool
    /// has set.
    ///
    /// # Safety
    /// - `slot` was just taken off a free list of `pool` (so no one else owns it);
    /// - its `max_len` is set, `1 <= max_len <=` the slot's size;
    /// - the buffer was counted on `anchor`, an `Anchor<PoolInner>` of the
    ///   slot's pool.
    #[inline(always)]
    pub(crate) unsafe fn from_slot(slot: SlotRef, anchor: AnchorRef) -> Self {
        // SAFETY: the caller guarantees the slot is live and ours.
        let s = unsafe { slot.get() };
        s.len.store(0, Relaxed);
        s.anchor.store(anchor.as_ptr().cast(), Relaxed);
        PageBuffer {
            ptr: s.data(),
            slot,
        }
    }

    /// A new buffer of pool `inner` for a request of `max_size` bytes made
    /// at `site` (`small`: by `allocate_buffer`).
    #[inline(always)]
    pub(crate) fn allocate(
        inner: &Arc<PoolInner>,
        max_size: usize,
        site: &'static Location<'static>,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        PageBuffer::allocate_from(inner, max_size, SiteRef::rust(site), small)
    }

    /// `allocate` for a request made at `site`, a Rust or a C site.
    #[inline(always)]
    pub(crate) fn allocate_from(
        inner: &Arc<PoolInner>,
        max_size: usize,
        site: SiteRef,
        small: bool,
    ) -> Result<PageBuffer, Error> {
        let (slot, anchor) = inner.allocate(max_size, site, small)?;
        // SAFETY: `allocate` just took `slot` off a free list for us alone and
        // counted the buffer on `anchor`, which keeps the pool alive.
        Ok(unsafe { PageBuffer::from_slot(slot, anchor) })
    }

    /// The slot's metadata.
    #[inline(always)]
    pub(crate) fn meta(&self) -> &Slot {
        // SAFETY: the slot stays mapped while its buffer lives (the anchor
        // keeps the pool alive).
        unsafe { self.slot.get() }
    }

    /// The anchor this buffer was issued through.
    #[inline(always)]
    fn anchor(&self) -> AnchorRef {
        // SAFETY: set non-null by `from_slot` and unchanged while we live.
        unsafe { NonNull::new_unchecked(self.meta().anchor.load(Relaxed).cast()) }
    }

    /// The current length (`INSSBuffer::GetLength`); 0 for a fresh buffer.
    #[inline]
    pub fn len(&self) -> usize {
        self.meta().len.load(Relaxed) as usize
    }

    /// Whether `len() == 0`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The maximum length (`INSSBuffer::GetMaxLength`): exactly the
    /// `max_size` it was allocated with.
    #[inline]
    pub fn max_len(&self) -> usize {
        self.meta().max_len.load(Relaxed) as usize
    }

    /// Bytes still free between `len()` and `max_len()`.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.max_len() - self.len()
    }

    /// Sets the current length (`INSSBuffer::SetLength`). The bytes up to
    /// `len` are whatever the buffer holds (see
    /// [`as_max_slice_mut`](Self::as_max_slice_mut)).
    ///
    /// **Old bytes.** With zeroing off (the default), a reused slot still
    /// holds its previous owner's bytes (or poison): a length past what you
    /// wrote exposes them, to a client if you send them. A server whose
    /// buffers carry different tenants' data should build its pool with
    /// [`PoolBuilder::zero_on_allocate`](crate::PoolBuilder::zero_on_allocate).
    ///
    /// # Errors
    /// [`Error::LengthExceedsMax`] when `len > max_len()`; the length is then
    /// unchanged.
    #[inline]
    pub fn set_len(&mut self, len: usize) -> Result<(), Error> {
        if len > self.max_len() {
            return Err(Error::LengthExceedsMax {
                requested: len,
                max: self.max_len(),
            });
        }
        // `len <= max_len`, which fits `u32`.
        self.meta().len.store(len as u32, Relaxed);
        Ok(())
    }

    /// Sets the length with no check and no `Result`, for the `BufMut`
    /// writes, which check the room themselves.
    ///
    /// # Safety
    /// `len <= max_len()`.
    #[cfg(feature = "bytes")]
    #[inline]
    pub(crate) unsafe fn set_len_unchecked(&mut self, len: usize) {
        debug_assert!(len <= self.max_len());
        // `len <= max_len` (the caller's promise), which fits `u32`.
        self.meta().len.store(len as u32, Relaxed);
    }

    /// Sets the length to 0.
    #[inline]
    pub fn clear(&mut self) {
        self.meta().len.store(0, Relaxed);
    }

    /// Appends `data` after the current length.
    ///
    /// # Errors
    /// [`Error::LengthExceedsMax`] when the result would pass `max_len()`;
    /// nothing is written then.
    pub fn extend_from_slice(&mut self, data: &[u8]) -> Result<(), Error> {
        let start = self.len();
        let end = start
            .checked_add(data.len())
            .filter(|&e| e <= self.max_len());
        let Some(end) = end else {
            return Err(Error::LengthExceedsMax {
                requested: start.saturating_add(data.len()),
                max: self.max_len(),
            });
        };
        self.as_max_slice_mut()[start..end].copy_from_slice(data);
        // `end <= max_len`, which fits `u32`.
        self.meta().len.store(end as u32, Relaxed);
        Ok(())
    }

    /// The first byte (`INSSBuffer::GetBuffer`); page-aligned (64-byte
    /// aligned for a small `allocate_buffer` request). Valid for reads
    /// of `max_len()` bytes while the buffer lives.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// The first byte, for writing; valid for writes of `max_len()` bytes
    /// while the buffer lives. Write initialised bytes only.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `INSSBuffer::GetBufferAndLength`: the first byte and the current length.
    #[inline]
    pub fn buffer_and_length(&mut self) -> (*mut u8, usize) {
        (self.ptr.as_ptr(), self.len())
    }

    /// The first `len()` bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `max_len >= len` bytes, all initialised
        // (fresh mappings are zeroed; later contents were written as bytes),
        // and no one else accesses the slot while `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }

    /// The first `len()` bytes, writable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }

    /// All `max_len()` bytes, whatever the current length.
    ///
    /// **Old bytes.** With zeroing off (the default), a reused slot still
    /// holds its previous owner's bytes (or poison): a length past what you
    /// wrote exposes them, to a client if you send them. A server whose
    /// buffers carry different tenants' data should build its pool with
    /// [`PoolBuilder::zero_on_allocate`](crate::PoolBuilder::zero_on_allocate).
    #[inline]
    pub fn as_max_slice(&self) -> &[u8] {
        // SAFETY: as in `as_slice`, for `max_len` bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.max_len()) }
    }

    /// All `max_len()` bytes, writable: fill them (a `read()`, a codec), then
    /// [`set_len`](Self::set_len).
    ///
    /// **Old bytes.** With zeroing off (the default), a reused slot still
    /// holds its previous owner's bytes (or poison): a length past what you
    /// wrote exposes them, to a client if you send them. A server whose
    /// buffers carry different tenants' data should build its pool with
    /// [`PoolBuilder::zero_on_allocate`](crate::PoolBuilder::zero_on_allocate).
    ///
    /// ```
    /// use std::io::Read;
    /// let pool = pagepool::BufferPool::new();
    /// let mut buf = pool.allocate_page_size_buffer(8)?;
    /// let n = (&b"payload"[..]).read(buf.as_max_slice_mut())?;
    /// buf.set_len(n)?;
    /// assert_eq!(&buf[..], b"payload");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn as_max_slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_mut_slice`, for `max_len` bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.max_len()) }
    }

    /// The size of the slot behind the buffer, at least `max_len()`: whole
    /// pages, with the buffer's guard page right after it; or, for a small
    /// `allocate_buffer` request, its class's size, with a red zone after it.
    pub fn slot_len(&self) -> usize {
        self.pool().classes.slot_bytes(self.meta().class())
    }

    /// The name of the pool the buffer came from.
    pub fn pool_name(&self) -> &str {
        self.pool().name()
    }
}

impl PageBuffer {
    /// Returns the buffer to its pool, like dropping it, and records this
    /// call's location as the release site: reports of a later use after
    /// release (poison, quarantine faults) then name it.
    #[track_caller]
    pub fn release(self) {
        self.release_at(SiteRef::rust(Location::caller()));
    }

    /// `release` recording `site` (a C caller's, say) as the release site.
    pub(crate) fn release_at(self, site: SiteRef) {
        let this = std::mem::ManuallyDrop::new(self);
        this.return_to_pool(site);
    }

    /// The pool the buffer came from.
    #[inline]
    pub(crate) fn pool(&self) -> &Arc<PoolInner> {
        // SAFETY: the anchor is the pool's `Anchor<PoolInner>` (`from_slot`)
        // and stays live while this buffer, counted on it, lives.
        unsafe { Anchor::<PoolInner>::pool(self.anchor()) }
    }

    /// The common end of `drop` and `release`; the buffer is unusable after.
    #[inline(always)]
    fn return_to_pool(&self, site: SiteRef) {
        let anchor = self.anchor();
        let released = {
            // SAFETY: the anchor is the pool's `Anchor<PoolInner>` and stays
            // live while this buffer, counted on it, lives (until the
            // release below settles it).
            let pool = unsafe { Anchor::<PoolInner>::pool(anchor) };
            // SAFETY: we own the slot and are done with it; `pool` is the pool
            // it came from and `anchor` the one it was counted on.
            unsafe { pool.release(self.slot, anchor, site) }
        };
        if released == Released::Remote {
            // The last step: it may free the anchor and the pool, so no
            // reference into either is held here.
            // SAFETY: this buffer was counted on `anchor` and is gone now.
            unsafe { AnchorCount::release_remote(anchor) };
        }
    }
}

impl Drop for PageBuffer {
    #[inline(always)]
    fn drop(&mut self) {
        self.return_to_pool(SiteRef::NONE);
    }
}

impl Deref for PageBuffer {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl DerefMut for PageBuffer {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl AsRef<[u8]> for PageBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsMut<[u8]> for PageBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

impl fmt::Debug for PageBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageBuffer")
            .field("ptr", &self.ptr)
            .field("len", &self.len())
            .field("max_len", &self.max_len())
            .field("pool", &self.pool().name())
            .finish()
    }
}

/// A frozen, reference-counted [`PageBuffer`]: cheap to clone, shared by
/// every subscriber of a stream without copying.
///
/// Made by [`PageBuffer::freeze`]. It dereferences to the frozen buffer's
/// first `len()` bytes (or a sub-range, see [`slice`](Self::slice)); the slot
/// returns to its pool when the last clone drops, and until then the buffer
/// counts as in use (leak tracking still sees it).
///
/// `Send` and `Sync`: the bytes are frozen (no handle writes them) and the
/// count is atomic, so clones may live and drop on any threads.
///
/// ```
/// let pool = pagepool::BufferPool::new();
/// let mut buf = pool.allocate_page_size_buffer(1316)?;
/// buf.extend_from_slice(&[0x47; 1316])?;
/// let packet = buf.freeze();
/// let for_client_a = packet.clone();
/// let header = packet.slice(0..4);
/// assert_eq!(for_client_a.as_ptr(), packet.as_ptr()); // no copy
/// assert_eq!(&header[..], &[0x47; 4]);
/// drop((packet, for_client_a));
/// assert_eq!(pool.stats().buffers_in_use, 1); // `header` still holds it
/// drop(header);
/// assert_eq!(pool.stats().buffers_in_use, 0);
/// # Ok::<(), pagepool::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedBuffer {
    buf: Arc<PageBuffer>,
    /// The visible range: `start <= end <= buf.len()`.
    start: usize,
    end: usize,
}

impl PageBuffer {
    /// Freezes the buffer into a [`SharedBuffer`] of its first `len()` bytes.
    #[must_use = "dropping the SharedBuffer at once returns the slot to the pool"]
    pub fn freeze(self) -> SharedBuffer {
        let end = self.len();
        SharedBuffer {
            buf: Arc::new(self),
            start: 0,
            end,
        }
    }
}

impl SharedBuffer {
    /// Bytes visible through this handle.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether no bytes are visible.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The first visible byte (as aligned as the buffer for a handle from
    /// `freeze`).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.as_slice().as_ptr()
    }

    /// The visible bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf.as_slice()[self.start..self.end]
    }

    /// A handle to a sub-range of the visible bytes, sharing the same slot.
    ///
    /// # Panics
    /// When the range is out of bounds or decreasing, like slice indexing.
    #[must_use = "a slice is a new handle; dropping it at once does nothing"]
    pub fn slice(&self, range: impl std::ops::RangeBounds<usize>) -> SharedBuffer {
        use std::ops::Bound;
        let len = self.len();
        let from = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1).expect("range start overflows"),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1).expect("range end overflows"),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => len,
        };
        assert!(
            from <= to && to <= len,
            "range {from}..{to} out of bounds for a SharedBuffer of {len} bytes"
        );
        SharedBuffer {
            buf: Arc::clone(&self.buf),
            start: self.start + from,
            end: self.start + to,
        }
    }

    /// Handles sharing this slot (this one included).
    pub fn ref_count(&self) -> usize {
        Arc::strong_count(&self.buf)
    }

    /// Gets the [`PageBuffer`] back when this is the only handle (any
    /// sub-range is forgotten: the buffer keeps the length it was frozen
    /// with); otherwise returns the handle unchanged.
    pub fn try_unwrap(self) -> Result<PageBuffer, SharedBuffer> {
        let SharedBuffer { buf, start, end } = self;
        Arc::try_unwrap(buf).map_err(|buf| SharedBuffer { buf, start, end })
    }

    /// The `max_len()` of the frozen buffer.
    pub fn max_len(&self) -> usize {
        self.buf.max_len()
    }

    /// The name of the pool the buffer came from.
    pub fn pool_name(&self) -> &str {
        self.buf.pool_name()
    }
}

impl Deref for SharedBuffer {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedBuffer")
            .field("ptr", &self.as_ptr())
            .field("len", &self.len())
            .field("refs", &self.ref_count())
            .field("pool", &self.pool_name())
            .finish()
    }
}
