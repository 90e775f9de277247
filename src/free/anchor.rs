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
//! releasing thread makes, and the freeing thread first loads the count with
//! `Acquire` (where `Arc` takes an `Acquire` fence: the same guarantee, in a
//! form ThreadSanitizer checks).
//!
//! The layers below the pool see an anchor with its pool's type erased
//! ([`AnchorRef`]); a function pointer in the count frees the whole
//! [`Anchor<P>`], so this file never names the pool.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::sync::AtomicIsize;

/// An anchor as the layers below the pool see it: what buffers and
/// thread caches hold. It points to the start of an `Anchor<P>`, whose
/// layout [`ErasedAnchor`] repeats without `P`.
pub(crate) type AnchorRef = NonNull<ErasedAnchor>;

/// The count every anchor keeps; see the module docs.
#[derive(Debug)]
pub(crate) struct AnchorCount {
    /// Minus the remote releases; plus the owner's count once retired.
    shared: AtomicIsize,
    /// Frees the whole anchor this count belongs to (its `Anchor<P>::free`).
    free: unsafe fn(AnchorRef),
}

/// [`Anchor<P>`] with its pool's type erased: the same `repr(C)` layout
/// (checked at compile time for every `P`), so the count is reached
/// without knowing `P`.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct ErasedAnchor {
    /// Stands for `Anchor<P>::pool`; never read through this type.
    _pool: NonNull<()>,
    count: AnchorCount,
}

/// One thread's link to one pool of type `P`; see the module docs.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Anchor<P> {
    /// Keeps the pool alive while any buffer issued through this anchor is
    /// out (and while the owning thread keeps its cache entry). First, so
    /// that an `AnchorRef` is also a `&Arc<P>`: a release reaches the pool
    /// with no address arithmetic.
    pool: Arc<P>,
    /// The biased count.
    count: AnchorCount,
}

/// What a release did with the buffer's reference on its anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a `Remote` release must end with `AnchorCount::release_remote`"]
pub(crate) enum Released {
    /// Settled on the owning thread's plain count: nothing left to do.
    Settled,
    /// Not settled (another thread's anchor, or no cache entry): the caller
    /// ends with [`AnchorCount::release_remote`], its last access to the
    /// anchor and the pool.
    Remote,
}

impl<P> Anchor<P> {
    /// `Anchor<P>` and `ErasedAnchor` agree on where the count is.
    const LAYOUT_AGREES: () = assert!(
        std::mem::size_of::<Arc<P>>() == std::mem::size_of::<NonNull<()>>()
            && std::mem::offset_of!(Anchor<P>, count) == std::mem::offset_of!(ErasedAnchor, count)
    );

    fn boxed(pool: Arc<P>, shared: isize) -> AnchorRef {
        #[allow(clippy::let_unit_value)]
        let () = Self::LAYOUT_AGREES;
        let anchor = Box::leak(Box::new(Anchor {
            pool,
            count: AnchorCount {
                shared: AtomicIsize::new(shared),
                free: Self::free,
            },
        }));
        NonNull::from(anchor).cast()
    }

    /// A new anchor owned by the calling thread, which counts its own
    /// issues and releases until it retires the anchor.
    pub(crate) fn owned(pool: Arc<P>) -> AnchorRef {
        Self::boxed(pool, 0)
    }

    /// An anchor with no owner for one buffer (allocated where no cache
    /// entry is at hand, e.g. by a thread that is exiting): already retired,
    /// with that buffer counted.
    pub(crate) fn detached(pool: Arc<P>) -> AnchorRef {
        Self::boxed(pool, 1)
    }

    /// The pool an anchor keeps alive.
    ///
    /// # Safety
    /// `this` was made by `Anchor::<P>::owned` or `detached` (same `P`) and
    /// is live for `'a` (a buffer counted on it, or its owner's entry, is).
    #[inline(always)]
    pub(crate) unsafe fn pool<'a>(this: AnchorRef) -> &'a Arc<P> {
        // SAFETY: `this` points to an `Anchor<P>` (caller's contract), live
        // for `'a`.
        unsafe { &this.cast::<Anchor<P>>().as_ref().pool }
    }

    /// # Safety
    /// `this` is an `Anchor<P>` from `boxed` whose count is zero after
    /// retirement: no one else can reach it.
    unsafe fn free(this: AnchorRef) {
        // SAFETY: made by `Box::leak` in `boxed` as an `Anchor<P>`; freed
        // only here, once.
        drop(unsafe { Box::from_raw(this.cast::<Anchor<P>>().as_ptr()) });
    }
}

impl AnchorCount {
    /// Counts a buffer released anywhere but through the owner's live entry;
    /// frees the anchor when that was the last reference. The caller must not
    /// touch the anchor (or its pool) afterwards.
    ///
    /// # Safety
    /// `this` is live and the buffer being released was issued through it.
    pub(crate) unsafe fn release_remote(this: AnchorRef) {
        // SAFETY: live per the caller's contract.
        let count = unsafe { &this.as_ref().count };
        if count.shared.fetch_sub(1, Ordering::Release) == 1 {
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
    pub(crate) unsafe fn retire(this: AnchorRef, local: isize) {
        // SAFETY: the owner's reference keeps it live until the merge below.
        let count = unsafe { &this.as_ref().count };
        if count.shared.fetch_add(local, Ordering::Release) + local == 0 {
            // SAFETY: as in `release_remote`.
            unsafe { Self::free(this) };
        }
    }

    /// # Safety
    /// The count is zero after retirement: `this` is unreachable.
    unsafe fn free(this: AnchorRef) {
        // Acquires every releaser's decrement: the load reads the last one,
        // which continues the release sequence each earlier one heads. (An
        // `Acquire` fence would do the same; ThreadSanitizer does not model
        // fences, and `std`'s `Arc` makes the same swap under it.)
        // SAFETY: the anchor is still live: only the call below frees it.
        unsafe { this.as_ref() }
            .count
            .shared
            .load(Ordering::Acquire);
        // SAFETY: forwarded; `free` is the function `boxed` stored for the
        // anchor's own type, and `this` is not touched after it.
        unsafe { (this.as_ref().count.free)(this) };
    }
}
