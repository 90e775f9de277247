//! Thread caches: each thread keeps, per pool and class, a small LIFO stack
//! of free slots (a *bin*, at most 1 MiB or 64 slots) that only it touches.
//! The hot path pops and pushes there with no atomic read-modify-write at
//! all, and reuses the slot whose cache lines and TLB entry are still warm.
//! Bins refill from and spill to the depot's free lists in batches of half
//! a bin, so buffers released on another thread than the one that
//! allocated them (the media-server pattern) flow back. A thread's bins are
//! flushed when the thread exits, and whenever the depot's flush epoch
//! moves (`trim`, and an allocation about to fail with `Exhausted`).
//!
//! This layer works over the [`Depot`] only: it never calls the pool, and
//! tells its caller what happened ([`Taken`], [`Released`]) for the pool to
//! act on.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::Arc;

use super::anchor::{Anchor, AnchorCount, AnchorRef, Released};
use super::bin::Bin;
use super::depot::Depot;
use super::sample::{SampledDuties, Sampler};
use crate::class::ClassIdx;
use crate::clock;
use crate::mem::slot::{Slot, SlotRef};
use crate::stats::{bump_own, ThreadCounters};

/// A pool as the thread caches see it: something that owns a [`Depot`]
/// and that anchors keep alive.
pub(crate) trait HasDepot: Send + Sync + 'static {
    /// The pool's depot.
    fn depot(&self) -> &Depot;
}

/// One thread's cache for one pool.
struct Entry {
    /// The pool's depot: inside the pool the anchor keeps alive until the
    /// entry retires.
    depot: NonNull<Depot>,
    /// This thread's anchor for the pool.
    anchor: AnchorRef,
    /// Buffers issued through `anchor` minus those this thread took back:
    /// the owner's side of the anchor's count (see `anchor.rs`).
    issued: isize,
    /// The depot's flush epoch this cache has caught up with.
    epoch: u32,
    /// This thread's countdown to its next sampled allocation.
    sampler: Sampler,
    /// Free slots, one bin per class.
    bins: Box<[Bin]>,
    /// This thread's counters, registered with the depot for `stats()`.
    counters: Arc<ThreadCounters>,
    /// The depot's id; never reused, so an entry of a dropped pool never
    /// matches a new one.
    id: u64,
    /// `threads::id()` of the owning thread, for the allocation's stamp
    /// (one load here instead of a lazily set thread-local).
    thread: u32,
}

impl Entry {
    /// The depot, borrowed apart from the entry (a flush reads the depot
    /// while it empties the bins).
    ///
    /// # Safety
    /// The reference is not used past this entry's `retire`.
    #[inline(always)]
    unsafe fn depot<'a>(&self) -> &'a Depot {
        // SAFETY: the entry holds the owner's reference to its anchor until
        // `retire`, and the anchor keeps the pool that owns the depot alive;
        // the caller drops the reference before `retire` ends.
        unsafe { self.depot.as_ref() }
    }

    /// Returns every cached slot to the depot's free lists, and wakes a
    /// waiter if there were any.
    fn flush(&mut self) {
        // SAFETY: used within this call, before any `retire`.
        let depot = unsafe { self.depot() };
        let mut any = false;
        for (bin, class) in self.bins.iter_mut().zip(depot.classes()) {
            any |= !bin.slots.is_empty();
            for slot in bin.slots.drain(..) {
                class.free.push(slot);
            }
        }
        if any {
            depot.notify_room();
        }
    }

    /// Flushes if the depot asked every thread to (the fast paths compare
    /// the epochs themselves and come here when they differ).
    fn catch_up(&mut self) {
        // SAFETY: used within this call.
        let epoch = unsafe { self.depot() }.flush_epoch();
        if epoch != self.epoch {
            self.flush();
            self.epoch = epoch;
        }
    }

    /// The bin of class `idx`.
    ///
    /// # Safety
    /// `idx` is a class of the entry's pool (one bin per class).
    #[inline(always)]
    unsafe fn bin(&mut self, idx: ClassIdx) -> &mut Bin {
        debug_assert!(idx.get() < self.bins.len());
        // SAFETY: in range per the caller's contract.
        unsafe { self.bins.get_unchecked_mut(idx.get()) }
    }

    /// Settles a buffer's reference on `anchor` if it is this entry's.
    #[inline(always)]
    fn settle(&mut self, anchor: AnchorRef) -> Released {
        if self.anchor == anchor {
            self.issued -= 1;
            Released::Settled
        } else {
            Released::Remote
        }
    }

    /// Gives everything back: slots, counters, and the anchor reference.
    fn retire(mut self) {
        self.flush();
        // SAFETY: used before the anchor's retirement below.
        unsafe { self.depot() }.retire_thread(&self.counters);
        // SAFETY: we are the owning thread, retiring once with our final
        // count; `self` (and with it the pointer) is dropped right after.
        unsafe { AnchorCount::retire(self.anchor, self.issued) };
    }
}

/// The calling thread's caches, one entry per pool it has used. Each entry
/// is boxed so that [`FAST`] can point at it while the list grows.
#[allow(clippy::vec_box)]
struct ThreadCaches(RefCell<Vec<Box<Entry>>>);

impl Drop for ThreadCaches {
    /// At thread exit: give the slots back, fold the counters into the
    /// depot's (so nothing is stranded and `stats()` stays exact), and drop
    /// this thread's references to the pools.
    fn drop(&mut self) {
        // First, so no later call (another thread-local's destructor that
        // drops a buffer) reaches an entry through `FAST`.
        FAST.with(Fast::clear);
        for entry in self.0.get_mut().drain(..) {
            (*entry).retire();
        }
    }
}

/// The calling thread's most recently used entry, tried before the list: a
/// plain thread-local with no destructor, so reaching it costs one load
/// relative to the thread pointer, no `RefCell` and no search.
///
/// Invariant: both are null, or `entry` points to a live entry in this
/// thread's [`CACHES`] list whose depot is `depot` (the entry's anchor keeps
/// that depot's pool alive, so no other depot can have its address
/// meanwhile). Every removal from the list clears this first.
struct Fast {
    depot: Cell<*const Depot>,
    entry: Cell<*mut Entry>,
}

impl Fast {
    fn clear(&self) {
        self.depot.set(std::ptr::null());
        self.entry.set(std::ptr::null_mut());
    }
}

thread_local! {
    static CACHES: ThreadCaches = const { ThreadCaches(RefCell::new(Vec::new())) };
    static FAST: Fast = const {
        Fast {
            depot: Cell::new(std::ptr::null()),
            entry: Cell::new(std::ptr::null_mut()),
        }
    };
}

/// Runs `f` on this thread's cache for `pool` (made on first use). `None`
/// when the thread is exiting and its caches are gone, or when the pool is
/// abandoned and this thread has no entry for it.
///
/// `f` gets the entry exclusively, so it must not call back into this
/// module's entry points; no caller's closure does.
#[inline]
fn with_entry<P: HasDepot, R>(pool: &Arc<P>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    match fast_entry(pool.depot()) {
        // SAFETY: `FAST`'s invariant: a live entry of this thread for the
        // depot. Only this thread reaches it, and no other reference to it
        // is alive: `with_entry` is not re-entered from `f`, and the slow
        // path's `RefCell` borrow has ended.
        Some(mut entry) => Some(f(unsafe { entry.as_mut() })),
        None => with_entry_slow(pool, f),
    }
}

/// `with_entry` when `FAST` points elsewhere: search the list, make the
/// entry if needed, and point `FAST` at it.
#[cold]
#[inline(never)]
fn with_entry_slow<P: HasDepot, R>(pool: &Arc<P>, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
    let depot = pool.depot();
    CACHES
        .try_with(|caches| {
            let mut entries = caches.0.try_borrow_mut().ok()?;
            let at = match entries.iter().position(|e| e.id == depot.id()) {
                Some(at) => at,
                // An abandoned pool only takes buffers back: no new entry.
                None if depot.is_abandoned() => return None,
                None => new_entry(&mut entries, pool),
            };
            // One raw pointer for `FAST` and for `f`: a reference made
            // after it from the `Box` would retire it (Stacked Borrows).
            let entry: *mut Entry = &mut *entries[at];
            FAST.with(|fast| {
                fast.depot.set(depot);
                fast.entry.set(entry);
            });
            // SAFETY: `entry` points into the live entry the list's `Box`
            // owns, borrowed mutably through `entries` for this whole call;
            // `f` gets the only reference (it does not re-enter this module).
            Some(f(unsafe { &mut *entry }))
        })
        .ok()
        .flatten()
}

#[cold]
#[allow(clippy::vec_box)] // see `ThreadCaches`
fn new_entry<P: HasDepot>(entries: &mut Vec<Box<Entry>>, pool: &Arc<P>) -> usize {
    // Entries of abandoned pools: give their memory back now (`FAST` may point
    // at one of them).
    FAST.with(Fast::clear);
    let mut i = 0;
    while i < entries.len() {
        // SAFETY: used at once, while the entry is live.
        if unsafe { entries[i].depot() }.is_abandoned() {
            (*entries.swap_remove(i)).retire();
        } else {
            i += 1;
        }
    }
    let depot = pool.depot();
    let counters = Arc::new(ThreadCounters::new(depot.len()));
    depot.register_thread(Arc::clone(&counters));
    let bins = (0..depot.len())
        .map(|i| {
            let limit = depot.cache_limit(i);
            Bin::new(limit, NonNull::from(&counters.classes[i]))
        })
        .collect();
    entries.push(Box::new(Entry {
        depot: NonNull::from(depot),
        anchor: Anchor::owned(Arc::clone(pool)),
        issued: 0,
        epoch: depot.flush_epoch(),
        sampler: Sampler::new(depot.sample_rates()),
        bins,
        counters,
        id: depot.id(),
        thread: crate::threads::id(),
    }));
    entries.len() - 1
}

/// This thread's entry for `depot` if `FAST` points at it.
#[inline(always)]
fn fast_entry(depot: &Depot) -> Option<NonNull<Entry>> {
    FAST.with(|fast| {
        if std::ptr::eq(fast.depot.get(), depot) {
            // SAFETY: `FAST`'s invariant: its depot is null or its entry is
            // not, and `depot` is not null.
            Some(unsafe { NonNull::new_unchecked(fast.entry.get()) })
        } else {
            None
        }
    })
}

/// The fast paths' entry: this thread's entry for `depot` through `FAST`,
/// if it has caught up with the depot's flush requests (else the caller's
/// slow path flushes it).
///
/// # Safety
/// The caller uses the reference only until it returns, and neither
/// re-enters this module nor removes an entry meanwhile: then it is the
/// only reference to the entry (only this thread reaches it).
#[inline(always)]
unsafe fn ready_entry<'a>(depot: &Depot) -> Option<&'a mut Entry> {
    let mut e = fast_entry(depot)?;
    // SAFETY: `FAST`'s invariant: a live entry of this thread for `depot`
    // (every removal from the list clears `FAST` first), reached by no
    // other reference while the caller uses it (see `with_entry`).
    let e = unsafe { e.as_mut() };
    if e.epoch != depot.flush_epoch() {
        return None;
    }
    Some(e)
}

/// The common allocation: a slot of class `idx` from this thread's bin,
/// counted on the thread's anchor, which the buffer must hold, and the
/// thread's `threads::id()` for the stamp. `None` (and
/// nothing changed) when the entry is not at hand through `FAST`, has not
/// caught up with a flush request, the allocation is sampled, or the bin is
/// empty: the caller then takes [`acquire_slow`].
///
/// # Safety
/// `idx` is a class of `depot`'s pool.
#[inline(always)]
pub(crate) unsafe fn acquire(depot: &Depot, idx: ClassIdx) -> Option<(SlotRef, AnchorRef, u32)> {
    let mut e = fast_entry(depot)?;
    // SAFETY: as in `ready_entry` (written out here, not through it: see
    // the design notes' hot path).
    let e = unsafe { e.as_mut() };
    if e.epoch == depot.flush_epoch() && e.sampler.quiet() {
        debug_assert!(idx.get() < e.bins.len());
        // SAFETY: `idx` is a class of the pool (caller's contract), and
        // there is one bin per class (a field borrow, apart from `sampler`).
        let bin = unsafe { e.bins.get_unchecked_mut(idx.get()) };
        if let Some(slot) = bin.slots.pop() {
            e.sampler.count_quiet();
            bump_own(&bin.counters().hits);
            e.issued += 1;
            return Some((slot, e.anchor, e.thread));
        }
    }
    None
}

/// What [`acquire_slow`] found.
#[derive(Debug)]
pub(crate) enum Taken {
    /// A slot from the bin or the depot, counted on `anchor`.
    Slot {
        slot: SlotRef,
        anchor: AnchorRef,
        /// The allocation's sampled duties, for the pool to mark.
        duties: SampledDuties,
        /// `clock::now_nanos()` at the start, when the histograms are due.
        started: u64,
    },
    /// Bin and depot are empty: the pool must make a slot, then count it
    /// with [`issue`].
    Empty {
        /// As in `Slot`.
        duties: SampledDuties,
        /// As in `Slot`.
        started: u64,
    },
    /// No entry at hand: this thread is exiting, the pool is abandoned and the
    /// thread has none, or the thread's cache list is borrowed (a
    /// destructor running inside it). No cache, no sampling; the buffer
    /// needs an anchor of its own (`Anchor::detached`).
    NoCache,
}

/// `acquire` in full: catches up with flush requests, counts the sampling
/// countdown, pops the bin, refills it from the depot in a batch when
/// empty.
///
/// # Safety
/// `idx` is a class of `pool`'s depot.
#[cold]
#[inline(never)]
pub(crate) unsafe fn acquire_slow<P: HasDepot>(pool: &Arc<P>, idx: ClassIdx) -> Taken {
    let depot = pool.depot();
    let got = with_entry(pool, |e| {
        e.catch_up();
        let duties = e.sampler.count();
        let started = if duties.contains(SampledDuties::HISTOGRAMS) {
            clock::now_nanos()
        } else {
            0
        };
        // SAFETY: forwarded from the caller.
        let bin = unsafe { e.bin(idx) };
        let slot = match bin.slots.pop() {
            Some(slot) => Some(slot),
            // Near the cap, no batch: what this thread does not use now
            // must stay where every thread finds it.
            None if depot.near_cap() => depot.class(idx).free.pop(),
            None => bin.refill(&depot.class(idx).free),
        };
        match slot {
            Some(slot) => {
                bump_own(&bin.counters().hits);
                e.issued += 1;
                Taken::Slot {
                    slot,
                    anchor: e.anchor,
                    duties,
                    started,
                }
            }
            None => Taken::Empty { duties, started },
        }
    });
    got.unwrap_or(Taken::NoCache)
}

/// Counts a buffer whose slot the pool made after [`Taken::Empty`] on this
/// thread's anchor; `None` when the thread has no entry any more (the
/// buffer then needs an anchor of its own).
///
/// # Safety
/// The caller makes exactly one buffer counted on the returned anchor (an
/// unmatched count would keep the anchor and its pool alive for ever).
pub(crate) unsafe fn issue<P: HasDepot>(pool: &Arc<P>) -> Option<AnchorRef> {
    with_entry(pool, |e| {
        e.issued += 1;
        e.anchor
    })
}

/// The release fast path: if the cache is caught up and the bin has room,
/// marks slot `s` free, pushes it, counts it and says what became of the
/// buffer's reference on `anchor` (settled if this thread issued the
/// buffer, else the caller's remote step); `None` (and nothing changed)
/// otherwise.
///
/// # Safety
/// `slot` (whose metadata is `s`) is a slot of `depot`'s pool, released by
/// its buffer.
#[inline(always)]
pub(crate) unsafe fn give_back_cached(
    depot: &Depot,
    s: &Slot,
    slot: SlotRef,
    anchor: AnchorRef,
) -> Option<Released> {
    // SAFETY: forwarded from the caller. Marked once in this thread's
    // bin, which only this thread touches.
    unsafe { push_cached(depot, s.class(), slot, anchor, || s.mark_free()) }
}

/// Pushes the free slot `slot` of class `idx` onto this thread's bin, if
/// the cache is caught up and the bin has room, counts it, runs `pushed`,
/// and settles the buffer's reference on `anchor` if this thread issued it;
/// `None` (and nothing changed) otherwise.
///
/// # Safety
/// `idx` is a class of `depot`'s pool, and `slot` a slot of that class
/// released by its buffer.
#[inline(always)]
unsafe fn push_cached(
    depot: &Depot,
    idx: ClassIdx,
    slot: SlotRef,
    anchor: AnchorRef,
    pushed: impl FnOnce(),
) -> Option<Released> {
    // SAFETY: used within this call, which re-enters nothing.
    let e = unsafe { ready_entry(depot) }?;
    // SAFETY: forwarded from the caller.
    let bin = unsafe { e.bin(idx) };
    if !bin.push_within_limit(slot) {
        return None;
    }
    pushed();
    Some(e.settle(anchor))
}

/// Takes back the free slot of class `idx` of a buffer issued through
/// `anchor`: into this thread's bin (spilling half to the depot when full,
/// everything when the pool keeps no caches) or the depot, counted. Says
/// whether the buffer's reference on `anchor` was settled here.
///
/// # Safety
/// `idx` is a class of `pool`'s depot, and `slot` a slot of that class
/// already marked free.
#[inline(always)]
pub(crate) unsafe fn give_back<P: HasDepot>(
    pool: &Arc<P>,
    idx: ClassIdx,
    slot: SlotRef,
    anchor: AnchorRef,
) -> Released {
    // SAFETY: forwarded from the caller.
    match unsafe { push_cached(pool.depot(), idx, slot, anchor, || {}) } {
        Some(released) => released,
        // SAFETY: forwarded from the caller.
        None => unsafe { give_back_slow(pool, idx, slot, anchor) },
    }
}

/// `give_back` when the bin is full (or the pool keeps no caches).
///
/// # Safety
/// As for [`give_back`].
#[cold]
#[inline(never)]
unsafe fn give_back_slow<P: HasDepot>(
    pool: &Arc<P>,
    idx: ClassIdx,
    slot: SlotRef,
    anchor: AnchorRef,
) -> Released {
    let depot = pool.depot();
    let settled = with_entry(pool, |e| {
        e.catch_up();
        // SAFETY: forwarded from the caller.
        let bin = unsafe { e.bin(idx) };
        bin.slots.push(slot);
        bump_own(&bin.counters().releases);
        if bin.slots.len() > bin.limit {
            bin.spill(&depot.class(idx).free);
            depot.notify_room();
        }
        e.settle(anchor)
    });
    settled.unwrap_or_else(|| {
        depot.push_released(idx, slot);
        Released::Remote
    })
}

/// Returns this thread's cached slots of `pool` to its depot.
pub(crate) fn flush_current<P: HasDepot>(pool: &Arc<P>) {
    let _ = with_entry(pool, |e| e.flush());
}

/// Settles a released buffer's reference on `anchor` when this thread owns
/// it (the buffer's slot went elsewhere, e.g. to quarantine).
///
/// # Safety
/// A buffer counted on `anchor` is being released, once: an extra settle
/// would let the anchor, and with it the pool, be freed while buffers are
/// out.
pub(crate) unsafe fn settle<P: HasDepot>(pool: &Arc<P>, anchor: AnchorRef) -> Released {
    with_entry(pool, |e| e.settle(anchor)).unwrap_or(Released::Remote)
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
