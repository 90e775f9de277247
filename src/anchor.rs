//! Anchors: what keeps a pool alive for its buffers, without a shared
//! reference count on the hot path.
//!
//! Every thread that allocates from a pool gets one anchor for it (made with
//! its thread cache entry). An anchor holds an `Arc` of the pool, and every
//! buffer holds a pointer to the anchor it was issued through. The anchor's
//! own count is *biased* towards its thread: buffers issued and released on
//! the owning thread move a plain counter that only that thread touches; a
//! buffer released on another thread decrements an atomic counter. When the
//! owning thread exits (or drops the entry), it *retires* the anchor by adding
//! its plain count to the atomic one; whoever brings the atomic count to zero
//! after that frees the anchor and with it its `Arc` of the pool.
//!
//! Why nothing is freed too early: before retirement the atomic count is the
//! negated number of remote releases, never positive, so no decrement can
//! reach zero from above; after retirement it equals the number of this
//! anchor's buffers still out. The decrement (`Release`) is the last access a
//! releasing thread makes, and the freeing thread takes an `Acquire` fence
//! first, as `Arc` does.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicIsize, Ordering};
use std::sync::Arc;

use crate::pool::PoolInner;

/// One thread's link to one pool; see the module docs.
#[derive(Debug)]
pub(crate) struct Anchor {
    /// Keeps the pool alive while any buffer issued through this anchor is out
    /// (and while the owning thread keeps its cache entry).
    pub(crate) pool: Arc<PoolInner>,
    /// Owner thread only, until it retires the anchor: buffers issued through this
    /// anchor minus those released on the owner thread.
    local: Cell<isize>,
    /// Minus the remote releases; plus `local` once retired.
    shared: AtomicIsize,
}

// SAFETY: `pool` and `shared` are thread-safe; `local` is touched only by
// the owning thread (every caller of `issue`, `release_local` and `retire`
// is that thread, which `cache.rs` guarantees by reaching the
// anchor only through its own thread-local entry).
unsafe impl Sync for Anchor {}
// SAFETY: as above; moving the box between threads moves no `Cell` access.
unsafe impl Send for Anchor {}

impl Anchor {
    /// A new anchor owned by the calling thread.
    pub(crate) fn new(pool: Arc<PoolInner>) -> NonNull<Anchor> {
        NonNull::from(Box::leak(Box::new(Anchor {
            pool,
            local: Cell::new(0),
            shared: AtomicIsize::new(0),
        })))
    }

    /// An anchor with no owner for one buffer (a thread that is exiting
    /// allocates): already retired, with that buffer counted.
    pub(crate) fn detached(pool: Arc<PoolInner>) -> NonNull<Anchor> {
        NonNull::from(Box::leak(Box::new(Anchor {
            pool,
            local: Cell::new(0),
            shared: AtomicIsize::new(1),
        })))
    }

    /// Counts a buffer issued through this anchor.
    ///
    /// # Safety
    /// Called on the owning thread, before retirement.
    #[inline]
    pub(crate) unsafe fn issue(&self) {
        self.local.set(self.local.get() + 1);
    }

    /// Counts a buffer released on the owning thread.
    ///
    /// # Safety
    /// Called on the owning thread, before retirement.
    #[inline]
    pub(crate) unsafe fn release_local(&self) {
        self.local.set(self.local.get() - 1);
    }

    /// Counts a buffer released anywhere but through the owner's live entry;
    /// frees the anchor when that was the last reference. The caller must not
    /// touch the anchor (or its pool) afterwards.
    ///
    /// # Safety
    /// `this` is live and the buffer being released was issued through it.
    pub(crate) unsafe fn release_remote(this: NonNull<Anchor>) {
        // SAFETY: live per the caller's contract.
        let anchor = unsafe { this.as_ref() };
        if anchor.shared.fetch_sub(1, Ordering::Release) == 1 {
            // SAFETY: the count reached zero after retirement: nobody else
            // holds or will take a reference.
            unsafe { Self::free(this) };
        }
    }

    /// Merges the owner's count; frees the anchor if nothing is out.
    ///
    /// # Safety
    /// Called once, on the owning thread, which forgets `this` afterwards.
    pub(crate) unsafe fn retire(this: NonNull<Anchor>) {
        // SAFETY: the owner's reference keeps it live until the merge below.
        let anchor = unsafe { this.as_ref() };
        let local = anchor.local.get();
        if anchor.shared.fetch_add(local, Ordering::Release) + local == 0 {
            // SAFETY: as in `release_remote`.
            unsafe { Self::free(this) };
        }
    }

    /// # Safety
    /// The count is zero after retirement: `this` is unreachable.
    unsafe fn free(this: NonNull<Anchor>) {
        fence(Ordering::Acquire);
        // SAFETY: made by `Box::leak` in `new`/`detached`, freed only here.
        drop(unsafe { Box::from_raw(this.as_ptr()) });
    }
}
