//! Anchors: what keeps a pool alive for its buffers, without a shared
//! reference count on the hot path.
//!
//! Every thread that allocates from a pool gets one anchor for it (made with
//! its thread cache entry). An anchor holds an `Arc` of the pool, and every
//! buffer holds a pointer to the anchor it was issued through. The anchor's
//! count is *biased* towards its thread: buffers issued and released on the
//! owning thread move a plain counter in the thread's cache entry
//! (`cache::Entry::issued`) that only that thread touches; a buffer released
//! on another thread decrements the anchor's atomic counter. When the owning
//! thread exits (or drops the entry), it *retires* the anchor by adding its
//! plain count to the atomic one; whoever brings the atomic count to zero
//! after that frees the anchor and with it its `Arc` of the pool.
//!
//! Why nothing is freed too early: before retirement the atomic count is the
//! negated number of remote releases, never positive, so no decrement can
//! reach zero from above; after retirement it equals the number of this
//! anchor's buffers still out. The decrement (`Release`) is the last access a
//! releasing thread makes, and the freeing thread takes an `Acquire` fence
//! first, as `Arc` does.

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
    /// Minus the remote releases; plus the owner's count once retired.
    shared: AtomicIsize,
}

impl Anchor {
    /// A new anchor owned by the calling thread, which counts its own
    /// issues and releases until it retires the anchor.
    pub(crate) fn new(pool: Arc<PoolInner>) -> NonNull<Anchor> {
        NonNull::from(Box::leak(Box::new(Anchor {
            pool,
            shared: AtomicIsize::new(0),
        })))
    }

    /// An anchor with no owner for one buffer (a thread that is exiting
    /// allocates): already retired, with that buffer counted.
    pub(crate) fn detached(pool: Arc<PoolInner>) -> NonNull<Anchor> {
        NonNull::from(Box::leak(Box::new(Anchor {
            pool,
            shared: AtomicIsize::new(1),
        })))
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

    /// Merges the owner's count `local` (buffers it issued through `this`
    /// minus those it took back); frees the anchor if nothing is out.
    ///
    /// # Safety
    /// Called once, by the owner, with its final count; the owner forgets
    /// `this` afterwards.
    pub(crate) unsafe fn retire(this: NonNull<Anchor>, local: isize) {
        // SAFETY: the owner's reference keeps it live until the merge below.
        let anchor = unsafe { this.as_ref() };
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
